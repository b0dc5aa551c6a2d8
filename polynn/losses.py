"""Losses. ``value_and_grad`` returns the mean loss (a 0-d array, left on the device) and its
gradient with respect to the predictions (a new array: the backward pass may write into it);
``prepare_targets`` checks and shapes the targets once per call of ``fit`` or ``evaluate``,
never per batch (``targets(y, net)`` does it for a manual training loop).

A loss computes with ``self.xp`` and ``self.kernels``, those of the backend it is bound to:
``fit`` and ``evaluate`` bind it to their model's (``bind``); a built-in loss used on its own,
``pn.CrossEntropy().value_and_grad(out, t)``, binds itself to the backend of ``out``.

Each loss here is a mean over rows of a per-row term (``row_values``), which is what weights
per sample need: with weights ``w`` (scaled to average 1 over the data) a batch's loss is
``mean(w * row_values)`` and its gradient the unweighted one times ``w`` row by row.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from polynn._checks import number, unknown_name
from polynn.backends import Backend, backend_of
from polynn.errors import PolynnTypeError, PolynnValueError

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = [
    "ALIASES",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Huber",
    "Loss",
    "MAE",
    "MSE",
    "get_loss",
]


class Loss:
    """Base class of the losses.

    A loss of your own implements ``value_and_grad(pred, target)`` (and ``row_values`` for
    weights per sample) with ``self.xp``, and declares ``compilable = True`` once it reads
    nothing back to the host (``polynn.compiled``); registered (``@pn.register(name="my_loss")``) it
    is named by that string in ``fit`` and saved in files. Used on its own, outside ``fit``
    and ``evaluate``, bind it first: ``loss.bind(net.backend)`` (or ``loss.targets(y, net)``).
    """

    name = ""
    compilable = True  # weighted_value_and_grad below (the subclasses' own declare theirs)
    #: The namespace and kernels of the backend the loss is bound to (``bind``).
    xp: Any = None
    kernels: Any = None

    def bind(self, backend: Backend) -> Loss:
        """Compute on ``backend`` from now on; returns the loss."""
        self.xp, self.kernels = backend.xp, backend.kernels
        return self

    def _xp(self, pred: Any) -> Any:
        """``self.xp``, the loss first bound to ``pred``'s backend where it is not yet."""
        if self.xp is None:
            self.bind(backend_of(pred))
        return self.xp

    def _same_shape(self, pred: Any, target: Any) -> None:
        if pred.shape != target.shape:
            rows = " (one-hot rows from class labels)" if isinstance(self, CrossEntropy) else ""
            raise PolynnValueError(
                f"{self!r}.value_and_grad needs targets shaped like the predictions "
                f"{tuple(pred.shape)}; got shape {tuple(target.shape)}: loss.targets(y, net) "
                f"makes them{rows}."
            )

    def targets(self, y: Any, net: Sequential) -> Any:
        """``y`` as ``value_and_grad`` takes it for ``net``'s outputs, on its device, checked
        once (for a manual training loop): a (rows, outputs) float array; class labels become
        one-hot rows for ``cross_entropy``. Binds the loss to ``net``'s backend."""
        self.bind(net.backend)
        return self.prepare_targets(y, net.n_outputs, net.backend, net.dtype)

    def prepare_targets(self, y: Any, n_outputs: int, backend: Backend, dtype: Any) -> Any:
        """Check ``y`` against ``n_outputs`` and return it as a (rows, n_outputs) float array."""
        y = backend.asarray(y, dtype=dtype, name="y")
        return _column(y, n_outputs, backend)

    def value(self, pred: Any, target: Any) -> Any:
        """The mean loss (a 0-d array on the device)."""
        return self.value_and_grad(pred, target)[0]

    def value_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:
        """The mean loss and its gradient with respect to ``pred`` (both on the device);
        ``target`` has ``pred``'s shape (``targets`` makes it so)."""
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
        xp = self._xp(pred)
        self._same_shape(pred, target)
        diff = pred - target
        scale = 1.0 / (diff.shape[0] * diff.shape[1])
        return xp.sum(diff * diff) * scale, diff * (2.0 * scale)

    def row_values(self, pred: Any, target: Any) -> Any:
        diff = pred - target
        return self._xp(pred).sum(diff * diff, axis=1) / diff.shape[1]


