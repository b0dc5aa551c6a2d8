"""History, validation, EarlyStopping, user callbacks, progress output, and evaluate against
independent NumPy float64 references."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from conftest import XOR_X, XOR_Y, blobs

import polynn as pn

TOLERANCE = {"float32": 2e-5, "float64": 1e-12}


# -- independent NumPy float64 references -----------------------------------------------------
def np_forward(net, X, weights=None):
    """The network's output computed in NumPy float64 from its weights."""
    weights = [w.astype(np.float64) for w in (weights or net.get_weights())]
    out = np.asarray(X, dtype=np.float64)
    for layer in net.layers:
        if isinstance(layer, pn.Dense):
            W, b, weights = weights[0], weights[1], weights[2:]
            out = out @ W + b
        elif isinstance(layer, pn.Tanh):
            out = np.tanh(out)
        elif isinstance(layer, pn.Sigmoid):
            out = 1.0 / (1.0 + np.exp(-out))
        elif isinstance(layer, pn.ReLU):
            out = np.maximum(out, 0.0)
        elif isinstance(layer, pn.Softmax):
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        elif not isinstance(layer, pn.Identity):
            raise AssertionError(f"no reference for {layer!r}")
    return out


def np_mse(pred, y):
    return float(np.mean((pred - y.reshape(pred.shape)) ** 2))


def np_bce(p, y, eps=1e-7):
    p = np.clip(p, eps, 1 - eps)
    y = y.reshape(p.shape)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def np_cross_entropy(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(labels)), labels]))


def np_binary_accuracy(p, y):
    return float(np.mean((p > 0.5) == (y.reshape(p.shape) > 0.5)))


def np_class_accuracy(out, labels):
    return float(np.mean(np.argmax(out, axis=1) == labels))


def regression(rows=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    return X, np.tanh(X[:, :1] - 0.5 * X[:, 1:2]) + 0.1 * rng.normal(size=(rows, 1))


def regressor(backend, dtype="float64", seed=0):
    return pn.Sequential(
        pn.Dense(3, 5), pn.Tanh(), pn.Dense(5, 1), backend=backend, dtype=dtype, seed=seed
    )


def classifier(backend, dtype="float64", seed=0, final=None):
    layers = [pn.Dense(4, 6), pn.Tanh(), pn.Dense(6, 3)]
    if final is not None:
        layers.append(final)
    return pn.Sequential(*layers, backend=backend, dtype=dtype, seed=seed)


class Recorder(pn.Callback):
    """Records every hook call, the logs and the weights after each epoch."""

    def __init__(self):
        self.calls = []
        self.epochs = []
        self.logs = []
        self.weights = []

    def on_train_begin(self, logs):
        self.calls.append("begin")

    def on_epoch_end(self, epoch, logs):
        self.calls.append("epoch")
        self.epochs.append(epoch)
        self.logs.append(dict(logs))
        self.weights.append(self.model.get_weights())

    def on_train_end(self, logs):
        self.calls.append("end")


class FakeMetric(pn.Callback):
    """Feeds a scripted value of ``name`` into the logs (placed before the callbacks that
    read it)."""

    def __init__(self, name, values):
        self.name, self.values = name, list(values)

    def on_epoch_end(self, epoch, logs):
        logs[self.name] = self.values[epoch]


# -- History ----------------------------------------------------------------------------------
def test_history_holds_one_float_per_epoch_for_each_key(backend):
    X, labels = blobs(rows=30, features=4, classes=3)
    net = classifier(backend, dtype="float32")
    hist = net.fit(
        X[:24],
        labels[:24],
        loss="cross_entropy",
        optimizer=pn.Adam(lr=0.01),
        epochs=3,
        batch_size=8,
        metrics=["accuracy"],
        validation_data=(X[24:], labels[24:]),
        verbose=0,
    )
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert hist.history["lr"] == [0.01] * 3
    assert hist.epoch == [0, 1, 2]
    for key, values in hist.history.items():
        assert len(values) == 3, key
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), (key, values)
    for key in ("accuracy", "val_accuracy"):
        # accuracy is a fraction of rows: a multiple of 1/24 (training) or 1/6 (validation)
        rows = 24 if key == "accuracy" else 6
        for v in hist.history[key]:
            assert 0.0 <= v <= 1.0
            assert v * rows == pytest.approx(round(v * rows), abs=1e-9)


