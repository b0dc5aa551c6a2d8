"""The ``Backend`` object: one array library, one device, and the moves in and out of it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat
import numpy as np

from polynn.backends.host import to_numpy
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.kernels import Kernels

DTYPES = ("float32", "float64")
#: Mixed-precision policies (Keras's names): parameters, optimizer state and the loss stay in
#: float32, matrix products and activations run in the half type named here.
POLICIES = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
#: Which backends have each half type, for the error on one that has not.
HALF_BACKENDS = {
    "float16": "numpy, cupy, torch, jax",
    "bfloat16": "numpy (with ml-dtypes installed), cupy (with ml-dtypes), torch, jax",
}
#: ``"highest"``: float32 matrix products in full float32. ``"high"``: the library may use
#: TF32 tensor cores on CUDA (about 10 mantissa bits in the products, float32 sums).
MATMUL_PRECISIONS = ("highest", "high")


class Backend:
    """An array namespace ``xp`` together with the device every array of a model lives on.

    The network code receives ``backend.xp`` and ``backend.device`` and uses only functions of
    the array API standard; everything that needs a concrete library (moving host data in,
    copying results out, entering a device context) is a method here.
    """

    #: Whether the library's arrays can be updated in place (JAX's cannot).
    inplace = True
    #: What installs a half type the library lacks here (NumPy's and CuPy's bfloat16).
    half_install: dict[str, str] = {}
    #: What compiles a training step on this backend ("jax.jit", "CUDA graphs"), if anything.
    compiler: str | None = None
    #: Whether ``fit(compile="auto")`` compiles here (else only ``compile=True`` does): the
    #: CUDA graphs of CuPy and PyTorch are opt-in until a GPU run of ``gpu_check.sh`` has
    #: checked them against eager steps.
    compiles_by_default = False

    def __init__(self, name: str, xp: Any, device: Any) -> None:
        self.name = name
        self.xp = xp
        self.device = device

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Backend):
            return NotImplemented
        return (self.name, str(self.device)) == (other.name, str(other.device))

    def __hash__(self) -> int:
        return hash((self.name, str(self.device)))

    @functools.cached_property
    def kernels(self) -> Kernels:
        """The primitives of a training step on this backend (see ``polynn.kernels``): the
        array API defaults, or a library's faster versions of some of them."""
        return self._make_kernels()

    # -- what each library overrides -------------------------------------------------------
    def _make_kernels(self) -> Kernels:
        return Kernels(self.xp, self.device)

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend's library."""
        raise NotImplementedError

    def _from_numpy(self, a: np.ndarray) -> Any:
        """Copy a host NumPy array onto this backend's device (never a view of ``a``)."""
        return self.xp.asarray(a, device=self.device, copy=True)

    def context(self, matmul_precision: str = "highest") -> contextlib.AbstractContextManager:
        """A context manager that makes this backend's device the current one and, inside
        it, float32 matrix products run at ``matmul_precision`` (one of
        ``MATMUL_PRECISIONS``; where a library has no such switch it is ignored). Whatever
        it changes is restored on exit."""
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        """Wait until queued device work has finished (a no-op on the CPU)."""

    def batches(
        self, arrays: Sequence[Any], spans: Sequence[tuple[int, int]], order: Any = None
    ) -> list[tuple[Any, ...]]:
        """The rows ``start:stop`` of each of ``arrays`` for each span, after taking their
        rows in ``order`` (an integer array on the device) if given."""
        if order is not None:
            arrays = [self.xp.take(a, order, axis=0) for a in arrays]
        return [tuple(a[start:stop, ...] for a in arrays) for start, stop in spans]

    def compile_reason(self) -> str | None:
        """Why this backend compiles no training step, or None where it can
        (``polynn.compiled``)."""
        return f"backend {self.name!r} has nothing that compiles a step"

    def compile_forward(
        self, run: Callable[[Any], Any], slots: Callable[[], list[Any]], objects: Sequence[Any]
    ) -> Callable[[Any], Any] | None:
        """``run`` (an inference pass of a batch) compiled, or None where this backend runs
        inference passes eagerly. ``slots()`` lists the arrays it reads (parameters, buffers)."""
        return None

    def compile_step(
        self,
        step: Callable[..., tuple[Any, Any]],
        slots: Callable[[], list[Any]],
        objects: Sequence[Any],
        prepare: Callable[[], None],
    ) -> Callable[..., tuple[Any, Any]]:
        """``step`` compiled (``polynn.backends._compiled``): a function of the same batch
        arguments that calls ``prepare`` (the host's part of a step) first. ``slots()``
        lists the arrays a step changes; ``objects``, those whose attributes it sets."""
        raise NotImplementedError(self.compile_reason())

    # -- shared by all ----------------------------------------------------------------------
    def device_of(self, x: Any) -> Any:
        return array_api_compat.device(x)

    def dtype(self, name: Any) -> Any:
        """The namespace's floating dtype of parameters for ``name`` ("float32", "float64", or
        a mixed-precision policy, whose parameters are float32)."""
        name = dtype_name(name)
        return getattr(self.xp, "float32" if name in POLICIES else name)

    def compute_dtype(self, name: Any) -> Any:
        """The dtype activations are computed in: the half type of a mixed-precision policy,
        else ``dtype(name)``. A half type this backend lacks is a ``PolynnValueError``."""
        name = dtype_name(name)
        if name not in POLICIES:
            return self.dtype(name)
        half = self._half(POLICIES[name])
        if half is None:
            fix = self.half_install.get(POLICIES[name])
            fix = f" here: {fix}, or use" if fix else "; use one of the"
            raise PolynnValueError(
                f"dtype={name!r} computes in {POLICIES[name]}, which backend {self.name!r} does "
                f"not have{fix} backends with it: {HALF_BACKENDS[POLICIES[name]]}."
            )
        return half

    def _half(self, name: str) -> Any:
        """The namespace's ``float16`` or ``bfloat16``, or None where it has none."""
        return getattr(self.xp, name, None)

    def from_numpy(self, a: Any, dtype: Any = None, *, private: bool = False) -> Any:
        """Copy host data (a NumPy array or anything ``numpy.asarray`` takes) onto the device.

        The result never shares memory with ``a``: training updates parameters in place.
        ``private=True`` hands ``a`` over instead (an array nobody else holds, such as one
        just read from a file), which NumPy then keeps as it is, without a copy.
        """
        source = np.asarray(a)
        a = source if dtype is None else source.astype(dtype_name(dtype), copy=False)
        a = np.ascontiguousarray(a)
        # An array made here (a cast, a contiguous copy) is this call's own, as is one handed
        # over: a backend whose arrays are NumPy's keeps it.
        made_here = a is not source and not np.may_share_memory(a, source)
        if (private or made_here) and self.owns(a):
            return a
        with self.context():
            return self._from_numpy(a)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A NumPy copy of ``x`` (an array of this backend); never a view of it."""
        return to_numpy(x)

    def floats(self, values: Sequence[Any]) -> list[float]:
        """Python floats from 0-d arrays of this backend, in one transfer."""
        return to_numpy(self.xp.stack(list(values))).astype(np.float64).tolist()

    def stage(self, data: Any, dtype: Any = None, name: str = "X") -> tuple[Any, Any]:
        """Start moving host data to the device, from a worker thread that prefetches batches
        (``polynn.streaming``): ``data`` is checked as ``asarray`` checks host data, cast to
        ``dtype`` if given, and its copy started without touching process-wide settings
        (``context`` is for the main thread). Returns the array and a function to call before
        using it. An array of this (or another) library passes through unchanged, for
        ``asarray`` to check in the main thread."""
        if self.owns(data) or foreign_library(data) is not None:
            return data, _ready
        a = check_host_array(data, name)
        if dtype is not None:
            a = cast_host_array(a, dtype_name(self.dtype(dtype)), name)
        return self._copy_in(np.ascontiguousarray(a))

    def _copy_in(self, a: np.ndarray) -> tuple[Any, Any]:
        """``stage``'s copy: synchronous by default (the libraries take the device from the
        call, not from thread state); CuPy's is asynchronous, on a stream of its own."""
        return self._from_numpy(a), _ready

    def adopt(self, x: Any) -> Any:
        """A copy, on this backend and device, of an array of any backend: through DLPack
        where both sides support it, else through the host."""
        try:
            with self.context():
                y = self.xp.from_dlpack(x)
                if str(self.device_of(y)) == str(self.device):
                    return self.xp.asarray(y, copy=True)
        except Exception:  # no DLPack between these two libraries or devices
            pass
        return self.from_numpy(to_numpy(x))

    def asarray(
        self, data: Any, *, dtype: Any = None, name: str = "X", private: bool = False
    ) -> Any:
        """Check user data and return it as an array of this backend.

        Host data (lists, NumPy arrays, scalars) is copied onto the device. An array of this
        backend must already be on its device. An array of another library is refused, with
        the way to move it. Non-numeric, complex or non-finite data is refused. ``dtype=None``
        keeps the data's own numeric dtype (used for integer class labels). ``private``: see
        ``from_numpy``.
        """
        if self.owns(data):
            device = self.device_of(data)
            if str(device) != str(self.device):
                raise PolynnValueError(
                    f"{name} is on device {device!r}, but the model lives on {self.device!r} "
                    f"(backend {self.name!r}); move the data there first, or move the model "
                    f"with net.to({self.name!r}, device=...)."
                )
            return self._check_device_array(data, dtype, name)
        library = foreign_library(data)
        if library is not None:
            raise PolynnTypeError(
                f"{name} is an array of {library}, but the model runs on backend {self.name!r}. "
                f"polynn does not move arrays between libraries behind your back: pass "
                f"pn.to_numpy({name}) to copy it through the host, or move the model with "
                f"net.to(...)."
            )
        a = check_host_array(data, name)
        if dtype is not None:
            cast = cast_host_array(a, dtype_name(self.dtype(dtype)), name)
            private = private or (cast is not a and not np.may_share_memory(cast, a))
            a = cast  # a cast made here is this call's own: NumPy keeps it without a copy
        return self.from_numpy(a, private=private)

    def _check_device_array(self, x: Any, dtype: Any, name: str) -> Any:
        xp = self.xp
        kind_ok = any(xp.isdtype(x.dtype, k) for k in ("real floating", "integral", "bool"))
        if not kind_ok:
            raise PolynnTypeError(
                f"{name} must hold real numbers; got an array of {x.dtype}.{_labels_hint(x, name)}"
            )
        if x.ndim == 0 or x.shape[0] == 0:
            raise PolynnValueError(
                f"{name} is empty (shape {tuple(x.shape)}); expected rows of data."
            )
        floating = xp.isdtype(x.dtype, "real floating")
        if floating and not bool(xp.all(xp.isfinite(x))):
            raise PolynnValueError(f"{name} contains NaN or infinite values; clean the data first.")
        if dtype is not None:
            target = self.dtype(dtype)
            if x.dtype != target:
                original = x
                with self.context():  # NumPy's: no overflow warning, the error below says it
                    x = xp.astype(x, target)
                if not bool(xp.all(xp.isfinite(x))):
                    where, value = _first_beyond(xp, x, original)
                    raise PolynnValueError(
                        f"{name} holds {value:g} (at index {where}), beyond "
                        f"{dtype_name(target)}'s range: scale the data or use dtype='float64'."
                    )
        elif xp.isdtype(x.dtype, "bool"):
            x = xp.astype(x, xp.int64)  # as host data: False/True mean 0/1
        return x


