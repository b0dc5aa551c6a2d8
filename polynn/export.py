"""ONNX export: a model's inference graph, to run outside Python (onnxruntime, ONNX-capable
servers and devices). Needs the ``onnx`` package: ``pip install "polynn[onnx]"``.

The graph computes what ``predict`` does, with standard ONNX operators (opset 17). Each of
polynn's layers becomes:

- ``Dense``: ``MatMul`` and ``Add``, its ``W`` and ``b`` as initializers;
- ``Sigmoid``, ``Tanh``, ``ReLU``, ``LeakyReLU``, ``Identity``, ``ELU``, ``Softplus``: their
  ONNX namesakes (``Relu``, ``LeakyRelu``, ``Elu`` with the layer's slope or alpha);
  ``Softmax``: ``Softmax`` over the last axis, as ``predict`` computes it;
- ``GELU`` (its tanh approximation; ONNX's ``Gelu`` needs opset 20): ``Clip`` to [-20, 20],
  ``Mul``, ``Add`` and ``Tanh``, in the order ``polynn.layers.activations`` computes it;
  ``SiLU``: ``x * Sigmoid(x)``;
- ``Dropout``: ``Identity`` (it drops nothing at inference);
- ``BatchNorm``: ``(x - running_mean) * inv_std * gamma + beta`` over the last axis (``Sub``,
  ``Mul``, ``Mul``, ``Add``), the running statistics of the model (``net.buffers``), with
  ``inv_std = 1 / sqrt(running_var + eps)`` computed when exporting;
- ``LayerNorm``: ``LayerNormalization`` over the last axis, with ``gamma`` and ``beta``;
- ``Residual``: its layers' graph, then ``Add`` of its input (nested blocks alike);
- ``Reshape``: ``Reshape`` to ``[0, *shape]`` (0 keeps the batch axis); ``Flatten``:
  ``Flatten`` from axis 1;
- ``Conv1D`` and ``MaxPool1D``: ``Conv`` (``W`` transposed to (out, in, kernel_size)) and
  ``MaxPool``, with their stride and padding, between two ``Transpose`` nodes, because ONNX
  puts the channels before the length and polynn after it;
- ``GlobalAveragePool1D``: ``ReduceMean`` over axis 1 (the length);
- ``Conv2D``, ``MaxPool2D`` and ``AveragePool2D``: ``Conv`` (``W`` transposed to (out, in,
  kh, kw); ``padding="same"`` as ``auto_pad="SAME_UPPER"``, the same rule), ``MaxPool`` and
  ``AveragePool`` between two ``Transpose`` nodes (ONNX puts the channels before the height
  and width); ``GlobalAveragePool2D``: ``ReduceMean`` over axes 1 and 2, the same value as
  ``GlobalAveragePool`` without the transposes;
- ``Embedding``: ``Gather`` of the rows of ``W``; the graph's input ``X`` then holds int64
  ids.

ONNX keeps float attributes in float32, which is exact for a float32 graph only: in a float64
graph ``LeakyReLU`` (``Max(x, slope * x)``), ``ELU`` (``Where``, ``Exp``) and ``LayerNorm``
(``ReduceMean``, ``Sqrt``, ...) are written out with float64 constants instead.

A layer class of the user's own (or a subclass of polynn's) has no ONNX form and is refused
with an error naming it. The graph takes ``X`` of shape ``(rows, *net.input_shape)`` and gives
``Y`` of shape ``(rows, *net.output_shape)``, sizes that the data fixes (a sequence's length)
left symbolic, in the parameters' dtype (float32 for a mixed-precision model: its float32
master weights are exported).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from polynn.backends.host import write_bytes
from polynn.errors import PolynnFileError, PolynnValueError
from polynn.layers import (
    ELU,
    GELU,
    AveragePool2D,
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAveragePool1D,
    GlobalAveragePool2D,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    MaxPool1D,
    MaxPool2D,
    Parameter,
    ReLU,
    Reshape,
    Residual,
    Shape,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = ["BUILDERS", "OPSET", "export_onnx"]

OPSET = 17
#: The IR version a file states: the oldest that opset 17 needs, not the onnx package's
#: newest, so that runtimes which lag the onnx package (onnxruntime usually does) open it.
IR_VERSION = 8
#: ONNX's element type for each parameter dtype.
_ELEMENT = {"float32": "FLOAT", "float64": "DOUBLE"}


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise PolynnFileError(
            f'ONNX export needs the onnx package ({exc}): pip install "polynn[onnx]"'
        ) from None
    return onnx


class Graph:
    """The nodes and initializers of a graph being built; every value gets a fresh name."""

    def __init__(self, onnx: Any, net: Sequential) -> None:
        self.onnx, self.helper = onnx, onnx.helper
        self.to_numpy = net.backend.to_numpy
        dtype = "float32" if net.mixed else net.dtype_name
        self.elem = getattr(onnx.TensorProto, _ELEMENT[dtype])
        #: ONNX keeps float attributes in float32: exact for a float32 graph only, so in a
        #: float64 one the layers whose operator has one are written with float64 constants.
        self.float32 = dtype == "float32"
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        #: Where the layer being exported sits, for error messages ("layer 3").
        self.where = ""
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        """Add a node of ``op_type``; return the name of its output."""
        out = self.name(op_type)
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attributes))
        return out

    def array(self, value: Any, hint: str) -> str:
        """A backend array (a parameter, a buffer) as an initializer."""
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(self.to_numpy(value), name))
        return name

    def param(self, p: Parameter) -> str:
        return self.array(p.value, p.name)

    def scalar(self, value: float) -> str:
        """A 0-d constant in the graph's float type."""
        name = self.name("c")
        self.initializers.append(self.helper.make_tensor(name, self.elem, [], [value]))
        return name

    def ints(self, values: Sequence[int]) -> str:
        """A 1-d int64 constant (a shape)."""
        name = self.name("shape")
        tensor = self.helper.make_tensor(name, self.onnx.TensorProto.INT64, [len(values)], values)
        self.initializers.append(tensor)
        return name

    def stack(self, layers: Sequence[Layer], x: str, outer: str = "") -> str:
        """The layers applied in turn to the value ``x``; the name of the result."""
        for i, layer in enumerate(layers):
            self.where = f"layer {i}" + (f" of the Residual at {outer}" if outer else "")
            build = BUILDERS.get(type(layer))
            if build is None:
                known = ", ".join(cls.__name__ for cls in BUILDERS)
                raise PolynnValueError(
                    f"{self.where} ({layer!r}) has no ONNX form: {type(layer).__name__} is not "
                    f"one of polynn's layers, and export_onnx knows only those ({known})."
                )
            x = build(self, layer, x)
        return x


