"""The output layer of scikit-learn's MLPs on any array API namespace: the output activation
and the loss that goes with it.

Each pair is canonical (the loss's gradient with respect to the network's raw output ``z``
is ``activation(z) - y``), as in scikit-learn:

====================  ============  =====================================================
``out_activation_``   used for      loss per row (summed over the outputs)
====================  ============  =====================================================
``"identity"``        regression    half squared error ``(z - y)**2 / 2``
``"exp"``             Poisson       half Poisson deviance ``y log(y / e^z) - y + e^z``
``"logistic"``        two classes,  binary log-loss ``log(1 + e^z) - y z``
                      multilabel
``"softmax"``         classes       log-loss ``logsumexp(z) - sum(y z)``
====================  ============  =====================================================

The log-losses are computed from ``z`` (never from clipped probabilities), so they stay
finite however confident the network is. The loss is the mean over the rows, weighted by
``sample_weight`` where given.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OUT_ACTIVATIONS", "activate", "loss_and_delta"]

OUT_ACTIVATIONS = ("identity", "exp", "logistic", "softmax")


def activate(name: str, z: Any, xp: Any) -> Any:
    """The output activation ``name`` applied to the raw outputs ``z`` (rows, outputs)."""
    if name == "identity":
        return z
    if name == "exp":
        return xp.exp(z)
    if name == "logistic":
        return (xp.tanh(z * 0.5) + 1.0) * 0.5  # never overflows
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def _row_losses(name: str, z: Any, y: Any, xp: Any) -> Any:
    """Each row's loss, summed over its outputs: shape (rows,)."""
    if name == "identity":
        d = z - y
        return xp.sum(d * d, axis=1) * 0.5
    if name == "exp":
        positive = y > 0
        safe = xp.where(positive, y, xp.ones_like(y))
        y_log_y = xp.where(positive, y * xp.log(safe), xp.zeros_like(y))
        return xp.sum(y_log_y - y * z - y + xp.exp(z), axis=1)
    if name == "logistic":
        softplus = xp.maximum(z, xp.zeros_like(z)) + xp.log1p(xp.exp(-xp.abs(z)))
        return xp.sum(softplus - y * z, axis=1)
    top = xp.max(z, axis=1, keepdims=True)
    logsumexp = xp.log(xp.sum(xp.exp(z - top), axis=1)) + top[:, 0]
    return logsumexp - xp.sum(y * z, axis=1)


def loss_and_delta(
    name: str, z: Any, y: Any, sample_weight: Any, total_weight: Any, xp: Any
) -> tuple[Any, Any]:
    """The weighted mean loss of the rows (a 0-d array on the device) and its gradient with
    respect to ``z``: ``(activation(z) - y) * w / total_weight``.

    ``sample_weight`` is None (every row weighs 1 and ``total_weight`` is the number of
    rows) or a (rows,) array whose sum is ``total_weight``.
    """
    rows = _row_losses(name, z, y, xp)
    delta = activate(name, z, xp) - y
    if sample_weight is not None:
        rows = rows * sample_weight
        delta = delta * sample_weight[:, None]
    return xp.sum(rows) / total_weight, delta / total_weight
