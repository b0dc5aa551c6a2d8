"""Layers: each one's forward stores what its backward needs; backward returns the input
gradient and fills the gradients of its parameters. No autograd tape.

All arithmetic goes through ``self.xp``, the array API namespace of the model's backend. The
layers live in small modules: ``core`` (``Layer``, ``Dense``, the kernel activations,
``Softmax``), ``activations`` (GELU, SiLU, ELU, Softplus), ``dropout``, ``norm``
(BatchNorm, LayerNorm), ``residual``, ``shape`` (Reshape, Flatten), ``conv`` (Conv1D and
pooling), ``images`` (Conv2D and the 2-d pools) and ``embedding``. ``LAYERS`` maps each
class name to its class: files load layers only through it.
"""

from __future__ import annotations

from polynn.layers.activations import ELU, GELU, SiLU, Softplus
from polynn.layers.conv import Conv1D, GlobalAveragePool1D, MaxPool1D
from polynn.layers.core import (
    Activation,
    Dense,
    Fused,
    Identity,
    Layer,
    LeakyReLU,
    Parameter,
    ReLU,
    Shape,
    Sigmoid,
    Softmax,
    Tanh,
    check_declared,
    check_stack,
    compatible,
    fuse,
    nested,
    stack_shapes,
)
from polynn.layers.dropout import Dropout
from polynn.layers.embedding import Embedding
from polynn.layers.images import AveragePool2D, Conv2D, GlobalAveragePool2D, MaxPool2D
from polynn.layers.norm import BatchNorm, LayerNorm
from polynn.layers.residual import Residual
from polynn.layers.shape import Flatten, Reshape

__all__ = [
    "LAYERS",
    "Activation",
    "AveragePool2D",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "ELU",
    "Embedding",
    "Flatten",
    "Fused",
    "GELU",
    "GlobalAveragePool1D",
    "GlobalAveragePool2D",
    "Identity",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "MaxPool1D",
    "MaxPool2D",
    "Parameter",
    "ReLU",
    "Reshape",
    "Residual",
    "Shape",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "check_declared",
    "check_stack",
    "compatible",
    "fuse",
    "nested",
    "stack_shapes",
]

LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        Dense,
        Identity,
        Sigmoid,
        Tanh,
        ReLU,
        LeakyReLU,
        Softmax,
        GELU,
        SiLU,
        ELU,
        Softplus,
        Dropout,
        BatchNorm,
        LayerNorm,
        Residual,
        Reshape,
        Flatten,
        Conv1D,
        MaxPool1D,
        GlobalAveragePool1D,
        Conv2D,
        MaxPool2D,
        AveragePool2D,
        GlobalAveragePool2D,
        Embedding,
    )
}
