"""polynn.sklearn: scikit-learn's own estimator checks, and the estimators at work.

The estimator checks run on the NumPy backend only: they test the scikit-learn API contract
(input validation, cloning, pickling, fitted attributes), which is the same code on every
backend, and they fit a few hundred small models, which would only multiply the run time.
The behavioural tests below run on every backend through the ``backend`` fixture.
"""

from __future__ import annotations

import pickle
from contextlib import nullcontext

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning, NotFittedError  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import polynn as pn  # noqa: E402
from polynn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# Not converging within a small max_iter is expected in these tests, and said by a warning.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# Small networks, few epochs and a larger step keep every check fast while still learning
# the blobs and the regression problem that check_classifiers_train/check_regressors_train
# score (accuracy > 0.83, R² > 0.5).
@parametrize_with_checks(
    [
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, learning_rate_init=0.01),
        MLPRegressor(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.01),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def iris_split():
    X, y = load_iris(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


def test_iris_accuracy_in_a_pipeline(backend):
    """On iris, a linear model already classifies held-out flowers almost perfectly (setosa is
    linearly separable, the other two overlap in a few samples): an MLP must do about as
    well. The reference is scikit-learn's LogisticRegression, fitted here on the same split."""
    X_train, X_test, y_train, y_test = iris_split()
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("mlp", MLPClassifier(max_iter=300, random_state=0, backend=backend.name)),
        ]
    )
    pipe.fit(X_train, y_train)
    accuracy = pipe.score(X_test, y_test)
    reference = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())])
    reference_accuracy = reference.fit(X_train, y_train).score(X_test, y_test)
    assert reference_accuracy >= 0.9  # the independent fact the threshold rests on
    assert accuracy >= 0.9
    assert accuracy >= reference_accuracy - 0.05
    mlp = pipe.named_steps["mlp"]
    assert mlp.model_.backend.name == backend.name
    assert mlp.n_features_in_ == 4
    assert mlp.n_iter_ == len(mlp.loss_curve_) <= 300
    assert mlp.loss_curve_[-1] < mlp.loss_curve_[0]


def test_grid_search(backend):
    X, y = load_iris(return_X_y=True)
    search = GridSearchCV(
        Pipeline(
            [
                ("scale", StandardScaler()),
                ("mlp", MLPClassifier(max_iter=50, random_state=0, backend=backend.name)),
            ]
        ),
        {"mlp__hidden_layer_sizes": [(4,), (16,)], "mlp__learning_rate_init": [1e-3, 1e-2]},
        cv=3,
    )
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["mlp__hidden_layer_sizes"] in [(4,), (16,)]
    assert search.best_score_ >= 0.8
    best = search.best_estimator_.named_steps["mlp"]
    assert best.model_.backend.name == backend.name
    # grid search clones: the unfitted template has no model
    assert not hasattr(search.estimator.named_steps["mlp"], "model_")


def test_labels_and_probabilities(backend):
    X_train, X_test, y_train, _ = iris_split()
    names = np.array(["setosa", "versicolor", "virginica"])
    clf = MLPClassifier(
        hidden_layer_sizes=(8,), max_iter=50, random_state=0, backend=backend.name
    ).fit(StandardScaler().fit_transform(X_train), names[y_train])
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    X = StandardScaler().fit_transform(X_test)
    pred = clf.predict(X)
    assert set(pred) <= set(names)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (clf.classes_[proba.argmax(axis=1)] == pred).all()
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-10)


def test_binary_labels(backend):
    X, y = load_iris(return_X_y=True)
    X, y = StandardScaler().fit_transform(X[y < 2]), np.where(y[y < 2] == 0, -1, 1)
    clf = MLPClassifier(
        hidden_layer_sizes=(4,),
        learning_rate_init=0.01,
        max_iter=100,
        random_state=0,
        backend=backend.name,
    ).fit(X, y)
    assert list(clf.classes_) == [-1, 1]
    assert clf.predict_proba(X).shape == (len(X), 2)
    assert clf.score(X, y) == 1.0  # setosa is linearly separable from versicolor


def test_deterministic_with_random_state(backend):
    X_train, X_test, y_train, _ = iris_split()
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=20, random_state=3, backend=backend.name)
    a = MLPClassifier(**kwargs).fit(X_train, y_train)
    b = MLPClassifier(**kwargs).fit(X_train, y_train)
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))
    assert a.loss_curve_ == b.loss_curve_
    c = MLPClassifier(**{**kwargs, "random_state": 4}).fit(X_train, y_train)
    assert c.loss_curve_ != a.loss_curve_


