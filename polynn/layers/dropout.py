"""``Dropout``: masks from a counter-based hash of (key, step, element index) computed on the
device (``polynn.hashing``), so that one model seed gives bit-identical masks on every backend
and a compiled step draws each training pass's own mask."""

from __future__ import annotations

from typing import Any

from polynn._checks import integer, number
from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnValueError
from polynn.hashing import MASK32, Hash, lowbias32, step_keys, word_dtype
from polynn.layers.core import Layer

__all__ = ["Dropout", "lowbias32", "mask_bits", "step_keys", "word_dtype"]


def mask_bits(
    xp: Any,
    device: Any,
    word: Any,
    shape: tuple[int, ...],
    keys: tuple[int, int],
    row_offset: int = 0,
) -> Any:
    """The 32-bit hash of every element index of an array of ``shape`` (whose rows start at
    row ``row_offset`` of a larger batch), in ``word``, under the host ``keys``."""
    return Hash(xp, device, word).bits(shape, keys, row_offset)


class Dropout(Layer):
    """Zeroes each element with probability ``rate`` during ``fit`` and scales the others by
    ``1 / (1 - rate)``; the identity in ``predict``, ``evaluate`` and validation.

    The masks come from a counter-based hash computed on the device (see this module): one
    model seed gives bit-identical masks on every backend, and ``get_state`` keeps the key
    and the step counter, so a saved model resumes the same sequence of masks.
    """

    compilable = True
    device_state = ("_step",)

    init = None  # a Dense before it takes the hint of the layer after it

    def __init__(self, rate: float) -> None:
        self.rate = number(rate, "Dropout rate", 0.0, 1.0)
        # An element is kept where its hash is at least this: probability 1 - rate.
        self._threshold = min(round(self.rate * 2**32), MASK32)
        self.key = 0
        self._step: Any = 0  # training passes so far: a 0-d array of the hash's word once built
        #: Where this batch's rows start in the global batch (data-parallel training sets it,
        #: so that N ranks draw the masks one process would).
        self.row_offset = 0

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        self.key = rng.key32()
        self._kernels = backend.kernels
        self._step = self._kernels.hash().word_array(self._step)

    @property
    def step(self) -> int:
        """The number of training passes so far (read from the device)."""
        return self._step if isinstance(self._step, int) else int(self._step)

    @step.setter
    def step(self, value: int) -> None:
        value = integer(value, "Dropout step", 0)
        if value > MASK32:
            raise PolynnValueError(f"Dropout step must be below 2**32; got {value}.")
        self._step = value if not self.built else self._kernels.hash().word_array(value)

    def mask(self, shape: tuple[int, ...], step: int, row_offset: int = 0) -> Any:
        """The keep mask (booleans) of training pass ``step`` for an input of ``shape`` whose
        rows start at row ``row_offset`` of the batch (keys mixed on the host: a reference
        for what ``forward`` draws on the device)."""
        h = self._kernels.hash()
        return h.bits(shape, step_keys(self.key, step), row_offset) >= h.word_array(self._threshold)

    def forward(self, x: Any) -> Any:
        self._scale = None
        if not self.training or self.rate == 0.0:
            return x
        self._scale = self._kernels.dropout(
            tuple(x.shape), self.key, self._step, self.row_offset, self._threshold,
            self.constant(1.0 / (1.0 - self.rate)),
        )  # fmt: skip
        self._step += 1  # on the device: in place, or a new array where arrays are immutable
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
        key = integer(state.get("key", self.key), "Dropout key", 0)
        if key > MASK32:
            raise PolynnValueError(f"Dropout key must be below 2**32; got {key}.")
        self.key = key
        if "step" in state:
            self.step = state["step"]
