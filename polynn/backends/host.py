"""Host-side work that is NumPy by nature: random draws, copies to NumPy, ``.npz`` files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import array_api_compat
import numpy as np

from polynn.errors import (
    PolynnFileError,
    PolynnFileNotFoundError,
    PolynnTypeError,
    PolynnValueError,
)

__all__ = [
    "INITIALIZERS",
    "HostRNG",
    "log_softmax",
    "mean_one",
    "read_model",
    "softmax",
    "to_numpy",
    "weights_to_come",
    "write_bytes",
    "write_model",
]


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of an array of any backend (NumPy, CuPy, array-api-strict, ...)."""
    if isinstance(x, np.ndarray):
        return np.array(x)  # a plain ndarray copy, also of np.matrix and other subclasses
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        import torch  # already imported: x is one of its tensors

        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:  # NumPy has none: ml-dtypes' bfloat16, else float32
            try:
                import ml_dtypes
            except ImportError:
                return x.float().numpy()
            return x.view(torch.int16).numpy().copy().view(ml_dtypes.bfloat16)
        return x.numpy().copy()
    if type(x).__module__.startswith("array_api_strict"):
        cpu = type(x.device)("CPU_DEVICE")
        if x.device != cpu:
            x = x.to_device(cpu)  # its other (virtual) devices refuse conversion to NumPy
    try:
        return np.array(x, copy=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        try:
            return np.from_dlpack(x).copy()
        except Exception:
            raise PolynnTypeError(f"cannot copy a {type(x).__name__} to NumPy: {exc}") from None


#: The initialisers by name (``Dense(..., init=...)``, ``Layer.add_param``): PyTorch's
#: definitions (the normal ones are not truncated), with the fans of the array's shape.
INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_normal",
    "orthogonal",
    "zeros",
    "ones",
)


