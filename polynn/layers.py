"""Layers: each one's forward stores what its backward needs; backward returns the input
gradient and fills the gradients of its parameters. No autograd tape.

All arithmetic goes through ``self.xp``, the array API namespace of the model's backend.
"""

from __future__ import annotations

from typing import Any, ClassVar

from polynn._checks import integer, number
from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnTypeError, PolynnValueError

__all__ = [
    "Dense",
    "Identity",
    "Layer",
    "LeakyReLU",
    "Parameter",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "check_stack",
]


class Parameter:
    """A trainable array and the gradient the last backward pass left for it."""

    __slots__ = ("value", "grad", "name")

    def __init__(self, value: Any, name: str) -> None:
        self.value = value
        self.grad: Any = None
        self.name = name

    def __repr__(self) -> str:
        return f"Parameter({self.name}, shape={tuple(self.value.shape)})"


class Layer:
    """Base class. Subclasses implement ``forward`` and ``backward``."""

    params: tuple[Parameter, ...] = ()
    #: The weight initialisation a preceding ``Dense`` uses by default.
    init: ClassVar[str] = "glorot_uniform"
    #: Set once a model has built the layer: a layer belongs to one model.
    built = False

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        """Create the parameters on ``backend`` (``init`` is a hint for weights)."""
        self.xp = backend.xp
        self.dtype, self.device = dtype, backend.device
        self.built = True

    def constant(self, value: float) -> Any:
        """``value`` as a 0-d array of the layer's dtype on its device.

        NumPy combines a small array with a Python float about 0.25 us slower than with a 0-d
        array of the array's dtype; a tiny network makes a dozen such operations per step.
        """
        return self.xp.asarray(value, dtype=self.dtype, device=self.device)

    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad: Any) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for saving."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer: ``y = x @ W + b`` with ``W`` of shape (in, out), ``b`` (out,).

    ``init`` is ``"glorot_uniform"``, ``"he_normal"`` or ``None``: Glorot before sigmoid,
    tanh and the rest, He before the ReLU family.
    """

    INITS = ("glorot_uniform", "he_normal")

    def __init__(self, in_features: int, out_features: int, *, init: str | None = None) -> None:
        self.in_features = integer(in_features, "Dense in_features", 1)
        self.out_features = integer(out_features, "Dense out_features", 1)
        if init is not None and init not in self.INITS:
            raise PolynnValueError(f"unknown init {init!r}; valid names are {list(self.INITS)}.")
        self.init_name = init
        #: False for a network's first layer: its input gradient is never used.
        self.need_input_grad = True

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        draw = getattr(rng, self.init_name or init)
        W = backend.from_numpy(draw(self.in_features, self.out_features), dtype)
        b = backend.from_numpy(rng.zeros(self.out_features), dtype)
        self.W, self.b = Parameter(W, "W"), Parameter(b, "b")
        self.params = (self.W, self.b)

    def forward(self, x: Any) -> Any:
        self._x = x
        return x @ self.W.value + self.b.value

    def backward(self, grad: Any) -> Any:
        self.W.grad = self._x.T @ grad
        self.b.grad = self.xp.sum(grad, axis=0)
        if self.need_input_grad:
            return grad @ self.W.value.T
        return None

    def get_config(self) -> dict[str, Any]:
        config = {"in_features": self.in_features, "out_features": self.out_features}
        if self.init_name is not None:
            config["init"] = self.init_name
        return config


class Identity(Layer):
    """``y = x``."""

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, grad: Any) -> Any:
        return grad


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``, computed as ``(tanh(x / 2) + 1) / 2`` so it never overflows."""

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        self._half, self._one = self.constant(0.5), self.constant(1.0)

    def forward(self, x: Any) -> Any:
        half = self._half
        self._y = y = half * self.xp.tanh(half * x) + half
        return y

    def backward(self, grad: Any) -> Any:
        y = self._y
        return grad * (y * (self._one - y))


class Tanh(Layer):
    """``y = tanh(x)``."""

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        self._one = self.constant(1.0)

    def forward(self, x: Any) -> Any:
        self._y = y = self.xp.tanh(x)
        return y

    def backward(self, grad: Any) -> Any:
        y = self._y
        return grad * (self._one - y * y)


class ReLU(Layer):
    """``y = max(x, 0)``."""

    init = "he_normal"

    def forward(self, x: Any) -> Any:
        # A multiplication by the mask is much cheaper than xp.where on large arrays.
        self._mask = mask = self.xp.astype(x > 0, x.dtype)
        return x * mask

    def backward(self, grad: Any) -> Any:
        return grad * self._mask


class LeakyReLU(Layer):
    """``y = x`` where ``x > 0``, else ``negative_slope * x``."""

    init = "he_normal"

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = number(negative_slope, "LeakyReLU negative_slope", 0.0, 1.0)

    def forward(self, x: Any) -> Any:
        slope = self.negative_slope
        self._factor = factor = self.xp.astype(x > 0, x.dtype) * (1.0 - slope) + slope
        return x * factor

    def backward(self, grad: Any) -> Any:
        return grad * self._factor

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class Softmax(Layer):
    """``y = exp(x) / sum(exp(x))`` along each row.

    Before ``loss="cross_entropy"`` a final Softmax is fused into the loss (which takes
    logits), so it is never applied twice.
    """

    def forward(self, x: Any) -> Any:
        xp = self.xp
        e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
        self._y = y = e / xp.sum(e, axis=1, keepdims=True)
        return y

    def backward(self, grad: Any) -> Any:
        y = self._y
        return y * (grad - self.xp.sum(grad * y, axis=1, keepdims=True))


def check_stack(layers: tuple[Layer, ...]) -> list[Dense]:
    """Check that ``layers`` can form one model (new layer objects, Dense sizes that chain);
    return its Dense layers."""
    if not layers:
        raise PolynnValueError("Sequential needs at least one layer; got none.")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise PolynnTypeError(
                f"layer {i} must be a polynn layer such as pn.Dense(2, 8); "
                f"got {type(layer).__name__}."
            )
    dense = [layer for layer in layers if isinstance(layer, Dense)]
    if not dense:
        raise PolynnValueError("Sequential needs at least one Dense layer to know its sizes.")
    for a, b in zip(dense, dense[1:]):
        if a.out_features != b.in_features:
            raise PolynnValueError(
                f"{b!r} expects {b.in_features} inputs, but the Dense before it gives "
                f"{a.out_features} ({a!r})."
            )
    if len({id(layer) for layer in layers}) != len(layers):
        raise PolynnValueError("the same layer object appears twice; create one per position.")
    if any(layer.built for layer in layers):
        raise PolynnValueError(
            "a layer already belongs to another Sequential; create new layer objects "
            "(or copy the model with net.to(...) or pickle)."
        )
    return dense


LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (Dense, Identity, Sigmoid, Tanh, ReLU, LeakyReLU, Softmax)
}
