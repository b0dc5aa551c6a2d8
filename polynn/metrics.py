"""Metrics. Each returns the number of correct rows of a batch as a 0-d array on the device,
so that ``fit`` can add them up and read them back once per epoch. A function of your own
``fn(pred, target, xp)`` registered with ``@pn.register`` is named like the built-in ones."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from polynn._checks import unknown_name
from polynn.errors import PolynnTypeError, PolynnValueError

__all__ = ["METRICS", "accuracy_count", "get_metrics"]


def accuracy_count(pred: Any, target: Any, xp: Any, *, binary: bool = False) -> Any:
    """Correct rows of a batch.

    ``binary`` (one output, or ``loss="bce"``): each output is a probability, right when
    ``pred > 0.5`` agrees with ``target > 0.5``; a row counts as the fraction of its outputs
    that are right. Otherwise the arg-max of the prediction against the arg-max of the one-hot
    target.
    """
    if binary:
        hits = xp.astype((pred > 0.5) == (target > 0.5), pred.dtype)
        return xp.sum(hits) / pred.shape[1]
    hits = xp.argmax(pred, axis=1) == xp.argmax(target, axis=1)
    return xp.sum(xp.astype(hits, pred.dtype))


METRICS: dict[str, Callable[[Any, Any, Any], Any]] = {"accuracy": accuracy_count}


def get_metrics(
    metrics: Sequence[str] | None, *, binary: bool = False
) -> dict[str, Callable[[Any, Any, Any], Any]]:
    """The metric functions named in ``metrics`` (``binary``: see ``accuracy_count``)."""
    if metrics is None:
        return {}
    if (
        isinstance(metrics, str)
        or not isinstance(metrics, Sequence)
        or not all(isinstance(m, str) for m in metrics)
    ):
        raise PolynnTypeError(
            f"metrics must be a list of names such as ['accuracy']; got {metrics!r}."
        )
    from polynn.registry import kind_of, registered  # polynn.registry imports this module

    custom = {k: v for k, v in registered().items() if kind_of(v) == "metric"}
    unknown = [m for m in metrics if m not in METRICS and m not in custom]
    if unknown:
        suggestion = unknown_name("metric", unknown[0], [*METRICS, *custom]).split("; ", 1)[1]
        raise PolynnValueError(f"unknown metric(s) {unknown}; {suggestion}")
    return {
        m: functools.partial(METRICS[m], binary=binary) if m in METRICS else custom[m]
        for m in metrics
    }
