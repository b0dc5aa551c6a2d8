"""NumPy's own namespace, with two reductions that skip NumPy's Python-level dispatch.

NumPy 2 implements the array API standard in its main namespace. ``np.sum`` and ``np.max``
route through a generic Python wrapper that costs about 1.5-3 us per call, as much as the
reduction itself on the small arrays of a tiny network; the ufunc reductions below compute
the same results without it. Everything else is NumPy's, unchanged.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np


def _sum(x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    if dtype is None and x.dtype.kind == "f":
        return np.add.reduce(x, axis=axis, keepdims=keepdims)
    return np.sum(x, axis=axis, dtype=dtype, keepdims=keepdims)


def _max(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    return np.maximum.reduce(x, axis=axis, keepdims=keepdims)


def namespace() -> types.ModuleType:
    """A module object holding NumPy's functions, with ``sum`` and ``max`` replaced."""
    xp = types.ModuleType("polynn.backends.numpy_fast", __doc__)
    xp.__dict__.update({k: v for k, v in vars(np).items() if not k.startswith("__")})
    xp.__array_api_version__ = np.__array_api_version__
    xp.sum = _sum
    xp.max = _max
    return xp
