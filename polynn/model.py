"""``Sequential``: a stack of layers on one backend, with ``fit``, ``predict`` and ``evaluate``."""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from polynn import compiled as compiling
from polynn import files, streaming
from polynn._checks import integer, number, unknown_keywords
from polynn._checks import path as checks_path
from polynn.backends import POLICIES, Backend, check_matmul_precision, dtype_name, get
from polynn.backends.host import HostRNG
from polynn.callbacks import Callback, History
from polynn.compiled import mode as compiled_mode
from polynn.data import input_dtype, inputs, normalised, pairs, weights
from polynn.distributed import MPI, agreed
from polynn.distributed import check as distributed_check
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.export import export_onnx
from polynn.layers import Layer, Parameter, check_declared, check_stack, fuse
from polynn.layers.core import init_hint
from polynn.losses import Loss, get_loss
from polynn.optimizers import Optimizer, get_optimizer
from polynn.precision import LossScale, half_weights
from polynn.streaming import StreamBatches, is_stream
from polynn.training import (
    ArrayBatches,
    check_callbacks,
    layers_for,
    metrics_for,
    model_settings,
    run,
    score,
    score_batches,
    set_training,
    settings,
    spans,
    split,
    train,
)

__all__ = ["Sequential"]


class Sequential:
    """Layers applied one after another, all on one backend and device.

    >>> import polynn as pn
    >>> net = pn.Sequential(pn.Dense(2, 8), pn.Tanh(), pn.Dense(8, 1), pn.Sigmoid(), seed=0)
    >>> net.backend.name, net.dtype_name
    ('numpy', 'float32')

    ``backend`` is a name (``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"``,
    ``"array_api_strict"``, ``"auto"``), a namespace, or None for the ``POLYNN_BACKEND``
    environment variable, else NumPy. ``seed`` fixes the initial weights and the batch order,
    identically on every backend. ``matmul_precision="high"`` lets float32 matrix products
    use TF32 tensor cores on CUDA (CuPy, PyTorch, JAX), only inside this model's calls;
    ``"highest"`` (the default) keeps them in full float32. NumPy ignores it.
    """

    def __init__(
        self,
        *layers: Layer,
        backend: str | Backend | None = None,
        device: Any = None,
        dtype: Any = "float32",
        seed: int | None = None,
        matmul_precision: str = "highest",
        **unknown: Any,
    ) -> None:
        if unknown:
            raise unknown_keywords("Sequential", unknown, Sequential.__init__, SEQUENTIAL_ALIASES)
        entry, out = check_stack(layers)
        check_matmul_precision(matmul_precision)
        if seed is not None:
            seed = integer(seed, "seed", 0)
        self.layers = list(layers)
        self.backend = get(backend, device)
        self.dtype_name = dtype_name(dtype)
        #: The parameters' dtype (float32 under a mixed-precision policy) ...
        self.dtype = self.backend.dtype(self.dtype_name)
        #: ... and the dtype the layers compute in (the policy's half type).
        self.compute_dtype = self.backend.compute_dtype(self.dtype_name)
        self.mixed = self.dtype_name in POLICIES
        self.seed = seed
        self.matmul_precision = matmul_precision
        #: The shape of each row of ``X`` (None: any) and of each output row; ``None`` for
        #: a size that the data fixes (a sequence's length).
        self.input_shape, self.output_shape = entry, out
        self.in_features = None if entry is None else entry[-1]
        self.n_outputs = None if out is None else out[-1]
        self._rng = HostRNG(seed)
        with self.backend.context():
            for i, layer in enumerate(layers):
                init = init_hint(layers, i)
                if self.mixed:
                    layer.compute_dtype = self.compute_dtype
                layer.build(self.backend, self.dtype, self._rng, init)
        if hasattr(layers[0], "need_input_grad"):  # a first Dense or convolution
            layers[0].need_input_grad = False
        self._layers = fuse(layers)  # the layers that run: activations fused into Dense
        self.params: list[Parameter] = [p for layer in layers for p in layer.params]
        #: Non-trainable arrays (running statistics), saved with the model.
        self.buffers: list[Parameter] = [b for layer in layers for b in layer.buffers]
        check_declared(self.layers, self.params, self.buffers)
        #: float16's dynamic loss scaling (``polynn.precision``); it lasts across ``fit`` calls.
        self.loss_scale = LossScale() if self.dtype_name == "mixed_float16" else None
        if self.loss_scale is not None:
            self.loss_scale.bind(self.backend.xp, self.backend.device, self.backend.inplace)
        #: The loss, metrics and optimizer of the last ``fit`` (or of the file it was loaded
        #: from): ``fit`` and ``evaluate`` use them when called without.
        self.loss: Loss | None = None
        self.metrics: list[str] | None = None
        self.optimizer: Optimizer | None = None
        #: True for a model loaded from a format-1 file, which does not record its loss.
        self.loss_unknown = False
        #: Epochs trained, across ``fit`` calls and files (``ModelCheckpoint``'s ``{epoch}``
        #: and ``CSVLogger``'s epoch column count them).
        self.epochs_trained = 0
        #: The best value of each figure a ``ModelCheckpoint(save_best_only=True)`` monitored,
        #: ``{name: (mode, value)}``; kept across ``fit`` calls and in files.
        self.checkpoint_best: dict[str, tuple[str, float]] = {}
        self.stop_training = False
        self._last_output_shape: tuple[int, ...] | None = None
        #: The compiled training step of the last compiled fit, with what it was made for.
        self._compiled: tuple[Any, Any] | None = None

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        extra = ""
        if self.matmul_precision != "highest":
            extra = f", matmul_precision={self.matmul_precision!r}"
        return (
            f"Sequential({inner}, backend={self.backend.name!r}, "
            f"device={self.backend.device!r}, dtype={self.dtype_name!r}{extra})"
        )

    def _half_weights(self) -> contextlib.AbstractContextManager:
        """Under a mixed-precision policy, the layers compute with half-precision copies of
        the parameters inside this block (``polynn.precision.half_weights``)."""
        if not self.mixed:
            return contextlib.nullcontext()
        return half_weights(self.params, self.compute_dtype, self.backend.xp)

    @contextlib.contextmanager
    def _training_flag(self, flag: bool | None) -> Iterator[None]:
        """The layers train (``flag=True``) or infer (False) inside this block, then are put
        back as they were: a callback may predict in the middle of ``fit``. None changes
        nothing."""
        if flag is None:
            yield
            return
        before = [layer.training for layer in self.layers]
        set_training(self.layers, flag)
        try:
            yield
        finally:
            for layer, was in zip(self.layers, before):
                layer.training = was

    def _inference(self) -> contextlib.AbstractContextManager:
        """The layers infer inside this block (``predict``, ``evaluate``)."""
        return self._training_flag(False)

    # -- explicit passes --------------------------------------------------------------------
    def forward(self, X: Any, *, training: bool | None = None) -> Any:
        """Run every layer on ``X`` (checked and moved to the backend); keep what backward needs.
        The output is in the compute dtype (a mixed-precision model's half type).

        ``training=True`` runs the layers as in a training step of ``fit`` (Dropout drops,
        BatchNorm uses and updates the batch statistics), ``False`` as in ``predict``; the
        flags are put back afterwards. ``None`` (the default) leaves them as they are (False
        outside ``fit``). A manual training loop calls ``forward(x, training=True)``, a
        loss's ``value_and_grad``, ``backward`` and an optimizer's ``update``."""
        if training is not None and not isinstance(training, bool):
            raise PolynnTypeError(f"training must be True, False or None; got {training!r}.")
        with self.backend.context(self.matmul_precision), self._half_weights():
            with self._training_flag(training):
                out = run(self._layers, inputs(self, X))
            self._last_output_shape = tuple(out.shape)
            return out

    def __call__(self, X: Any, batch_size: int | None = None) -> Any:
        """``net(X)`` is ``net.predict(X)``: the output in inference mode."""
        return self.predict(X, batch_size)

    def backward(self, grad: Any) -> None:
        """Backpropagate ``grad`` (the loss gradient w.r.t. the last ``forward``'s output);
        each ``Parameter.grad`` in ``self.params`` is filled."""
        if self._last_output_shape is None:
            raise PolynnValueError("backward needs a forward pass first: call net.forward(X).")
        if not self.backend.owns(grad) or tuple(grad.shape) != self._last_output_shape:
            raise PolynnValueError(
                f"backward expects a gradient array of backend {self.backend.name!r} shaped "
                f"like the last forward's output {self._last_output_shape}; got "
                f"{type(grad).__name__} of shape {tuple(getattr(grad, 'shape', ()))}."
            )
        with self.backend.context(self.matmul_precision), self._half_weights():
            # A copy: the backward pass may write into the gradient it is given.
            grad = self.backend.xp.astype(grad, self.compute_dtype, copy=True)
            for layer in reversed(self._layers):
                grad = layer.backward(grad)

    def predict(
        self,
        X: Any,
        batch_size: int | None = None,
        *,
        until: int | None = None,
        **unknown: Any,
    ) -> Any:
        """The network's output for ``X``, an array of the backend on its device, in the
        parameters' dtype (float32 also under a mixed-precision policy). ``X`` may also be a
        stream of batches (``polynn.streaming``): the outputs are then concatenated.

        ``until=k`` gives the output of the first ``k`` layers instead (``net.layers[:k]``,
        each computing itself alone: a Dense's output before the activation after it when
        ``k`` falls between them), e.g. a hidden layer's features.
        """
        if unknown:
            raise unknown_keywords("predict", unknown, Sequential.predict, {})
        if batch_size is not None:
            batch_size = integer(batch_size, "batch_size", 1)
        layers = self._layers
        if until is not None:
            until = integer(until, "until", 1)
            if until > len(self.layers):
                raise PolynnValueError(
                    f"until={until}, but the model has {len(self.layers)} layers; "
                    f"expected 1 to {len(self.layers)}."
                )
            layers = fuse(self.layers[:until])
        xp, infer = self.backend.xp, compiling.forward(self, layers)
        with self.backend.context(self.matmul_precision), self._half_weights(), self._inference():
            if is_stream(X):
                stream = streaming.inputs(X, self.backend, input_dtype(self))
                chunks = [infer(inputs(self, x)) for x in stream]
                if not chunks:
                    raise PolynnValueError("the data stream gave no batches to predict.")
            else:
                X = inputs(self, X)
                batch_spans = spans(X.shape[0], batch_size)
                chunks = [infer(X[a:b, ...]) for a, b in batch_spans]
            out = chunks[0] if len(chunks) == 1 else xp.concat(chunks, axis=0)
            out = xp.astype(out, self.dtype, copy=False)
            if not bool(xp.all(xp.isfinite(out))):
                raise self._overflow("the network's output is not finite for some rows")
            return out

    def _overflow(self, what: str) -> PolynnValueError:
        """The error of ``predict`` and ``evaluate`` for figures that are not finite: the
        inputs were checked to fit the dtype, so the network's arithmetic overflowed; the
        largest weight tells whether training diverged."""
        xp = self.backend.xp
        largest = max((float(xp.max(xp.abs(p.value))) for p in self.params), default=0.0)
        return PolynnValueError(
            f"{what}: the network's arithmetic overflows {self.dtype_name} for these inputs "
            f"(its largest weight is {largest:.3g}). If training diverged (weights that large "
            "suggest it), train again with a lower learning rate; otherwise scale the inputs, "
            "or use dtype='float64'."
        )

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        loss: str | Loss | None = None,
        optimizer: str | Optimizer | None = None,
        epochs: int = 1,
        batch_size: int | None = None,
        shuffle: bool = True,
        verbose: int = 1,
        metrics: Sequence[str] | None = None,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        callbacks: Sequence[Callback] | None = None,
        sample_weight: Any = None,
        class_weight: dict[int, float] | None = None,
        distributed: MPI | None = None,
        compile: bool | str | None = None,
        **unknown: Any,
    ) -> History:
        """Train on ``(X, y)`` and return a ``History`` (``history[name]``: one float per
        epoch for the loss, each metric, the learning rate ``lr`` and, with validation data,
        the ``val_`` figures).

        ``loss``, ``optimizer`` and ``metrics`` left out are the model's own: those of the
        last ``fit`` or of the file it was loaded from, else MSE, ``SGD(lr=0.01)`` and none.
        The optimizer keeps its state from one ``fit`` to the next.
        ``batch_size=None`` trains on the full batch; ``shuffle`` reorders the rows each
        epoch (from the model's seed) when there are several batches.
        ``sample_weight`` (one non-negative weight per row) and ``class_weight`` (``{class
        index: weight}``, for class targets) make the loss a weighted mean; the weights are
        scaled to average 1, so each batch's loss is ``mean(w * loss per row)``. Metrics are
        not weighted.
        ``verbose=1`` shows a progress bar over the epochs, ``verbose=2`` also one over each
        epoch's batches, ``verbose=0`` nothing; where stderr is not a terminal, one line per
        epoch instead of bars.
        ``validation_split`` holds out that fraction of the last rows (before shuffling).
        ``distributed=pn.distributed.MPI()`` trains data-parallel over the processes of an
        MPI launch (see ``polynn.distributed``). The loop itself is ``polynn.training.train``.

        ``X`` may instead be a stream of ``(X, y)`` batches, with ``y`` left out: an iterable,
        or a function returning a new one for each epoch (``polynn.streaming``); the next
        batches are read and copied to the device while the current one computes.

        Only the parameters of layers with ``trainable = True`` are updated (``freeze``).

        ``compile`` (``"auto"``, True or False; None reads ``POLYNN_COMPILE``, else auto):
        whether each training step runs as one compiled unit where the backend can (a CUDA
        graph on CuPy and on PyTorch's CUDA devices, ``jax.jit`` on JAX; see
        ``polynn.compiled``). ``"auto"`` compiles on JAX (CUDA graphs: with True) and runs
        eagerly elsewhere, True raises an error saying why it cannot, False never compiles.
        Results equal the eager steps'.
        """
        if unknown:
            raise unknown_keywords("fit", unknown, Sequential.fit, FIT_ALIASES)
        compile = compiled_mode(compile)
        dist = distributed_check(distributed)
        facts: dict[str, Any] = {}  # what every rank must have alike (distributed)
        with self.backend.context(self.matmul_precision):
            with agreed(dist, facts):  # a bad argument, bad data or other settings on one
                prepared = self._prepare_fit(  # rank stop every rank
                    X, y, loss=loss, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
                    shuffle=shuffle, verbose=verbose, metrics=metrics,
                    validation_data=validation_data, validation_split=validation_split,
                    callbacks=callbacks, sample_weight=sample_weight, class_weight=class_weight,
                    dist=dist, facts=facts,
                )  # fmt: skip
            return self._train(*prepared, verbose=int(verbose), dist=dist, compile=compile)

    def _prepare_fit(
        self,
        X: Any,
        y: Any,
        *,
        loss: str | Loss | None,
        optimizer: str | Optimizer | None,
        epochs: int,
        batch_size: int | None,
        shuffle: bool,
        verbose: int,
        metrics: Sequence[str] | None,
        validation_data: tuple[Any, Any] | None,
        validation_split: float,
        callbacks: Sequence[Callback] | None,
        sample_weight: Any,
        class_weight: dict[int, float] | None,
        dist: MPI | None,
        facts: dict[str, Any],
    ) -> tuple[Any, ...]:
        """``fit``'s arguments checked and its data assembled: the positional arguments of
        ``_train``. Under ``dist``, ``facts`` receives the settings every rank must share."""
        epochs = integer(epochs, "epochs", 0)
        if batch_size is not None:
            batch_size = integer(batch_size, "batch_size", 1)
        if verbose not in (0, 1, 2):
            raise PolynnValueError(f"verbose must be 0, 1 or 2; got {verbose!r}.")
        validation_split = number(validation_split, "validation_split", 0.0, 1.0)
        if validation_split and validation_data is not None:
            raise PolynnValueError("pass validation_data or validation_split, not both.")
        if validation_data is not None and (
            not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2
        ):
            raise PolynnTypeError("validation_data must be a pair (X_val, y_val).")
        stream = _stream_or_pair(X, y, "fit")
        if stream and (batch_size is not None or validation_split or sample_weight is not None
                       or class_weight is not None or dist is not None):  # fmt: skip
            raise PolynnValueError(
                "with a stream of batches, the stream makes the batches: batch_size, "
                "validation_split, sample_weight, class_weight and distributed do not apply "
                "(validation_data does)."
            )
        if stream and epochs > 1 and isinstance(X, Iterator):
            raise PolynnValueError(
                f"an iterator of batches can be read once, and epochs={epochs}: pass a function "
                "that returns a new iterator for each epoch, e.g. fit(lambda: batches(), ...)."
            )
        loss = self._loss(loss, "fit")
        optimizer = get_optimizer(optimizer if optimizer is not None else self.optimizer)
        metrics = self._metrics(metrics)
        metric_fns = metrics_for(metrics, loss, self.n_outputs)
        callbacks = check_callbacks(callbacks)
        if dist is not None and self.mixed:
            raise PolynnValueError(
                f"distributed training runs in float32 or float64; dtype={self.dtype_name!r} "
                "is not supported with distributed= yet."
            )
        if dist is not None and (sample_weight is not None or class_weight is not None):
            raise PolynnValueError(
                "sample_weight and class_weight are not supported with distributed= yet."
            )
        if stream:
            validation = None if validation_data is None else pairs(self, *validation_data, loss)
            batches = StreamBatches(
                X, lambda x, y: pairs(self, x, y, loss), self.backend, input_dtype(self)
            )
            return batches, loss, optimizer, metrics, metric_fns, epochs, validation, callbacks
        X, y = pairs(self, X, y, loss)
        w = None
        if sample_weight is not None or class_weight is not None:
            w = weights(self, y, loss, sample_weight, class_weight)
        if validation_split:
            X, y, validation = split(X, y, validation_split)
            if w is not None:  # the training rows' weights, averaging 1 again
                w = normalised(self, w[: X.shape[0], ...], "training rows")
        elif validation_data is not None:
            validation = pairs(self, *validation_data, loss)
        else:
            validation = None
        if dist is not None:
            facts.update(settings(self, loss, optimizer, metrics, epochs, batch_size, shuffle, X,
                                  validation, dist))  # fmt: skip
            if dist.sharded:
                batch_size = dist.local_batch_size(batch_size)
        batches = ArrayBatches(
            X, y, batch_size, shuffle=shuffle, backend=self.backend, rng=self._rng, w=w
        )
        return batches, loss, optimizer, metrics, metric_fns, epochs, validation, callbacks

    def _train(
        self,
        batches: ArrayBatches | StreamBatches,
        loss: Loss,
        optimizer: Optimizer,
        metrics: list[str] | None,
        metric_fns: dict[str, Any],
        epochs: int,
        validation: tuple[Any, Any] | None,
        callbacks: list[Callback],
        verbose: int,
        dist: MPI | None,
        compile: bool | str = "auto",
    ) -> History:
        """Bind the optimizer to the trainable parameters, keep the training settings, and
        run ``polynn.training.train``."""
        if self.params and not self.trainable_params:
            raise PolynnValueError(
                "every layer with parameters is frozen (trainable=False), so fit would change "
                "nothing: unfreeze some, e.g. net.unfreeze(-1) for the last layer."
            )
        optimizer.bind(self)
        self.loss, self.optimizer, self.metrics = loss, optimizer, metrics
        return train(
            self,
            layers_for(self._layers, loss),
            batches,
            loss=loss,
            optimizer=optimizer,
            metrics=metric_fns,
            epochs=epochs,
            validation=validation,
            callbacks=callbacks,
            verbose=int(verbose),
            dist=dist,
            compile=compile,
        )

    def _loss(self, loss: str | Loss | None, caller: str) -> Loss:
        """``loss``, else the model's own, else MSE (a format-1 file's model has none)."""
        if loss is None and self.loss is not None:
            return self.loss
        if loss is None and self.loss_unknown:
            raise PolynnValueError(
                f"this model was loaded from a format-1 file, which does not record the loss "
                f"it was trained with: pass it to {caller}, e.g. loss='cross_entropy'."
            )
        return get_loss(loss if loss is not None else "mse", self.backend)

    def _metrics(self, metrics: Sequence[str] | None) -> list[str] | None:
        """``metrics``, else the model's own (``[]`` asks for none)."""
        if metrics is None:
            return self.metrics
        if isinstance(metrics, (list, tuple)):
            return list(metrics)
        return metrics  # metrics_for refuses it with the reason

    def evaluate(
        self,
        X: Any,
        y: Any = None,
        *,
        loss: str | Loss | None = None,
        metrics: Sequence[str] | None = None,
        batch_size: int | None = None,
        sample_weight: Any = None,
        distributed: MPI | None = None,
        **unknown: Any,
    ) -> dict[str, float]:
        """``{"loss": ..., "<metric>": ...}`` over all of ``(X, y)``.

        ``loss`` and ``metrics`` left out are the model's own (those of the last ``fit``, or
        of the file it was loaded from), else MSE and none. With ``sample_weight`` the loss is
        the weighted mean. With ``distributed``, each rank scores its share (or, sharded, its
        own rows) and every rank returns the figures of all the data. ``X`` may instead be a
        stream of ``(X, y)`` batches, with ``y`` left out (``polynn.streaming``).
        """
        if unknown:
            raise unknown_keywords("evaluate", unknown, Sequential.evaluate, FIT_ALIASES)
        if batch_size is not None:
            batch_size = integer(batch_size, "batch_size", 1)
        stream = _stream_or_pair(X, y, "evaluate")
        if stream and (batch_size is not None or sample_weight is not None
                       or distributed is not None):  # fmt: skip
            raise PolynnValueError(
                "with a stream of batches, batch_size, sample_weight and distributed do not "
                "apply: the stream makes the batches."
            )
        loss = self._loss(loss, "evaluate")
        metric_fns = metrics_for(self._metrics(metrics), loss, self.n_outputs)
        if stream:
            layers = layers_for(self._layers, loss)
            check = lambda x, y: pairs(self, x, y, loss)  # noqa: E731
            batches = StreamBatches(X, check, self.backend, input_dtype(self))
            with self.backend.context(self.matmul_precision), self._half_weights():
                with self._inference():
                    scores = score_batches(layers, batches.epoch(), loss, metric_fns, self.backend,
                                           compiling.forward(self, layers))  # fmt: skip
            return self._finite(scores)
        dist = distributed_check(distributed)
        if dist is not None and sample_weight is not None:
            raise PolynnValueError("sample_weight is not supported with distributed= yet.")
        facts: dict[str, Any] = {}
        with self.backend.context(self.matmul_precision), self._half_weights(), self._inference():
            with agreed(dist, facts):
                X, y = pairs(self, X, y, loss)
                w = None if sample_weight is None else weights(self, y, loss, sample_weight)
                if dist is not None:
                    facts.update(model_settings(self, loss, metric_fns, X, dist))
            layers = layers_for(self._layers, loss)
            scores = score(layers, X, y, loss, metric_fns, batch_size, self.backend, dist, w,
                           compiling.forward(self, layers))  # fmt: skip
        return self._finite(scores)

    def _finite(self, scores: dict[str, float]) -> dict[str, float]:
        """``evaluate``'s figures, or, for a loss that is not finite, ``predict``'s error."""
        if not math.isfinite(scores["loss"]):
            raise self._overflow(f"the loss is {scores['loss']}")
        return scores

    # -- freezing ---------------------------------------------------------------------------
    @property
    def trainable_params(self) -> list[Parameter]:
        """The parameters training updates: those of the layers not frozen, in layer order
        (a subset of ``params``)."""
        return [p for layer in self.layers for p in layer.trainable_params]

    def freeze(self, layers: int | slice | None = None) -> None:
        """Freeze layers (``trainable = False``): ``layers`` is an index into ``net.layers``,
        a slice (``net.freeze(slice(0, -1))`` freezes all but the last), or None for all. A
        frozen layer keeps its parameters (and a BatchNorm its running statistics) through
        ``fit``; the optimizer keeps no state and applies no weight decay for them."""
        for layer in self._select(layers, "freeze"):
            layer.trainable = False

    def unfreeze(self, layers: int | slice | None = None) -> None:
        """Make layers train again (``trainable = True``); ``layers`` as in ``freeze``."""
        for layer in self._select(layers, "unfreeze"):
            layer.trainable = True

    def _select(self, which: int | slice | None, caller: str) -> list[Layer]:
        if which is None:
            return list(self.layers)
        if isinstance(which, slice):
            return self.layers[which]
        index = integer(which, f"{caller}'s layer index", -len(self.layers))
        if index >= len(self.layers):
            raise PolynnValueError(
                f"{caller} got layer index {index}, but the model has {len(self.layers)} "
                f"layers (0 to {len(self.layers) - 1})."
            )
        return [self.layers[index]]

    # -- description ------------------------------------------------------------------------
    def count_params(self) -> int:
        """The number of parameter values (every element of every parameter in ``params``,
        frozen or not; buffers left out)."""
        return sum(math.prod(p.value.shape) for p in self.params)

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Print one row per layer (its name, output shape and parameter count, marked
        "frozen" where its parameters do not train), the totals (trainable: the parameters
        ``fit`` updates; non-trainable: frozen parameters and buffers such as running
        statistics), and the dtype, backend and device, as Keras's ``summary``. ``print_fn``
        receives the whole text (``print`` by default)."""
        shapes = self._output_shapes()
        rows = [("Layer", "Output shape", "Params")]
        for layer, shape in zip(self.layers, shapes):
            count = sum(math.prod(p.value.shape) for p in layer.params)
            trains = sum(math.prod(p.value.shape) for p in layer.trainable_params)
            note = "" if trains == count else " (frozen)" if trains == 0 else " (part frozen)"
            name = repr(layer)
            name = name if len(name) <= 44 else name[:41] + "..."
            rows.append((name, shape, f"{count:,}{note}"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
        rule = "-" * len(lines[0])
        trainable = sum(math.prod(p.value.shape) for p in self.trainable_params)
        buffers = sum(math.prod(b.value.shape) for b in self.buffers)
        total = self.count_params() + buffers
        lines[1:1] = [rule]
        lines += [
            rule,
            f"Total params: {total:,} (trainable {trainable:,}, non-trainable "
            f"{total - trainable:,})",
            f"dtype {self.dtype_name}, backend {self.backend.name}, device {self.backend.device}",
        ]
        print_fn("\n".join(lines))

    def _output_shapes(self) -> list[str]:
        """Each layer's output shape, ``(None, ...)`` (None for the rows, and for a length the
        data fixes), from the shapes the layers know (``Layer.output_shape``)."""
        shape, out = self.input_shape, []
        for layer in self.layers:
            shape = layer.output_shape(shape)
            out.append("?" if shape is None else str((None, *shape)))
        return out

    # -- weights and files ------------------------------------------------------------------
    def get_weights(self) -> list[Any]:
        """NumPy copies of the parameters in layer order: W1, b1, W2, b2, ..."""
        return [self.backend.to_numpy(p.value) for p in self.params]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the parameters (NumPy arrays or nested lists, in ``get_weights`` order)."""
        if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
            raise PolynnTypeError(
                f"set_weights takes a list of arrays (as get_weights returns); got "
                f"{type(weights).__name__}."
            )
        weights = list(weights)
        if len(weights) != len(self.params):
            raise PolynnValueError(
                f"set_weights needs {len(self.params)} arrays (as get_weights lists them); "
                f"got {len(weights)}."
            )
        new = []
        with self.backend.context():
            for i, (p, w) in enumerate(zip(self.params, weights)):
                if self.backend.owns(w):
                    w = self.backend.to_numpy(w)
                shape = tuple(w.shape) if hasattr(w, "shape") else None
                if shape is None or shape == tuple(p.value.shape):
                    w = self.backend.asarray(w, dtype=self.dtype, name=f"weights[{i}]")
                    shape = tuple(w.shape)
                if shape != tuple(p.value.shape):
                    raise PolynnValueError(
                        f"weights[{i}] ({p.name} of layer {self._owner(p)}) must have shape "
                        f"{tuple(p.value.shape)}; got {shape}."
                    )
                new.append(w)
        for p, w in zip(self.params, new):
            p.value = w

    def _owner(self, param: Parameter) -> str:
        for i, layer in enumerate(self.layers):
            if any(param is p for p in layer.params):
                return f"{i} ({layer!r})"
        return "?"

    def get_config(self) -> dict[str, Any]:
        """What ``save`` writes besides the weights: the layers, dtype and matmul precision."""
        return files.config(self.layers, self.dtype_name, matmul_precision=self.matmul_precision)

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        backend: str | Backend | None = None,
        device: Any = None,
        dtype: Any = None,
        seed: int | None = None,
    ) -> Sequential:
        """A new model with the layers of ``config`` (as ``get_config`` returns) and fresh
        weights; ``dtype=None`` takes the config's."""
        return cls(
            *files.layers_from(config),
            backend=backend,
            device=device,
            dtype=config["dtype"] if dtype is None else dtype,
            seed=seed,
            matmul_precision=config.get("matmul_precision", "highest"),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to one file at ``path`` (``.npz``, or safetensors for a path ending
        in ``.safetensors``), atomically: an existing file is replaced only once the new one
        is complete. The file holds the layers, weights and buffers, and the training state
        (loss, metrics, optimizer with its state and schedule, RNG positions): ``pn.load``
        then continues exactly where this model is."""
        files.save(self, path)

    def export_onnx(self, path: str | os.PathLike) -> None:
        """Write the inference graph to an ONNX file at ``path`` (``polynn.export``), for
        onnxruntime and other ONNX runtimes; needs ``pip install "polynn[onnx]"``."""
        export_onnx(self, checks_path(path, "the ONNX file path"))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickling keeps what ``save`` writes, and the backend's name (a namespace module
        itself cannot be pickled)."""
        config, arrays = files.state(self)
        return files.unpickle, (config, arrays, self.backend.name, self.seed)

    def to(self, backend: str | Backend, device: Any = None) -> Sequential:
        """This model on another backend or device: a copy with the same weights, buffers,
        dtype, seed, loss, metrics, optimizer state and RNG positions (so that training goes
        on there as it would have here). Arrays travel
        through DLPack where both libraries support it, else through the host."""
        net = Sequential.from_config(self.get_config(), backend, device, seed=self.seed)
        with net.backend.context():
            for mine, theirs in zip(net.params + net.buffers, self.params + self.buffers):
                mine.value = net.backend.adopt(theirs.value)
            for mine_layer, their_layer in zip(net.layers, self.layers):
                mine_layer.set_state(their_layer.get_state())
            net._rng.state = self._rng.state
            net.metrics, net.loss_unknown = self.metrics, self.loss_unknown
            net.epochs_trained = self.epochs_trained
            net.checkpoint_best = dict(self.checkpoint_best)
            net.loss = None if self.loss is None else get_loss(copy.copy(self.loss), net.backend)
            if self.optimizer is not None:  # bound to the same parameters, frozen or not
                index = {id(p): i for i, p in enumerate(self.params)}
                bound = [net.params[index[id(p)]] for p in self.optimizer.params]
                net.optimizer = self.optimizer.copy_for(bound, net.backend)
            if self.loss_scale is not None and net.loss_scale is not None:
                net.loss_scale.scale = float(self.loss_scale.scale)
                net.loss_scale.clean_steps = self.loss_scale.clean_steps
        return net


#: Other libraries' argument names (and slips) for those of ``fit`` and ``evaluate``.
FIT_ALIASES = {
    "nb_epoch": "epochs",
    "n_epochs": "epochs",
    "num_epochs": "epochs",
    "max_iter": "epochs",
    "batchsize": "batch_size",
    "sample_weights": "sample_weight",
    "class_weights": "class_weight",
    "callback": "callbacks",
    "metric": "metrics",
    "validation": "validation_data",
    "lr": "the learning rate belongs to the optimizer: optimizer=pn.SGD(lr=...)",
    "learning_rate": "the learning rate belongs to the optimizer: optimizer=pn.SGD(lr=...)",
}
#: ... and for those of ``Sequential``.
SEQUENTIAL_ALIASES = {"random_state": "seed", "dtype_policy": "dtype"}


def _stream_or_pair(X: Any, y: Any, caller: str) -> bool:
    """Whether ``X`` is a stream of ``(X, y)`` batches (then ``y`` must be left out): a
    function, an iterator or iterable object, or a list of ``(X, y)`` tuples; otherwise ``y``
    is required."""
    listed = isinstance(X, list) and bool(X) and all(isinstance(b, tuple) for b in X)
    if is_stream(X) or (listed and y is None):
        if y is not None:
            raise PolynnTypeError(
                f"{caller} got a stream of batches as X and also y: the stream's batches are "
                "(X, y) pairs; leave y out."
            )
        return True
    if y is None:
        raise PolynnTypeError(
            f"{caller} needs the targets y (or, as X, a stream of (X, y) batches: see "
            "polynn.streaming)."
        )
    return False


_unpickle = files.unpickle  # the name pickles written by polynn 0.1.0 refer to
