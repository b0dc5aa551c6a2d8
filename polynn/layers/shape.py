"""``Reshape`` and ``Flatten``: change the shape of each row; the batch dimension is kept."""

from __future__ import annotations

import math
from typing import Any

from polynn._checks import integer
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.layers.core import Layer, Shape, describe

__all__ = ["Flatten", "Reshape"]


class Reshape(Layer):
    """Reshapes each row to ``shape`` (a tuple of sizes; the batch dimension is kept):
    ``Reshape((40, 1))`` turns rows of 40 values into sequences of 40 one-channel steps, as
    ``Conv1D`` takes them. First in a model it takes flat rows of ``prod(shape)`` values."""

    compilable = True

    init = None  # a Dense before it takes the hint of the layer after it

    def __init__(self, shape: Any) -> None:
        if isinstance(shape, int) or not isinstance(shape, (tuple, list)):
            raise PolynnTypeError(f"Reshape takes a tuple of sizes such as (40, 1); got {shape!r}.")
        self.shape = tuple(integer(n, "each Reshape size", 1) for n in shape)
        if not self.shape:
            raise PolynnValueError("Reshape needs at least one size; got ().")
        self.size = math.prod(self.shape)

    def input_shape(self) -> Shape:
        return (self.size,)

    def output_shape(self, shape: Shape | None) -> Shape:
        if shape is not None and None not in shape and math.prod(shape) != self.size:
            raise PolynnValueError(
                f"{self!r} needs rows of {self.size} values, but the layer before it gives "
                f"{describe(shape)}."
            )
        return self.shape

    def forward(self, x: Any) -> Any:
        self._in = tuple(x.shape)
        return self.xp.reshape(x, (x.shape[0], *self.shape))

    def backward(self, grad: Any) -> Any:
        return self.xp.reshape(grad, self._in)

    def get_config(self) -> dict[str, Any]:
        return {"shape": self.shape}


class Flatten(Layer):
    """Flattens each row to one axis: (rows, length, channels) to (rows, length * channels),
    the inverse of ``Reshape``; its gradient takes the input's shape back."""

    compilable = True

    init = None  # a Dense before it takes the hint of the layer after it

    def output_shape(self, shape: Shape | None) -> Shape:
        if shape is None or None in shape:
            return (None,)
        return (math.prod(shape),)

    def forward(self, x: Any) -> Any:
        self._in = tuple(x.shape)
        return self.xp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def backward(self, grad: Any) -> Any:
        return self.xp.reshape(grad, self._in)
