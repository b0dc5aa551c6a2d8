"""polynn: neural networks written once against the Python array API standard.

The same layers, losses and optimizers train on NumPy, CuPy or any conforming namespace;
``backend="numpy"`` or ``backend="cupy"`` is the whole switch.
"""

__version__ = "0.1.0"

from polynn import backends, distributed, metrics, schedules  # noqa: E402
from polynn.backends import to_numpy  # noqa: E402
from polynn.callbacks import (  # noqa: E402
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from polynn.errors import (  # noqa: E402
    BackendUnavailableError,
    PolynnError,
    PolynnFileError,
    PolynnFileNotFoundError,
    PolynnTypeError,
    PolynnValueError,
    TrainingDivergedError,
)
from polynn.files import load  # noqa: E402
from polynn.layers import (  # noqa: E402
    ELU,
    GELU,
    BatchNorm,
    Conv1D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePool1D,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    MaxPool1D,
    Parameter,
    ReLU,
    Reshape,
    Residual,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from polynn.losses import MAE, MSE, BinaryCrossEntropy, CrossEntropy, Huber, Loss  # noqa: E402
from polynn.model import Sequential  # noqa: E402
from polynn.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop  # noqa: E402
from polynn.registry import register  # noqa: E402
from polynn.schedules import (  # noqa: E402
    CosineDecay,
    ExponentialDecay,
    PiecewiseConstant,
    Schedule,
    StepDecay,
)

__all__ = [
    "Adagrad",
    "Adam",
    "AdamW",
    "CSVLogger",
    "CosineDecay",
    "ExponentialDecay",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "PiecewiseConstant",
    "RMSprop",
    "ReduceLROnPlateau",
    "Schedule",
    "StepDecay",
    "register",
    "schedules",
    "BackendUnavailableError",
    "BatchNorm",
    "BinaryCrossEntropy",
    "Callback",
    "Conv1D",
    "CrossEntropy",
    "Dense",
    "Dropout",
    "ELU",
    "EarlyStopping",
    "Flatten",
    "GELU",
    "GlobalAveragePool1D",
    "History",
    "Huber",
    "Identity",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "Loss",
    "MAE",
    "MSE",
    "MaxPool1D",
    "Optimizer",
    "Parameter",
    "PolynnError",
    "PolynnFileError",
    "PolynnFileNotFoundError",
    "PolynnTypeError",
    "PolynnValueError",
    "ReLU",
    "Reshape",
    "Residual",
    "SGD",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "TrainingDivergedError",
    "backends",
    "distributed",
    "load",
    "metrics",
    "to_numpy",
]
