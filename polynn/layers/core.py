"""The core of the layers: ``Parameter``, the ``Layer`` base class, ``Dense``, the
activations computed by the kernel seam, ``Softmax``, and the checks of a stack of layers.

Each layer's forward stores what its backward needs; backward returns the input gradient and
fills the gradients of its parameters. No autograd tape. All arithmetic goes through
``self.xp``, the array API namespace of the model's backend.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from polynn._checks import integer, number, unknown_name
from polynn.backends import Backend
from polynn.backends.host import INITIALIZERS, HostRNG
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.kernels import Act

__all__ = [
    "Activation",
    "Dense",
    "Fused",
    "Identity",
    "Layer",
    "LeakyReLU",
    "Parameter",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Shape",
    "Init",
    "check_built",
    "check_declared",
    "check_init",
    "axis_names",
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
    """``shape`` for a message: ``3`` for one axis, ``(length, 25)`` or ``(height, width,
    3)`` for more."""
    if len(shape) == 1 and shape[0] is not None:
        return str(shape[0])
    inner = ", ".join(axis_names(shape))
    return f"rows of shape ({inner}{',' if len(shape) == 1 else ''})"


#: How an array starts: a name from ``INITIALIZERS``, a number (every element), or a function
#: ``init(shape, rng)`` of the shape and the model's ``numpy.random.Generator``.
Init = str | float | Callable[[tuple[int, ...], Any], Any]


def check_init(init: Any, what: str, names: Sequence[str] = INITIALIZERS) -> Init:
    """``init`` if it is one of ``names``, a number or a function; else a clear error."""
    if callable(init) or isinstance(init, str) and init in names:
        return init
    if isinstance(init, str):
        raise PolynnValueError(unknown_name(f"{what} initialiser", init, names))
    if isinstance(init, bool) or not isinstance(init, (int, float)):
        raise PolynnTypeError(
            f"{what} must be an initialiser name from {list(names)}, a number or a function "
            f"(shape, rng) -> array; got {init!r}."
        )
    return number(init, what, -math.inf)


#: What a bias may start as (besides a number or a function): the initialisers that need no
#: fans.
BIAS_INITS = ("zeros", "ones")


def savable_inits(**inits: Any) -> dict[str, Any]:
    """The initialisers of a layer's config that a file can hold: names other than the
    defaults (None, ``"zeros"`` for a bias) and numbers; a function is left out."""
    return {
        key: value
        for key, value in inits.items()
        if not callable(value)
        and value is not None
        and not (key == "bias_init" and value == "zeros")
    }


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of an array of ``shape``, as Keras and PyTorch count them: a
    matrix (in, out) has ``in`` and ``out``; a kernel (..., in, out) multiplies both by the
    size of its leading axes; a vector (n,) has ``n`` and ``n``."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def axis_names(shape: Shape) -> list[str]:
    """Each size of ``shape`` as a message shows it: the number, or for a size not fixed
    before the data arrives its name (``length``; images: ``height``, ``width``)."""
    free = {1: ("length",), 2: ("length", "channels"), 3: ("height", "width", "channels")}
    names = free.get(len(shape), ("size",) * len(shape))
    return [names[i] if n is None else str(n) for i, n in enumerate(shape)]


class Parameter:
    """A trainable array and the gradient the last backward pass left for it."""

    __slots__ = ("value", "grad", "name")

    def __init__(self, value: Any, name: str) -> None:
        self.value = value
        self.grad: Any = None
        self.name = name

    def __repr__(self) -> str:
        shape = "not built" if self.value is None else tuple(self.value.shape)
        return f"Parameter({self.name}, shape={shape})"


class Layer:
    """Base class. Subclasses implement ``forward`` and ``backward``.

    ``training`` is True while ``fit`` runs a training step (the model sets it; ``predict``,
    ``evaluate``, ``forward`` and validation run with False). ``params`` are the arrays
    training optimises (in ``get_weights``), ``buffers`` the others saved with the model (a
    ``BatchNorm``'s running statistics: no optimizer sees them), and ``get_state`` small
    JSON-able state (a ``Dropout``'s step counter). ``trainable = False`` freezes the layer:
    the optimizer leaves its parameters as they are.

    A layer of your own with weights declares them in ``__init__`` with ``add_param`` (and
    non-trained arrays with ``add_buffer``); the model creates them on its backend, in its
    dtype, when it builds the layer, and its ``forward`` reads ``param.value``. Its
    ``backward`` sets ``param.grad`` (an array of the value's shape) and returns the input
    gradient.
    """

    params: tuple[Parameter, ...] = ()
    #: Arrays the layer keeps that training does not optimise (running statistics, say):
    #: saved with the model, not part of ``get_weights``, never seen by an optimizer.
    buffers: tuple[Parameter, ...] = ()
    #: True during the training steps of ``fit`` (the model sets it), else False.
    training: bool = False
    #: False freezes the layer: ``fit`` (and an optimizer bound with ``opt.bind(net)``)
    #: leaves its parameters unchanged, keeps no optimizer state for them and applies no
    #: weight decay to them; a frozen ``BatchNorm`` also keeps its running statistics and
    #: normalises with them. Saved with the model.
    trainable: bool = True
    #: The weight initialisation a preceding ``Dense`` uses by default; None passes on the
    #: hint of the layer after it (layers that keep the scale of what feeds an activation:
    #: Dropout, the normalisations, reshapes).
    init: ClassVar[str | None] = "glorot_uniform"
    #: Set once a model has built the layer: a layer belongs to one model.
    built = False
    #: What the layer takes first in a model: ``"real floating"`` data, which the model casts
    #: to its dtype, or ``"integral"`` ids (an ``Embedding``), which it keeps integer.
    input_kind: ClassVar[str] = "real floating"
    #: Whether every output lies in [0, 1] (``Sigmoid``, ``Softmax``): ``loss="bce"`` takes
    #: a network that ends with such a layer. A layer of your own that gives probabilities
    #: sets it.
    probabilities: ClassVar[bool] = False

    #: What the layer's inputs and outputs hold: a mixed-precision model sets its half type
    #: here before ``build`` (see ``polynn.precision``); None means the parameters' dtype.
    compute_dtype: Any = None
    #: True for a layer whose ``forward(x, act)`` and ``backward(grad, act)`` also run the
    #: activation after it (``Fused``): Dense and Conv1D. Declared by each class itself, so a
    #: subclass of them runs its activation on its own unless it declares it too.
    takes_activation: ClassVar[bool] = False
    #: Declared True by a class whose ``forward`` and ``backward`` read nothing back to the
    #: host (no ``float()``, ``bool()`` or ``.item()`` of a device array, no Python branch on
    #: device values, no host data copied in): its passes can then run inside a compiled
    #: training step (``polynn.compiled``). A subclass that overrides them declares it again.
    compilable: ClassVar[bool] = False
    #: The attributes holding device arrays that a training pass changes besides parameters
    #: and buffers (a Dropout's step count): a compiled step passes them in and out.
    device_state: ClassVar[tuple[str, ...]] = ()

    def add_param(self, name: str, shape: Sequence[int], init: Init = "zeros") -> Parameter:
        """Declare a trained array of ``shape`` (call it in ``__init__``) and return its
        ``Parameter``, also appended to ``params``: the model creates its ``value`` when it
        builds the layer. ``init``: an initialiser name (``"glorot_uniform"``, ``"he_normal"``,
        ``"zeros"``, ...: see ``polynn.backends.host.INITIALIZERS``; fans counted from the
        shape as ``fans`` says), a number, or a function ``init(shape, rng)`` of the shape and
        the model's ``numpy.random.Generator`` (so one seed gives the same values on every
        backend)."""
        param = self._declare(name, shape, init, "param")
        self.params = (*self.params, param)
        return param

    def add_buffer(self, name: str, shape: Sequence[int], init: Init = "zeros") -> Parameter:
        """Declare an array the layer keeps but training does not optimise (a running
        statistic), saved with the model; as ``add_param`` otherwise."""
        buffer = self._declare(name, shape, init, "buffer")
        self.buffers = (*self.buffers, buffer)
        return buffer

    def _declare(self, name: str, shape: Sequence[int], init: Init, kind: str) -> Parameter:
        if self.built:
            raise PolynnValueError(
                f"{type(self).__name__}.add_{kind}({name!r}, ...) was called after the model "
                f"built the layer; declare its arrays in __init__."
            )
        if not isinstance(name, str) or not name:
            raise PolynnTypeError(f"add_{kind} needs a name (a non-empty str); got {name!r}.")
        if isinstance(shape, int):
            shape = (shape,)
        shape = tuple(integer(n, f"the shape of {kind} {name!r}", 1) for n in shape)
        param = Parameter(None, name)
        declared = self.__dict__.setdefault("_declared", [])
        declared.append((param, shape, check_init(init, f"{kind} {name!r}"), kind))
        return param

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        """Create the parameters on ``backend`` in ``dtype`` (``init`` is a hint for weights):
        the base class creates those declared with ``add_param`` and ``add_buffer``."""
        self.xp = backend.xp
        self.dtype, self.device = dtype, backend.device
        if self.compute_dtype is None:
            self.compute_dtype = dtype
        for param, shape, how, kind in self.__dict__.get("_declared", ()):
            what = f"{kind} {param.name!r} of {type(self).__name__}"
            param.value = backend.from_numpy(rng.initial(how, shape, *fans(shape), what), dtype)
        self.built = True

    @property
    def trainable_params(self) -> list[Parameter]:
        """The parameters an optimizer updates: ``params``, or none for a frozen layer."""
        return list(self.params) if self.trainable else []

    def constant(self, value: float) -> Any:
        """``value`` as a 0-d array of the layer's dtype on its device, made once (for custom
        layers: NumPy combines a small array with a 0-d array faster than with a Python
        float, and a compiled step cannot copy host values to the device)."""
        made = self.__dict__.setdefault("_constants", {})
        if value not in made:
            made[value] = self.xp.asarray(value, dtype=self.compute_dtype, device=self.device)
        return made[value]

    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad: Any) -> Any:
        raise NotImplementedError

    def param_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of the parameters ``build`` creates, in order, computed from the
        constructor's arguments alone: ``pn.load`` checks a file's arrays against them before
        reading any. The default: those declared with ``add_param``; a layer that creates its
        parameters in ``build`` itself overrides this (a model refuses a layer whose parameters
        do not have the shapes it declares)."""
        declared = self.__dict__.get("_declared", ())
        return [shape for _, shape, _, kind in declared if kind == "param"]

    def buffer_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of the ``buffers`` ``build`` creates, as ``param_shapes``; by default
        those declared with ``add_buffer``."""
        declared = self.__dict__.get("_declared", ())
        return [shape for _, shape, _, kind in declared if kind == "buffer"]

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

    ``init`` is how ``W`` starts: ``None`` (Glorot-uniform before sigmoid, tanh and the
    rest, He-normal before the ReLU family), an initialiser name (``"glorot_uniform"``,
    ``"glorot_normal"``, ``"he_uniform"``, ``"he_normal"``, ``"lecun_normal"``,
    ``"orthogonal"``, ``"zeros"``, ``"ones"``), a number, or a function ``init(shape, rng)``
    (see ``Layer.add_param``); ``bias_init`` likewise for ``b`` (``"zeros"``, ``"ones"``, a
    number or a function). A function is not saved in files (the weights are). Its
    ``forward`` is this layer alone; in a model, an activation right after it runs with it
    (``Fused``), the bias add and the activation in one kernel, or in the matrix product's
    epilogue, where the backend has one.
    """

    compilable = True
    takes_activation = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        init: Init | None = None,
        bias_init: Init = "zeros",
    ) -> None:
        self.in_features = integer(in_features, "Dense in_features", 1)
        self.out_features = integer(out_features, "Dense out_features", 1)
        self.init_name = None if init is None else check_init(init, "Dense init")
        self.bias_init = check_init(bias_init, "Dense bias_init", BIAS_INITS)
        #: False for a network's first layer: its input gradient is never used.
        self.need_input_grad = True

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        n, m = self.in_features, self.out_features
        size = n * m * 8  # drawn in float64 on the host
        too_big = PolynnValueError(
            f"{self!r} asks for {size:,} bytes for its weights (drawn in float64); that does "
            "not fit in memory here."
        )
        if size > sys.maxsize:
            raise too_big
        how = self.init_name or init
        try:
            W = backend.from_numpy(rng.initial(how, (n, m), n, m, f"W of {self!r}"), dtype)
        except MemoryError:
            raise too_big from None
        b = backend.from_numpy(rng.initial(self.bias_init, (m,), m, m, f"b of {self!r}"), dtype)
        self.W, self.b = Parameter(W, "W"), Parameter(b, "b")
        self.params = (self.W, self.b)
        self._dense, self._dense_backward = backend.kernels.dense, backend.kernels.dense_backward

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

    def forward(self, x: Any, act: Act | None = None) -> Any:
        """``x @ W + b``; with ``act`` (how ``Fused`` runs it), that activation of it."""
        self._x = x
        y, self._saved = self._dense(x, self.W.value, self.b.value, act)
        return y

    def backward(self, grad: Any, act: Act | None = None) -> Any:
        return self._dense_backward(
            grad, self._x, self.W, self.b, self._saved, act, self.need_input_grad
        )

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "in_features": self.in_features,
            "out_features": self.out_features,
        }
        config.update(savable_inits(init=self.init_name, bias_init=self.bias_init))
        return config


