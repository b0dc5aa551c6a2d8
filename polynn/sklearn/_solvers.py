"""The solvers of the scikit-learn estimators, driving a ``pn.Sequential`` through its public
pieces (``forward``, ``backward``, ``params``, an optimizer's ``step``).

- ``Stochastic``: ``solver="sgd"`` or ``"adam"``, polynn's ``pn.SGD``/``pn.Adam`` with
  scikit-learn's learning-rate schedules (``constant``, ``invscaling``, ``adaptive``). An
  estimator keeps it between calls as ``_optimizer`` (scikit-learn's name for it), so
  ``partial_fit`` and ``warm_start`` continue its momentum and moments.
- ``minimize_lbfgs``: ``solver="lbfgs"``, SciPy's L-BFGS-B on the flattened parameters. It
  is host-driven: SciPy's optimizer runs on the host, and every evaluation copies the
  parameter vector to the device once, runs the forward and backward passes there, and
  copies the gradient vector back once.

``loss_and_gradients`` is the one place where the loss, scikit-learn's L2 penalty and the
gradients are computed, for both.
"""

from __future__ import annotations

import math
from typing import Any

import polynn as pn
from polynn.sklearn._outputs import loss_and_delta

__all__ = [
    "Stochastic",
    "flat_gradient",
    "loss_and_gradients",
    "minimize_lbfgs",
    "packed",
    "packing_order",
    "set_flat",
]


def loss_and_gradients(
    net: pn.Sequential, out_activation: str, alpha: float, X: Any, Y: Any, sample_weight: Any
) -> Any:
    """Forward and backward passes of ``net`` on one batch (device arrays): each parameter's
    ``grad`` is filled, and the batch's loss is returned as a 0-d device array.

    The loss is scikit-learn's: the (weighted) mean loss of the rows plus
    ``alpha / 2 * sum(W**2) / total_weight`` over the weight matrices (not the biases), with
    ``total_weight`` the number of rows or the sum of ``sample_weight``.
    """
    xp, alpha = net.backend.xp, float(alpha)
    total = X.shape[0] if sample_weight is None else xp.sum(sample_weight)
    z = net.forward(X)
    value, delta = loss_and_delta(out_activation, z, Y, sample_weight, total, xp)
    net.backward(delta)
    if alpha:
        weights = net.params[0::2]
        penalty = sum(xp.sum(W.value * W.value) for W in weights)
        value = value + penalty * (0.5 * alpha) / total
        for W in weights:
            W.grad = W.grad + W.value * (alpha / total)
    return value


def packing_order(net: pn.Sequential) -> list[pn.Parameter]:
    """scikit-learn's order of the parameters in its flat vector: every weight matrix, then
    every bias (``net.params`` holds W1, b1, W2, b2, ...)."""
    return [*net.params[0::2], *net.params[1::2]]


def flat_gradient(net: pn.Sequential) -> Any:
    """The gradients in scikit-learn's packing order, as one float64 NumPy vector: one copy
    from the device."""
    xp = net.backend.xp
    flat = xp.concat([xp.reshape(p.grad, (-1,)) for p in packing_order(net)])
    return pn.to_numpy(flat).astype("float64")


def set_flat(net: pn.Sequential, theta: Any) -> None:
    """Set the parameters from a host vector in scikit-learn's packing order: one copy to
    the device, then views of it."""
    xp = net.backend.xp
    flat = net.backend.from_numpy(theta, net.dtype_name)
    start = 0
    for p in packing_order(net):
        shape = tuple(p.value.shape)
        size = math.prod(shape)
        p.value = xp.reshape(flat[start : start + size], shape)
        start += size


def packed(net: pn.Sequential) -> Any:
    """The parameters in scikit-learn's packing order, as one float64 NumPy vector."""
    xp = net.backend.xp
    flat = xp.concat([xp.reshape(p.value, (-1,)) for p in packing_order(net)])
    return pn.to_numpy(flat).astype("float64")


