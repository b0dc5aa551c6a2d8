"""Optimizers. Their update rules are primitives of the kernel seam (``polynn.kernels``:
``Kernels.sgd`` and ``Kernels.adam``), in place where the namespace's arrays are writable
(NumPy, CuPy, array-api-strict), and as a new array bound to the same parameter where they
are not.

State (momentum, moments) is created lazily from the first gradients, so it lives on the
parameters' own backend and device. ``lr`` is read at every step: changing it between epochs
(from a callback, say) is a learning-rate schedule that keeps the state.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from polynn._checks import number, unknown_name
from polynn.backends import Backend
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.layers import Parameter
from polynn.schedules import Schedule

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "get_optimizer"]


#: Keyword names other libraries use, and polynn's for them.
ALIASES = {
    "learning_rate": "lr",
    "beta_1": "beta1",
    "beta_2": "beta2",
    "epsilon": "eps",
    "decay": "weight_decay",
    "nesterovs_momentum": "nesterov",
    "alpha": "rho",
    "initial_accumulator_value": "initial_accumulator",
}


def _positive(value: Any, owner: str, what: str) -> float | None:
    """None, or ``value`` checked to be a positive number."""
    return None if value is None else number(value, f"{owner} {what}", 0.0, low_open=True)


class Optimizer:
    """Base class: ``bind`` hands over the parameters, ``step`` applies their gradients.

    ``lr`` is a number or a schedule (``polynn.schedules``). ``clipnorm`` rescales the
    gradients so that their global norm over all parameters is at most ``clipnorm`` (as
    PyTorch's ``clip_grad_norm_``: by ``clipnorm / (norm + 1e-6)`` where that is below 1);
    ``clipvalue`` clips each gradient element to ``[-clipvalue, clipvalue]``; with both, values
    are clipped first. Subclasses implement ``step`` and name their state arrays.
    """

    def __init__(
        self,
        lr: float | Schedule,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            name = next(iter(unknown))
            valid = [k for k in inspect.signature(type(self)).parameters if k != "unknown"]
            hint = f"did you mean {ALIASES[name]!r}? " if ALIASES.get(name) in valid else ""
            raise PolynnTypeError(
                f"{type(self).__name__} has no argument {name!r}; {hint}its arguments are {valid}."
            )
        owner = type(self).__name__
        #: The learning-rate schedule, or None for a constant ``lr``.
        self.schedule = lr if isinstance(lr, Schedule) else None
        if self.schedule is not None:
            self.lr = self.schedule.rate(0)
        else:
            self.lr = number(lr, f"{owner} lr", 0.0, low_open=True)
        self.clipnorm = _positive(clipnorm, owner, "clipnorm")
        self.clipvalue = _positive(clipvalue, owner, "clipvalue")
        self.params: Sequence[Parameter] = ()
        self.state: list[dict[str, Any]] = []
        #: Steps taken and epochs finished: what a schedule counts, kept in model files.
        self.iterations = 0
        self.epochs = 0
        self._lr_seen: float | None = None
        self._lr_0d: Any = None

    def bind(self, params: Sequence[Parameter], backend: Backend) -> None:
        """Train ``params`` (arrays of ``backend``) from now on, with its kernels.

        Binding the parameters already bound keeps the state, so a second ``fit`` continues
        where the first stopped.
        """
        self.xp, self.kernels = backend.xp, backend.kernels
        params = tuple(params)
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            self.params = params
            self.state = [{} for _ in params]
            self.iterations = 0
            self.epochs = 0
            self._lr_seen = None

    def step(self) -> None:
        raise NotImplementedError

    def state_names(self) -> tuple[str, ...] | None:
        """The names of the arrays ``step`` keeps per parameter (a file's state is checked
        against them); None where they are not known (an optimizer of your own)."""
        return None

    def updater(self) -> Callable[[], None]:
        """What a training step calls after the backward pass: ``step`` itself, or with the
        schedule's rate for this step set and the gradients clipped first."""
        per_step = self.schedule is not None and self.schedule.per == "step"
        if not per_step and self.clipnorm is None and self.clipvalue is None:
            return self.step

        def update() -> None:
            if per_step:
                self.lr = self.schedule.rate(self.iterations)
            self.clip()
            self.step()

        return update

    def start_epoch(self) -> None:
        """Set the rate of a schedule that counts epochs (called before each epoch)."""
        if self.schedule is not None and self.schedule.per == "epoch":
            self.lr = self.schedule.rate(self.epochs)

    def clip(self) -> None:
        """Clip the gradients as ``clipvalue`` and ``clipnorm`` say (no host round trip)."""
        xp = self.xp
        if self.clipvalue is not None:
            for p in self.params:
                p.grad = xp.clip(p.grad, -self.clipvalue, self.clipvalue)
        if self.clipnorm is not None and self.params:
            squares = xp.stack([xp.sum(p.grad * p.grad) for p in self.params])
            scale = xp.clip(self.clipnorm / (xp.sqrt(xp.sum(squares)) + 1e-6), max=1.0)
            for p in self.params:
                p.grad = p.grad * scale

    def reset(self) -> None:
        """Forget the state (momentum, moments, step count): the next step starts afresh."""
        self.state = [{} for _ in self.params]
        self.iterations = 0

    def copy_for(self, params: Sequence[Parameter], backend: Backend) -> Optimizer:
        """A copy with the same settings and state, bound to ``params`` on ``backend`` (the
        parameters of a model moved with ``Sequential.to``)."""
        optimizer = copy.copy(self)
        optimizer.params = ()
        optimizer.bind(params, backend)
        optimizer.iterations, optimizer.epochs = self.iterations, self.epochs
        optimizer.state = [
            {key: backend.adopt(value) for key, value in state.items()} for state in self.state
        ]
        return optimizer

    def _lr(self) -> Any:
        """``lr`` as a 0-d array of the parameters' dtype and device, made again only when
        ``lr`` changes. NumPy multiplies a small array by a 0-d array of its dtype about
        0.25 us faster than by a Python float; plain SGD does one such product per parameter.
        """
        if self._lr_seen != self.lr:
            like = self.params[0].value
            self._lr_0d = self.xp.asarray(self.lr, dtype=like.dtype, device=like.device)
            self._lr_seen = self.lr
        return self._lr_0d

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (``lr``: the schedule object, or the current rate)."""
        config: dict[str, Any] = {"lr": self.schedule if self.schedule is not None else self.lr}
        if self.clipnorm is not None:
            config["clipnorm"] = self.clipnorm
        if self.clipvalue is not None:
            config["clipvalue"] = self.clipvalue
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``v = momentum * v + g`` and ``p -= lr * v`` (or ``p -= lr * (g + momentum * v)`` with
    Nesterov), as in PyTorch. ``weight_decay`` adds ``weight_decay * p`` to the gradient
    (coupled L2 regularisation).
    """

    def __init__(
        self,
        lr: float | Schedule = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue, **unknown)
        self.momentum = number(momentum, "SGD momentum", 0.0, 1.0)
        self.weight_decay = number(weight_decay, "SGD weight_decay", 0.0)
        if nesterov and self.momentum == 0.0:
            raise PolynnValueError("SGD nesterov=True needs momentum > 0; got momentum=0.")
        self.nesterov = bool(nesterov)

    def state_names(self) -> tuple[str, ...]:
        return ("velocity",) if self.momentum else ()

    def step(self) -> None:
        if not self.params:
            return
        self.iterations += 1
        self.kernels.sgd(
            self.params, self.state, self._lr(), self.momentum, self.nesterov, self.weight_decay
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), with the bias corrections of PyTorch's implementation.

    ``weight_decay`` is *decoupled* (AdamW, Loshchilov and Hutter, 2019): the parameters
    shrink by ``lr * weight_decay * p`` each step, outside the adaptive scaling.
    """

    def __init__(
        self,
        lr: float | Schedule = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue, **unknown)
        name = type(self).__name__
        self.beta1 = number(beta1, f"{name} beta1", 0.0, 1.0)
        self.beta2 = number(beta2, f"{name} beta2", 0.0, 1.0)
        self.eps = number(eps, f"{name} eps", 0.0, low_open=True)
        self.weight_decay = number(weight_decay, f"{name} weight_decay", 0.0)

    def state_names(self) -> tuple[str, ...]:
        return ("m", "v")

    def step(self) -> None:
        self.iterations += 1
        self.kernels.adam(
            self.params,
            self.state,
            self.iterations,
            self.lr,
            self.beta1,
            self.beta2,
            self.eps,
            self.weight_decay,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay, under its own name and with PyTorch's default decay
    of 0.01: ``p *= 1 - lr * weight_decay`` each step, then Adam's update."""

    def __init__(
        self,
        lr: float | Schedule = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay, clipnorm, clipvalue, **unknown)


class RMSprop(Optimizer):
    """RMSprop as PyTorch's: ``s = rho s + (1 - rho) g^2`` (from zero), and
    ``p -= lr g / (sqrt(s) + eps)``; ``centered`` divides by ``sqrt(s - a^2) + eps`` where ``a``
    is the running mean of ``g``; with ``momentum``, ``b = momentum b + g / (...)`` and
    ``p -= lr b``. ``weight_decay`` adds ``weight_decay * p`` to the gradient first.
    """

    def __init__(
        self,
        lr: float | Schedule = 0.01,
        rho: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue, **unknown)
        self.rho = number(rho, "RMSprop rho", 0.0, 1.0)
        self.eps = number(eps, "RMSprop eps", 0.0, low_open=True)
        self.momentum = number(momentum, "RMSprop momentum", 0.0, 1.0)
        self.centered = bool(centered)
        self.weight_decay = number(weight_decay, "RMSprop weight_decay", 0.0)

    def state_names(self) -> tuple[str, ...]:
        names = ["square_avg"]
        names += ["grad_avg"] if self.centered else []
        names += ["momentum"] if self.momentum else []
        return tuple(names)

    def step(self) -> None:
        self.iterations += 1
        xp, rho, lr = self.xp, self.rho, self._lr()
        for p, state in zip(self.params, self.state):
            g = p.grad if not self.weight_decay else p.grad + self.weight_decay * p.value
            if not state:
                state["square_avg"] = xp.zeros_like(g)
                if self.centered:
                    state["grad_avg"] = xp.zeros_like(g)
                if self.momentum:
                    state["momentum"] = xp.zeros_like(g)
            state["square_avg"] *= rho
            state["square_avg"] += (1.0 - rho) * (g * g)
            if self.centered:
                state["grad_avg"] *= rho
                state["grad_avg"] += (1.0 - rho) * g
                avg = state["square_avg"] - state["grad_avg"] * state["grad_avg"]
            else:
                avg = state["square_avg"]
            update = g / (xp.sqrt(avg) + self.eps)
            if self.momentum:
                state["momentum"] *= self.momentum
                state["momentum"] += update
                update = state["momentum"]
            p.value -= lr * update

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rho": self.rho,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
            "weight_decay": self.weight_decay,
        }


