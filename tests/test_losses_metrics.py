"""The losses against ``torch.nn.functional`` (value and gradient, 1e-12 in float64) and the
metrics against scikit-learn (1e-12), on every backend; losses used on their own, by other
libraries' names and by a registered name; metrics of all the rows whatever the batches."""

from __future__ import annotations

import numpy as np
import pytest

import polynn as pn
from polynn.losses import get_loss

TOL = dict(rtol=1e-12, atol=1e-15)


def torch_reference(fn, pred, target):
    """``fn``'s value and its gradient with respect to ``pred`` (PyTorch's autograd)."""
    torch = pytest.importorskip("torch", reason="the reference is torch.nn.functional")
    p = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    value = fn(p, torch.tensor(target, dtype=torch.float64))
    value.backward()
    return value.item(), p.grad.numpy()


def functional(name):
    F = pytest.importorskip("torch.nn.functional", reason="the reference is torch.nn.functional")
    return {
        "mse": F.mse_loss,
        "mae": F.l1_loss,
        "huber": F.huber_loss,
        "huber_delta": lambda p, t: F.huber_loss(p, t, delta=0.4),
        "bce": F.binary_cross_entropy,
        "bce_smoothing": lambda p, t: F.binary_cross_entropy(p, t * 0.8 + 0.1),
        "cross_entropy": F.cross_entropy,  # probability targets
        "cross_entropy_smoothing": lambda z, t: F.cross_entropy(z, t, label_smoothing=0.15),
    }[name]


LOSSES = {
    "mse": lambda: pn.MSE(),
    "mae": lambda: pn.MAE(),
    "huber": lambda: pn.Huber(),
    "huber_delta": lambda: pn.Huber(delta=0.4),
    "bce": lambda: pn.BinaryCrossEntropy(),
    "bce_smoothing": lambda: pn.BinaryCrossEntropy(label_smoothing=0.2),
    "cross_entropy": lambda: pn.CrossEntropy(),
    "cross_entropy_smoothing": lambda: pn.CrossEntropy(label_smoothing=0.15),
}


def inputs(name, rng):
    """Predictions and targets of shape (7, 3) for loss ``name``: errors on both sides of
    Huber's delta, probabilities away from BCE's clipping, one-hot and soft class rows."""
    if name.startswith("bce"):
        return rng.uniform(0.05, 0.95, size=(7, 3)), rng.integers(0, 2, size=(7, 3)) * 1.0
    if name.startswith("cross_entropy"):
        soft = rng.uniform(size=(7, 3))
        soft[:4] = np.eye(3)[rng.integers(0, 3, size=4)]
        return rng.normal(0, 3, size=(7, 3)), soft / soft.sum(axis=1, keepdims=True)
    return rng.normal(0, 2, size=(7, 3)), rng.normal(0, 2, size=(7, 3))


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_used_on_its_own_equals_torch(backend, name):
    """``loss.value_and_grad(out, t)`` on a fresh loss, on the backend's own arrays."""
    pred, target = inputs(name, np.random.default_rng(3))
    want_value, want_grad = torch_reference(functional(name), pred, target)
    loss = LOSSES[name]()
    value, grad = loss.value_and_grad(backend.from_numpy(pred), backend.from_numpy(target))
    assert backend.owns(grad)  # on the device (NumPy gives the value as a scalar)
    np.testing.assert_allclose(float(value), want_value, **TOL)
    np.testing.assert_allclose(backend.to_numpy(grad), want_grad, **TOL)


@pytest.mark.parametrize("name", ["mae", "huber_delta", "bce_smoothing", "cross_entropy_smoothing"])
def test_weights_per_sample_equal_torch_per_row_losses(backend, name):
    """``mean(w * loss per row)``, each row's loss being the mean over its outputs."""
    torch = pytest.importorskip("torch", reason="the reference is torch.nn.functional")
    rng = np.random.default_rng(4)
    pred, target = inputs(name, rng)
    w = rng.uniform(0.2, 2.0, size=(7, 1))
    fn = functional(name)

    def weighted(p, t):
        if name.startswith("cross"):
            per_row = torch.stack([fn(p[i : i + 1], t[i : i + 1]) for i in range(7)])
        else:
            per_row = torch.stack([fn(p[i], t[i]) for i in range(7)])
        return torch.mean(per_row * torch.tensor(w[:, 0]))

    want_value, want_grad = torch_reference(weighted, pred, target)
    loss = get_loss(LOSSES[name](), backend)
    value, grad = loss.weighted_value_and_grad(
        backend.from_numpy(pred), backend.from_numpy(target), backend.from_numpy(w)
    )
    np.testing.assert_allclose(float(value), want_value, **TOL)
    np.testing.assert_allclose(backend.to_numpy(grad), want_grad, **TOL)


