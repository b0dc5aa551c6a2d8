"""Data in: the checks and casts every entry point of a model applies to ``X`` and ``y``
before any layer sees them (``fit``, ``evaluate``, ``predict``, ``forward``)."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from polynn._checks import number
from polynn.backends import POLICIES
from polynn.backends.host import mean_one
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.layers import Identity, compatible
from polynn.layers.core import axis_names
from polynn.losses import BinaryCrossEntropy, CrossEntropy, Loss

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = [
    "check_outputs",
    "ids",
    "input_dtype",
    "inputs",
    "normalised",
    "pairs",
    "takes_ids",
    "weights",
]


def takes_ids(net: Sequential) -> bool:
    """Whether ``net``'s first layer takes integer ids (an ``Embedding``)."""
    return net.layers[0].input_kind == "integral"


def input_dtype(net: Sequential) -> Any:
    """The dtype host data ``X`` is cast to before it moves: the model's, or None (kept as
    it is) for a model that takes ids."""
    return None if takes_ids(net) else net.dtype


def inputs(net: Sequential, X: Any) -> Any:
    """``X`` as an array of ``net``'s backend in its compute dtype, of shape (rows, features)
    (or ``(rows, *net.input_shape)``): host data is checked and moved, finite values that do not
    fit the dtype are refused. A model that takes ids keeps them integer (``ids``)."""
    if takes_ids(net):
        return ids(net, X)
    X = net.backend.asarray(X, dtype=net.dtype, name="X")
    shape = net.input_shape
    if shape is None:
        fits = X.ndim >= 2
    else:
        fits = X.ndim == len(shape) + 1 and compatible(tuple(X.shape[1:]), shape)
    if not fits:
        raise PolynnValueError(_wrong_shape(net, tuple(X.shape)))
    if net.mixed:
        xp = net.backend.xp
        X = xp.astype(X, net.compute_dtype)
        if not bool(xp.all(xp.isfinite(X))):
            raise PolynnValueError(
                f"X holds values beyond the range of {POLICIES[net.dtype_name]} (the compute "
                f"type of dtype={net.dtype_name!r}): scale the data."
            )
    return X


def ids(net: Sequential, X: Any) -> Any:
    """``X`` as integer ids for ``net``'s first layer, in the namespace's index dtype, each
    checked by the layer's ``check_ids`` (once for the whole array: no check is left to the
    training steps)."""
    xp, first = net.backend.xp, net.layers[0]
    X = net.backend.asarray(X, name="X")
    if not xp.isdtype(X.dtype, "integral"):
        raise PolynnTypeError(
            f"X must hold integer ids for the first layer, {first!r}; got data of "
            f"{str(X.dtype).rsplit('.', 1)[-1]}: "
            "pass X.astype(int) if its values are whole numbers."
        )
    if X.ndim != len(net.input_shape) + 1 or not compatible(tuple(X.shape[1:]), net.input_shape):
        raise PolynnValueError(_wrong_shape(net, tuple(X.shape)))
    index = xp.__array_namespace_info__().default_dtypes(device=net.backend.device)["indexing"]
    X = xp.astype(X, index, copy=False)
    check = getattr(first, "check_ids", None)
    if check is not None:
        check(X)
    return X


def _wrong_shape(net: Sequential, got: tuple[int, ...]) -> str:
    """The message for inputs of shape ``got`` that ``net`` cannot take."""
    shape = net.input_shape
    if shape is None:
        return f"X has shape {got}, but the network takes rows of at least one axis: (rows, ...)."
    first = next(layer for layer in net.layers if layer.input_shape() is not None)
    if len(shape) == 1 and shape[0] is not None:
        hint = ""
        if len(got) == 1 and got[0] == shape[0]:
            hint = " (for one row, pass X.reshape(1, -1))"
        elif len(got) == 1 and shape[0] == 1:
            hint = " (for one feature per row, pass X.reshape(-1, 1))"
        return (
            f"X has shape {got}, but the first {type(first).__name__} layer expects "
            f"{shape[0]} features per row: shape (rows, {shape[0]}){hint}."
        )
    dims = ", ".join(axis_names(shape))
    return (
        f"X has shape {got}, but the first {type(first).__name__} layer expects rows of shape "
        f"({dims}): shape (rows, {dims})."
    )


def pairs(net: Sequential, X: Any, y: Any, loss: Loss) -> tuple[Any, Any]:
    """``inputs(net, X)`` and ``y`` as ``loss`` takes its targets, with one target a row."""
    X = inputs(net, X)
    y = loss.prepare_targets(y, net.n_outputs, net.backend, net.dtype)
    if X.shape[0] != y.shape[0]:
        raise PolynnValueError(
            f"X has {X.shape[0]} rows but y has {y.shape[0]}; each row of X needs one target."
        )
    check_outputs(net, loss)
    return X, y


