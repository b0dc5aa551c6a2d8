"""Host-side work that is NumPy by nature: random draws, copies to NumPy, ``.npz`` files."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import array_api_compat
import numpy as np

from polynn.errors import PolynnFileError, PolynnFileNotFoundError, PolynnTypeError

__all__ = ["HostRNG", "log_softmax", "read_npz", "softmax", "to_numpy", "write_npz"]


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of an array of any backend (NumPy, CuPy, array-api-strict, ...)."""
    if isinstance(x, np.ndarray):
        return np.array(x)  # a plain ndarray copy, also of np.matrix and other subclasses
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy().copy()
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


class HostRNG:
    """Every random draw of a model, made on the host from ``numpy.random.default_rng(seed)``.

    Drawing on the host and then moving the result is what gives one seed identical initial
    weights and batch orders on every backend.
    """

    def __init__(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)

    def glorot_uniform(self, fan_in: int, fan_out: int) -> np.ndarray:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return self._rng.uniform(-limit, limit, size=(fan_in, fan_out))

    def he_normal(self, fan_in: int, fan_out: int) -> np.ndarray:
        return self._rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))

    def zeros(self, *shape: int) -> np.ndarray:
        return np.zeros(shape)

    def permutation(self, n: int) -> np.ndarray:
        return self._rng.permutation(n)


def write_npz(path: str | os.PathLike, arrays: Sequence[np.ndarray], config: dict) -> Path:
    """Write ``arrays`` and a JSON ``config`` to one ``.npz`` file, atomically.

    The data goes to a temporary file beside ``path`` which then replaces it in one rename:
    an existing file is never left half-written, and no temporary file stays behind.
    """
    path = Path(path)
    contents = {"config": np.array(json.dumps(config))}
    contents.update({f"param_{i}": np.asarray(a) for i, a in enumerate(arrays)})
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **contents)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _file_mode(path))  # mkstemp makes it private; keep the usual mode
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        kind = PolynnFileNotFoundError if isinstance(exc, FileNotFoundError) else PolynnFileError
        raise kind(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    return path


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, or what a new file gets under the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def read_npz(path: str | os.PathLike) -> tuple[dict, list[np.ndarray]]:
    """Read a file written by :func:`write_npz`; never unpickles anything."""
    if not isinstance(path, (str, os.PathLike)):
        raise PolynnTypeError(f"a model file path must be a str or a path; got {path!r}.")
    path = Path(path)
    if not path.exists():
        raise PolynnFileNotFoundError(f"no model file at {str(path)!r}.")
    foreign = PolynnFileError(
        f"{str(path)!r} is not a polynn model file (expected an .npz archive with a 'config' "
        "entry, as written by net.save)."
    )
    if not zipfile.is_zipfile(path):
        raise foreign
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise foreign
        with data:
            if "config" not in data.files:
                raise foreign
            config = json.loads(str(data["config"]))
            n = sum(1 for name in data.files if name.startswith("param_"))
            arrays = [data[f"param_{i}"] for i in range(n)]
    except PolynnFileError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise PolynnFileError(
            f"cannot read {str(path)!r} as a polynn model file: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(config, dict):
        raise foreign
    return config, arrays


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
