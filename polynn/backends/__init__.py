"""Backends: which array library and device a model runs on.

This package is the only part of polynn that imports NumPy, CuPy or array-api-compat; the
network code receives ``backend.xp`` (an array API namespace) and ``backend.device``.

>>> import polynn as pn
>>> pn.backends.get("numpy").name
'numpy'
"""

from __future__ import annotations

import logging
import os
from typing import Any

import array_api_compat

from polynn._checks import unknown_name
from polynn.backends._core import (
    DTYPES,
    MATMUL_PRECISIONS,
    POLICIES,
    Backend,
    check_matmul_precision,
    dtype_name,
)
from polynn.backends._libraries import LIBRARIES, NamespaceBackend, registered_name
from polynn.backends.host import to_numpy
from polynn.errors import BackendUnavailableError, PolynnTypeError, PolynnValueError

__all__ = [
    "Backend",
    "DTYPES",
    "MATMUL_PRECISIONS",
    "POLICIES",
    "available",
    "backend_of",
    "check_matmul_precision",
    "dtype_name",
    "get",
    "names",
    "to_numpy",
]

ENV_VAR = "POLYNN_BACKEND"
#: What people also call the backends (for "did you mean" in the error).
ALIASES = {"gpu": "cupy", "cuda": "cupy", "cpu": "numpy", "np": "numpy", "pytorch": "torch"}
DEFAULT = "numpy"
_log = logging.getLogger("polynn")


def names() -> list[str]:
    """Every backend name polynn knows, usable here or not, plus ``"auto"``."""
    return [*LIBRARIES, "auto"]


def available() -> list[str]:
    """The backends usable on this machine, e.g. ``["numpy", "array_api_strict"]``."""
    usable = []
    for name in LIBRARIES:
        try:
            get(name)
        except BackendUnavailableError:
            continue
        usable.append(name)
    return usable


def get(name: Any = None, device: Any = None) -> Backend:
    """Resolve a backend.

    ``name`` is a registered name, ``"auto"`` (CuPy when a CUDA device is usable, else
    NumPy), or a ``Backend``. ``None`` reads the ``POLYNN_BACKEND`` environment variable,
    then falls back to NumPy. ``device`` picks the device where the library has several.
    """
    try:
        hash(device)
    except TypeError:
        raise PolynnTypeError(
            f"device must be a device name, number or device object; got {device!r}."
        ) from None
    if isinstance(name, Backend):
        return name if device is None else get(name.name, device)
    source = ""
    if name is None:
        name = os.environ.get(ENV_VAR) or DEFAULT
        if os.environ.get(ENV_VAR):
            source = f" (from the {ENV_VAR} environment variable)"
    if not isinstance(name, str):
        known = registered_name(name)
        if known is not None:
            return get(known, device)
        if not hasattr(name, "__array_namespace_info__"):
            raise PolynnTypeError(
                f"backend must be a name such as 'numpy' or an array API namespace; "
                f"got {type(name).__name__}."
            )
        return NamespaceBackend(name, device)
    if name == "auto":
        try:
            chosen = get("cupy", device)
        except BackendUnavailableError as exc:
            _log.info("backend='auto' chose numpy: %s", exc)
            return get("numpy")
        _log.info("backend='auto' chose cupy on %s", chosen.device)
        return chosen
    if name not in LIBRARIES:
        message = unknown_name("backend", name, names(), ALIASES)
        raise PolynnValueError(message.rstrip(".") + source + ".")
    return _cached(name, device)


def backend_of(x: Any) -> Backend:
    """The backend of array ``x``: its library, on its device (``backend_of(y_pred).xp`` is
    the namespace to compute with, in a metric or loss of your own)."""
    try:
        xp = array_api_compat.array_namespace(x)
    except TypeError:
        raise PolynnTypeError(
            f"expected an array of a backend polynn knows (NumPy, CuPy, PyTorch, JAX, ...); got "
            f"{type(x).__name__}."
        ) from None
    name, device = registered_name(xp), array_api_compat.device(x)
    if name is None:
        return NamespaceBackend(xp, device)
    if name == "numpy":
        return get("numpy")
    return get(name, getattr(device, "id", device) if name == "cupy" else device)


_resolved: dict[tuple[str, Any], Backend | BackendUnavailableError] = {}


def _cached(name: str, device: Any) -> Backend:
    """Build each (library, device) once; a library that cannot run is probed once too."""
    key = (name, device)
    if key not in _resolved:
        try:
            _resolved[key] = LIBRARIES[name](device)
        except BackendUnavailableError as exc:
            _resolved[key] = exc
    result = _resolved[key]
    if isinstance(result, BackendUnavailableError):
        raise BackendUnavailableError(*result.args)
    return result