class MAE(Loss):
    """Mean over all elements of ``|pred - y|``; gradient ``sign(pred - y) / size`` (0 where
    they are equal), as PyTorch's ``l1_loss``."""

    name = "mae"
    compilable = True

    def value_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:
        xp = self._xp(pred)
        self._same_shape(pred, target)
        diff = pred - target
        scale = 1.0 / math.prod(diff.shape)
        return xp.sum(xp.abs(diff)) * scale, xp.sign(diff) * scale

    def row_values(self, pred: Any, target: Any) -> Any:
        diff = pred - target
        xp = self._xp(pred)
        return xp.sum(xp.abs(diff), axis=1) / diff.shape[1]


class Huber(Loss):
    """Mean over all elements of ``d ** 2 / 2`` where ``|d| <= delta`` and
    ``delta * (|d| - delta / 2)`` beyond (``d = pred - y``): squared near the target, linear
    far from it, as PyTorch's ``huber_loss``. Gradient ``clip(d, -delta, delta) / size``."""

    name = "huber"
    compilable = True

    def __init__(self, delta: float = 1.0) -> None:
        self.delta = number(delta, "Huber delta", 0.0, low_open=True)

    def _terms(self, xp: Any, diff: Any) -> Any:
        magnitude = xp.abs(diff)
        linear = self.delta * (magnitude - 0.5 * self.delta)
        return xp.where(magnitude <= self.delta, 0.5 * (diff * diff), linear)

    def value_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:
        xp = self._xp(pred)
        self._same_shape(pred, target)
        diff = pred - target
        scale = 1.0 / math.prod(diff.shape)
        value = xp.sum(self._terms(xp, diff)) * scale
        return value, xp.clip(diff, -self.delta, self.delta) * scale

    def row_values(self, pred: Any, target: Any) -> Any:
        xp = self._xp(pred)
        return xp.sum(self._terms(xp, pred - target), axis=1) / pred.shape[1]

    def get_config(self) -> dict[str, Any]:
        return {"delta": self.delta}


def _smoothing(value: Any, owner: str) -> float:
    return number(value, f"{owner} label_smoothing", 0.0, 1.0, high_open=False)


class BinaryCrossEntropy(Loss):
    """``-mean(y log p + (1 - y) log(1 - p))`` on probabilities ``p``.

    ``p`` is clipped to ``[eps, 1 - eps]`` first, so a saturated sigmoid never gives an
    infinite or NaN loss. Targets must lie in [0, 1]. ``label_smoothing`` (Keras's) trains
    towards ``y (1 - label_smoothing) + label_smoothing / 2`` instead of ``y``.
    """

    compilable = True

    name = "bce"

    def __init__(self, eps: float = 1e-7, label_smoothing: float = 0.0) -> None:
        self.eps = number(eps, "BinaryCrossEntropy eps", 0.0, 0.5, low_open=True)
        self.label_smoothing = _smoothing(label_smoothing, "BinaryCrossEntropy")

    def prepare_targets(self, y: Any, n_outputs: int, backend: Backend, dtype: Any) -> Any:
        y = super().prepare_targets(y, n_outputs, backend, dtype)
        xp = backend.xp
        if not bool(xp.all((y >= 0) & (y <= 1))):
            raise PolynnValueError("loss 'bce' needs targets in [0, 1]; y has values outside.")
        return y

    def value_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:
        xp = self._xp(pred)
        self._same_shape(pred, target)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        p = xp.clip(pred, self.eps, 1.0 - self.eps)
        size = p.shape[0] * p.shape[1]
        value = -xp.sum(target * xp.log(p) + (1.0 - target) * xp.log(1.0 - p)) / size
        return value, (p - target) / (p * (1.0 - p) * size)

    def row_values(self, pred: Any, target: Any) -> Any:
        xp = self._xp(pred)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        p = xp.clip(pred, self.eps, 1.0 - self.eps)
        terms = target * xp.log(p) + (1.0 - target) * xp.log(1.0 - p)
        return -xp.sum(terms, axis=1) / p.shape[1]

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"eps": self.eps}
        if self.label_smoothing:
            config["label_smoothing"] = self.label_smoothing
        return config


