"""The transports of data-parallel training: MPI (mpi4py) through host buffers, and NCCL
through CuPy for arrays on CUDA devices. ``polynn.distributed`` decides what to reduce when;
these move the bytes. mpi4py is imported when a communicator is first made.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from polynn.backends._core import Backend
from polynn.backends.host import to_numpy
from polynn.errors import BackendUnavailableError

__all__ = [
    "HostTransport",
    "NcclTransport",
    "cupy_nccl",
    "launch_env",
    "mpiexec",
    "nccl_package",
    "shared_devices",
    "transport",
    "world",
]


def mpiexec() -> tuple[str | None, dict[str, str]]:
    """The ``mpiexec`` of the MPI library mpi4py runs on, and the environment variables it
    needs: the one beside this Python (``pip install mpich`` puts it there) or beside
    mpi4py's ``mpicc``, else the first on the PATH (None where there is none). Open MPI
    refuses to start as root unless told that it may (containers often run as root)."""
    import mpi4py

    here = [os.path.dirname(sys.executable)]
    mpicc = mpi4py.get_config().get("mpicc")
    if mpicc:
        here.append(os.path.dirname(mpicc))
    found = [os.path.join(d, "mpiexec") for d in here]
    path = next((p for p in found if os.access(p, os.X_OK)), None) or shutil.which("mpiexec")
    return path, launch_env(_library_version(), _euid())


def launch_env(library_version: str, euid: int | None) -> dict[str, str]:
    """What ``mpiexec`` of the MPI library described by ``library_version`` needs in its
    environment when the user id is ``euid`` (None where there are no user ids)."""
    if "Open MPI" in library_version and euid == 0:
        return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return {}


def _library_version() -> str:
    """``MPI.Get_library_version()`` of mpi4py, asked in a child process: the call is allowed
    before ``MPI_Init``, but importing ``mpi4py.MPI`` here would initialise MPI in this one."""
    probe = (
        "import mpi4py; mpi4py.rc.initialize = mpi4py.rc.finalize = False; "
        "from mpi4py import MPI; print(MPI.Get_library_version())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )  # fmt: skip
    return done.stdout


def _euid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def world() -> Any:
    """mpi4py's ``COMM_WORLD``, or a clear error naming the extra to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise BackendUnavailableError(
            f"distributed training needs mpi4py and an MPI library ({exc}); install them with: "
            'pip install "polynn[mpi]" (mpi4py and mpich), then launch with mpiexec -n N.'
        ) from None
    return MPI.COMM_WORLD


class HostTransport:
    """Sums and broadcasts over an mpi4py communicator, through one host buffer per call in
    the arrays' (common) dtype: a step sends the parameters' bytes, once."""

    name = "mpi (host)"

    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def allreduce(self, arrays: Sequence[Any], backend: Backend) -> list[Any]:
        """The elementwise sums over the ranks of ``arrays`` (of ``backend``), each in its
        dtype, on ``backend``."""
        if not arrays:
            return []
        on_host = type(arrays[0]) is np.ndarray  # NumPy's own: no copies in and out
        host = list(arrays) if on_host else [to_numpy(a) for a in arrays]
        flat = np.concatenate([h.ravel() for h in host])
        total = np.empty_like(flat)
        self.comm.Allreduce(flat, total)
        out, start = [], 0
        for h in host:
            piece = total[start : start + h.size].reshape(h.shape)
            out.append(piece if on_host else backend.from_numpy(piece))
            start += h.size
        return out

    def sum_floats(self, values: Sequence[float]) -> list[float]:
        """Sums over the ranks of host numbers."""
        flat = np.asarray(values, dtype=np.float64)
        total = np.empty_like(flat)
        self.comm.Allreduce(flat, total)
        return total.tolist()

    def broadcast(self, arrays: Sequence[Any], backend: Backend) -> list[Any]:
        """Rank 0's ``arrays``, on every rank (as arrays of ``backend``)."""
        host = [to_numpy(a) for a in arrays]
        for h in host:
            self.comm.Bcast(h, root=0)
        return [backend.from_numpy(h) for h in host]


class NcclTransport(HostTransport):
    """Sums of CuPy arrays with NCCL, device to device, one process per GPU; everything else
    (numbers, broadcasts, errors) over MPI. The NCCL communicator is set up from a unique id
    that rank 0 sends over MPI."""

    name = "nccl"

    def __init__(self, comm: Any, cupy: Any) -> None:
        super().__init__(comm)
        from cupy.cuda import nccl

        self._cupy, self._nccl = cupy, nccl
        uid = nccl.get_unique_id() if comm.rank == 0 else None
        uid = comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(comm.size, uid, comm.rank)

    def allreduce(self, arrays: Sequence[Any], backend: Backend) -> list[Any]:
        cupy, nccl = self._cupy, self._nccl
        if not arrays:
            return []
        dtype = arrays[0].dtype
        flat = cupy.concatenate([a.ravel() for a in arrays])
        kind = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        stream = cupy.cuda.get_current_stream().ptr
        self.nccl_comm.allReduce(
            flat.data.ptr, flat.data.ptr, flat.size, kind[np.dtype(dtype)], nccl.NCCL_SUM, stream
        )
        out, start = [], 0
        for a in arrays:
            out.append(flat[start : start + a.size].reshape(a.shape))
            start += a.size
        return out


def transport(comm: Any, backend: Backend, nccl: bool | None) -> HostTransport:
    """NCCL for CuPy arrays where ``nccl`` is not False, CuPy has NCCL and no two ranks share
    a GPU (NCCL refuses that), else the host. Every rank must call it (it is collective)."""
    if backend.name != "cupy" or nccl is False:
        return HostTransport(comm)
    import cupy

    module = cupy_nccl(cupy)
    if module is None:
        if nccl:
            raise BackendUnavailableError(
                "nccl=True, but this CuPy has no NCCL; install it with: pip install "
                f"{nccl_package(cupy)}"
            )
        return HostTransport(comm)
    here = (socket.gethostname(), cupy.cuda.runtime.deviceGetPCIBusId(backend.device.id))
    shared = shared_devices(comm.allgather(here))
    if shared:
        if nccl:
            raise BackendUnavailableError(
                f"nccl=True, but ranks {shared} use the same GPU, which NCCL refuses; give "
                "each rank its own device (e.g. device=rank), or pass nccl=None to sum "
                "through host memory."
            )
        return HostTransport(comm)
    return NcclTransport(comm, cupy)


def cupy_nccl(cupy: Any) -> Any:
    """CuPy's NCCL module where it is usable, else None. ``cupy.cuda.nccl`` is a submodule
    that exists as an attribute only once it has been imported."""
    try:
        module = importlib.import_module(f"{cupy.__name__}.cuda.nccl")
    except ImportError:
        return None
    return module if getattr(module, "available", False) else None


def nccl_package(cupy: Any) -> str:
    """The pip package of NCCL for the CUDA version CuPy runs on."""
    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    return f"nvidia-nccl-cu{major}"


def shared_devices(identities: Sequence[Any]) -> list[int]:
    """The ranks whose device (host name and PCI bus id, one per rank) another rank uses."""
    count = Counter(identities)
    return [rank for rank, identity in enumerate(identities) if count[identity] > 1]