def check_matmul_precision(value: Any) -> str:
    """``value`` if it is one of ``MATMUL_PRECISIONS``, else a ``PolynnValueError``."""
    if value not in MATMUL_PRECISIONS:
        raise PolynnValueError(
            f"matmul_precision must be one of {list(MATMUL_PRECISIONS)}; got {value!r}."
        )
    return value


def dtype_name(dtype: Any) -> str:
    """Normalise a dtype given as a string, a NumPy dtype or a namespace dtype to its name."""
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype).rsplit(".", 1)[-1]
    if name not in DTYPES and name not in POLICIES:
        raise PolynnValueError(
            f"unknown dtype {dtype!r}; polynn trains in one of {list(DTYPES)}, or with one of "
            f"the mixed-precision policies {list(POLICIES)}."
        )
    return name


def _labels_hint(a: Any, name: str) -> str:
    """For targets of text or objects (class names): how to encode them."""
    if name != "y" or getattr(getattr(a, "dtype", None), "kind", "") not in "USO":
        return ""
    return (
        " If y holds class names, encode them as integers 0..K-1 first, e.g. "
        "classes, y = np.unique(y, return_inverse=True) (classes[k] names class k), or use "
        "polynn.sklearn.MLPClassifier, which takes any labels."
    )


def _first_beyond(xp: Any, cast: Any, original: Any) -> tuple[tuple[int, ...], float]:
    """The index of the first element that ``cast`` (``original`` in a narrower dtype) no
    longer holds as a finite number, and its value: read from the device for an error."""
    bad = xp.reshape(xp.astype(xp.logical_not(xp.isfinite(cast)), xp.int32), (-1,))
    flat = int(xp.argmax(bad))
    where = tuple(int(i) for i in np.unravel_index(flat, tuple(original.shape)))
    return where, float(xp.reshape(original, (-1,))[flat])


