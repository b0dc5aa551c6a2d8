"""Data that does not fit in one array: batches streamed from an iterable.

``fit``, ``evaluate`` and ``predict`` take, instead of arrays, an iterable of batches (a
generator, a list, a data loader) or a function that returns a new iterable for each epoch.
``fit`` and ``evaluate`` take ``(X, y)`` pairs, ``predict`` takes ``X`` batches. A worker
thread reads the next batches while the current one computes, checks them as arrays are
checked, and starts their copy to the device (on CuPy: through pinned memory, on a stream of
its own, so the copy overlaps the kernels). Only ``PREFETCH`` batches are held at a time,
so a data set larger than memory streams through, e.g. from a ``numpy.memmap``.

The stream decides the order of the rows: ``shuffle`` and ``batch_size`` do not apply.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from polynn.backends import Backend
from polynn.errors import PolynnTypeError, PolynnValueError

__all__ = ["PREFETCH", "StreamBatches", "is_stream", "prefetched"]

#: How many batches the worker thread keeps ready ahead of the one computing.
PREFETCH = 2
#: How long stopping waits for a worker that is not inside the source (it checks for a stop
#: every 0.1 s while the queue is full).
STOP_WAIT_S = 1.0

Staged = tuple[Any, Callable[[], None]]


def is_stream(data: Any) -> bool:
    """Whether ``data`` is a stream of batches rather than one array: a function, an
    iterator or generator, or an iterable object that is neither an array nor a list."""
    if callable(data) and not hasattr(data, "shape"):
        return True
    if isinstance(data, Iterator):
        return True
    array_like = hasattr(data, "shape") or hasattr(data, "__array__")
    array_like = array_like or hasattr(data, "__dlpack__")
    return (
        isinstance(data, Iterable)
        and not array_like
        and not isinstance(data, (list, tuple, str, bytes))
    )


def _source(stream: Any, epoch: int) -> Iterable[Any]:
    """The iterable of this epoch: a function's new one, else the stream itself."""
    if callable(stream) and not isinstance(stream, Iterable):
        data = stream()
        if not isinstance(data, Iterable):
            raise PolynnTypeError(
                f"the data function must return an iterable of batches; it returned "
                f"{type(data).__name__}."
            )
        return data
    if epoch > 0 and isinstance(stream, Iterator):
        raise PolynnValueError(
            "an iterator of batches can be read once, and this fit has more than one epoch: "
            "pass a function that returns a new iterator, e.g. fit(lambda: batches(), ...)."
        )
    return stream


def prefetched(
    batches: Iterable[Any], stage: Callable[[Any], list[Staged]], depth: int = PREFETCH
) -> Iterator[list[Any]]:
    """The batches of ``batches`` after ``stage`` (host checks and the start of the copies to
    the device), which a worker thread runs ``depth`` batches ahead; an error in the stream
    or in ``stage`` is raised here, in the consumer's thread, at the batch where it happened.

    Stopping (an error, the consumer done early, Ctrl-C) never waits on the source: a worker
    blocked inside it cannot be interrupted, so it is left to end, as a daemon thread, once
    the source returns (it then stops before reading more); otherwise it ends at its next
    hand-over, within ``STOP_WAIT_S``."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    reading = threading.Event()  # set while the worker waits on the source
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            source = iter(batches)
            while not stop.is_set():
                reading.set()
                try:
                    batch = next(source)
                except StopIteration:
                    break
                finally:
                    reading.clear()
                if not put(stage(batch)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
            return
        put(end)

    worker = threading.Thread(target=work, name="polynn-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            for _, wait in item:
                wait()
            yield [array for array, _ in item]
    finally:
        stop.set()
        worker.join(timeout=0 if reading.is_set() else STOP_WAIT_S)


def stager(backend: Backend, dtype: Any, parts: int) -> Callable[[Any], list[Staged]]:
    """``stage`` for batches of ``parts`` arrays: ``(X, y)`` pairs for 2, ``X`` for 1. X is
    cast to ``dtype``; y keeps its own (integer class labels stay integers)."""
    names = ("X", "y")[:parts]

    def stage(batch: Any) -> list[Staged]:
        if parts == 1:
            items = (batch,)
        elif not isinstance(batch, (tuple, list)) or len(batch) != parts:
            size = f" of length {len(batch)}" if hasattr(batch, "__len__") else ""
            raise PolynnTypeError(
                f"each batch of the data stream must be a pair (X, y); got "
                f"{type(batch).__name__}{size}."
            )
        else:
            items = tuple(batch)
        return [
            backend.stage(item, dtype if name == "X" else None, f"{name} (a batch of the stream)")
            for item, name in zip(items, names)
        ]

    return stage


class StreamBatches:
    """The batches of a stream for ``fit`` and ``evaluate``, with the interface of
    ``polynn.training.ArrayBatches``: ``epoch()`` gives each epoch's ``(x, y)`` batches on the
    device, after ``check`` (the model's checks of a batch); ``sizes`` and ``rows`` describe
    the epoch just read."""

    def __init__(
        self, stream: Any, check: Callable[[Any, Any], tuple[Any, Any]], backend: Backend,
        dtype: Any,
    ) -> None:  # fmt: skip
        self._stream, self._check = stream, check
        self._stage = stager(backend, dtype, 2)
        self._epochs = 0
        self.sizes: list[int] = []
        self.rows = 0

    def __len__(self) -> int:
        """The batches of the last epoch (0 before the first: not known in advance)."""
        return len(self.sizes)

    def epoch(self) -> Iterator[tuple[Any, Any]]:
        sizes: list[int] = []
        for x, y in prefetched(_source(self._stream, self._epochs), self._stage):
            x, y = self._check(x, y)
            sizes.append(x.shape[0])
            yield x, y
        if not sizes:
            raise PolynnValueError(
                "the data stream gave no batches"
                + (" this epoch (an exhausted iterator?)." if self._epochs else ".")
            )
        self._epochs += 1
        self.sizes, self.rows = sizes, sum(sizes)


def inputs(stream: Any, backend: Backend, dtype: Any) -> Iterator[Any]:
    """The ``X`` batches of a stream for ``predict``, on the device (not yet checked)."""
    for (x,) in prefetched(_source(stream, 0), stager(backend, dtype, 1)):
        yield x
