"""Callbacks: objects ``fit`` calls at the start and end of training and after each epoch."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from polynn._checks import integer, number
from polynn.errors import PolynnTypeError, PolynnValueError

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = ["Callback", "EarlyStopping", "History"]


class Callback:
    """Base class. Override any of the hooks; ``self.model`` is the model being trained.

    To stop training, set ``self.model.stop_training = True`` in ``on_epoch_end``.
    """

    model: Sequential

    def set_model(self, model: Sequential) -> None:
        self.model = model

    def on_train_begin(self, logs: dict[str, float]) -> None:
        """Called once before the first epoch."""

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
        if not isinstance(monitor, str):
            raise PolynnTypeError(
                f"EarlyStopping monitor must be a name such as 'val_loss'; got {monitor!r}."
            )
        if mode not in ("auto", "min", "max"):
            raise PolynnValueError(
                f"EarlyStopping mode must be 'auto', 'min' or 'max'; got {mode!r}."
            )
        self.monitor = monitor
        self.patience = integer(patience, "EarlyStopping patience", 0)
        self.min_delta = number(min_delta, "EarlyStopping min_delta", 0.0)
        self.restore_best_weights = restore_best_weights
        if mode == "auto":
            mode = "max" if "accuracy" in monitor else "min"
        self.mode = mode

    def on_train_begin(self, logs: dict[str, float]) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.best_weights: list[Any] | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        # To put back if the first epoch shows that the monitored figure is never logged.
        self._initial_weights = self.model.get_weights()

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            restored = ""
            if self._initial_weights is not None:  # the first epoch: undo it
                self.model.set_weights(self._initial_weights)
                restored = " The model's weights are back to what they were before this fit."
            raise PolynnValueError(
                f"EarlyStopping monitors {self.monitor!r}, which fit does not log; logged are "
                f"{sorted(logs)} (val_ figures need validation_data or validation_split).{restored}"
            )
        self._initial_weights = None
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, float]) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
