"""Compiled training steps: what may be compiled, and the state a step changes.

A training step (``polynn.training.make_step``) reads nothing back to the host and decides
nothing in Python from device values: the learning rate and step count, the loss scale and
Dropout's counters are device arrays it updates there. That makes it one unit a backend can
compile (``Backend.compile_step``): replayed as a CUDA graph on CuPy and on PyTorch's CUDA
devices, ``jax.jit``-compiled on JAX. This module says whether a fit may be compiled
(``reason``) and lists the arrays a step changes (``slots``), which JAX, whose arrays are
immutable, passes in and out of the compiled function; a CUDA graph updates them in place.

``fit(compile="auto")`` compiles where the backend compiles by default (JAX; CuPy's and
PyTorch's CUDA graphs are opt-in, ``compile=True``, until a GPU run checks them) and every
layer, the loss and the optimizer declare that their passes are free of host
synchronisation (``compilable``; a class of your own declares it once its ``forward`` and
``backward`` (or ``value_and_grad``, or ``update_rule``) read nothing back to the host);
``compile=True`` insists (an error says why not), ``compile=False`` runs eagerly. The
environment variable ``POLYNN_COMPILE`` sets the default: ``auto``; ``0``, never; ``1``, as
``compile=True`` wherever the backend compiles steps and the fit is not data-parallel
(eagerly elsewhere), so that a layer, loss or optimizer that has not declared itself
compilable is named in an error instead of running eagerly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from polynn.errors import PolynnValueError
from polynn.layers import Layer, nested

if TYPE_CHECKING:
    from polynn.distributed import MPI
    from polynn.losses import Loss
    from polynn.model import Sequential
    from polynn.optimizers import Optimizer

__all__ = [
    "Slot",
    "StepState",
    "declares",
    "forward",
    "inference_slots",
    "mode",
    "objects",
    "reason",
    "run",
    "slots",
    "undeclared",
    "undeclared_layer",
]

ENV_VAR = "POLYNN_COMPILE"
_SETTINGS = {"auto": "auto", "1": "always", "true": "always", "0": False, "false": False}


def mode(compile: bool | str | None) -> bool | str:
    """``compile`` checked (True, False or "auto"); None reads ``POLYNN_COMPILE`` (else auto;
    ``1`` gives "always": True where the backend compiles, False elsewhere)."""
    if compile is None:
        setting = os.environ.get(ENV_VAR, "auto").strip().lower()
        if setting not in _SETTINGS:
            raise PolynnValueError(
                f"{ENV_VAR} must be one of {sorted(_SETTINGS)}; got {os.environ[ENV_VAR]!r}."
            )
        return _SETTINGS[setting]
    if compile not in (True, False, "auto"):
        raise PolynnValueError(f"compile must be True, False or 'auto'; got {compile!r}.")
    return compile


def declares(obj: Any, method: str) -> bool:
    """Whether the class that defines ``obj``'s ``method`` declares ``compilable = True`` in
    its own body (a subclass that overrides the method must declare it again)."""
    owner = next((c for c in type(obj).__mro__ if method in c.__dict__), None)
    return owner is not None and owner.__dict__.get("compilable", False) is True


def reason(model: Sequential, loss: Loss, optimizer: Optimizer, dist: MPI | None) -> str | None:
    """Why ``model``'s training steps cannot be compiled, or None where they can."""
    why = model.backend.compile_reason()
    if why is not None:
        return why
    if dist is not None:
        return "data-parallel steps exchange gradients over MPI between their launches"
    return undeclared(model, loss, optimizer)


def undeclared_layer(layers: Iterable[Layer], methods: Sequence[str]) -> str | None:
    """The first of ``layers`` (nested ones included) whose ``methods`` are not declared free
    of host reads (a sentence saying which), or None."""
    for inner in (inner for layer in layers for inner in nested(layer)):
        for method in methods:
            if not declares(inner, method):
                return (
                    f"{type(inner).__name__}.{method} does not declare that it reads nothing "
                    "back to the host (a layer class sets compilable = True to declare it)"
                )
    return None


def inference_slots(model: Sequential) -> list[Slot]:
    """The arrays an inference pass reads: the parameters' values and the buffers'."""
    return [Slot(p, "value") for p in model.params] + [Slot(b, "value") for b in model.buffers]


