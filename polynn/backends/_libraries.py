"""One ``Backend`` subclass per array library, each imported lazily when first asked for."""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import array_api_compat
import numpy as np

from polynn.backends import _numpy_fast
from polynn.backends._core import Backend
from polynn.backends._half import bfloat16, with_bfloat16
from polynn.errors import BackendUnavailableError, PolynnValueError
from polynn.kernels import Kernels


def _import(module: str, backend: str, install: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {backend!r} needs {module.split('.')[0]}, which cannot be imported here "
            f"({exc}); install it with: {install}"
        ) from None


def _bad_device(backend: str, device: Any, expected: str) -> PolynnValueError:
    return PolynnValueError(f"backend {backend!r} has no device {device!r}; expected {expected}.")


class NumpyBackend(Backend):
    """NumPy on the CPU. NumPy 2 implements the array API standard in its main namespace."""

    half_install = {"bfloat16": 'install ml-dtypes with pip install "polynn[mixed]"'}

    def __init__(self, device: Any = None) -> None:
        if device not in (None, "cpu"):
            raise _bad_device("numpy", device, "'cpu' (or None)")
        super().__init__("numpy", _numpy_fast.namespace(), "cpu")

    def owns(self, x: Any) -> bool:
        # Exactly ndarray: np.matrix would compute with matrix semantics (``*`` a matrix
        # product) and a masked array would ignore its mask; both go through the host checks.
        return type(x) is np.ndarray

    def _make_kernels(self) -> Kernels:
        return _numpy_fast.NumpyKernels(self.xp, self.device)

    def _half(self, name: str) -> Any:
        half = np.float16 if name == "float16" else bfloat16()
        if half is not None:
            cost = {
                "float16": "without BLAS, tens of times slower than float32",
                "bfloat16": "through ml-dtypes, about twice as slow as float32",
            }[name]
            warnings.warn(
                f"mixed precision on NumPy computes in {name} {cost}: use it to test a "
                "model, and train it in mixed precision on a GPU.",
                UserWarning,
                stacklevel=4,
            )
        return half

    def context(self, matmul_precision: str = "highest") -> contextlib.AbstractContextManager:
        # A diverging run overflows; fit reports that as TrainingDivergedError, so NumPy's
        # overflow warnings before it would only be noise.
        return np.errstate(over="ignore", invalid="ignore")

    def _from_numpy(self, a: np.ndarray) -> Any:
        return a.copy()


class ArrayApiStrictBackend(Backend):
    """array-api-strict: the standard and nothing else, with extra virtual CPU devices."""

    def __init__(self, device: Any = None) -> None:
        xp = _import("array_api_strict", "array_api_strict", 'pip install "polynn[test]"')
        if device is None:
            device = xp.Device("CPU_DEVICE")
        elif isinstance(device, str):
            try:
                device = xp.Device(device)
            except ValueError:
                raise _bad_device(
                    "array_api_strict", device, "'CPU_DEVICE', 'device1' or 'device2'"
                ) from None
        elif not isinstance(device, xp.Device):
            raise _bad_device("array_api_strict", device, "a device name such as 'device1'")
        super().__init__("array_api_strict", xp, device)

    def owns(self, x: Any) -> bool:
        return isinstance(x, self.xp._array_object.Array)

    def context(self, matmul_precision: str = "highest") -> contextlib.AbstractContextManager:
        # It computes with NumPy: as on the numpy backend, overflow is reported by polynn
        # (a clear error, TrainingDivergedError), not by NumPy's warnings before it.
        return np.errstate(over="ignore", invalid="ignore")


