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
- ``windows(x, size, stride, pads)`` and ``windows_grad(grad, shape, size, stride, pads)``:
  the sliding windows of images (``Conv2D``'s one matrix product, the 2-d pools) and the
  gradient spread back from them; ``conv_input_grad(grad, W, shape, stride, pads)``: a
  convolution's input gradient.
- ``scatter_add(index, values, rows)``: the rows of ``values`` summed by ``index``
  (``Embedding``'s gradient, where ids repeat).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polynn.layers import Parameter

__all__ = ["ACTIVATIONS", "Backward", "Forward", "Kernels", "Pads", "Pair"]

Forward = Callable[[Any, Any], tuple[Any, Any]]
Backward = Callable[[Any, Any], Any]

#: Sizes along (height, width); pads of (top, bottom, left, right).
Pair = tuple[int, int]
Pads = tuple[int, int, int, int]

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

    # -- sliding windows of images (Conv2D, MaxPool2D, AveragePool2D) ------------------------
    def windows(self, x: Any, size: Pair, stride: Pair, pads: Pads) -> Any:
        """The ``size`` (kh, kw) windows of ``x`` (rows, height, width, channels), zero-padded
        by ``pads`` (top, bottom, left, right), ``stride`` (sh, sw) apart: an array of shape
        (rows, out_h, out_w, kh * kw * channels), each window's values in (i, j, channel)
        order, so that one matrix product with weights of shape (kh, kw, in, out) reshaped to
        (kh * kw * in, out) is a convolution.

        The default joins the kh * kw strided slices ("taps") of the padded input along the
        channels; a backend may instead copy a strided view of the input once.
        """
        xp = self.xp
        x = pad_image(xp, self.device, x, pads)
        (kh, kw), (sh, sw) = size, stride
        _, h, w, _ = x.shape
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        lh, lw = sh * (oh - 1) + 1, sw * (ow - 1) + 1
        taps = [x[:, i : i + lh : sh, j : j + lw : sw, :] for i in range(kh) for j in range(kw)]
        return taps[0] if len(taps) == 1 else xp.concat(taps, axis=3)

    def windows_grad(
        self, grad: Any, shape: tuple[int, ...], size: Pair, stride: Pair, pads: Pads
    ) -> Any:
        """The gradient with respect to ``windows``'s input of shape ``shape``, given ``grad``
        with respect to its output: each window value's gradient added at the input position
        it was read from (zero where it was padding, none where no window reached).

        The default spreads each tap's gradient over a padded image (zeros between its rows
        and columns for a stride, around it for its offset) and sums the taps, with
        concatenation only (no writes into arrays, so it runs on JAX too).
        """
        xp = self.xp
        n, h, w, c = shape
        top, bottom, left, right = pads
        (kh, kw), (sh, sw) = size, stride
        _, oh, ow, _ = grad.shape
        ph, pw = h + top + bottom, w + left + right
        total = None
        for k in range(kh * kw):
            i, j = divmod(k, kw)
            g = grad[..., k * c : (k + 1) * c]
            g = _dilate(xp, self.device, g, 1, sh)  # (n, sh * (oh - 1) + 1, ow, c)
            g = _dilate(xp, self.device, g, 2, sw)
            after = (ph - i - g.shape[1], pw - j - g.shape[2])
            g = pad_image(xp, self.device, g, (i, after[0], j, after[1]))
            total = g if total is None else total + g
        return total[:, top : top + h, left : left + w, :]

    def conv_input_grad(
        self, grad: Any, W: Any, shape: tuple[int, ...], stride: Pair, pads: Pads
    ) -> Any:
        """The gradient with respect to the input (of shape ``shape``) of the convolution
        ``windows(x, size, stride, pads) @ reshape(W, (kh * kw * in, out))`` (``size`` is
        ``W``'s first two axes), given ``grad`` with respect to its output, shape (rows,
        out_h, out_w, out); in ``grad``'s dtype.

        The default is one matrix product back to the windows and ``windows_grad``; a backend
        may instead multiply each tap apart and add it in place.
        """
        xp = self.xp
        kh, kw, cin, cout = W.shape
        n, oh, ow, _ = grad.shape
        g = xp.reshape(grad, (n * oh * ow, cout))
        dcols = g @ xp.reshape(W, (kh * kw * cin, cout)).T
        dcols = xp.reshape(xp.astype(dcols, grad.dtype, copy=False), (n, oh, ow, kh * kw * cin))
        return self.windows_grad(dcols, shape, (kh, kw), stride, pads)

    # -- sums by index (Embedding) ---------------------------------------------------------
    def scatter_add(self, index: Any, values: Any, rows: int) -> Any:
        """``out[r] = sum(values[k] for k where index[k] == r)`` for ``r < rows``: an array
        of shape (rows, *values.shape[1:]); ``index`` holds integers in [0, rows).

        The standard has no scatter, so the default sorts: the values are ordered by index,
        a segmented prefix sum (log2(len(index)) doubling steps, each adding the partial sum
        ``step`` places back where the index is the same) leaves each run's total at its
        last place, and ``searchsorted`` finds where each row's run ends. Its memory and work
        grow with ``len(index)`` (not with ``rows`` times it, as a one-hot matrix product's
        would), and each row's sum is a tree of additions of its own values only.
        """
        xp = self.xp
        order = xp.argsort(index, stable=True)
        keys = xp.take(index, order)
        acc = xp.take(values, order, axis=0)
        n = keys.shape[0]
        step = 1
        while step < n:
            same = keys[step:] == keys[:-step]
            same = xp.reshape(same, (n - step,) + (1,) * (acc.ndim - 1))
            shifted = xp.where(same, acc[:-step, ...], xp.zeros_like(acc[:-step, ...]))
            acc = xp.concat([acc[:step, ...], acc[step:, ...] + shifted], axis=0)
            step *= 2
        wanted = xp.arange(rows, dtype=keys.dtype, device=self.device)
        ends = xp.searchsorted(keys, wanted, side="right")
        present = ends > xp.searchsorted(keys, wanted, side="left")
        last = xp.take(acc, xp.where(present, ends - 1, xp.zeros_like(ends)), axis=0)
        present = xp.reshape(present, (rows,) + (1,) * (acc.ndim - 1))
        return xp.where(present, last, xp.zeros_like(last))


def pad_image(xp: Any, device: Any, x: Any, pads: Pads) -> Any:
    """``x`` (rows, height, width, channels) with ``pads`` (top, bottom, left, right) rows
    and columns of zeros around each image."""
    top, bottom, left, right = pads
    return _pad(xp, device, _pad(xp, device, x, 1, top, bottom), 2, left, right)


def _pad(xp: Any, device: Any, x: Any, axis: int, before: int, after: int) -> Any:
    """``x`` with ``before`` and ``after`` zeros along ``axis``."""
    if not (before or after):
        return x
    shape = tuple(x.shape)

    def zeros(size: int) -> list[Any]:
        if not size:
            return []
        return [xp.zeros(shape[:axis] + (size,) + shape[axis + 1 :], dtype=x.dtype, device=device)]

    return xp.concat([*zeros(before), x, *zeros(after)], axis=axis)


def _dilate(xp: Any, device: Any, g: Any, axis: int, stride: int) -> Any:
    """``g`` with ``stride - 1`` zeros after each entry along ``axis`` but the last: entry
    ``j`` moves to ``stride * j``."""
    if stride == 1:
        return g
    shape = tuple(g.shape)
    gaps = xp.zeros(shape[: axis + 1] + (stride - 1,) + shape[axis + 1 :], dtype=g.dtype,
                    device=device)  # fmt: skip
    g = xp.concat([xp.expand_dims(g, axis=axis + 1), gaps], axis=axis + 1)
    g = xp.reshape(g, shape[:axis] + (shape[axis] * stride,) + shape[axis + 1 :])
    keep = stride * (shape[axis] - 1) + 1
    return g[(slice(None),) * axis + (slice(0, keep), ...)]