# -- one builder per layer class: (graph, layer, input name) -> output name -----------------
def _dense(g: Graph, layer: Dense, x: str) -> str:
    return g.op("Add", g.op("MatMul", x, g.param(layer.W)), g.param(layer.b))


def _unary(op_type: str) -> Callable[[Graph, Layer, str], str]:
    return lambda g, layer, x: g.op(op_type, x)


def _leaky_relu(g: Graph, layer: LeakyReLU, x: str) -> str:
    if g.float32:
        return g.op("LeakyRelu", x, alpha=layer.negative_slope)
    return g.op("Max", x, g.op("Mul", x, g.scalar(layer.negative_slope)))  # slope <= 1


def _softmax(g: Graph, layer: Softmax, x: str) -> str:
    return g.op("Softmax", x, axis=-1)


def _elu(g: Graph, layer: ELU, x: str) -> str:
    if g.float32:
        return g.op("Elu", x, alpha=layer.alpha)
    negative = g.op("Sub", g.op("Exp", g.op("Min", x, g.scalar(0.0))), g.scalar(1.0))
    positive = g.op("Greater", x, g.scalar(0.0))
    return g.op("Where", positive, x, g.op("Mul", g.scalar(layer.alpha), negative))


def _gelu(g: Graph, layer: GELU, x: str) -> str:
    """``x / 2 * (1 + tanh(K * (xc + C * xc^3)))``, ``xc`` = ``x`` clipped to [-20, 20]."""
    xc = g.op("Clip", x, g.scalar(-20.0), g.scalar(20.0))
    cube = g.op("Mul", g.op("Mul", g.op("Mul", g.scalar(GELU.C), xc), xc), xc)
    t = g.op("Tanh", g.op("Mul", g.scalar(GELU.K), g.op("Add", xc, cube)))
    return g.op("Mul", g.op("Mul", g.scalar(0.5), x), g.op("Add", g.scalar(1.0), t))


