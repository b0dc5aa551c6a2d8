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
    """Dynamic loss scaling for float16 training, on the device.

    The loss gradient is multiplied by the scale before the backward pass; ``unscale``
    divides the parameter gradients by it and returns whether they are all finite, as a 0-d
    boolean array on the device. If they are not, the step is skipped (the caller does not
    update) and the scale is halved; after ``growth_interval`` finite steps in a row it is
    doubled. The defaults are PyTorch's. The scale, the count of finite steps in a row and the
    count of skipped steps are 0-d float32 arrays on the device (``device_state``), changed
    there, so that a compiled step can carry them; ``scale`` and ``clean_steps`` read them
    back (at an epoch's end, or when a file is written).
    """

    device_state = ("_scale", "_clean", "_skipped")

    def __init__(self, scale: float = 2.0**15, growth_interval: int = 2000) -> None:
        self.growth_interval = growth_interval
        # Host numbers until ``bind`` puts them on a device.
        self._scale: Any = float(scale)
        self._clean: Any = 0.0
        self._skipped: Any = 0.0
        self._xp: Any = None
        self._inplace = True

    def bind(self, xp: Any, device: Any, inplace: bool = True) -> None:
        """Keep the counters as float32 arrays on ``device`` from now on."""
        self._xp, self._device, self._inplace = xp, device, inplace
        for name in self.device_state:
            value = getattr(self, name)
            value = value if isinstance(value, float) else float(value)
            setattr(self, name, xp.asarray(value, dtype=xp.float32, device=device))

    def _write(self, name: str, value: Any) -> None:
        xp = self._xp
        if xp is None:
            setattr(self, name, float(value))
        elif self._inplace:
            getattr(self, name)[...] = value
        else:
            setattr(self, name, xp.asarray(value, dtype=xp.float32, device=self._device))

    @property
    def scale(self) -> Any:
        """The factor the loss gradient is multiplied by: a 0-d device array once bound
        (``float(scale)`` reads it)."""
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        self._write("_scale", value)

    @property
    def clean_steps(self) -> int:
        """Finite steps in a row since the scale last changed (read from the device)."""
        return int(float(self._clean))

    @clean_steps.setter
    def clean_steps(self, value: int) -> None:
        self._write("_clean", float(value))

    def unscale(self, params: Sequence[Parameter], xp: Any) -> Any:
        """Divide each gradient by the scale, update the scale, and return whether all the
        gradients are finite (a 0-d boolean on the device: nothing is read back)."""
        if self._xp is None:
            self.bind(xp, params[0].grad.device)
        scale = self._scale
        inverse = 1.0 / scale
        finite = []
        for p in params:
            p.grad = p.grad * inverse
            finite.append(xp.all(xp.isfinite(p.grad)))
        ok = xp.all(xp.stack(finite))
        one = xp.ones_like(scale)
        kept = xp.astype(ok, scale.dtype)
        clean = (self._clean + one) * kept  # back to zero after a skipped step
        grow = xp.astype(clean >= self.growth_interval, scale.dtype)
        self._write("_scale", scale * (kept * (one + grow) + (one - kept) * 0.5))
        self._write("_clean", clean * (one - grow))
        self._write("_skipped", self._skipped + (one - kept))
        return ok

    def take_skipped(self) -> int:
        """The steps skipped since the last call (read from the device)."""
        skipped = int(float(self._skipped))
        self._write("_skipped", 0.0)
        return skipped

    def __repr__(self) -> str:
        return f"LossScale(scale={float(self._scale):g}, clean_steps={self.clean_steps})"
