"""Losses. ``value_and_grad`` returns the mean loss (a 0-d array, left on the device) and its
gradient with respect to the predictions (a new array: the backward pass may write into it);
``prepare_targets`` checks and shapes the targets once per call of ``fit`` or ``evaluate``,
never per batch.

Each loss here is a mean over rows of a per-row term (``row_values``), which is what weights
per sample need: with weights ``w`` (scaled to average 1 over the data) a batch's loss is
``mean(w * row_values)`` and its gradient the unweighted one times ``w`` row by row.
"""

from __future__ import annotations

from typing import Any

from polynn._checks import number, unknown_name
from polynn.backends import Backend
from polynn.errors import PolynnTypeError, PolynnValueError

__all__ = ["BinaryCrossEntropy", "CrossEntropy", "Loss", "MSE", "get_loss"]


class Loss:
    """Base class of the losses. A loss class whose ``value_and_grad`` reads nothing back to
    the host declares ``compilable = True`` (``polynn.compiled``)."""

    name = ""
    compilable = True  # weighted_value_and_grad below (the subclasses' own declare theirs)

    def prepare_targets(self, y: Any, n_outputs: int, backend: Backend, dtype: Any) -> Any:
        """Check ``y`` against ``n_outputs`` and return it as a (rows, n_outputs) float array."""
        y = backend.asarray(y, dtype=dtype, name="y")
        return _column(y, n_outputs, backend)

    def value(self, pred: Any, target: Any) -> Any:
        return self.value_and_grad(pred, target)[0]

    def value_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def row_values(self, pred: Any, target: Any) -> Any:
        """Each row's term of the loss, shape (rows,): the loss is their mean. Needed only
        for weights per sample."""
        raise NotImplementedError

    def weighted_value_and_grad(self, pred: Any, target: Any, weight: Any) -> tuple[Any, Any]:
        """``mean(weight * row_values)`` and its gradient; ``weight`` has shape (rows, 1)."""
        _, grad = self.value_and_grad(pred, target)
        rows = self.row_values(pred, target)
        return self.xp.sum(rows * weight[:, 0]) / pred.shape[0], grad * weight

    def supports_weights(self) -> bool:
        return type(self).row_values is not Loss.row_values

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for saving."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _column(y: Any, n_outputs: int, backend: Backend) -> Any:
    """``y`` as (rows, n_outputs): a 1-d ``y`` is accepted for a single output."""
    if y.ndim == 1 and n_outputs == 1:
        y = backend.xp.reshape(y, (y.shape[0], 1))
    if y.ndim != 2 or y.shape[1] != n_outputs:
        hint = ""
        if y.ndim == 1 and n_outputs > 1:
            hint = (
                " If y holds class labels, train with loss='cross_entropy' (one output per class)."
            )
        raise PolynnValueError(
            f"y has shape {tuple(y.shape)}, but the network has {n_outputs} output(s); "
            f"expected shape (rows, {n_outputs})"
            + (" or (rows,)." if n_outputs == 1 else ".")
            + hint
        )
    return y


class MSE(Loss):
    """Mean over all elements of ``(pred - y) ** 2``; gradient ``2 (pred - y) / size``."""

    compilable = True

    name = "mse"

    def value_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:
        diff = pred - target
        scale = 1.0 / (diff.shape[0] * diff.shape[1])
        return self.xp.sum(diff * diff) * scale, diff * (2.0 * scale)

    def row_values(self, pred: Any, target: Any) -> Any:
        diff = pred - target
        return self.xp.sum(diff * diff, axis=1) / diff.shape[1]


class BinaryCrossEntropy(Loss):
    """``-mean(y log p + (1 - y) log(1 - p))`` on probabilities ``p``.

    ``p`` is clipped to ``[eps, 1 - eps]`` first, so a saturated sigmoid never gives an
    infinite or NaN loss. Targets must lie in [0, 1].
    """

    compilable = True

    name = "bce"

    def __init__(self, eps: float = 1e-7) -> None:
        self.eps = number(eps, "BinaryCrossEntropy eps", 0.0, 0.5, low_open=True)

    def prepare_targets(self, y: Any, n_outputs: int, backend: Backend, dtype: Any) -> Any:
        y = super().prepare_targets(y, n_outputs, backend, dtype)
        xp = backend.xp
        if not bool(xp.all((y >= 0) & (y <= 1))):
            raise PolynnValueError("loss 'bce' needs targets in [0, 1]; y has values outside.")
        return y

    def value_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:
        xp = self.xp
        p = xp.clip(pred, self.eps, 1.0 - self.eps)
        size = p.shape[0] * p.shape[1]
        value = -xp.sum(target * xp.log(p) + (1.0 - target) * xp.log(1.0 - p)) / size
        return value, (p - target) / (p * (1.0 - p) * size)

    def row_values(self, pred: Any, target: Any) -> Any:
        xp = self.xp
        p = xp.clip(pred, self.eps, 1.0 - self.eps)
        terms = target * xp.log(p) + (1.0 - target) * xp.log(1.0 - p)
        return -xp.sum(terms, axis=1) / p.shape[1]

    def get_config(self) -> dict[str, Any]:
        return {"eps": self.eps}


