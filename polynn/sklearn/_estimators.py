"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn's MLP estimators, trained by polynn."""

from __future__ import annotations

from typing import Any

from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import column_or_1d
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import validate_data

import polynn as pn
from polynn.sklearn._base import HOST_DTYPES, STOCHASTIC, BaseMLP

__all__ = ["MLPClassifier", "MLPRegressor"]

_PARAMETERS = """
    Parameters are scikit-learn's (``sklearn.neural_network``), with its defaults and
    meanings: ``hidden_layer_sizes``, ``activation`` ("identity", "logistic", "tanh",
    "relu"), ``solver`` ("lbfgs", "sgd", "adam"), ``alpha`` (L2 penalty
    ``alpha / 2 * sum(W**2)``, divided like the loss by the samples of each batch),
    ``batch_size`` ("auto": ``min(200, n_samples)``), ``learning_rate`` ("constant",
    "invscaling", "adaptive"; SGD only), ``learning_rate_init``, ``power_t``, ``max_iter``
    (epochs; L-BFGS iterations), ``shuffle``, ``random_state``, ``tol``, ``verbose``,
    ``warm_start``, ``momentum``, ``nesterovs_momentum``, ``early_stopping``,
    ``validation_fraction``, ``beta_1``, ``beta_2``, ``epsilon``, ``n_iter_no_change``
    (``numpy.inf``: never stop early), ``max_fun`` (L-BFGS loss evaluations). polynn adds
    ``backend``, ``device`` and ``dtype`` (None: float32 for float32 ``X``, else float64).

    ``solver="lbfgs"`` is host-driven: SciPy's L-BFGS-B runs on the host, and each of its
    loss evaluations copies the parameters to the device once, computes the loss and
    gradient there and copies the gradient back once. SGD and Adam are polynn's optimizers,
    adjusted to take scikit-learn's steps (``polynn.sklearn._solvers.Stochastic``): with
    the same ``random_state`` the fitted weights agree with scikit-learn's to rounding.

    Fitted attributes, as NumPy arrays and Python numbers whatever the backend:
    ``coefs_``, ``intercepts_``, ``n_layers_``, ``n_outputs_``, ``out_activation_``,
    ``loss_``, ``n_iter_``, ``t_``, ``n_features_in_``, ``feature_names_in_``; with SGD or
    Adam also ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
    ``best_validation_score_``. ``model_`` is the ``pn.Sequential`` holding the weights on
    the backend.
"""


