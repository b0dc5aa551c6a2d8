"""The counter-based hash behind ``Dropout``'s masks.

A mask element is a hash of (key, step, element index): ``key`` is a 32-bit number a Dropout
draws from the model's host RNG when it is built, ``step`` counts its training passes (a 0-d
array on the device, counted up there, so that a compiled step sees each pass's own count),
and the index is the element's position in the batch (in data-parallel training: in the
global batch). The hash runs on the device, with integer operations of the array API
standard only, so the masks cost no host-to-device copy and are bit-identical on NumPy, CuPy,
PyTorch, JAX and array-api-strict.

The hash is Chris Wellons' "lowbias32" (a 32-bit multiply-xorshift finaliser), applied twice
with two keys mixed from (key, step). Its multiplications are done in 16-bit halves, so no
intermediate value leaves 48 bits: the same arithmetic is exact in ``uint32`` (where a backend
has unsigned shifts) and in ``int64`` (PyTorch, whose ``uint32`` lacks them), and no backend's
overflow rules come into play. Every constant is a 0-d array of the word type (``Hash``): JAX,
in its default 32-bit mode, refuses Python ints of 2**31 and above next to an array.

Steps count modulo 2**32 on the device: the masks would repeat after 2**32 training passes of
one layer, and a step from a file must lie below that.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["GOLDEN", "MASK32", "Hash", "lowbias32", "step_keys", "word_dtype"]

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
_M1, _M2 = 0x7FEB352D, 0x846CA68B


def lowbias32(x: int) -> int:
    """The hash on one Python int (the host side, and a reference for the tests)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * _M1) & MASK32
    x ^= x >> 15
    x = (x * _M2) & MASK32
    x ^= x >> 16
    return x


def step_keys(key: int, step: int) -> tuple[int, int]:
    """The two 32-bit keys of training pass ``step`` of a layer with ``key`` (on the host)."""
    a = lowbias32(key ^ lowbias32(step & MASK32) ^ lowbias32((step >> 32) ^ GOLDEN))
    return a, lowbias32(a ^ GOLDEN)


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


class Hash:
    """The hash on the device: arrays of ``word`` (``word_dtype``) of namespace ``xp``, with
    its constants made once."""

    def __init__(self, xp: Any, device: Any, word: Any) -> None:
        self.xp, self.device, self.word = xp, device, word
        numbers = (_M1 >> 16, _M1 & 0xFFFF, _M2 >> 16, _M2 & 0xFFFF, 0xFFFF, MASK32, GOLDEN)
        self._k = {n: xp.asarray(n, dtype=word, device=device) for n in numbers}
        #: The key part of a step's high 32 bits, which the device keeps at zero.
        self._high = xp.asarray(lowbias32(GOLDEN), dtype=word, device=device)

    def word_array(self, value: int) -> Any:
        """``value`` (below 2**32) as a 0-d array of the word type."""
        return self.xp.asarray(value, dtype=self.word, device=self.device)

    def _mul(self, x: Any, c: int) -> Any:
        """``x * c mod 2**32`` for an array ``x`` of values below 2**32, in 16-bit halves."""
        k = self._k
        high = ((x * k[c >> 16]) & k[0xFFFF]) << 16
        return (high + x * k[c & 0xFFFF]) & k[MASK32]

    def lowbias32(self, x: Any) -> Any:
        """``lowbias32`` on every element of an array of the word type."""
        x = x ^ (x >> 16)
        x = self._mul(x, _M1)
        x = x ^ (x >> 15)
        x = self._mul(x, _M2)
        return x ^ (x >> 16)

    def step_keys(self, key: Any, step: Any) -> tuple[Any, Any]:
        """``step_keys`` on the device: ``key`` and ``step`` 0-d arrays of the word type."""
        a = self.lowbias32(key ^ self.lowbias32(step) ^ self._high)
        return a, self.lowbias32(a ^ self._k[GOLDEN])

    def bits(self, shape: tuple[int, ...], keys: tuple[Any, Any], row_offset: int = 0) -> Any:
        """The 32-bit hash of every element index of an array of ``shape`` (whose rows start
        at row ``row_offset`` of a larger batch) under ``keys`` (0-d arrays or ints)."""
        xp = self.xp
        size = math.prod(shape)
        start = row_offset * math.prod(shape[1:])
        index = xp.arange(start, start + size, dtype=self.word, device=self.device)
        index = xp.reshape(index, shape)
        k1, k2 = (k if not isinstance(k, int) else self.word_array(k) for k in keys)
        return self.lowbias32(self.lowbias32(index ^ k1) ^ k2)