def _ready() -> None:
    """The copy is complete: nothing to wait for."""


def cast_host_array(a: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """``a`` in ``dtype``; finite values that do not fit the dtype are refused, naming one."""
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, by value
        cast = a.astype(dtype, copy=False)
    where = _first_non_finite(cast)
    if where is not None:
        raise PolynnValueError(
            f"{name} holds {a[where]:g} (at index {where}), beyond {dtype}'s range: scale the "
            "data or use dtype='float64'."
        )
    return cast


def _first_non_finite(a: np.ndarray) -> tuple[int, ...] | None:
    """The index of the first NaN or infinity in a float array, or None."""
    if a.dtype.kind != "f" or np.isfinite(a).all():
        return None
    return tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])


def foreign_library(x: Any) -> str | None:
    """The name of the array library ``x`` belongs to, if it is an array but not NumPy's."""
    checks = (
        ("cupy", array_api_compat.is_cupy_array),
        ("torch", array_api_compat.is_torch_array),
        ("jax", array_api_compat.is_jax_array),
    )
    for library, check in checks:
        if check(x):
            return library
    if hasattr(x, "__array_namespace__") and not isinstance(x, np.ndarray):
        return type(x).__module__.split(".")[0]
    return None


def check_host_array(data: Any, name: str) -> np.ndarray:
    """``data`` as a plain NumPy array of real numbers with at least one row, all finite.

    ``np.matrix``, memory maps and other ndarray subclasses become plain arrays; a masked
    array with masked entries is refused (polynn would otherwise use the values under the mask).
    """
    if isinstance(data, np.ma.MaskedArray) and np.ma.getmaskarray(data).any():
        count = int(np.ma.getmaskarray(data).sum())
        raise PolynnValueError(
            f"{name} is a masked array with {count} masked entries; polynn needs complete "
            f"data: fill them ({name}.filled(value)) or drop those rows first."
        )
    try:
        a = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise PolynnTypeError(f"{name} could not be read as a numeric array: {exc}") from None
    if a.dtype == bool:
        a = a.astype(np.int64)
    if a.dtype.kind not in "iuf":
        raise PolynnTypeError(
            f"{name} must hold real numbers; got data of dtype {a.dtype} "
            f"(for example {a.flat[0]!r}).{_labels_hint(a, name)}"
            if a.size
            else f"{name} must hold real numbers."
        )
    if a.ndim == 0 or a.shape[0] == 0:
        raise PolynnValueError(f"{name} is empty (shape {a.shape}); expected rows of data.")
    where = _first_non_finite(a)
    if where is not None:
        raise PolynnValueError(
            f"{name} contains NaN or infinite values (first at index {where}); "
            "clean the data first."
        )
    return a
