"""Metrics, named in ``fit(..., metrics=[...])`` and ``evaluate``.

Most metrics reduce each batch to a few sums on the device (``Metric.batch``: correct rows,
per-output errors, true and false positives per class), which a pass adds up and reads back
once, at its end; ``Metric.result`` makes the figure from the totals on the host. So the
figure is that of all the pass's rows, exactly, whatever the batch size, and a training
step reads nothing back. ``auc`` and metric functions of your own need all the rows at once
(``Metric.whole``): the pass keeps its outputs and computes them at its end.

The built-in names (scikit-learn's definitions; each is tested against scikit-learn):

- ``accuracy``: arg-max against arg-max; with one output (or ``loss="bce"``) each output a
  probability, right when ``pred > 0.5`` agrees with ``target > 0.5``.
- ``mae``, ``mse``, ``rmse``, ``r2``: per output, then averaged over the outputs
  (``multioutput="uniform_average"``).
- ``top_k_accuracy`` (k = 5), ``top_<k>_accuracy`` (``"top_3_accuracy"``): the target class
  among the ``k`` highest outputs (a tie counts for the target).
- ``precision``, ``recall``, ``f1``: binary for one output (positive: ``pred > 0.5``), macro
  averages otherwise: over the classes (arg-max) that occur in the targets or predictions, or,
  with ``loss="bce"`` and several outputs, over every output (multilabel). A class never
  predicted has precision 0 (scikit-learn's ``zero_division=0``).
- ``auc``: the area under the ROC curve of one output (binary), ties counted half; NaN when
  the data holds one class only.

A function of your own, ``fn(y_true, y_pred)`` returning the figure for the rows it is given
(a number or a 0-d array; ``pn.backends.backend_of(y_pred).xp`` is the namespace), is named by
its ``__name__`` once registered with ``@pn.register`` and is called once per pass with all
the rows.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from polynn._checks import unknown_name
from polynn.errors import PolynnTypeError, PolynnValueError

__all__ = [
    "ALIASES",
    "METRICS",
    "Accuracy",
    "AUC",
    "Function",
    "ClassScores",
    "Errors",
    "Metric",
    "R2",
    "TopK",
    "check_name",
    "get_metrics",
]


class Metric:
    """One metric of a pass, for a network of ``outputs`` outputs; ``binary`` says that each
    output is a probability (one output, or ``loss="bce"``)."""

    #: True for a metric of all the rows at once (``result_all``) instead of sums.
    whole = False

    def __init__(self, outputs: int, binary: bool) -> None:
        self.outputs, self.binary = outputs, binary
        #: How many sums ``batch`` returns.
        self.width = 1

    def batch(self, pred: Any, target: Any, xp: Any) -> Any:
        """The sums of one batch, a 1-d array on the device (added up over the pass)."""
        raise NotImplementedError

    def result(self, totals: list[float], rows: int) -> float:
        """The figure from the pass's totals (host floats) over ``rows`` rows."""
        raise NotImplementedError

    def result_all(self, pred: Any, target: Any, xp: Any) -> Any:
        """The figure of a ``whole`` metric from all the pass's outputs and targets."""
        raise NotImplementedError

    def __call__(self, pred: Any, target: Any, xp: Any) -> Any:
        """What a pass keeps of a batch: its sums, or for a ``whole`` metric a copy of the
        batch (a compiled step may reuse its arrays for the next one)."""
        if self.whole:
            return xp.asarray(pred, copy=True), xp.asarray(target, copy=True)
        return self.batch(pred, target, xp)


def _labels(scores: Any, xp: Any) -> Any:
    """One-hot rows (booleans) of each row's arg-max."""
    classes = xp.arange(scores.shape[1], device=scores.device)
    return xp.argmax(scores, axis=1)[:, None] == classes


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


class Accuracy(Metric):
    """The fraction of right rows (binary: of right outputs, averaged over a row's outputs)."""

    def batch(self, pred: Any, target: Any, xp: Any) -> Any:
        if self.binary:
            hits = xp.astype((pred > 0.5) == (target > 0.5), pred.dtype)
            return xp.reshape(xp.sum(hits) / pred.shape[1], (1,))
        hits = xp.argmax(pred, axis=1) == xp.argmax(target, axis=1)
        return xp.reshape(xp.sum(xp.astype(hits, pred.dtype)), (1,))

    def result(self, totals: list[float], rows: int) -> float:
        return totals[0] / rows


