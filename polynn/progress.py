"""The progress display of ``fit(verbose=1)``, drawn with tqdm."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


class Progress:
    """One bar per epoch over its batches; or, when each epoch is a single batch, one bar
    over the epochs. The postfix shows the epoch's loss and metrics once it ends (they are
    read from the device once per epoch, not per batch)."""

    def __init__(self, epochs: int, batches: int, enabled: bool) -> None:
        self.enabled = enabled and epochs > 0
        self.epochs = epochs
        self.batches = batches
        self.epoch = 0
        #: Whether ``batch_done`` must be called after each batch.
        self.per_batch = self.enabled and self.batches > 1
        self.bar: Any = None
        if self.enabled and self.batches == 1:
            self.bar = tqdm(total=epochs, desc="fit", unit="epoch", dynamic_ncols=True)

    def batch_done(self) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=self.batches,
                desc=f"epoch {self.epoch + 1}/{self.epochs}",
                unit="batch",
                dynamic_ncols=True,
            )
        self.bar.update(1)

    def end_epoch(self, logs: dict[str, float]) -> None:
        self.epoch += 1
        if not self.enabled:
            return
        postfix = {key: f"{value:.4g}" for key, value in logs.items()}
        if self.batches == 1:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)
        else:
            self.bar.set_postfix(postfix)
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
