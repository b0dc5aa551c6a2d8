"""Compiled training steps, one class per mechanism (see ``polynn.compiled`` for what a step
must be to be compiled):

- ``JaxStep``: ``jax.jit`` of the step as a pure function of the arrays it changes (the
  slots) and the batch; the layers' Python objects hold tracers only while it is traced, and
  get their attributes back afterwards. Traced again only when shapes change, and once for
  the steps that return their gradients (each epoch's last). Every step is compiled, the first
  too, so that a run's float64 results do not depend on where a fit started.
- ``GraphStep`` (CuPy) and ``TorchGraphStep`` (PyTorch on CUDA): the step captured once per
  batch shape as a CUDA graph on a stream of its own, with a private memory pool, after warm-up
  steps, and replayed for every batch, whose arrays are first copied into the graph's own
  input buffers. Parameters, optimizer state and counters are updated in place, where the
  graph reads them. What cannot be captured (CuPy's own cuBLAS, a host read) falls back to
  eager steps with one warning, never to a wrong result.

Each calls ``prepare`` (the host's part of a step: the step count, a new learning rate)
before running the compiled part. The loss a step returns is a copy: the graph's own output
buffer is overwritten by the next replay.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["GraphStep", "JaxForward", "JaxStep", "TorchGraphStep"]

Step = Callable[..., tuple[Any, Any]]

#: Eager steps of a batch shape before it is captured (kernels compile, plans are made,
#: state that lives across steps is allocated outside the graph's pool).
WARMUP = 2


def _warn_eager(why: Exception) -> None:
    warnings.warn(
        f"this training step could not be captured as a CUDA graph ({type(why).__name__}: "
        f"{why}); it runs eagerly. Pass compile=False to fit to silence this.",
        RuntimeWarning,
        stacklevel=4,
    )


class JaxStep:
    """``step`` under ``jax.jit``: ``slots()`` lists the arrays a step changes (as
    ``polynn.compiled.Slot``), ``objects`` the objects whose attributes tracing may touch.

    The arrays a step makes before reading them (the gradients) are not passed in, and are
    returned only where ``grads`` is asked for (``rows``: the last batch of an epoch): an
    output costs a compiled call about a microsecond, and no step reads the last one's."""

    def __init__(
        self, jax: Any, step: Step, slots: Callable[[], list[Any]], objects: Sequence[Any],
        prepare: Callable[[], None],
    ) -> None:  # fmt: skip
        self._step, self._slots, self._objects, self._prepare = step, slots, objects, prepare
        self._jax = jax
        self._jit = jax.jit(self._pure, static_argnums=(2,))
        self._jit_rows = jax.jit(self._pure_rows, static_argnums=(3, 4))

    def _pure(
        self, values: list[Any], batch: tuple[Any, ...], grads: bool
    ) -> tuple[list[Any], list[Any], Any, Any]:
        slots = self._slots()
        before = [dict(vars(obj)) for obj in self._objects]
        made = [(slot, slot.get()) for slot in slots if slot.made]
        try:
            for slot, value in zip(_taken(slots), values):
                slot.set(value)
            value, out = self._step(*batch)
            kept = [slot.get() for slot in _taken(slots)]
            return kept, [slot.get() for slot, _ in made] if grads else [], value, out
        finally:  # no tracer stays behind in a layer's attributes or a gradient
            for obj, attributes in zip(self._objects, before):
                vars(obj).clear()
                vars(obj).update(attributes)
            for slot, array in made:
                slot.set(array)

    def _pure_rows(
        self, values: list[Any], arrays: tuple[Any, ...], start: Any, size: int, grads: bool
    ) -> tuple[list[Any], list[Any], Any, Any]:
        cut = self._jax.lax.dynamic_slice_in_dim
        return self._pure(values, tuple(cut(a, start, size) for a in arrays), grads)

    def __call__(self, *batch: Any) -> tuple[Any, Any]:
        return self._run(batch, None, True)

    def rows(
        self, arrays: tuple[Any, ...], span: tuple[int, int], grads: bool = True
    ) -> tuple[Any, Any]:
        """The step on rows ``start:stop`` of ``arrays``, cut inside the compiled function;
        with ``grads=False`` the parameters keep the gradients they had (those of the last
        step that returned them)."""
        return self._run(arrays, span, grads)

    def _run(
        self, batch: tuple[Any, ...], span: tuple[int, int] | None, grads: bool
    ) -> tuple[Any, Any]:
        self._prepare()
        slots = self._slots()
        taken = _taken(slots)
        values = [slot.get() for slot in taken]
        batch = tuple(b for b in batch if b is not None)
        if span is None:
            new, made, value, out = self._jit(values, batch, grads)
        else:
            start, stop = span
            new, made, value, out = self._jit_rows(values, batch, start, stop - start, grads)
        for slot, array in zip(taken, new):
            slot.set(array)
        for slot, array in zip((slot for slot in slots if slot.made), made):
            slot.set(array)
        return value, out