def test_a_loss_on_its_own_refuses_targets_of_another_shape(backend):
    out = backend.from_numpy(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"shaped like the predictions \(4, 3\); got shape "
                       r"\(4,\): loss.targets\(y, net\) makes them \(one-hot") as info:  # fmt: skip
        pn.CrossEntropy().value_and_grad(out, backend.from_numpy(np.arange(4.0)))
    assert isinstance(info.value, pn.PolynnError)
    with pytest.raises(pn.PolynnValueError, match=r"shaped like the predictions \(4, 3\)"):
        pn.MSE().value_and_grad(out, backend.from_numpy(np.zeros((4, 1))))


def test_loss_targets_makes_one_hot_rows_on_the_models_device(backend):
    net = pn.Sequential(pn.Dense(2, 3), backend=backend, dtype="float64", seed=0)
    loss = pn.CrossEntropy()
    T = loss.targets([2, 0, 1], net)
    assert backend.owns(T)
    np.testing.assert_array_equal(backend.to_numpy(T), np.eye(3)[[2, 0, 1]])
    with pytest.raises(pn.PolynnValueError, match=r"class labels must lie in \[0, 2\]"):
        loss.targets([3, 0], net)


@pytest.mark.parametrize("loss", ["mae", "huber"])
def test_the_new_losses_train_by_name_and_save(backend, tmp_path, loss):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 1))
    net = pn.Sequential(pn.Dense(3, 4), pn.Tanh(), pn.Dense(4, 1), backend=backend,
                        dtype="float64", seed=0)  # fmt: skip
    hist = net.fit(X, y, loss=loss, optimizer=pn.SGD(0.05), epochs=5, batch_size=8, verbose=0)
    assert hist["loss"][-1] < hist["loss"][0]
    net.save(tmp_path / "m.npz")
    again = pn.load(tmp_path / "m.npz", backend=backend.name)
    assert type(again.loss) is type(net.loss)
    assert again.evaluate(X, y) == pytest.approx(net.evaluate(X, y), rel=1e-12)


def test_label_smoothing_and_delta_are_saved(backend, tmp_path):
    net = pn.Sequential(pn.Dense(2, 3), backend=backend, dtype="float64", seed=0)
    X, y = np.random.default_rng(0).normal(size=(9, 2)), np.arange(9) % 3
    net.fit(X, y, loss=pn.CrossEntropy(label_smoothing=0.1), epochs=1, verbose=0)
    net.save(tmp_path / "m.npz")
    assert pn.load(tmp_path / "m.npz", backend=backend.name).loss.label_smoothing == 0.1
    net.fit(X, np.zeros((9, 3)), loss=pn.Huber(delta=0.5), epochs=1, verbose=0)
    net.save(tmp_path / "m.npz")
    assert pn.load(tmp_path / "m.npz", backend=backend.name).loss.delta == 0.5


@pytest.mark.parametrize(
    "alias, cls",
    [
        ("sparse_categorical_crossentropy", pn.CrossEntropy),
        ("categorical_crossentropy", pn.CrossEntropy),
        ("binary_crossentropy", pn.BinaryCrossEntropy),
        ("mean_squared_error", pn.MSE),
        ("mean_absolute_error", pn.MAE),
        ("huber_loss", pn.Huber),
    ],
)
def test_other_libraries_loss_names_map_to_polynns(backend, alias, cls):
    assert type(get_loss(alias, backend)) is cls


