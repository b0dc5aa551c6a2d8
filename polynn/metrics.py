"""Metrics. Each returns the number of correct rows of a batch as a 0-d array on the device,
so that ``fit`` can add them up and read them back once per epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from polynn.errors import PolynnTypeError, PolynnValueError

__all__ = ["METRICS", "accuracy_count", "get_metrics"]


def accuracy_count(pred: Any, target: Any, xp: Any) -> Any:
    """Rows whose prediction matches the target.

    With one output, the prediction is ``pred > 0.5`` (a probability) against ``target > 0.5``;
    with several, the arg-max of the prediction against the arg-max of the one-hot target.
    """
    if pred.shape[1] == 1:
        hits = (pred > 0.5) == (target > 0.5)
        hits = xp.reshape(hits, (hits.shape[0],))
    else:
        hits = xp.argmax(pred, axis=1) == xp.argmax(target, axis=1)
    return xp.sum(xp.astype(hits, pred.dtype))


METRICS: dict[str, Callable[[Any, Any, Any], Any]] = {"accuracy": accuracy_count}


def get_metrics(metrics: Sequence[str] | None) -> dict[str, Callable[[Any, Any, Any], Any]]:
    """The metric functions named in ``metrics``."""
    if metrics is None:
        return {}
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise PolynnTypeError(
            f"metrics must be a list of names such as ['accuracy']; got {metrics!r}."
        )
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise PolynnValueError(f"unknown metric(s) {unknown}; valid names are {list(METRICS)}.")
    return {m: METRICS[m] for m in metrics}
