"""Normalisation layers: ``BatchNorm`` (over the batch) and ``LayerNorm`` (over each row).

Both normalise the last axis's features (channels last: a Conv1D's channels), with a
learnable scale ``gamma`` (ones at first) and shift ``beta`` (zeros), and compute in the
parameters' dtype.
"""

from __future__ import annotations

import math
from typing import Any

from polynn._checks import integer, number
from polynn.backends import Backend
from polynn.backends.host import HostRNG
from polynn.errors import PolynnValueError
from polynn.layers.core import Layer, Parameter, Shape, compatible, describe

__all__ = ["BatchNorm", "LayerNorm"]


class _Norm(Layer):
    """What both share: the features, ``eps``, ``gamma`` and ``beta``, the shape check."""

    init = None  # a Dense before it takes the hint of the layer after it

    def __init__(self, features: int, eps: float) -> None:
        name = type(self).__name__
        self.features = integer(features, f"{name} features", 1)
        self.eps = number(eps, f"{name} eps", 0.0, low_open=True)

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        ones = backend.from_numpy(rng.zeros(self.features) + 1.0, dtype)
        self.gamma = Parameter(ones, "gamma")
        self.beta = Parameter(backend.from_numpy(rng.zeros(self.features), dtype), "beta")
        self.params = (self.gamma, self.beta)

    def param_shapes(self) -> list[tuple[int, ...]]:
        return [(self.features,), (self.features,)]

    def input_shape(self) -> Shape:
        return (self.features,)

    def output_shape(self, shape: Shape | None) -> Shape | None:
        if shape is not None and not (shape and compatible(shape[-1:], (self.features,))):
            raise PolynnValueError(
                f"{self!r} normalises {self.features} features (the last axis), but the layer "
                f"before it gives {describe(shape)}."
            )
        return shape

    def _finish(self, xhat: Any) -> Any:
        """``gamma * xhat + beta`` in the compute dtype."""
        y = xhat * self.gamma.value + self.beta.value
        return self.xp.astype(y, self.compute_dtype, copy=False)

    def _param_grads(self, grad: Any, axes: tuple[int, ...]) -> Any:
        """Fill the gradients of gamma and beta; return the gradient w.r.t. ``xhat``."""
        xp = self.xp
        grad = xp.astype(grad, self.dtype, copy=False)
        self.gamma.grad = xp.sum(grad * self._xhat, axis=axes)
        self.beta.grad = xp.sum(grad, axis=axes)
        return grad * self.gamma.value

    def get_config(self) -> dict[str, Any]:
        return {"features": self.features, "eps": self.eps}


class BatchNorm(_Norm):
    """Normalises each feature over the batch (and, for (rows, length, channels) inputs,
    over the length): PyTorch's ``BatchNorm1d`` semantics.

    During ``fit`` it uses the batch's mean and (biased) variance and updates the running
    statistics, ``running = (1 - momentum) * running + momentum * batch`` with the unbiased
    variance; ``predict``, ``evaluate`` and validation use the running statistics. They are
    buffers (``net.buffers``), saved with the model and never seen by the optimizer. A frozen
    BatchNorm (``trainable = False``) normalises with its running statistics in ``fit`` too
    and leaves them as they are (Keras's rule), so fine-tuning keeps what it learnt.
    """

    compilable = True

    def __init__(self, features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(features, eps)
        self.momentum = number(momentum, "BatchNorm momentum", 0.0, 1.0, high_open=False)

    def build(self, backend: Backend, dtype: Any, rng: HostRNG, init: str) -> None:
        super().build(backend, dtype, rng, init)
        mean = backend.from_numpy(rng.zeros(self.features), dtype)
        var = backend.from_numpy(rng.zeros(self.features) + 1.0, dtype)
        self.running_mean = Parameter(mean, "running_mean")
        self.running_var = Parameter(var, "running_var")
        self.buffers = (self.running_mean, self.running_var)

    def buffer_shapes(self) -> list[tuple[int, ...]]:
        return [(self.features,), (self.features,)]

    def forward(self, x: Any) -> Any:
        xp = self.xp
        x = xp.astype(x, self.dtype, copy=False)  # a mixed-precision model's half type
        axes = tuple(range(x.ndim - 1))
        self._batch = self.training and self.trainable
        if not self._batch:
            self._inv = 1.0 / xp.sqrt(self.running_var.value + self.eps)
            self._xhat = (x - self.running_mean.value) * self._inv
            return self._finish(self._xhat)
        n = math.prod(x.shape[:-1])
        if n < 2:
            raise PolynnValueError(
                f"{self!r} needs more than one value per feature in a training batch; got "
                f"input of shape {tuple(x.shape)}: choose a batch size that leaves no batch "
                "of a single row."
            )
        mean = xp.mean(x, axis=axes)
        centred = x - mean
        var = xp.mean(centred * centred, axis=axes)
        self._inv = 1.0 / xp.sqrt(var + self.eps)
        self._xhat = centred * self._inv
        # In place where arrays are writable (a captured CUDA graph updates them where they
        # are), a new array where they are not (JAX).
        m, running_mean, running_var = self.momentum, self.running_mean, self.running_var
        running_mean.value *= 1.0 - m
        running_mean.value += m * mean
        running_var.value *= 1.0 - m
        running_var.value += (m * n / (n - 1)) * var
        return self._finish(self._xhat)

    def backward(self, grad: Any) -> Any:
        xp = self.xp
        axes = tuple(range(grad.ndim - 1))
        g = self._param_grads(grad, axes)
        if self._batch:
            xhat = self._xhat
            mean_g = xp.mean(g, axis=axes)
            mean_gx = xp.mean(g * xhat, axis=axes)
            g = (g - mean_g - xhat * mean_gx) * self._inv
        else:
            g = g * self._inv
        return xp.astype(g, self.compute_dtype, copy=False)

    def get_config(self) -> dict[str, Any]:
        return {"features": self.features, "momentum": self.momentum, "eps": self.eps}


class LayerNorm(_Norm):
    """Normalises each row's ``features`` (the last axis) to mean 0 and variance 1 (the
    biased variance, as PyTorch's ``LayerNorm``), then scales and shifts them. It behaves
    the same in training and inference."""

    compilable = True

    def __init__(self, features: int, eps: float = 1e-5) -> None:
        super().__init__(features, eps)

    def forward(self, x: Any) -> Any:
        xp = self.xp
        x = xp.astype(x, self.dtype, copy=False)
        centred = x - xp.mean(x, axis=-1, keepdims=True)
        var = xp.mean(centred * centred, axis=-1, keepdims=True)
        self._inv = 1.0 / xp.sqrt(var + self.eps)
        self._xhat = centred * self._inv
        return self._finish(self._xhat)

    def backward(self, grad: Any) -> Any:
        xp = self.xp
        g = self._param_grads(grad, tuple(range(grad.ndim - 1)))
        xhat = self._xhat
        mean_g = xp.mean(g, axis=-1, keepdims=True)
        mean_gx = xp.mean(g * xhat, axis=-1, keepdims=True)
        g = (g - mean_g - xhat * mean_gx) * self._inv
        return xp.astype(g, self.compute_dtype, copy=False)
