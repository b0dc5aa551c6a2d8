"""The transports of data-parallel training: MPI (mpi4py) through host buffers, and NCCL
through CuPy for arrays on CUDA devices. ``polynn.distributed`` decides what to reduce when;
these move the bytes. mpi4py is imported when a communicator is first made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from polynn.backends._core import Backend
from polynn.backends.host import to_numpy
from polynn.errors import BackendUnavailableError

__all__ = ["HostTransport", "NcclTransport", "transport", "world"]


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
    """NCCL for CuPy arrays where ``nccl`` is not False and CuPy has NCCL, else the host."""
    if backend.name == "cupy" and nccl is not False:
        import cupy

        if getattr(cupy.cuda, "nccl", None) is not None and cupy.cuda.nccl.available:
            return NcclTransport(comm, cupy)
        if nccl:
            raise BackendUnavailableError(
                "nccl=True, but this CuPy has no NCCL; install it (pip install nvidia-nccl-cu12)."
            )
    return HostTransport(comm)