class Errors(Metric):
    """``mae``, ``mse`` or ``rmse``: per output over the rows, averaged over the outputs."""

    def __init__(self, outputs: int, binary: bool, kind: str) -> None:
        super().__init__(outputs, binary)
        self.kind, self.width = kind, outputs

    def batch(self, pred: Any, target: Any, xp: Any) -> Any:
        diff = pred - target
        return xp.sum(xp.abs(diff) if self.kind == "mae" else diff * diff, axis=0)

    def result(self, totals: list[float], rows: int) -> float:
        each = [total / rows for total in totals]
        if self.kind == "rmse":
            each = [math.sqrt(value) for value in each]
        return sum(each) / len(each)


class R2(Metric):
    """The coefficient of determination per output, ``1 - SS_res / SS_tot``, averaged over
    the outputs (1 for a constant target predicted exactly, 0 for one that is not). From
    sums of ``y``, ``y**2`` and ``(y - pred)**2``: targets whose mean dwarfs their spread
    lose digits to cancellation in float32."""

    def __init__(self, outputs: int, binary: bool) -> None:
        super().__init__(outputs, binary)
        self.width = 3 * outputs

    def batch(self, pred: Any, target: Any, xp: Any) -> Any:
        diff = target - pred
        parts = [xp.sum(target, axis=0), xp.sum(target * target, axis=0)]
        return xp.concat([*parts, xp.sum(diff * diff, axis=0)])

    def result(self, totals: list[float], rows: int) -> float:
        n = len(totals) // 3
        scores = []
        for total, square, residual in zip(totals[:n], totals[n : 2 * n], totals[2 * n :]):
            spread = max(square - total * total / rows, 0.0)
            if spread:
                scores.append(1.0 - residual / spread)
            else:
                scores.append(0.0 if residual else 1.0)
        return sum(scores) / n


class TopK(Metric):
    """The fraction of rows whose target class (arg-max) is among the ``k`` highest outputs."""

    def __init__(self, outputs: int, binary: bool, k: int) -> None:
        super().__init__(outputs, binary)
        if outputs < 2:
            raise PolynnValueError(
                f"top-k accuracy needs one output per class; this network has {outputs}."
            )
        self.k = k

    def batch(self, pred: Any, target: Any, xp: Any) -> Any:
        zero = xp.zeros_like(pred)
        mine = xp.sum(xp.where(_labels(target, xp), pred, zero), axis=1, keepdims=True)
        above = xp.sum(xp.astype(pred > mine, pred.dtype), axis=1)
        return xp.reshape(xp.sum(xp.astype(above < self.k, pred.dtype)), (1,))

    def result(self, totals: list[float], rows: int) -> float:
        return totals[0] / rows


class ClassScores(Metric):
    """``precision``, ``recall`` or ``f1`` from the true positives, false positives and false
    negatives of each class (each output, for multilabel; the positive class, for binary)."""

    def __init__(self, outputs: int, binary: bool, kind: str) -> None:
        super().__init__(outputs, binary)
        self.kind, self.width = kind, 3 * outputs

    def batch(self, pred: Any, target: Any, xp: Any) -> Any:
        if self.binary:
            said, true = pred > 0.5, target > 0.5
        else:
            said, true = _labels(pred, xp), _labels(target, xp)
        as_float = lambda mask: xp.sum(xp.astype(mask, pred.dtype), axis=0)  # noqa: E731
        not_said, not_true = xp.logical_not(said), xp.logical_not(true)
        return xp.concat(
            [
                as_float(xp.logical_and(said, true)),
                as_float(xp.logical_and(said, not_true)),
                as_float(xp.logical_and(not_said, true)),
            ]
        )

    def result(self, totals: list[float], rows: int) -> float:
        n = len(totals) // 3
        scores = []
        for tp, fp, fn in zip(totals[:n], totals[n : 2 * n], totals[2 * n :]):
            if not self.binary and not tp + fp + fn:
                continue  # a class in neither the targets nor the predictions
            if self.kind == "precision":
                scores.append(_ratio(tp, tp + fp))
            elif self.kind == "recall":
                scores.append(_ratio(tp, tp + fn))
            else:
                scores.append(_ratio(2.0 * tp, 2.0 * tp + fp + fn))
        return sum(scores) / len(scores) if scores else 0.0


class AUC(Metric):
    """The area under the ROC curve of a single probability output: the chance that a
    positive row scores above a negative one, ties counted half (Mann-Whitney), computed on
    the device by sorting the negatives' scores."""

    whole = True

    def __init__(self, outputs: int, binary: bool) -> None:
        super().__init__(outputs, binary)
        if outputs != 1:
            raise PolynnValueError(
                f"metric 'auc' is for one output (a binary classifier's probability); this "
                f"network has {outputs}."
            )

    def result_all(self, pred: Any, target: Any, xp: Any) -> Any:
        score, positive = pred[:, 0], target[:, 0] > 0.5
        # The negatives' scores in order, the positives' moved past them as infinity.
        negatives = xp.sort(xp.where(positive, xp.full_like(score, math.inf), score))
        below = xp.astype(xp.searchsorted(negatives, score, side="left"), score.dtype)
        upto = xp.astype(xp.searchsorted(negatives, score, side="right"), score.dtype)
        wins = xp.sum(xp.where(positive, below + 0.5 * (upto - below), xp.zeros_like(score)))
        n_pos = xp.sum(xp.astype(positive, score.dtype))
        pairs = n_pos * (score.shape[0] - n_pos)
        return wins / pairs if float(pairs) else math.nan


