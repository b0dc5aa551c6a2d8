"""CuPy's fast paths of the kernel seam (``polynn.kernels``).

Each method replaces one default of ``Kernels`` and computes the same formula in the same
order, so ``tests/test_kernels.py`` can check it against the default on the same inputs:

- matrix products of Dense and Conv1D through cuBLASLt where nvmath-python is installed
  (``_cupy_gemm``): the bias and ReLU in the forward product's epilogue, the bias gradient in
  the weight gradient's; products too small for nvmath's host cost go through CuPy;
- elementwise work in vectorised kernels (``_cupy_source``): an activation with the bias add
  before it, an activation's gradient, softmax cross-entropy over few classes;
- optimizer updates over the flat buffers of an arena (``_cupy_arena``): one kernel for all
  parameters (two for Adam: its bias corrections are computed on the device first), reading
  the rate and step count from the device;
- the windows of a convolution (``im2col``, Conv2D's and Conv1D's) and their gradient as
  one gather kernel each.

The half types of a mixed-precision model keep CuPy's ``ElementwiseKernel`` versions of the
activations (computed in float, rounded once). Kernels are compiled with ``--fmad=false`` so
that no multiply-add is contracted, which keeps them equal to the defaults up to the rounding
of the math library's ``tanh``, ``exp`` and ``log``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from polynn.backends import _cupy_gemm
from polynn.backends._cupy_arena import Arena
from polynn.backends._cupy_source import ACTIVATION_CODES, SOURCE, names
from polynn.hashing import GOLDEN, lowbias32
from polynn.kernels import Act, Backward, Forward, Kernels, Pads, Pair, Scalars

_OPTIONS = ("--fmad=false",)
#: Rows of at most this many classes take the one-thread-a-row cross-entropy kernel.
XENT_CLASSES = 64

# The half types' activations: (value from v = z + b, gradient from the output u and the
# incoming gradient d), computed in float and rounded once.
_HALF = {
    "sigmoid": ("h * tanh(h * v) + h", "d * (u * (one - u))"),
    "tanh": ("tanh(v)", "d * (one - u * u)"),
    "relu": ("v * (float)(v > zero)", "d * (float)(u > zero)"),
    "leaky_relu": ("v * ((float)(v > zero) * r + s)", "d * ((float)(u > zero) * r + s)"),
}  # fmt: skip
_HALF_PRELUDE = "const float zero = 0, one = 1, h = 0.5; float s = (float)slope, r = (float)rest;"


@functools.cache
def _module(cupy: Any) -> Any:
    """The vectorised kernels, compiled once per process."""
    return cupy.RawModule(code=SOURCE, options=("--std=c++14", *_OPTIONS), name_expressions=names())


@functools.cache
def _elementwise(cupy: Any) -> dict[str, Any]:
    """The ``ElementwiseKernel``s: the half types' activations and the flat updates."""

    def kernel(inputs: str, outputs: str, body: str, name: str) -> Any:
        return cupy.ElementwiseKernel(inputs, outputs, body, f"polynn_{name}", options=_OPTIONS)

    made = {}
    for act, (value, gradient) in _HALF.items():
        made[f"{act}_forward"] = kernel(
            "T z, T b, T slope, T rest", "T y", f"{_HALF_PRELUDE} float v = (float)z + "
            f"(float)b; y = (T)({value});", f"bias_{act}_half"
        )  # fmt: skip
        made[f"{act}_backward"] = kernel(
            "T g, T y, T slope, T rest", "T gz", f"{_HALF_PRELUDE} float d = (float)g, "
            f"u = (float)y; gz = (T)({gradient});", f"{act}_grad_half"
        )  # fmt: skip
    made["sgd"] = kernel("T g, raw T lr", "T p", "p = p - lr[0] * g;", "sgd")
    made["sgd_full"] = kernel(
        "T g, raw T lr, T mu, T wd, bool decay, bool momentum, bool nesterov",
        "T p, raw T v",
        """
        T d = decay ? g + wd * p : g;
        if (momentum) { T w = v[i] * mu; w = w + d; v[i] = w; d = nesterov ? d + mu * w : w; }
        p = p - lr[0] * d;
        """,
        "sgd_full",
    )
    made["adam_coefficients"] = kernel(
        "raw T lr, T b1, T b2, T wd",
        "T t, raw T coef",
        """
        const T one = 1;
        t = t + one;
        coef[0] = lr[0] / (one - pow(b1, t));
        coef[1] = one / sqrt(one - pow(b2, t));
        coef[2] = one - lr[0] * wd;
        """,
        "adam_coefficients",
    )
    made["adam"] = kernel(
        "T g, raw T coef, T b1, T b2, T c1, T c2, T eps, bool decay",
        "T p, T m, T v",
        """
        m = m * b1; m = m + c1 * g;
        v = v * b2; v = v + c2 * (g * g);
        if (decay) { p = p * coef[2]; }
        p = p - coef[0] * m / (sqrt(v) * coef[1] + eps);
        """,
        "adam",
    )
    made["rmsprop"] = kernel(
        "T g, raw T lr, T rho, T keep, T eps, T mu, T wd, bool decay, bool centered, bool momentum",
        "T p, T sq, raw T ga, raw T buf",
        """
        T d = decay ? g + wd * p : g;
        sq = sq * rho; sq = sq + keep * (d * d);
        T avg = sq;
        if (centered) { T a = ga[i] * rho; a = a + keep * d; ga[i] = a; avg = sq - a * a; }
        T u = d / (sqrt(avg) + eps);
        if (momentum) { T w = buf[i] * mu; w = w + u; buf[i] = w; u = w; }
        p = p - lr[0] * u;
        """,
        "rmsprop",
    )
    made["adagrad"] = kernel(
        "T g, raw T lr, T eps, T wd, bool decay",
        "T p, T s",
        "T d = decay ? g + wd * p : g; s = s + d * d; p = p - lr[0] * (d / (sqrt(s) + eps));",
        "adagrad",
    )
    made["clip_norm"] = kernel(
        "raw T total, T limit",
        "T g",
        "T scale = limit / (sqrt(total[0]) + (T)1e-6); g = g * (scale > (T)1 ? (T)1 : scale);",
        "clip_norm",
    )
    made["dropout"] = cupy.ElementwiseKernel(
        "raw uint32 step, uint32 key, int64 start, uint32 threshold, uint32 high, raw T scale",
        "T y",
        """
        const unsigned int a = polynn_lowbias32(key ^ polynn_lowbias32(step[0]) ^ high);
        const unsigned int b = polynn_lowbias32(a ^ 0x9E3779B9u);
        const unsigned int index = (unsigned int)(start + i);
        const unsigned int bits = polynn_lowbias32(polynn_lowbias32(index ^ a) ^ b);
        y = bits >= threshold ? scale[0] : (T)0;
        """,
        "polynn_dropout",
        options=_OPTIONS,
        preamble="""
        __device__ __forceinline__ unsigned int polynn_lowbias32(unsigned int x) {
            x ^= x >> 16; x *= 0x7FEB352Du; x ^= x >> 15; x *= 0x846CA68Bu; x ^= x >> 16;
            return x;
        }
        """,
    )
    made["sum_of_squares"] = cupy.ReductionKernel(
        "T x", "T y", "x * x", "a + b", "y = a", "0", "polynn_sum_of_squares", options=_OPTIONS
    )
    made["windows"] = kernel(
        "raw T x, int64 h, int64 w, int64 c, int64 kh, int64 kw, int64 oh, int64 ow, "
        "int64 sh, int64 sw, int64 top, int64 left",
        "T cols",
        """
        const long long ch = i % c, k = (i / c) % (kh * kw);
        const long long s = (i / (c * kh * kw)) % ow, r = (i / (c * kh * kw * ow)) % oh;
        const long long n = i / (c * kh * kw * ow * oh);
        const long long y = r * sh + k / kw - top, z = s * sw + k % kw - left;
        cols = (y >= 0 && y < h && z >= 0 && z < w) ? x[((n * h + y) * w + z) * c + ch] : (T)0;
        """,
        "windows",
    )
    made["windows_grad"] = kernel(
        "raw T cols, int64 h, int64 w, int64 c, int64 kh, int64 kw, int64 oh, int64 ow, "
        "int64 sh, int64 sw, int64 top, int64 left",
        "T dx",
        """
        const long long ch = i % c, z = (i / c) % w, y = (i / (c * w)) % h;
        const long long n = i / (c * w * h);
        T acc = 0;
        for (long long ki = 0; ki < kh; ++ki) {
            const long long a = y + top - ki;
            if (a < 0 || a % sh != 0 || a / sh >= oh) continue;
            for (long long kj = 0; kj < kw; ++kj) {
                const long long b = z + left - kj;
                if (b < 0 || b % sw != 0 || b / sw >= ow) continue;
                const long long window = (n * oh + a / sh) * ow + b / sw;
                acc = acc + cols[(window * kh * kw + ki * kw + kj) * c + ch];
            }
        }
        dx = acc;
        """,
        "windows_grad",
    )
    return made


