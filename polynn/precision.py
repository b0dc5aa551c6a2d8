"""Mixed precision: half-precision compute with float32 master weights.

With ``dtype="mixed_float16"`` or ``"mixed_bfloat16"`` (Keras's policy names) a model keeps
its parameters and optimizer state in float32. Each pass computes with half-precision copies
of the parameters (``half_weights``): matrix products and activations run in the half type,
the loss and its gradient in float32, and the parameter gradients are cast back to float32
before the update, which is applied to the float32 masters.

float16's range is narrow (6e-5 to 65504): small gradients underflow to zero. ``LossScale``
multiplies the loss gradient by a large factor before the backward pass and divides the
parameter gradients by it after; a step whose gradients overflowed is skipped and the factor
halved (PyTorch's ``GradScaler`` rule). bfloat16 has float32's range and needs no scaling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polynn.layers import Parameter

__all__ = ["LossScale", "half_weights"]


@contextlib.contextmanager
def half_weights(params: Sequence[Parameter], half: Any, xp: Any) -> Iterator[None]:
    """Inside the block each parameter's ``value`` is a copy in ``half``; on exit the float32
    masters are back, and any gradient the block left is cast to their dtype."""
    masters = [p.value for p in params]
    for p in params:
        p.value = xp.astype(p.value, half)
    try:
        yield
    finally:
        for p, master in zip(params, masters):
            p.value = master
            if p.grad is not None:
                p.grad = xp.astype(p.grad, master.dtype, copy=False)


class LossScale:
    """Dynamic loss scaling for float16 training.

    The loss gradient is multiplied by ``scale`` before the backward pass; ``unscale``
    divides the parameter gradients by it and says whether they are all finite. If they are
    not, the step is skipped (the caller does not update) and ``scale`` is halved; after
    ``growth_interval`` finite steps in a row it is doubled. The defaults are PyTorch's.
    """

    def __init__(self, scale: float = 2.0**15, growth_interval: int = 2000) -> None:
        self.scale = scale
        self.growth_interval = growth_interval
        self.clean_steps = 0
        #: Steps skipped since the counter was last read (``take_skipped``).
        self.skipped = 0

    def unscale(self, params: Sequence[Parameter], xp: Any) -> bool:
        """Divide each gradient by ``scale``; whether all are finite (one device sync)."""
        inverse = 1.0 / self.scale
        finite = []
        for p in params:
            p.grad = p.grad * inverse
            finite.append(xp.all(xp.isfinite(p.grad)))
        if bool(xp.all(xp.stack(finite))):
            self.clean_steps += 1
            if self.clean_steps == self.growth_interval:
                self.scale *= 2.0
                self.clean_steps = 0
            return True
        self.scale /= 2.0
        self.clean_steps = 0
        self.skipped += 1
        return False

    def take_skipped(self) -> int:
        """The steps skipped since the last call."""
        skipped, self.skipped = self.skipped, 0
        return skipped

    def __repr__(self) -> str:
        return f"LossScale(scale={self.scale:g}, clean_steps={self.clean_steps})"