class Function(Metric):
    """A function of your own, ``fn(y_true, y_pred)``, called once with all the pass's rows."""

    whole = True

    def __init__(self, outputs: int, binary: bool, fn: Callable[[Any, Any], Any]) -> None:
        super().__init__(outputs, binary)
        self.fn = fn

    def result_all(self, pred: Any, target: Any, xp: Any) -> Any:
        return self.fn(target, pred)


#: The built-in metrics by name (``top_<k>_accuracy`` too; see the module's docstring).
METRICS: dict[str, Callable[[int, bool], Metric]] = {
    "accuracy": Accuracy,
    "mae": lambda outputs, binary: Errors(outputs, binary, "mae"),
    "mse": lambda outputs, binary: Errors(outputs, binary, "mse"),
    "rmse": lambda outputs, binary: Errors(outputs, binary, "rmse"),
    "r2": R2,
    "top_k_accuracy": lambda outputs, binary: TopK(outputs, binary, 5),
    "precision": lambda outputs, binary: ClassScores(outputs, binary, "precision"),
    "recall": lambda outputs, binary: ClassScores(outputs, binary, "recall"),
    "f1": lambda outputs, binary: ClassScores(outputs, binary, "f1"),
    "auc": AUC,
}
#: Other libraries' names for them (Keras's and scikit-learn's); the history keeps the name
#: given.
ALIASES = {
    "acc": "accuracy",
    "binary_accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "mean_absolute_error": "mae",
    "mean_squared_error": "mse",
    "root_mean_squared_error": "rmse",
    "r2_score": "r2",
    "top_k_categorical_accuracy": "top_k_accuracy",
    "sparse_top_k_categorical_accuracy": "top_k_accuracy",
    "f1_score": "f1",
    "roc_auc": "auc",
}
_TOP_K = re.compile(r"top_([1-9][0-9]*)_accuracy")


def _builtin(name: str) -> Callable[[int, bool], Metric] | None:
    name = ALIASES.get(name, name)
    match = _TOP_K.fullmatch(name)
    if match:
        k = int(match.group(1))
        return lambda outputs, binary: TopK(outputs, binary, k)
    return METRICS.get(name)


def _custom(custom_objects: Any = None) -> dict[str, Any]:
    from polynn.registry import kind_of, registered  # polynn.registry imports this module

    found = {k: v for k, v in registered().items() if kind_of(v) == "metric"}
    return {**found, **{k: v for k, v in (custom_objects or {}).items() if callable(v)}}


def check_name(name: Any, custom_objects: Any = None) -> None:
    """Refuse a metric name that is not built in, registered or in ``custom_objects``."""
    if not (isinstance(name, str) and (_builtin(name) or name in _custom(custom_objects))):
        known = [*METRICS, *_custom(custom_objects)]
        raise PolynnValueError(unknown_name("metric", name, known))


def _function(name: str, fn: Any) -> Callable[[Any, Any], Any]:
    """``fn`` if it takes ``(y_true, y_pred)``; else a clear error."""
    try:
        required = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):  # no signature to read: trust it
        return fn
    if len(required) > 2:
        raise PolynnTypeError(
            f"metric {name!r} takes {len(required)} arguments; a metric function takes "
            f"(y_true, y_pred) and returns the figure for those rows (polynn calls it once "
            f"per pass with all the rows)."
        )
    return fn


def get_metrics(
    metrics: Sequence[str] | None, *, outputs: int, binary: bool = False
) -> dict[str, Metric]:
    """The metrics named in ``metrics`` for a network of ``outputs`` outputs (``binary``:
    each output a probability), by name."""
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
    custom = _custom()
    unknown = [m for m in metrics if not _builtin(m) and m not in custom]
    if unknown:
        suggestion = unknown_name("metric", unknown[0], [*METRICS, *custom]).split("; ", 1)[1]
        raise PolynnValueError(f"unknown metric(s) {unknown}; {suggestion}")
    chosen: dict[str, Metric] = {}
    for m in metrics:
        make = _builtin(m)
        if make is not None:
            chosen[m] = make(outputs, binary)
        else:
            chosen[m] = Function(outputs, binary, _function(m, custom[m]))
    return chosen