class CupyKernels(Kernels):
    """The array API defaults, with CUDA kernels and cuBLASLt for the hot primitives."""

    name = "cupy fused"

    def __init__(self, xp: Any, device: Any, cupy: Any, linalg: Any) -> None:
        super().__init__(xp, device)
        self._cupy, self._linalg = cupy, linalg
        self._ones: dict[tuple[int, Any], Any] = {}
        self._sms = int(device.attributes["MultiProcessorCount"])
        advanced = _cupy_gemm.load()
        #: cuBLASLt through nvmath-python, or None (every product through CuPy).
        self.gemm = None if advanced is None else _cupy_gemm.Gemm(advanced, self._tf32)
        if self.gemm is not None:
            self.name = "cupy fused, cuBLASLt epilogues (nvmath-python)"

    # -- launching ----------------------------------------------------------------------------
    def _tf32(self) -> bool:
        linalg = self._linalg
        return bool(linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_TF32)

    def _vectorised(self, dtype: Any) -> bool:
        return np.dtype(dtype) in (np.float32, np.float64)

    def _launch(self, kernel: str, dtype: Any, work: int, args: tuple[Any, ...]) -> None:
        ctype = "float" if np.dtype(dtype) == np.float32 else "double"
        function = _module(self._cupy).get_function(kernel.replace("T", ctype, 1))
        blocks = max(1, min(-(-work // 256), self._sms * 16))
        function((blocks,), (256,), args)

    def _pack(self, dtype: Any, *arrays: Any, cols: int | None = None) -> int:
        """Values per 16-byte pack where every array is contiguous and aligned to it (and a
        row of ``cols`` values holds whole packs), else 1."""
        size = 16 // np.dtype(dtype).itemsize
        aligned = all(a is None or a.data.ptr % 16 == 0 for a in arrays)
        return size if aligned and (cols is None or cols % size == 0) else 1

    def _scalar(self, value: float, dtype: Any) -> Any:
        return np.dtype(dtype).type(value)

    # -- activations --------------------------------------------------------------------------
    def activation(
        self, name: str, dtype: Any, *, negative_slope: float = 0.01
    ) -> tuple[Forward, Backward]:
        if name not in ACTIVATION_CODES:
            return super().activation(name, dtype, negative_slope=negative_slope)
        if not self._vectorised(dtype):
            return self._half_activation(name, dtype, negative_slope)
        code = ACTIVATION_CODES[name]
        slope = (self._scalar(negative_slope, dtype), self._scalar(1.0 - negative_slope, dtype))
        cupy = self._cupy

        def forward(z: Any, b: Any) -> tuple[Any, Any]:
            # With a bias, z is a new product made for this call: y takes its memory.
            z = cupy.ascontiguousarray(z)
            y = z if b is not None else cupy.empty_like(z)
            self._bias_act(z, b, y, code, slope)
            return y, y

        def backward(grad: Any, y: Any) -> Any:
            grad = cupy.ascontiguousarray(grad)
            self._act_grad(grad, y, code, slope)  # in place, as the default
            return grad

        return forward, backward

    def _bias_act(self, z: Any, b: Any, y: Any, code: int, slope: tuple[Any, Any]) -> None:
        """``slope``: leaky ReLU's slope and one minus it, as scalars of ``z``'s dtype."""
        cols = z.shape[-1] if z.ndim else 1
        n = self._pack(z.dtype, z, b, y, cols=cols if b is not None else None)
        bias = np.uint64(0) if b is None else b  # a null pointer: no bias
        args = (z, bias, y, np.int64(z.size), np.int64(cols), *slope)
        self._launch(f"polynn_bias_act<T, {code}, {n}>", z.dtype, z.size // n, args)

    def _act_grad(self, grad: Any, y: Any, code: int, slope: tuple[Any, Any]) -> None:
        n = self._pack(grad.dtype, grad, y)
        args = (grad, y, grad, np.int64(grad.size), *slope)
        self._launch(f"polynn_act_grad<T, {code}, {n}>", grad.dtype, grad.size // n, args)

    def _half_activation(self, name: str, dtype: Any, slope: float) -> tuple[Forward, Backward]:
        made = _elementwise(self._cupy)
        forward_kernel, backward_kernel = made[f"{name}_forward"], made[f"{name}_backward"]
        s, r = self.constant(slope, dtype), self.constant(1.0 - slope, dtype)
        zero = self.constant(0.0, dtype)

        def forward(z: Any, b: Any) -> tuple[Any, Any]:
            y = forward_kernel(z, zero, s, r) if b is None else forward_kernel(z, b, s, r, z)
            return y, y

        def backward(grad: Any, y: Any) -> Any:
            return backward_kernel(grad, y, s, r, grad)

        return forward, backward

    # -- the products of a Dense ---------------------------------------------------------------
    def dense(self, x: Any, W: Any, b: Any, act: Act | None = None) -> tuple[Any, Any]:
        relu = act is not None and act.name == "relu"
        y = None if self.gemm is None else self.gemm.forward(x, W, b, relu)
        if y is None:
            return super().dense(x, W, b, act)
        if act is None:
            return y, None
        if not relu:  # the product is this call's own array: the activation runs in place
            if self._vectorised(y.dtype):
                slope = (self._scalar(act.slope, y.dtype), self._scalar(1.0 - act.slope, y.dtype))
                self._bias_act(y, None, y, ACTIVATION_CODES[act.name], slope)
            else:
                y, _ = act.forward(y, None)
        return y, y

    def dense_backward(
        self,
        grad: Any,
        x: Any,
        W: Any,
        b: Any,
        saved: Any,
        act: Act | None,
        input_grad: bool = True,
    ) -> Any:
        if act is not None:
            grad = act.backward(grad, saved)
        W2 = W.value if W.value.ndim == 2 else W.value.reshape(-1, W.value.shape[-1])
        # The last step's gradient arrays (views of the optimizer's arena) take the new ones.
        same = x.dtype == grad.dtype
        out = _writable(W.grad, W2.shape, grad.dtype) if same else None
        made = None if self.gemm is None else self.gemm.weight_grad(x, grad, out, bias=True)
        if made is not None:
            dW, db = made
        else:
            dW = self._cupy.matmul(x.T, grad, out=out) if out is not None else x.T @ grad
            db = None
        if out is None or dW.data.ptr != out.data.ptr:  # else W.grad holds it already
            W.grad = dW if dW.shape == W.value.shape else dW.reshape(W.value.shape)
        if db is None:
            db = self.bias_grad(grad, _writable(b.grad, b.value.shape, grad.dtype))
        b.grad = db
        if not input_grad:
            return None
        dx = None if self.gemm is None else self.gemm.input_grad(grad, W2)
        if dx is None:
            dx = grad @ W2.T
        return dx if dx.dtype == W2.dtype else dx.astype(W2.dtype)

    def bias_grad(self, grad: Any, out: Any = None) -> Any:
        """``ones @ grad``: cuBLAS's matrix-vector product sums the rows about 14 times
        faster than ``sum(axis=0)`` on a 16384x1024 float32 gradient. It runs in full float32
        also where the model allows TF32 (``matmul_precision="high"``): a sum gains no speed
        from tensor cores, only rounding. While a CUDA graph is captured (CuPy's cuBLAS
        cannot be) the sum is a reduction kernel."""
        cupy = self._cupy
        if self.gemm is not None and self.gemm.capturing:
            return cupy.sum(grad, axis=0, out=out)
        key = (grad.shape[0], grad.dtype)
        ones = self._ones.get(key)
        if ones is None:
            ones = self._ones[key] = cupy.ones(grad.shape[0], dtype=grad.dtype)
        linalg = self._linalg
        old = linalg.get_compute_type(grad.dtype)
        if old == linalg.COMPUTE_TYPE_DEFAULT:
            return cupy.matmul(ones, grad, out=out)
        linalg.set_compute_type(grad.dtype, linalg.COMPUTE_TYPE_DEFAULT)
        try:
            return cupy.matmul(ones, grad, out=out)
        finally:
            linalg.set_compute_type(grad.dtype, old)

    # -- windows of images (Conv2D, and Conv1D as images one pixel wide) ---------------------
    def windows(self, x: Any, size: Pair, stride: Pair, pads: Pads) -> Any:
        """One gather kernel, the padding read as zeros (the default pads, slices and joins:
        a dozen launches)."""
        n, h, w, c = x.shape
        (kh, kw), (sh, sw), (top, bottom, left, right) = size, stride, pads
        oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
        cols = self._cupy.empty((n, oh, ow, kh * kw * c), dtype=x.dtype)
        _elementwise(self._cupy)["windows"](
            self._cupy.ascontiguousarray(x), h, w, c, kh, kw, oh, ow, sh, sw, top, left, cols
        )
        return cols

    def windows_grad(
        self, grad: Any, shape: tuple[int, ...], size: Pair, stride: Pair, pads: Pads
    ) -> Any:
        """One kernel: each input position gathers the gradients of the window values read
        from it (no atomics, so the sums are in a fixed order)."""
        n, h, w, c = shape
        (kh, kw), (sh, sw), (top, _, left, _) = size, stride, pads
        _, oh, ow, _ = grad.shape
        dx = self._cupy.empty((n, h, w, c), dtype=grad.dtype)
        _elementwise(self._cupy)["windows_grad"](
            self._cupy.ascontiguousarray(grad), h, w, c, kh, kw, oh, ow, sh, sw, top, left, dx
        )
        return dx

    def conv_input_grad(
        self, grad: Any, W: Any, shape: tuple[int, ...], stride: Pair, pads: Pads
    ) -> Any:
        kh, kw, cin, cout = W.shape
        n, oh, ow, _ = grad.shape
        g = grad.reshape(n * oh * ow, cout)
        W2 = W.reshape(kh * kw * cin, cout)
        dcols = None if self.gemm is None else self.gemm.input_grad(g, W2)
        if dcols is None:
            dcols = g @ W2.T
        dcols = dcols.astype(grad.dtype, copy=False).reshape(n, oh, ow, kh * kw * cin)
        return self.windows_grad(dcols, shape, (kh, kw), stride, pads)

    # -- Dropout -----------------------------------------------------------------------------
    def dropout(
        self,
        shape: tuple[int, ...],
        key: int,
        step: Any,
        row_offset: int,
        threshold: int,
        scale: Any,
    ) -> Any:
        """One kernel: each thread mixes the step's keys (a few dozen integer operations)
        and hashes its element, where the array API default takes a dozen launches."""
        if step.dtype != np.uint32:
            return super().dropout(shape, key, step, row_offset, threshold, scale)
        y = self._cupy.empty(shape, dtype=scale.dtype)
        start = row_offset * (y.size // shape[0] if shape and shape[0] else 0)
        _elementwise(self._cupy)["dropout"](
            step, np.uint32(key), np.int64(start), np.uint32(threshold),
            np.uint32(lowbias32(GOLDEN)), scale, y,
        )  # fmt: skip
        return y

    # -- the loss -------------------------------------------------------------------------------
    def softmax_cross_entropy(self, logits: Any, target: Any) -> tuple[Any, Any]:
        rows, classes = logits.shape
        if not (self._vectorised(logits.dtype) and classes <= XENT_CLASSES):
            return super().softmax_cross_entropy(logits, target)
        cupy = self._cupy
        logits, target = cupy.ascontiguousarray(logits), cupy.ascontiguousarray(target)
        grad = cupy.empty_like(logits)
        term = cupy.empty(rows, dtype=logits.dtype)
        self._launch(
            "polynn_softmax_xent<T>", logits.dtype, rows,
            (logits, target, grad, term, np.int64(rows), np.int32(classes)),
        )  # fmt: skip
        return -cupy.sum(term) / rows, grad

    # -- optimizer updates over the arena ------------------------------------------------------
    def _arena(self, params: Sequence[Any], scalars: Scalars) -> Arena | None:
        arena = scalars.arena
        if arena is None or not arena.holds(params):
            if not Arena.fits(params):
                return None
            arena = scalars.arena = Arena(self._cupy, params)
        arena.gather()
        return arena

    def clip(
        self,
        params: Sequence[Any],
        clipvalue: float | None,
        clipnorm: float | None,
        scalars: Scalars | None = None,
    ) -> None:
        arena = None if scalars is None else self._arena(params, scalars)
        if arena is None:
            return super().clip(params, clipvalue, clipnorm)
        grads, made = arena.grads, _elementwise(self._cupy)
        if clipvalue is not None:
            self._cupy.clip(grads, -clipvalue, clipvalue, out=grads)
        if clipnorm is not None:
            total = made["sum_of_squares"](grads)
            made["clip_norm"](total, self._scalar(clipnorm, grads.dtype), grads)

    def sgd(
        self,
        params: Sequence[Any],
        states: Sequence[dict[str, Any]],
        scalars: Scalars,
        momentum: float,
        nesterov: bool,
        weight_decay: float,
    ) -> None:
        arena = self._arena(params, scalars)
        if arena is None:
            return super().sgd(params, states, scalars, momentum, nesterov, weight_decay)
        made, p, g = _elementwise(self._cupy), arena.values, arena.grads
        if not (momentum or weight_decay):
            made["sgd"](g, scalars.lr, p)
            return
        v = arena.state(states, "velocity") if momentum else p
        made["sgd_full"](
            g, scalars.lr, momentum, weight_decay, bool(weight_decay), bool(momentum),
            nesterov, p, v,
        )  # fmt: skip

    def adam(
        self,
        params: Sequence[Any],
        states: Sequence[dict[str, Any]],
        scalars: Scalars,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
    ) -> None:
        arena = self._arena(params, scalars)
        if arena is None:
            return super().adam(params, states, scalars, beta1, beta2, eps, weight_decay)
        made, dtype = _elementwise(self._cupy), arena.dtype
        m, v = arena.state(states, "m"), arena.state(states, "v")
        coef = scalars.scratch(3)
        made["adam_coefficients"](scalars.lr, beta1, beta2, weight_decay, scalars.t, coef)
        made["adam"](
            arena.grads, coef, beta1, beta2, self._scalar(1.0 - beta1, dtype),
            self._scalar(1.0 - beta2, dtype), eps, bool(weight_decay), arena.values, m, v,
        )  # fmt: skip

    def rmsprop(
        self,
        params: Sequence[Any],
        states: Sequence[dict[str, Any]],
        scalars: Scalars,
        rho: float,
        eps: float,
        momentum: float,
        centered: bool,
        weight_decay: float,
    ) -> None:
        arena = self._arena(params, scalars)
        if arena is None:
            return super().rmsprop(
                params, states, scalars, rho, eps, momentum, centered, weight_decay
            )
        square = arena.state(states, "square_avg")
        average = arena.state(states, "grad_avg") if centered else square
        buffer = arena.state(states, "momentum") if momentum else square
        _elementwise(self._cupy)["rmsprop"](
            arena.grads, scalars.lr, rho, self._scalar(1.0 - rho, arena.dtype), eps, momentum,
            weight_decay, bool(weight_decay), centered, bool(momentum), arena.values, square,
            average, buffer,
        )  # fmt: skip

    def adagrad(
        self,
        params: Sequence[Any],
        states: Sequence[dict[str, Any]],
        scalars: Scalars,
        eps: float,
        initial_accumulator: float,
        weight_decay: float,
    ) -> None:
        arena = self._arena(params, scalars)
        if arena is None:
            return super().adagrad(params, states, scalars, eps, initial_accumulator, weight_decay)
        total = arena.state(states, "sum", fill=initial_accumulator)
        _elementwise(self._cupy)["adagrad"](
            arena.grads, scalars.lr, eps, weight_decay, bool(weight_decay), arena.values, total
        )


def _writable(a: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """``a`` viewed with ``shape`` where a product of ``dtype`` can be written into it (the
    gradient array of the last step, or the arena's view), else None."""
    if a is None or a.dtype != dtype or a.size != int(np.prod(shape)) or not a.flags.c_contiguous:
        return None
    return a if a.shape == shape else a.reshape(shape)