def _taken(slots: list[Any]) -> list[Any]:
    """The slots a compiled step takes as arguments and returns: all but those it makes."""
    return [slot for slot in slots if not slot.made]


class JaxForward:
    """An inference pass (``predict``, ``evaluate``, validation) under ``jax.jit``: ``run(x)``
    as a pure function of the parameters and buffers (``slots()``) and the batch."""

    def __init__(
        self, jax: Any, run: Callable[[Any], Any], slots: Callable[[], list[Any]],
        objects: Sequence[Any],
    ) -> None:  # fmt: skip
        self._run, self._slots, self._objects = run, slots, objects
        self._jit = jax.jit(self._pure)

    def _pure(self, values: list[Any], x: Any) -> Any:
        before = [dict(vars(obj)) for obj in self._objects]
        try:
            for slot, value in zip(self._slots(), values):
                slot.set(value)
            return self._run(x)
        finally:
            for obj, attributes in zip(self._objects, before):
                vars(obj).clear()
                vars(obj).update(attributes)

    def __call__(self, x: Any) -> Any:
        slots = self._slots()
        values = [slot.get() for slot in slots]
        try:
            return self._jit(values, x)
        finally:  # tracing set the parameters to tracers: put the arrays back
            for slot, value in zip(slots, values):
                slot.set(value)


class _Captured:
    """One batch shape's graph, its input buffers, its outputs, and the arrays of the state
    it reads and writes where they were when it was captured."""

    def __init__(
        self, graph: Any, inputs: tuple[Any, ...], value: Any, out: Any, slots: list[Any]
    ) -> None:
        self.graph, self.inputs, self.value, self.out = graph, inputs, value, out
        #: What the graph needs kept alive as long as it is (CuPy: its memory pool).
        self.keep: Any = None
        #: The slots list it was captured with (``StepState`` makes a new one when the
        #: optimizer's state is replaced: a reset, a load; the graph is then captured again).
        self.slots = slots
        self.state = [(slot, slot.get()) for slot in slots if not slot.made]

    def prepare(self, batch: tuple[Any, ...], copy: Callable[[Any, Any], None]) -> None:
        """Copy the batch into the input buffers, and any state array that was rebound since
        the capture (weights set or restored, a file's counters) into the graph's own."""
        for buffer, array in zip(self.inputs, batch):
            if buffer is not None:
                copy(buffer, array)
        for slot, array in self.state:
            current = slot.get()
            if current is not array:
                copy(array, current)
                slot.set(array)


class _Replays:
    """What CUDA-graph steps share: a graph per batch shape (``key``), captured after
    ``WARMUP`` eager steps of that shape (again when the optimizer's state was replaced) and
    replayed for every later batch, copied into the graph's input buffers; a shape that could
    not be captured runs eagerly for good, after one warning. Subclasses say how a library
    keys a batch, runs a step eagerly, records a graph and replays it."""

    def __init__(
        self, step: Step, slots: Callable[[], list[Any]], prepare: Callable[[], None]
    ) -> None:
        self._step, self._slots, self._prepare = step, slots, prepare
        self._graphs: dict[tuple[Any, ...], _Captured | None] = {}
        self._runs: dict[tuple[Any, ...], int] = {}

    def __call__(self, *batch: Any) -> tuple[Any, Any]:
        self._prepare()
        key = self._key(batch)
        captured = self._graphs.get(key)
        if captured is not None and captured.slots is not self._slots():
            del self._graphs[key]  # the optimizer's state was replaced: capture again
            self._runs[key], captured = 0, None
        if captured is None:
            runs = self._runs.get(key, 0)
            self._runs[key] = runs + 1
            if key in self._graphs or runs < WARMUP:  # eager: for good, or to warm up
                return self._eager(batch)
            captured = self._capture(key, batch)
            if captured is None:
                return self._eager(batch)
        return self._replay(captured, batch)

    def _capture(self, key: tuple[Any, ...], batch: tuple[Any, ...]) -> _Captured | None:
        """Record the step on a copy of ``batch`` (it does not run: the caller replays it),
        or note that this shape runs eagerly."""
        try:
            graph, inputs, value, out, keep = self._record(batch)
        except Exception as exc:  # CuPy's cuBLAS, a host read, ...: run this shape eagerly
            self._graphs[key] = None
            _warn_eager(exc)
            return None
        captured = _Captured(graph, inputs, value, out, self._slots())
        captured.keep = keep
        self._graphs[key] = captured
        return captured

    def _key(self, batch: tuple[Any, ...]) -> tuple[Any, ...]:
        raise NotImplementedError

    def _eager(self, batch: tuple[Any, ...]) -> tuple[Any, Any]:
        raise NotImplementedError

    def _record(self, batch: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...], Any, Any, Any]:
        """``(graph, its input buffers, the loss, the output, what the graph needs kept
        alive)`` of the step captured."""
        raise NotImplementedError

    def _replay(self, captured: _Captured, batch: tuple[Any, ...]) -> tuple[Any, Any]:
        raise NotImplementedError