def forward(model: Sequential, layers: Sequence[Layer]) -> Callable[[Any], Any]:
    """The inference pass of ``layers`` (the steps of ``model``'s run) on a batch: compiled
    where the backend compiles by default and every layer declares its ``forward``
    (``jax.jit`` on JAX), else ``run`` itself; kept on the model per run of layers."""
    kept = model.__dict__.setdefault("_forwards", {})
    key = tuple(layers)
    if key not in kept:
        eager = functools.partial(run, layers)
        backend, compiled = model.backend, None
        if backend.compiles_by_default and backend.compile_reason() is None:
            if undeclared_layer(model.layers, ("forward",)) is None:
                compiled = backend.compile_forward(
                    eager, lambda: inference_slots(model), objects(model, layers)
                )
        kept[key] = compiled or eager
    return kept[key]


def run(layers: Sequence[Layer], x: Any) -> Any:
    """The output of ``layers`` applied to ``x`` in turn (each keeps what backward needs)."""
    for layer in layers:
        x = layer.forward(x)
    return x


def undeclared(model: Sequential, loss: Loss, optimizer: Optimizer) -> str | None:
    """The layer, loss or optimizer whose passes are not declared free of host reads (a
    sentence saying which), or None."""
    why = undeclared_layer(model.layers, ("forward", "backward"))
    if why is not None:
        return why
    if not declares(loss, "value_and_grad"):
        return f"the loss {type(loss).__name__} does not declare compilable = True"
    if not declares(optimizer, "update_rule"):
        return f"the optimizer {type(optimizer).__name__} does not declare compilable = True"
    return None


class Slot:
    """One array a training step changes: ``holder[key]`` for a dict, else the attribute;
    ``get()`` and ``set(value)`` reach it (bound once: a compiled step calls them at every
    step). ``made``: the step writes it before reading it (a gradient), so a compiled step
    that passes its arrays in and out (JAX) need not pass it in."""

    __slots__ = ("get", "holder", "key", "made", "set")

    def __init__(self, holder: Any, key: str, made: bool = False) -> None:
        self.holder, self.key, self.made = holder, key, made
        if isinstance(holder, dict):
            self.get = functools.partial(dict.__getitem__, holder, key)
            self.set = functools.partial(dict.__setitem__, holder, key)
        else:
            self.get = functools.partial(getattr, holder, key)
            self.set = functools.partial(setattr, holder, key)

    def __repr__(self) -> str:
        return f"Slot({type(self.holder).__name__}, {self.key!r})"


def slots(model: Sequential, optimizer: Optimizer, layers: Iterable[Layer]) -> list[Slot]:
    """Every array a training step of ``model`` changes: parameters and their gradients,
    buffers, the optimizer's state and scalars, the layers' device counters
    (``Layer.device_state``) and the loss scale's."""
    out = []
    for p in model.params:
        out += [Slot(p, "value"), Slot(p, "grad", made=True)]
    out += [Slot(b, "value") for b in model.buffers]
    for state in optimizer.state:
        out += [Slot(state, name) for name in sorted(state)]
    if optimizer.scalars is not None:
        out += [Slot(optimizer.scalars, "lr"), Slot(optimizer.scalars, "t")]
    for inner in (inner for layer in layers for inner in nested(layer)):
        out += [Slot(inner, name) for name in inner.device_state]
    if model.loss_scale is not None:
        out += [Slot(model.loss_scale, name) for name in model.loss_scale.device_state]
    return out


class StepState:
    """``slots`` of a model's compiled step, made again only when they may have changed: the
    optimizer's state or scalars replaced (a reset, a load), or the first gradients made."""

    def __init__(self, model: Sequential, optimizer: Optimizer, layers: Sequence[Layer]) -> None:
        self._model, self._optimizer, self._layers = model, optimizer, layers
        self._version: tuple[Any, ...] | None = None
        self._slots: list[Slot] = []

    def __call__(self) -> list[Slot]:
        model, optimizer = self._model, self._optimizer
        first = model.params[0].grad is None if model.params else False
        version = (id(optimizer.state), id(optimizer.scalars), first)
        if version != self._version:
            self._slots = slots(model, optimizer, self._layers)
            self._version = version
        return self._slots


def objects(model: Sequential, layers: Sequence[Layer]) -> list[Any]:
    """The objects whose attributes a traced step may leave tracers in (the layers and the
    steps that run them): their attributes are put back after tracing."""
    found = [inner for layer in model.layers for inner in nested(layer)]
    found += [layer for layer in layers if all(layer is not f for f in found)]
    return found
