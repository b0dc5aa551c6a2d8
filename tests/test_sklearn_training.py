"""polynn.sklearn's training on every backend, against independent references: a NumPy
float64 forward pass and loss written here (and its finite differences), scikit-learn's
PoissonRegressor, fitting on repeated rows, and the NumPy backend's own run."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import make_multilabel_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import PoissonRegressor  # noqa: E402
from sklearn.preprocessing import LabelBinarizer  # noqa: E402

from polynn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# -- an independent reference: scikit-learn's loss, written out in NumPy float64 --------------
def reference_loss(coefs, intercepts, X, Y, out, alpha, sample_weight=None):
    """Half squared error / half Poisson deviance / log-loss of a tanh network, weighted
    mean over the rows, plus alpha / 2 * sum(W**2) / total weight."""
    a = X
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        a = a @ W + b
        if i < len(coefs) - 1:
            a = np.tanh(a)
    if out == "identity":
        rows = 0.5 * ((a - Y) ** 2).sum(axis=1)
    elif out == "exp":
        mu = np.exp(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            ylogy = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1.0) / mu), 0.0)
        rows = (ylogy - Y + mu).sum(axis=1)
    elif out == "logistic":
        p = 1.0 / (1.0 + np.exp(-a))
        rows = -(Y * np.log(p) + (1 - Y) * np.log(1 - p)).sum(axis=1)
    else:
        p = np.exp(a - a.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        rows = -(Y * np.log(p)).sum(axis=1)
    w = np.ones(len(X)) if sample_weight is None else sample_weight
    penalty = 0.5 * alpha * sum((W**2).sum() for W in coefs)
    return ((rows * w).sum() + penalty) / w.sum()


def unpack(theta, coefs, intercepts):
    """Split a vector in scikit-learn's packing order (weights, then biases)."""
    parts, start = [], 0
    for shape in [c.shape for c in coefs] + [b.shape for b in intercepts]:
        size = int(np.prod(shape))
        parts.append(theta[start : start + size].reshape(shape))
        start += size
    n = len(coefs)
    return parts[:n], parts[n:]


def problem(kind: str, rng):
    X = rng.normal(size=(12, 4))
    if kind == "identity":
        return MLPRegressor, X, rng.normal(size=(12, 2))
    if kind == "exp":
        return MLPRegressor, X, rng.poisson(2.0, size=12).astype(float)
    if kind == "logistic":
        return MLPClassifier, X, rng.integers(0, 2, size=12)
    if kind == "multilabel":
        return MLPClassifier, X, rng.integers(0, 2, size=(12, 3))
    return MLPClassifier, X, rng.integers(0, 3, size=12)


@pytest.mark.parametrize("kind", ["identity", "exp", "logistic", "multilabel", "softmax"])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradient_match_a_numpy_reference(backend, kind, weighted):
    rng = np.random.default_rng(0)
    make, X, y = problem(kind, rng)
    sw = rng.uniform(0.5, 2.0, size=len(X)) if weighted else None
    extra = {"loss": "poisson"} if kind == "exp" else {}
    est = make(hidden_layer_sizes=(5,), activation="tanh", solver="lbfgs", alpha=0.3,
               max_iter=2, random_state=0, backend=backend.name, **extra)  # fmt: skip
    est.fit(X, y, sample_weight=sw)
    out = est.out_activation_
    assert out == {"multilabel": "logistic"}.get(kind, kind)
    Y = y.reshape(len(X), -1).astype(float)
    if make is MLPClassifier and kind != "multilabel":
        Y = LabelBinarizer().fit_transform(y).astype(float)
    theta = np.concatenate([a.ravel() for a in est.coefs_ + est.intercepts_])
    value, grad = est._loss_grad_lbfgs(theta, X, Y, sw)

    def f(t):
        return reference_loss(*unpack(t, est.coefs_, est.intercepts_), X, Y, out, 0.3, sw)

    np.testing.assert_allclose(value, f(theta), rtol=1e-10)
    eps = 1e-6
    numeric = np.array(
        [(f(theta + eps * e) - f(theta - eps * e)) / (2 * eps) for e in np.eye(theta.size)]
    )
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_poisson_lbfgs_matches_a_glm(backend):
    """With one linear hidden unit, an MLP with the Poisson loss is a Poisson GLM."""
    rng = np.random.default_rng(1)
    X = np.linspace(0, 1, 100).reshape(-1, 1)
    y = rng.poisson(np.exp(X[:, 0] + 1))
    glm = PoissonRegressor(alpha=0, tol=1e-8).fit(X, y)
    mlp = MLPRegressor(loss="poisson", hidden_layer_sizes=(1,), activation="identity",
                       alpha=0, solver="lbfgs", tol=1e-8, random_state=0,
                       backend=backend.name).fit(X, y)  # fmt: skip
    np.testing.assert_allclose(mlp.predict(X), glm.predict(X), rtol=1e-4)