class MLPClassifier(ClassifierMixin, BaseMLP):
    """A multi-layer perceptron classifier trained by polynn on any backend.

    Two classes and multilabel indicator targets train one logistic output per column with
    the binary log-loss; more classes a softmax output with the log-loss, as in
    scikit-learn. ``predict_proba`` returns probabilities in the order of ``classes_``.
    """

    __doc__ = (__doc__ or "") + _PARAMETERS
    _losses = ("log_loss",)

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool | int = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int | float = 10,
        max_fun: int = 15000,
        backend: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha,
            batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            loss="log_loss", shuffle=shuffle, random_state=random_state, tol=tol,
            verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            backend=backend, device=device, dtype=dtype,
        )  # fmt: skip

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,), or a
        multilabel indicator matrix (n_samples, n_labels); returns ``self``."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(lambda self: _stochastic(self))
    def partial_fit(
        self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None
    ) -> MLPClassifier:
        """One epoch over ``(X, y)`` (SGD and Adam only). ``classes``, all the labels the
        calls will see, is required on the first call."""
        if self._first_partial_call(classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def _first_partial_call(self, classes: Any) -> bool:
        known = getattr(self, "classes_", None)
        if known is None and classes is None:
            raise pn.PolynnValueError("classes must be passed on the first call to partial_fit.")
        if classes is None:
            return False
        classes = unique_labels(classes)
        if known is not None:
            if list(known) != list(classes):
                raise pn.PolynnValueError(
                    f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                    f"was: {known!r}"
                )
            return False
        self.classes_ = classes
        return True

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple:
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            dtype=HOST_DTYPES,
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise pn.PolynnValueError(
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}"
                    )
            elif set(classes) - set(self.classes_):
                raise pn.PolynnValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {classes}."
                )
        # bool, as scikit-learn keeps it (the stratified split of early stopping reports
        # classes as they are here); cast to the training dtype on the device.
        return X, self._label_binarizer.transform(y).astype(bool)

    def _out_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validation_targets(self, y: Any) -> Any:
        return self._label_binarizer.inverse_transform(y)

    def _labels(self, outputs: Any) -> Any:
        if self.n_outputs_ == 1:
            outputs = outputs.reshape(-1)
        return self._label_binarizer.inverse_transform(outputs)

    def _score_outputs(self, outputs: Any, y: Any, sample_weight: Any) -> float:
        return accuracy_score(y, self._labels(outputs), sample_weight=sample_weight)

    def predict(self, X: Any) -> Any:
        """The predicted labels of the rows of ``X`` (an indicator matrix for multilabel)."""
        outputs, _ = self._outputs(X)
        return self._labels(pn.to_numpy(outputs))

    def predict_proba(self, X: Any) -> Any:
        """Probabilities (n_samples, n_classes) in the order of ``classes_``, in the
        training dtype; for multilabel targets each column's own probability."""
        outputs, net = self._outputs(X)
        if self.n_outputs_ == 1:
            outputs = net.backend.xp.concat([1.0 - outputs, outputs], axis=1)
        return pn.to_numpy(outputs)

    def predict_log_proba(self, X: Any) -> Any:
        """``log(predict_proba(X))``."""
        outputs, net = self._outputs(X)
        xp = net.backend.xp
        if self.n_outputs_ == 1:
            outputs = xp.concat([1.0 - outputs, outputs], axis=1)
        return pn.to_numpy(xp.log(outputs))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMLP):
    """A multi-layer perceptron regressor trained by polynn on any backend.

    ``loss="squared_error"`` (a linear output, half the squared error) or ``"poisson"`` (an
    exponential output, half the Poisson deviance; targets must be >= 0). ``predict``
    returns (n_samples,) for one target, (n_samples, n_targets) for several, in the
    training dtype.
    """

    __doc__ = (__doc__ or "") + _PARAMETERS
    _losses = ("squared_error", "poisson")

    def __init__(
        self,
        loss: str = "squared_error",
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool | int = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int | float = 10,
        max_fun: int = 15000,
        backend: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha,
            batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            loss=loss, shuffle=shuffle, random_state=random_state, tol=tol,
            verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            backend=backend, device=device, dtype=dtype,
        )  # fmt: skip

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Train on ``X`` (n_samples, n_features) and targets ``y`` (n_samples,) or
        (n_samples, n_targets); returns ``self``."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(lambda self: _stochastic(self))
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over ``(X, y)`` (SGD and Adam only)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple:
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            y_numeric=True,
            dtype=HOST_DTYPES,
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and (y < 0).any():
            raise pn.PolynnValueError(
                f'loss="poisson" needs targets >= 0; y has values down to {y.min()!r}.'
            )
        return X, y

    def _out_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    def _validation_targets(self, y: Any) -> Any:
        return y

    def _score_outputs(self, outputs: Any, y: Any, sample_weight: Any) -> float:
        return r2_score(y, outputs, sample_weight=sample_weight)

    def predict(self, X: Any) -> Any:
        """The predicted targets: (n_samples,) for one target, else (n_samples, n_targets)."""
        outputs, _ = self._outputs(X)
        outputs = pn.to_numpy(outputs)
        return outputs.reshape(-1) if outputs.shape[1] == 1 else outputs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _stochastic(estimator: BaseMLP) -> bool:
    """Whether ``partial_fit`` exists: only for the stochastic solvers (scikit-learn's
    convention: ``hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")`` is False)."""
    if estimator.solver not in STOCHASTIC:
        raise AttributeError(
            f"partial_fit is only available for the stochastic solvers {list(STOCHASTIC)}; "
            f"solver={estimator.solver!r} is not one."
        )
    return True
