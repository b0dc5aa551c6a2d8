"""Weights per sample (``sample_weight``, ``class_weight``) against NumPy float64 formulas;
the learning-rate callbacks, ``ModelCheckpoint`` and ``CSVLogger``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import blobs

import polynn as pn


def regression(rows=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    return X, X @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(rows, 1))


def linear(backend, seed=0):
    return pn.Sequential(pn.Dense(3, 1), backend=backend, dtype="float64", seed=seed)


# -- weights per sample ---------------------------------------------------------------------
def test_one_weighted_step_equals_the_numpy_gradient(backend):
    """A full-batch SGD step on the weighted MSE, against the gradient written out."""
    X, y = regression()
    w = np.random.default_rng(1).uniform(0, 3, size=len(X))
    net = linear(backend)
    W, b = net.get_weights()
    hist = net.fit(X, y, optimizer=pn.SGD(lr=0.1), sample_weight=w, verbose=0)
    scaled = w * len(w) / w.sum()  # the weights average 1
    residual = X @ W + b - y
    loss = np.sum(scaled[:, None] * residual**2) / len(X)
    grad_out = 2 * scaled[:, None] * residual / len(X)
    assert hist["loss"][0] == pytest.approx(loss, rel=1e-12)
    W_new, b_new = net.get_weights()
    np.testing.assert_allclose(W_new, W - 0.1 * X.T @ grad_out, rtol=1e-12)
    np.testing.assert_allclose(b_new, b - 0.1 * grad_out.sum(axis=0), rtol=1e-12)


def test_integer_weights_equal_repeated_rows(backend):
    """Weight 2 on a row is the row twice (full batch: the same mean)."""
    X, y = regression(rows=6)
    w = np.array([1, 2, 1, 3, 1, 1])
    weighted, repeated = linear(backend), linear(backend)
    weighted.fit(X, y, optimizer=pn.SGD(lr=0.05), epochs=3, sample_weight=w, verbose=0)
    repeated.fit(np.repeat(X, w, axis=0), np.repeat(y, w, axis=0), optimizer=pn.SGD(lr=0.05),
                 epochs=3, verbose=0)  # fmt: skip
    for a, b in zip(weighted.get_weights(), repeated.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_class_weight_is_a_sample_weight_per_class(backend):
    X, labels = blobs(rows=30, features=4, classes=3, seed=2)
    class_weight = {0: 1.0, 2: 4.0}  # class 1 left out: weight 1

    def net():
        return pn.Sequential(pn.Dense(4, 3), backend=backend, dtype="float64", seed=0)

    a, b = net(), net()
    kwargs = dict(loss="cross_entropy", epochs=3, batch_size=8, verbose=0)
    a.fit(X, labels, class_weight=class_weight, **kwargs)
    b.fit(X, labels, sample_weight=np.array([1.0, 1.0, 4.0])[labels], **kwargs)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12)


def test_weighted_cross_entropy_evaluates_to_the_weighted_mean(backend):
    X, labels = blobs(rows=20, features=4, classes=3, seed=4)
    net = pn.Sequential(pn.Dense(4, 3), backend=backend, dtype="float64", seed=1)
    w = np.random.default_rng(0).uniform(0, 2, size=20)
    z = pn.to_numpy(net.predict(X))
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    rows = -log_p[np.arange(20), labels]
    got = net.evaluate(X, labels, loss="cross_entropy", sample_weight=w, batch_size=7)
    assert got["loss"] == pytest.approx(np.sum(w * rows) / np.sum(w), rel=1e-12)


def test_binary_class_weight(backend):
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    net = pn.Sequential(pn.Dense(2, 1), pn.Sigmoid(), backend=backend, dtype="float64", seed=0)
    p = np.clip(pn.to_numpy(net.predict(X)), 1e-7, 1 - 1e-7)
    rows = -(y * np.log(p) + (1 - y) * np.log(1 - p))[:, 0]
    hist = net.fit(X, y, loss="bce", class_weight={1: 3.0}, optimizer=pn.SGD(lr=1e-9),
                   verbose=0)  # fmt: skip
    w = np.where(y[:, 0] == 1, 3.0, 1.0)
    assert hist["loss"][0] == pytest.approx(np.sum(w * rows) / np.sum(w), rel=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sample_weight": [1.0, 2.0]}, r"sample_weight has shape \(2,\); expected .*\(12,\)"),
        ({"sample_weight": [-1.0] + [1.0] * 11}, "must be non-negative"),
        ({"sample_weight": [np.nan] + [1.0] * 11}, "sample_weight"),
        ({"sample_weight": [0.0] * 12}, "sum to 0"),
        ({"class_weight": {0: 1.0}}, "class_weight needs class targets"),
        ({"class_weight": [1.0, 2.0]}, "class_weight must be a dict"),
    ],
)
def test_bad_weights_are_refused(backend, kwargs, match):
    X, y = regression()
    with pytest.raises((pn.PolynnValueError, pn.PolynnTypeError), match=match):
        linear(backend).fit(X, y, verbose=0, **kwargs)


def test_bad_class_weight_keys_are_refused(backend):
    X, labels = blobs(rows=10, features=4, classes=3)
    net = pn.Sequential(pn.Dense(4, 3), backend=backend, seed=0)
    with pytest.raises(pn.PolynnValueError, match=r"class indices in \[0, 2\]; got 3"):
        net.fit(X, labels, loss="cross_entropy", class_weight={3: 1.0}, verbose=0)


# -- learning-rate callbacks ----------------------------------------------------------------
def test_learning_rate_scheduler_sets_the_rate_before_each_epoch(backend):
    X, y = regression()
    net = linear(backend)
    halve = pn.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5**epoch)
    hist = net.fit(X, y, optimizer=pn.SGD(lr=1.0), epochs=4, callbacks=[halve], verbose=0)
    assert hist["lr"] == [0.1, 0.05, 0.025, 0.0125]
    # the count goes on in the next fit
    assert net.fit(X, y, epochs=1, callbacks=[halve], verbose=0)["lr"] == [0.1 * 0.5**4]


def test_reduce_lr_on_plateau_after_patience(backend):
    X, y = regression()
    net = linear(backend)
    net.fit(X, y, optimizer=pn.SGD(lr=0.1), epochs=1, verbose=0)
    plateau = pn.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, min_lr=0.02)
    plateau.set_model(net)
    plateau.on_train_begin({})
    lrs = []
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.94, 0.95, 0.99]):
        plateau.on_epoch_end(epoch, {"loss": loss})
        lrs.append(net.optimizer.lr)
    # no improvement on 0.9 for two epochs -> 0.05, again -> 0.025, again -> 0.02 (min_lr)
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02]


def test_a_schedule_and_a_rate_callback_conflict(backend):
    X, y = regression()
    opt = pn.SGD(lr=pn.StepDecay(0.1, step_size=2))
    with pytest.raises(pn.PolynnValueError, match="use one or the other"):
        linear(backend).fit(X, y, optimizer=opt, callbacks=[pn.ReduceLROnPlateau()], verbose=0)


# -- checkpoints and logs -------------------------------------------------------------------
def test_model_checkpoint_writes_resumable_files(backend, tmp_path):
    X, y = regression()
    net = linear(backend)
    checkpoint = pn.ModelCheckpoint(tmp_path / "m-{epoch}.npz", monitor="loss")
    net.fit(X, y, optimizer=pn.Adam(lr=0.1), epochs=3, callbacks=[checkpoint], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-1.npz", "m-2.npz", "m-3.npz"]
    last = pn.load(tmp_path / "m-3.npz", backend=backend.name)
    for a, b in zip(last.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert last.optimizer.iterations == 3


def test_model_checkpoint_save_best_only(backend, tmp_path):
    X, y = regression()
    net = linear(backend)
    best = pn.ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss", save_best_only=True)
    # a learning rate this large makes the validation loss bounce
    hist = net.fit(X[:8], y[:8], optimizer=pn.SGD(lr=0.9), epochs=6, verbose=0,
                   validation_data=(X[8:], y[8:]), callbacks=[best])  # fmt: skip
    val = hist["val_loss"]
    improving = [i for i in range(6) if val[i] < min(val[:i], default=np.inf)]
    assert len(best.saved) == len(improving) < 6
    saved = pn.load(tmp_path / "best.npz", backend=backend.name)
    assert saved.evaluate(X[8:], y[8:])["loss"] == pytest.approx(min(val), rel=1e-12)


def test_model_checkpoint_names_a_missing_figure(backend, tmp_path):
    X, y = regression()
    checkpoint = pn.ModelCheckpoint(tmp_path / "m-{val_acc}.npz")
    with pytest.raises(pn.PolynnValueError, match="names 'val_acc'"):
        linear(backend).fit(X, y, epochs=1, callbacks=[checkpoint], verbose=0)


def test_csv_logger_rows_are_the_history(backend, tmp_path):
    X, y = regression()
    net = linear(backend)
    path = tmp_path / "log.csv"
    hist = net.fit(X, y, epochs=3, callbacks=[pn.CSVLogger(path)], verbose=0)
    net.fit(X, y, epochs=2, callbacks=[pn.CSVLogger(path, append=True)], verbose=0)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows[:3]] == hist["loss"]
    assert set(rows[0]) == {"epoch", "loss", "lr"}
