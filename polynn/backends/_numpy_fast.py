"""NumPy's own namespace, with three functions that skip NumPy's Python-level dispatch.

NumPy 2 implements the array API standard in its main namespace. ``np.sum`` and ``np.max``
route through a generic Python wrapper that costs about 1.5-3 us per call, as much as the
reduction itself on the small arrays of a tiny network. ``np.add.reduce`` and
``np.maximum.reduce`` compute the same results in C. The wrappers below give them the
standard's signature (``axis=None`` by default, where the ufunc's is 0) and pass everything
on by position: a ``functools.partial`` would copy its keyword arguments into a new dict at
every call that names ``axis``. ``np.astype`` is likewise a Python function around the
``ndarray.astype`` method. Everything else is NumPy's, unchanged.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from polynn.backends._half import with_bfloat16
from polynn.hashing import step_keys
from polynn.kernels import Kernels

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


class NumpyKernels(Kernels):
    """The array API defaults, with the bias gradient as one ``np.add.reduce`` call: a
    Python frame less per Dense layer and step than ``xp.sum(grad, axis=0)`` through the
    seam (1.3 k fewer instructions per XOR step, ``benchmarks/instructions.py``); and a
    Dropout's keys mixed from its step on the host, where NumPy's "device" is (reading the
    step costs nothing; a few dozen operations on 0-d arrays would)."""

    name = "array API, NumPy bias sum"
    bias_grad = staticmethod(_bias_grad)

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