def test_history_without_metrics_or_validation_holds_the_loss_and_the_learning_rate(backend):
    X, y = regression()
    hist = regressor(backend).fit(X, y, epochs=2, verbose=0)
    assert list(hist.history) == ["loss", "lr"]


def test_full_batch_loss_of_the_first_epoch_is_the_loss_at_the_initial_weights(backend):
    X, y = regression()
    net = regressor(backend)
    initial = net.get_weights()
    hist = net.fit(X, y, loss="mse", optimizer=pn.SGD(lr=0.1), epochs=2, verbose=0)
    assert hist.history["loss"][0] == pytest.approx(np_mse(np_forward(net, X, initial), y), 1e-12)


def test_mini_batch_loss_is_the_row_weighted_mean_of_the_batch_losses(backend):
    """With lr tiny the weights barely move, so each batch's loss is the loss at the initial
    weights; the epoch's loss is their mean weighted by batch size (here the full-data MSE)."""
    X, y = regression(rows=20)
    net = regressor(backend)
    initial = net.get_weights()
    hist = net.fit(X, y, optimizer=pn.SGD(lr=1e-12), epochs=1, batch_size=6, verbose=0)
    expected = np_mse(np_forward(net, X, initial), y)
    assert hist.history["loss"][0] == pytest.approx(expected, rel=1e-9)


# -- validation_split -------------------------------------------------------------------------
def test_validation_split_holds_out_the_last_rows(backend):
    X, y = regression(rows=20)
    net = regressor(backend)
    initial = net.get_weights()
    hist = net.fit(
        X, y, loss="mse", optimizer=pn.SGD(lr=0.1), epochs=1, validation_split=0.25, verbose=0
    )
    after = net.get_weights()
    # trained on the first 15 rows (full batch: the loss is that at the initial weights) ...
    assert hist.history["loss"][0] == pytest.approx(
        np_mse(np_forward(net, X[:15], initial), y[:15]), rel=1e-12
    )
    # ... and validated on the last 5 after the epoch's update
    assert hist.history["val_loss"][0] == pytest.approx(
        np_mse(np_forward(net, X[15:], after), y[15:]), rel=1e-12
    )
    assert hist.history["val_loss"][0] != pytest.approx(
        np_mse(np_forward(net, X[:5], after), y[:5]), rel=1e-6
    )


def test_validation_split_matches_evaluate_on_the_last_rows_every_epoch(backend):
    X, labels = blobs(rows=40, features=4, classes=3)

    class EvaluateHeldOut(pn.Callback):
        def __init__(self):
            self.scores = []

        def on_epoch_end(self, epoch, logs):
            self.scores.append(
                self.model.evaluate(X[30:], labels[30:], loss="cross_entropy", metrics=["accuracy"])
            )

    net = classifier(backend)
    probe = EvaluateHeldOut()
    hist = net.fit(
        X,
        labels,
        loss="cross_entropy",
        optimizer=pn.SGD(lr=0.05),
        epochs=3,
        batch_size=7,
        shuffle=True,
        metrics=["accuracy"],
        validation_split=0.25,
        callbacks=[probe],
        verbose=0,
    )
    for epoch, scores in enumerate(probe.scores):
        assert hist.history["val_loss"][epoch] == pytest.approx(scores["loss"], rel=1e-12)
        assert hist.history["val_accuracy"][epoch] == scores["accuracy"]
    final = np_forward(net, X[30:])
    assert hist.history["val_loss"][-1] == pytest.approx(
        np_cross_entropy(final, labels[30:]), rel=1e-12
    )


