"""scikit-learn estimators backed by polynn: ``MLPClassifier`` and ``MLPRegressor``.

They follow scikit-learn's estimator API (``fit``, ``predict``, ``score``, ``get_params``,
cloning, pipelines, grid search) and train a ``pn.Sequential`` on any polynn backend::

    from polynn.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(64,), backend="cupy", random_state=0).fit(X, y)

scikit-learn is an optional dependency (``pip install "polynn[sklearn]"``); only this module
imports it. Host-side NumPy work goes through scikit-learn's own utilities and
``polynn.backends.host``, so this module does not import NumPy itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"polynn.sklearn needs scikit-learn >= 1.6 ({exc}); install it with: "
        'pip install "polynn[sklearn]"'
    ) from None

import polynn as pn
from polynn.backends.host import log_softmax, softmax

__all__ = ["MLPClassifier", "MLPRegressor"]

ACTIVATIONS = {"relu": pn.ReLU, "tanh": pn.Tanh, "logistic": pn.Sigmoid, "identity": pn.Identity}
SOLVERS = ("sgd", "adam")
#: X keeps either float dtype on the host; polynn casts it to the model's dtype on the device.
HOST_DTYPES = ("float64", "float32")


class _StopRule(pn.Callback):
    """scikit-learn's stopping rule, checked after every epoch.

    Without early stopping: stop once the training loss has not improved by ``tol`` for more
    than ``n_iter_no_change`` epochs. With it: the same on the validation score (accuracy or
    R²), and the weights of the best validation epoch are restored at the end.
    """

    def __init__(self, estimator: _BaseMLP, validation: tuple[Any, Any] | None) -> None:
        self.estimator = estimator
        self.validation = validation
        self.no_improvement = 0
        self.best_loss = float("inf")
        self.best_score = -float("inf")
        self.best_weights: list[Any] | None = None
        self.scores: list[float] = []
        self.converged = False

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        est = self.estimator
        loss = logs["loss"]
        if est.verbose:
            print(f"Iteration {epoch + 1}, loss = {loss:.8f}")
        if self.validation is not None:
            score = est._validation_score(self.model, *self.validation)
            self.scores.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            improved = score >= self.best_score + est.tol
            if score > self.best_score:
                self.best_score = score
                self.best_weights = self.model.get_weights()
        else:
            improved = loss <= self.best_loss - est.tol
            self.best_loss = min(self.best_loss, loss)
        self.no_improvement = 0 if improved else self.no_improvement + 1
        if self.no_improvement > est.n_iter_no_change:
            self.converged = True
            self.model.stop_training = True
            if est.verbose:
                what = "Validation score" if self.validation is not None else "Training loss"
                print(
                    f"{what} did not improve more than tol={est.tol} for "
                    f"{est.n_iter_no_change} consecutive epochs. Stopping."
                )


class _BaseMLP(BaseEstimator):
    """Parameters and training shared by the classifier and the regressor."""

    _loss = ""

    def __init__(
        self,
        hidden_layer_sizes: int | Sequence[int] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        learning_rate_init: float = 1e-3,
        batch_size: int | str = "auto",
        max_iter: int = 200,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        alpha: float = 0.0,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        shuffle: bool = True,
        random_state: Any = None,
        backend: Any = None,
        dtype: str = "float32",
        verbose: int = 0,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.shuffle = shuffle
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype
        self.verbose = verbose

    # -- hyperparameters --------------------------------------------------------------------
    def _hidden_sizes(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if _is_int(sizes) else sizes
        try:
            sizes = tuple(sizes)
        except TypeError:
            sizes = None
        if sizes is None or not all(_is_int(s) and s >= 1 for s in sizes):
            raise pn.PolynnValueError(
                "hidden_layer_sizes must be a positive integer or a sequence of positive "
                f"integers such as (100,) or (64, 32); got {self.hidden_layer_sizes!r}."
            )
        return tuple(int(s) for s in sizes)

    def _check_params(self) -> None:
        def bad(name: str, expected: str) -> pn.PolynnValueError:
            return pn.PolynnValueError(
                f"{type(self).__name__}: {name} must be {expected}; got {getattr(self, name)!r}."
            )

        if self.activation not in ACTIVATIONS:
            raise bad("activation", f"one of {sorted(ACTIVATIONS)}")
        if self.solver not in SOLVERS:
            raise bad("solver", f"one of {list(SOLVERS)}")
        if not _is_real(self.learning_rate_init) or not self.learning_rate_init > 0:
            raise bad("learning_rate_init", "a number > 0")
        if self.batch_size != "auto" and not (_is_int(self.batch_size) and self.batch_size >= 1):
            raise bad("batch_size", "'auto' or an integer >= 1")
        if not (_is_int(self.max_iter) and self.max_iter >= 1):
            raise bad("max_iter", "an integer >= 1")
        if not _is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise bad("momentum", "a number in [0, 1)")
        if not _is_real(self.alpha) or not self.alpha >= 0:
            raise bad("alpha", "a number >= 0")
        if not _is_real(self.validation_fraction) or not 0 < self.validation_fraction < 1:
            raise bad("validation_fraction", "a number in (0, 1)")
        if not (_is_int(self.n_iter_no_change) and self.n_iter_no_change >= 1):
            raise bad("n_iter_no_change", "an integer >= 1")
        if not _is_real(self.tol) or not self.tol >= 0:
            raise bad("tol", "a number >= 0")
        try:
            pn.backends.dtype_name(self.dtype)
        except pn.PolynnValueError:
            choices = [*pn.backends.DTYPES, *pn.backends.POLICIES]
            raise bad("dtype", f"one of {choices} (or a NumPy float dtype)") from None

    def _optimizer(self) -> pn.Optimizer:
        if self.solver == "sgd":
            momentum = float(self.momentum)
            return pn.SGD(
                lr=self.learning_rate_init,
                momentum=momentum,
                nesterov=bool(self.nesterovs_momentum) and momentum > 0,
                weight_decay=self.alpha,
            )
        return pn.Adam(lr=self.learning_rate_init, weight_decay=self.alpha)

    def _network(self, n_in: int, n_out: int, seed: int) -> pn.Sequential:
        layers: list[pn.Layer] = []
        for size in self._hidden_sizes():
            layers += [pn.Dense(n_in, size), ACTIVATIONS[self.activation]()]
            n_in = size
        layers.append(pn.Dense(n_in, n_out))
        dtype = pn.backends.dtype_name(self.dtype)
        return pn.Sequential(*layers, backend=self.backend, dtype=dtype, seed=seed)

    # -- training ---------------------------------------------------------------------------
    def _train(self, X: Any, y: Any, n_outputs: int, stratify: bool) -> None:
        """Build ``model_`` and train it on (X, y) (y: class codes or a 2-d target array)."""
        self._check_params()
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**31 - 1))
        validation = None
        if self.early_stopping:
            X, X_val, y, y_val = train_test_split(
                X,
                y,
                test_size=self.validation_fraction,
                random_state=rng,
                stratify=y if stratify else None,
            )
            validation = (X_val, y_val)
        rows = X.shape[0]
        batch_size = min(200, rows) if self.batch_size == "auto" else int(self.batch_size)
        if batch_size > rows:
            warnings.warn(
                f"batch_size={batch_size} is larger than the {rows} training samples; "
                f"using batch_size={rows}.",
                UserWarning,
                stacklevel=3,
            )
            batch_size = rows
        model = self._network(X.shape[1], n_outputs, seed)
        rule = _StopRule(self, validation)
        history = model.fit(
            X,
            y,
            loss=self._loss,
            optimizer=self._optimizer(),
            epochs=int(self.max_iter),
            batch_size=batch_size,
            shuffle=bool(self.shuffle),
            verbose=0,
            callbacks=[rule],
        )
        if validation is not None and rule.best_weights is not None:
            model.set_weights(rule.best_weights)
        self.model_ = model
        self.loss_curve_ = list(history.history.get("loss", []))
        self.n_iter_ = len(self.loss_curve_)
        self.loss_ = self.loss_curve_[-1]
        if validation is not None:
            self.validation_scores_ = rule.scores
            self.best_validation_score_ = rule.best_score
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = rule.best_loss
        if not rule.converged:
            warnings.warn(
                f"{type(self).__name__}: stopped after max_iter={self.max_iter} epochs "
                "without converging; raise max_iter or learning_rate_init.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _outputs(self, X: Any) -> Any:
        """The network's raw outputs for X, as a host (NumPy) array."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=HOST_DTYPES)
        return pn.to_numpy(self.model_.predict(X))

    def _validation_score(self, model: pn.Sequential, X: Any, y: Any) -> float:
        raise NotImplementedError


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by polynn on any backend.

    The network is ``Dense -> activation`` per entry of ``hidden_layer_sizes``, then a
    ``Dense`` with one output (a logit) per class, trained with ``loss="cross_entropy"``
    (softmax on the logits), also for two classes. ``predict_proba`` is the softmax of the
    logits, computed on the host in float64. Labels may be any sortable values; ``classes_``
    holds them in sorted order.

    ``alpha`` is weight decay handed to the optimizer: coupled L2 for ``solver="sgd"``,
    decoupled (AdamW) for ``solver="adam"``; it is not scaled by the number of samples as
    scikit-learn's ``alpha`` is. ``backend``/``dtype`` choose where and in which precision the
    network trains (``backend=None``: the ``POLYNN_BACKEND`` environment variable, else
    NumPy).

    Attributes after ``fit``: ``classes_``, ``n_features_in_`` (and ``feature_names_in_``),
    ``model_`` (the trained ``pn.Sequential``), ``loss_curve_``, ``n_iter_``, ``loss_``,
    ``best_loss_``, ``validation_scores_`` and ``best_validation_score_`` (early stopping).
    """

    _loss = "cross_entropy"

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train on ``X`` (rows, features) and labels ``y`` (rows,); returns ``self``."""
        X, y = validate_data(self, X, y, dtype=HOST_DTYPES)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        classes = encoder.classes_
        if len(classes) < 2:
            raise pn.PolynnValueError(
                f"{type(self).__name__} needs samples of at least 2 classes to learn from; "
                f"y holds 1 class ({classes[0]!r})."
            )
        codes = encoder.transform(y)
        self._train(X, codes, len(classes), stratify=True)
        self.classes_ = classes
        return self

    def predict(self, X: Any) -> Any:
        """The most probable class of each row of ``X``, as labels from ``classes_``."""
        best = self._outputs(X).argmax(axis=1)
        return self.classes_[best]

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities (rows, classes) in the order of ``classes_``, float64."""
        return softmax(self._outputs(X))

    def predict_log_proba(self, X: Any) -> Any:
        """The logarithm of ``predict_proba``, computed stably from the logits."""
        return log_softmax(self._outputs(X))

    def _validation_score(self, model: pn.Sequential, X: Any, y: Any) -> float:
        logits = pn.to_numpy(model.predict(X))
        return float(accuracy_score(y, logits.argmax(axis=1)))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor trained by polynn on any backend.

    The network is ``Dense -> activation`` per entry of ``hidden_layer_sizes``, then a linear
    ``Dense`` with one output per target, trained with ``loss="mse"``. ``y`` may be 1-d
    (predictions are then 1-d) or 2-d (several targets). The parameters and attributes are
    those of :class:`MLPClassifier`, without ``classes_``; the early-stopping score is R².
    Predictions come back as float64 host arrays, as scikit-learn expects of regressors.
    """

    _loss = "mse"

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train on ``X`` (rows, features) and targets ``y`` (rows,) or (rows, targets)."""
        self._check_params()
        try:
            X, y = validate_data(self, X, y, dtype=HOST_DTYPES, multi_output=True, y_numeric=True)
        except ValueError as exc:  # string targets, say: scikit-learn's words, polynn's type
            if isinstance(exc, pn.PolynnError):
                raise
            raise pn.PolynnValueError(f"{type(self).__name__}: {exc}") from exc
        self._y_1d = y.ndim == 1
        y2 = y.reshape(-1, 1) if self._y_1d else y
        # polynn casts y to the model's dtype, and says so when a value does not fit it.
        self._train(X, y2, y2.shape[1], stratify=False)
        return self

    def predict(self, X: Any) -> Any:
        """Predicted targets, float64 on the host (whatever the network's ``dtype``): shape
        (rows,) if ``y`` was 1-d in ``fit``, else (rows, targets)."""
        out = self._outputs(X).astype("float64")
        return out.reshape(-1) if self._y_1d else out

    def _validation_score(self, model: pn.Sequential, X: Any, y: Any) -> float:
        return float(r2_score(y, pn.to_numpy(model.predict(X))))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and hasattr(value, "__index__")


def _is_real(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return float(value) == float(value)  # numbers, not NaN
    except (TypeError, ValueError):
        return False
