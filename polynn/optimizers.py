"""Optimizers. Their update rules are primitives of the kernel seam (``polynn.kernels``:
``Kernels.sgd``, ``adam``, ``rmsprop``, ``adagrad``, and ``clip``), in place where the
namespace's arrays are writable (NumPy, CuPy, array-api-strict), and as a new array bound to
the same parameter where they are not.

A step has a host part and a device part: ``prepare`` counts the step and sets the rate (a
schedule's, or ``lr`` as a callback left it), writing it into the device scalars
(``polynn.kernels.Scalars``) only when it changed; ``apply`` clips the gradients and updates
the parameters on the device, reading nothing back. ``step`` does both. A compiled training
step runs ``apply`` inside it and ``prepare`` before each replay.

State (momentum, moments) is made when the parameters are bound, on their own backend and
device (``state_fills`` names it), so that a step only updates arrays that exist. ``lr`` is
read at every step: changing it between epochs (from a callback, say) is a learning-rate
schedule that keeps the state.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from polynn._checks import number, unknown_name
from polynn.backends import Backend
from polynn.errors import PolynnTypeError, PolynnValueError
from polynn.kernels import Scalars
from polynn.layers import Parameter
from polynn.schedules import Schedule

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "get_optimizer"]


#: Keyword names other libraries use, and polynn's for them.
ALIASES = {
    "learning_rate": "lr",
    "beta_1": "beta1",
    "beta_2": "beta2",
    "epsilon": "eps",
    "decay": "weight_decay",
    "nesterovs_momentum": "nesterov",
    "alpha": "rho",
    "initial_accumulator_value": "initial_accumulator",
}


def _positive(value: Any, owner: str, what: str) -> float | None:
    """None, or ``value`` checked to be a positive number."""
    return None if value is None else number(value, f"{owner} {what}", 0.0, low_open=True)


class Optimizer:
    """Base class: ``bind`` hands over the parameters, ``step`` applies their gradients.
    Subclasses implement ``update`` (one update of every parameter through the kernels) and
    name their state arrays.

    ``lr`` is a number or a schedule (``polynn.schedules``). ``clipnorm`` rescales the
    gradients so that their global norm over all parameters is at most ``clipnorm`` (as
    PyTorch's ``clip_grad_norm_``: by ``clipnorm / (norm + 1e-6)`` where that is below 1);
    ``clipvalue`` clips each gradient element to ``[-clipvalue, clipvalue]``; with both, values
    are clipped first.
    """

    def __init__(
        self,
        lr: float | Schedule,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            name = next(iter(unknown))
            valid = [k for k in inspect.signature(type(self)).parameters if k != "unknown"]
            hint = f"did you mean {ALIASES[name]!r}? " if ALIASES.get(name) in valid else ""
            raise PolynnTypeError(
                f"{type(self).__name__} has no argument {name!r}; {hint}its arguments are {valid}."
            )
        owner = type(self).__name__
        #: The learning-rate schedule, or None for a constant ``lr``.
        self.schedule = lr if isinstance(lr, Schedule) else None
        if self.schedule is not None:
            self.lr = self.schedule.rate(0)
        else:
            self.lr = number(lr, f"{owner} lr", 0.0, low_open=True)
        self.clipnorm = _positive(clipnorm, owner, "clipnorm")
        self.clipvalue = _positive(clipvalue, owner, "clipvalue")
        self.params: Sequence[Parameter] = ()
        self.state: list[dict[str, Any]] = []
        #: Steps taken and epochs finished: what a schedule counts, kept in model files.
        self.iterations = 0
        self.epochs = 0
        #: The rate and the count of updates on the device (made by ``bind``).
        self.scalars: Scalars | None = None

    def bind(
        self, params: Sequence[Parameter] | Sequential, backend: Backend | None = None
    ) -> None:
        """Train ``params`` (arrays of ``backend``) from now on, with its kernels; or, given a
        model, its trainable parameters (``net.trainable_params``: frozen layers left out) on
        its backend. ``fit`` binds its model; a manual loop calls ``opt.bind(net)`` once
        (and again after freezing or unfreezing layers).

        The state of parameters already bound is kept, so a second ``fit`` continues where
        the first stopped, also after freezing some layers; binding parameters none of which
        were bound (another model) starts afresh. The device scalars are written from ``lr``
        and ``iterations`` (which a file or the user may have set).
        """
        if backend is None:
            if not hasattr(params, "trainable_params"):
                raise PolynnTypeError(
                    f"bind takes a model (opt.bind(net)) or parameters and their backend; got "
                    f"{type(params).__name__} without a backend."
                )
            params, backend = params.trainable_params, params.backend
        self.xp, self.kernels, self.device = backend.xp, backend.kernels, backend.device
        params = tuple(params)
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            before = {id(p): state for p, state in zip(self.params, self.state)}
            self.state = [before.get(id(p), {}) for p in params]
            if not any(id(p) in before for p in params):
                self.iterations = 0
                self.epochs = 0
            self.params = params
            fresh = self._fresh_state()
            self.state = [state or new for state, new in zip(self.state, fresh)]
            self.scalars = None
        if self.scalars is None and params:
            like = params[0].value
            self.scalars = Scalars(self.xp, like.dtype, backend.device, backend.inplace)
        if self.scalars is not None:
            self.scalars.set(self.lr, self.iterations)

    def state_fills(self) -> dict[str, float]:
        """The state arrays each parameter has, by name, and the value each starts at."""
        return {}

    def _fresh_state(self) -> list[dict[str, Any]]:
        fills = self.state_fills()
        xp = self.xp
        return [
            {name: xp.full(p.value.shape, fill, dtype=p.value.dtype, device=self.device)
             for name, fill in fills.items()}
            for p in self.params
        ]  # fmt: skip

    def step(self) -> None:
        """One update of the parameters from their gradients: ``prepare``, then ``apply``."""
        self.prepare()
        self.apply()

    def prepare(self) -> None:
        """The host's part of a step: a per-step schedule's rate, the step count, and the
        rate written to the device if it changed."""
        if self.schedule is not None and self.schedule.per == "step":
            self.lr = self.schedule.rate(self.iterations)
        self.iterations += 1
        if self.scalars is not None:
            self.scalars.set(self.lr)

    def apply(self) -> None:
        """The device's part of a step: clip the gradients, then update the parameters."""
        if not self.params:
            return
        if self.clipvalue is not None or self.clipnorm is not None:
            self.clip()
        self.update_rule()

    def clip(self) -> None:
        """Clip the gradients as ``clipvalue`` and ``clipnorm`` say (no host round trip)."""
        self.kernels.clip(self.params, self.clipvalue, self.clipnorm, self.scalars)

    def update_rule(self) -> None:
        """One update of every parameter through the kernels (the rule of a subclass)."""
        raise NotImplementedError

    def state_names(self) -> tuple[str, ...] | None:
        """The names of the arrays ``step`` keeps per parameter (a file's state is checked
        against them): those of ``state_fills``; None where they are not known (an optimizer
        of your own that does not declare them)."""
        if type(self).state_fills is Optimizer.state_fills:
            return None
        return tuple(self.state_fills())

    def updater(self) -> Callable[[], None]:
        """What a training step calls after the backward pass (``step``)."""
        return self.step

    def start_epoch(self) -> None:
        """Set the rate of a schedule that counts epochs (called before each epoch)."""
        if self.schedule is not None and self.schedule.per == "epoch":
            self.lr = self.schedule.rate(self.epochs)

    def reset(self) -> None:
        """Forget the state (momentum, moments, step count): the next step starts afresh."""
        self.state = self._fresh_state()
        self.iterations = 0
        if self.scalars is not None:
            self.scalars.set(self.lr, 0)

    def copy_for(self, params: Sequence[Parameter], backend: Backend) -> Optimizer:
        """A copy with the same settings and state, bound to ``params`` on ``backend`` (the
        parameters of a model moved with ``Sequential.to``)."""
        optimizer = copy.copy(self)
        optimizer.params, optimizer.scalars = (), None
        optimizer.bind(params, backend)
        optimizer.iterations, optimizer.epochs = self.iterations, self.epochs
        optimizer.bind(params, backend)  # the device count from the copied one
        optimizer.state = [
            {key: backend.adopt(value) for key, value in state.items()} for state in self.state
        ]
        return optimizer

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (``lr``: the schedule object, or the current rate)."""
        config: dict[str, Any] = {"lr": self.schedule if self.schedule is not None else self.lr}
        if self.clipnorm is not None:
            config["clipnorm"] = self.clipnorm
        if self.clipvalue is not None:
            config["clipvalue"] = self.clipvalue
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``v = momentum * v + g`` and ``p -= lr * v`` (or ``p -= lr * (g + momentum * v)`` with
    Nesterov), as in PyTorch. ``weight_decay`` adds ``weight_decay * p`` to the gradient
    (coupled L2 regularisation).
    """

    compilable = True

    def __init__(
        self,
        lr: float | Schedule = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue, **unknown)
        self.momentum = number(momentum, "SGD momentum", 0.0, 1.0)
        self.weight_decay = number(weight_decay, "SGD weight_decay", 0.0)
        if nesterov and self.momentum == 0.0:
            raise PolynnValueError("SGD nesterov=True needs momentum > 0; got momentum=0.")
        self.nesterov = bool(nesterov)

    def state_fills(self) -> dict[str, float]:
        return {"velocity": 0.0} if self.momentum else {}

    def update_rule(self) -> None:
        self.kernels.sgd(
            self.params, self.state, self.scalars, self.momentum, self.nesterov, self.weight_decay
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), with the bias corrections of PyTorch's implementation.

    ``weight_decay`` is *decoupled* (AdamW, Loshchilov and Hutter, 2019): the parameters
    shrink by ``lr * weight_decay * p`` each step, outside the adaptive scaling.
    """

    compilable = True

    def __init__(
        self,
        lr: float | Schedule = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue, **unknown)
        name = type(self).__name__
        self.beta1 = number(beta1, f"{name} beta1", 0.0, 1.0)
        self.beta2 = number(beta2, f"{name} beta2", 0.0, 1.0)
        self.eps = number(eps, f"{name} eps", 0.0, low_open=True)
        self.weight_decay = number(weight_decay, f"{name} weight_decay", 0.0)

    def state_fills(self) -> dict[str, float]:
        return {"m": 0.0, "v": 0.0}

    def update_rule(self) -> None:
        self.kernels.adam(
            self.params,
            self.state,
            self.scalars,
            self.beta1,
            self.beta2,
            self.eps,
            self.weight_decay,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay, under its own name and with PyTorch's default decay
    of 0.01: ``p *= 1 - lr * weight_decay`` each step, then Adam's update."""

    def __init__(
        self,
        lr: float | Schedule = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay, clipnorm, clipvalue, **unknown)


class RMSprop(Optimizer):
    """RMSprop as PyTorch's: ``s = rho s + (1 - rho) g^2`` (from zero), and
    ``p -= lr g / (sqrt(s) + eps)``; ``centered`` divides by ``sqrt(s - a^2) + eps`` where ``a``
    is the running mean of ``g``; with ``momentum``, ``b = momentum b + g / (...)`` and
    ``p -= lr b``. ``weight_decay`` adds ``weight_decay * p`` to the gradient first.
    """

    compilable = True

    def __init__(
        self,
        lr: float | Schedule = 0.01,
        rho: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue, **unknown)
        self.rho = number(rho, "RMSprop rho", 0.0, 1.0)
        self.eps = number(eps, "RMSprop eps", 0.0, low_open=True)
        self.momentum = number(momentum, "RMSprop momentum", 0.0, 1.0)
        self.centered = bool(centered)
        self.weight_decay = number(weight_decay, "RMSprop weight_decay", 0.0)

    def state_fills(self) -> dict[str, float]:
        fills = {"square_avg": 0.0}
        if self.centered:
            fills["grad_avg"] = 0.0
        if self.momentum:
            fills["momentum"] = 0.0
        return fills

    def update_rule(self) -> None:
        self.kernels.rmsprop(
            self.params,
            self.state,
            self.scalars,
            self.rho,
            self.eps,
            self.momentum,
            self.centered,
            self.weight_decay,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rho": self.rho,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
            "weight_decay": self.weight_decay,
        }


class Adagrad(Optimizer):
    """Adagrad as PyTorch's: ``s += g^2`` (from ``initial_accumulator``) and
    ``p -= lr g / (sqrt(s) + eps)``; ``weight_decay`` adds ``weight_decay * p`` to ``g``."""

    compilable = True

    def __init__(
        self,
        lr: float | Schedule = 0.01,
        eps: float = 1e-10,
        initial_accumulator: float = 0.0,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue, **unknown)
        self.eps = number(eps, "Adagrad eps", 0.0, low_open=True)
        self.initial_accumulator = number(initial_accumulator, "Adagrad initial_accumulator", 0.0)
        self.weight_decay = number(weight_decay, "Adagrad weight_decay", 0.0)

    def state_fills(self) -> dict[str, float]:
        return {"sum": self.initial_accumulator}

    def update_rule(self) -> None:
        self.kernels.adagrad(
            self.params,
            self.state,
            self.scalars,
            self.eps,
            self.initial_accumulator,
            self.weight_decay,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "eps": self.eps,
            "initial_accumulator": self.initial_accumulator,
            "weight_decay": self.weight_decay,
        }


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
}
#: The optimizers by class name, as model files name them (``polynn.registry``).
OPTIMIZER_CLASSES: dict[str, type[Optimizer]] = {cls.__name__: cls for cls in OPTIMIZERS.values()}


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
