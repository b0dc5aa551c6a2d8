"""NumPy's own namespace, with three functions that skip NumPy's Python-level dispatch.

NumPy 2 implements the array API standard in its main namespace. ``np.sum`` and ``np.max``
route through a generic Python wrapper that costs about 1.5-3 us per call, as much as the
reduction itself on the small arrays of a tiny network. ``np.add.reduce`` and
``np.maximum.reduce`` compute the same results in C. The wrappers below give them the
standard's signature (``axis=None`` by default, where the ufunc's is 0) and pass everything
on by position: a ``functools.partial`` would copy its keyword arguments into a new dict at
every call that names ``axis``. ``np.astype`` is likewise a Python function around the
``ndarray.astype`` method. Everything else is NumPy's, unchanged.

``NumpyKernels`` adds NumPy's own routes for a few primitives of the kernel seam: a strided
view for the windows of images, in-place strided additions for their gradient, and a sort
with ``np.add.reduceat`` for sums by index.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from polynn.backends._half import with_bfloat16
from polynn.hashing import step_keys
from polynn.kernels import Kernels, Pads, Pair

_add_reduce = np.add.reduce
_maximum_reduce = np.maximum.reduce


def _sum(x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    return _add_reduce(x, axis, dtype, None, keepdims)


def _max(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    return _maximum_reduce(x, axis, None, None, keepdims)


def _astype(x: Any, dtype: Any, /, *, copy: bool = True, device: Any = None) -> Any:
    if device is not None and device != "cpu":
        raise ValueError(f'NumPy arrays live on device "cpu"; got device={device!r}.')
    return x.astype(dtype, copy=copy)


def _bias_grad(grad: Any) -> Any:
    return _add_reduce(grad, 0)


def _windows(x: Any, size: Pair, stride: Pair, pads: Pads) -> Any:
    """``Kernels.windows``: the padded input copied once, through a strided view of shape
    (rows, out_h, out_w, kh, kw, channels), instead of joining kh * kw slices (a 64x8x8x16
    input, 3x3, padding 1: 84 us against 201 us)."""
    top, bottom, left, right = pads
    if any(pads):
        n, h, w, c = x.shape
        padded = np.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
        padded[:, top : top + h, left : left + w, :] = x
        x = padded
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = size, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    s0, s1, s2, s3 = x.strides
    view = as_strided(
        x, (n, oh, ow, kh, kw, c), (s0, s1 * sh, s2 * sw, s1, s2, s3), writeable=False
    )
    return view.reshape(n, oh, ow, kh * kw * c)


def _windows_grad(grad: Any, shape: tuple[int, ...], size: Pair, stride: Pair, pads: Pads) -> Any:
    """``Kernels.windows_grad``: each tap's gradient added in place into a strided slice of
    one padded image (kh * kw additions, whatever the image size)."""
    n, h, w, c = shape
    top, bottom, left, right = pads
    (kh, kw), (sh, sw) = size, stride
    _, oh, ow, _ = grad.shape
    out = np.zeros((n, h + top + bottom, w + left + right, c), dtype=grad.dtype)
    taps = grad.reshape(n, oh, ow, kh, kw, c)
    lh, lw = sh * (oh - 1) + 1, sw * (ow - 1) + 1
    for i in range(kh):
        for j in range(kw):
            out[:, i : i + lh : sh, j : j + lw : sw, :] += taps[:, :, :, i, j, :]
    return out[:, top : top + h, left : left + w, :]


def _scatter_add(index: Any, values: Any, rows: int) -> Any:
    """``Kernels.scatter_add``: the values sorted by index and each run summed by
    ``np.add.reduceat`` (faster than ``np.add.at`` on every size measured)."""
    order = np.argsort(index, kind="stable")
    keys = index[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    out = np.zeros((rows, *values.shape[1:]), dtype=values.dtype)
    out[keys[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out


class NumpyKernels(Kernels):
    """The array API defaults, with the bias gradient as one ``np.add.reduce`` call: a
    Python frame less per Dense layer and step than ``xp.sum(grad, axis=0)`` through the
    seam (1.3 k fewer instructions per XOR step, ``benchmarks/instructions.py``); a Dropout's
    keys mixed from its step on the host, where NumPy's "device" is (reading the step costs
    nothing; a few dozen operations on 0-d arrays would); the windows of images through a
    strided view, a convolution's input gradient as a convolution, and sums by index
    through a sort."""

    name = "array API, NumPy bias sum"
    bias_grad = staticmethod(_bias_grad)
    windows = staticmethod(_windows)
    windows_grad = staticmethod(_windows_grad)
    scatter_add = staticmethod(_scatter_add)

    def conv_input_grad(
        self, grad: Any, W: Any, shape: tuple[int, ...], stride: Pair, pads: Pads
    ) -> Any:
        """``Kernels.conv_input_grad``; with stride 1 (and padding smaller than the kernel)
        the input gradient is itself a convolution, of ``grad`` padded by ``kernel - 1 -
        padding`` with ``W`` flipped and its channels swapped: one strided copy and one
        matrix product, instead of a product and kh * kw strided additions (a 64x8x8x16 3x3
        layer: 0.35 ms against 0.67 ms)."""
        kh, kw, cin, cout = W.shape
        top, bottom, left, right = pads
        if tuple(stride) != (1, 1) or max(top, bottom) >= kh or max(left, right) >= kw:
            return super().conv_input_grad(grad, W, shape, stride, pads)
        flipped = W[::-1, ::-1].transpose(0, 1, 3, 2).reshape(kh * kw * cout, cin)
        around = (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)
        cols = _windows(grad, (kh, kw), (1, 1), around)
        dx = cols.reshape(-1, kh * kw * cout) @ flipped
        return dx.reshape(shape).astype(grad.dtype, copy=False)

    def dropout_keys(self, key: int, step: Any) -> tuple[Any, Any]:
        return step_keys(key, int(step))


def namespace() -> types.ModuleType:
    """A module object holding NumPy's functions, with ``sum``, ``max`` and ``astype``
    replaced, and ``clip`` and ``isdtype`` that take bfloat16 (``polynn.backends._half``)."""
    xp = types.ModuleType("polynn.backends.numpy_fast", __doc__)
    xp.__dict__.update({k: v for k, v in vars(np).items() if not k.startswith("__")})
    xp.__array_api_version__ = np.__array_api_version__
    xp.__array_namespace_info__ = np.__array_namespace_info__
    xp.sum, xp.max, xp.astype = _sum, _max, _astype
    return with_bfloat16(xp, np)
