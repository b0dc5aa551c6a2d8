"""The kernel seam: the hot primitives of a training step, each written once here against the
array API standard.

A backend may add faster versions of some of them beside these (CuPy's fused CUDA kernels in
``polynn/backends/_cupy_kernels.py``); ``Backend.kernels`` is the set a model uses, chosen
once when the model is built, never looked up per call. Layers, losses and optimizers call the
seam for these few operations and ``xp`` for everything else. Every fast path is tested
against the defaults here on the same inputs (``tests/test_kernels.py``).

The primitives:

- ``activation(name, dtype, ...)``: the ``(forward, backward)`` pair of an elementwise
  activation. ``forward(z, b)`` returns ``(f(z + b), saved)`` (``b`` is a bias row, or None;
  with a bias, ``z`` is the caller's own new array and may be overwritten) and
  ``backward(grad, saved)`` the gradient with respect to ``z``, possibly in ``grad``'s memory:
  in a backward pass each gradient array is used once, so no second copy needs to be alive.
  A ``Dense`` followed by an activation calls them with its bias: that is where a backend
  fuses bias and activation.
- ``bias_grad(grad)``: the sum of ``grad`` over its rows.
- ``softmax_cross_entropy(logits, target)``: the mean loss and its gradient.
- ``sgd(...)`` and ``adam(...)``: one update of every parameter, given its gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polynn.layers import Parameter

__all__ = ["ACTIVATIONS", "Backward", "Forward", "Kernels"]

Forward = Callable[[Any, Any], tuple[Any, Any]]
Backward = Callable[[Any, Any], Any]

#: The elementwise activations every ``Kernels`` computes.
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")


class Kernels:
    """The default primitives, for any array API namespace ``xp`` and a device of it."""

    #: What the tests and ``python -m polynn info`` call this set.
    name = "array API"

    def __init__(self, xp: Any, device: Any) -> None:
        self.xp = xp
        self.device = device

    def constant(self, value: float, dtype: Any) -> Any:
        """``value`` as a 0-d array of ``dtype`` on the device.

        NumPy combines a small array with a Python float about 0.25 us slower than with a 0-d
        array of the array's dtype; a tiny network makes a dozen such operations per step.
        """
        return self.xp.asarray(value, dtype=dtype, device=self.device)

    # -- activations ------------------------------------------------------------------------
    def activation(
        self, name: str, dtype: Any, *, negative_slope: float = 0.01
    ) -> tuple[Forward, Backward]:
        """``(forward, backward)`` of the activation ``name`` (one of ``ACTIVATIONS``) in
        ``dtype``; ``negative_slope`` is leaky ReLU's."""
        xp = self.xp
        half, one = self.constant(0.5, dtype), self.constant(1.0, dtype)

        # Each forward adds the bias itself, in place: with a bias, z is the Dense layer's own
        # new product x @ W, and adding into it keeps one array fewer alive at the peak. (No
        # helper call: on a tiny network a Python call per layer and step is measurable.)

        if name == "sigmoid":  # (tanh(z / 2) + 1) / 2 never overflows, unlike 1 / (1 + e^-z)

            def forward(z: Any, b: Any) -> tuple[Any, Any]:
                if b is not None:
                    z += b
                y = half * xp.tanh(half * z) + half
                return y, y

            def backward(grad: Any, y: Any) -> Any:
                grad *= y * (one - y)
                return grad

            return forward, backward

        if name == "tanh":

            def forward(z: Any, b: Any) -> tuple[Any, Any]:
                if b is not None:
                    z += b
                y = xp.tanh(z)
                return y, y

            def backward(grad: Any, y: Any) -> Any:
                grad *= one - y * y
                return grad

            return forward, backward

        if name == "relu":

            def forward(z: Any, b: Any) -> tuple[Any, Any]:
                if b is not None:
                    z += b
                # Multiplying by the mask is much cheaper than xp.where on large arrays.
                mask = xp.astype(z > 0, z.dtype)
                return z * mask, mask

            def backward(grad: Any, mask: Any) -> Any:
                grad *= mask
                return grad

            return forward, backward

        if name == "leaky_relu":
            slope = negative_slope

            def forward(z: Any, b: Any) -> tuple[Any, Any]:
                if b is not None:
                    z += b
                factor = xp.astype(z > 0, z.dtype) * (1.0 - slope) + slope
                return z * factor, factor

            def backward(grad: Any, factor: Any) -> Any:
                grad *= factor
                return grad

            return forward, backward

        raise ValueError(f"unknown activation {name!r}; the kernels know {list(ACTIVATIONS)}.")

    # -- gradients --------------------------------------------------------------------------
    def bias_grad(self, grad: Any) -> Any:
        """The gradient of a bias row: ``grad`` summed over its rows."""
        return self.xp.sum(grad, axis=0)

    def softmax_cross_entropy(self, logits: Any, target: Any) -> tuple[Any, Any]:
        """Mean over rows of ``-sum(target * log_softmax(logits))``, and its gradient
        ``(softmax(logits) - target) / rows``. Shifting by the row maximum keeps ``exp``
        finite for any logits."""
        xp = self.xp
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=1, keepdims=True)
        rows = logits.shape[0]
        value = -xp.sum(target * (shifted - xp.log(total))) / rows
        return value, (e / total - target) / rows

    # -- optimizer updates ------------------------------------------------------------------
    def sgd(
        self,
        params: Sequence[Parameter],
        states: Sequence[dict[str, Any]],
        lr: Any,
        momentum: float,
        nesterov: bool,
        weight_decay: float,
    ) -> None:
        """One SGD step of each parameter: ``g += weight_decay * p``; with momentum
        ``v = momentum * v + g`` (``v`` starts as ``g``, kept in ``state["velocity"]``) and
        ``g = v``, or ``g + momentum * v`` with Nesterov; then ``p -= lr * g``. ``lr`` is a
        0-d array of the parameters' dtype.

        Updates are augmented assignments: in place where arrays are writable, a new array
        bound to the parameter where they are not (JAX).
        """
        if not (momentum or weight_decay):  # plain gradient descent
            for p in params:
                p.value -= lr * p.grad
            return
        for p, state in zip(params, states):
            g = p.grad
            if weight_decay:
                g = g + weight_decay * p.value
            if momentum:
                if "velocity" not in state:
                    state["velocity"] = g * 1.0
                else:
                    state["velocity"] *= momentum
                    state["velocity"] += g
                g = g + momentum * state["velocity"] if nesterov else state["velocity"]
            p.value -= lr * g

    def adam(
        self,
        params: Sequence[Parameter],
        states: Sequence[dict[str, Any]],
        step: int,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
    ) -> None:
        """Step ``step`` (from 1) of Adam with PyTorch's bias corrections, for each parameter:
        ``m = beta1 m + (1 - beta1) g``, ``v = beta2 v + (1 - beta2) g^2`` (both start at
        zero; kept in ``state["m"]`` and ``state["v"]``), ``p *= 1 - lr * weight_decay``
        (decoupled decay), ``p -= lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)``."""
        step_size = lr / (1.0 - beta1**step)
        root_correction = 1.0 / math.sqrt(1.0 - beta2**step)
        sqrt = self.xp.sqrt
        for p, state in zip(params, states):
            g = p.grad
            if not state:
                state["m"] = g * (1.0 - beta1)
                state["v"] = g * g * (1.0 - beta2)
            else:
                state["m"] *= beta1
                state["m"] += (1.0 - beta1) * g
                state["v"] *= beta2
                state["v"] += (1.0 - beta2) * (g * g)
            if weight_decay:
                p.value *= 1.0 - lr * weight_decay
            p.value -= step_size * state["m"] / (sqrt(state["v"]) * root_correction + eps)
