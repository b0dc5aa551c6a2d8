"""``Residual``: a skip connection around a stack of layers, ``y = x + f(x)``."""

from __future__ import annotations

from typing import Any

from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.layers.core import Layer, Shape, compatible, describe, fuse, stack_shapes

__all__ = ["Residual"]


class Residual(Layer):
    """``y = x + f(x)``, where ``f`` is the stack ``layers`` (applied in turn, as in a
    ``Sequential``), whose output must have the shape of its input: checked when it is
    constructed and again when the model is, with an error naming both shapes.

    Its parameters are those of its layers, in order (``get_weights`` lists them in place);
    ``training`` is passed down to them. An activation right after a ``Dense`` inside it
    runs fused into it, as in a model.
    """

    def __init__(self, *layers: Layer, **config: Any) -> None:
        if config:  # from a saved file: {"layers": [{"type": ..., "config": ...}, ...]}
            if set(config) != {"layers"} or layers:
                raise PolynnTypeError(
                    f"Residual takes layers, Residual(pn.Dense(8, 8), pn.ReLU()); got "
                    f"keywords {sorted(config)}."
                )
            layers = tuple(_from_specs(config["layers"]))
        if not layers:
            raise PolynnValueError("Residual needs at least one layer; got none.")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise PolynnTypeError(
                    f"Residual's layer {i} must be a polynn layer such as pn.Dense(8, 8); got "
                    f"{type(layer).__name__}."
                )
        self.layers = list(layers)
        entry, out = stack_shapes(self.layers)
        if entry is not None and out is not None and not compatible(entry, out):
            raise PolynnValueError(
                f"Residual adds its input to its layers' output, so they must give the shape "
                f"they take; these take {describe(entry)} and give {describe(out)}."
            )
        self._training = False

    @property
    def training(self) -> bool:  # type: ignore[override]
        return self._training

    @training.setter
    def training(self, flag: bool) -> None:
        self._training = flag
        for layer in self.layers:
            layer.training = flag

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        for i, layer in enumerate(self.layers):
            following = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if layer.compute_dtype is None:
                layer.compute_dtype = self.compute_dtype
            layer.build(backend, dtype, rng, following.init if following else init)
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
        return {
            "layers": [
                {"type": type(layer).__name__, "config": layer.get_config()}
                for layer in self.layers
            ]
        }

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


def _from_specs(specs: Any) -> list[Layer]:
    """Layers from saved ``{"type", "config"}`` entries; only the classes polynn knows."""
    from polynn.layers import LAYERS  # this package's registry imports this module

    if not isinstance(specs, list):
        raise PolynnTypeError(f"Residual's saved layers must be a list; got {specs!r}.")
    layers = []
    for spec in specs:
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in LAYERS:
            raise PolynnValueError(f"Residual names an unknown layer type {kind!r}.")
        layers.append(LAYERS[kind](**spec.get("config", {})))
    return layers
