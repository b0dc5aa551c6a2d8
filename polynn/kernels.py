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
- ``dense(x, W, b, act)`` and ``dense_backward(...)``: ``act(x @ W + b)`` and its gradients,
  the matrix products of a ``Dense`` (and of a ``Conv1D`` on its windows). ``act`` is an
  ``Act`` (or None): a Dense followed by an activation runs them together, which is where a
  backend puts the bias and the activation into the product's epilogue.
- ``windows(x, size, stride, padding, count)`` and ``unwindows(...)``: a Conv1D's windows of
  its (rows, length, channels) input, one row of ``size * channels`` values per window, and
  the gradient of the input from the windows' gradients (the ``im2col`` of a convolution).
- ``dropout(shape, key, step, ...)``: a Dropout's mask of training pass ``step`` (a 0-d
  device array) as the scale it multiplies by, from the counter-based hash of
  ``polynn.hashing``.
- ``bias_grad(grad)``: the sum of ``grad`` over its rows.
- ``softmax_cross_entropy(logits, target)``: the mean loss and its gradient.
- ``sgd``, ``adam``, ``rmsprop``, ``adagrad`` and ``clip``: one update of every parameter,
  given its gradient. The rates and step counts they read are ``Scalars``: 0-d arrays on the
  device, so that a step reads nothing back to the host and a compiled step (a CUDA graph,
  ``jax.jit``) sees new values without being made again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from polynn.hashing import Hash, word_dtype

if TYPE_CHECKING:
    from polynn.layers import Parameter

__all__ = [
    "ACTIVATIONS",
    "Act",
    "Backward",
    "Forward",
    "Kernels",
    "Scalars",
    "out_length",
    "pad",
    "spread",
    "taps",
]

Forward = Callable[[Any, Any], tuple[Any, Any]]
Backward = Callable[[Any, Any], Any]


def out_length(length: int, size: int, stride: int) -> int:
    """The number of windows of ``size`` with ``stride`` in ``length`` positions."""
    return (length - size) // stride + 1


def taps(x: Any, size: int, stride: int, count: int) -> list[Any]:
    """``x[:, k + stride * j, :]`` for ``j < count``, one array for each offset ``k < size``."""
    last = stride * (count - 1) + 1
    return [x[:, k : k + last : stride, :] for k in range(size)]


def pad(xp: Any, device: Any, x: Any, before: int, after: int) -> Any:
    """``x`` with ``before`` and ``after`` zero positions along the length axis."""
    n, _, c = x.shape
    parts = [xp.zeros((n, before, c), dtype=x.dtype, device=device)] if before else []
    parts.append(x)
    if after:
        parts.append(xp.zeros((n, after, c), dtype=x.dtype, device=device))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)


def spread(xp: Any, device: Any, grads: list[Any], stride: int, length: int) -> Any:
    """The inverse of ``taps`` for gradients: each offset's gradient put back at the
    positions it was read from, zeros elsewhere, summed over the offsets."""
    n, count, c = grads[0].shape
    last = stride * (count - 1) + 1
    total = None
    for k, g in enumerate(grads):
        if stride > 1:  # j -> stride * j: interleave stride - 1 zero rows after each row
            gaps = xp.zeros((n, count, stride - 1, c), dtype=g.dtype, device=device)
            g = xp.concat([xp.expand_dims(g, axis=2), gaps], axis=2)
            g = xp.reshape(g, (n, count * stride, c))[:, :last, :]
        g = pad(xp, device, g, k, length - k - last)
        total = g if total is None else total + g
    return total


class Act(NamedTuple):
    """An activation as the kernels run it after a matrix product: its name (one of
    ``ACTIVATIONS``), its ``(forward, backward)`` pair from ``Kernels.activation`` and leaky
    ReLU's slope."""

    name: str
    forward: Forward
    backward: Backward
    slope: float = 0.01


