"""One-dimensional convolution and pooling on inputs of shape (rows, length, channels).

Channels last, so a convolution is one matrix product of its input's windows with the weights
reshaped to (kernel_size * in, out): the kernel seam's ``windows`` makes the array of windows
(the sequences seen as images one pixel wide; a strided view copied once on NumPy, one
gather kernel on CuPy), ``dense`` multiplies it (with the bias, and the activation after the
layer in a model), and ``windows_grad`` adds each window's gradient back where it was read.
Pooling uses slices of the input (``taps``) and their inverse (``spread``), written with
slicing and concatenation only, so it runs on every backend, immutable JAX included.
"""

from __future__ import annotations

from typing import Any

from polynn._checks import integer
from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnValueError
from polynn.kernels import Act
from polynn.layers.core import (
    BIAS_INITS,
    Init,
    Layer,
    Parameter,
    Shape,
    check_init,
    compatible,
    describe,
    savable_inits,
)

__all__ = ["Conv1D", "GlobalAveragePool1D", "MaxPool1D", "out_length", "pad", "spread", "taps"]


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


class Conv1D(Layer):
    """``y[:, j, :] = b + sum_k x[:, stride * j + k - padding, :] @ W[k]``: a 1-d convolution
    (a cross-correlation, as in PyTorch's ``conv1d``) on inputs of shape (rows, length,
    in_channels), zero-padded by ``padding`` (less than ``kernel_size``) at both ends. ``W``
    has shape (kernel_size, in_channels, out_channels), ``b`` (out_channels,). Weights start
    as a ``Dense``'s with ``kernel_size * in_channels`` inputs and ``out_channels`` outputs
    (He-normal before the ReLU family, else Glorot; ``init`` and ``bias_init`` as ``Dense``'s:
    a name draws that (kernel_size * in_channels, out_channels) matrix)."""

    compilable = True

    takes_activation = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        init: Init | None = None,
        bias_init: Init = "zeros",
    ) -> None:
        self.in_channels = integer(in_channels, "Conv1D in_channels", 1)
        self.out_channels = integer(out_channels, "Conv1D out_channels", 1)
        self.kernel_size = integer(kernel_size, "Conv1D kernel_size", 1)
        self.stride = integer(stride, "Conv1D stride", 1)
        self.padding = integer(padding, "Conv1D padding", 0)
        self.init_name = None if init is None else check_init(init, "Conv1D init")
        self.bias_init = check_init(bias_init, "Conv1D bias_init", BIAS_INITS)
        if self.padding >= self.kernel_size:  # also bounds what a file can make it allocate
            raise PolynnValueError(
                f"Conv1D padding must be below kernel_size={self.kernel_size} (more padding "
                f"only adds outputs that see no input); got {self.padding}."
            )
        #: False for a network's first layer: its input gradient is never used.
        self.need_input_grad = True

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        k, cin, cout = self.kernel_size, self.in_channels, self.out_channels
        W = rng.initial(self.init_name or init, (k, cin, cout), k * cin, cout, f"W of {self!r}")
        self.W = Parameter(backend.from_numpy(W, dtype), "W")
        b = rng.initial(self.bias_init, (cout,), cout, cout, f"b of {self!r}")
        self.b = Parameter(backend.from_numpy(b, dtype), "b")
        self.params = (self.W, self.b)
        self._kernels = backend.kernels

    def param_shapes(self) -> list[tuple[int, ...]]:
        k, cin, cout = self.kernel_size, self.in_channels, self.out_channels
        return [(k, cin, cout), (cout,)]

    def input_shape(self) -> Shape:
        return (None, self.in_channels)

    def output_shape(self, shape: Shape | None) -> Shape:
        if shape is not None and not compatible(shape, (None, self.in_channels)):
            raise PolynnValueError(
                f"{self!r} takes rows of shape (length, {self.in_channels}), but the layer "
                f"before it gives {describe(shape)}"
                + (": put a Reshape before it." if len(shape) == 1 else ".")
            )
        length = None if shape is None else shape[0]
        if length is None:
            return (None, self.out_channels)
        count = out_length(length + 2 * self.padding, self.kernel_size, self.stride)
        if count < 1:
            raise PolynnValueError(
                f"{self!r} needs sequences of at least {self.kernel_size - 2 * self.padding} "
                f"steps; the layer before it gives {length}."
            )
        return (count, self.out_channels)

    def forward(self, x: Any, act: Act | None = None) -> Any:
        """The convolution; with ``act`` (how ``Fused`` runs it), that activation of it."""
        n, length, cin = x.shape
        if cin != self.in_channels:
            raise PolynnValueError(
                f"{self!r} takes {self.in_channels} channels (the last axis); got input of "
                f"shape {tuple(x.shape)}."
            )
        count = out_length(length + 2 * self.padding, self.kernel_size, self.stride)
        if count < 1:
            raise PolynnValueError(
                f"{self!r} needs sequences of at least {self.kernel_size - 2 * self.padding} "
                f"steps; got input of shape {(n, length, cin)}."
            )
        xp, k = self.xp, self.kernel_size
        image = xp.reshape(x, (n, length, 1, cin))  # a sequence is an image one pixel wide
        cols = self._kernels.windows(image, (k, 1), (self.stride, 1), self._pads())
        self._cols = xp.reshape(cols, (n * count, k * cin))
        W = xp.reshape(self.W.value, (k * cin, self.out_channels))
        y, self._saved = self._kernels.dense(self._cols, W, self.b.value, act)
        self._shape = (n, length, 1, cin)
        return xp.reshape(y, (n, count, self.out_channels))

    def backward(self, grad: Any, act: Act | None = None) -> Any:
        xp, kernels = self.xp, self._kernels
        n, count, cout = grad.shape
        g = xp.reshape(grad, (n * count, cout))
        dcols = kernels.dense_backward(
            g, self._cols, self.W, self.b, self._saved, act, self.need_input_grad
        )
        if dcols is None:
            return None
        dcols = xp.reshape(dcols, (n, count, 1, dcols.shape[1]))
        size, stride = (self.kernel_size, 1), (self.stride, 1)
        dx = kernels.windows_grad(dcols, self._shape, size, stride, self._pads())
        return xp.reshape(dx, self._shape[:2] + (self.in_channels,))

    def _pads(self) -> tuple[int, int, int, int]:
        return (self.padding, self.padding, 0, 0)

    def get_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            **savable_inits(init=self.init_name, bias_init=self.bias_init),
        }