class CupyBackend(Backend):
    """CuPy on a CUDA device. Arrays are created under ``cupy.cuda.Device(n)``."""

    half_install = {"bfloat16": 'install ml-dtypes with pip install "polynn[mixed]"'}
    compiler = "CUDA graphs"

    def __init__(self, device: Any = None) -> None:
        cupy = _import(
            "cupy", "cupy", 'pip install "polynn[cuda12]" (CUDA 12) or "polynn[cuda13]" (CUDA 13)'
        )
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDARuntimeError, missing driver, ...
            raise BackendUnavailableError(
                f"CuPy is installed but no CUDA device is usable ({type(exc).__name__}: {exc}); "
                "check the driver with nvidia-smi and CUDA_VISIBLE_DEVICES."
            ) from None
        if count == 0:
            raise BackendUnavailableError(
                "CuPy is installed but no CUDA device is visible; check nvidia-smi and "
                "CUDA_VISIBLE_DEVICES."
            )
        index = _cuda_index(device, cupy, count)
        self._cupy = cupy
        self._copy_streams = threading.local()
        self._linalg = _import("cupy._core._routines_linalg", "cupy", "pip install -U cupy")
        xp = _import("array_api_compat.cupy", "cupy", 'pip install "polynn[cuda12]"')
        super().__init__("cupy", with_bfloat16(xp, cupy), cupy.cuda.Device(index))

    def owns(self, x: Any) -> bool:
        return isinstance(x, self._cupy.ndarray)

    def _half(self, name: str) -> Any:
        if name == "float16":
            return self._cupy.float16
        half = bfloat16()
        try:  # CuPy takes ml-dtypes' bfloat16 from version 14 on
            with self.device:
                self._cupy.zeros(1, dtype=half)
        except Exception:
            return None
        return half

    def _make_kernels(self) -> Kernels:
        from polynn.backends._cupy_kernels import CupyKernels

        return CupyKernels(self.xp, self.device, self._cupy, self._linalg)

    def _from_numpy(self, a: np.ndarray) -> Any:
        return self._cupy.asarray(a)  # on the current device: from_numpy enters context()

    def _copy_in(self, a: np.ndarray) -> tuple[Any, Any]:
        """Copy ``a`` through pinned host memory on a stream of this thread's own, so that
        the copy overlaps the main stream's kernels; the returned function waits for the copy
        (by then normally done) and only then releases the pinned buffer to CuPy's pool. The
        array is allocated on the null stream, where it is used: its memory then goes back to
        that stream's pool, which a later copy cannot take before the kernels reading it ran;
        the copy waits for the null stream's work queued so far (what used that memory)."""
        cupy = self._cupy
        with self.device:
            pinned = cupy.cuda.alloc_pinned_memory(a.nbytes)
            staged = np.frombuffer(pinned, a.dtype, a.size).reshape(a.shape)
            staged[...] = a
            stream = getattr(self._copy_streams, "stream", None)
            if stream is None:  # one per prefetching thread, made once
                stream = self._copy_streams.stream = cupy.cuda.Stream(non_blocking=True)
            x = cupy.empty(a.shape, a.dtype)  # on the null stream, where it is read
            stream.wait_event(cupy.cuda.Stream.null.record())
            x.set(staged, stream=stream)
            done = stream.record()

        def ready() -> None:
            nonlocal pinned
            done.synchronize()
            pinned = None

        return x, ready

    def device_of(self, x: Any) -> Any:
        return x.device

    @contextlib.contextmanager
    def context(self, matmul_precision: str = "highest") -> Iterator[None]:
        # CuPy takes the compute type of float32 matmuls from one process-wide setting (which
        # CUPY_TF32=1 changes): set it either way, and put back what was there. TF32 needs
        # compute capability 8.0 (Ampere) or newer; older cards keep float32. The setting is
        # shared by all threads: models of different precisions in parallel threads race.
        linalg = self._linalg
        wanted = linalg.COMPUTE_TYPE_DEFAULT
        if matmul_precision != "highest" and int(self.device.compute_capability) >= 80:
            wanted = linalg.COMPUTE_TYPE_TF32
        with self.device:
            old = linalg.get_compute_type(np.float32)
            linalg.set_compute_type(np.float32, wanted)
            try:
                yield
            finally:
                linalg.set_compute_type(np.float32, old)

    def synchronize(self) -> None:
        self.device.synchronize()

    def compile_reason(self) -> str | None:
        if self.kernels.gemm is None:
            return (
                "a CUDA graph needs nvmath-python for its matrix products (CuPy's own cuBLAS "
                'calls cannot be captured): pip install "polynn[cuda12]" or "polynn[cuda13]"'
            )
        return None

    def compile_step(self, step: Any, slots: Any, objects: Any, prepare: Any) -> Any:
        from polynn.backends._compiled import GraphStep

        return GraphStep(self._cupy, self.kernels.gemm, step, slots, prepare)