class Fused(Layer):
    """A layer and the activation right after it, as one step of a model's run (``fuse``
    makes them): ``layer.forward(x, act)``, so that the bias add and the activation are one
    kernel, or the epilogue of the layer's matrix product. Each of the two layers on its own
    still computes itself alone."""

    compilable = True

    def __init__(self, layer: Layer, activation: Activation) -> None:
        self.layer, self.activation = layer, activation
        self.params = layer.params
        self._act = activation.act

    def forward(self, x: Any) -> Any:
        return self.layer.forward(x, self._act)

    def backward(self, grad: Any) -> Any:
        return self.layer.backward(grad, self._act)

    def __repr__(self) -> str:
        return f"Fused({self.layer!r}, {self.activation!r})"


class Identity(Layer):
    """``y = x``."""

    compilable = True

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, grad: Any) -> Any:
        return grad


class Activation(Layer):
    """An elementwise activation, computed by the backend's kernels (``polynn.kernels``).

    Subclasses name their kernel in ``kind``. In a model, right after a ``Dense`` it runs
    with that layer (``Fused``); elsewhere, and called on its own, it runs alone.
    """

    compilable = True

    kind: ClassVar[str]

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        #: ``(forward, backward)`` from the backend's kernels, in the compute dtype.
        self.kernel = backend.kernels.activation(self.kind, self.compute_dtype, **self.get_config())
        #: The same, as a layer before it runs it (``Fused``).
        self.act = Act(self.kind, *self.kernel, self.get_config().get("negative_slope", 0.01))

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

    compilable = True

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
    """The layers a model runs: each activation right after a layer that can run it (a Dense
    or a Conv1D: ``takes_activation``) joins that layer in a ``Fused`` step. The layers
    themselves are left as they are."""
    run: list[Layer] = []
    for layer in layers:
        previous = run[-1] if run else None
        plain = type(layer).forward is Activation.forward and (
            type(layer).backward is Activation.backward
        )  # a subclass that overrides them runs as it is written
        takes = previous is not None and type(previous).__dict__.get("takes_activation", False)
        if isinstance(layer, Activation) and plain and takes:
            run[-1] = Fused(previous, layer)
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
        check_built(inner)
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
    for layer in every[1:]:
        if layer.input_kind == "integral":
            raise PolynnValueError(
                f"{layer!r} takes integer ids, so it must be the model's first layer; it "
                "comes after another layer here."
            )
    if len({id(layer) for layer in every}) != len(every):
        raise PolynnValueError("the same layer object appears twice; create one per position.")
    if any(layer.built for layer in every):
        raise PolynnValueError(
            "a layer already belongs to another Sequential; create new layer objects "
            "(or copy the model with net.to(...) or pickle)."
        )
    return entry, out