def _silu(g: Graph, layer: SiLU, x: str) -> str:
    return g.op("Mul", x, g.op("Sigmoid", x))


def _batch_norm(g: Graph, layer: BatchNorm, x: str) -> str:
    """The inference form: the running statistics, as ``BatchNorm.forward`` uses them."""
    inv_std = 1.0 / layer.xp.sqrt(layer.running_var.value + layer.eps)
    centred = g.op("Sub", x, g.param(layer.running_mean))
    xhat = g.op("Mul", centred, g.array(inv_std, "inv_std"))
    return g.op("Add", g.op("Mul", xhat, g.param(layer.gamma)), g.param(layer.beta))


def _layer_norm(g: Graph, layer: LayerNorm, x: str) -> str:
    gamma, beta = g.param(layer.gamma), g.param(layer.beta)
    if g.float32:
        return g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=layer.eps)
    centred = g.op("Sub", x, g.op("ReduceMean", x, axes=[-1]))
    var = g.op("ReduceMean", g.op("Mul", centred, centred), axes=[-1])
    inv_std = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.scalar(layer.eps))))
    return g.op("Add", g.op("Mul", g.op("Mul", centred, inv_std), gamma), beta)


def _residual(g: Graph, layer: Residual, x: str) -> str:
    return g.op("Add", x, g.stack(layer.layers, x, outer=g.where))


def _reshape(g: Graph, layer: Reshape, x: str) -> str:
    return g.op("Reshape", x, g.ints([0, *layer.shape]))


def _flatten(g: Graph, layer: Flatten, x: str) -> str:
    return g.op("Flatten", x, axis=1)


def _length_first(g: Graph, x: str, op_type: str, *inputs: str, **attributes: Any) -> str:
    """``op_type`` (which takes (rows, channels, length)) on ``x`` of shape (rows, length,
    channels), transposed there and back."""
    y = g.op(op_type, g.op("Transpose", x, perm=[0, 2, 1]), *inputs, **attributes)
    return g.op("Transpose", y, perm=[0, 2, 1])


def _conv1d(g: Graph, layer: Conv1D, x: str) -> str:
    W = g.array(layer.xp.permute_dims(layer.W.value, (2, 1, 0)), "W")  # (out, in, kernel)
    return _length_first(
        g, x, "Conv", W, g.param(layer.b),
        kernel_shape=[layer.kernel_size], strides=[layer.stride], pads=[layer.padding] * 2,
    )  # fmt: skip


def _max_pool1d(g: Graph, layer: MaxPool1D, x: str) -> str:
    return _length_first(g, x, "MaxPool", kernel_shape=[layer.pool_size], strides=[layer.stride])


def _global_average_pool1d(g: Graph, layer: GlobalAveragePool1D, x: str) -> str:
    return g.op("ReduceMean", x, axes=[1], keepdims=0)


def _channels_first(g: Graph, x: str, op_type: str, *inputs: str, **attributes: Any) -> str:
    """``op_type`` (which takes (rows, channels, height, width)) on ``x`` of shape (rows,
    height, width, channels), transposed there and back."""
    y = g.op(op_type, g.op("Transpose", x, perm=[0, 3, 1, 2]), *inputs, **attributes)
    return g.op("Transpose", y, perm=[0, 2, 3, 1])


