"""The training and evaluation passes of a ``Sequential``, one concern per piece:

- ``ArrayBatches``: where the batches come from (arrays on the device, reordered each epoch
  from the model's host RNG when shuffling); ``RankBatches``: a rank's part of them in
  data-parallel training.
- ``make_step``: the training step, forward, loss, backward and update of one batch, in one
  function (``make_mixed_step``: the same under a mixed-precision policy;
  ``make_distributed_step``: one rank's, with the gradients summed over the ranks).
- ``Summary``: what a pass reduces and reports (the loss as a mean over rows, each metric's
  sums, ``polynn.metrics``), read back from the device once per pass.
- ``epochs_of`` and ``train``: epochs, the divergence check and the ``Snapshot`` of the
  weights to go back to, validation, callbacks and progress; ``score``: a pass without
  updates (``evaluate`` and validation).

``Sequential.fit`` and ``Sequential.evaluate`` check their arguments and the data, then hand
over to ``train`` and ``score``. Everything the per-batch loop needs is bound to a local name
once per ``fit``: on a tiny network the Python overhead of a step is as large as its arithmetic.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from polynn import compiled as compiling
from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.callbacks import Callback, History
from polynn.compiled import Slot, run
from polynn.distributed import MPI, weighted_means
from polynn.errors import PolynnTypeError, PolynnValueError, TrainingDivergedError
from polynn.layers import Identity, Layer, Softmax, nested
from polynn.losses import BinaryCrossEntropy, CrossEntropy, Loss
from polynn.metrics import Metric, get_metrics
from polynn.optimizers import Optimizer
from polynn.precision import LossScale, half_weights
from polynn.progress import Progress

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = [
    "ArrayBatches",
    "RankBatches",
    "Snapshot",
    "Summary",
    "call_back",
    "check_callbacks",
    "check_distributed",
    "epochs_of",
    "layers_for",
    "make_distributed_step",
    "make_mixed_step",
    "make_step",
    "metrics_for",
    "model_settings",
    "run",
    "score",
    "score_batches",
    "set_training",
    "settings",
    "spans",
    "split",
    "train",
]

Metrics = dict[str, Metric]
Step = Callable[[Any, Any], tuple[Any, Any]]


def spans(rows: int, batch_size: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch of ``batch_size`` rows (one span for ``None``)."""
    if batch_size is None or batch_size >= rows:
        return [(0, rows)]
    return [(start, min(start + batch_size, rows)) for start in range(0, rows, batch_size)]


def split(X: Any, y: Any, fraction: float) -> tuple[Any, Any, tuple[Any, Any]]:
    """``(X, y)`` less its last ``fraction`` of rows, and those rows for validation."""
    keep = int(X.shape[0] * (1.0 - fraction))
    if keep < 1 or keep == X.shape[0]:
        raise PolynnValueError(
            f"validation_split={fraction} of {X.shape[0]} rows leaves {keep} for training and "
            f"{X.shape[0] - keep} for validation; both need at least one."
        )
    return X[:keep, ...], y[:keep, ...], (X[keep:, ...], y[keep:, ...])


def settings(
    model: Sequential,
    loss: Loss,
    optimizer: Optimizer,
    metrics: list[str] | None,
    epochs: int,
    batch_size: int | None,
    shuffle: bool,
    X: Any,
    validation: tuple[Any, Any] | None,
    dist: MPI,
) -> dict[str, Any]:
    """What every rank of data-parallel training must have alike, as ``MPI.agree`` compares
    it: any difference would make the ranks' collectives differ (a hang, or MPI aborting on a
    message of another size) or their models drift apart silently. Replicated, the ranks
    also pass the same rows (sharded, their own)."""
    facts = {
        **model_settings(model, loss, metrics, X, dist),
        "optimizer": repr(optimizer),
        "epochs": epochs,
        "batch_size": batch_size,
        "shuffle": bool(shuffle),
        "validation data": validation is not None,
    }
    if not dist.sharded:
        rows = X.shape[0]
        facts["data"] = f"{rows} rows in {len(spans(rows, batch_size))} batches"
        if validation is not None:
            facts["validation rows"] = validation[0].shape[0]
    return facts


def model_settings(
    model: Sequential, loss: Loss, metrics: Iterable[str] | None, X: Any, dist: MPI
) -> dict[str, Any]:
    """What every rank must have alike to train or score together (``settings``): the
    model, the loss, the metrics and, replicated, the rows."""
    facts = {
        "dtype": model.dtype_name,
        "shapes of the parameters and buffers": [
            tuple(p.value.shape) for p in [*model.params, *model.buffers]
        ],
        "loss": repr(loss),
        "metrics": list(metrics or []),
        "sharded": dist.sharded,
    }
    if not dist.sharded:
        facts["data"] = f"{X.shape[0]} rows"
    return facts