class GraphStep(_Replays):
    """``step`` replayed as a CUDA graph on CuPy (see the module). ``gemm`` is the backend's
    cuBLASLt planner: while warming up and capturing, every product goes through it."""

    def __init__(
        self, cupy: Any, gemm: Any, step: Step, slots: Callable[[], list[Any]],
        prepare: Callable[[], None],
    ) -> None:  # fmt: skip
        super().__init__(step, slots, prepare)
        self._cupy, self._gemm = cupy, gemm

    def _key(self, batch: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple((b.shape, b.dtype.str) if b is not None else None for b in batch)

    def _eager(self, batch: tuple[Any, ...]) -> tuple[Any, Any]:
        self._gemm.capturing = True  # the products a graph would take, planned now
        try:
            return self._step(*batch)
        finally:
            self._gemm.capturing = False

    def _record(self, batch: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...], Any, Any, Any]:
        cupy = self._cupy
        inputs = tuple(None if b is None else b.copy() for b in batch)
        stream = cupy.cuda.Stream(non_blocking=True)
        stream.wait_event(cupy.cuda.get_current_stream().record())
        pool = cupy.cuda.MemoryPool()  # the graph's own: nothing else reuses its blocks
        self._gemm.capturing = True
        try:
            with cupy.cuda.using_allocator(pool.malloc), stream:
                stream.begin_capture()
                try:
                    value, out = self._step(*inputs)
                finally:
                    graph = stream.end_capture()
        finally:
            self._gemm.capturing = False
        return graph, inputs, value, out, pool  # the pool lives as long as the graph

    def _replay(self, captured: _Captured, batch: tuple[Any, ...]) -> tuple[Any, Any]:
        captured.prepare(batch, _assign)
        captured.graph.launch()
        return captured.value.copy(), captured.out


class TorchGraphStep(_Replays):
    """``step`` replayed as a CUDA graph on PyTorch (``torch.cuda.CUDAGraph``)."""

    def __init__(
        self, torch: Any, step: Step, slots: Callable[[], list[Any]],
        prepare: Callable[[], None],
    ) -> None:  # fmt: skip
        super().__init__(step, slots, prepare)
        self._torch = torch

    def _key(self, batch: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple((tuple(b.shape), str(b.dtype)) if b is not None else None for b in batch)

    def _eager(self, batch: tuple[Any, ...]) -> tuple[Any, Any]:
        """An eager step on a side stream, as PyTorch asks before a capture."""
        torch = self._torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            result = self._step(*batch)
        torch.cuda.current_stream().wait_stream(side)
        return result

    def _record(self, batch: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...], Any, Any, Any]:
        torch = self._torch
        inputs = tuple(None if b is None else b.clone() for b in batch)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            value, out = self._step(*inputs)
        return graph, inputs, value, out, None

    def _replay(self, captured: _Captured, batch: tuple[Any, ...]) -> tuple[Any, Any]:
        captured.prepare(batch, lambda to, array: to.copy_(array))
        captured.graph.replay()
        return captured.value.clone(), captured.out


def _assign(to: Any, array: Any) -> None:
    to[...] = array
