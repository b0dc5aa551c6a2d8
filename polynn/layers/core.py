"""The core of the layers: ``Parameter``, the ``Layer`` base class, ``Dense``, the
activations computed by the kernel seam, ``Softmax``, and the checks of a stack of layers.

Each layer's forward stores what its backward needs; backward returns the input gradient and
fills the gradients of its parameters. No autograd tape. All arithmetic goes through
``self.xp``, the array API namespace of the model's backend.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from polynn._checks import integer, number
from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnTypeError, PolynnValueError

__all__ = [
    "Activation",
    "Dense",
    "Identity",
    "Layer",
    "LeakyReLU",
    "Parameter",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Shape",
    "check_declared",
    "check_stack",
    "compatible",
    "describe",
    "fuse",
    "nested",
    "stack_shapes",
]

#: The shape of one row (the batch dimension left out); ``None`` for a size not known
#: before the data arrives (the length of a sequence).
Shape = tuple[int | None, ...]


def compatible(a: Shape, b: Shape) -> bool:
    """Whether per-row shapes ``a`` and ``b`` can be the same (``None`` matches any size)."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def describe(shape: Shape) -> str:
    """``shape`` for a message: ``3`` for one axis, ``(length, 25)`` for more."""
    if len(shape) == 1 and shape[0] is not None:
        return str(shape[0])
    inner = ", ".join("length" if n is None else str(n) for n in shape)
    return f"rows of shape ({inner}{',' if len(shape) == 1 else ''})"


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
    """Base class. Subclasses implement ``forward`` and ``backward``.

    ``training`` is True while ``fit`` runs a training step (the model sets it; ``predict``,
    ``evaluate``, ``forward`` and validation run with False). ``params`` are the trainable
    arrays (in ``get_weights``), ``buffers`` the non-trainable ones saved with the model (a
    ``BatchNorm``'s running statistics: no optimizer sees them), and ``get_state`` small
    JSON-able state (a ``Dropout``'s step counter).
    """

    params: tuple[Parameter, ...] = ()
    #: Arrays the layer keeps that training does not optimise (running statistics, say):
    #: saved with the model, not part of ``get_weights``, never seen by an optimizer.
    buffers: tuple[Parameter, ...] = ()
    #: True during the training steps of ``fit`` (the model sets it), else False.
    training: bool = False
    #: The weight initialisation a preceding ``Dense`` uses by default; None passes on the
    #: hint of the layer after it (layers that keep the scale of what feeds an activation:
    #: Dropout, the normalisations, reshapes).
    init: ClassVar[str | None] = "glorot_uniform"
    #: Set once a model has built the layer: a layer belongs to one model.
    built = False
    #: Whether every output lies in [0, 1] (``Sigmoid``, ``Softmax``): ``loss="bce"`` takes
    #: a network that ends with such a layer. A layer of your own that gives probabilities
    #: sets it.
    probabilities: ClassVar[bool] = False

    #: What the layer's inputs and outputs hold: a mixed-precision model sets its half type
    #: here before ``build`` (see ``polynn.precision``); None means the parameters' dtype.
    compute_dtype: Any = None

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        """Create the parameters on ``backend`` in ``dtype`` (``init`` is a hint for weights)."""
        self.xp = backend.xp
        self.dtype, self.device = dtype, backend.device
        if self.compute_dtype is None:
            self.compute_dtype = dtype
        self.built = True

    def constant(self, value: float) -> Any:
        """``value`` as a 0-d array of the layer's dtype on its device (for custom layers:
        NumPy combines a small array with a 0-d array faster than with a Python float)."""
        return self.xp.asarray(value, dtype=self.compute_dtype, device=self.device)

    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad: Any) -> Any:
        raise NotImplementedError

    def param_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of the parameters ``build`` creates, in order, computed from the
        constructor's arguments alone: ``pn.load`` checks a file's arrays against them before
        reading any. A layer with weights must override it (a model refuses a layer whose
        parameters do not have the shapes it declares)."""
        return []

    def buffer_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of the ``buffers`` ``build`` creates, as ``param_shapes``."""
        return []

    def input_shape(self) -> Shape | None:
        """The shape of the rows this layer takes when it comes first in a model, or None
        for a layer that takes any shape (an activation)."""
        return None

    def output_shape(self, shape: Shape | None) -> Shape | None:
        """The shape of this layer's output rows for input rows of ``shape`` (None: not
        known yet); raises ``PolynnValueError`` for a shape it cannot take. The default keeps
        the shape: a layer of your own that changes it overrides this (and ``input_shape``),
        or the model's checks of the sizes around it go wrong."""
        return shape

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for saving."""
        return {}

    def get_state(self) -> dict[str, Any]:
        """Small state besides arrays (JSON values, e.g. a step counter), saved with the
        model so that training resumes exactly; ``set_state`` puts it back after ``build``."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer: ``y = x @ W + b`` with ``W`` of shape (in, out), ``b`` (out,).

    ``init`` is ``"glorot_uniform"``, ``"he_normal"`` or ``None``: Glorot before sigmoid,
    tanh and the rest, He before the ReLU family. An activation right after a Dense runs
    inside it (``fuse``): the bias add and the activation are one kernel where the backend
    has one.
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
        #: The activation fused into this layer, if any.
        self.activation: Activation | None = None

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        draw = getattr(rng, self.init_name or init)
        size = self.in_features * self.out_features * 8  # drawn in float64 on the host
        too_big = PolynnValueError(
            f"{self!r} asks for {size:,} bytes for its weights (drawn in float64); that does "
            "not fit in memory here."
        )
        if size > sys.maxsize:
            raise too_big
        try:
            W = backend.from_numpy(draw(self.in_features, self.out_features), dtype)
        except MemoryError:
            raise too_big from None
        b = backend.from_numpy(rng.zeros(self.out_features), dtype)
        self.W, self.b = Parameter(W, "W"), Parameter(b, "b")
        self.params = (self.W, self.b)
        self._bias_grad = backend.kernels.bias_grad
        #: The half type of a mixed-precision model: NumPy computes bfloat16 matrix products
        #: in float32, so they are cast back to it.
        self._half = None if self.compute_dtype == dtype else self.compute_dtype

    def param_shapes(self) -> list[tuple[int, ...]]:
        return [(self.in_features, self.out_features), (self.out_features,)]

    def input_shape(self) -> Shape:
        return (self.in_features,)

    def output_shape(self, shape: Shape | None) -> Shape:
        if shape is not None and not compatible(shape, (self.in_features,)):
            hint = ": put a Flatten() before it" if len(shape) > 1 else ""
            raise PolynnValueError(
                f"{self!r} expects {self.in_features} inputs, but the layer before it gives "
                f"{describe(shape)}{hint}."
            )
        return (self.out_features,)

    def fuse(self, activation: Activation) -> None:
        """Apply ``activation`` (built on the same backend) to this layer's output from now
        on; the model then skips the activation layer itself."""
        self.activation = activation
        self._act, self._act_grad = activation.kernel

    def forward(self, x: Any) -> Any:
        self._x = x
        z = x @ self.W.value
        if self._half is not None:
            z = self.xp.astype(z, self._half, copy=False)
        if self.activation is None:
            return z + self.b.value
        y, self._saved = self._act(z, self.b.value)
        return y

    def backward(self, grad: Any) -> Any:
        if self.activation is not None:
            grad = self._act_grad(grad, self._saved)
        self.W.grad = self._x.T @ grad
        self.b.grad = self._bias_grad(grad)
        if not self.need_input_grad:
            return None
        grad = grad @ self.W.value.T
        return grad if self._half is None else self.xp.astype(grad, self._half, copy=False)

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


