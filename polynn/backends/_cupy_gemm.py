"""cuBLASLt through nvmath-python: the CuPy backend's matrix products, with the bias and ReLU
in the epilogue of a Dense's forward product and the bias gradient in that of its weight
gradient.

Row-major arrays are column-major transposes of themselves, so no operand is copied:

- forward ``y = act(x @ W + b)``: ``D = Matmul(W.T, x.T)`` with epilogue ``RELU_BIAS`` (or
  ``BIAS``), the bias along D's rows (the output features); D is (out, rows) column-major,
  which is ``y`` row-major;
- weight gradient ``dW = x.T @ g``: ``D = Matmul(g.T, x)`` with epilogue ``BGRADA`` (the sum
  of A over its columns: the bias gradient), D (out, in) column-major being ``dW`` in W's
  row-major layout; written in place into the gradient's own array where it has one;
- input gradient ``dx = g @ W.T``: ``D = Matmul(g, W.T)``, (rows, in) row-major like its
  first operand (nvmath orders a result without epilogue or C as its A).

On an H200 (``gpu-runs`` probes, 16384 x 1024 x 1024 float32) the ``RELU_BIAS`` product costs
what the bare one does and ``BGRADA`` less than a separate bias-gradient kernel; the bitmask
epilogues (``RELU_AUX_BIAS``, ``DRELU_BGRAD``) cost more than a vectorised kernel that takes
ReLU's mask from its output, so the backward pass does that instead. One ``Matmul`` is planned
per (product, shapes, dtype, compute type, epilogue) and reused with new operands. nvmath's
host cost per product (about 70 us, against 30 for CuPy's matmul) loses where the GPU work is
shorter, so products estimated under ``MIN_SECONDS`` of GPU time go through CuPy (cuBLAS)
instead; while a CUDA graph is captured (``capturing``) every product goes through cuBLASLt,
since CuPy's cuBLAS calls cannot be captured.

nvmath-python is optional (``polynn[cuda12]``/``polynn[cuda13]`` install it): without it, or
with the environment variable ``POLYNN_CUBLASLT=0``, ``load`` returns None and every product
goes through CuPy. A product that cuBLASLt cannot plan or run is computed by CuPy from then
on, with one warning.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np

__all__ = ["MIN_SECONDS", "Gemm", "load", "seconds"]

_log = logging.getLogger("polynn")

_UNPLANNED = object()
#: Products estimated to take less GPU time than this go through CuPy when not capturing.
MIN_SECONDS = 50e-6
#: Matrix-product rates used for that estimate (FLOP/s, an H100/H200's order of magnitude):
#: float64, float32 (SIMT), TF32 and the 16-bit types on tensor cores.
RATES = {"float64": 50e12, "float32": 50e12, "tf32": 400e12, "half": 600e12}


def load() -> Any:
    """nvmath-python's ``nvmath.linalg.advanced``, or None where it cannot be imported or
    ``POLYNN_CUBLASLT=0`` turns it off."""
    if os.environ.get("POLYNN_CUBLASLT", "").strip() == "0":
        return None
    try:
        from nvmath.linalg import advanced
    except Exception as exc:  # ImportError, or a broken CUDA library lookup
        _log.info("nvmath-python is not usable (%s: %s): matrix products go through CuPy",
                  type(exc).__name__, exc)  # fmt: skip
        return None
    return advanced


def seconds(m: int, n: int, k: int, kind: str) -> float:
    """The estimated GPU time of an (m x k) @ (k x n) product of ``kind`` (a key of ``RATES``)."""
    return 2.0 * m * n * k / RATES[kind]


def _kind(dtype: Any, tf32: bool) -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name in ("float16", "bfloat16"):
        return "half"
    if name == "float32" and tf32:
        return "tf32"
    return name


class Gemm:
    """The products of Dense layers through cuBLASLt, planned once per shape (see the module).

    ``advanced`` is ``nvmath.linalg.advanced`` (or a stand-in with its ``Matmul``,
    ``MatmulEpilog``, ``MatmulComputeType`` and ``MatmulOptions``); ``tf32()`` says whether
    float32 products may use TF32 now (the model's ``matmul_precision``). Each method returns
    None where it does not take the product (too small, operands not contiguous, an epilogue
    the dtype lacks), and the caller computes it with CuPy.
    """

    def __init__(self, advanced: Any, tf32: Any) -> None:
        self._nv, self._tf32 = advanced, tf32
        self._plans: dict[tuple[Any, ...], Any] = {}
        #: True while a CUDA graph is captured: every product is taken (none is too small).
        self.capturing = False

    def forward(self, x: Any, W: Any, b: Any, relu: bool) -> Any:
        """``relu(x @ W + b)`` (``x @ W + b`` for ``relu=False``), or None."""
        rows, k = x.shape
        out = W.shape[1]
        if not self._take(rows, out, k, x, W, b):
            return None
        epilog = self._nv.MatmulEpilog.RELU_BIAS if relu else self._nv.MatmulEpilog.BIAS
        D = self._run(("forward", epilog), W.T, x.T, epilog=epilog, inputs={"bias": b})
        return None if D is None else D.T

    def weight_grad(self, x: Any, g: Any, dW: Any, bias: bool) -> tuple[Any, Any] | None:
        """``(x.T @ g, sum of g over its rows)`` (the second None for ``bias=False``), the
        first written into ``dW`` where it is an array it can be written to; or None."""
        rows, k = x.shape
        out = g.shape[1]
        if not self._take(k, out, rows, x, g):
            return None
        # BGRADA sums A = g.T over its columns; nvmath's own tests leave out one row (out 1).
        epilog = self._nv.MatmulEpilog.BGRADA if bias and out > 1 else None
        writable = dW is not None and _c_contiguous(dW) and dW.dtype == x.dtype
        c = dW.T if writable and dW.shape == (k, out) else None
        D = self._run(("weight", epilog), g.T, x, epilog=epilog, c=c)
        if D is None:
            return None
        D, aux = D if isinstance(D, tuple) else (D, {})
        db = aux.get("bgrada")
        return D.T, (None if db is None else db.reshape(out))

    def input_grad(self, g: Any, W: Any) -> Any:
        """``g @ W.T``, or None."""
        rows, out = g.shape
        k = W.shape[0]
        if not self._take(rows, k, out, g, W):
            return None
        return self._run(("input",), g, W.T)

    # -- planning ---------------------------------------------------------------------------
    def _take(self, m: int, n: int, k: int, *arrays: Any) -> bool:
        """Whether to compute an (m x k) @ (k x n) product of ``arrays`` here."""
        if not all(_c_contiguous(a) for a in arrays):
            return False
        if len({str(a.dtype) for a in arrays}) > 1:  # a mixed-precision model's first layer
            return False
        if self.capturing:
            return True
        return seconds(m, n, k, _kind(arrays[0].dtype, self._tf32())) >= MIN_SECONDS

    def _run(
        self, what: tuple[Any, ...], a: Any, b: Any, *, epilog: Any = None,
        inputs: dict[str, Any] | None = None, c: Any = None,
    ) -> Any:  # fmt: skip
        """Execute ``a @ b`` (into ``c`` in place, if given) with ``epilog``, planning it the
        first time its key is seen; None where cuBLASLt cannot plan it (remembered)."""
        tf32 = self._tf32() and np.dtype(a.dtype) == np.float32
        # A plan holds the alignment of the pointers it was made for (cuBLASLt's algorithms
        # assume it): operands aligned otherwise get plans of their own.
        pointers = (a, b, c, *(inputs or {}).values())
        aligned = tuple(_alignment(x) for x in pointers if x is not None)
        key = (*what, a.shape, b.shape, str(a.dtype), tf32, c is not None, aligned)
        plan = self._plans.get(key, _UNPLANNED)
        if plan is None:
            return None
        try:
            if plan is _UNPLANNED:
                plan = self._plans[key] = self._plan(a, b, c, tf32, epilog, inputs, key)
                if plan is None:
                    return None
            else:
                plan.reset_operands_unchecked(a=a, b=b, c=c, epilog_inputs=inputs)
            return plan.execute()
        except Exception as exc:  # cuBLASLt refused to run it: CuPy computes it from now on
            self._plans[key] = None
            _log.warning("cuBLASLt cannot run %s (%s: %s); CuPy computes it instead",
                         key, type(exc).__name__, exc)  # fmt: skip
            return None

    def _plan(
        self, a: Any, b: Any, c: Any, tf32: bool, epilog: Any, inputs: Any, key: tuple
    ) -> Any:
        nv = self._nv
        options: dict[str, Any] = {}
        if tf32:
            options["compute_type"] = nv.MatmulComputeType.COMPUTE_32F_FAST_TF32
        if c is not None:
            options["inplace"] = True
        try:
            plan = nv.Matmul(
                a, b, c=c, beta=0.0 if c is not None else None,
                options=nv.MatmulOptions(**options),
            )  # fmt: skip
            plan.plan(epilog=epilog, epilog_inputs=inputs)
        except Exception as exc:  # a dtype or epilogue this cuBLASLt lacks: CuPy computes it
            _log.warning("cuBLASLt cannot plan %s (%s: %s); CuPy computes it instead",
                         key, type(exc).__name__, exc)  # fmt: skip
            return None
        return plan

    def plans(self) -> int:
        """How many products are planned (for ``python -m polynn info`` and the tests)."""
        return sum(plan is not None for plan in self._plans.values())


def _alignment(a: Any) -> int:
    """The largest power of two up to 256 that the address of ``a``'s data is a multiple of."""
    ptr = a.data.ptr
    return 256 if ptr % 256 == 0 else ptr & -ptr


def _c_contiguous(a: Any) -> bool:
    flags = getattr(a, "flags", None)
    return bool(flags is not None and flags.c_contiguous) and not math.prod(a.shape) == 0
