"""Optimizers. Their update rules are primitives of the kernel seam (``polynn.kernels``:
``Kernels.sgd`` and ``Kernels.adam``), in place where the namespace's arrays are writable
(NumPy, CuPy, array-api-strict), and as a new array bound to the same parameter where they
are not.

State (momentum, moments) is created lazily from the first gradients, so it lives on the
parameters' own backend and device. ``lr`` is read at every step: changing it between epochs
(from a callback, say) is a learning-rate schedule that keeps the state.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from polynn._checks import number, unknown_name
from polynn.backends import Backend
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.layers import Parameter

__all__ = ["SGD", "Adam", "Optimizer", "get_optimizer"]


#: Keyword names other libraries use, and polynn's for them.
ALIASES = {
    "learning_rate": "lr",
    "beta_1": "beta1",
    "beta_2": "beta2",
    "epsilon": "eps",
    "decay": "weight_decay",
    "nesterovs_momentum": "nesterov",
}


class Optimizer:
    """Base class: ``bind`` hands over the parameters, ``step`` applies their gradients."""

    def __init__(self, lr: float, **unknown: Any) -> None:
        if unknown:
            name = next(iter(unknown))
            valid = [k for k in inspect.signature(type(self)).parameters if k != "unknown"]
            hint = f"did you mean {ALIASES[name]!r}? " if ALIASES.get(name) in valid else ""
            raise PolynnTypeError(
                f"{type(self).__name__} has no argument {name!r}; {hint}its arguments are {valid}."
            )
        self.lr = number(lr, f"{type(self).__name__} lr", 0.0, low_open=True)
        self.params: Sequence[Parameter] = ()
        self.state: list[dict[str, Any]] = []
        self.iterations = 0
        self._lr_seen: float | None = None
        self._lr_0d: Any = None

    def bind(self, params: Sequence[Parameter], backend: Backend) -> None:
        """Train ``params`` (arrays of ``backend``) from now on, with its kernels.

        Binding the parameters already bound keeps the state, so a second ``fit`` continues
        where the first stopped.
        """
        self.xp, self.kernels = backend.xp, backend.kernels
        params = tuple(params)
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            self.params = params
            self.state = [{} for _ in params]
            self.iterations = 0
            self._lr_seen = None

    def step(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the state (momentum, moments, step count): the next step starts afresh."""
        self.state = [{} for _ in self.params]
        self.iterations = 0

    def copy_for(self, params: Sequence[Parameter], backend: Backend) -> Optimizer:
        """A copy with the same settings and state, bound to ``params`` on ``backend`` (the
        parameters of a model moved with ``Sequential.to``)."""
        optimizer = type(self)(**self.get_config())
        optimizer.bind(params, backend)
        optimizer.iterations = self.iterations
        optimizer.state = [
            {key: backend.adopt(value) for key, value in state.items()} for state in self.state
        ]
        return optimizer

    def _lr(self) -> Any:
        """``lr`` as a 0-d array of the parameters' dtype and device, made again only when
        ``lr`` changes. NumPy multiplies a small array by a 0-d array of its dtype about
        0.25 us faster than by a Python float; plain SGD does one such product per parameter.
        """
        if self._lr_seen != self.lr:
            like = self.params[0].value
            self._lr_0d = self.xp.asarray(self.lr, dtype=like.dtype, device=like.device)
            self._lr_seen = self.lr
        return self._lr_0d

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``v = momentum * v + g`` and ``p -= lr * v`` (or ``p -= lr * (g + momentum * v)`` with
    Nesterov), as in PyTorch. ``weight_decay`` adds ``weight_decay * p`` to the gradient
    (coupled L2 regularisation).
    """

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, **unknown)
        self.momentum = number(momentum, "SGD momentum", 0.0, 1.0)
        self.weight_decay = number(weight_decay, "SGD weight_decay", 0.0)
        if nesterov and self.momentum == 0.0:
            raise PolynnValueError("SGD nesterov=True needs momentum > 0; got momentum=0.")
        self.nesterov = bool(nesterov)

    def step(self) -> None:
        if not self.params:
            return
        self.iterations += 1
        self.kernels.sgd(
            self.params, self.state, self._lr(), self.momentum, self.nesterov, self.weight_decay
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), with the bias corrections of PyTorch's implementation.

    ``weight_decay`` is *decoupled* (AdamW, Loshchilov and Hutter, 2019): the parameters
    shrink by ``lr * weight_decay * p`` each step, outside the adaptive scaling.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, **unknown)
        self.beta1 = number(beta1, "Adam beta1", 0.0, 1.0)
        self.beta2 = number(beta2, "Adam beta2", 0.0, 1.0)
        self.eps = number(eps, "Adam eps", 0.0, low_open=True)
        self.weight_decay = number(weight_decay, "Adam weight_decay", 0.0)

    def step(self) -> None:
        self.iterations += 1
        self.kernels.adam(
            self.params,
            self.state,
            self.iterations,
            self.lr,
            self.beta1,
            self.beta2,
            self.eps,
            self.weight_decay,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam}


def get_optimizer(optimizer: str | Optimizer | None) -> Optimizer:
    """An optimizer from a name (default hyperparameters), an instance, or None (SGD)."""
    if optimizer is None:
        return SGD()
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise PolynnValueError(unknown_name("optimizer", optimizer, OPTIMIZERS))
        return OPTIMIZERS[optimizer]()
    if not isinstance(optimizer, Optimizer):
        raise PolynnTypeError(
            f"optimizer must be a polynn Optimizer or one of {list(OPTIMIZERS)}; "
            f"got {type(optimizer).__name__}."
        )
    return optimizer
