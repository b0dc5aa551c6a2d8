"""ONNX export: a model's inference graph, to run outside Python (onnxruntime, ONNX-capable
servers and devices). Needs the ``onnx`` package: ``pip install "polynn[onnx]"``.

Each layer becomes standard ONNX operators (opset 17): ``Dense`` a ``MatMul`` and an ``Add``
with its weights as initializers, the activations their namesakes (``Sigmoid``, ``Tanh``,
``Relu``, ``LeakyRelu``, ``Softmax`` over the last axis, ``Identity``). The graph takes ``X`` of
shape (rows, features) and gives ``Y``, in the parameters' dtype (float32 for a
mixed-precision model: its float32 master weights are exported).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from polynn.backends.host import write_bytes
from polynn.errors import PolynnFileError, PolynnValueError
from polynn.layers import Dense, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = ["OPSET", "export_onnx"]

OPSET = 17
_UNARY = {Sigmoid: "Sigmoid", Tanh: "Tanh", ReLU: "Relu", Identity: "Identity"}


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise PolynnFileError(
            f'ONNX export needs the onnx package ({exc}): pip install "polynn[onnx]"'
        ) from None
    return onnx


def export_onnx(net: Sequential, path: str | os.PathLike) -> None:
    """Write ``net``'s inference graph to ``path`` (atomically, as ``save`` writes)."""
    onnx = _onnx()
    arrays = net.get_weights()
    helper, weights, elem = onnx.helper, iter(arrays), None
    if arrays:
        elem = onnx.helper.np_dtype_to_tensor_dtype(arrays[0].dtype)
    nodes, initializers, current = [], [], "X"
    for i, layer in enumerate(net.layers):
        out = "Y" if i == len(net.layers) - 1 else f"h{i}"
        kind = type(layer)
        if kind is Dense:
            W, b = next(weights), next(weights)
            initializers += [
                onnx.numpy_helper.from_array(W, f"W{i}"),
                onnx.numpy_helper.from_array(b, f"b{i}"),
            ]
            nodes += [
                helper.make_node("MatMul", [current, f"W{i}"], [f"z{i}"]),
                helper.make_node("Add", [f"z{i}", f"b{i}"], [out]),
            ]
        elif kind is LeakyReLU:
            nodes.append(
                helper.make_node("LeakyRelu", [current], [out], alpha=layer.negative_slope)
            )
        elif kind is Softmax:
            nodes.append(helper.make_node("Softmax", [current], [out], axis=-1))
        elif kind in _UNARY:
            nodes.append(helper.make_node(_UNARY[kind], [current], [out]))
        else:
            raise PolynnValueError(
                f"layer {i} ({layer!r}) has no ONNX form: export_onnx knows Dense and the "
                "activations Sigmoid, Tanh, ReLU, LeakyReLU, Softmax and Identity."
            )
        current = out
    graph = helper.make_graph(
        nodes,
        "polynn",
        [helper.make_tensor_value_info("X", elem, ["rows", net.in_features])],
        [helper.make_tensor_value_info("Y", elem, ["rows", net.n_outputs])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="polynn"
    )
    onnx.checker.check_model(model)
    write_bytes(path, model.SerializeToString())