def test_sample_weights_equal_repeated_rows(backend):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 3, size=20)
    sw = rng.integers(0, 4, size=20)
    kwargs = dict(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=30, random_state=0,
                  backend=backend.name)  # fmt: skip
    weighted = MLPClassifier(**kwargs).fit(X, y, sample_weight=sw)
    repeated = MLPClassifier(**kwargs).fit(X.repeat(sw, axis=0), y.repeat(sw))
    np.testing.assert_allclose(weighted.loss_, repeated.loss_, rtol=1e-8)
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), atol=1e-6)


def test_partial_fit_continues_like_fit(backend):
    """One fit of 5 epochs and five partial_fit calls of one epoch are the same steps
    (full batches, no shuffling, tol=0 so the stopping rule never fires)."""
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(30, 4)), rng.normal(size=30)
    kwargs = dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=0.05,
                  batch_size=30, shuffle=False, tol=0.0, random_state=0,
                  backend=backend.name)  # fmt: skip
    fitted = MLPRegressor(max_iter=5, **kwargs).fit(X, y)
    stepped = MLPRegressor(**kwargs)
    for _ in range(5):
        stepped.partial_fit(X, y)
    np.testing.assert_allclose(stepped.predict(X), fitted.predict(X), rtol=1e-10)
    assert stepped.loss_curve_ == pytest.approx(fitted.loss_curve_, rel=1e-10)
    assert stepped.t_ == fitted.t_ == 150


