"""Two-dimensional convolution and pooling on images of shape (rows, height, width, channels).

Channels last, as ``Conv1D``. A convolution is one matrix product of the input's sliding
windows (``Kernels.windows`` of the kernel seam: shape (rows, out_h, out_w, kh * kw *
channels), the array API default joining strided slices, NumPy copying a strided view once)
with the weights reshaped to (kh * kw * in, out); its input gradient is
``Kernels.conv_input_grad``. A pool reduces the strided slices of the input at each position
of its windows (views, nothing copied), and spreads its gradient back through
``Kernels.windows_grad``.
"""

from __future__ import annotations

from typing import Any

from polynn._checks import integer
from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnValueError
from polynn.kernels import Act, Pads, Pair
from polynn.layers.core import Layer, Parameter, Shape, compatible, describe

__all__ = ["AveragePool2D", "Conv2D", "GlobalAveragePool2D", "MaxPool2D", "compact", "pair"]


def pair(value: Any, what: str, minimum: int) -> Pair:
    """``value`` (an int, or a pair of ints for the height and the width) as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise PolynnValueError(
                f"{what} must be an int or a pair (height, width); got {value!r}."
            )
        return integer(value[0], what, minimum), integer(value[1], what, minimum)
    size = integer(value, what, minimum)
    return size, size


def compact(value: Pair) -> int | Pair:
    """A pair as a config and ``repr`` show it: one int where both sizes are equal."""
    return value[0] if value[0] == value[1] else value


def out_size(size: int, window: int, stride: int) -> int:
    """The number of windows of ``window`` with ``stride`` in ``size`` positions."""
    return (size - window) // stride + 1


def _too_small(layer: Layer, window: Pair, got: Any) -> PolynnValueError:
    padded = " (with its padding)" if isinstance(layer, Conv2D) else ""
    return PolynnValueError(
        f"{layer!r} needs images of at least {window[0]}x{window[1]}{padded}; {got}."
    )


def _image_rows(layer: Layer, shape: Shape | None, channels: int | None) -> None:
    """Refuse input rows that are not (height, width, channels)."""
    if shape is None or compatible(shape, (None, None, channels)):
        return
    want = f"(height, width, {channels if channels else 'channels'})"
    hint = ": put a Reshape before it." if len(shape) == 1 else "."
    raise PolynnValueError(
        f"{layer!r} takes rows of shape {want}, but the layer before it gives "
        f"{describe(shape)}{hint}"
    )


class Conv2D(Layer):
    """``y[:, r, s, :] = b + sum_{i,j} x[:, sh r + i - top, sw s + j - left, :] @ W[i, j]``:
    a 2-d convolution (a cross-correlation, as PyTorch's ``conv2d``) of images of shape
    (rows, height, width, in_channels), zero-padded. ``kernel_size``, ``stride`` and
    ``padding`` are ints or (height, width) pairs; ``padding="same"`` pads so that the output
    has ``ceil(size / stride)`` rows and columns, the odd one of the padding at the bottom and
    the right (PyTorch's ``padding="same"`` for stride 1, TensorFlow's for any stride). ``W``
    has shape (kh, kw, in_channels, out_channels), ``b`` (out_channels,). Weights start as a
    ``Dense``'s with ``kh * kw * in_channels`` inputs (He-normal before the ReLU family, else
    Glorot)."""

    compilable = True
    takes_activation = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Pair,
        stride: int | Pair = 1,
        padding: int | Pair | str = 0,
    ) -> None:
        self.in_channels = integer(in_channels, "Conv2D in_channels", 1)
        self.out_channels = integer(out_channels, "Conv2D out_channels", 1)
        self.kernel_size = pair(kernel_size, "Conv2D kernel_size", 1)
        self.stride = pair(stride, "Conv2D stride", 1)
        if isinstance(padding, str) and padding != "same":
            raise PolynnValueError(
                f'Conv2D padding must be "same", an int or a pair; got {padding!r}.'
            )
        self.padding = padding if padding == "same" else pair(padding, "Conv2D padding", 0)
        if padding != "same" and any(p >= k for p, k in zip(self.padding, self.kernel_size)):
            raise PolynnValueError(  # also bounds what a file can make it allocate
                f"Conv2D padding must be below kernel_size={self.kernel_size} in each axis "
                f"(more padding only adds outputs that see no input); got {self.padding}."
            )
        #: False for a network's first layer: its input gradient is never used.
        self.need_input_grad = True

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        (kh, kw), cin, cout = self.kernel_size, self.in_channels, self.out_channels
        W = rng.initial(init, (kh, kw, cin, cout), kh * kw * cin, cout, f"W of {self!r}")
        self.W = Parameter(backend.from_numpy(W, dtype), "W")
        self.b = Parameter(backend.from_numpy(rng.zeros(cout), dtype), "b")
        self.params = (self.W, self.b)
        self._kernels = backend.kernels

    def param_shapes(self) -> list[tuple[int, ...]]:
        return [(*self.kernel_size, self.in_channels, self.out_channels), (self.out_channels,)]

    def pads(self, height: int, width: int) -> Pads:
        """(top, bottom, left, right) zero rows and columns for images of this size."""
        if self.padding != "same":
            (ph, pw) = self.padding
            return ph, ph, pw, pw
        out = []
        for size, k, s in zip((height, width), self.kernel_size, self.stride):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            out += [total // 2, total - total // 2]
        return out[0], out[1], out[2], out[3]

    def _out(self, height: int, width: int) -> Pair:
        top, bottom, left, right = self.pads(height, width)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return out_size(height + top + bottom, kh, sh), out_size(width + left + right, kw, sw)

    def input_shape(self) -> Shape:
        return (None, None, self.in_channels)

    def output_shape(self, shape: Shape | None) -> Shape:
        _image_rows(self, shape, self.in_channels)
        if shape is None or shape[0] is None or shape[1] is None:
            return (None, None, self.out_channels)
        oh, ow = self._out(shape[0], shape[1])
        if oh < 1 or ow < 1:
            raise _too_small(self, self.kernel_size, f"the layer before it gives {describe(shape)}")
        return (oh, ow, self.out_channels)

    def forward(self, x: Any, act: Act | None = None) -> Any:
        """The convolution; with ``act`` (how ``Fused`` runs it), that activation of it."""
        xp = self.xp
        if x.ndim != 4 or x.shape[3] != self.in_channels:
            raise PolynnValueError(
                f"{self!r} takes images of shape (rows, height, width, {self.in_channels}); "
                f"got input of shape {tuple(x.shape)}."
            )
        n, h, w, _ = x.shape
        oh, ow = self._out(h, w)
        if oh < 1 or ow < 1:
            raise _too_small(self, self.kernel_size, f"got input of shape {tuple(x.shape)}")
        self._shape, self._pads = (n, h, w, self.in_channels), self.pads(h, w)
        k = self._kernels
        cols = k.windows(x, self.kernel_size, self.stride, self._pads)
        self._cols = xp.reshape(cols, (n * oh * ow, cols.shape[3]))
        W = xp.reshape(self.W.value, (cols.shape[3], self.out_channels))
        y, self._saved = k.dense(self._cols, W, self.b.value, act)
        return xp.reshape(y, (n, oh, ow, self.out_channels))

    def backward(self, grad: Any, act: Act | None = None) -> Any:
        xp, k = self.xp, self._kernels
        n, oh, ow, cout = grad.shape
        g = xp.reshape(grad, (n * oh * ow, cout))
        if act is not None:  # the gradient before the activation, for both products below
            g = act.backward(g, self._saved)
        k.dense_backward(g, self._cols, self.W, self.b, None, None, input_grad=False)
        if not self.need_input_grad:
            return None
        g = xp.reshape(g, (n, oh, ow, cout))
        return k.conv_input_grad(g, self.W.value, self._shape, self.stride, self._pads)

    def get_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": compact(self.kernel_size),
            "stride": compact(self.stride),
            "padding": self.padding if self.padding == "same" else compact(self.padding),
        }


class _Pool2D(Layer):
    """A reduction over each window of ``pool_size``, ``stride`` apart (``pool_size`` by
    default), per channel, on images of shape (rows, height, width, channels); no padding.
    The values at each position of the windows are one strided slice of the input (a view:
    nothing is copied); the gradient goes back through ``Kernels.windows_grad``."""

    def __init__(self, pool_size: int | Pair, stride: int | Pair | None = None) -> None:
        kind = type(self).__name__
        self.pool_size = pair(pool_size, f"{kind} pool_size", 1)
        self.stride = self.pool_size if stride is None else pair(stride, f"{kind} stride", 1)

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        self._windows_grad = backend.kernels.windows_grad

    def input_shape(self) -> Shape:
        return (None, None, None)

    def output_shape(self, shape: Shape | None) -> Shape:
        _image_rows(self, shape, None)
        if shape is None or shape[0] is None or shape[1] is None:
            return (None, None, None if shape is None else shape[2])
        oh = out_size(shape[0], self.pool_size[0], self.stride[0])
        ow = out_size(shape[1], self.pool_size[1], self.stride[1])
        if oh < 1 or ow < 1:
            raise _too_small(self, self.pool_size, f"the layer before it gives {describe(shape)}")
        return (oh, ow, shape[2])

    def _taps(self, x: Any) -> list[Any]:
        """``x[:, sh r + i, sw s + j, :]`` over the outputs (r, s), one (rows, out_h, out_w,
        channels) slice for each position (i, j) of the window, in row-major order."""
        if x.ndim != 4:
            raise PolynnValueError(
                f"{self!r} takes images of shape (rows, height, width, channels); got input of "
                f"shape {tuple(x.shape)}."
            )
        (ph, pw), (sh, sw) = self.pool_size, self.stride
        n, h, w, c = x.shape
        if h < ph or w < pw:
            raise _too_small(self, self.pool_size, f"got input of shape {tuple(x.shape)}")
        self._shape = (n, h, w, c)
        lh, lw = sh * (out_size(h, ph, sh) - 1) + 1, sw * (out_size(w, pw, sw) - 1) + 1
        return [x[:, i : i + lh : sh, j : j + lw : sw, :] for i in range(ph) for j in range(pw)]

    def _spread(self, parts: list[Any]) -> Any:
        """The input gradient from the gradient at each position of the windows."""
        dcols = parts[0] if len(parts) == 1 else self.xp.concat(parts, axis=3)
        return self._windows_grad(dcols, self._shape, self.pool_size, self.stride, (0, 0, 0, 0))

    def get_config(self) -> dict[str, Any]:
        return {"pool_size": compact(self.pool_size), "stride": compact(self.stride)}


class MaxPool2D(_Pool2D):
    """The maximum of each window of ``pool_size`` (an int or a (height, width) pair),
    ``stride`` apart (``pool_size`` by default), per channel, on images of shape (rows,
    height, width, channels); no padding. The gradient goes to the first maximum of each
    window in row-major order, as in PyTorch."""

    compilable = True

    def forward(self, x: Any) -> Any:
        self._window = taps = self._taps(x)
        y = taps[0]
        for tap in taps[1:]:
            y = self.xp.maximum(y, tap)
        self._y = y
        return y

    def backward(self, grad: Any) -> Any:
        xp = self.xp
        free = xp.ones(tuple(grad.shape), dtype=xp.bool, device=self.device)
        parts = []
        for tap in self._window:  # the first position holding the maximum takes it
            hit = xp.logical_and(tap == self._y, free)
            free = xp.logical_and(free, xp.logical_not(hit))
            parts.append(grad * xp.astype(hit, grad.dtype))
        self._window = []
        return self._spread(parts)


class AveragePool2D(_Pool2D):
    """The mean of each window of ``pool_size`` (an int or a (height, width) pair),
    ``stride`` apart (``pool_size`` by default), per channel, on images of shape (rows,
    height, width, channels); no padding."""

    compilable = True

    def forward(self, x: Any) -> Any:
        taps = self._taps(x)
        total = taps[0]
        for tap in taps[1:]:
            total = total + tap
        return total / len(taps)

    def backward(self, grad: Any) -> Any:
        share = grad / (self.pool_size[0] * self.pool_size[1])
        return self._spread([share] * (self.pool_size[0] * self.pool_size[1]))


class GlobalAveragePool2D(Layer):
    """The mean over the height and width of each channel: (rows, height, width, channels)
    to (rows, channels)."""

    compilable = True

    def input_shape(self) -> Shape:
        return (None, None, None)

    def output_shape(self, shape: Shape | None) -> Shape:
        _image_rows(self, shape, None)
        return (None if shape is None else shape[2],)

    def forward(self, x: Any) -> Any:
        if x.ndim != 4:
            raise PolynnValueError(
                f"{self!r} takes images of shape (rows, height, width, channels); got input of "
                f"shape {tuple(x.shape)}."
            )
        self._shape = tuple(x.shape)
        return self.xp.mean(x, axis=(1, 2))

    def backward(self, grad: Any) -> Any:
        xp = self.xp
        n, h, w, c = self._shape
        share = xp.reshape(grad / (h * w), (n, 1, 1, c))
        # A new array, not a broadcast view: the layer before may write into its gradient.
        return xp.zeros(self._shape, dtype=grad.dtype, device=self.device) + share