def test_categorical_crossentropy_trains_as_cross_entropy(backend):
    X, y = np.random.default_rng(1).normal(size=(12, 2)), np.arange(12) % 3

    def run(loss):
        net = pn.Sequential(pn.Dense(2, 3), pn.Softmax(), backend=backend, dtype="float64",
                            seed=0)  # fmt: skip
        return net.fit(X, y, loss=loss, epochs=3, verbose=0)["loss"]

    assert run("sparse_categorical_crossentropy") == run("cross_entropy")


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("binary_cross_entropy_with_logits", r"'bce' takes probabilities.*Sigmoid"),
        ("nll_loss", r"'cross_entropy' takes logits"),
        ("mean_sqared_error", r"unknown loss 'mean_sqared_error'.*'mse'"),
    ],
)
def test_loss_names_polynn_has_no_loss_for_are_refused_saying_what_to_use(backend, name, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        get_loss(name, backend)
    assert isinstance(info.value, pn.PolynnError)


@pn.register(name="log_cosh")
class LogCosh(pn.Loss):
    """A loss of one's own: ``mean(log(cosh(pred - y)))``."""

    compilable = True

    def value_and_grad(self, pred, target):
        xp, diff = self.xp, pred - target
        size = diff.shape[0] * diff.shape[1]
        return xp.sum(xp.log(xp.cosh(diff))) / size, xp.tanh(diff) / size


def test_a_registered_loss_is_named_by_its_string(backend, tmp_path):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))

    def net():
        return pn.Sequential(pn.Dense(3, 2), backend=backend, dtype="float64", seed=0)

    by_name, by_object = net(), net()
    a = by_name.fit(X, y, loss="log_cosh", optimizer=pn.SGD(0.1), epochs=3, verbose=0)
    b = by_object.fit(X, y, loss=LogCosh(), optimizer=pn.SGD(0.1), epochs=3, verbose=0)
    assert a["loss"] == b["loss"]
    np.testing.assert_allclose(
        a["loss"][0], np.mean(np.log(np.cosh(X @ net().get_weights()[0] - y))), rtol=1e-12
    )
    by_name.save(tmp_path / "m.npz")
    assert isinstance(pn.load(tmp_path / "m.npz", backend=backend.name).loss, LogCosh)


# -- metrics --------------------------------------------------------------------------------
def sklearn_metrics():
    return pytest.importorskip("sklearn.metrics", reason="the reference is scikit-learn")


def scores(backend, outputs, X, y, metrics, final=(), loss="mse"):
    """``evaluate``'s figures in batches of 7, and the network's predictions (float64)."""
    net = pn.Sequential(pn.Dense(X.shape[1], outputs), *final, backend=backend, dtype="float64",
                        seed=4)  # fmt: skip
    got = net.evaluate(X, y, loss=loss, metrics=metrics, batch_size=7)
    return got, pn.to_numpy(net.predict(X))


def test_classification_metrics_equal_scikit_learn(backend):
    skm = sklearn_metrics()
    rng = np.random.default_rng(0)
    X, labels = rng.normal(size=(45, 6)), rng.integers(0, 5, size=45)
    labels[labels == 4] = 3  # a class absent from the targets
    names = ["accuracy", "top_k_accuracy", "top_2_accuracy", "precision", "recall", "f1"]
    got, scores_ = scores(backend, 6, X, labels, names, loss="cross_entropy")
    pred = scores_.argmax(axis=1)
    kw = dict(average="macro", zero_division=0)
    want = {
        "accuracy": skm.accuracy_score(labels, pred),
        "top_k_accuracy": skm.top_k_accuracy_score(labels, scores_, k=5, labels=range(6)),
        "top_2_accuracy": skm.top_k_accuracy_score(labels, scores_, k=2, labels=range(6)),
        "precision": skm.precision_score(labels, pred, **kw),
        "recall": skm.recall_score(labels, pred, **kw),
        "f1": skm.f1_score(labels, pred, **kw),
    }
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, err_msg=name, **TOL)


def test_binary_metrics_and_auc_equal_scikit_learn(backend):
    skm = sklearn_metrics()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    y = (X[:, 0] + rng.normal(size=50) > 0).astype(float)
    names = ["accuracy", "precision", "recall", "f1", "auc"]
    got, p = scores(backend, 1, X, y, names, final=[pn.Sigmoid()], loss="bce")
    said = p[:, 0] > 0.5
    want = {
        "accuracy": skm.accuracy_score(y, said),
        "precision": skm.precision_score(y, said),
        "recall": skm.recall_score(y, said),
        "f1": skm.f1_score(y, said),
        "auc": skm.roc_auc_score(y, p[:, 0]),
    }
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, err_msg=name, **TOL)


def test_auc_counts_tied_scores_half(backend):
    skm = sklearn_metrics()
    rng = np.random.default_rng(5)
    X = np.round(rng.normal(size=(60, 1)))  # few distinct scores: many ties
    y = (X[:, 0] + rng.normal(size=60) > 0).astype(float)
    got, p = scores(backend, 1, X, y, ["auc"], final=[pn.Sigmoid()], loss="bce")
    np.testing.assert_allclose(got["auc"], skm.roc_auc_score(y, p[:, 0]), **TOL)
    assert len(np.unique(p)) < 12


