"""Data-parallel training over MPI: every process (rank) holds the model and takes its rows of
each global batch; gradients are summed over the ranks, weighted by rows, before each update,
so N processes equal one process training on the same global batches.

    mpiexec -n 4 python train.py     # train.py calls net.fit(..., distributed=pn.distributed.MPI())

mpi4py carries the bytes through host buffers (``pip install "polynn[mpi]"`` brings mpi4py and
the mpich library with its ``mpiexec``); for a model on CuPy, gradients are summed with NCCL
through CuPy, one process per GPU. Two ways to hand over data:

- replicated (the default): every rank passes the same ``X`` and ``y``; the batch order comes
  from the shared seed, and rank r takes its share of every batch (the first ``rows % size``
  ranks one row more);
- ``sharded=True``: each rank passes only its own rows (a dataset no machine holds whole);
  each step takes ``batch_size // size`` rows (at least one) from every rank's shard, and an
  epoch runs as many steps as the largest shard needs.

Initial weights are broadcast from rank 0, losses and metrics are summed over the ranks so
every rank logs the same history (and callbacks decide alike), and only rank 0 draws progress
bars. The ranks agree, in the collectives they already make or in one small one where none
is made: an error on one rank (a bad argument or bad data, a failure in a step, a callback)
stops every rank with that error; settings that differ between ranks (epochs, the layers,
the dtype, the loss, the optimizer, replicated data of other sizes) stop every rank before
training, naming what differs; and when a callback stops training on one rank (an
``EarlyStopping`` given to rank 0 only), every rank stops after that epoch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from polynn.backends import Backend
from polynn.backends.mpi import HostTransport, transport, world
from polynn.errors import PolynnError, PolynnValueError

__all__ = ["MPI", "agreed", "check"]


class MPI:
    """The ranks of an MPI launch, for ``fit(..., distributed=MPI())`` and ``evaluate``.

    ``comm``: an mpi4py communicator (default ``COMM_WORLD``). ``sharded``: each rank passes
    its own rows instead of the same data. ``nccl``: for CuPy models, None uses NCCL where
    CuPy has it, True requires it, False sums through the host.
    """

    def __init__(self, comm: Any = None, *, sharded: bool = False, nccl: bool | None = None):
        self.comm = world() if comm is None else comm
        self.rank: int = self.comm.rank
        self.size: int = self.comm.size
        self.sharded = bool(sharded)
        self.nccl = nccl
        self._transports: dict[Backend, HostTransport] = {}

    def __repr__(self) -> str:
        return f"MPI(rank={self.rank}, size={self.size}, sharded={self.sharded})"

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0, the one that reports and writes files."""
        return self.rank == 0

    def transport(self, backend: Backend) -> HostTransport:
        if backend not in self._transports:
            self._transports[backend] = transport(self.comm, backend, self.nccl)
        return self._transports[backend]

    def share(self, rows: int) -> tuple[int, int]:
        """``(start, stop)`` of this rank's rows of a batch of ``rows`` rows."""
        base, extra = divmod(rows, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def local_batch_size(self, batch_size: int | None) -> int | None:
        """In sharded mode, the rows each rank takes per step for a global ``batch_size``."""
        if batch_size is None:
            return None
        return max(1, batch_size // self.size)

    def agree(
        self,
        error: BaseException | None,
        *,
        stop: bool = False,
        facts: dict[str, Any] | None = None,
    ) -> bool:
        """Every rank calls this at the same point: one collective. If any rank passes an
        error, every rank raises it (the lowest failing rank's, as the same polynn error class
        where it is one); else if the ``facts`` (what every rank must have alike) differ from
        rank 0's, every rank raises a ``PolynnValueError`` naming the first that differs.
        Returns whether any rank passed ``stop``."""
        report = None if error is None else (type(error).__name__, str(error), _polynn_class(error))
        reports = self.comm.allgather((report, bool(stop), facts))
        failed = [(rank, r[0]) for rank, r in enumerate(reports) if r[0] is not None]
        if failed:
            rank, (name, message, cls) = failed[0]
            if error is not None and rank == self.rank:
                raise error
            raise (cls or PolynnError)(f"rank {rank} of {self.size} failed: {name}: {message}")
        if facts is not None:
            _same_everywhere([r[2] for r in reports])
        return any(r[1] for r in reports)

    def sum_floats(self, values: list[float], backend: Backend) -> list[float]:
        return self.transport(backend).sum_floats(values)


@contextlib.contextmanager
def agreed(dist: MPI | None, facts: dict[str, Any] | None = None) -> Iterator[None]:
    """Run the block on every rank; if it raises on any, every rank raises (``MPI.agree``).
    ``facts``: a dict the block fills with what every rank must have alike, compared in the
    same collective."""
    if dist is None:
        yield
        return
    try:
        yield
    except Exception as exc:
        dist.agree(exc)
        raise
    dist.agree(None, facts=facts)


#: What to do when a fact differs between the ranks, for the facts that need more than
#: "pass the same" (others: every rank must build the same model and pass the same arguments).
HINTS = {
    "data": "replicated, every rank passes the same X and y; pass "
    "pn.distributed.MPI(sharded=True) for each rank's own rows",
    "validation rows": "replicated, every rank passes the same validation data",
    "learning rate": "a callback that changes it (ReduceLROnPlateau, LearningRateScheduler) "
    "must be given to every rank",
    "callbacks that set the weights": "EarlyStopping(restore_best_weights=True) must be given "
    "to every rank",
}


def _same_everywhere(facts: list[dict[str, Any]]) -> None:
    """Refuse ``facts`` (one dict per rank, the same keys) that differ from rank 0's."""
    for key, mine in facts[0].items():
        for rank, theirs in enumerate(facts):
            if theirs.get(key) != mine:
                hint = HINTS.get(key, "every rank must build the same model and call fit with "
                                 "the same arguments")  # fmt: skip
                raise PolynnValueError(
                    f"the ranks disagree on the {key}: rank 0 has {mine}, rank {rank} has "
                    f"{theirs.get(key)} ({hint})."
                )


def _polynn_class(error: BaseException) -> type | None:
    """The polynn error class of ``error`` (to raise the same kind on other ranks), if any."""
    for cls in type(error).__mro__:
        if issubclass(cls, PolynnError) and cls.__module__ == "polynn.errors":
            return cls
    return None


def check(distributed: Any) -> MPI | None:
    """``distributed`` as an ``MPI``, or None; anything else is refused."""
    if distributed is None or isinstance(distributed, MPI):
        return distributed
    raise PolynnValueError(
        f"distributed must be a polynn.distributed.MPI() or None; got {distributed!r}."
    )


def weighted_means(sums: list[float], sizes: list[int]) -> list[float]:
    """Per-batch means from per-batch sums over the ranks of rows x loss."""
    return [s / n if n else math.nan for s, n in zip(sums, sizes)]
