"""Data in: the checks and casts every entry point of a model applies to ``X`` and ``y``
before any layer sees them (``fit``, ``evaluate``, ``predict``, ``forward``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polynn.backends import POLICIES
from polynn.errors import PolynnValueError
from polynn.losses import Loss

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = ["inputs", "pairs"]


def inputs(net: Sequential, X: Any) -> Any:
    """``X`` as an array of ``net``'s backend in its compute dtype, of shape (rows, features):
    host data is checked and moved, finite values that do not fit the dtype are refused."""
    X = net.backend.asarray(X, dtype=net.dtype, name="X")
    if X.ndim != 2 or X.shape[1] != net.in_features:
        hint = " (for one feature per row, pass X.reshape(-1, 1))" if X.ndim == 1 else ""
        raise PolynnValueError(
            f"X has shape {tuple(X.shape)}, but the first Dense layer expects "
            f"{net.in_features} features per row: shape (rows, {net.in_features}){hint}."
        )
    if net.mixed:
        xp = net.backend.xp
        X = xp.astype(X, net.compute_dtype)
        if not bool(xp.all(xp.isfinite(X))):
            raise PolynnValueError(
                f"X holds values beyond the range of {POLICIES[net.dtype_name]} (the compute "
                f"type of dtype={net.dtype_name!r}): scale the data."
            )
    return X


def pairs(net: Sequential, X: Any, y: Any, loss: Loss) -> tuple[Any, Any]:
    """``inputs(net, X)`` and ``y`` as ``loss`` takes its targets, with one target a row."""
    X = inputs(net, X)
    y = loss.prepare_targets(y, net.n_outputs, net.backend, net.dtype)
    if X.shape[0] != y.shape[0]:
        raise PolynnValueError(
            f"X has {X.shape[0]} rows but y has {y.shape[0]}; each row of X needs one target."
        )
    return X, y