class CrossEntropy(Loss):
    """Softmax fused with the negative log-likelihood, on logits.

    Targets are integer class labels of shape (rows,) or one-hot (or probability) rows of
    shape (rows, classes). The log-sum-exp is shifted by the row maximum, so large logits
    never overflow; the gradient is ``(softmax(z) - y) / rows``.
    """

    compilable = True

    name = "cross_entropy"

    def prepare_targets(self, y: Any, n_outputs: int, backend: Backend, dtype: Any) -> Any:
        if n_outputs < 2:
            raise PolynnValueError(
                "loss 'cross_entropy' needs a network with one output per class (at least 2); "
                "this one has 1 output: use loss='bce' with a final Sigmoid for two classes."
            )
        y = backend.asarray(y, name="y")
        xp = backend.xp
        if y.ndim == 2 and y.shape[1] == 1:
            y = xp.reshape(y, (y.shape[0],))
        if y.ndim == 1:
            if not xp.isdtype(y.dtype, "integral"):
                if not bool(xp.all(y == xp.round(y))):
                    raise PolynnValueError(
                        "class labels for loss 'cross_entropy' must be integers; y has "
                        "non-integer values."
                    )
            low, high = int(xp.min(y)), int(xp.max(y))
            if low < 0 or high >= n_outputs:
                raise PolynnValueError(
                    f"class labels must lie in [0, {n_outputs - 1}] for a network with "
                    f"{n_outputs} outputs; y holds labels from {low} to {high}."
                )
            # The namespace's default integer type (int32 on JAX without 64-bit mode, which
            # would warn about int64): labels were checked to lie below n_outputs, and a
            # narrower type could wrap in the comparison.
            info = xp.__array_namespace_info__()
            integer = info.default_dtypes(device=backend.device)["integral"]
            y = xp.astype(y, integer)
            classes = xp.arange(n_outputs, dtype=integer, device=backend.device)
            return xp.astype(y[:, None] == classes, backend.dtype(dtype))
        y = _column(xp.astype(y, backend.dtype(dtype)), n_outputs, backend)
        rows_ok = xp.all(y >= 0) & xp.all(xp.abs(xp.sum(y, axis=1) - 1.0) <= 1e-4)
        if not bool(rows_ok):
            raise PolynnValueError(
                "2-d targets for loss 'cross_entropy' must be one-hot or probability rows "
                "(values >= 0, each row summing to 1); y has rows that are not."
            )
        return y

    def value_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:
        return self.kernels.softmax_cross_entropy(pred, target)

    def row_values(self, pred: Any, target: Any) -> Any:
        xp = self.xp
        shifted = pred - xp.max(pred, axis=1, keepdims=True)
        log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        return -xp.sum(target * log_p, axis=1)


LOSSES: dict[str, type[Loss]] = {
    "mse": MSE,
    "bce": BinaryCrossEntropy,
    "cross_entropy": CrossEntropy,
}


#: The losses by class name, as model files name them (``polynn.registry``).
LOSS_CLASSES: dict[str, type[Loss]] = {cls.__name__: cls for cls in LOSSES.values()}


def get_loss(loss: str | Loss, backend: Backend) -> Loss:
    """A loss object bound to ``backend`` from a name or an instance."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise PolynnValueError(unknown_name("loss", loss, LOSSES))
        loss = LOSSES[loss]()
    elif not isinstance(loss, Loss):
        raise PolynnTypeError(
            f"loss must be a name from {list(LOSSES)} or a polynn Loss; got {type(loss).__name__}."
        )
    loss.xp, loss.kernels = backend.xp, backend.kernels
    return loss
