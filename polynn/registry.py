"""Names in model files, and the classes they stand for.

A saved model names its layers, loss, optimizer and learning-rate schedule by class name, and
its metrics by metric name. ``load`` maps each name to a class (or metric function) that
polynn defines or that the user registered: with ``@pn.register`` on the class, or with
``custom_objects={"Name": cls}`` on ``pn.load``. Nothing in a file can name code to import
or run, so a file is data, never a program.

>>> import polynn as pn
>>> @pn.register
... class Double(pn.Layer):
...     def forward(self, x):
...         return 2 * x
...     def backward(self, grad):
...         return 2 * grad
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from polynn._checks import unknown_name
from polynn.errors import PolynnTypeError, PolynnValueError

__all__ = ["encode", "kind_of", "lookup", "name_of", "register", "registered"]

T = TypeVar("T")

#: Everything registered, by name: classes (layers, losses, optimizers, schedules) and
#: metric functions.
_REGISTERED: dict[str, Any] = {}


def _builtins() -> dict[str, dict[str, Any]]:
    """polynn's own names, by kind (imported late: those modules import this one)."""
    from polynn.layers import LAYERS
    from polynn.losses import LOSS_CLASSES
    from polynn.metrics import METRICS
    from polynn.optimizers import OPTIMIZER_CLASSES
    from polynn.schedules import SCHEDULES

    return {
        "layer": LAYERS,
        "loss": LOSS_CLASSES,
        "optimizer": OPTIMIZER_CLASSES,
        "schedule": SCHEDULES,
        "metric": METRICS,
    }


def _bases() -> dict[str, type]:
    from polynn.layers import Layer
    from polynn.losses import Loss
    from polynn.optimizers import Optimizer
    from polynn.schedules import Schedule

    return {"layer": Layer, "loss": Loss, "optimizer": Optimizer, "schedule": Schedule}


def kind_of(obj: Any) -> str:
    """``"layer"``, ``"loss"``, ``"optimizer"``, ``"schedule"`` or ``"metric"`` (a function)."""
    cls = obj if isinstance(obj, type) else type(obj)
    for kind, base in _bases().items():
        if issubclass(cls, base):
            return kind
    if callable(obj) and not isinstance(obj, type):
        return "metric"
    raise PolynnTypeError(
        f"only polynn layers, losses, optimizers, schedules and metric functions can be "
        f"registered; got {obj!r}."
    )


def register(obj: T | None = None, *, name: str | None = None) -> Any:
    """Make a class (or a metric function) known to ``pn.load`` by ``name`` (default: its
    ``__name__``), so that models using it save and load. Use it as ``@pn.register`` or
    ``@pn.register(name="MyLayer")``.

    A class is rebuilt from a file as ``cls(**config)``, ``config`` being what its
    ``get_config()`` returns (JSON values); a metric ``fn(y_true, y_pred)`` returns the
    figure for the rows it is given (see ``polynn.metrics``). A registered loss or metric is
    also named by that string in ``fit`` and ``evaluate`` (``loss="my_loss"``)."""

    def decorate(obj: T) -> T:
        key = name if name is not None else getattr(obj, "__name__", None)
        if not isinstance(key, str) or not key:
            raise PolynnTypeError(f"register needs a name for {obj!r}; pass name='...'.")
        kind = kind_of(obj)
        if key in _builtins()[kind] and _builtins()[kind][key] is not obj:
            raise PolynnValueError(
                f"{key!r} is the name of polynn's own {kind}; register {obj!r} under "
                "another name, e.g. @pn.register(name='My" + key + "')."
            )
        previous = _REGISTERED.get(key)
        if previous is not None and previous is not obj and not _same_definition(previous, obj):
            raise PolynnValueError(
                f"the name {key!r} is already registered for {previous!r}; pass name='...'."
            )
        _REGISTERED[key] = obj
        return obj

    return decorate if obj is None else decorate(obj)


def _same_definition(a: Any, b: Any) -> bool:
    """Whether ``b`` is ``a`` defined again (a module reloaded, a notebook cell re-run)."""
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None),
        getattr(b, "__qualname__", None),
    )


def registered() -> dict[str, Any]:
    """A copy of the names registered so far."""
    return dict(_REGISTERED)


def name_of(obj: Any, what: str) -> str:
    """The name a file uses for ``obj`` (an instance, or a metric function); a class that
    neither polynn nor the user registered cannot be saved, and the error says how to fix it
    (``what`` says where it sits in the model, e.g. "layer 2")."""
    kind = kind_of(obj)
    target = obj if kind == "metric" else type(obj)
    for table in (_builtins()[kind], _REGISTERED):
        for key, value in table.items():
            if value is target:
                return key
    label = getattr(target, "__name__", repr(target))
    raise PolynnValueError(
        f"{what} is a {label}, which polynn cannot name in a file: register the class with "
        f"@pn.register above its definition (and import that module before pn.load, or pass "
        f"custom_objects={{{label!r}: {label}}} to pn.load)."
    )


def encode(obj: Any, what: str) -> dict[str, Any]:
    """``{"type": name, "config": obj.get_config()}``: how a file holds an object; a frozen
    layer also has ``"trainable": False``."""
    spec = {"type": name_of(obj, what), "config": obj.get_config()}
    if kind_of(obj) == "layer" and not obj.trainable:
        spec["trainable"] = False
    return spec


def lookup(kind: str, name: Any, custom_objects: Mapping[str, Any] | None = None) -> Any:
    """The class (or metric function) a file names, from ``custom_objects``, polynn's own or
    the registered ones, in that order; an unknown name raises ``PolynnValueError``."""
    builtins = _builtins()[kind]
    base = _bases().get(kind)
    for table in (custom_objects or {}, builtins, _REGISTERED):
        found = table.get(name) if isinstance(name, str) else None
        if found is None:
            continue
        if base is not None and not (isinstance(found, type) and issubclass(found, base)):
            if table is _REGISTERED:
                continue  # a registered name of another kind
            raise PolynnTypeError(
                f"custom_objects[{name!r}] must be a polynn {kind} class; got {found!r}."
            )
        return found
    known = {**builtins, **{k: v for k, v in _REGISTERED.items() if kind_of(v) == kind}}
    raise PolynnValueError(
        unknown_name(kind, name, known)
        + " A class of your own must be registered (@pn.register) or passed in "
        "custom_objects={...} to pn.load."
    )


def build(kind: str, spec: Any, custom_objects: Mapping[str, Any] | None = None) -> Any:
    """The object a file's ``{"type": ..., "config": {...}}`` entry describes."""
    if not isinstance(spec, dict) or not isinstance(spec.get("config", {}), dict):
        raise PolynnValueError(f"a {kind} entry must be {{'type': ..., 'config': {{...}}}}.")
    cls = lookup(kind, spec.get("type"), custom_objects)
    trainable = spec.get("trainable", True)
    if kind != "layer" and "trainable" in spec:
        raise PolynnValueError(f"a {kind} entry has no 'trainable' (only layers have).")
    if not isinstance(trainable, bool):
        raise PolynnValueError(f"a layer's 'trainable' must be true or false; got {trainable!r}.")
    from_config: Callable[..., Any] | None = getattr(cls, "from_config", None)
    config = spec.get("config", {})
    obj = from_config(config, custom_objects) if from_config is not None else cls(**config)
    if not trainable:
        obj.trainable = False
    return obj