def _conv2d(g: Graph, layer: Conv2D, x: str) -> str:
    W = g.array(layer.xp.permute_dims(layer.W.value, (3, 2, 0, 1)), "W")  # (out, in, kh, kw)
    if layer.padding == "same":
        padding: dict[str, Any] = {"auto_pad": "SAME_UPPER"}
    else:
        (ph, pw) = layer.padding
        padding = {"pads": [ph, pw, ph, pw]}
    return _channels_first(
        g, x, "Conv", W, g.param(layer.b),
        kernel_shape=list(layer.kernel_size), strides=list(layer.stride), **padding,
    )  # fmt: skip


def _pool2d(op_type: str) -> Callable[[Graph, Any, str], str]:
    def build(g: Graph, layer: MaxPool2D | AveragePool2D, x: str) -> str:
        return _channels_first(
            g, x, op_type, kernel_shape=list(layer.pool_size), strides=list(layer.stride)
        )

    return build


def _global_average_pool2d(g: Graph, layer: GlobalAveragePool2D, x: str) -> str:
    return g.op("ReduceMean", x, axes=[1, 2], keepdims=0)


def _embedding(g: Graph, layer: Embedding, x: str) -> str:
    return g.op("Gather", g.param(layer.W), x, axis=0)


#: The ONNX form of each of polynn's layer classes (exactly these classes: a subclass may
#: compute something else).
BUILDERS: dict[type[Layer], Callable[[Graph, Any, str], str]] = {
    Dense: _dense,
    Sigmoid: _unary("Sigmoid"),
    Tanh: _unary("Tanh"),
    ReLU: _unary("Relu"),
    LeakyReLU: _leaky_relu,
    Softmax: _softmax,
    Identity: _unary("Identity"),
    GELU: _gelu,
    SiLU: _silu,
    ELU: _elu,
    Softplus: _unary("Softplus"),
    Dropout: _unary("Identity"),
    BatchNorm: _batch_norm,
    LayerNorm: _layer_norm,
    Residual: _residual,
    Reshape: _reshape,
    Flatten: _flatten,
    Conv1D: _conv1d,
    MaxPool1D: _max_pool1d,
    GlobalAveragePool1D: _global_average_pool1d,
    Conv2D: _conv2d,
    MaxPool2D: _pool2d("MaxPool"),
    AveragePool2D: _pool2d("AveragePool"),
    GlobalAveragePool2D: _global_average_pool2d,
    Embedding: _embedding,
}


def _value(g: Graph, name: str, shape: Shape | None, elem: int | None = None) -> Any:
    """The graph's input or output ``name``: (rows, *shape), a size of None left symbolic,
    of ONNX element type ``elem`` (default: the graph's float type)."""
    dims = None
    if shape is not None:
        dims = ["rows", *(f"{name}_axis{i + 1}" if n is None else n for i, n in enumerate(shape))]
    return g.helper.make_tensor_value_info(name, g.elem if elem is None else elem, dims)


def export_onnx(net: Sequential, path: str | os.PathLike) -> None:
    """Write ``net``'s inference graph to ``path`` (atomically, as ``save`` writes). A
    model that takes ids (an ``Embedding`` first) takes them as int64 in the graph."""
    onnx = _onnx()
    if net.input_shape is None:
        raise PolynnValueError(
            f"an ONNX graph's input has a fixed number of axes, but this model takes X of any "
            f"shape (its first layer, {net.layers[0]!r}, does not fix the shape of the rows): "
            "put a layer that does (Dense, Conv1D, Reshape) first to export it."
        )
    g = Graph(onnx, net)
    ids = onnx.TensorProto.INT64 if net.layers[0].input_kind == "integral" else None
    out = g.stack(net.layers, "X")
    for node in g.nodes:  # the last value is the graph's output "Y"
        node.output[:] = ["Y" if name == out else name for name in node.output]
    graph = g.helper.make_graph(
        g.nodes,
        "polynn",
        [_value(g, "X", net.input_shape, ids)],
        [_value(g, "Y", net.output_shape)],
        g.initializers,
    )
    model = g.helper.make_model(
        graph,
        opset_imports=[g.helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="polynn",
    )
    onnx.checker.check_model(model, full_check=True)
    write_bytes(path, model.SerializeToString())
