"""What the classifier and the regressor share: parameters, their checks, the network, the
training loops and the fitted attributes.

The fitted weights live in ``coefs_`` and ``intercepts_`` (NumPy arrays, as in
scikit-learn); ``model_`` is the ``pn.Sequential`` that computes with them on the backend.
Each ``fit``, ``partial_fit`` and prediction copies ``coefs_``/``intercepts_`` into
``model_`` first (so weights set by hand are the ones used), and training copies them back
once at its end.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

import polynn as pn
from polynn.sklearn._outputs import activate
from polynn.sklearn._solvers import (
    Stochastic,
    flat_gradient,
    loss_and_gradients,
    minimize_lbfgs,
    packed,
    set_flat,
)

ACTIVATIONS = {"relu": pn.ReLU, "tanh": pn.Tanh, "logistic": pn.Sigmoid, "identity": pn.Identity}
SOLVERS = ("lbfgs", "sgd", "adam")
STOCHASTIC = ("sgd", "adam")
SCHEDULES = ("constant", "invscaling", "adaptive")
#: X keeps either float dtype on the host (as in scikit-learn); other data becomes float64.
HOST_DTYPES = ("float64", "float32")
NON_FINITE = (
    "Solver produced non-finite parameter weights. The input data may contain large values "
    "and need to be preprocessed."
)


class BaseMLP(BaseEstimator):
    """Parameters and training shared by ``MLPClassifier`` and ``MLPRegressor``."""

    def __init__(
        self,
        hidden_layer_sizes: int | Sequence[int],
        activation: str,
        *,
        solver: str,
        alpha: float,
        batch_size: int | str,
        learning_rate: str,
        learning_rate_init: float,
        power_t: float,
        max_iter: int,
        loss: str,
        shuffle: bool,
        random_state: Any,
        tol: float,
        verbose: bool | int,
        warm_start: bool,
        momentum: float,
        nesterovs_momentum: bool,
        early_stopping: bool,
        validation_fraction: float,
        beta_1: float,
        beta_2: float,
        epsilon: float,
        n_iter_no_change: int | float,
        max_fun: int,
        backend: Any,
        device: Any,
        dtype: Any,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.loss = loss
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.device = device
        self.dtype = dtype

    # -- hyperparameters --------------------------------------------------------------------
    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if _is_int(sizes) else sizes
        try:
            sizes = list(sizes)
        except TypeError:
            sizes = None
        if sizes is None or not all(_is_int(s) and s >= 1 for s in sizes):
            raise pn.PolynnValueError(
                "hidden_layer_sizes must be a positive integer or a sequence of positive "
                f"integers such as (100,) or (64, 32); got {self.hidden_layer_sizes!r}."
            )
        return [int(s) for s in sizes]

    def _check_params(self) -> None:
        """scikit-learn's constraints on the parameters, checked at ``fit`` (its convention:
        ``__init__`` only stores them); a bad value is a ``ValueError`` naming it.

        Every error the estimators raise themselves is a ``pn.PolynnValueError``: a
        ``ValueError``, as scikit-learn raises, and a ``pn.PolynnError``."""

        def bad(name: str, expected: str) -> pn.PolynnValueError:
            return pn.PolynnValueError(
                f"The {name!r} parameter of {type(self).__name__} must be {expected}; "
                f"got {getattr(self, name)!r}."
            )

        def real(name: str, low: float, high: float = math.inf, *, open_low: bool = False,
                 open_high: bool = False) -> None:  # fmt: skip
            value = getattr(self, name)
            ok = _is_real(value) and (low < value if open_low else low <= value)
            ok = ok and (value < high if open_high else value <= high)
            if not ok:
                left, right = "(" if open_low else "[", ")" if open_high else "]"
                raise bad(name, f"a number in {left}{low}, {high}{right}")

        def flag(name: str) -> None:
            if getattr(self, name) not in (True, False):
                raise bad(name, "True or False")

        for name, choices in (
            ("activation", list(ACTIVATIONS)),
            ("solver", list(SOLVERS)),
            ("learning_rate", list(SCHEDULES)),
            ("loss", self._losses),
        ):
            if getattr(self, name) not in choices:
                raise bad(name, f"one of {choices}")
        self._hidden_sizes()
        real("alpha", 0.0)
        if self.batch_size != "auto" and not (_is_int(self.batch_size) and self.batch_size >= 1):
            raise bad("batch_size", "'auto' or an integer >= 1")
        real("learning_rate_init", 0.0, open_low=True)
        real("power_t", 0.0)
        if not (_is_int(self.max_iter) and self.max_iter >= 1):
            raise bad("max_iter", "an integer >= 1")
        real("tol", 0.0)
        real("momentum", 0.0, 1.0, open_high=True)  # scikit-learn takes 1; pn.SGD does not
        real("validation_fraction", 0.0, 1.0, open_high=True)
        real("beta_1", 0.0, 1.0, open_high=True)
        real("beta_2", 0.0, 1.0, open_high=True)
        real("epsilon", 0.0, open_low=True)
        n = self.n_iter_no_change
        if not ((_is_int(n) and n >= 1) or (_is_real(n) and n == math.inf)):
            raise bad("n_iter_no_change", "an integer >= 1 or numpy.inf")
        if not (_is_int(self.max_fun) and self.max_fun >= 1):
            raise bad("max_fun", "an integer >= 1")
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            flag(name)
        if self.dtype is not None:
            try:
                name = pn.backends.dtype_name(self.dtype)
            except pn.PolynnValueError:
                name = None
            if name not in pn.backends.DTYPES:
                raise bad("dtype", f"None (the dtype of X) or one of {list(pn.backends.DTYPES)}")

    def _training_dtype(self, X: Any) -> str:
        """``dtype``, or with ``dtype=None`` float32 for float32 ``X`` and float64 else."""
        if self.dtype is not None:
            return pn.backends.dtype_name(self.dtype)
        return "float32" if str(X.dtype) == "float32" else "float64"

    # -- the network --------------------------------------------------------------------------
    def _network(self) -> pn.Sequential:
        """``model_`` with the weights of ``coefs_`` and ``intercepts_`` (built anew when the
        backend, dtype, activation or shapes differ from the last one's)."""
        dtype = str(self.coefs_[0].dtype) if self.dtype is None else self._training_dtype(None)
        backend = pn.backends.get(self.backend, self.device)
        shapes = tuple(tuple(c.shape) for c in self.coefs_)
        key = (backend.name, str(backend.device), dtype, self.activation, shapes)
        net = getattr(self, "model_", None)
        if net is None or getattr(self, "_network_key", None) != key:
            layers: list[pn.Layer] = []
            for i, (n_in, n_out) in enumerate(shapes):
                layers.append(pn.Dense(n_in, n_out))
                if i < len(shapes) - 1:
                    layers.append(ACTIVATIONS[self.activation]())
            net = pn.Sequential(*layers, backend=backend, dtype=dtype, seed=0)
            self._network_key = key
        weights = [w for pair in zip(self.coefs_, self.intercepts_) for w in pair]
        net.set_weights(weights)
        self.model_ = net
        return net

    def _keep_weights(self, net: pn.Sequential) -> None:
        """Copy the trained weights back to ``coefs_``/``intercepts_``, refusing non-finite
        ones with scikit-learn's error (the previous weights are then kept)."""
        xp = net.backend.xp
        if not all(bool(xp.all(xp.isfinite(p.value))) for p in net.params):
            raise pn.PolynnValueError(NON_FINITE)
        weights = net.get_weights()
        self.coefs_, self.intercepts_ = weights[0::2], weights[1::2]

    def _initialize(self, y: Any, units: list[int], dtype: str) -> None:
        """First fit: fresh weights (Glorot-uniform for weights and biases, drawn as
        scikit-learn draws them from ``random_state``) and fresh training attributes."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(units)
        self.out_activation_ = self._out_activation()
        self.coefs_, self.intercepts_ = [], []
        factor = 2.0 if self.activation == "logistic" else 6.0
        for fan_in, fan_out in zip(units, units[1:]):
            bound = math.sqrt(factor / (fan_in + fan_out))
            draw = self._random_state.uniform
            self.coefs_.append(draw(-bound, bound, (fan_in, fan_out)).astype(dtype))
            self.intercepts_.append(draw(-bound, bound, fan_out).astype(dtype))
        self._best_weights = [w.copy() for w in (*self.coefs_, *self.intercepts_)]
        if self.solver in STOCHASTIC:
            self.loss_curve_: list[float] = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_: list[float] | None = []
                self.best_validation_score_: float | None = -math.inf
                self.best_loss_: float | None = None
            else:
                self.best_loss_ = math.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    # -- training -----------------------------------------------------------------------------
    def _fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool) -> BaseMLP:
        self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if hasattr(X, "toarray"):  # a SciPy sparse matrix: the network takes dense rows
            X = X.toarray()
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        units = [X.shape[1], *self._hidden_sizes(), self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, units, self._training_dtype(X))
        net = self._network()
        if self.solver in STOCHASTIC:
            self._fit_stochastic(net, X, y, sample_weight, incremental)
        else:
            self._fit_lbfgs(net, X, y, sample_weight)
        self._keep_weights(net)
        return self

    def _device_data(self, net: pn.Sequential, **arrays: Any) -> list[Any]:
        """Host arrays (or None) copied once to ``net``'s device, in its dtype; a value that
        does not fit the dtype (a float32 model) is refused, naming it."""
        backend = net.backend
        return [
            None if a is None else backend.asarray(a, dtype=net.dtype, name=name)
            for name, a in arrays.items()
        ]

    def _fit_lbfgs(self, net: pn.Sequential, X: Any, y: Any, sample_weight: Any) -> None:
        X, Y, sw = self._device_data(net, X=X, y=y, sample_weight=sample_weight)
        iteration = [0]

        def report(intermediate_result: Any) -> None:
            iteration[0] += 1
            print(f"Iteration {iteration[0]}, loss = {float(intermediate_result.fun):.8f}")

        result = minimize_lbfgs(
            lambda theta: self._loss_grad_lbfgs(theta, X, Y, sw),
            packed(net),
            self.max_iter,
            self.max_fun,
            self.tol,
            callback=report if self.verbose else None,
        )
        if result.status != 0:
            warnings.warn(
                f"{type(self).__name__}: lbfgs stopped without converging after "
                f"{result.nit} iterations and {result.nfev} loss evaluations ({result.message}); "
                "raise max_iter or max_fun, or scale the data.",
                ConvergenceWarning,
                stacklevel=4,
            )
        self.n_iter_ = min(int(result.nit), int(self.max_iter))
        self.loss_ = float(result.fun)
        set_flat(net, result.x)

    def _loss_grad_lbfgs(
        self, theta: Any, X: Any, y: Any, sample_weight: Any = None, *_: Any
    ) -> tuple[float, Any]:
        """The objective of ``solver="lbfgs"``: the loss and its gradient (a float64 NumPy
        vector) at the packed parameters ``theta`` (every weight matrix, then every bias),
        for data on the host or on ``model_``'s device. Trailing arguments are ignored
        (scikit-learn's own version takes work buffers there)."""
        net = self.model_
        X = net.backend.asarray(X, dtype=net.dtype, name="X")
        y = net.backend.asarray(y, dtype=net.dtype, name="y")
        if y.ndim == 1:
            y = net.backend.xp.reshape(y, (-1, 1))
        if sample_weight is not None:
            sample_weight = net.backend.asarray(sample_weight, dtype=net.dtype, name="w")
        set_flat(net, theta)
        value = loss_and_gradients(net, self.out_activation_, self.alpha, X, y, sample_weight)
        return float(value), flat_gradient(net)

    def _fit_stochastic(
        self, net: pn.Sequential, X: Any, y: Any, sample_weight: Any, incremental: bool
    ) -> None:
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = Stochastic(
                self.solver,
                self.learning_rate_init,
                self.learning_rate,
                self.power_t,
                self.momentum,
                bool(self.nesterovs_momentum),
                self.beta_1,
                self.beta_2,
                self.epsilon,
            )
        if self.early_stopping and incremental:
            raise pn.PolynnValueError("partial_fit does not support early_stopping=True")
        solver = self._optimizer
        solver.bind(net)
        validation = None
        if self.early_stopping:
            X, y, sample_weight, validation = self._split(net, X, y, sample_weight)
        rows = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, rows)
        else:
            batch_size = min(int(self.batch_size), rows)
            if self.batch_size > rows:
                warnings.warn(
                    f"batch_size={self.batch_size} is larger than the {rows} training "
                    f"samples; using batch_size={rows}.",
                    UserWarning,
                    stacklevel=4,
                )
        X, Y, sw = self._device_data(net, X=X, y=y, sample_weight=sample_weight)
        xp = net.backend.xp
        best = None  # the weights of the best validation score of this call, on the device
        self.n_iter_ = 0
        host_order = None  # the row order, reshuffled each epoch as scikit-learn does
        for _ in range(int(self.max_iter)):
            Xe, Ye, swe = X, Y, sw
            if self.shuffle:  # the epoch's rows in their new order: one copy, then slices
                permutation = self._random_state.permutation(rows)
                host_order = permutation if host_order is None else host_order[permutation]
                order = net.backend.from_numpy(host_order)
                Xe, Ye = xp.take(X, order, axis=0), xp.take(Y, order, axis=0)
                swe = None if sw is None else xp.take(sw, order, axis=0)
            total = 0.0
            for start in range(0, rows, batch_size):
                stop = min(start + batch_size, rows)
                xb, yb = Xe[start:stop, ...], Ye[start:stop, ...]
                wb = None if swe is None else swe[start:stop]
                value = loss_and_gradients(net, self.out_activation_, self.alpha, xb, yb, wb)
                solver.step()
                total = total + value * (stop - start)
            self.n_iter_ += 1
            self.loss_ = float(total) / rows
            self.t_ += rows
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if validation is not None:
                if self._score_validation(net, validation):
                    best = [xp.asarray(p.value, copy=True) for p in net.params]
            else:
                self._count_loss_improvement()
            solver.iteration_ends(self.t_)
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if validation is not None else "Training loss"
                message = (
                    f"{what} did not improve more than tol={self.tol:f} for "
                    f"{self.n_iter_no_change} consecutive epochs."
                )
                if solver.trigger_stopping(message, self.verbose):
                    break
                self._no_improvement_count = 0
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(
                    f"{type(self).__name__}: the {self.solver} solver reached max_iter="
                    f"{self.max_iter} epochs without converging; raise max_iter.",
                    ConvergenceWarning,
                    stacklevel=4,
                )
        if validation is not None:  # keep the weights of the best validation score
            if best is not None:
                for p, value in zip(net.params, best):
                    p.value = value
            else:
                n = len(net.params) // 2
                kept = getattr(self, "_best_weights", None) or [*self.coefs_, *self.intercepts_]
                net.set_weights([w for i in range(n) for w in kept[i::n]])
            weights = net.get_weights()
            self._best_weights = [*weights[0::2], *weights[1::2]]

    def _split(self, net: pn.Sequential, X: Any, y: Any, sample_weight: Any) -> tuple:
        """scikit-learn's hold-out for early stopping (stratified for single-output
        classification): the training rows and the validation data on the device."""
        stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
        arrays = (X, y) if sample_weight is None else (X, y, sample_weight)
        parts = train_test_split(
            *arrays,
            random_state=self._random_state,
            test_size=self.validation_fraction,
            stratify=stratify,
        )
        X, X_val, y, y_val = parts[:4]
        sample_weight, sw_val = (None, None) if sample_weight is None else parts[4:]
        if X_val.shape[0] < 2:
            raise pn.PolynnValueError(
                "The validation set is too small. Increase 'validation_fraction' or the "
                f"size of your dataset (validation_fraction={self.validation_fraction} of "
                f"{X.shape[0] + X_val.shape[0]} samples leaves {X_val.shape[0]})."
            )
        (X_val_device,) = self._device_data(net, X=X_val)
        return X, y, sample_weight, (X_val_device, self._validation_targets(y_val), sw_val)

    def _score_validation(self, net: pn.Sequential, validation: tuple) -> bool:
        """Score the validation data (NaN where the outputs are not finite), update the
        count of epochs without improvement; whether this is the best score so far."""
        X_val, y_val, sw_val = validation
        xp = net.backend.xp
        out = activate(self.out_activation_, net.forward(X_val), xp)
        if bool(xp.all(xp.isfinite(out))):
            score = float(self._score_outputs(pn.to_numpy(out), y_val, sw_val))
        else:
            score = math.nan
        self.validation_scores_.append(score)
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            return True
        return False

    def _count_loss_improvement(self) -> None:
        loss = self.loss_curve_[-1]
        if loss > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        self.best_loss_ = min(self.best_loss_, loss)

    # -- prediction ---------------------------------------------------------------------------
    def _outputs(self, X: Any) -> tuple[Any, pn.Sequential]:
        """The output layer's activations for ``X`` (a device array of the training dtype)."""
        check_is_fitted(self, "coefs_")
        X = self._validate_data_predict(X)
        net = self._network()
        return activate(self.out_activation_, net.forward(X), net.backend.xp), net

    def _validate_data_predict(self, X: Any) -> Any:
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False, dtype=HOST_DTYPES)
        return X.toarray() if hasattr(X, "toarray") else X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # Subclasses: _losses, _validate_input, _out_activation, _validation_targets,
    # _score_outputs.
    _losses: tuple[str, ...] = ()