class ArrayBatches:
    """The batches of ``(X, y)`` (and of the rows' weights ``w``, if any), arrays already on
    the backend's device; each batch is a tuple ``(x, y)`` or ``(x, y, w)``.

    Without shuffling (or with a single batch) every epoch sees the same batches, sliced once;
    with shuffling each epoch draws a permutation from ``rng``, the model's host RNG, so one
    seed gives the same batch order on every backend.
    """

    def __init__(
        self,
        X: Any,
        y: Any,
        batch_size: int | None,
        *,
        shuffle: bool,
        backend: Backend,
        rng: HostRNG,
        w: Any = None,
    ) -> None:
        self.rows = X.shape[0]
        self.spans = spans(self.rows, batch_size)
        self.sizes = [stop - start for start, stop in self.spans]
        self._arrays = (X, y) if w is None else (X, y, w)
        self._backend, self._rng, self._shuffle = backend, rng, shuffle
        self._fixed: list[tuple[Any, ...]] | None = None
        if len(self.spans) == 1:
            self._fixed = [self._arrays]
        elif not shuffle:
            self._fixed = self._slice(self._arrays)

    def __len__(self) -> int:
        return len(self.spans)

    def _slice(self, arrays: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._backend.batches(arrays, self.spans)

    def epoch(self) -> list[tuple[Any, ...]]:
        """The next epoch's batches: ``(x, y)`` or ``(x, y, w)`` tuples."""
        if self._fixed is not None:
            return self._fixed
        order = self._backend.from_numpy(self._rng.permutation(self.rows))
        return self._backend.batches(self._arrays, self.spans, order)

    def epoch_arrays(self) -> tuple[Any, ...]:
        """The next epoch's ``(X, y)`` or ``(X, y, w)`` in the epoch's order, whose rows
        ``spans`` cuts into batches (for a step that cuts them itself)."""
        if self._shuffle and len(self.spans) > 1:
            order = self._backend.from_numpy(self._rng.permutation(self.rows))
            return tuple(self._backend.xp.take(a, order, axis=0) for a in self._arrays)
        return self._arrays


class RankBatches:
    """This rank's part of each batch of data-parallel training (see ``polynn.distributed``):
    its share of every global batch of ``batches`` (replicated data), or its own next batch
    (sharded data, padded with empty batches to the steps of the largest shard). ``sizes``
    and ``rows`` are those of the global batches, summed over the ranks."""

    def __init__(self, batches: ArrayBatches, dist: MPI) -> None:
        self._batches, self._dist = batches, dist
        #: Where this rank's rows start in each global batch (for Dropout's masks).
        self.offsets: list[int]
        if dist.sharded:
            everyone = dist.comm.allgather(batches.sizes)
            steps = max(len(sizes) for sizes in everyone)
            self.sizes = [sum(s[i] for s in everyone if i < len(s)) for i in range(steps)]
            before = everyone[: dist.rank]  # the ranks whose rows come first in each step
            self.offsets = [sum(s[i] for s in before if i < len(s)) for i in range(steps)]
        else:
            self.sizes = list(batches.sizes)
            self.offsets = [dist.share(size)[0] for size in self.sizes]
        self.rows = sum(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)

    def epoch(self) -> list[tuple[Any, ...]]:
        local = self._batches.epoch()
        if not self._dist.sharded:
            share = self._dist.share
            return [tuple(a[slice(*share(batch[0].shape[0])), ...] for a in batch)
                    for batch in local]  # fmt: skip
        empty = tuple(a[:0, ...] for a in local[0])
        return local + [empty] * (len(self.sizes) - len(local))


def layers_for(layers: list[Layer], loss: Loss | None) -> list[Layer]:
    """The layers to run with ``loss``: cross-entropy takes logits, so a final Softmax
    (possibly followed by Identity layers) fuses into it."""
    if not isinstance(loss, CrossEntropy):
        return layers
    last = len(layers) - 1
    while last > 0 and isinstance(layers[last], Identity):
        last -= 1
    if isinstance(layers[last], Softmax):
        return layers[:last]
    return layers


def set_training(layers: Iterable[Layer], flag: bool) -> None:
    """Tell ``layers`` whether the passes that follow are training steps (``fit``) or
    inference (validation, ``predict``, ``evaluate``)."""
    for layer in layers:
        layer.training = flag


def make_step(
    layers: Sequence[Layer],
    loss: Loss,
    optimizer: Optimizer,
    *,
    guarded: bool = False,
    compiled: bool = False,
) -> Step:
    """The training step on one batch: ``step(x, y)`` (or ``step(x, y, w)`` with the rows'
    weights) runs forward, the loss, backward and the optimizer's update, and returns the
    batch's loss (a 0-d device array) and the network's output (for the metrics).

    ``guarded`` (for eager epochs of one batch, whose loss is read at every step anyway): the
    loss is read as a float before the update, and a step whose loss is not finite skips it,
    so the weights stay those of the end of the previous epoch. ``compiled``: the step runs
    the device's part of the update only (``Optimizer.apply``); the compiled step around it
    calls ``Optimizer.prepare`` first.
    """
    forwards = [layer.forward for layer in layers]
    backwards = [layer.backward for layer in reversed(layers)]
    value_and_grad, weighted = loss.value_and_grad, loss.weighted_value_and_grad
    update = optimizer.apply if compiled else optimizer.updater()
    isfinite = math.isfinite

    def step(x: Any, y: Any, w: Any = None) -> tuple[Any, Any]:
        out = x
        for forward in forwards:
            out = forward(out)
        value, grad = value_and_grad(out, y) if w is None else weighted(out, y, w)
        for backward in backwards:
            grad = backward(grad)
        if guarded:
            value = float(value)
            if not isfinite(value):
                return value, out
        update()
        return value, out

    return step


def metrics_for(metrics: Sequence[str] | None, loss: Loss, n_outputs: int) -> Metrics:
    """The metrics named in ``metrics``, for a network of ``n_outputs`` outputs trained with
    ``loss`` (one output or binary cross-entropy: each output a probability)."""
    binary = n_outputs == 1 or isinstance(loss, BinaryCrossEntropy)
    return get_metrics(metrics, outputs=n_outputs, binary=binary)


def check_distributed(metrics: Metrics, dist: MPI | None) -> None:
    """Refuse, in data-parallel passes, the metrics that need all the rows at once."""
    whole = [name for name, metric in metrics.items() if metric.whole]
    if dist is not None and whole:
        raise PolynnValueError(
            f"metrics {whole} need all the rows at once, which distributed= does not gather "
            "yet; evaluate them without distributed= (on rank 0, say)."
        )


def make_mixed_step(
    layers: Sequence[Layer],
    loss: Loss,
    optimizer: Optimizer,
    model: Sequential,
    *,
    guarded: bool = False,
    compiled: bool = False,
) -> Step:
    """The training step of a mixed-precision model: as ``make_step``, with the layers
    computing on half-precision copies of the parameters, the loss and its gradient in
    float32, and, with float16, the loss gradient scaled up for the backward pass and the
    parameter gradients scaled back down; a step whose gradients overflowed is skipped
    (``polynn.precision``): eagerly by reading the verdict, compiled by keeping, on the device,
    the old value of every array the update changes (``update_if``)."""
    forwards = [layer.forward for layer in layers]
    backwards = [layer.backward for layer in reversed(layers)]
    value_and_grad, weighted = loss.value_and_grad, loss.weighted_value_and_grad
    update = optimizer.apply if compiled else optimizer.updater()
    backend = model.backend
    xp, params, half, full = backend.xp, model.params, model.compute_dtype, model.dtype
    scaler = model.loss_scale

    def step(x: Any, y: Any, w: Any = None) -> tuple[Any, Any]:
        with half_weights(params, half, xp):
            out = x
            for forward in forwards:
                out = forward(out)
            out = xp.astype(out, full)
            value, grad = value_and_grad(out, y) if w is None else weighted(out, y, w)
            if scaler is not None:
                grad = grad * scaler.scale
            grad = xp.astype(grad, half)
            for backward in backwards:
                grad = backward(grad)
        if guarded:
            value = float(value)
            if not math.isfinite(value):
                return value, out
        if scaler is None:
            update()
        elif compiled:
            update_if(scaler.unscale(params, xp), update, optimizer, backend)
        elif bool(scaler.unscale(params, xp)):
            update()
        return value, out

    return step


def update_if(ok: Any, update: Callable[[], None], optimizer: Optimizer, backend: Backend) -> None:
    """Run ``update`` and keep its results only where ``ok`` (a 0-d device boolean): every
    array it changes (parameters, state, the step count) is chosen between its new and its old
    value on the device, so that nothing is read back to decide."""
    xp = backend.xp
    slots = [Slot(p, "value") for p in optimizer.params]
    slots += [Slot(state, name) for state in optimizer.state for name in state]
    if optimizer.scalars is not None:
        slots.append(Slot(optimizer.scalars, "t"))
    before = [xp.asarray(s.get(), copy=True) if backend.inplace else s.get() for s in slots]
    update()
    for slot, old in zip(slots, before):
        chosen = xp.where(ok, slot.get(), old)
        if backend.inplace:
            slot.get()[...] = chosen
        else:
            slot.set(chosen)


def make_distributed_step(
    layers: Sequence[Layer],
    loss: Loss,
    optimizer: Optimizer,
    model: Sequential,
    dist: MPI,
    sizes: Sequence[int],
    offsets: Sequence[int] = (),
) -> Step:
    """The training step of one rank of data-parallel training: forward and backward on this
    rank's rows of a global batch (``sizes``: the global batches' rows, in the order the steps
    take them), with the loss gradient weighted by this rank's share of the rows so that the
    parameter gradients need only be summed over the ranks: one collective, which also says
    whether a rank failed. Every rank then applies the same update. Returns the batch's loss
    summed over this rank's rows. ``offsets``: where this rank's rows start in each global
    batch, which layers with a ``row_offset`` (Dropout) are told, so that their masks are
    those of one process."""
    forwards = [layer.forward for layer in layers]
    backwards = [layer.backward for layer in reversed(layers)]
    value_and_grad, update = loss.value_and_grad, optimizer.updater()
    backend, params = model.backend, optimizer.params  # frozen ones need no sum
    xp, send = backend.xp, dist.transport(backend).allreduce
    zero = xp.asarray(0.0, dtype=model.dtype, device=backend.device)
    totals = itertools.cycle(sizes)
    starts = itertools.cycle(offsets or [0])
    shifted = [inner for layer in layers for inner in nested(layer) if hasattr(inner, "row_offset")]

    def step(x: Any, y: Any) -> tuple[Any, Any]:
        rows, total, error, value, grads = x.shape[0], next(totals), None, zero, None
        start = next(starts)
        try:
            out = x
            for layer in shifted:
                layer.row_offset = start
            for forward in forwards:
                out = forward(out)
            if rows:
                value, grad = value_and_grad(out, y)
                grad = grad * (rows / total)
                for backward in backwards:
                    grad = backward(grad)
                grads = [p.grad for p in params]
                value = value * rows
        except Exception as exc:  # the other ranks must hear of it, not wait for this one
            error, out = exc, x
        for layer in shifted:
            layer.row_offset = 0
        if grads is None:
            grads = [xp.zeros_like(p.value) for p in params]
        failed = backend.from_numpy([float(error is not None)], model.dtype)
        summed = send([*grads, failed], backend)
        if backend.to_numpy(summed[-1])[0]:
            dist.agree(error)
        for p, g in zip(params, summed):
            p.grad = g
        update()
        return value, out

    return step


def compiled_step(
    model: Sequential, layers: Sequence[Layer], loss: Loss, optimizer: Optimizer
) -> Step:
    """The compiled step of ``model`` with this loss and optimizer: made by the backend once
    and kept on the model for the next ``fit`` with the same ones (a fit per epoch keeps its
    traced function or captured graphs; a new loss or optimizer replaces them)."""
    # A loss named by a string is a new object at every fit: its class and settings count.
    key = (type(loss), repr(loss.get_config()), optimizer, tuple(layers))
    kept = getattr(model, "_compiled", None)
    if kept is not None and kept[0] == key:
        return kept[1]
    if model.mixed:
        step = make_mixed_step(layers, loss, optimizer, model, compiled=True)
    else:
        step = make_step(layers, loss, optimizer, compiled=True)
    step = model.backend.compile_step(
        step,
        compiling.StepState(model, optimizer, layers),
        compiling.objects(model, layers),
        optimizer.prepare,
    )
    model._compiled = (key, step)
    return step


class Summary:
    """The per-batch losses and metric sums of one pass, reduced to the pass's logs."""

    def __init__(
        self,
        values: list[Any],
        counts: dict[str, list[Any]],
        backend: Backend,
        dist: MPI | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``counts[name]`` holds what ``metrics[name]`` kept of each batch. With ``dist``,
        ``values`` are each batch's loss summed over this rank's rows, and losses and metric
        sums are summed over the ranks."""
        self.values, self.counts, self.backend, self.dist = values, counts, backend, dist
        self.metrics = metrics or {}

    def to_host(self, values: list[Any]) -> list[float]:
        """Floats from a list of 0-d device arrays, in one transfer."""
        if len(values) == 1:
            return [float(values[0])]
        return self.backend.floats(values)

    def totals(self) -> list[float]:
        """Every summing metric's sums over the pass, one after another, in one transfer
        (zeros for a pass without batches)."""
        xp, parts = self.backend.xp, []
        for name, kept in self.counts.items():
            metric = self.metrics[name]
            if metric.whole:
                continue
            if kept:
                parts.append(xp.sum(xp.stack(kept), axis=0))
            else:
                parts.append(xp.zeros((metric.width,), device=self.backend.device))
        if not parts:
            return []
        return self.backend.to_numpy(xp.concat(parts)).tolist()

    def results(self, totals: list[float], rows: int) -> dict[str, float]:
        """Each metric's figure: from ``totals`` (as ``totals`` lists them, summed over the
        ranks where there are several), or from all the pass's rows for a whole one."""
        xp, out, start = self.backend.xp, {}, 0
        for name, kept in self.counts.items():
            metric = self.metrics[name]
            if metric.whole and not kept:
                out[name] = math.nan
            elif metric.whole:
                pred = xp.concat([batch[0] for batch in kept], axis=0)
                target = xp.concat([batch[1] for batch in kept], axis=0)
                out[name] = float(metric.result_all(pred, target, xp))
            else:
                out[name] = metric.result(totals[start : start + metric.width], rows)
                start += metric.width
        return out

    def logs(self, sizes: list[int], rows: int) -> tuple[dict[str, float], list[float]]:
        """The logs of a pass over batches of ``sizes`` rows (the loss as a mean over rows,
        each metric over all rows) and the per-batch losses."""
        batch_losses = self.to_host(self.values)
        totals = self.totals()
        if self.dist is not None:  # one collective: every batch's loss and every sum
            summed = self.dist.sum_floats([*batch_losses, *totals], self.backend)
            batch_losses = weighted_means(summed[: len(sizes)], sizes)
            totals = summed[len(sizes) :]
        if len(batch_losses) == 1:
            logs = {"loss": batch_losses[0]}
        else:
            logs = {"loss": sum(map(operator.mul, batch_losses, sizes)) / rows}
        logs.update(self.results(totals, rows))
        return logs, batch_losses


def score(
    layers: Sequence[Layer],
    X: Any,
    y: Any,
    loss: Loss,
    metrics: Metrics,
    batch_size: int | None,
    backend: Backend,
    dist: MPI | None = None,
    w: Any = None,
    forward: Callable[[Any], Any] | None = None,
) -> dict[str, float]:
    """The loss and metrics of the network over ``(X, y)``, in batches, without updates;
    with ``w`` (the rows' weights, averaging 1) the loss is the weighted mean. ``forward``:
    the inference pass of a batch (``polynn.compiled.forward``; ``run`` of ``layers`` by
    default).

    With ``dist`` each rank scores its share of the rows (replicated data) or its own rows
    (sharded), and the sums are added over the ranks."""
    if dist is not None and not dist.sharded:
        start, stop = dist.share(X.shape[0])
        X, y = X[start:stop, ...], y[start:stop, ...]
    batch_spans = spans(X.shape[0], batch_size) if X.shape[0] else []
    batches = (
        (X[a:b, ...], y[a:b, ...]) + (() if w is None else (w[a:b, ...],)) for a, b in batch_spans
    )
    if dist is None:
        return score_batches(layers, batches, loss, metrics, backend, forward)
    check_distributed(metrics, dist)
    width = sum(metric.width for metric in metrics.values())  # no whole ones: checked
    error, local = None, [0.0] * (1 + width)
    summary = Summary([], {}, backend, metrics=metrics)
    try:  # a failure here must reach the other ranks, which wait in the sum below
        values, counts, _ = _passes(layers, batches, loss, metrics, backend, True, forward)
        summary = Summary(values, counts, backend, metrics=metrics)
        local = [sum(summary.to_host(values)) if values else 0.0, *summary.totals()]
    except Exception as exc:
        error = exc
    total = dist.sum_floats([*local, float(X.shape[0]), float(error is not None)], backend)
    if total[-1]:
        dist.agree(error)
    rows = total[-2]
    return {"loss": total[0] / rows, **summary.results(total[1:-2], rows)}


def score_batches(
    layers: Sequence[Layer],
    batches: Iterable[tuple[Any, ...]],
    loss: Loss,
    metrics: Metrics,
    backend: Backend,
    forward: Callable[[Any], Any] | None = None,
) -> dict[str, float]:
    """The loss and metrics over ``batches`` (``(x, y)`` or ``(x, y, w)`` tuples on the
    device, from arrays or a stream), without updates."""
    values, counts, sizes = _passes(layers, batches, loss, metrics, backend, False, forward)
    return Summary(values, counts, backend, metrics=metrics).logs(sizes, sum(sizes))[0]


def _passes(
    layers: Sequence[Layer],
    batches: Iterable[tuple[Any, ...]],
    loss: Loss,
    metrics: Metrics,
    backend: Backend,
    by_rows: bool = False,
    forward: Callable[[Any], Any] | None = None,
) -> tuple[list[Any], dict[str, list[Any]], list[int]]:
    """Each batch's loss (``by_rows``: times its rows) and metric counts, and its rows."""
    xp = backend.xp
    forward = forward or functools.partial(run, layers)
    values: list[Any] = []
    counts: dict[str, list[Any]] = {name: [] for name in metrics}
    sizes: list[int] = []
    for xb, yb, *wb in batches:
        out = xp.astype(forward(xb), yb.dtype, copy=False)  # from half
        if wb:
            value = loss.weighted_value_and_grad(out, yb, wb[0])[0]
        else:
            value = loss.value(out, yb)
        values.append(value * xb.shape[0] if by_rows else value)
        sizes.append(xb.shape[0])
        for name, fn in metrics.items():
            counts[name].append(fn(out, yb, xp))
    return values, counts, sizes


def epochs_of(
    batches: ArrayBatches | RankBatches,
    step: Step,
    metrics: Metrics,
    backend: Backend,
    epochs: int,
    optimizer: Optimizer,
    tick: Callable[[], None] | None,
    scaler: LossScale | None = None,
    dist: MPI | None = None,
    begin: Callable[[int], None] | None = None,
    counted: bool = False,
) -> Iterator[dict[str, float]]:
    """Train epoch after epoch, yielding each one's logs (loss, metrics and the learning rate
    ``lr`` of its last step); a loss that turns inf or NaN raises ``TrainingDivergedError``.
    ``begin(epoch)`` runs before each epoch (callbacks, an epoch-counting schedule).
    ``counted``: the steps counted every step in ``Optimizer.iterations``, skipped float16
    steps included (compiled steps), so those are taken off at the epoch's end."""
    xp = backend.xp
    isfinite = math.isfinite
    # A tiny network's common case, kept cheap:
    quick = len(batches) == 1 and not metrics and dist is None
    # A compiled step that cuts its batch from the epoch's arrays itself (JAX: one dispatch a
    # step, where slicing outside it costs one per array).
    rows = getattr(step, "rows", None) if isinstance(batches, ArrayBatches) else None
    for epoch in range(epochs):
        if begin is not None:
            begin(epoch)
        values: list[Any] = []
        counts: dict[str, list[Any]] = {name: [] for name in metrics} if metrics else {}
        if rows is not None:
            arrays, last = batches.epoch_arrays(), len(batches.spans) - 1
            epoch_batches: Iterable[Any] = (
                (arrays, span, i == last) for i, span in enumerate(batches.spans)
            )  # the parameters' gradients: those of the epoch's last step
        else:
            epoch_batches = batches.epoch()
        for batch in epoch_batches:
            if rows is not None:
                value, out = rows(*batch)
                yb = batch[0][1][slice(*batch[1]), ...] if metrics else None
            else:
                value, out = step(*batch)
                yb = batch[1]
            values.append(value)
            if metrics:
                for name, fn in metrics.items():
                    counts[name].append(fn(out, yb, xp))
            if tick is not None:
                tick()
        optimizer.epochs += 1
        if quick:
            batch_losses = [float(value)]
            logs = {"loss": batch_losses[0]}
        else:
            summary = Summary(values, counts, backend, dist, metrics)
            logs, batch_losses = summary.logs(batches.sizes, batches.rows)
        if not isfinite(logs["loss"]):
            bad = next(i for i, v in enumerate(batch_losses) if not isfinite(v))
            raise TrainingDivergedError(
                f"training diverged at epoch {epoch + 1}/{epochs}, batch {bad + 1}/"
                f"{len(batches)}: the loss is {batch_losses[bad]}"
                + divergence_hint(epoch == 0 and bad == 0, optimizer, scaler)
            )
        logs["lr"] = optimizer.lr
        if scaler is not None:
            logs["loss_scale"] = float(scaler.scale)
            skipped = scaler.take_skipped()
            logs["skipped_steps"] = float(skipped)
            if counted:  # the compiled steps counted the skipped ones too
                optimizer.iterations -= skipped
        yield logs


def divergence_hint(first_step: bool, optimizer: Optimizer, scaler: LossScale | None) -> str:
    """What a divergence message suggests after the loss: the learning rate cannot be the
    cause when the very first batch of a ``fit`` diverged (no update had been made), and a
    float16 model's activations overflow at 65504."""
    half = (
        "this model computes in float16, whose largest value is 65504: values beyond it "
        "inside the network overflow; scale the inputs, or use dtype='mixed_bfloat16' or "
        "'float32'"
    )
    if not first_step:
        hint = f". Try a lower learning rate (this optimizer has lr={optimizer.lr:g}), or "
        return hint + "scale the inputs." + (f" Note that {half}." if scaler is not None else "")
    overflow = "the network's output overflows for these inputs (with the weights it has); "
    cause = half if scaler is not None else overflow + "scale the inputs"
    return f" before any update of this fit, so the learning rate is not the cause: {cause}."


class Snapshot:
    """A copy of the weights and buffers (running statistics) to go back to when training
    diverges: taken before ``fit`` starts and again at the end of each epoch but the last (at
    the end of the one before the last only, when each epoch is one guarded step: see
    ``make_step``). It costs one copy of the parameters in memory, and one copy operation per
    epoch; none where the backend never writes into arrays (JAX): the arrays themselves are
    kept. ``params``: every array to keep, parameters and buffers alike."""

    def __init__(self, params: Sequence[Any], backend: Backend) -> None:
        self.params, self.xp, self.inplace = params, backend.xp, backend.inplace
        self.values: list[Any] = []
        self.take(0)

    def take(self, epochs_done: int) -> None:
        if self.values and self.inplace:  # into the same buffers: no second copy at once
            for value, p in zip(self.values, self.params):
                value[...] = p.value
        elif self.inplace:
            self.values = [self.xp.asarray(p.value, copy=True) for p in self.params]
        else:
            self.values = [p.value for p in self.params]
        self.epochs_done = epochs_done

    def finite(self) -> bool:
        """Whether the model's current weights and buffers are all finite (one read from the
        device)."""
        xp = self.xp
        return bool(xp.all(xp.stack([xp.all(xp.isfinite(p.value)) for p in self.params])))

    def restore(self) -> None:
        for p, value in zip(self.params, self.values):
            p.value = value
        self.values = []  # they now are the parameters
        self.take(self.epochs_done)

    def describe(self) -> str:
        if self.epochs_done == 0:
            return "the weights it had before this fit"
        return f"the weights of the end of epoch {self.epochs_done}"


def check_callbacks(callbacks: Sequence[Callback] | None) -> list[Callback]:
    """``callbacks`` as a list, each checked to be a ``Callback``."""
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (Iterable, type(None))):
        raise PolynnTypeError(
            f"callbacks must be a list of Callback objects, e.g. [cb]; got {callbacks!r}."
        )
    callbacks = list(callbacks or ())
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise PolynnTypeError(
                f"callbacks must be polynn Callback objects; got {type(cb).__name__}."
            )
    return callbacks


