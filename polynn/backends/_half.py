"""ml-dtypes' ``bfloat16`` in the namespaces of NumPy and CuPy.

NumPy and CuPy compute in ml-dtypes' bfloat16, but two functions of their array API
namespaces do not take it: ``isdtype`` (``numpy.isdtype``, which CuPy's calls, knows NumPy's own
dtypes only, so array-api-compat's ``clip`` for CuPy fails on it) and ``clip`` (NumPy's promotes
a bfloat16 array clipped at Python floats to float32). ``with_bfloat16`` gives a namespace
whose two functions take it, computing with the library's own ``clip`` (one kernel on CuPy,
where array-api-compat's makes several passes).
"""

from __future__ import annotations

import types
from typing import Any

__all__ = ["bfloat16", "with_bfloat16"]

#: The kinds of ``isdtype`` that bfloat16 belongs to.
_KINDS = ("real floating", "numeric")


def bfloat16() -> Any:
    """ml-dtypes' bfloat16 where ml-dtypes is installed, else None."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes.bfloat16


def with_bfloat16(xp: Any, native: Any) -> types.ModuleType:
    """A copy of the namespace ``xp`` whose ``isdtype`` and ``clip`` take bfloat16 arrays;
    ``native`` is the library's own module (``numpy``, ``cupy``), whose ``clip`` is used."""
    ns = types.ModuleType(getattr(xp, "__name__", "namespace"), getattr(xp, "__doc__", None))
    ns.__dict__.update({k: v for k, v in vars(xp).items() if k not in ("__name__", "__doc__")})
    half = bfloat16()
    plain_isdtype, native_clip = xp.isdtype, native.clip

    def isdtype(dtype: Any, kind: Any) -> bool:
        if half is None or dtype != half:
            return plain_isdtype(dtype, kind)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        return any(k in _KINDS if isinstance(k, str) else k == half for k in kinds)

    def clip(x: Any, /, min: Any = None, max: Any = None) -> Any:  # noqa: A002 (the standard's)
        return native_clip(x, min, max).astype(x.dtype, copy=False)

    ns.isdtype, ns.clip = isdtype, clip
    return ns
