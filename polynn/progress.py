"""The progress display of ``fit``.

On a terminal, ``verbose=1`` draws one bar for the whole ``fit``, over the epochs, showing the
last epoch's loss and metrics; ``verbose=2`` adds a bar over each epoch's batches (which
disappears when the epoch ends). Where the output is not a terminal (a log file, a notebook's
captured stream, CI) no bar is drawn: one plain line per epoch, which a log keeps readable.
The figures are read from the device once per epoch, never per batch.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

#: Shorter names in the bar's postfix, so that it fits beside the bar.
SHORT = {"accuracy": "acc", "loss_scale": "scale", "skipped_steps": "skipped"}


def _short(name: str) -> str:
    prefix = "val_" if name.startswith("val_") else ""
    return prefix + SHORT.get(name.removeprefix("val_"), name.removeprefix("val_"))


class Progress:
    """What ``fit`` shows for ``epochs`` epochs of ``batches`` batches at ``verbose``
    (``batches=None``: a stream, whose batches are counted as they come)."""

    def __init__(
        self, epochs: int, batches: int | None, verbose: int, stream: TextIO | None = None
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = verbose > 0 and epochs > 0
        self.epochs, self.batches, self.epoch = epochs, batches, 0
        self.terminal = self.enabled and _is_terminal(self.stream)
        #: Whether ``batch_done`` must be called after each batch.
        self.per_batch = self.terminal and verbose >= 2 and (batches is None or batches > 1)
        self.bar: Any = None
        self.inner: Any = None
        if self.terminal:
            self.bar = tqdm(total=epochs, desc="fit", unit="epoch", dynamic_ncols=True,
                            file=self.stream)  # fmt: skip

    def batch_done(self) -> None:
        if self.inner is None:
            self.inner = tqdm(total=self.batches, desc=f"epoch {self.epoch + 1}", unit="batch",
                              leave=False, dynamic_ncols=True, file=self.stream)  # fmt: skip
        self.inner.update(1)

    def end_epoch(self, logs: dict[str, float]) -> None:
        self.epoch += 1
        if not self.enabled:
            return
        if self.inner is not None:
            self.inner.close()
            self.inner = None
        if self.bar is None:  # not a terminal: a line per epoch
            figures = " - ".join(f"{key} {value:.4g}" for key, value in logs.items())
            print(f"epoch {self.epoch}/{self.epochs} - {figures}", file=self.stream, flush=True)
            return
        postfix = ", ".join(f"{_short(key)}={value:.3g}" for key, value in logs.items())
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        for bar in (self.inner, self.bar):
            if bar is not None:
                bar.close()
        self.inner = self.bar = None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