class MaxPool1D(Layer):
    """The maximum of each window of ``pool_size`` steps, ``stride`` apart (``pool_size`` by
    default), per channel, on inputs of shape (rows, length, channels); no padding. The
    gradient goes to the first maximum of each window, as in PyTorch."""

    compilable = True

    def __init__(self, pool_size: int, stride: int | None = None) -> None:
        self.pool_size = integer(pool_size, "MaxPool1D pool_size", 1)
        self.stride = self.pool_size if stride is None else integer(stride, "MaxPool1D stride", 1)

    def input_shape(self) -> Shape:
        return (None, None)

    def output_shape(self, shape: Shape | None) -> Shape:
        if shape is None:
            return (None, None)
        if len(shape) != 2:
            raise PolynnValueError(
                f"{self!r} takes rows of shape (length, channels), but the layer before it "
                f"gives {describe(shape)}."
            )
        if shape[0] is None:
            return shape
        count = out_length(shape[0], self.pool_size, self.stride)
        if count < 1:
            raise PolynnValueError(
                f"{self!r} needs sequences of at least {self.pool_size} steps; the layer "
                f"before it gives {shape[0]}."
            )
        return (count, shape[1])

    def forward(self, x: Any) -> Any:
        xp = self.xp
        self._length = x.shape[1]
        count = out_length(x.shape[1], self.pool_size, self.stride)
        if count < 1:
            raise PolynnValueError(
                f"{self!r} needs sequences of at least {self.pool_size} steps; got input of "
                f"shape {tuple(x.shape)}."
            )
        self._windows = windows = taps(x, self.pool_size, self.stride, count)
        y = windows[0]
        for w in windows[1:]:
            y = xp.maximum(y, w)
        self._y = y
        return y

    def backward(self, grad: Any) -> Any:
        xp = self.xp
        free = xp.ones(grad.shape, dtype=xp.bool, device=self.device)
        parts = []
        for w in self._windows:  # the first position holding the maximum takes the gradient
            hit = xp.logical_and(w == self._y, free)
            free = xp.logical_and(free, xp.logical_not(hit))
            parts.append(grad * xp.astype(hit, grad.dtype))
        self._windows = []
        return spread(xp, self.device, parts, self.stride, self._length)

    def get_config(self) -> dict[str, Any]:
        return {"pool_size": self.pool_size, "stride": self.stride}


class GlobalAveragePool1D(Layer):
    """The mean over the length of each channel: (rows, length, channels) to
    (rows, channels)."""

    compilable = True

    def input_shape(self) -> Shape:
        return (None, None)

    def output_shape(self, shape: Shape | None) -> Shape:
        if shape is not None and len(shape) != 2:
            raise PolynnValueError(
                f"{self!r} takes rows of shape (length, channels), but the layer before it "
                f"gives {describe(shape)}."
            )
        return (None if shape is None else shape[1],)

    def forward(self, x: Any) -> Any:
        self._shape = tuple(x.shape)
        return self.xp.mean(x, axis=1)

    def backward(self, grad: Any) -> Any:
        xp = self.xp
        # A new array, not a broadcast view: the layer before may write into its gradient.
        spread_out = xp.zeros(self._shape, dtype=grad.dtype, device=self.device)
        return spread_out + xp.expand_dims(grad / self._shape[1], axis=1)