def test_backends_agree_with_numpy(backend):
    """The same estimator on this backend and on NumPy (float64): the same steps."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40)
    kwargs = dict(hidden_layer_sizes=(7,), solver="sgd", batch_size=16, max_iter=5,
                  random_state=0)  # fmt: skip
    here = MLPClassifier(backend=backend.name, **kwargs).fit(X, y)
    numpy = MLPClassifier(backend="numpy", **kwargs).fit(X, y)
    for a, b in zip(here.coefs_ + here.intercepts_, numpy.coefs_ + numpy.intercepts_):
        assert type(a) is np.ndarray and a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert here.loss_curve_ == pytest.approx(numpy.loss_curve_, rel=1e-9)


@pytest.mark.parametrize("make", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_dtype_follows_X(backend, make, solver):
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 2, size=30)
    for X_dtype, dtype, expected in [
        (np.float32, None, np.float32),
        (np.float64, None, np.float64),
        (np.float64, "float32", np.float32),
    ]:
        est = make(hidden_layer_sizes=(4,), solver=solver, max_iter=3, random_state=0,
                   backend=backend.name, dtype=dtype).fit(X.astype(X_dtype), y)  # fmt: skip
        assert all(a.dtype == expected for a in est.coefs_ + est.intercepts_)
        out = est.predict_proba(X) if make is MLPClassifier else est.predict(X)
        assert out.dtype == expected


def test_multilabel_targets(backend):
    X, Y = make_multilabel_classification(n_samples=60, n_classes=4, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(20,), solver="lbfgs", max_iter=200,
                        random_state=0, backend=backend.name).fit(X, Y)  # fmt: skip
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    proba = clf.predict_proba(X)
    assert proba.shape == Y.shape
    np.testing.assert_array_equal(clf.predict(X), (proba > 0.5).astype(int))
    assert clf.score(X, Y) > 0.9  # subset accuracy on the training rows


def test_learning_rate_schedules(backend):
    X, y = [[3, 2], [1, 6], [5, 6], [-2, -4]], [1, 1, 1, 0]
    clf = MLPClassifier(hidden_layer_sizes=(4,), solver="sgd", learning_rate="invscaling",
                        power_t=0.25, max_iter=3, random_state=0, backend=backend.name)  # fmt: skip
    clf.fit(X, y)
    assert clf.t_ == 12
    assert clf._optimizer.learning_rate == pytest.approx(0.001 / 13**0.25)
    # adaptive: each time the stopping rule fires the rate is divided by 5, until <= 1e-6
    clf = MLPClassifier(tol=0.5, max_iter=3000, solver="sgd", learning_rate="adaptive",
                        random_state=0, backend=backend.name).fit(X[:2], y[:2])  # fmt: skip
    assert clf.n_iter_ < 3000
    assert clf._optimizer.learning_rate == pytest.approx(0.001 / 5**5)  # the first rate <= 1e-6


def test_warm_start_and_n_iter_no_change_inf(backend):
    X, y = np.random.default_rng(6).normal(size=(20, 3)), np.arange(20) % 2
    clf = MLPClassifier(hidden_layer_sizes=(4,), warm_start=True, tol=1e9, max_iter=7,
                        n_iter_no_change=math.inf, random_state=0,
                        backend=backend.name)  # fmt: skip
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    first = [c.copy() for c in clf.coefs_]
    assert clf.n_iter_ == 7 and clf._no_improvement_count == 6
    clf.fit(X, y)  # continues from the weights and the loss curve of the first fit
    assert clf.n_iter_ == 7 and len(clf.loss_curve_) == 14
    assert not np.array_equal(first[0], clf.coefs_[0])


def test_non_finite_weights_are_a_value_error(backend):
    rng = np.random.default_rng(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    reg = MLPRegressor(max_iter=3, random_state=0, backend=backend.name)
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow, on some backends
            reg.fit(X, rng.normal(size=10))


def test_pickled_estimator_keeps_training(backend):
    X, y = np.random.default_rng(7).normal(size=(20, 3)), np.arange(20) % 3
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0,
                        backend=backend.name).fit(X, y)  # fmt: skip
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    before = again.loss_curve_[-1]
    for _ in range(20):
        again.partial_fit(X, y)
    assert again.loss_curve_[-1] < before


# -- scikit-learn's own estimators as the reference --------------------------------------------
SAME_AS_SKLEARN = {
    "adam": dict(solver="adam", learning_rate_init=0.01),
    "sgd-nesterov-invscaling": dict(solver="sgd", learning_rate="invscaling", power_t=0.3,
                                    learning_rate_init=0.5),
    "sgd-momentum-adaptive": dict(solver="sgd", learning_rate="adaptive", tol=0.5,
                                  n_iter_no_change=1, nesterovs_momentum=False,
                                  learning_rate_init=0.1),
    "adam-early-stopping": dict(solver="adam", early_stopping=True, validation_fraction=0.2,
                                learning_rate_init=0.01),
    "sgd-weighted": dict(solver="sgd", momentum=0.5, learning_rate_init=0.1),
    "lbfgs": dict(solver="lbfgs", max_iter=15),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SAME_AS_SKLEARN))
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_same_steps_as_scikit_learn(backend, name, kind):
    """Given the same random_state, polynn's estimators draw scikit-learn's initial weights,
    batch orders and validation split, and take its steps: the fitted weights agree to
    float64 rounding."""
    from sklearn import neural_network

    rng = np.random.default_rng(8)
    X = rng.normal(size=(90, 6))
    y = rng.integers(0, 3, size=90) if kind == "classifier" else X @ rng.normal(size=6)
    sw = rng.uniform(0.5, 2.0, size=90) if name == "sgd-weighted" else None
    params = {"hidden_layer_sizes": (7, 5), "batch_size": 20, "max_iter": 8, "random_state": 0,
              "alpha": 1e-3, **SAME_AS_SKLEARN[name]}  # fmt: skip
    make = MLPClassifier if kind == "classifier" else MLPRegressor
    ours = make(backend=backend.name, **params).fit(X, y, sample_weight=sw)
    theirs = getattr(neural_network, make.__name__)(**params).fit(X, y, sample_weight=sw)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    assert ours.n_iter_ == theirs.n_iter_
    if name != "lbfgs":
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
        assert ours._optimizer.learning_rate == pytest.approx(theirs._optimizer.learning_rate)
        if theirs.validation_scores_ is None:
            assert ours.validation_scores_ is None
        else:
            np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
