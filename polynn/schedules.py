"""Learning-rate schedules: pass one as an optimizer's ``lr``.

A schedule is the learning rate as a function of a count: of the optimizer's steps (batches)
with ``per="step"``, the default, or of its epochs with ``per="epoch"``. The count starts at 0
and goes on across ``fit`` calls and through ``save``/``load``, so a resumed run continues
the schedule where it stopped.

>>> import polynn as pn
>>> opt = pn.Adam(lr=pn.CosineDecay(1e-2, decay_steps=1000, warmup_steps=100))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from polynn._checks import integer, number
from polynn.errors import PolynnTypeError, PolynnValueError

__all__ = ["CosineDecay", "ExponentialDecay", "PiecewiseConstant", "Schedule", "StepDecay"]

UNITS = ("step", "epoch")


class Schedule:
    """Base class: ``schedule(count)`` is the learning rate after ``count`` steps (or epochs)."""

    def __init__(self, per: str = "step") -> None:
        if per not in UNITS:
            raise PolynnValueError(
                f"{type(self).__name__} per must be 'step' or 'epoch'; got {per!r}."
            )
        self.per = per

    def __call__(self, count: int) -> float:
        raise NotImplementedError

    def rate(self, count: int) -> float:
        """``self(count)`` checked to be a finite rate >= 0: what an optimizer uses. A rate
        beyond the float range (``StepDecay(gamma=10)`` after enough steps) is an error
        naming the schedule and the count, not an ``OverflowError``."""
        try:
            lr = float(self(count))
        except OverflowError:
            lr = math.inf
        if not lr >= 0 or lr == math.inf:
            raise PolynnValueError(
                f"the learning-rate schedule {self!r} gives {lr} after {count} {self.per}s; a "
                "rate must be a finite number >= 0."
            )
        return lr

    def get_config(self) -> dict[str, Any]:
        return {"per": self.per}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _lr(value: Any, owner: str) -> float:
    return number(value, f"{owner} lr", 0.0, low_open=True)


class StepDecay(Schedule):
    """``lr * gamma ** (count // step_size)``: multiplied by ``gamma`` every ``step_size``
    steps (or epochs), as PyTorch's ``StepLR``."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1, per: str = "step") -> None:
        super().__init__(per)
        self.lr = _lr(lr, "StepDecay")
        self.step_size = integer(step_size, "StepDecay step_size", 1)
        self.gamma = number(gamma, "StepDecay gamma", 0.0, low_open=True)

    def __call__(self, count: int) -> float:
        return self.lr * self.gamma ** (count // self.step_size)

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma, "per": self.per}


class ExponentialDecay(Schedule):
    """``lr * decay_rate ** (count / decay_steps)`` (with ``staircase=True`` the exponent is
    rounded down, so the rate changes once every ``decay_steps``), as Keras's."""

    def __init__(
        self,
        lr: float,
        decay_steps: int,
        decay_rate: float,
        staircase: bool = False,
        per: str = "step",
    ) -> None:
        super().__init__(per)
        self.lr = _lr(lr, "ExponentialDecay")
        self.decay_steps = integer(decay_steps, "ExponentialDecay decay_steps", 1)
        self.decay_rate = number(decay_rate, "ExponentialDecay decay_rate", 0.0, low_open=True)
        self.staircase = bool(staircase)

    def __call__(self, count: int) -> float:
        exponent = count / self.decay_steps
        if self.staircase:
            exponent = math.floor(exponent)
        return self.lr * self.decay_rate**exponent

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "per": self.per,
        }


class CosineDecay(Schedule):
    """A linear warm-up, then a half cosine from ``lr`` down to ``alpha * lr``.

    For ``count < warmup_steps`` the rate is ``lr * (count + 1) / warmup_steps`` (so the last
    warm-up step reaches ``lr``); then, with ``t = min(count - warmup_steps, decay_steps)``,
    ``lr * (alpha + (1 - alpha) * (1 + cos(pi * t / decay_steps)) / 2``, which stays at
    ``alpha * lr`` after ``decay_steps``.
    """

    def __init__(
        self,
        lr: float,
        decay_steps: int,
        alpha: float = 0.0,
        warmup_steps: int = 0,
        per: str = "step",
    ) -> None:
        super().__init__(per)
        self.lr = _lr(lr, "CosineDecay")
        self.decay_steps = integer(decay_steps, "CosineDecay decay_steps", 1)
        self.alpha = number(alpha, "CosineDecay alpha", 0.0, 1.0, high_open=False)
        self.warmup_steps = integer(warmup_steps, "CosineDecay warmup_steps", 0)

    def __call__(self, count: int) -> float:
        if count < self.warmup_steps:
            return self.lr * (count + 1) / self.warmup_steps
        t = min(count - self.warmup_steps, self.decay_steps)
        cosine = (1.0 + math.cos(math.pi * t / self.decay_steps)) / 2.0
        return self.lr * (self.alpha + (1.0 - self.alpha) * cosine)

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "warmup_steps": self.warmup_steps,
            "per": self.per,
        }


class PiecewiseConstant(Schedule):
    """``values[0]`` while ``count < boundaries[0]``, ``values[1]`` while
    ``count < boundaries[1]``, ..., and ``values[-1]`` from ``boundaries[-1]`` on."""

    def __init__(
        self, boundaries: Sequence[int], values: Sequence[float], per: str = "step"
    ) -> None:
        super().__init__(per)
        if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
            raise PolynnTypeError(
                f"PiecewiseConstant boundaries must be a list of counts; got {boundaries!r}."
            )
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise PolynnTypeError(
                f"PiecewiseConstant values must be a list of rates; got {values!r}."
            )
        self.boundaries = [integer(b, "PiecewiseConstant boundary", 0) for b in boundaries]
        self.values = [_lr(v, "PiecewiseConstant") for v in values]
        if len(self.values) != len(self.boundaries) + 1:
            raise PolynnValueError(
                f"PiecewiseConstant needs one more value than boundaries; got "
                f"{len(self.boundaries)} boundaries and {len(self.values)} values."
            )
        if any(a >= b for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise PolynnValueError(
                f"PiecewiseConstant boundaries must increase; got {self.boundaries}."
            )

    def __call__(self, count: int) -> float:
        for boundary, value in zip(self.boundaries, self.values):
            if count < boundary:
                return value
        return self.values[-1]

    def get_config(self) -> dict[str, Any]:
        return {"boundaries": list(self.boundaries), "values": list(self.values), "per": self.per}


SCHEDULES: dict[str, type[Schedule]] = {
    cls.__name__: cls for cls in (StepDecay, ExponentialDecay, CosineDecay, PiecewiseConstant)
}