def _check_sample_weight(sample_weight: Any, X: Any) -> Any:
    """``sample_weight`` as a (rows,) host array of X's dtype (a number: that weight for all)."""
    rows = X.shape[0]
    if isinstance(sample_weight, numbers.Number):
        sample_weight = [sample_weight] * rows
    sample_weight = check_array(
        sample_weight, ensure_2d=False, dtype=X.dtype, input_name="sample_weight"
    )
    if sample_weight.ndim != 1 or sample_weight.shape[0] != rows:
        raise pn.PolynnValueError(
            f"sample_weight.shape == {sample_weight.shape}, expected ({rows},): one weight "
            "per row of X."
        )
    if not (sample_weight != 0).any():
        raise pn.PolynnValueError(
            "Sample weights must contain at least one non-zero number; all weights are zero."
        )
    with warnings.catch_warnings():  # an overflow is reported below, by value
        warnings.simplefilter("ignore", RuntimeWarning)
        total = float(sample_weight.sum())
    if not math.isfinite(total):  # the loss divides by it: every figure would be NaN
        raise pn.PolynnValueError(
            f"sample_weight sums to {total} in {sample_weight.dtype}; scale the weights down "
            "(the loss is their weighted mean: scaling them all changes only the weight of "
            "alpha's penalty)."
        )
    return sample_weight


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and value == value