def minimize_lbfgs(
    objective: Any, theta: Any, max_iter: int, max_fun: int, tol: float, callback: Any = None
) -> Any:
    """``scipy.optimize.minimize(method="L-BFGS-B")`` of ``objective(theta) -> (loss,
    gradient)`` from ``theta`` (``callback`` after each iteration); returns SciPy's result."""
    try:
        import scipy.optimize
    except ImportError as exc:  # pragma: no cover - scikit-learn depends on SciPy
        raise ImportError(
            f'solver="lbfgs" needs SciPy ({exc}): pip install "polynn[sklearn]"'
        ) from None
    return scipy.optimize.minimize(
        objective,
        theta,
        method="L-BFGS-B",
        jac=True,
        options={"maxfun": int(max_fun), "maxiter": int(max_iter), "gtol": float(tol)},
        callback=callback,
    )


class Stochastic:
    """polynn's SGD or Adam, taking scikit-learn's steps, with its learning-rate schedule.

    ``learning_rate`` is the current rate. ``"invscaling"`` sets it to
    ``learning_rate_init / (t + 1) ** power_t`` after each epoch (``t``: samples seen);
    ``"adaptive"`` divides it by 5 each time the stopping rule fires, and stops once it is
    at most 1e-6. Only SGD has schedules (as in scikit-learn); Adam's rate is constant.

    polynn's update rules put momentum and Adam's epsilon where PyTorch puts them; two
    adjustments make their steps scikit-learn's. SGD's velocity holds gradients (PyTorch's
    ``v = momentum * v + g``, then ``p -= rate * v``) where scikit-learn's holds steps
    (``v = momentum * v - rate * g``, then ``p += v``): the same while the rate is constant,
    so when a schedule changes the rate the velocity is rescaled by old rate / new rate.
    Adam adds ``eps`` to the bias-corrected root ``sqrt(v / (1 - beta_2**t))`` where
    scikit-learn adds ``epsilon`` to ``sqrt(v)``: step ``t`` passes
    ``eps = epsilon / sqrt(1 - beta_2**t)``, which gives scikit-learn's step exactly. For
    Adam, ``learning_rate`` is then scikit-learn's bias-corrected rate of the last step,
    ``learning_rate_init * sqrt(1 - beta_2**t) / (1 - beta_1**t)``.
    """

    def __init__(
        self,
        solver: str,
        learning_rate_init: float,
        schedule: str = "constant",
        power_t: float = 0.5,
        momentum: float = 0.9,
        nesterov: bool = True,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = self.learning_rate_init
        self.schedule = schedule if solver == "sgd" else "constant"
        self.power_t = float(power_t)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        if solver == "sgd":
            momentum = float(momentum)
            self.optimizer: pn.Optimizer = pn.SGD(
                lr=self.learning_rate, momentum=momentum, nesterov=nesterov and momentum > 0
            )
        else:
            self.optimizer = pn.Adam(
                lr=self.learning_rate, beta1=beta_1, beta2=self.beta_2, eps=self.epsilon
            )

    def bind(self, net: pn.Sequential) -> None:
        """Update ``net``'s parameters from now on (keeping the state if they are the same)."""
        self.optimizer.bind(net.params, net.backend)

    def step(self) -> None:
        """One update of the bound parameters from their gradients."""
        optimizer = self.optimizer
        if isinstance(optimizer, pn.Adam):
            t = optimizer.iterations + 1
            root = math.sqrt(1.0 - self.beta_2**t)
            optimizer.eps = self.epsilon / root
            optimizer.step()
            # scikit-learn's Adam reports its bias-corrected rate as learning_rate
            self.learning_rate = self.learning_rate_init * root / (1.0 - self.beta_1**t)
            return
        if optimizer.lr != self.learning_rate:
            ratio = optimizer.lr / self.learning_rate
            for state in optimizer.state:
                if "velocity" in state:
                    state["velocity"] = state["velocity"] * ratio
        optimizer.lr = self.learning_rate
        optimizer.step()

    def iteration_ends(self, samples_seen: int) -> None:
        if self.schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (samples_seen + 1) ** self.power_t

    def trigger_stopping(self, message: str, verbose: bool) -> bool:
        """Whether to stop now that the stopping rule fired (``message`` says why)."""
        if self.schedule != "adaptive":
            if verbose:
                print(f"{message} Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(f"{message} Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(f"{message} Setting learning rate to {self.learning_rate:f}.")
        return False

    def __getstate__(self) -> dict[str, Any]:
        """Pickles keep the settings and the current rate, not the momentum or moments (they
        live on the model's device): after unpickling, training continues with fresh ones."""
        state = dict(self.__dict__)
        state["optimizer"] = type(self.optimizer)(**self.optimizer.get_config())
        return state
