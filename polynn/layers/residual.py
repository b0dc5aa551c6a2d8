"""``Residual``: a skip connection around a stack of layers, ``y = x + f(x)``."""

from __future__ import annotations

from typing import Any

from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnValueError
from polynn.layers.core import (
    Layer,
    Parameter,
    Shape,
    check_layers,
    compatible,
    describe,
    fuse,
    init_hint,
    stack_shapes,
)

__all__ = ["MAX_DEPTH", "Residual"]

#: How deep Residual blocks may nest (a block inside a block ... counts each): deeper
#: stacks of Python calls would exhaust the interpreter's recursion limit when the model is
#: saved or loaded.
MAX_DEPTH = 64


class Residual(Layer):
    """``y = x + f(x)``, where ``f`` is the stack ``layers`` (applied in turn, as in a
    ``Sequential``), whose output must have the shape of its input: checked when it is
    constructed and again when the model is, with an error naming both shapes.

    Its parameters are those of its layers, in order (``get_weights`` lists them in place);
    ``training`` and ``trainable`` are passed down to them. An activation right after a
    ``Dense`` inside it runs fused into it, as in a model.
    """

    compilable = True

    def __init__(self, *layers: Layer) -> None:
        check_layers(layers, "Residual", "Residual's layer", "pn.Dense(8, 8)")
        #: How many Residual blocks nest here, this one included.
        self.depth = 1 + max((getattr(layer, "depth", 0) for layer in layers), default=0)
        if self.depth > MAX_DEPTH:
            raise PolynnValueError(
                f"Residual blocks nest at most {MAX_DEPTH} deep; this one would be "
                f"{self.depth} deep."
            )
        self.layers = list(layers)
        entry, out = stack_shapes(self.layers)
        if entry is not None and out is not None and not compatible(entry, out):
            raise PolynnValueError(
                f"Residual adds its input to its layers' output, so they must give the shape "
                f"they take; these take {describe(entry)} and give {describe(out)}."
            )
        self._training = False
        self._trainable = True

    @property
    def training(self) -> bool:  # type: ignore[override]
        return self._training

    @training.setter
    def training(self, flag: bool) -> None:
        self._training = flag
        for layer in self.layers:
            layer.training = flag

    @property
    def trainable(self) -> bool:  # type: ignore[override]
        """Setting it sets every layer inside too (as Keras does); while it is False, none of
        them trains, whatever their own flag says."""
        return self._trainable

    @trainable.setter
    def trainable(self, flag: bool) -> None:
        self._trainable = flag
        for layer in self.layers:
            layer.trainable = flag

    @property
    def trainable_params(self) -> list[Parameter]:
        if not self.trainable:
            return []
        return [p for layer in self.layers for p in layer.trainable_params]

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        for i, layer in enumerate(self.layers):
            if layer.compute_dtype is None:
                layer.compute_dtype = self.compute_dtype
            layer.build(backend, dtype, rng, init_hint(self.layers, i, init))
        self._run = fuse(self.layers)
        self.params = tuple(p for layer in self.layers for p in layer.params)
        self.buffers = tuple(b for layer in self.layers for b in layer.buffers)

    def param_shapes(self) -> list[tuple[int, ...]]:
        return [shape for layer in self.layers for shape in layer.param_shapes()]

    def buffer_shapes(self) -> list[tuple[int, ...]]:
        return [shape for layer in self.layers for shape in layer.buffer_shapes()]

    def input_shape(self) -> Shape | None:
        return stack_shapes(self.layers)[0]

    def output_shape(self, shape: Shape | None) -> Shape | None:
        if shape is None:
            return stack_shapes(self.layers)[1]
        out = shape
        for i, layer in enumerate(self.layers):
            try:
                out = layer.output_shape(out)
            except PolynnValueError as exc:
                raise PolynnValueError(f"inside {type(self).__name__}, layer {i}: {exc}") from None
        if out is None or not compatible(out, shape):
            gives = "rows of unknown shape" if out is None else describe(out)
            raise PolynnValueError(
                f"Residual adds its input to its layers' output, but they take "
                f"{describe(shape)} and give {gives}."
            )
        return shape

    def forward(self, x: Any) -> Any:
        y = x
        for layer in self._run:
            y = layer.forward(y)
        return x + y

    def backward(self, grad: Any) -> Any:
        # The layers' backward passes may write into the gradient they are given.
        inner = self.xp.asarray(grad, copy=True)
        for layer in reversed(self._run):
            inner = layer.backward(inner)
        return grad + inner

    def get_config(self) -> dict[str, Any]:
        """``{"layers": [...]}``: each layer as a file names it (``polynn.registry``)."""
        from polynn.registry import encode  # the registry imports the layers

        return {
            "layers": [
                encode(layer, f"layer {i} of {type(self).__name__}")
                for i, layer in enumerate(self.layers)
            ]
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Residual:
        """The block a file's config describes; its layers' names are looked up as a model's
        are (polynn's own classes, registered ones, ``custom_objects``)."""
        from polynn.registry import build

        specs = config.get("layers")
        if set(config) != {"layers"} or not isinstance(specs, list):
            raise PolynnValueError(
                f"a Residual's config is {{'layers': [...]}}; got keys {sorted(config)}."
            )
        return cls(*(build("layer", spec, custom_objects) for spec in specs))

    def get_state(self) -> dict[str, Any]:
        states = [layer.get_state() for layer in self.layers]
        return {"layers": states} if any(states) else {}

    def set_state(self, state: dict[str, Any]) -> None:
        states = state.get("layers", [])
        if set(state) - {"layers"} or len(states) not in (0, len(self.layers)):
            raise PolynnValueError(
                f"Residual state holds one entry per layer ({len(self.layers)}); got {state!r}."
            )
        for layer, inner in zip(self.layers, states):
            layer.set_state(inner)

    def __repr__(self) -> str:
        return f"Residual({', '.join(repr(layer) for layer in self.layers)})"