class HostRNG:
    """Every random draw of a model, made on the host from ``numpy.random.default_rng(seed)``.

    Drawing on the host and then moving the result is what gives one seed identical initial
    weights and batch orders on every backend.
    """

    def __init__(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)

    def _uniform(self, limit: float, shape: tuple[int, ...]) -> np.ndarray:
        return self._rng.uniform(-limit, limit, size=shape)

    def _normal(self, std: float, shape: tuple[int, ...]) -> np.ndarray:
        return self._rng.normal(0.0, std, size=shape)

    def _orthogonal(self, shape: tuple[int, ...]) -> np.ndarray:
        """The array as a (rows, shape[-1]) matrix with orthonormal columns (or rows, if it
        is wide): the Q of a Gaussian matrix's QR decomposition, its signs fixed by R's
        diagonal so that the draw is uniform."""
        rows = math.prod(shape[:-1])
        a = self._rng.normal(size=(rows, shape[-1]))
        wide = rows < shape[-1]
        q, r = np.linalg.qr(a.T if wide else a)
        q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
        return (q.T if wide else q).reshape(shape)

    def normal(self, *shape: int) -> np.ndarray:
        """Standard normal draws (an ``Embedding``'s table, as PyTorch starts it)."""
        if _weights_to_come():
            return _no_weights(shape)
        return self._rng.standard_normal(shape)

    def zeros(self, *shape: int) -> np.ndarray:
        return np.zeros(shape)

    def initial(
        self, init: Any, shape: tuple[int, ...], fan_in: int, fan_out: int, what: str
    ) -> np.ndarray:
        """The initial values of an array of ``shape`` with ``fan_in`` inputs and ``fan_out``
        outputs: ``init`` is a name from ``INITIALIZERS``, a number (every element), or a
        function ``init(shape, rng)`` of the shape and this model's ``numpy.random.Generator``
        returning an array of that shape. ``what`` names the array in errors. Inside
        ``weights_to_come`` nothing is drawn: the array is zeros."""
        shape = tuple(shape)
        if _weights_to_come():
            return _no_weights(shape)
        if callable(init):
            try:
                values = np.asarray(init(shape, self._rng), dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise PolynnTypeError(
                    f"the init function of {what} must take (shape, rng) and return an array "
                    f"of real numbers of that shape: {exc}"
                ) from None
            if values.shape != shape or not np.isfinite(values).all():
                raise PolynnValueError(
                    f"the init function of {what} must return finite values of shape {shape}; "
                    f"it returned an array of shape {values.shape}."
                )
            return values
        if not isinstance(init, str):
            return np.full(shape, float(init))
        draws = {
            "glorot_uniform": lambda: self._uniform(math.sqrt(6.0 / (fan_in + fan_out)), shape),
            "glorot_normal": lambda: self._normal(math.sqrt(2.0 / (fan_in + fan_out)), shape),
            "he_uniform": lambda: self._uniform(math.sqrt(6.0 / fan_in), shape),
            "he_normal": lambda: self._normal(math.sqrt(2.0 / fan_in), shape),
            "lecun_normal": lambda: self._normal(math.sqrt(1.0 / fan_in), shape),
            "orthogonal": lambda: self._orthogonal(shape),
            "zeros": lambda: np.zeros(shape),
            "ones": lambda: np.ones(shape),
        }
        return draws[init]()

    def permutation(self, n: int) -> np.ndarray:
        return self._rng.permutation(n)

    def key32(self) -> int:
        """A random 32-bit key, as a Python int (a dropout layer's stream of masks)."""
        return int(self._rng.integers(0, 2**32, dtype=np.uint64))

    @property
    def state(self) -> dict:
        """The generator's position (a dict of plain values), to copy it elsewhere."""
        return self._rng.bit_generator.state

    @state.setter
    def state(self, value: dict) -> None:
        """Move to ``value`` (as ``state`` gave it); anything else is a ``PolynnValueError``."""
        generator = self._rng.bit_generator
        before = generator.state
        try:
            generator.state = value
            generator.random_raw()  # a state NumPy stores but cannot draw from fails here
        except (TypeError, ValueError, OverflowError, KeyError) as exc:
            generator.state = before
            raise PolynnValueError(
                f"not a position of the {type(generator).__name__} generator "
                f"({type(exc).__name__}: {exc})."
            ) from None
        generator.state = value


def mean_one(w: np.ndarray) -> np.ndarray | None:
    """Non-negative weights scaled, in float64, to average 1 (None if all are 0). They are
    divided by the largest first, so that no sum overflows (weights of 1e308) and tiny ones
    (1e-40, below float32's normal range) keep their ratios."""
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    largest = w.max()
    if not largest > 0:
        return None
    w = w / largest
    return w * (w.size / w.sum())


_LOADING = threading.local()


@contextlib.contextmanager
def weights_to_come() -> Iterator[None]:
    """Inside this block (in this thread) ``HostRNG`` draws no weights: a model built here
    gets zeros, which take no memory until its layers copy them in, and the generator does
    not move. For a model whose weights are set right after (one being loaded), so that
    building it costs no random draws and no float64 arrays."""
    _LOADING.active = True
    try:
        yield
    finally:
        _LOADING.active = False


def _weights_to_come() -> bool:
    return getattr(_LOADING, "active", False)


def _no_weights(shape: tuple[int, ...]) -> np.ndarray:
    """An array of zeros of ``shape`` that holds one number (a broadcast view)."""
    return np.broadcast_to(np.float64(0.0), shape)


def write_model(
    path: str | os.PathLike, arrays: Sequence[np.ndarray], config: dict, names: Sequence[str]
) -> Path:
    """Write ``arrays`` (named ``names``) and a JSON ``config`` to one file, atomically: a
    ``.safetensors`` file (the config and a checksum in its metadata: ``_write_safetensors``)
    where the path ends so, else an ``.npz`` archive (``config`` and the arrays; zip keeps a
    CRC32 of each).

    The data goes to a new file in the target's directory which then replaces the target in
    one rename: an existing file is never left half-written. Where the OS allows (Linux's
    ``O_TMPFILE``) that file has no name until it is complete, so a process killed in the
    middle of ``save`` leaves nothing behind; elsewhere it is named
    ``.<name>.<host>-<pid>-<random>.tmp``, and a later ``save`` to the same path removes those
    whose process on this host has ended (``_remove_stale_temporaries``).
    """
    path = Path(path)
    if not all(np.isfinite(a).all() for a in arrays):
        raise PolynnValueError(
            f"the model's weights are not all finite (did training diverge?); {str(path)!r} "
            "was not written, and a file already there is untouched."
        )
    params = {name: np.ascontiguousarray(a) for name, a in zip(names, arrays)}
    try:
        _remove_stale_temporaries(path)
        with _replacing(path) as f:
            if is_safetensors(path):
                _write_safetensors(f, params, json.dumps(config))
            else:
                np.savez(f, config=np.array(json.dumps(config)), **params)
    except OSError as exc:
        kind = PolynnFileNotFoundError if isinstance(exc, FileNotFoundError) else PolynnFileError
        raise kind(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, as ``write_model`` writes (for other formats)."""
    path = Path(path)
    try:
        _remove_stale_temporaries(path)
        with _replacing(path) as f:
            f.write(data)
    except OSError as exc:
        kind = PolynnFileNotFoundError if isinstance(exc, FileNotFoundError) else PolynnFileError
        raise kind(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    return path


#: A temporary file of a process that has ended must also be this old to be removed...
DEAD_AFTER_S = 10
#: ... and one whose writer cannot be told (another host, an older polynn) this old.
STALE_AFTER_S = 24 * 3600
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Any]:
    """A binary file object whose contents replace ``path`` when the block ends normally.

    The new file gets the mode of the file it replaces, or what the umask gives a new file
    (the kernel applies it: the process umask is never read or changed)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None
    fd, tmp = _new_file(path)
    try:
        if mode is not None:
            os.chmod(fd if os.chmod in os.supports_fd else tmp, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if tmp is None:  # give the complete file a name, then move it over the target
                tmp = _temporary_name(path)
                os.link(f"/proc/self/fd/{f.fileno()}", tmp, follow_symlinks=True)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def _new_file(path: Path) -> tuple[int, str | None]:
    """``(fd, None)`` for a new file without a name in ``path``'s directory (``O_TMPFILE``),
    or, where the OS or file system has none, ``(fd, name)`` for a new temporary name."""
    if _unnamed_files_work(path):
        return os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o666), None
    while True:
        name = _temporary_name(path)
        with contextlib.suppress(FileExistsError):
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
            return os.open(name, flags, 0o666), name


_UNNAMED_FILES_WORK: dict[int, bool] = {}


def _unnamed_files_work(path: Path) -> bool:
    """Whether ``path``'s file system makes ``O_TMPFILE`` files and links them to a name
    through ``/proc/self/fd`` (some do neither, some only the first); probed once per device.
    """
    if getattr(os, "O_TMPFILE", None) is None or not os.path.isdir("/proc/self/fd"):
        return False
    device = os.stat(path.parent).st_dev
    if device not in _UNNAMED_FILES_WORK:
        works = False
        with contextlib.suppress(OSError):
            fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o600)
            try:
                probe = _temporary_name(path)
                os.link(f"/proc/self/fd/{fd}", probe, follow_symlinks=True)
                os.unlink(probe)
                works = True
            finally:
                os.close(fd)
        _UNNAMED_FILES_WORK[device] = works
    return _UNNAMED_FILES_WORK[device]


def _temporary_name(path: Path) -> str:
    token = f"{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    return str(path.parent / f".{path.name}.{token}.tmp")


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files that killed saves to ``path`` left beside it: regular files
    of this user named as ``_temporary_name`` names them (or as polynn 0.1.0 did), written by
    a process of this host that has ended, or untouched for a day."""
    name = re.escape(path.name)
    pattern = re.compile(rf"\.{name}\.(?:([0-9a-f]{{6}})-(\d+)-[0-9a-f]+|[0-9a-z_]{{8}})\.tmp")
    now = time.time()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
                continue
            host, pid = match.groups()
            ended = host == _HOST and not _running(int(pid))
            age = now - info.st_mtime
            if (ended and age > DEAD_AFTER_S) or age > STALE_AFTER_S:
                os.unlink(entry.path)


def _running(pid: int) -> bool:
    """Whether a process with this id runs on this host (a reused id counts as running)."""
    if os.name == "nt":  # os.kill would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else, or signals are not allowed
        return True
    return True


#: The largest config a model file may hold, in bytes (JSON of a few hundred layers is ~50 kB).
MAX_CONFIG_BYTES = 1 << 20

#: What ``read_model`` asks of a config: the name and shape of each array it describes.
Shapes = Callable[[dict], list[tuple[str, tuple[int, ...]]]]


def read_model(path: str | os.PathLike, shapes: Shapes) -> tuple[dict, list[np.ndarray]]:
    """Read a file written by :func:`write_model`, bounded by what its config declares.

    ``shapes(config)`` checks the config and returns the shape of each array it implies;
    every archive member's declared size is checked against them before anything is read, so
    a hostile file costs no more memory than the model it claims to be. Only regular files
    are opened (never a FIFO or a device, which could block or never end), nothing is
    unpickled, and every failure is a ``PolynnFileError``.
    """
    path = Path(path)
    foreign = PolynnFileError(
        f"{str(path)!r} is not a polynn model file (expected an .npz archive with a 'config' "
        "entry, as written by net.save)."
    )
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise PolynnFileNotFoundError(f"no model file at {str(path)!r}.") from None
    except OSError as exc:
        raise PolynnFileError(f"cannot open {str(path)!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PolynnFileError(
            f"{str(path)!r} is not a regular file (a directory, device or pipe); a model "
            "file is a regular .npz file."
        )
    with os.fdopen(fd, "rb") as f:
        if is_safetensors(path):
            return _read_safetensors(f, path, shapes)
        try:
            with zipfile.ZipFile(f) as archive:
                members = {info.filename: info for info in archive.infolist()}
                size = os.fstat(f.fileno()).st_size
                for info in members.values():
                    _check_member(info, size)
                if "config.npy" not in members:
                    raise foreign
                config = _read_config(archive, members["config.npy"])
                if not isinstance(config, dict):
                    raise foreign
                expected = shapes(config)
                names = sorted(n for n in members if n != "config.npy")
                if names != sorted(f"{name}.npy" for name, _ in expected):
                    raise PolynnFileError(
                        f"{str(path)!r} holds {len(names)} arrays, but its config describes "
                        f"{len(expected)}"
                        + ("." if len(names) != len(expected) else " with other names.")
                    )
                arrays = [
                    _read_array(archive, members[f"{name}.npy"], shape) for name, shape in expected
                ]
        except PolynnFileError:
            raise
        except (
            ValueError, OSError, EOFError, KeyError, RecursionError, MemoryError,
            NotImplementedError, zipfile.BadZipFile,
        ) as exc:  # fmt: skip
            raise PolynnFileError(
                f"cannot read {str(path)!r} as a polynn model file: {type(exc).__name__}: {exc}"
            ) from None
    return config, arrays


SAFETENSORS_KEY = "polynn_config"
#: The metadata entry holding the CRC32 of the config's text and the tensors' bytes, as eight
#: hex digits (from format 3; a file of format 3 or later without it is refused).
SAFETENSORS_CHECKSUM = "polynn_crc32"
_SAFETENSORS_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}
_SAFETENSORS_NAMES = {np.dtype(t).name: name for name, t in _SAFETENSORS_DTYPES.items()}


def is_safetensors(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".safetensors")


def _write_safetensors(f: Any, arrays: dict[str, np.ndarray], config_text: str) -> None:
    """A safetensors file (the format of the ``safetensors`` package, which reads it): the
    header's length (8 bytes, little-endian), the header (JSON: each tensor's dtype, shape and
    byte range, and the metadata: polynn's config and the CRC32 of the config's text followed
    by the tensors' bytes), padded with spaces to a multiple of 8 bytes, then the tensors'
    bytes, little-endian, in order. ``arrays`` maps each tensor's name to its array."""
    tensors = {
        name: np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")) for name, a in arrays.items()
    }
    header: dict[str, Any] = {}
    crc, start = zlib.crc32(config_text.encode()), 0
    for name, t in tensors.items():
        stop = start + t.nbytes
        header[name] = {
            "dtype": _SAFETENSORS_NAMES[t.dtype.name],
            "shape": list(t.shape),
            "data_offsets": [start, stop],
        }
        crc, start = zlib.crc32(_bytes_of(t), crc), stop
    header["__metadata__"] = {SAFETENSORS_KEY: config_text, SAFETENSORS_CHECKSUM: f"{crc:08x}"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    f.write(len(text).to_bytes(8, "little"))
    f.write(text)
    for t in tensors.values():
        f.write(_bytes_of(t))


def _bytes_of(a: np.ndarray) -> memoryview:
    """The bytes of a contiguous array, without a copy."""
    return memoryview(a.reshape(-1)).cast("B")


def _read_safetensors(f: Any, path: Path, shapes: Shapes) -> tuple[dict, list[np.ndarray]]:
    """A ``.safetensors`` model file, read within what its config implies: the header (JSON:
    each tensor's dtype, shape and byte range, and the metadata holding polynn's config) is
    checked against the shapes the config implies, and the tensors must fill the rest of the
    file exactly, before any tensor is read; each is then read into one new array, and the
    checksum (format 3 on) verified over the config and the bytes read."""
    size = os.fstat(f.fileno()).st_size
    try:
        length = int.from_bytes(f.read(8), "little")
        if not 2 <= length <= MAX_CONFIG_BYTES or 8 + length > size:
            raise ValueError(f"its header declares {length:,} bytes")
        header = json.loads(f.read(length))
        if not isinstance(header, dict):
            raise ValueError(f"its header is a JSON {type(header).__name__}, not an object")
        metadata = header.pop("__metadata__", None)
        text = metadata.get(SAFETENSORS_KEY) if isinstance(metadata, dict) else None
        if not isinstance(text, str):
            raise ValueError("its metadata holds no polynn config")
        config = json.loads(text)
        if not isinstance(config, dict):
            raise ValueError("its polynn config is not a JSON object")
        expected = shapes(config)
        checksum = metadata.get(SAFETENSORS_CHECKSUM)
        if checksum is None and config["format_version"] >= 3:
            raise PolynnFileError(
                f"{str(path)!r} is damaged or was not written by polynn: its metadata has no "
                f"{SAFETENSORS_CHECKSUM!r} checksum, which files of format 3 on carry."
            )
        if sorted(header) != sorted(name for name, _ in expected):
            raise ValueError(
                f"it holds {len(header)} tensors; its config describes {len(expected)}"
                + ("" if len(header) != len(expected) else " with other names")
            )
        layout = sorted(
            _tensor_at(header, name, i, shape) for i, (name, shape) in enumerate(expected)
        )
        data, position = size - 8 - length, 0
        for start, stop, _, _ in layout:
            if start != position:
                raise ValueError(f"its tensors leave a gap or overlap at byte {position:,}")
            position = stop
        if position != data:
            raise ValueError(f"its tensors take {position:,} bytes, but {data:,} follow the header")
        arrays: list[Any] = [None] * len(expected)
        crc = zlib.crc32(text.encode())
        for _, _, i, out in layout:  # in file order: one pass, no seeks
            view = _bytes_of(out)
            if f.readinto(view) != len(view):
                raise ValueError("it is truncated")
            crc = zlib.crc32(view, crc)
            arrays[i] = out.astype(out.dtype.newbyteorder("="), copy=False)
    except PolynnFileError:
        raise
    except (ValueError, KeyError, TypeError, OSError, RecursionError, MemoryError) as exc:
        raise PolynnFileError(
            f"cannot read {str(path)!r} as a polynn model file: {type(exc).__name__}: {exc}"
        ) from None
    if checksum is not None and checksum != f"{crc:08x}":
        raise PolynnFileError(
            f"{str(path)!r} is damaged: its config and tensors do not match their checksum "
            f"(CRC32 {crc:08x}; the file records {checksum!r})."
        )
    return config, arrays


def _tensor_at(
    header: dict, name: str, i: int, shape: tuple[int, ...]
) -> tuple[int, int, int, Any]:
    """``(start, stop, i, empty array)`` of tensor ``name`` (the ``i``-th) of a safetensors
    header, if it is a float tensor of ``shape`` taking exactly its bytes; else a
    ``ValueError``."""
    entry = header[name]
    if not isinstance(entry, dict):
        raise ValueError(f"{name} is described by {entry!r}, not by a JSON object")
    dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype"))  # type: ignore[arg-type]
    offsets = entry.get("data_offsets")
    if dtype is None:
        raise ValueError(f"{name} has dtype {entry.get('dtype')!r}; expected F16, F32 or F64")
    positions = isinstance(offsets, list) and len(offsets) == 2
    if not (positions and all(type(o) is int for o in offsets)):  # not bool, not float
        raise ValueError(f"{name} has data_offsets {offsets!r}; expected two byte positions")
    start, stop = offsets
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if entry.get("shape") != list(shape) or start < 0 or stop - start != nbytes:
        raise ValueError(
            f"{name} is {entry.get('dtype')} of shape {entry.get('shape')} at bytes "
            f"{start}-{stop}; the config implies shape {tuple(shape)}"
        )
    return start, stop, i, np.empty(shape, dtype=np.dtype(dtype).newbyteorder("<"))


#: Deflate cannot shrink data by more than this (1032:1), so a member that claims more lies.
MAX_DEFLATE_RATIO = 1032


def _check_member(info: zipfile.ZipInfo, file_size: int) -> None:
    """A member's compressed bytes must lie in the file, its compression must be one that
    ``save`` writes (stored or deflated), and its declared size must be one that compression
    could give (stored: the same bytes; deflated: at most 1032 times)."""
    if info.header_offset + info.compress_size > file_size:
        raise ValueError(f"{info.filename} declares bytes beyond the end of the file")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(
            f"{info.filename} uses zip compression method {info.compress_type}; model files "
            "are stored or deflated"
        )
    if info.compress_type == zipfile.ZIP_STORED:
        plausible = info.file_size == info.compress_size
    else:
        plausible = info.file_size <= MAX_DEFLATE_RATIO * info.compress_size + 1024
    if not plausible:
        raise ValueError(
            f"{info.filename} declares {info.file_size:,} bytes from {info.compress_size:,} "
            "compressed ones"
        )


def _read_header(member: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise ValueError(f"unsupported .npy format version {version}")


def _read_config(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    if info.file_size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"its config declares {info.file_size:,} bytes; at most {MAX_CONFIG_BYTES:,} are read"
        )
    with archive.open(info) as member:
        shape, _, dtype = _read_header(member)
        if shape != () or dtype.kind != "U":
            raise ValueError(f"the config is an array of {dtype} and shape {shape}, not text")
        text = member.read(MAX_CONFIG_BYTES + 1)
    if len(text) != dtype.itemsize:
        raise ValueError("the config is truncated")
    return json.loads(np.frombuffer(text, dtype=dtype)[0])


def _read_array(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple[int, ...]
) -> np.ndarray:
    """The array of member ``info``, if its header declares ``shape`` and a float dtype and
    the member holds exactly that many bytes; read into one new array, with little more."""
    with archive.open(info) as member:
        declared, fortran, dtype = _read_header(member)
        if tuple(declared) != tuple(shape) or dtype.kind != "f" or dtype.hasobject:
            raise ValueError(
                f"{info.filename} holds an array of {dtype} and shape {tuple(declared)}; the "
                f"config implies a float array of shape {tuple(shape)}"
            )
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != member.tell() + nbytes:
            raise ValueError(f"{info.filename} declares {info.file_size:,} bytes, not a header "
                             f"and {nbytes:,} bytes of data")  # fmt: skip
        out = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        view = memoryview(out.reshape(-1, order="A")).cast("B")
        done = 0
        while done < nbytes:  # in chunks: a zip member reads each into a bytes object first
            got = member.readinto(view[done : done + READ_CHUNK])
            if not got:
                raise ValueError(f"{info.filename} is truncated")
            done += got
    return out


#: The most bytes ``_read_array`` asks a zip member for at once.
READ_CHUNK = 1 << 20


def softmax(logits: Any) -> np.ndarray:
    """Row-wise softmax of host logits (rows, classes), computed in float64.

    The rows of the result sum to 1 to float64 precision, whatever the model's dtype; used by
    ``polynn.sklearn`` for ``predict_proba``.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits: Any) -> np.ndarray:
    """Row-wise log-softmax of host logits (rows, classes), computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