class Scalars:
    """The numbers an optimizer's update reads at every step, as 0-d arrays of the
    parameters' dtype on their device: the learning rate ``lr`` and the count ``t`` of
    updates applied (Adam's bias corrections). The update rules change ``t`` on the device
    (``t += 1``), the host writes ``lr`` only when it changes (``set``). Both are written in
    place where arrays are writable (``inplace``), so that a captured CUDA graph, which
    reads them where they are, sees the new values; JAX's are new arrays instead."""

    def __init__(self, xp: Any, dtype: Any, device: Any, inplace: bool) -> None:
        self.xp, self.dtype, self.device, self.inplace = xp, dtype, device, inplace
        self.lr = xp.zeros((), dtype=dtype, device=device)
        self.t = xp.zeros((), dtype=dtype, device=device)
        self._lr_seen: float | None = None
        #: A backend's flat buffers of the parameters and their state (CuPy's arena), made
        #: by its kernels on the first update; None where it has none.
        self.arena: Any = None
        self._scratch: Any = None

    def scratch(self, size: int) -> Any:
        """A 1-d array of ``size`` values on the device that kernels may use between the
        steps' launches (the same array every time)."""
        if self._scratch is None or self._scratch.shape[0] < size:
            self._scratch = self.xp.zeros(size, dtype=self.dtype, device=self.device)
        return self._scratch

    def set(self, lr: float, t: int | None = None) -> None:
        """Write the rate (only when it changed since the last call) and, if given, the
        count of updates applied."""
        if lr != self._lr_seen:
            self.lr = self._write(self.lr, lr)
            self._lr_seen = lr
        if t is not None:
            self.t = self._write(self.t, t)

    def _write(self, array: Any, value: float) -> Any:
        if not self.inplace:
            return self.xp.asarray(value, dtype=self.dtype, device=self.device)
        array[...] = value
        return array


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

    # -- the matrix products of a Dense ---------------------------------------------------
    def dense(self, x: Any, W: Any, b: Any, act: Act | None = None) -> tuple[Any, Any]:
        """``act(x @ W + b)`` (``x @ W + b`` for ``act=None``) and what ``dense_backward``
        needs besides ``x`` and ``W``. The product is in ``W``'s dtype (NumPy multiplies
        bfloat16 matrices in float32)."""
        z = x @ W
        if z.dtype != W.dtype:
            z = self.xp.astype(z, W.dtype)
        if act is None:
            return z + b, None
        return act.forward(z, b)

    def dense_backward(
        self,
        grad: Any,
        x: Any,
        W: Parameter,
        b: Parameter,
        saved: Any,
        act: Act | None,
        input_grad: bool = True,
    ) -> Any:
        """The gradients of ``dense(x, W2, b.value, act)`` given ``grad``, the gradient of
        its output (which may be overwritten): ``W.grad`` and ``b.grad`` are set, and the
        gradient of ``x`` is returned (None for ``input_grad=False``). ``W2`` is ``W.value``
        as a matrix: the value itself for a Dense, (kernel_size * in, out) for a Conv1D."""
        if act is not None:
            grad = act.backward(grad, saved)
        xp, Wv = self.xp, W.value
        dW = x.T @ grad
        W.grad = dW if Wv.ndim == 2 else xp.reshape(dW, Wv.shape)  # a Conv1D's (k, in, out)
        b.grad = self.bias_grad(grad)
        if not input_grad:
            return None
        W2 = Wv if Wv.ndim == 2 else xp.reshape(Wv, (-1, Wv.shape[-1]))
        dx = grad @ W2.T
        return dx if dx.dtype == Wv.dtype else xp.astype(dx, Wv.dtype)

    # -- a Conv1D's windows --------------------------------------------------------------
    def windows(self, x: Any, size: int, stride: int, padding: int, count: int) -> Any:
        """The ``count`` windows of ``size`` positions, ``stride`` apart, of ``x`` (rows,
        length, channels) zero-padded by ``padding`` at both ends: an array (rows * count,
        size * channels), each window's positions one after another. Slices of the padded
        input joined along the channels (no in-place scatter: immutable JAX too)."""
        xp = self.xp
        x = pad(xp, self.device, x, padding, padding)
        cols = taps(x, size, stride, count)
        cols = cols[0] if len(cols) == 1 else xp.concat(cols, axis=2)
        return xp.reshape(cols, (x.shape[0] * count, size * x.shape[2]))

    def unwindows(
        self, cols: Any, size: int, stride: int, padding: int, count: int, length: int
    ) -> Any:
        """The gradient of ``windows``' input (rows, ``length``, channels) from the gradient
        ``cols`` of its output: each window position's gradient added back where it was
        read from."""
        xp = self.xp
        channels = cols.shape[1] // size
        cols = xp.reshape(cols, (cols.shape[0] // count, count, size * channels))
        parts = [cols[:, :, i * channels : (i + 1) * channels] for i in range(size)]
        dx = spread(xp, self.device, parts, stride, length + 2 * padding)
        return dx[:, padding : padding + length, :]

    # -- Dropout -----------------------------------------------------------------------------
    @functools.cache  # noqa: B019 (one Hash per Kernels, which lives as long as its backend)
    def hash(self) -> Hash:
        """The counter-based hash on this namespace and device, in its word type."""
        return Hash(self.xp, self.device, word_dtype(self.xp, self.device))

    def dropout_keys(self, key: int, step: Any) -> tuple[Any, Any]:
        """The two keys of training pass ``step`` (a 0-d array of the hash's word) of a
        Dropout with ``key``, computed on the device."""
        h = self.hash()
        return h.step_keys(h.word_array(key), step)

    def dropout(
        self,
        shape: tuple[int, ...],
        key: int,
        step: Any,
        row_offset: int,
        threshold: int,
        scale: Any,
    ) -> Any:
        """``scale`` (a 0-d array) where the hash of an element of an array of ``shape`` is
        at least ``threshold``, zero elsewhere: the mask of training pass ``step`` of a
        Dropout with ``key``, its rows starting at row ``row_offset`` of the batch."""
        h = self.hash()
        bits = h.bits(shape, self.dropout_keys(key, step), row_offset)
        keep = bits >= h.word_array(threshold)
        return self.xp.astype(keep, scale.dtype) * scale

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
    # Updates are augmented assignments: in place where arrays are writable, a new array bound
    # to the parameter (or state entry) where they are not (JAX). State arrays start at zero,
    # which gives the first step's values exactly (0 * m + g == g).

    def clip(
        self,
        params: Sequence[Parameter],
        clipvalue: float | None,
        clipnorm: float | None,
        scalars: Scalars | None = None,
    ) -> None:
        """Clip each gradient element to ``[-clipvalue, clipvalue]``, then scale all the
        gradients by ``clipnorm / (norm + 1e-6)`` where that is below 1 (``norm``: their
        global 2-norm, as PyTorch's ``clip_grad_norm_``). No host round trip. ``scalars``:
        the optimizer's, where a backend keeps its flat buffers."""
        xp = self.xp
        if clipvalue is not None:
            for p in params:
                p.grad = xp.clip(p.grad, -clipvalue, clipvalue)
        if clipnorm is not None and params:
            squares = xp.stack([xp.sum(p.grad * p.grad) for p in params])
            scale = xp.clip(clipnorm / (xp.sqrt(xp.sum(squares)) + 1e-6), max=1.0)
            for p in params:
                p.grad = p.grad * scale

    def sgd(
        self,
        params: Sequence[Parameter],
        states: Sequence[dict[str, Any]],
        scalars: Scalars,
        momentum: float,
        nesterov: bool,
        weight_decay: float,
    ) -> None:
        """One SGD step of each parameter: ``g += weight_decay * p``; with momentum
        ``v = momentum * v + g`` (``state["velocity"]``, from zero) and ``g = v``, or
        ``g + momentum * v`` with Nesterov; then ``p -= lr * g``."""
        lr = scalars.lr
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
                    state["velocity"] = self.xp.zeros_like(g)
                state["velocity"] *= momentum
                state["velocity"] += g
                g = g + momentum * state["velocity"] if nesterov else state["velocity"]
            p.value -= lr * g

    def adam(
        self,
        params: Sequence[Parameter],
        states: Sequence[dict[str, Any]],
        scalars: Scalars,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
    ) -> None:
        """One step of Adam with PyTorch's bias corrections, counting ``scalars.t`` up first:
        ``m = beta1 m + (1 - beta1) g``, ``v = beta2 v + (1 - beta2) g^2`` (``state["m"]``,
        ``state["v"]``, from zero), ``p *= 1 - lr * weight_decay`` (decoupled decay),
        ``p -= lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)``."""
        xp = self.xp
        scalars.t += 1
        t, lr = scalars.t, scalars.lr
        one = xp.ones_like(t)
        step_size = lr / (one - xp.pow(one * beta1, t))
        root_correction = one / xp.sqrt(one - xp.pow(one * beta2, t))
        shrink = one - lr * weight_decay if weight_decay else None
        for p, state in zip(params, states):
            g = p.grad
            if not state:
                state["m"], state["v"] = xp.zeros_like(g), xp.zeros_like(g)
            state["m"] *= beta1
            state["m"] += (1.0 - beta1) * g
            state["v"] *= beta2
            state["v"] += (1.0 - beta2) * (g * g)
            if weight_decay:
                p.value *= shrink
            p.value -= step_size * state["m"] / (xp.sqrt(state["v"]) * root_correction + eps)

    def rmsprop(
        self,
        params: Sequence[Parameter],
        states: Sequence[dict[str, Any]],
        scalars: Scalars,
        rho: float,
        eps: float,
        momentum: float,
        centered: bool,
        weight_decay: float,
    ) -> None:
        """One RMSprop step as PyTorch's (see ``polynn.optimizers.RMSprop``)."""
        xp, lr = self.xp, scalars.lr
        for p, state in zip(params, states):
            g = p.grad if not weight_decay else p.grad + weight_decay * p.value
            if not state:
                state["square_avg"] = xp.zeros_like(g)
                if centered:
                    state["grad_avg"] = xp.zeros_like(g)
                if momentum:
                    state["momentum"] = xp.zeros_like(g)
            state["square_avg"] *= rho
            state["square_avg"] += (1.0 - rho) * (g * g)
            if centered:
                state["grad_avg"] *= rho
                state["grad_avg"] += (1.0 - rho) * g
                avg = state["square_avg"] - state["grad_avg"] * state["grad_avg"]
            else:
                avg = state["square_avg"]
            update = g / (xp.sqrt(avg) + eps)
            if momentum:
                state["momentum"] *= momentum
                state["momentum"] += update
                update = state["momentum"]
            p.value -= lr * update

    def adagrad(
        self,
        params: Sequence[Parameter],
        states: Sequence[dict[str, Any]],
        scalars: Scalars,
        eps: float,
        initial_accumulator: float,
        weight_decay: float,
    ) -> None:
        """One Adagrad step as PyTorch's (see ``polynn.optimizers.Adagrad``)."""
        xp, lr = self.xp, scalars.lr
        for p, state in zip(params, states):
            g = p.grad if not weight_decay else p.grad + weight_decay * p.value
            if not state:
                state["sum"] = xp.full_like(g, initial_accumulator)
            state["sum"] += g * g
            p.value -= lr * (g / (xp.sqrt(state["sum"]) + eps))