# -- EarlyStopping ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, patience, min_delta, ran, best",
    [
        ([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 1.0, 0.5], 3, 0.0, 6, 2),
        ([5.0, 4.0, 4.0, 4.0, 1.0, 1.0], 2, 0.0, 4, 1),  # equal is not better
        ([5.0, 4.8, 4.6, 4.4, 4.2, 4.0], 2, 0.5, 3, 0),  # steps smaller than min_delta
        ([3.0, 2.0, 1.0, 0.5, 0.25, 0.1], 2, 0.0, 6, 5),  # always improving: never stops
        ([1.0, 2.0, 0.5, 0.1], 0, 0.0, 2, 0),  # patience 0: the first miss stops
    ],
)
def test_early_stopping_stops_after_patience_epochs_without_improvement(
    backend, values, patience, min_delta, ran, best
):
    X, y = regression(rows=8)
    net = regressor(backend)
    stopper = pn.EarlyStopping(monitor="score", patience=patience, min_delta=min_delta)
    recorder = Recorder()
    hist = net.fit(
        X,
        y,
        optimizer=pn.SGD(lr=0.01),
        epochs=len(values),
        callbacks=[FakeMetric("score", values), stopper, recorder],
        verbose=0,
    )
    assert len(hist.history["loss"]) == ran
    assert recorder.epochs == list(range(ran))
    assert recorder.calls == ["begin", *["epoch"] * ran, "end"]
    assert stopper.best_epoch == best
    assert stopper.best == values[best]


def test_early_stopping_mode_max_for_accuracy(backend):
    X, y = regression(rows=8)
    values = [0.5, 0.7, 0.6, 0.7, 0.65, 0.9]
    stopper = pn.EarlyStopping(monitor="fake_accuracy", patience=3)
    hist = regressor(backend).fit(
        X, y, epochs=6, callbacks=[FakeMetric("fake_accuracy", values), stopper], verbose=0
    )
    assert stopper.mode == "max"
    assert len(hist.history["loss"]) == 5  # best 0.7 at epoch 1; 0.6, 0.7, 0.65 are no better
    assert stopper.best_epoch == 1


@pytest.mark.parametrize("restore", [True, False])
def test_restore_best_weights(backend, restore):
    X, y = regression(rows=12)
    net = regressor(backend)
    values = [3.0, 2.0, 1.0, 1.5, 1.4, 1.3, 0.1]
    stopper = pn.EarlyStopping(monitor="score", patience=3, restore_best_weights=restore)
    recorder = Recorder()
    net.fit(
        X,
        y,
        optimizer=pn.SGD(lr=0.1),
        epochs=len(values),
        callbacks=[FakeMetric("score", values), recorder, stopper],
        verbose=0,
    )
    assert recorder.epochs == [0, 1, 2, 3, 4, 5]
    expected = recorder.weights[2] if restore else recorder.weights[-1]
    for got, want in zip(net.get_weights(), expected):
        np.testing.assert_array_equal(got, want)
    # the two candidates really differ, so the comparison above says something
    assert not np.array_equal(recorder.weights[2][0], recorder.weights[-1][0])


def test_early_stopping_on_real_validation_loss_restores_its_minimum(backend):
    X, y = regression(rows=24)
    net = regressor(backend)
    recorder = Recorder()
    stopper = pn.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    # a learning rate this large makes the validation loss bounce
    hist = net.fit(
        X,
        y,
        optimizer=pn.SGD(lr=1.5),
        epochs=12,
        validation_split=0.25,
        callbacks=[recorder, stopper],
        verbose=0,
    )
    val = hist.history["val_loss"]
    best = int(np.argmin(val))
    assert stopper.best_epoch == best
    for got, want in zip(net.get_weights(), recorder.weights[best]):
        np.testing.assert_array_equal(got, want)
    assert net.evaluate(X[18:], y[18:], loss="mse")["loss"] == pytest.approx(val[best], rel=1e-12)


def test_early_stopping_monitor_missing_from_logs(backend):
    X, y = regression(rows=8)
    logged = r"'val_loss'.*logged are \['accuracy', 'loss', 'lr'\]"
    with pytest.raises(ValueError, match=logged) as info:
        regressor(backend).fit(
            X, y, epochs=2, metrics=["accuracy"], callbacks=[pn.EarlyStopping()], verbose=0
        )
    assert isinstance(info.value, pn.PolynnValueError)
    assert "validation_data or validation_split" in str(info.value)