def linear_data(targets: int, rows: int = 200, seed: int = 0):
    """y = X @ w + small noise: R² of the true function is close to 1 (computed below)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    w = rng.normal(size=(3, targets))
    y = X @ w + 0.05 * rng.normal(size=(rows, targets))
    return X, y


@pytest.mark.parametrize("targets", [None, 1, 2])
def test_regressor_shapes_and_fit(backend, targets):
    X, y = linear_data(targets or 1)
    if targets is None:
        y = y[:, 0]
    reg = MLPRegressor(
        hidden_layer_sizes=(16,),
        learning_rate_init=0.01,
        max_iter=200,
        random_state=0,
        backend=backend.name,
    )
    with pytest.warns(DataConversionWarning) if targets == 1 else nullcontext():
        reg.fit(X, y)
    pred = reg.predict(X)
    # As in scikit-learn, a column of one target gives predictions of shape (rows,).
    assert pred.shape == ((len(y),) if targets in (None, 1) else y.shape)
    assert reg.n_outputs_ == (targets or 1) and reg.out_activation_ == "identity"
    # The noise-free function explains all but (0.05 / std(y))² of the variance; a fitted
    # network should come within a few percent of that.
    assert reg.score(X, y) > 0.95


def test_early_stopping(backend):
    X, y = load_iris(return_X_y=True)
    clf = MLPClassifier(
        hidden_layer_sizes=(8,),
        learning_rate_init=0.01,
        early_stopping=True,
        n_iter_no_change=5,
        max_iter=500,
        random_state=0,
        backend=backend.name,
    ).fit(StandardScaler().fit_transform(X), y)
    assert clf.n_iter_ < 500
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None


def test_convergence_warning_and_tol_stop(backend):
    X, y = linear_data(1)
    y = y[:, 0]
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        MLPRegressor(max_iter=3, random_state=0, backend=backend.name).fit(X, y)
    # With a huge tol only the first epoch improves (on an infinite best loss); as in
    # scikit-learn, training stops once more than n_iter_no_change epochs have not improved.
    reg = MLPRegressor(tol=1e6, n_iter_no_change=2, max_iter=50, random_state=0)
    reg.set_params(backend=backend.name).fit(X, y)
    assert reg.n_iter_ == 1 + 3
    assert reg.best_loss_ == min(reg.loss_curve_)


def test_pickle_round_trip(backend):
    X_train, X_test, y_train, _ = iris_split()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0)
    clf.set_params(backend=backend.name).fit(X_train, y_train)
    again = pickle.loads(pickle.dumps(clf))
    assert again.model_.backend.name == backend.name
    np.testing.assert_array_equal(again.predict_proba(X_test), clf.predict_proba(X_test))


def test_verbose_prints_the_loss(backend, capsys):
    X, y = linear_data(1)
    y = y[:, 0]
    MLPRegressor(max_iter=2, verbose=1, random_state=0, backend=backend.name).fit(X, y)
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Iteration 2, loss = " in out


@pytest.mark.parametrize(
    "params",
    [
        {"activation": "softplus"},
        {"solver": "newton"},
        {"hidden_layer_sizes": (10, 0)},
        {"hidden_layer_sizes": "wide"},
        {"learning_rate": "cosine"},
        {"learning_rate_init": 0},
        {"power_t": -1},
        {"batch_size": 0},
        {"max_iter": 0},
        {"momentum": 1.5},
        {"alpha": -1},
        {"validation_fraction": 1.0},
        {"beta_1": 1.0},
        {"epsilon": 0.0},
        {"n_iter_no_change": 0},
        {"n_iter_no_change": 2.5},
        {"max_fun": 0},
        {"tol": -1.0},
        {"shuffle": "yes"},
        {"loss": "huber"},
        {"dtype": "float16"},
    ],
)
def test_bad_parameters_are_refused_at_fit(params):
    X, y = linear_data(1)
    reg = MLPRegressor(**params)  # __init__ only stores them (scikit-learn's convention)
    name = next(iter(params))
    with pytest.raises(ValueError, match=name):
        reg.fit(X, y[:, 0])


def test_unfitted_and_wrong_features():
    X, y = linear_data(1)
    y = y[:, 0]
    reg = MLPRegressor(max_iter=2, random_state=0)
    with pytest.raises(NotFittedError):
        reg.predict(X)
    reg.fit(X, y)
    with pytest.raises(ValueError, match="3 features"):
        reg.predict(X[:, :2])


def test_unknown_backend_is_a_polynn_error():
    X, y = linear_data(1)
    y = y[:, 0]
    with pytest.raises(pn.PolynnValueError, match="unknown backend"):
        MLPRegressor(backend="tpu", max_iter=1).fit(X, y)


def test_clone_keeps_parameters():
    clf = MLPClassifier(hidden_layer_sizes=(5, 3), backend="numpy", dtype="float64")
    params = clone(clf).get_params()
    assert params["hidden_layer_sizes"] == (5, 3)
    assert params["backend"] == "numpy" and params["dtype"] == "float64"