def _cuda_index(device: Any, cupy: Any, count: int) -> int:
    """The CUDA device number meant by None, an int, "cuda", "cuda:N" or a cupy Device."""
    if device is None or device == "cuda":
        index = cupy.cuda.runtime.getDevice()
    elif isinstance(device, cupy.cuda.Device):
        index = device.id
    elif isinstance(device, int) and not isinstance(device, bool):
        index = device
    elif isinstance(device, str) and re.fullmatch(r"(cuda:)?\d+", device):
        index = int(device.rsplit(":", 1)[-1])
    else:
        raise _bad_device("cupy", device, "a device number such as 0, or 'cuda:0'")
    if not 0 <= index < count:
        raise _bad_device("cupy", device, f"a device number from 0 to {count - 1}")
    return index


class TorchBackend(Backend):
    """PyTorch tensors on the CPU or, with ``device="cuda"`` / ``"cuda:N"``, on a GPU."""

    compiler = "CUDA graphs"

    def __init__(self, device: Any = None) -> None:
        torch = _import("torch", "torch", "pip install torch")
        xp = _import("array_api_compat.torch", "torch", "pip install array-api-compat")
        self._torch = torch
        if isinstance(device, int) and not isinstance(device, bool):
            count = torch.cuda.device_count()
            if not 0 <= device < count:  # torch.device(int) would wrap it to 8 bits
                raise _bad_device("torch", device, f"a CUDA device number below {count}")
        try:
            device = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError):
            raise _bad_device("torch", device, "'cpu', 'cuda' or 'cuda:N'") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"backend 'torch' on {device}: PyTorch sees no usable CUDA device "
                    f"(torch {torch.__version__}, CUDA build: {torch.version.cuda})."
                )
            index = torch.cuda.current_device() if device.index is None else device.index
            if index >= torch.cuda.device_count():
                raise _bad_device(
                    "torch", str(device), f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
                )
            device = torch.device("cuda", index)
        elif device.type != "cpu":
            raise _bad_device("torch", str(device), "'cpu', 'cuda' or 'cuda:N'")
        super().__init__("torch", xp, device)

    def owns(self, x: Any) -> bool:
        return isinstance(x, self._torch.Tensor)

    def _half(self, name: str) -> Any:
        return getattr(self._torch, name)

    def _from_numpy(self, a: np.ndarray) -> Any:
        with warnings.catch_warnings():  # a read-only view (a file's array) is copied at once
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return self._torch.from_numpy(a).to(self.device, copy=True)

    @contextlib.contextmanager
    def context(self, matmul_precision: str = "highest") -> Iterator[None]:
        torch = self._torch
        old = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(matmul_precision)
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(old)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def compile_reason(self) -> str | None:
        if self.device.type != "cuda":
            return "PyTorch compiles a step as a CUDA graph on a CUDA device only"
        return None

    def compile_step(self, step: Any, slots: Any, objects: Any, prepare: Any) -> Any:
        from polynn.backends._compiled import TorchGraphStep

        return TorchGraphStep(self._torch, step, slots, prepare)


