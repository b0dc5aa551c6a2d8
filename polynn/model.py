"""``Sequential``: a stack of layers on one backend, with ``fit``, ``predict`` and ``evaluate``."""

from __future__ import annotations

import copy
import math
import operator
import os
from collections.abc import Iterator, Sequence
from typing import Any

from polynn import __version__
from polynn._checks import integer, number
from polynn.backends import Backend, dtype_name, get
from polynn.backends.host import HostRNG, read_npz, write_npz
from polynn.callbacks import Callback, History
from polynn.errors import (
    PolynnError,
    PolynnFileError,
    PolynnTypeError,
    PolynnValueError,
    TrainingDivergedError,
)
from polynn.layers import LAYERS, Dense, Identity, Layer, Parameter, Softmax
from polynn.losses import BinaryCrossEntropy, CrossEntropy, Loss, get_loss
from polynn.metrics import get_metrics
from polynn.optimizers import Optimizer, get_optimizer
from polynn.progress import Progress

__all__ = ["Sequential", "load"]

FORMAT = "polynn"
FORMAT_VERSION = 1


class Sequential:
    """Layers applied one after another, all on one backend and device.

    >>> import polynn as pn
    >>> net = pn.Sequential(pn.Dense(2, 8), pn.Tanh(), pn.Dense(8, 1), pn.Sigmoid(), seed=0)
    >>> net.backend.name, net.dtype_name
    ('numpy', 'float32')

    ``backend`` is a name (``"numpy"``, ``"cupy"``, ``"array_api_strict"``, ``"auto"``),
    or None for the ``POLYNN_BACKEND`` environment variable, else NumPy. ``seed`` fixes the
    initial weights and the batch order, identically on every backend.
    """

    def __init__(
        self,
        *layers: Layer,
        backend: str | Backend | None = None,
        device: Any = None,
        dtype: Any = "float32",
        seed: int | None = None,
    ) -> None:
        if not layers:
            raise PolynnValueError("Sequential needs at least one layer; got none.")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise PolynnTypeError(
                    f"layer {i} must be a polynn layer such as pn.Dense(2, 8); "
                    f"got {type(layer).__name__}."
                )
        dense = [layer for layer in layers if isinstance(layer, Dense)]
        if not dense:
            raise PolynnValueError("Sequential needs at least one Dense layer to know its sizes.")
        for a, b in zip(dense, dense[1:]):
            if a.out_features != b.in_features:
                raise PolynnValueError(
                    f"{b!r} expects {b.in_features} inputs, but the Dense before it gives "
                    f"{a.out_features} ({a!r})."
                )
        if len({id(layer) for layer in layers}) != len(layers):
            raise PolynnValueError("the same layer object appears twice; create one per position.")
        if any(layer.built for layer in layers):
            raise PolynnValueError(
                "a layer already belongs to another Sequential; create new layer objects "
                "(or copy the model with net.to(...) or pickle)."
            )
        if seed is not None:
            seed = integer(seed, "seed", 0)
        self.layers = list(layers)
        self.backend = get(backend, device)
        self.dtype_name = dtype_name(dtype)
        self.dtype = self.backend.dtype(self.dtype_name)
        self.seed = seed
        self.in_features = dense[0].in_features
        self.n_outputs = dense[-1].out_features
        self._rng = HostRNG(seed)
        with self.backend.context():
            for i, layer in enumerate(layers):
                following = layers[i + 1] if i + 1 < len(layers) else None
                init = following.init if following is not None else Layer.init
                layer.build(self.backend, self.dtype, self._rng, init)
        if isinstance(layers[0], Dense):
            layers[0].need_input_grad = False
        self.params: list[Parameter] = [p for layer in layers for p in layer.params]
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.stop_training = False
        self._last_output_shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return (
            f"Sequential({inner}, backend={self.backend.name!r}, "
            f"device={self.backend.device!r}, dtype={self.dtype_name!r})"
        )

    # -- data in ----------------------------------------------------------------------------
    def _inputs(self, X: Any) -> Any:
        X = self.backend.asarray(X, dtype=self.dtype, name="X")
        if X.ndim != 2 or X.shape[1] != self.in_features:
            hint = " (for one feature per row, pass X.reshape(-1, 1))" if X.ndim == 1 else ""
            raise PolynnValueError(
                f"X has shape {tuple(X.shape)}, but the first Dense layer expects "
                f"{self.in_features} features per row: shape (rows, {self.in_features}){hint}."
            )
        return X

    def _data(self, X: Any, y: Any, loss: Loss) -> tuple[Any, Any]:
        X = self._inputs(X)
        y = loss.prepare_targets(y, self.n_outputs, self.backend, self.dtype)
        if X.shape[0] != y.shape[0]:
            raise PolynnValueError(
                f"X has {X.shape[0]} rows but y has {y.shape[0]}; each row of X needs one target."
            )
        return X, y

    def _layers_for(self, loss: Loss | None) -> list[Layer]:
        """The layers to run: cross-entropy takes logits, so a final Softmax (possibly followed
        by Identity layers) fuses into it."""
        if not isinstance(loss, CrossEntropy):
            return self.layers
        last = len(self.layers) - 1
        while last > 0 and isinstance(self.layers[last], Identity):
            last -= 1
        if isinstance(self.layers[last], Softmax):
            return self.layers[:last]
        return self.layers

    def _metrics(self, metrics: Sequence[str] | None, loss: Loss) -> dict[str, Any]:
        binary = self.n_outputs == 1 or isinstance(loss, BinaryCrossEntropy)
        return get_metrics(metrics, binary=binary)

    # -- explicit passes --------------------------------------------------------------------
    def forward(self, X: Any) -> Any:
        """Run every layer on ``X`` (checked and moved to the backend); keep what backward needs."""
        with self.backend.context():
            out = self._run(self.layers, self._inputs(X))
            self._last_output_shape = tuple(out.shape)
            return out

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
        with self.backend.context():
            for layer in reversed(self.layers):
                grad = layer.backward(grad)

    def predict(self, X: Any, batch_size: int | None = None) -> Any:
        """The network's output for ``X``, an array of the backend on its device."""
        if batch_size is not None:
            batch_size = integer(batch_size, "batch_size", 1)
        with self.backend.context():
            X = self._inputs(X)
            chunks = [
                self._run(self.layers, X[s:e, ...]) for s, e in _spans(X.shape[0], batch_size)
            ]
            return chunks[0] if len(chunks) == 1 else self.backend.xp.concat(chunks, axis=0)

    @staticmethod
    def _run(layers: Sequence[Layer], out: Any) -> Any:
        for layer in layers:
            out = layer.forward(out)
        return out

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        loss: str | Loss = "mse",
        optimizer: str | Optimizer | None = None,
        epochs: int = 1,
        batch_size: int | None = None,
        shuffle: bool = True,
        verbose: int = 1,
        metrics: Sequence[str] | None = None,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        callbacks: Sequence[Callback] | None = None,
    ) -> History:
        """Train on ``(X, y)`` and return a ``History`` (``history.history[name]``: one float
        per epoch for the loss, each metric and, with validation data, their ``val_`` forms).

        ``batch_size=None`` trains on the full batch; ``shuffle`` reorders the rows each
        epoch (from the model's seed) when there are several batches. ``optimizer`` defaults
        to ``SGD(lr=0.01)``; a second ``fit`` with the same optimizer continues its state.
        ``verbose=1`` shows a progress bar, ``verbose=0`` prints nothing.
        ``validation_split`` holds out that fraction of the last rows (before shuffling).
        """
        epochs = integer(epochs, "epochs", 0)
        if batch_size is not None:
            batch_size = integer(batch_size, "batch_size", 1)
        if verbose not in (0, 1):
            raise PolynnValueError(f"verbose must be 0 or 1; got {verbose!r}.")
        validation_split = number(validation_split, "validation_split", 0.0, 1.0)
        if validation_split and validation_data is not None:
            raise PolynnValueError("pass validation_data or validation_split, not both.")
        loss = get_loss(loss, self.backend)
        optimizer = get_optimizer(optimizer)
        metric_fns = self._metrics(metrics, loss)
        if isinstance(callbacks, Callback):
            raise PolynnTypeError("callbacks must be a list of Callback objects, e.g. [cb].")
        callbacks = list(callbacks or ())
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise PolynnTypeError(
                    f"callbacks must be polynn Callback objects; got {type(cb).__name__}."
                )
        with self.backend.context():
            X, y = self._data(X, y, loss)
            if validation_split:
                keep = int(X.shape[0] * (1.0 - validation_split))
                if keep < 1 or keep == X.shape[0]:
                    raise PolynnValueError(
                        f"validation_split={validation_split} of {X.shape[0]} rows leaves "
                        f"{keep} for training and {X.shape[0] - keep} for validation; "
                        "both need at least one."
                    )
                validation = (X[keep:, ...], y[keep:, ...])
                X, y = X[:keep, ...], y[:keep, ...]
            elif validation_data is not None:
                if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                    raise PolynnTypeError("validation_data must be a pair (X_val, y_val).")
                validation = self._data(*validation_data, loss)
            else:
                validation = None
            layers = self._layers_for(loss)
            optimizer.bind(self.params, self.backend.xp)
            self.loss, self.optimizer = loss, optimizer
            history = History()
            callbacks = [history, *callbacks]
            for cb in callbacks:
                cb.set_model(self)
                cb.on_train_begin({})
            self.stop_training = False
            progress = Progress(epochs, X.shape[0], batch_size, enabled=bool(verbose))
            tick = progress.batch_done if progress.per_batch else None
            spans = _spans(X.shape[0], batch_size)
            epoch_logs = self._epochs(
                X, y, layers, loss, optimizer, metric_fns, spans, shuffle, epochs, tick
            )
            logs: dict[str, float] = {}
            try:
                for epoch, logs in enumerate(epoch_logs):
                    if validation is not None:
                        scores = self._score(*validation, layers, loss, metric_fns, None)
                        logs.update({f"val_{k}": v for k, v in scores.items()})
                    if progress.enabled:
                        progress.end_epoch(logs)
                    for cb in callbacks:
                        cb.on_epoch_end(epoch, logs)
                    if self.stop_training:
                        break
            finally:
                progress.close()
            for cb in callbacks:
                cb.on_train_end(logs)
        return history

    def _epochs(
        self,
        X: Any,
        y: Any,
        layers: list[Layer],
        loss: Loss,
        optimizer: Optimizer,
        metrics: dict[str, Any],
        spans: list[tuple[int, int]],
        shuffle: bool,
        epochs: int,
        tick: Any,
    ) -> Iterator[dict[str, float]]:
        """Train epoch after epoch, yielding each one's logs (loss and metrics).

        Everything the loop needs is bound to a local name once per ``fit``: on a tiny
        network the per-epoch Python overhead is as large as the arithmetic.
        """
        xp = self.backend.xp
        rows = X.shape[0]
        forwards = [layer.forward for layer in layers]
        backwards = [layer.backward for layer in reversed(layers)]
        value_and_grad, step = loss.value_and_grad, optimizer.step
        isfinite = math.isfinite
        several = len(spans) > 1
        sizes = [b - a for a, b in spans]
        batches = [(X, y)]
        if several and not shuffle:  # the same batches every epoch
            batches = [(X[a:b, ...], y[a:b, ...]) for a, b in spans]
        for epoch in range(epochs):
            if several and shuffle:
                order = self.backend.from_numpy(self._rng.permutation(rows))
                Xe, ye = xp.take(X, order, axis=0), xp.take(y, order, axis=0)
                batches = [(Xe[a:b, ...], ye[a:b, ...]) for a, b in spans]
            values = []
            counts: dict[str, list[Any]] = {name: [] for name in metrics} if metrics else {}
            for xb, yb in batches:
                out = xb
                for forward in forwards:
                    out = forward(out)
                value, grad = value_and_grad(out, yb)
                for backward in backwards:
                    grad = backward(grad)
                step()
                values.append(value)
                if metrics:
                    for name, fn in metrics.items():
                        counts[name].append(fn(out, yb, xp))
                if tick is not None:
                    tick()
            if several or metrics:
                logs, batch_losses = self._summarise(values, counts, sizes, rows)
            else:  # one batch, loss only: the common case of a tiny network, kept cheap
                batch_losses = [float(value)]
                logs = {"loss": batch_losses[0]}
            if not isfinite(logs["loss"]):
                bad = next(i for i, v in enumerate(batch_losses) if not isfinite(v))
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch + 1}/{epochs}, batch {bad + 1}/"
                    f"{len(spans)}: the loss is {batch_losses[bad]}. Try a lower learning rate "
                    f"(this optimizer has lr={optimizer.lr:g}), or scale the inputs."
                )
            yield logs

    def _to_host(self, values: list[Any]) -> list[float]:
        """Floats from a list of 0-d device arrays, in one transfer."""
        if len(values) == 1:
            return [float(values[0])]
        return self.backend.to_numpy(self.backend.xp.stack(values)).tolist()

    def _summarise(
        self,
        values: list[Any],
        counts: dict[str, list[Any]],
        sizes: list[int],
        rows: int,
    ) -> tuple[dict[str, float], list[float]]:
        """The logs of one pass over the data in batches of ``sizes`` rows (the loss as a mean
        over rows, each metric's correct rows over all rows) and the per-batch losses, read
        from the device at once."""
        batch_losses = self._to_host(values)
        if len(batch_losses) == 1:
            logs = {"loss": batch_losses[0]}
        else:
            logs = {"loss": sum(map(operator.mul, batch_losses, sizes)) / rows}
        for name, batch_counts in counts.items():
            logs[name] = sum(self._to_host(batch_counts)) / rows
        return logs, batch_losses

    def _score(
        self,
        X: Any,
        y: Any,
        layers: list[Layer],
        loss: Loss,
        metric_fns: dict,
        batch_size: int | None,
    ) -> dict[str, float]:
        spans = _spans(X.shape[0], batch_size)
        values = []
        counts: dict[str, list[Any]] = {name: [] for name in metric_fns}
        for start, stop in spans:
            out = self._run(layers, X[start:stop, ...])
            yb = y[start:stop, ...]
            values.append(loss.value(out, yb))
            for name, fn in metric_fns.items():
                counts[name].append(fn(out, yb, self.backend.xp))
        sizes = [b - a for a, b in spans]
        return self._summarise(values, counts, sizes, X.shape[0])[0]

    def evaluate(
        self,
        X: Any,
        y: Any,
        *,
        loss: str | Loss | None = None,
        metrics: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> dict[str, float]:
        """``{"loss": ..., "<metric>": ...}`` over all of ``(X, y)``.

        ``loss=None`` takes the loss of the last ``fit``, or MSE before any.
        """
        if batch_size is not None:
            batch_size = integer(batch_size, "batch_size", 1)
        loss = get_loss(loss if loss is not None else (self.loss or "mse"), self.backend)
        metric_fns = self._metrics(metrics, loss)
        with self.backend.context():
            X, y = self._data(X, y, loss)
            return self._score(X, y, self._layers_for(loss), loss, metric_fns, batch_size)

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
                f"set_weights needs {len(self.params)} arrays (W and b of each Dense); "
                f"got {len(weights)}."
            )
        new = []
        with self.backend.context():
            for i, (p, w) in enumerate(zip(self.params, weights)):
                if self.backend.owns(w):
                    w = self.backend.to_numpy(w)
                w = self.backend.asarray(w, dtype=self.dtype, name=f"weights[{i}]")
                if tuple(w.shape) != tuple(p.value.shape):
                    raise PolynnValueError(
                        f"weights[{i}] ({p.name} of layer {self._owner(p)}) must have shape "
                        f"{tuple(p.value.shape)}; got {tuple(w.shape)}."
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
        """What ``save`` writes besides the weights: the layers and the dtype."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "polynn_version": __version__,
            "dtype": self.dtype_name,
            "layers": [
                {"type": type(layer).__name__, "config": layer.get_config()}
                for layer in self.layers
            ],
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to one ``.npz`` file at ``path``, atomically: an existing file is
        replaced only once the new one is complete."""
        write_npz(path, self.get_weights(), self.get_config())

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickling keeps the layers, weights, dtype, seed and backend name (not the
        optimizer state): a namespace module itself cannot be pickled."""
        return _unpickle, (self.get_config(), self.get_weights(), self.backend.name, self.seed)

    def to(self, backend: str | Backend, device: Any = None) -> Sequential:
        """This model on another backend or device: a copy with the same weights, dtype, seed,
        last loss and optimizer state (so that training can go on there). Arrays travel
        through DLPack where both libraries support it, else through the host."""
        net = _from_config(self.get_config(), backend, device, None, self.seed)
        with net.backend.context():
            for mine, theirs in zip(net.params, self.params):
                mine.value = net.backend.adopt(theirs.value)
            net.loss = None if self.loss is None else get_loss(copy.copy(self.loss), net.backend)
            if self.optimizer is not None:
                optimizer = type(self.optimizer)(**self.optimizer.get_config())
                optimizer.bind(net.params, net.backend.xp)
                optimizer.iterations = self.optimizer.iterations
                optimizer.state = [
                    {key: net.backend.adopt(value) for key, value in state.items()}
                    for state in self.optimizer.state
                ]
                net.optimizer = optimizer
        return net


def _spans(rows: int, batch_size: int | None) -> list[tuple[int, int]]:
    if batch_size is None or batch_size >= rows:
        return [(0, rows)]
    return [(start, min(start + batch_size, rows)) for start in range(0, rows, batch_size)]


def _from_config(
    config: dict, backend: Any, device: Any, dtype: Any, seed: int | None = None
) -> Sequential:
    layers = []
    for spec in config["layers"]:
        layers.append(LAYERS[spec["type"]](**spec["config"]))
    return Sequential(
        *layers,
        backend=backend,
        device=device,
        dtype=dtype if dtype is not None else config["dtype"],
        seed=seed,
    )


def _unpickle(config: dict, weights: list[Any], backend: str, seed: int | None) -> Sequential:
    net = _from_config(config, backend, None, None, seed)
    net.set_weights(weights)
    return net


def load(
    path: str | os.PathLike,
    *,
    backend: str | Backend | None = None,
    device: Any = None,
    dtype: Any = None,
) -> Sequential:
    """Read a model written by ``Sequential.save`` onto ``backend`` (and ``device``).

    ``dtype=None`` keeps the saved dtype. Nothing is unpickled: a truncated, foreign or
    pickled file raises ``PolynnFileError``; a missing one ``PolynnFileNotFoundError``.
    """
    config, weights = read_npz(path)
    if config.get("format") != FORMAT:
        raise PolynnFileError(f"{str(path)!r} is not a polynn model file (no polynn config).")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PolynnFileError(
            f"{str(path)!r} has format version {version!r}; this polynn ({__version__}) reads "
            f"versions up to {FORMAT_VERSION}: upgrade polynn."
        )
    try:
        saved_dtype = dtype_name(config["dtype"])
    except (KeyError, PolynnValueError) as exc:
        raise PolynnFileError(f"{str(path)!r} has no valid dtype in its config: {exc}") from None
    # What the caller asks for (backend, device, dtype) is the caller's to fix, not the file's.
    backend = get(backend, device)
    dtype = saved_dtype if dtype is None else dtype_name(dtype)
    backend.dtype(dtype)
    try:
        unknown = [s.get("type") for s in config["layers"] if s.get("type") not in LAYERS]
        if unknown:
            raise PolynnFileError(f"{str(path)!r} names unknown layer types {unknown}.")
        net = _from_config(config, backend, None, dtype)
        net.set_weights(weights)
    except PolynnFileError:
        raise
    except (PolynnError, KeyError, TypeError, AttributeError) as exc:
        raise PolynnFileError(
            f"{str(path)!r} holds an inconsistent polynn model: {type(exc).__name__}: {exc}"
        ) from None
    return net