def check_outputs(net: Sequential, loss: Loss) -> None:
    """Refuse binary cross-entropy on a network whose outputs are not probabilities: its
    log and gradient are meaningless outside [0, 1] (PyTorch's ``BCELoss`` refuses such
    values too). Decided from the layers, once per call, not from the outputs at each step
    (which would read them back from the device)."""
    if not isinstance(loss, BinaryCrossEntropy):
        return
    last = next((layer for layer in reversed(net.layers) if not isinstance(layer, Identity)), None)
    if last is None or not last.probabilities:
        raise PolynnValueError(
            f"loss 'bce' takes probabilities, and this network ends with {last!r}, whose "
            "outputs are not limited to [0, 1]: end it with pn.Sigmoid() (or pn.Softmax()), "
            "or train with another loss, e.g. 'mse'."
        )


def weights(
    net: Sequential,
    y: Any,
    loss: Loss,
    sample_weight: Any = None,
    class_weight: Mapping[int, float] | None = None,
) -> Any:
    """The weight of each row of ``y`` (targets as ``pairs`` returns them), shape (rows, 1),
    scaled to average 1, or None without weights. ``class_weight`` maps class indices to
    weights (classes it leaves out weigh 1) and multiplies ``sample_weight``."""
    if sample_weight is None and class_weight is None:
        return None
    if not loss.supports_weights():
        raise PolynnValueError(
            f"weights per sample need the loss's per-row values, and {loss!r} does not define "
            "row_values(pred, target)."
        )
    xp, rows = net.backend.xp, y.shape[0]
    w = xp.ones((rows,), dtype=net.dtype, device=net.backend.device)
    if sample_weight is not None:  # in its own dtype until scaled (1e-40 is 0 in float32)
        w = net.backend.asarray(sample_weight, name="sample_weight")
        if not xp.isdtype(w.dtype, "real floating"):
            w = xp.astype(w, net.dtype)
        if w.ndim == 2 and w.shape[1] == 1:
            w = xp.reshape(w, (w.shape[0],))
        if w.ndim != 1 or w.shape[0] != rows:
            raise PolynnValueError(
                f"sample_weight has shape {tuple(w.shape)}; expected one weight per row of y: "
                f"shape ({rows},)."
            )
        if not bool(xp.all(w >= 0)):
            raise PolynnValueError("sample_weight must be non-negative; it has negative values.")
    if class_weight is not None:
        w = w * _class_weights(net, y, loss, class_weight)
    return normalised(net, w, "rows")


def normalised(net: Sequential, w: Any, what: str) -> Any:
    """Non-negative weights ``w``, one per row, scaled to average 1 (on the host, in float64:
    ``polynn.backends.host.mean_one``, so that no sum overflows and tiny weights keep their
    ratios), as a (rows, 1) array of ``net``'s dtype; weights that are all 0 are refused,
    naming ``what`` they weigh."""
    scaled = mean_one(net.backend.to_numpy(w))
    if scaled is None:
        raise PolynnValueError(
            f"the weights of the {what} sum to 0; at least one must be positive."
        )
    w = net.backend.asarray(scaled, dtype=net.dtype, name="sample_weight")
    return net.backend.xp.reshape(w, (w.shape[0], 1))


def _class_weights(net: Sequential, y: Any, loss: Loss, class_weight: Mapping) -> Any:
    """Each row's weight from ``class_weight``, by its class: the arg-max of a
    cross-entropy target row, or the 0/1 target of a single output."""
    if not isinstance(class_weight, Mapping):
        raise PolynnTypeError(
            f"class_weight must be a dict {{class index: weight}}; got {class_weight!r}."
        )
    xp = net.backend.xp
    info = xp.__array_namespace_info__()
    integer = info.default_dtypes(device=net.backend.device)["integral"]
    if isinstance(loss, CrossEntropy):
        labels, classes = xp.argmax(y, axis=1), y.shape[1]
    elif y.shape[1] == 1 and bool(xp.all((y == 0) | (y == 1))):
        labels, classes = xp.astype(y[:, 0], integer), 2
    else:
        raise PolynnValueError(
            "class_weight needs class targets: loss='cross_entropy', or one output with 0/1 "
            "targets; use sample_weight for other targets."
        )
    table = [1.0] * classes
    for key, value in class_weight.items():
        index = operator.index(key) if hasattr(key, "__index__") else None  # np.int64 too
        if isinstance(key, bool) or index is None or not 0 <= index < classes:
            kind = "" if index is not None and not isinstance(key, bool) else ", not an integer"
            raise PolynnValueError(
                f"class_weight keys must be class indices in [0, {classes - 1}]; got {key!r}{kind}."
            )
        table[index] = number(value, f"class_weight[{index}]", 0.0)
    per_class = net.backend.asarray(table, dtype=net.dtype, name="class_weight")
    return xp.take(per_class, xp.astype(labels, integer), axis=0)
