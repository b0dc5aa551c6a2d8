"""``Embedding``: a table of vectors looked up by integer ids (tokens, categories)."""

from __future__ import annotations

from typing import Any

from polynn._checks import integer
from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.layers.core import Layer, Parameter, Shape

__all__ = ["Embedding"]


class Embedding(Layer):
    """``y[..., :] = W[x[...], :]``: the row of ``W`` (shape (vocab_size, dim)) for each
    integer id of ``x``, which has any shape (rows, ...); ``y`` has shape (rows, ..., dim).
    In a model it comes first and takes rows of ids, (rows, length) for any length (a
    ``GlobalAveragePool1D`` after it makes a bag-of-embeddings classifier); the model keeps
    ``X`` integer and refuses ids outside [0, vocab_size) when it checks ``X``, once per
    ``fit``, ``evaluate`` or ``predict`` call (never inside a training step). ``W`` starts
    standard normal, as PyTorch's ``nn.Embedding``. The gradient of a row sums over every
    place its id appears (``Kernels.scatter_add``), in the parameters' dtype."""

    compilable = True

    #: The model keeps its input integer (``polynn.data``).
    input_kind = "integral"

    def __init__(self, vocab_size: int, dim: int) -> None:
        self.vocab_size = integer(vocab_size, "Embedding vocab_size", 1)
        self.dim = integer(dim, "Embedding dim", 1)

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        table = rng.normal(self.vocab_size, self.dim)
        self.W = Parameter(backend.from_numpy(table, dtype), "W")
        self.params = (self.W,)
        self._scatter_add = backend.kernels.scatter_add

    def param_shapes(self) -> list[tuple[int, ...]]:
        return [(self.vocab_size, self.dim)]

    def input_shape(self) -> Shape:
        return (None,)

    def output_shape(self, shape: Shape | None) -> Shape:
        return (*(shape or (None,)), self.dim)

    def check_ids(self, ids: Any) -> None:
        """Refuse ids outside [0, vocab_size) (one read from the device)."""
        xp = self.xp
        if bool(xp.any(xp.logical_or(ids < 0, ids >= self.vocab_size))):
            low, high = int(xp.min(ids)), int(xp.max(ids))
            raise PolynnValueError(
                f"{self!r} takes ids from 0 to {self.vocab_size - 1}; X holds ids from {low} "
                f"to {high}."
            )

    def forward(self, x: Any) -> Any:
        xp = self.xp
        if not xp.isdtype(x.dtype, "integral"):
            raise PolynnTypeError(
                f"{self!r} takes integer ids; got an array of {x.dtype}. An Embedding comes "
                "first in a model, which then keeps X integer."
            )
        self._ids = xp.reshape(x, (-1,))
        y = xp.take(self.W.value, self._ids, axis=0)
        return xp.reshape(y, (*x.shape, self.dim))

    def backward(self, grad: Any) -> None:
        xp = self.xp
        g = xp.astype(xp.reshape(grad, (-1, self.dim)), self.dtype, copy=False)
        self.W.grad = self._scatter_add(self._ids, g, self.vocab_size)
        return None  # ids have no gradient

    def get_config(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "dim": self.dim}
