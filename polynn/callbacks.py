"""Callbacks: objects ``fit`` calls at the start and end of training and after each epoch."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polynn._checks import integer, number
from polynn._checks import path as checks_path
from polynn.backends.host import write_bytes
from polynn.errors import PolynnTypeError, PolynnValueError

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
]


class Callback:
    """Base class. Override any of the hooks; ``self.model`` is the model being trained.

    To stop training, set ``self.model.stop_training = True`` in ``on_epoch_end``.
    """

    model: Sequential
    #: Whether the callback may set the model's weights (``EarlyStopping`` restoring the best
    #: ones): under ``distributed=`` every rank must then have it, which ``fit`` checks.
    sets_weights = False

    def set_model(self, model: Sequential) -> None:
        self.model = model

    def on_train_begin(self, logs: dict[str, float]) -> None:
        """Called once before the first epoch."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float]) -> None:
        """Called before each epoch (``epoch`` counts from 0 in this ``fit``)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch with its loss, metrics and validation figures."""

    def on_train_end(self, logs: dict[str, float]) -> None:
        """Called once after the last epoch (also when a callback stopped training)."""


class History(Callback):
    """What ``fit`` returns: ``history[name]`` is a list with one float per epoch."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, name: str) -> list[float]:
        """``history[name]``, the same list as ``history.history[name]``."""
        try:
            return self.history[name]
        except KeyError:
            raise PolynnValueError(
                f"the history has no {name!r}; it holds {sorted(self.history)}."
            ) from None

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``mode`` "min" or "max" says which direction improves; "auto" takes "max" for accuracy
    and "min" otherwise. With ``restore_best_weights=True`` the model ends with the weights
    of its best epoch.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best_weights: bool = False,
        mode: str = "auto",
    ) -> None:
        self.monitor, self.mode = _monitor(monitor, mode, "EarlyStopping")
        self.patience = integer(patience, "EarlyStopping patience", 0)
        self.min_delta = number(min_delta, "EarlyStopping min_delta", 0.0)
        self.restore_best_weights = restore_best_weights
        self.sets_weights = bool(restore_best_weights)

    def on_train_begin(self, logs: dict[str, float]) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        #: The weights and buffers (running statistics) of the best epoch, as NumPy arrays.
        self.best_weights: tuple[list[Any], list[Any]] | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        # To put back if the first epoch shows that the monitored figure is never logged.
        self._initial_weights: tuple[list[Any], list[Any]] | None = _copy_of(self.model)

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            restored = ""
            if self._initial_weights is not None:  # the first epoch: undo it
                _put_back(self.model, self._initial_weights)
                restored = " The model's weights are back to what they were before this fit."
            raise _not_logged("EarlyStopping", self.monitor, logs, restored)
        self._initial_weights = None
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = _copy_of(self.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, float]) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            _put_back(self.model, self.best_weights)


def _copy_of(model: Sequential) -> tuple[list[Any], list[Any]]:
    """NumPy copies of the model's weights and of its buffers (running statistics)."""
    return model.get_weights(), [model.backend.to_numpy(b.value) for b in model.buffers]


def _put_back(model: Sequential, copy: tuple[list[Any], list[Any]]) -> None:
    """Restore the weights and buffers ``_copy_of`` took."""
    weights, buffers = copy
    model.set_weights(weights)
    with model.backend.context():
        for buffer, value in zip(model.buffers, buffers):
            buffer.value = model.backend.asarray(value, dtype=model.dtype, name=buffer.name)


def _monitor(monitor: Any, mode: str, owner: str) -> tuple[str, str]:
    """A checked ``monitor`` name and its direction (``"auto"``: "max" for accuracy)."""
    if not isinstance(monitor, str):
        raise PolynnTypeError(
            f"{owner} monitor must be a name such as 'val_loss'; got {monitor!r}."
        )
    if mode not in ("auto", "min", "max"):
        raise PolynnValueError(f"{owner} mode must be 'auto', 'min' or 'max'; got {mode!r}.")
    if mode == "auto":
        mode = "max" if "accuracy" in monitor else "min"
    return monitor, mode