class JaxBackend(Backend):
    """JAX arrays on one JAX device: by default JAX's own default device (a GPU where JAX
    has one), or ``device="cpu"``, ``"cuda"`` / ``"gpu"``, ``"cuda:N"`` or a ``jax.Device``.
    JAX arrays are immutable: parameter updates rebind new arrays instead of writing in
    place."""

    inplace = False
    compiler = "jax.jit"
    compiles_by_default = True
    PLATFORMS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}

    def __init__(self, device: Any = None) -> None:
        jax = _import("jax", "jax", "pip install jax")
        self._jax = jax
        if device is None:  # JAX's default device (which its config may name by platform)
            device = jax.config.jax_default_device or jax.devices()[0]
        if isinstance(device, str):
            device = self._named_device(jax, device)
        elif not isinstance(device, jax.Device):
            raise _bad_device("jax", device, "a jax.Device or a name such as 'cpu' or 'cuda:0'")
        super().__init__("jax", jax.numpy, device)

    def _named_device(self, jax: Any, name: str) -> Any:
        match = re.fullmatch(r"([a-z]+)(?::(\d+))?", name)
        platform = self.PLATFORMS.get(match.group(1)) if match else None
        if platform is None:
            raise _bad_device("jax", name, "'cpu', 'cuda', 'gpu', 'cuda:N' or a jax.Device")
        try:
            devices = jax.devices(platform)
        except RuntimeError:
            here = sorted({d.platform for d in jax.devices()} | {"cpu"})
            raise _bad_device(
                "jax",
                name,
                f"a platform JAX has here ({', '.join(here)}); for NVIDIA GPUs "
                'install JAX with CUDA: pip install "jax[cuda12]"',
            ) from None
        index = int(match.group(2) or 0)
        if index >= len(devices):
            raise _bad_device("jax", name, f"{platform}:0 to {platform}:{len(devices) - 1}")
        return devices[index]

    def owns(self, x: Any) -> bool:
        return isinstance(x, self._jax.Array)

    def _make_kernels(self) -> Kernels:
        from polynn.backends._jax_kernels import JaxKernels

        return JaxKernels(self.xp, self.device)

    def _from_numpy(self, a: np.ndarray) -> Any:
        return self._jax.device_put(a, self.device)

    def dtype(self, name: Any) -> Any:
        dtype = super().dtype(name)
        if dtype == self.xp.float64 and not self._jax.config.jax_enable_x64:
            raise PolynnValueError(
                "float64 on the jax backend needs 64-bit mode: call "
                "jax.config.update('jax_enable_x64', True) before building the model."
            )
        return dtype

    def context(self, matmul_precision: str = "highest") -> contextlib.AbstractContextManager:
        # JAX's GPU default for float32 matmuls may use TF32; "highest" asks for float32.
        precision = "highest" if matmul_precision == "highest" else "tensorfloat32"
        return self._jax.default_matmul_precision(precision)

    def synchronize(self) -> None:
        self.xp.zeros((), device=self.device).block_until_ready()

    def floats(self, values: Any) -> list[float]:
        # jax.numpy.stack of many 0-d arrays costs tens of microseconds per array.
        return [float(v) for v in self._jax.device_get(list(values))]

    def batches(self, arrays: Any, spans: Any, order: Any = None) -> list[tuple[Any, ...]]:
        """One compiled call cuts an epoch's batches (and shuffles the rows first), where
        slicing each batch outside it would cost a dispatch per array and batch."""
        cut = self._slicer(tuple(spans), order is not None)
        return cut(tuple(arrays), order)

    @functools.cache  # noqa: B019 (a backend lives as long as the process)
    def _slicer(self, spans: tuple[tuple[int, int], ...], shuffled: bool) -> Any:
        jnp = self.xp

        def cut(arrays: tuple[Any, ...], order: Any) -> list[tuple[Any, ...]]:
            if shuffled:
                arrays = tuple(jnp.take(a, order, axis=0) for a in arrays)
            return [tuple(a[start:stop] for a in arrays) for start, stop in spans]

        return self._jax.jit(cut)

    def compile_reason(self) -> str | None:
        return None

    def compile_forward(self, run: Any, slots: Any, objects: Any) -> Any:
        from polynn.backends._compiled import JaxForward

        return JaxForward(self._jax, run, slots, objects)

    def compile_step(self, step: Any, slots: Any, objects: Any, prepare: Any) -> Any:
        from polynn.backends._compiled import JaxStep

        return JaxStep(self._jax, step, slots, objects, prepare)


class NamespaceBackend(Backend):
    """Any other namespace that implements the array API standard, used as it is."""

    def __init__(self, xp: Any, device: Any = None) -> None:
        if device is None:
            device = xp.__array_namespace_info__().default_device()
        super().__init__(getattr(xp, "__name__", type(xp).__name__), xp, device)

    def owns(self, x: Any) -> bool:
        try:
            return array_api_compat.array_namespace(x) is self.xp
        except TypeError:
            return False


def registered_name(xp: Any) -> str | None:
    """The registered backend for a namespace module (NumPy's, CuPy's, ...), if any."""
    if not isinstance(getattr(xp, "__name__", None), str):
        return None
    checks = {
        "numpy": array_api_compat.is_numpy_namespace,
        "array_api_strict": array_api_compat.is_array_api_strict_namespace,
        "cupy": array_api_compat.is_cupy_namespace,
        "torch": array_api_compat.is_torch_namespace,
        "jax": array_api_compat.is_jax_namespace,
    }
    return next((name for name, check in checks.items() if check(xp)), None)


LIBRARIES: dict[str, type[Backend]] = {
    "numpy": NumpyBackend,
    "array_api_strict": ArrayApiStrictBackend,
    "cupy": CupyBackend,
    "torch": TorchBackend,
    "jax": JaxBackend,
}