class Adagrad(Optimizer):
    """Adagrad as PyTorch's: ``s += g^2`` (from ``initial_accumulator``) and
    ``p -= lr g / (sqrt(s) + eps)``; ``weight_decay`` adds ``weight_decay * p`` to ``g``."""

    def __init__(
        self,
        lr: float | Schedule = 0.01,
        eps: float = 1e-10,
        initial_accumulator: float = 0.0,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue, **unknown)
        self.eps = number(eps, "Adagrad eps", 0.0, low_open=True)
        self.initial_accumulator = number(initial_accumulator, "Adagrad initial_accumulator", 0.0)
        self.weight_decay = number(weight_decay, "Adagrad weight_decay", 0.0)

    def state_names(self) -> tuple[str, ...]:
        return ("sum",)

    def step(self) -> None:
        self.iterations += 1
        xp, lr = self.xp, self._lr()
        for p, state in zip(self.params, self.state):
            g = p.grad if not self.weight_decay else p.grad + self.weight_decay * p.value
            if not state:
                state["sum"] = xp.full_like(g, self.initial_accumulator)
            state["sum"] += g * g
            p.value -= lr * (g / (xp.sqrt(state["sum"]) + self.eps))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "eps": self.eps,
            "initial_accumulator": self.initial_accumulator,
            "weight_decay": self.weight_decay,
        }


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
}
#: The optimizers by class name, as model files name them (``polynn.registry``).
OPTIMIZER_CLASSES: dict[str, type[Optimizer]] = {cls.__name__: cls for cls in OPTIMIZERS.values()}


def get_optimizer(optimizer: str | Optimizer | None) -> Optimizer:
    """An optimizer from a name (default hyperparameters), an instance, or None (SGD)."""
    if optimizer is None:
        return SGD()
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise PolynnValueError(unknown_name("optimizer", optimizer, OPTIMIZERS))
        return OPTIMIZERS[optimizer]()
    if not isinstance(optimizer, Optimizer):
        raise PolynnTypeError(
            f"optimizer must be a polynn Optimizer or one of {list(OPTIMIZERS)}; "
            f"got {type(optimizer).__name__}."
        )
    return optimizer
