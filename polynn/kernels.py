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
- ``dropout(shape, key, step, ...)``: a Dropout's mask of training pass ``step`` (a 0-d
  device array) as the scale it multiplies by, from the counter-based hash of
  ``polynn.hashing``.
- ``bias_grad(grad)``: the sum of ``grad`` over its rows.
- ``softmax_cross_entropy(logits, target)``: the mean loss and its gradient.
- ``sgd``, ``adam``, ``rmsprop``, ``adagrad`` and ``clip``: one update of every parameter,
  given its gradient. The rates and step counts they read are ``Scalars``: 0-d arrays on the
  device, so that a step reads nothing back to the host and a compiled step (a CUDA graph,
  ``jax.jit``) sees new values without being made again.
- ``windows(x, size, stride, pads)`` and ``windows_grad(grad, shape, size, stride, pads)``:
  the sliding windows of images (the one matrix product of a ``Conv2D``, of a ``Conv1D`` as
  an image one pixel wide, the 2-d pools) and the gradient spread back from them;
  ``conv_input_grad(grad, W, shape, stride, pads)``: a convolution's input gradient.
- ``scatter_add(index, values, rows)``: the rows of ``values`` summed by ``index``
  (``Embedding``'s gradient, where ids repeat).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from polynn.errors import PolynnValueError
from polynn.hashing import Hash, word_dtype

if TYPE_CHECKING:
    from polynn.layers import Parameter

__all__ = ["ACTIVATIONS", "Act", "Backward", "Forward", "Kernels", "Pads", "Pair", "Scalars"]

Forward = Callable[[Any, Any], tuple[Any, Any]]
Backward = Callable[[Any, Any], Any]

#: Sizes along (height, width); pads of (top, bottom, left, right).
Pair = tuple[int, int]
Pads = tuple[int, int, int, int]


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
        self._largest = float(xp.finfo(dtype).max)
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
            if not abs(lr) <= self._largest:
                raise PolynnValueError(
                    f"the learning rate {lr:g} is beyond the range of the parameters' dtype "
                    f"(largest {self._largest:g}): lower it, or check the schedule."
                )
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
        of shape ``(rows, *values.shape[1:])``; ``index`` holds integers in [0, rows).

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