def test_multilabel_metrics_are_macro_over_the_outputs(backend):
    skm = sklearn_metrics()
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 4))
    Y = (X[:, :3] + rng.normal(size=(40, 3)) > 0.3).astype(float)
    got, p = scores(backend, 3, X, Y, ["precision", "recall", "f1"], [pn.Sigmoid()], "bce")
    for name, fn in [("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)]:  # fmt: skip
        want = fn(Y, p > 0.5, average="macro", zero_division=0)
        np.testing.assert_allclose(got[name], want, err_msg=name, **TOL)


def test_regression_metrics_equal_scikit_learn(backend):
    skm = sklearn_metrics()
    rng = np.random.default_rng(3)
    X = rng.normal(size=(33, 4))
    Y = X[:, :2] * [1.0, -2.0] + rng.normal(size=(33, 2)) + [0.5, 3.0]
    got, p = scores(backend, 2, X, Y, ["mae", "mse", "rmse", "r2"])
    want = {
        "mae": skm.mean_absolute_error(Y, p),
        "mse": skm.mean_squared_error(Y, p),
        "rmse": skm.root_mean_squared_error(Y, p),
        "r2": skm.r2_score(Y, p),
    }
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, err_msg=name, **TOL)


def test_a_training_epochs_metrics_are_those_of_its_outputs(backend):
    """One full-batch epoch: the metrics are those of the outputs before the update."""
    skm = sklearn_metrics()
    rng = np.random.default_rng(6)
    X, labels = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)
    net = pn.Sequential(pn.Dense(4, 3), backend=backend, dtype="float64", seed=1)
    before = pn.to_numpy(net.predict(X)).argmax(axis=1)
    hist = net.fit(X, labels, loss="cross_entropy", metrics=["f1", "acc"], epochs=1, verbose=0)
    want = skm.f1_score(labels, before, average="macro", zero_division=0)
    np.testing.assert_allclose(hist["f1"][0], want, **TOL)
    np.testing.assert_allclose(hist["acc"][0], skm.accuracy_score(labels, before), **TOL)


def test_metric_names_from_other_libraries_keep_the_name_given(backend):
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(10, 2)), rng.normal(size=(10, 1))
    names = ["mean_absolute_error", "root_mean_squared_error", "r2_score"]
    got = pn.Sequential(pn.Dense(2, 1), backend=backend, seed=0).evaluate(X, y, metrics=names)
    assert set(got) == {"loss", *names}


@pn.register(name="median_absolute_error")
def median_absolute_error(y_true, y_pred):
    """Not a mean of per-batch figures: it needs all the rows at once."""
    xp = pn.backends.backend_of(y_pred).xp
    errors = xp.sort(xp.reshape(xp.abs(y_true - y_pred), (-1,)))
    n = errors.shape[0]
    return (errors[(n - 1) // 2] + errors[n // 2]) / 2


def test_a_metric_function_of_your_own_sees_all_the_rows(backend, tmp_path):
    skm = sklearn_metrics()
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(23, 3)), rng.normal(size=23)
    got, p = scores(backend, 1, X, y, ["median_absolute_error"])
    want = skm.median_absolute_error(y, p[:, 0])
    np.testing.assert_allclose(got["median_absolute_error"], want, **TOL)


def test_the_old_per_batch_metric_functions_are_refused_saying_why(backend):
    @pn.register(name="positives_per_batch")
    def positives_per_batch(pred, target, xp):
        return xp.sum(pred > 0.5)

    net = pn.Sequential(pn.Dense(2, 1), backend=backend, seed=0)
    with pytest.raises(TypeError, match=r"takes 3 arguments.*\(y_true, y_pred\)") as info:
        net.evaluate([[0.0, 1.0]], [1.0], metrics=["positives_per_batch"])
    assert isinstance(info.value, pn.PolynnError)


@pytest.mark.parametrize(
    "outputs, metric, pattern",
    [(1, "top_k_accuracy", r"one output per class"), (3, "auc", r"'auc' is for one output")],
)
def test_metrics_that_do_not_fit_the_network_are_refused(backend, outputs, metric, pattern):
    net = pn.Sequential(pn.Dense(2, outputs), backend=backend, seed=0)
    with pytest.raises(pn.PolynnValueError, match=pattern):
        net.evaluate(np.ones((3, 2)), np.zeros((3, outputs)), metrics=[metric])