def train(
    model: Sequential,
    layers: Sequence[Layer],
    batches: ArrayBatches,
    *,
    loss: Loss,
    optimizer: Optimizer,
    metrics: Metrics,
    epochs: int,
    validation: tuple[Any, Any] | None,
    callbacks: Sequence[Callback],
    verbose: int,
    dist: MPI | None = None,
    compile: bool | str = "auto",
) -> History:
    """Run ``epochs`` epochs of ``batches`` through ``layers``, reporting to the callbacks
    and the progress bar after each; return the ``History``. With ``dist``, this rank's part
    of data-parallel training (``polynn.distributed``). ``compile``: whether the step is
    compiled where the backend can (``polynn.compiled``)."""
    backend = model.backend
    check_distributed(metrics, dist)
    if dist is not None:  # every rank starts from rank 0's weights and batch order
        values = dist.transport(backend).broadcast([p.value for p in model.params], backend)
        for p, value in zip(model.params, values):
            p.value = value
        model._rng.state = dist.comm.bcast(model._rng.state, root=0)
        batches = RankBatches(batches, dist)
        verbose = verbose if dist.is_root else 0
    history = History()
    callbacks = [history, *callbacks]
    for cb in callbacks:
        cb.set_model(model)
    model.stop_training = False
    setters = [type(cb).__name__ for cb in callbacks if cb.sets_weights]
    call_back(dist, model, callbacks, "on_train_begin", {},
              facts=lambda: {"callbacks that set the weights": setters})  # fmt: skip
    progress = Progress(epochs, len(batches) or None, verbose)  # None: a stream, not known
    tick = progress.batch_done if progress.per_batch else None
    if compile == "always":  # POLYNN_COMPILE=1: insist wherever the backend compiles
        compile = backend.compile_reason() is None and dist is None
    elif compile == "auto" and not backend.compiles_by_default:
        compile = False
    why = compiling.reason(model, loss, optimizer, dist) if compile is not False else None
    if compile is True and why is not None:
        raise PolynnValueError(f"compile=True, but this fit cannot be compiled: {why}.")
    compiled = compile is not False and why is None
    # A guarded step skips a diverging update, but a forward pass has already changed the
    # buffers (BatchNorm's running statistics): a model with buffers snapshots every epoch.
    guarded = len(batches) == 1 and dist is None and not model.buffers and not compiled
    if dist is not None:
        step = make_distributed_step(
            layers, loss, optimizer, model, dist, batches.sizes, batches.offsets
        )
    elif compiled:
        step = compiled_step(model, layers, loss, optimizer)
    elif model.mixed:
        step = make_mixed_step(layers, loss, optimizer, model, guarded=guarded)
    else:
        step = make_step(layers, loss, optimizer, guarded=guarded)
    snapshot = Snapshot([*model.params, *model.buffers], backend)

    # Before each epoch: an epoch-counting schedule, and the callbacks that want to know.
    starters = [cb for cb in callbacks if type(cb).on_epoch_begin is not Callback.on_epoch_begin]
    per_epoch = optimizer.schedule is not None and optimizer.schedule.per == "epoch"

    def begin(epoch: int) -> None:
        optimizer.start_epoch()
        if starters or dist is not None:  # every rank agrees, also one with no such callback
            call_back(dist, model, starters, "on_epoch_begin", epoch, {})

    if model.loss_scale is not None:  # float16's scale as this fit found it
        scale = (float(model.loss_scale.scale), model.loss_scale.clean_steps)
    logs: dict[str, float] = {}
    epoch, source = -1, "training"  # the last epoch that ended finite; what diverged
    set_training(model.layers, True)
    try:
        for epoch, logs in enumerate(
            epochs_of(
                batches,
                step,
                metrics,
                backend,
                epochs,
                optimizer,
                tick,
                model.loss_scale,
                dist,
                begin if starters or per_epoch or dist is not None else None,
                counted=compiled,
            )
        ):
            model.epochs_trained += 1
            if validation is not None:
                set_training(model.layers, False)  # validation infers
                with model._half_weights():
                    scores = score(layers, *validation, loss, metrics, None, backend, dist,
                                   forward=compiling.forward(model, layers))  # fmt: skip
                set_training(model.layers, True)
                logs.update({f"val_{k}": v for k, v in scores.items()})
                if not math.isfinite(logs["val_loss"]):
                    source = "validation"
                    raise TrainingDivergedError(
                        f"training diverged at epoch {epoch + 1}/{epochs}: the validation loss "
                        f"is {logs['val_loss']}. Try a lower learning rate (this optimizer has "
                        f"lr={optimizer.lr:g}), or scale the inputs."
                    )
            # Each epoch but the last may be the one to go back to (in guarded epochs only the
            # one before the last: the others are kept by skipping the diverging update).
            if epoch + 2 == epochs or (not guarded and epoch + 1 < epochs):
                snapshot.take(epoch + 1)
            if progress.enabled:
                progress.end_epoch(logs)
            call_back(dist, model, callbacks, "on_epoch_end", epoch, logs,
                      facts=lambda: {"learning rate": optimizer.lr})  # fmt: skip
            if model.stop_training:
                break
        if epochs and not snapshot.finite():
            source = "weights"
            raise TrainingDivergedError(
                f"training diverged: after the last update (epoch {epoch + 1}/{epochs}) the "
                f"weights are not finite. Try a lower learning rate (this optimizer has "
                f"lr={optimizer.lr:g}), or scale the inputs."
            )
    except TrainingDivergedError as exc:
        # In a guarded epoch the diverging step was not applied: the weights are still those
        # of the epoch before, if they are finite.
        if guarded and source == "training" and snapshot.finite():
            kept = "the weights it had before this fit"
            if epoch >= 0:
                kept = f"the weights of the end of epoch {epoch + 1}"
        else:
            snapshot.restore()
            kept = snapshot.describe()
        optimizer.reset()  # its momentum or moments may hold inf or NaN by now
        if model.loss_scale is not None:
            model.loss_scale.scale, model.loss_scale.clean_steps = scale
        raise TrainingDivergedError(
            f"{exc} The model keeps {kept}; the optimizer's state (momentum, moments) starts "
            "afresh."
        ) from None
    finally:
        set_training(model.layers, False)
        progress.close()
    call_back(dist, model, callbacks, "on_train_end", logs)
    return history


def call_back(
    dist: MPI | None,
    model: Sequential,
    callbacks: Sequence[Callback],
    hook: str,
    *args: Any,
    facts: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Call ``hook`` of each callback in turn. Under ``dist`` every rank then agrees, in one
    collective (``MPI.agree``): an error on any rank raises on every rank, a stop
    (``model.stop_training``) asked on any rank stops every rank, and ``facts()``, taken
    after the callbacks, must be alike on every rank."""
    if dist is None:
        for cb in callbacks:
            getattr(cb, hook)(*args)
        return
    error = None
    try:
        for cb in callbacks:
            getattr(cb, hook)(*args)
    except Exception as exc:
        error = exc
    stop = model.stop_training
    model.stop_training = dist.agree(error, stop=stop, facts=None if facts is None else facts())
