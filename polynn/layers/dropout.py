"""``Dropout`` and the counter-based generator of its masks.

A mask element is a hash of (key, step, element index): ``key`` is a 32-bit number the layer
draws from the model's host RNG when it is built (so it follows from the model's ``seed`` and
the layer's position), ``step`` counts the layer's training passes, and the index is the
element's position in the batch (in data-parallel training: in the global batch). The hash
is computed on the device, with integer operations of the array API standard only, so the
masks cost no host-to-device copy and are bit-identical on NumPy, CuPy, PyTorch, JAX and
array-api-strict.

The hash is Chris Wellons' "lowbias32" (a 32-bit multiply-xorshift finaliser), applied
twice with keys mixed from (key, step) on the host. Its multiplications are done in 16-bit
halves, so no intermediate value leaves 48 bits: the same arithmetic is exact in ``uint32``
(where a backend has unsigned shifts) and in ``int64`` (PyTorch, whose ``uint32`` lacks
them), and no backend's overflow rules come into play.
"""

from __future__ import annotations

import math
from typing import Any

from polynn._checks import integer, number
from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnValueError
from polynn.layers.core import Layer

__all__ = ["Dropout", "lowbias32", "mask_bits", "step_keys", "word_dtype"]

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
_M1, _M2 = 0x7FEB352D, 0x846CA68B


def lowbias32(x: int) -> int:
    """The hash on one Python int (the host side: mixing keys; and a reference for tests)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * _M1) & MASK32
    x ^= x >> 15
    x = (x * _M2) & MASK32
    x ^= x >> 16
    return x


def step_keys(key: int, step: int) -> tuple[int, int]:
    """The two 32-bit keys of training pass ``step`` of a layer with ``key``."""
    a = lowbias32(key ^ lowbias32(step & MASK32) ^ lowbias32((step >> 32) ^ GOLDEN))
    return a, lowbias32(a ^ GOLDEN)


def _mul(x: Any, c: int, k: dict[int, Any]) -> Any:
    """``x * c mod 2**32`` for an array ``x`` of values below 2**32, in 16-bit halves."""
    high = ((x * k[c >> 16]) & k[0xFFFF]) << 16
    return (high + x * k[c & 0xFFFF]) & k[MASK32]


def _lowbias32(x: Any, k: dict[int, Any]) -> Any:
    """``lowbias32`` on every element of an integer array; ``k`` holds the constants as
    0-d arrays of its dtype (JAX, in its default 32-bit mode, refuses Python ints of 2**31
    and above next to an array)."""
    x = x ^ (x >> 16)
    x = _mul(x, _M1, k)
    x = x ^ (x >> 15)
    x = _mul(x, _M2, k)
    return x ^ (x >> 16)


def word_dtype(xp: Any, device: Any) -> Any:
    """The integer dtype the hash runs in: ``uint32`` where the namespace shifts it,
    else ``int64`` (the values are the same)."""
    try:
        probe = xp.asarray([3], dtype=xp.uint32, device=device)
        if int((probe * 5 >> 1)[0]) == 7:
            return xp.uint32
    except Exception:  # a namespace without unsigned shifts (PyTorch on the CPU)
        pass
    return xp.int64


def mask_bits(
    xp: Any,
    device: Any,
    word: Any,
    shape: tuple[int, ...],
    keys: tuple[int, int],
    row_offset: int = 0,
) -> Any:
    """The 32-bit hash of every element index of an array of ``shape`` (whose rows start at
    row ``row_offset`` of a larger batch), in ``word``."""
    size = math.prod(shape)
    start = row_offset * math.prod(shape[1:])
    index = xp.reshape(xp.arange(start, start + size, dtype=word, device=device), shape)
    numbers = (_M1 >> 16, _M1 & 0xFFFF, _M2 >> 16, _M2 & 0xFFFF, 0xFFFF, MASK32, *keys)
    k = {n: xp.asarray(n, dtype=word, device=device) for n in numbers}
    return _lowbias32(_lowbias32(index ^ k[keys[0]], k) ^ k[keys[1]], k)


class Dropout(Layer):
    """Zeroes each element with probability ``rate`` during ``fit`` and scales the others by
    ``1 / (1 - rate)``; the identity in ``predict``, ``evaluate`` and validation.

    The masks come from a counter-based hash computed on the device (see this module): one
    model seed gives bit-identical masks on every backend, and ``get_state`` keeps the key
    and the step counter, so a saved model resumes the same sequence of masks.
    """

    init = None  # a Dense before it takes the hint of the layer after it

    def __init__(self, rate: float) -> None:
        self.rate = number(rate, "Dropout rate", 0.0, 1.0)
        # An element is kept where its hash is at least this: probability 1 - rate.
        self._threshold = min(round(self.rate * 2**32), MASK32)
        self.key = 0
        self.step = 0
        #: Where this batch's rows start in the global batch (data-parallel training sets it,
        #: so that N ranks draw the masks one process would).
        self.row_offset = 0

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        self.key = rng.key32()
        self._word = word_dtype(backend.xp, backend.device)
        self._cut = backend.xp.asarray(self._threshold, dtype=self._word, device=self.device)

    def mask(self, shape: tuple[int, ...], step: int, row_offset: int = 0) -> Any:
        """The keep mask (booleans) of training pass ``step`` for an input of ``shape`` whose
        rows start at row ``row_offset`` of the batch."""
        keys = step_keys(self.key, step)
        bits = mask_bits(self.xp, self.device, self._word, shape, keys, row_offset)
        return bits >= self._cut

    def forward(self, x: Any) -> Any:
        self._scale = None
        if not self.training or self.rate == 0.0:
            return x
        keep = self.mask(tuple(x.shape), self.step, self.row_offset)
        self.step += 1
        self._scale = self.xp.astype(keep, x.dtype) * self.constant(1.0 / (1.0 - self.rate))
        return x * self._scale

    def backward(self, grad: Any) -> Any:
        return grad if self._scale is None else grad * self._scale

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def get_state(self) -> dict[str, Any]:
        return {"key": self.key, "step": self.step}

    def set_state(self, state: dict[str, Any]) -> None:
        if set(state) - {"key", "step"}:
            raise PolynnValueError(f"Dropout state holds 'key' and 'step'; got {sorted(state)}.")
        self.key = integer(state.get("key", self.key), "Dropout key", 0)
        self.step = integer(state.get("step", self.step), "Dropout step", 0)
        if self.key > MASK32:
            raise PolynnValueError(f"Dropout key must be below 2**32; got {self.key}.")