class Activation(Layer):
    """An elementwise activation, computed by the backend's kernels (``polynn.kernels``).

    Subclasses name their kernel in ``kind``. After a ``Dense`` the activation runs inside
    that layer (see ``Dense.fuse``); elsewhere it runs on its own.
    """

    kind: ClassVar[str]

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        #: ``(forward, backward)`` from the backend's kernels, in the compute dtype.
        self.kernel = backend.kernels.activation(self.kind, self.compute_dtype, **self.get_config())

    def forward(self, x: Any) -> Any:
        y, self._saved = self.kernel[0](x, None)
        return y

    def backward(self, grad: Any) -> Any:
        return self.kernel[1](grad, self._saved)


class Sigmoid(Activation):
    """``y = 1 / (1 + exp(-x))``, computed as ``(tanh(x / 2) + 1) / 2`` so it never overflows."""

    kind = "sigmoid"
    probabilities = True


class Tanh(Activation):
    """``y = tanh(x)``."""

    kind = "tanh"


class ReLU(Activation):
    """``y = max(x, 0)``."""

    kind = "relu"
    init = "he_normal"


class LeakyReLU(Activation):
    """``y = x`` where ``x > 0``, else ``negative_slope * x``."""

    kind = "leaky_relu"
    init = "he_normal"

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = number(negative_slope, "LeakyReLU negative_slope", 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class Softmax(Layer):
    """``y = exp(x) / sum(exp(x))`` along the last axis (each row's outputs; each step's
    channels for sequences), computed in the parameters' dtype (float32 in a mixed-precision
    model).

    Before ``loss="cross_entropy"`` a final Softmax is fused into the loss (which takes
    logits), so it is never applied twice.
    """

    probabilities = True

    def forward(self, x: Any) -> Any:
        xp = self.xp
        x = xp.astype(x, self.dtype, copy=False)  # a mixed-precision model's half type
        e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
        self._y = y = e / xp.sum(e, axis=-1, keepdims=True)
        return xp.astype(y, self.compute_dtype, copy=False)

    def backward(self, grad: Any) -> Any:
        xp, y = self.xp, self._y
        grad = xp.astype(grad, self.dtype, copy=False)
        grad = y * (grad - xp.sum(grad * y, axis=-1, keepdims=True))
        return xp.astype(grad, self.compute_dtype, copy=False)


def init_hint(layers: Sequence[Layer], i: int, default: str = "glorot_uniform") -> str:
    """The initialisation layer ``i`` (a Dense, say) takes from the layers after it: the
    ``init`` of the first that states one (Dense, BatchNorm, ReLU: He before ReLU), else
    ``default`` (what follows the stack)."""
    for layer in layers[i + 1 :]:
        if layer.init is not None:
            return layer.init
    return default


def fuse(layers: Sequence[Layer]) -> list[Layer]:
    """The layers a model runs, once built: each activation right after a Dense is fused
    into it (``Dense.fuse``) and left out."""
    run: list[Layer] = []
    for layer in layers:
        previous = run[-1] if run else None
        plain = type(layer).forward is Activation.forward and (
            type(layer).backward is Activation.backward
        )  # a subclass that overrides them runs as it is written
        if isinstance(layer, Activation) and plain and isinstance(previous, Dense):
            if previous.activation is None:
                previous.fuse(layer)
                continue
        run.append(layer)
    return run


def stack_shapes(layers: Sequence[Layer]) -> tuple[Shape | None, Shape | None]:
    """The row shapes a stack of layers takes and gives (None where no layer fixes them):
    the input shape is that of the first layer that names one, when only layers that keep
    any shape (activations, Dropout) come before it."""
    entry: Shape | None = None
    shape: Shape | None = None
    for i, layer in enumerate(layers):
        if shape is None:
            entry = shape = layer.input_shape()
        try:
            shape = layer.output_shape(shape)
        except PolynnValueError as exc:
            raise PolynnValueError(f"layer {i}: {exc}") from None
    return entry, shape


def check_layers(layers: Sequence[Any], owner: str, what: str, example: str) -> None:
    """Refuse an empty stack, or an entry that is not a polynn layer (``what`` names an entry
    in the message, ``example`` shows one)."""
    if not layers:
        raise PolynnValueError(f"{owner} needs at least one layer; got none.")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise PolynnTypeError(
                f"{what} {i} must be a polynn layer such as {example}; got {type(layer).__name__}."
            )


def check_declared(
    layers: Sequence[Layer], params: Sequence[Parameter], buffers: Sequence[Parameter]
) -> None:
    """Refuse a built stack whose parameters or buffers differ from what its layers declare
    (``param_shapes``, ``buffer_shapes``), or are no longer those ``params`` and ``buffers``
    (a model's lists, taken when it was built): a file of such a model could not be loaded."""
    for inner in (deep for layer in layers for deep in nested(layer)):
        for kind, method, arrays in (
            ("parameters", "param_shapes", inner.params),
            ("buffers", "buffer_shapes", inner.buffers),
        ):
            have = [tuple(a.value.shape) for a in arrays]
            declared = [tuple(shape) for shape in getattr(inner, method)()]
            if have != declared:
                raise PolynnValueError(
                    f"{inner!r} has {kind} of shapes {have}, but its {method}() declares "
                    f"{declared}: a layer with weights declares their shapes, computed from "
                    f"its constructor's arguments, in {method}(), so that pn.load can check a "
                    "file before reading it."
                )
    held = [
        id(a) for kind in ("params", "buffers") for layer in layers for a in getattr(layer, kind)
    ]
    if held != [id(a) for a in (*params, *buffers)]:
        raise PolynnValueError(
            "a layer replaced its parameters or buffers after the model was built: create "
            "them in build(), and update their .value in place of new Parameter objects."
        )


def check_stack(layers: tuple[Layer, ...]) -> tuple[Shape | None, Shape | None]:
    """Check that ``layers`` can form one model (new layer objects whose shapes chain);
    return the row shapes it takes and gives (``stack_shapes``)."""
    check_layers(layers, "Sequential", "layer", "pn.Dense(2, 8)")
    entry, out = stack_shapes(layers)
    if entry is None and out is None:
        raise PolynnValueError(
            "Sequential needs at least one Dense layer (or another layer that fixes the sizes, "
            "such as Conv1D or Reshape) to know its sizes; got only layers of any size."
        )
    every = [inner for layer in layers for inner in nested(layer)]
    if len({id(layer) for layer in every}) != len(every):
        raise PolynnValueError("the same layer object appears twice; create one per position.")
    if any(layer.built for layer in every):
        raise PolynnValueError(
            "a layer already belongs to another Sequential; create new layer objects "
            "(or copy the model with net.to(...) or pickle)."
        )
    return entry, out


def nested(layer: Layer) -> list[Layer]:
    """``layer`` and every layer inside it (a ``Residual``'s stack), depth first."""
    inner = getattr(layer, "layers", None)
    if not isinstance(inner, (list, tuple)):
        return [layer]
    children = [child for child in inner if isinstance(child, Layer)]
    return [layer, *(deep for child in children for deep in nested(child))]