def _not_logged(owner: str, monitor: str, logs: dict[str, float], more: str = "") -> Exception:
    return PolynnValueError(
        f"{owner} monitors {monitor!r}, which fit does not log; logged are {sorted(logs)} "
        f"(val_ figures need validation_data or validation_split).{more}"
    )


def _check_no_schedule(model: Sequential, owner: str) -> None:
    optimizer = model.optimizer
    if optimizer is not None and optimizer.schedule is not None:
        raise PolynnValueError(
            f"{owner} sets the learning rate, but the optimizer follows the schedule "
            f"{optimizer.schedule!r}; use one or the other."
        )


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` once ``monitor`` has not improved by
    ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs before counting
    again; never below ``min_lr``, and never up (a rate already below ``min_lr`` stays). The
    rate lives in the optimizer, so it carries over to later ``fit`` calls and into saved
    files."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str = "auto",
    ) -> None:
        self.monitor, self.mode = _monitor(monitor, mode, "ReduceLROnPlateau")
        self.factor = number(factor, "ReduceLROnPlateau factor", 0.0, 1.0, low_open=True)
        self.patience = integer(patience, "ReduceLROnPlateau patience", 0)
        self.min_delta = number(min_delta, "ReduceLROnPlateau min_delta", 0.0)
        self.cooldown = integer(cooldown, "ReduceLROnPlateau cooldown", 0)
        self.min_lr = number(min_lr, "ReduceLROnPlateau min_lr", 0.0)

    def on_train_begin(self, logs: dict[str, float]) -> None:
        _check_no_schedule(self.model, "ReduceLROnPlateau")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooling = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise _not_logged("ReduceLROnPlateau", self.monitor, logs)
        value = logs[self.monitor]
        if self.mode == "min":
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        if self.cooling:
            self.cooling -= 1
            self.wait = 0
        if improved:
            self.best, self.wait = value, 0
            return
        if self.cooling:
            return
        self.wait += 1
        if self.wait >= self.patience:
            optimizer = self.model.optimizer
            optimizer.lr = min(optimizer.lr, max(optimizer.lr * self.factor, self.min_lr))
            self.wait, self.cooling = 0, self.cooldown


class LearningRateScheduler(Callback):
    """Set the learning rate before each epoch to ``schedule(epoch, lr)``: ``epoch`` counts
    the optimizer's finished epochs (across ``fit`` calls), ``lr`` is the current rate."""

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
        if not callable(schedule):
            raise PolynnTypeError(
                f"LearningRateScheduler takes a function (epoch, lr) -> lr; got {schedule!r}."
            )
        self.schedule = schedule

    def on_train_begin(self, logs: dict[str, float]) -> None:
        _check_no_schedule(self.model, "LearningRateScheduler")

    def on_epoch_begin(self, epoch: int, logs: dict[str, float]) -> None:
        optimizer = self.model.optimizer
        lr = self.schedule(optimizer.epochs, optimizer.lr)
        optimizer.lr = number(lr, "the learning rate LearningRateScheduler's function returned",
                              0.0, low_open=True)  # fmt: skip


class ModelCheckpoint(Callback):
    """Save the model after each epoch to ``path``, in which ``{epoch}`` (the model's epochs
    trained, counting from 1 across ``fit`` calls and resumes from its files) and any logged
    figure (``{val_loss:.3f}``) are filled in.

    With ``save_best_only`` only when ``monitor`` improved on the best so far: the best of
    this callback and of the model, which records it (``Sequential.checkpoint_best``) and
    keeps it in its files, so a run resumed from a checkpoint replaces the best file only with
    a better model. Each save is atomic (``Sequential.save``): an interrupted run never leaves
    a half-written file, and the file holds the optimizer's state, so training can resume
    from it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
    ) -> None:
        self.path = os.fspath(checks_path(path, "ModelCheckpoint path"))
        self.monitor, self.mode = _monitor(monitor, mode, "ModelCheckpoint")
        self.save_best_only = bool(save_best_only)
        self.best = math.inf if self.mode == "min" else -math.inf
        #: The paths written, in order.
        self.saved: list[str] = []

    def _better(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def on_train_begin(self, logs: dict[str, float]) -> None:
        recorded = self.model.checkpoint_best.get(self.monitor)
        if self.save_best_only and recorded is not None and recorded[0] == self.mode:
            if self._better(recorded[1]):
                self.best = recorded[1]

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.save_best_only:
            if self.monitor not in logs:
                raise _not_logged("ModelCheckpoint", self.monitor, logs)
            value = logs[self.monitor]
            if not self._better(value):
                return
            self.best = value
            self.model.checkpoint_best[self.monitor] = (self.mode, value)  # saved with it
        try:
            path = self.path.format(epoch=self.model.epochs_trained, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise PolynnValueError(
                f"ModelCheckpoint path {self.path!r} names {exc}, which is not {{epoch}} or a "
                f"logged figure ({sorted(logs)})."
            ) from None
        self.model.save(path)
        self.saved.append(path)


class CSVLogger(Callback):
    """Write one CSV row per epoch to ``path``: ``epoch`` (from 0, across ``fit`` calls and
    resumes: the model's epochs trained, less one) and every logged figure. ``append=True``
    adds to an existing file instead of starting a new one (a run that logs figures the file
    has no column for adds the columns to its header first, keeping every row); each row is
    flushed as it is written. ``separator`` is one character."""

    def __init__(self, path: str | os.PathLike, append: bool = False, separator: str = ",") -> None:
        self.path = checks_path(path, "CSVLogger path")
        self.append = bool(append)
        if not isinstance(separator, str):
            raise PolynnTypeError(
                f"CSVLogger separator must be one character such as ','; got {separator!r}."
            )
        if len(separator) != 1 or separator in '\r\n"':
            raise PolynnValueError(
                "CSVLogger separator must be one character other than a quote or a line "
                f"break, such as ',' or ';'; got {separator!r}."
            )
        self.separator = separator
        self._file: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs: dict[str, float]) -> None:
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        try:
            self._file = open(self.path, "a" if self.append else "w", newline="")  # noqa: SIM115
        except OSError as exc:
            raise PolynnValueError(f"CSVLogger cannot open {str(self.path)!r}: {exc}") from None
        self._header_written = exists
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self._writer is None:
            fields = ["epoch", *logs]
            if self._header_written:  # appending: the file's columns, and any new ones
                fields = self._columns_for(fields)
            self._writer = csv.DictWriter(
                self._file, fieldnames=fields, delimiter=self.separator, extrasaction="ignore"
            )
            if not self._header_written:
                self._writer.writeheader()
        self._writer.writerow({"epoch": self.model.epochs_trained - 1, **logs})
        self._file.flush()

    def _columns_for(self, fields: list[str]) -> list[str]:
        """The columns of the file appended to, with ``fields`` it lacks added at the end
        (the file is rewritten with the wider header, atomically, and reopened)."""
        self._file.close()
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f, delimiter=self.separator))
        columns = rows[0] if rows else []
        merged = columns + [name for name in fields if name not in columns]
        if merged != columns:
            out = io.StringIO()
            writer = csv.writer(out, delimiter=self.separator)
            writer.writerow(merged)
            writer.writerows(row + [""] * (len(merged) - len(row)) for row in rows[1:])
            write_bytes(self.path, out.getvalue().encode())
        self._file = open(self.path, "a", newline="")  # noqa: SIM115
        return merged

    def on_train_end(self, logs: dict[str, float]) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