class CrossEntropy(Loss):
    """Softmax fused with the negative log-likelihood, on logits.

    Targets are integer class labels of shape (rows,) or one-hot (or probability) rows of
    shape (rows, classes). The log-sum-exp is shifted by the row maximum, so large logits
    never overflow; the gradient is ``(softmax(z) - y) / rows``. ``label_smoothing``
    (PyTorch's and Keras's) trains towards ``y (1 - label_smoothing) + label_smoothing /
    classes`` instead of ``y``.
    """

    compilable = True

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = _smoothing(label_smoothing, "CrossEntropy")

    def _smoothed(self, target: Any) -> Any:
        if not self.label_smoothing:
            return target
        return target * (1.0 - self.label_smoothing) + self.label_smoothing / target.shape[1]

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
        self._xp(pred)
        self._same_shape(pred, target)
        return self.kernels.softmax_cross_entropy(pred, self._smoothed(target))

    def row_values(self, pred: Any, target: Any) -> Any:
        xp = self._xp(pred)
        shifted = pred - xp.max(pred, axis=1, keepdims=True)
        log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        return -xp.sum(self._smoothed(target) * log_p, axis=1)

    def get_config(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}


LOSSES: dict[str, type[Loss]] = {
    "mse": MSE,
    "bce": BinaryCrossEntropy,
    "cross_entropy": CrossEntropy,
    "mae": MAE,
    "huber": Huber,
}

#: Other libraries' names for polynn's losses (Keras's strings, PyTorch's functionals):
#: ``loss="categorical_crossentropy"`` is ``loss="cross_entropy"``. polynn's cross-entropy
#: takes logits, and a final Softmax is fused into it: a Keras model that ends with a softmax
#: trains as it would there.
ALIASES = {
    "sparse_categorical_crossentropy": "cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "binary_crossentropy": "bce",
    "binary_cross_entropy": "bce",
    "mean_squared_error": "mse",
    "mse_loss": "mse",
    "mean_absolute_error": "mae",
    "l1_loss": "mae",
    "huber_loss": "huber",
}
#: Names polynn has no loss for, and what to use instead.
REFUSED = {
    "binary_cross_entropy_with_logits": "polynn's 'bce' takes probabilities: end the network "
    "with pn.Sigmoid() and use loss='bce'",
    "nll_loss": "polynn's 'cross_entropy' takes logits (or a final Softmax) and does the "
    "log-softmax itself: end the network with a Dense and use loss='cross_entropy'",
}

#: The losses by class name, as model files name them (``polynn.registry``).
LOSS_CLASSES: dict[str, type[Loss]] = {cls.__name__: cls for cls in LOSSES.values()}


def get_loss(loss: str | Loss, backend: Backend) -> Loss:
    """A loss object bound to ``backend`` from an instance or a name: one of ``LOSSES``,
    another library's name for one (``ALIASES``), or the name a loss class of your own was
    registered under (``@pn.register``), built with its default arguments."""
    if isinstance(loss, str):
        loss = _named(loss)
    elif not isinstance(loss, Loss):
        raise PolynnTypeError(
            f"loss must be a name from {list(LOSSES)} or a polynn Loss; got {type(loss).__name__}."
        )
    return loss.bind(backend)


def _named(name: str) -> Loss:
    from polynn.registry import kind_of, registered  # the registry imports this module

    key = ALIASES.get(name, name)
    if key in REFUSED:
        raise PolynnValueError(f"polynn has no loss {name!r}: {REFUSED[key]}.")
    if key in LOSSES:
        return LOSSES[key]()
    custom = {k: v for k, v in registered().items() if kind_of(v) == "loss"}
    if key not in custom:
        raise PolynnValueError(unknown_name("loss", name, [*LOSSES, *custom]))
    try:
        return custom[key]()
    except TypeError as exc:
        raise PolynnTypeError(
            f"loss={name!r} names {custom[key].__name__}, which needs arguments ({exc}): pass "
            f"an instance, loss={custom[key].__name__}(...)."
        ) from None