def check_built(layer: Layer) -> None:
    """Refuse a built layer whose ``param_shapes`` or ``buffer_shapes`` do not describe the
    arrays it created: files are checked against them when they are read, before anything
    is built."""
    for kind, arrays, declared in (
        ("param", layer.params, layer.param_shapes()),
        ("buffer", layer.buffers, layer.buffer_shapes()),
    ):
        made = [tuple(a.value.shape) for a in arrays]
        said = [tuple(shape) for shape in declared]
        if made != said:
            raise PolynnValueError(
                f"{layer!r} created {kind}s of shapes {made}, but its {kind}_shapes() gives "
                f"{said}, and pn.load checks a file against {kind}_shapes() before it builds "
                f"a layer. "
                f"Declare the arrays in __init__ with self.add_{kind}(name, shape, init) (then "
                f"{kind}_shapes() needs no override), or make {kind}_shapes() return their shapes."
            )


def nested(layer: Layer) -> list[Layer]:
    """``layer`` and every layer inside it (a ``Residual``'s stack), depth first."""
    inner = getattr(layer, "layers", None)
    if not isinstance(inner, (list, tuple)):
        return [layer]
    children = [child for child in inner if isinstance(child, Layer)]
    return [layer, *(deep for child in children for deep in nested(child))]
