"""Smooth activations: GELU, SiLU, ELU and Softplus, written with plain ``xp`` calls.

Each formula is the stable one: nothing overflows for large ``|x|`` (an ``exp`` only ever sees
a non-positive argument, a cube only a clipped one), so float32 inputs of any size give finite
outputs and gradients. None of them has a fused kernel: they run as layers of their own.
"""

from __future__ import annotations

import math
from typing import Any

from polynn._checks import number
from polynn.layers.core import Layer

__all__ = ["ELU", "GELU", "SiLU", "Softplus"]


class GELU(Layer):
    """The Gaussian error linear unit in its **tanh approximation** (Hendrycks and Gimpel;
    PyTorch's ``GELU(approximate="tanh")``):
    ``y = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))``.

    The cube sees ``x`` clipped to [-20, 20], where the tanh is already exactly +-1, so large
    inputs neither overflow nor change the result.
    """

    compilable = True

    init = "he_normal"
    K, C = math.sqrt(2.0 / math.pi), 0.044715

    def forward(self, x: Any) -> Any:
        xp = self.xp
        xc = xp.clip(x, -20.0, 20.0)
        t = xp.tanh(self.constant(self.K) * (xc + self.constant(self.C) * xc * xc * xc))
        self._x, self._xc, self._t = x, xc, t
        return self.constant(0.5) * x * (self.constant(1.0) + t)

    def backward(self, grad: Any) -> Any:
        x, xc, t = self._x, self._xc, self._t
        one, half = self.constant(1.0), self.constant(0.5)
        inner = self.constant(self.K) * (one + self.constant(3.0 * self.C) * xc * xc)
        return grad * (half * (one + t) + half * x * (one - t * t) * inner)


class SiLU(Layer):
    """``y = x * sigmoid(x)`` (also called swish), the sigmoid computed as
    ``(tanh(x / 2) + 1) / 2`` so it never overflows."""

    compilable = True

    init = "he_normal"

    def forward(self, x: Any) -> Any:
        half = self.constant(0.5)
        self._x, self._s = x, half * self.xp.tanh(half * x) + half
        return x * self._s

    def backward(self, grad: Any) -> Any:
        x, s = self._x, self._s
        return grad * (s * (self.constant(1.0) + x * (self.constant(1.0) - s)))


class ELU(Layer):
    """``y = x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (``expm1`` of ``min(x, 0)``,
    so the branch not taken never overflows)."""

    compilable = True

    init = "he_normal"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = number(alpha, "ELU alpha", 0.0)

    def forward(self, x: Any) -> Any:
        xp = self.xp
        self._positive = x > 0
        self._neg = neg = self.constant(self.alpha) * xp.expm1(xp.minimum(x, self.constant(0.0)))
        return xp.where(self._positive, x, neg)

    def backward(self, grad: Any) -> Any:
        xp = self.xp
        return grad * xp.where(self._positive, self.constant(1.0), self._neg + self.alpha)

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class Softplus(Layer):
    """``y = log(1 + exp(x))``, computed as ``max(x, 0) + log1p(exp(-|x|))``: no overflow
    for large ``x``, no loss of the small values for very negative ``x``."""

    compilable = True

    def forward(self, x: Any) -> Any:
        xp = self.xp
        self._x = x
        return xp.maximum(x, self.constant(0.0)) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, grad: Any) -> Any:
        half = self.constant(0.5)
        return grad * (half * self.xp.tanh(half * self._x) + half)