# -- user callbacks ---------------------------------------------------------------------------
def test_a_user_callback_sees_every_epoch_and_the_model(backend):
    X, y = regression(rows=8)
    net = regressor(backend)
    recorder = Recorder()
    hist = net.fit(X, y, epochs=4, batch_size=3, callbacks=[recorder], verbose=0)
    assert recorder.model is net
    assert recorder.epochs == [0, 1, 2, 3]
    assert recorder.calls == ["begin", "epoch", "epoch", "epoch", "epoch", "end"]
    assert [logs["loss"] for logs in recorder.logs] == hist.history["loss"]


def test_a_user_callback_can_stop_training(backend):
    X, y = regression(rows=8)

    class StopAtTwo(pn.Callback):
        def __init__(self):
            self.seen = []
            self.ended = False

        def on_epoch_end(self, epoch, logs):
            self.seen.append(epoch)
            if epoch == 2:
                self.model.stop_training = True

        def on_train_end(self, logs):
            self.ended = True

    net = regressor(backend)
    stopper = StopAtTwo()
    hist = net.fit(X, y, epochs=10, callbacks=[stopper], verbose=0)
    assert stopper.seen == [0, 1, 2]
    assert stopper.ended
    assert len(hist.history["loss"]) == 3
    # the flag does not leak into the next fit
    again = net.fit(X, y, epochs=4, verbose=0)
    assert len(again.history["loss"]) == 4


