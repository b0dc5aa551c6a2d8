"""Data in: the checks and casts every entry point of a model applies to ``X`` and ``y``
before any layer sees them (``fit``, ``evaluate``, ``predict``, ``forward``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polynn.backends import POLICIES
from polynn.errors import PolynnValueError
from polynn.layers import compatible
from polynn.losses import Loss

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = ["inputs", "pairs"]


def inputs(net: Sequential, X: Any) -> Any:
    """``X`` as an array of ``net``'s backend in its compute dtype, of shape (rows, features)
    (or ``(rows, *net.input_shape)``): host data is checked and moved, finite values that do not
    fit the dtype are refused."""
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


def _wrong_shape(net: Sequential, got: tuple[int, ...]) -> str:
    """The message for inputs of shape ``got`` that ``net`` cannot take."""
    shape = net.input_shape
    if shape is None:
        return f"X has shape {got}, but the network takes rows of at least one axis: (rows, ...)."
    first = next(layer for layer in net.layers if layer.input_shape() is not None)
    if len(shape) == 1:
        hint = " (for one feature per row, pass X.reshape(-1, 1))" if len(got) == 1 else ""
        return (
            f"X has shape {got}, but the first {type(first).__name__} layer expects "
            f"{shape[0]} features per row: shape (rows, {shape[0]}){hint}."
        )
    dims = ", ".join("length" if n is None else str(n) for n in shape)
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
    return X, y