# -- progress output --------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [None, 3])
def test_verbose_0_prints_nothing(backend, capsys, batch_size):
    X, y = regression(rows=8)
    net = regressor(backend)
    net.fit(X, y, epochs=2, batch_size=batch_size, verbose=0, validation_split=0.25)
    net.evaluate(X, y)
    net.predict(X)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_verbose_1_draws_one_bar_over_the_epochs_on_a_terminal(backend, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    X, y = regression(rows=8)
    regressor(backend).fit(X, y, epochs=3, batch_size=3, verbose=1)
    out, err = capsys.readouterr()
    assert out == ""
    assert "3/3" in err and "epoch" in err and "loss=" in err
    assert "batch" not in err  # one bar for the whole fit


def test_verbose_2_adds_a_bar_over_each_epochs_batches(backend, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    X, y = regression(rows=8)
    regressor(backend).fit(X, y, epochs=2, batch_size=3, verbose=2)
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 1" in err and "epoch 2" in err and "/3 [" in err  # 8 rows in batches of 3
    assert "batch/s" in err and "2/2" in err


def test_verbose_2_counts_the_batches_of_a_stream(backend, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    X, y = regression(rows=8)
    regressor(backend).fit(lambda: ((X[i : i + 3], y[i : i + 3]) for i in (0, 3, 6)),
                           epochs=2, verbose=2)  # fmt: skip
    out, err = capsys.readouterr()
    # a bar over each epoch's batches, counting them (their number is not known in advance)
    assert "epoch 1: 0batch" in err and "epoch 2: 0batch" in err and "batch/s" in err
    assert "2/2" in err


def test_without_a_terminal_each_epoch_is_one_plain_line(backend, capsys):
    X, y = regression(rows=8)
    regressor(backend).fit(X, y, epochs=2, batch_size=3, verbose=1, validation_split=0.25,
                           metrics=["accuracy"])  # fmt: skip
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 2
    assert lines[0].startswith("epoch 1/2 - loss ") and "val_accuracy" in lines[1]
    assert "\r" not in err and "|" not in err  # no bar drawn


# -- evaluate against NumPy float64 -----------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_evaluate_binary_losses_and_accuracy(backend, dtype, loss):
    net = pn.Sequential(
        pn.Dense(2, 4),
        pn.Tanh(),
        pn.Dense(4, 1),
        pn.Sigmoid(),
        backend=backend,
        dtype=dtype,
        seed=1,
    )
    net.fit(XOR_X, XOR_Y, loss=loss, optimizer=pn.SGD(lr=0.5), epochs=5, verbose=0)
    X = np.vstack([XOR_X, XOR_X + 0.3])
    y = np.vstack([XOR_Y, XOR_Y])
    scores = net.evaluate(X, y, loss=loss, metrics=["accuracy"])
    assert set(scores) == {"loss", "accuracy"}
    p = np_forward(net, X)
    reference = np_mse(p, y) if loss == "mse" else np_bce(p, y)
    assert scores["loss"] == pytest.approx(reference, rel=TOLERANCE[dtype])
    assert scores["accuracy"] == np_binary_accuracy(p, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("one_hot", [False, True])
def test_evaluate_cross_entropy_and_accuracy(backend, dtype, one_hot):
    X, labels = blobs(rows=30, features=4, classes=3, seed=2)
    net = classifier(backend, dtype=dtype)
    net.fit(X, labels, loss="cross_entropy", optimizer=pn.SGD(lr=0.05), epochs=2, verbose=0)
    y = np.eye(3)[labels] if one_hot else labels
    scores = net.evaluate(X, y, loss="cross_entropy", metrics=["accuracy"])
    logits = np_forward(net, X)
    assert scores["loss"] == pytest.approx(np_cross_entropy(logits, labels), rel=TOLERANCE[dtype])
    assert scores["accuracy"] == np_class_accuracy(logits, labels)


def test_evaluate_in_batches_equals_evaluate_at_once(backend):
    X, labels = blobs(rows=25, features=4, classes=3, seed=3)
    net = classifier(backend)
    whole = net.evaluate(X, labels, loss="cross_entropy", metrics=["accuracy"])
    parts = net.evaluate(X, labels, loss="cross_entropy", metrics=["accuracy"], batch_size=4)
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-12)
    assert parts["accuracy"] == whole["accuracy"]


def test_evaluate_defaults_to_the_loss_of_the_last_fit(backend):
    X, labels = blobs(rows=12, features=4, classes=3)
    net = classifier(backend)
    assert net.evaluate(X, np.eye(3)[labels])["loss"] == pytest.approx(
        np_mse(np_forward(net, X), np.eye(3)[labels]), rel=1e-12
    )
    net.fit(X, labels, loss="cross_entropy", epochs=1, verbose=0)
    assert net.evaluate(X, labels)["loss"] == pytest.approx(
        np_cross_entropy(np_forward(net, X), labels), rel=1e-12
    )


# -- a final Softmax with cross-entropy is fused --------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_final_softmax_with_cross_entropy_is_not_applied_twice(backend, dtype):
    X, labels = blobs(rows=24, features=4, classes=3, seed=4)
    net = classifier(backend, dtype=dtype, final=pn.Softmax())
    probs = pn.to_numpy(net.predict(X)).astype(np.float64)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    nll = float(-np.mean(np.log(probs[np.arange(24), labels])))
    scores = net.evaluate(X, labels, loss="cross_entropy", metrics=["accuracy"])
    assert scores["loss"] == pytest.approx(nll, rel=TOLERANCE[dtype] * 10)
    assert scores["accuracy"] == np_class_accuracy(probs, labels)
    # a doubled softmax would give a clearly different number
    doubled = np_cross_entropy(probs, labels)
    assert abs(doubled - nll) > 1e-3
    assert scores["loss"] != pytest.approx(doubled, rel=1e-4)


def test_fused_softmax_trains_with_the_cross_entropy_gradient(backend):
    """One full-batch SGD step on Dense + Softmax with cross-entropy: the reported loss is the
    NLL at the initial weights, and the update is lr * X^T (softmax - onehot) / rows."""
    X, labels = blobs(rows=20, features=4, classes=3, seed=5)
    net = pn.Sequential(pn.Dense(4, 3), pn.Softmax(), backend=backend, dtype="float64", seed=0)
    W0, b0 = net.get_weights()
    hist = net.fit(X, labels, loss="cross_entropy", optimizer=pn.SGD(lr=0.3), epochs=1, verbose=0)
    logits = X @ W0 + b0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    assert hist.history["loss"][0] == pytest.approx(
        float(-np.mean(np.log(p[np.arange(20), labels]))), rel=1e-12
    )
    delta = (p - np.eye(3)[labels]) / 20
    W1, b1 = net.get_weights()
    np.testing.assert_allclose(W1, W0 - 0.3 * X.T @ delta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b1, b0 - 0.3 * delta.sum(axis=0), rtol=1e-12, atol=1e-14)
