"""No silent wrong model after a restore or a resume: running statistics go back with the
weights, checkpoints and logs count epochs across resumes, extreme weights per sample train
as their ratios say, a loss that cannot take the outputs is refused, and ``predict`` and
``evaluate`` agree on a model whose arithmetic overflows. Each test is named after the
finding it guards."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from conftest import blobs

import polynn as pn


# -- 6. BatchNorm's running statistics go back with the weights --------------------------------
def bn_net(backend, seed=0):
    return pn.Sequential(pn.Dense(3, 4), pn.BatchNorm(4), pn.Tanh(), pn.Dense(4, 1),
                         backend=backend, dtype="float64", seed=seed)  # fmt: skip


class Recorder(pn.Callback):
    """Keeps NumPy copies of the weights and buffers at the start and after each epoch, and
    sets the learning rate to 1e30 after epoch ``blow_up``."""

    def __init__(self, blow_up=None):
        self.blow_up, self.states = blow_up, []

    def copy(self):
        model = self.model
        return model.get_weights(), [model.backend.to_numpy(b.value) for b in model.buffers]

    def on_train_begin(self, logs):
        self.states = [self.copy()]

    def on_epoch_end(self, epoch, logs):
        self.states.append(self.copy())
        if self.blow_up is not None and epoch + 1 == self.blow_up:
            self.model.optimizer.lr = 1e30


def numpy_bn_net(weights, buffers, X):
    """The network of ``bn_net`` in inference, in NumPy float64."""
    W1, b1, gamma, beta, W2, b2 = weights
    mean, var = buffers
    z = (X @ W1 + b1 - mean) / np.sqrt(var + 1e-5) * gamma + beta
    return np.tanh(z) @ W2 + b2


def test_restore_best_weights_restores_the_running_statistics_too(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]])
    recorder = Recorder()
    net = bn_net(backend)
    stop = pn.EarlyStopping(patience=2, restore_best_weights=True)
    # validated on the opposite targets: the better the fit, the worse the validation loss
    hist = net.fit(X, y, optimizer=pn.SGD(0.05), epochs=20, batch_size=8, shuffle=False,
                   validation_data=(X, -y), callbacks=[stop, recorder], verbose=0)  # fmt: skip
    assert stop.best_epoch == 0 and len(hist["loss"]) == 3  # stopped: epochs 2 and 3 worse
    weights, buffers = recorder.states[1]  # the end of epoch 1 (index 0)
    for got, want in zip(net.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    for buffer, want in zip(net.buffers, buffers):
        np.testing.assert_array_equal(pn.to_numpy(buffer.value), want)
    want = np.mean((numpy_bn_net(weights, buffers, X) + y) ** 2)
    assert net.evaluate(X, -y)["loss"] == pytest.approx(want, rel=1e-10)
    assert want == pytest.approx(hist["val_loss"][0], rel=1e-10)


@pytest.mark.parametrize("batch_size", [None, 8])
def test_divergence_restores_the_running_statistics_of_the_epoch_kept(backend, batch_size):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))
    net, recorder = bn_net(backend), Recorder(blow_up=3)
    with pytest.raises(pn.TrainingDivergedError, match="The model keeps") as info:
        net.fit(X, y, optimizer=pn.SGD(0.01), epochs=20, batch_size=batch_size,
                callbacks=[recorder], verbose=0)  # fmt: skip
    message = str(info.value)
    kept = 0 if "before this fit" in message else int(message.split("end of epoch ")[1][0])
    assert kept >= 3
    weights, buffers = recorder.states[kept]
    for got, want in zip(net.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    for buffer, want in zip(net.buffers, buffers):
        np.testing.assert_array_equal(pn.to_numpy(buffer.value), want)
    assert all(np.isfinite(b).all() for b in buffers)


# -- 7. checkpoints and logs count epochs across fits and resumes ------------------------------
def regression(rows=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    return X, X @ np.array([[1.0], [-1.0], [2.0]]) + 0.1 * rng.normal(size=(rows, 1))


def small(backend):
    return pn.Sequential(pn.Dense(3, 4), pn.Tanh(), pn.Dense(4, 1), backend=backend,
                         dtype="float64", seed=0)  # fmt: skip


def test_a_resumed_run_numbers_its_checkpoints_and_log_rows_on(backend, tmp_path):
    X, y = regression()
    net = small(backend)
    pattern, log = str(tmp_path / "ckpt-{epoch}.npz"), tmp_path / "log.csv"
    net.fit(X, y, optimizer=pn.Adam(0.01), epochs=3, verbose=0,
            callbacks=[pn.ModelCheckpoint(pattern, monitor="loss"), pn.CSVLogger(log)])  # fmt: skip
    first = {i: (tmp_path / f"ckpt-{i}.npz").read_bytes() for i in (1, 2, 3)}
    resumed = pn.load(tmp_path / "ckpt-3.npz", backend=backend)
    # a new optimizer too: the count is the model's, not the optimizer's
    resumed.fit(X, y, optimizer=pn.SGD(0.01), epochs=2, verbose=0,
                callbacks=[pn.ModelCheckpoint(pattern, monitor="loss"),
                           pn.CSVLogger(log, append=True)])  # fmt: skip
    for i in (1, 2, 3):
        assert (tmp_path / f"ckpt-{i}.npz").read_bytes() == first[i], f"ckpt-{i} overwritten"
    assert pn.load(tmp_path / "ckpt-5.npz").epochs_trained == 5
    with open(log, newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2", "3", "4"]


def test_save_best_only_after_a_resume_keeps_the_better_file(backend, tmp_path):
    X, y = regression()
    Xv, yv = regression(rows=12, seed=1)
    best = tmp_path / "best.npz"
    net = small(backend)
    net.fit(X, y, optimizer=pn.Adam(0.05), epochs=6, validation_data=(Xv, yv), verbose=0,
            callbacks=[pn.ModelCheckpoint(best, save_best_only=True)])  # fmt: skip
    saved = best.read_bytes()
    best_loss = pn.load(best).evaluate(Xv, yv)["loss"]
    resumed = pn.load(best, backend=backend)
    # trained on other targets: every epoch validates worse than the file
    hist = resumed.fit(X, -y, optimizer=pn.SGD(0.2), epochs=3, validation_data=(Xv, yv),
                       verbose=0,
                       callbacks=[pn.ModelCheckpoint(best, save_best_only=True)])  # fmt: skip
    assert min(hist["val_loss"]) > best_loss
    assert best.read_bytes() == saved


def test_appended_log_rows_keep_their_values_under_their_headers(backend, tmp_path):
    X, labels = blobs(rows=20, features=3, classes=2, seed=3)
    net = pn.Sequential(pn.Dense(3, 2), backend=backend, dtype="float64", seed=0)
    log = tmp_path / "log.csv"
    first = net.fit(X, labels, loss="cross_entropy", epochs=2, verbose=0,
                    callbacks=[pn.CSVLogger(log)])  # fmt: skip
    second = net.fit(X, labels, loss="cross_entropy", epochs=2, metrics=["accuracy"],
                     validation_data=(X, labels), verbose=0,
                     callbacks=[pn.CSVLogger(log, append=True)])  # fmt: skip
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    for row, hist, i in [(rows[0], first, 0), (rows[1], first, 1),
                         (rows[2], second, 0), (rows[3], second, 1)]:  # fmt: skip
        for key, values in hist.history.items():
            assert float(row[key]) == pytest.approx(values[i], rel=1e-12)
    assert rows[0]["accuracy"] == "" and rows[0]["val_loss"] == ""


# -- 8. binary cross-entropy takes probabilities -------------------------------------------------
@pytest.mark.parametrize("call", ["fit", "evaluate"])
def test_bce_on_outputs_that_are_not_probabilities_is_refused(backend, call):
    X, _ = regression(rows=8)
    y = (X[:, 0] > 0).astype(float)
    net = pn.Sequential(pn.Dense(3, 1), pn.Identity(), backend=backend, seed=0)
    before = net.get_weights()
    run = net.fit if call == "fit" else net.evaluate
    with pytest.raises(pn.PolynnValueError, match=r"ends with Dense.*end it with pn.Sigmoid"):
        run(X, y, loss="bce", **({"verbose": 0} if call == "fit" else {}))
    for got, want in zip(net.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    ok = pn.Sequential(pn.Dense(3, 1), pn.Sigmoid(), backend=backend, dtype="float64", seed=0)
    p = 1.0 / (1.0 + np.exp(-(X @ ok.get_weights()[0] + ok.get_weights()[1])))[:, 0]
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert ok.evaluate(X, y, loss="bce")["loss"] == pytest.approx(want, rel=1e-10)


# -- 9. extreme weights per sample ----------------------------------------------------------------
@pytest.mark.parametrize("scale", [1e38, 1e-40])
def test_extreme_sample_weights_train_as_their_ratios_say(backend, scale):
    X, y = regression()
    plain = pn.Sequential(pn.Dense(3, 1), backend=backend, seed=0).fit(X, y, epochs=3, verbose=0)
    weighted = pn.Sequential(pn.Dense(3, 1), backend=backend, seed=0)
    hist = weighted.fit(X, y, epochs=3, verbose=0, sample_weight=np.full(len(X), scale))
    np.testing.assert_allclose(hist["loss"], plain["loss"], rtol=1e-6)
    w = np.where(np.arange(len(X)) % 2 == 0, 1.0, 0.0)
    halves = pn.Sequential(pn.Dense(3, 1), backend=backend, seed=0)
    extreme = pn.Sequential(pn.Dense(3, 1), backend=backend, seed=0)
    a = halves.fit(X, y, epochs=3, verbose=0, sample_weight=w)
    b = extreme.fit(X, y, epochs=3, verbose=0, sample_weight=w * scale)
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-6)


def test_zero_weights_on_every_training_row_are_refused_by_name(backend):
    X, y = regression(rows=10)
    w = np.r_[np.zeros(8), np.ones(2)]  # only the validation rows weigh
    with pytest.raises(pn.PolynnValueError, match="weights of the training rows sum to 0"):
        small(backend).fit(X, y, sample_weight=w, validation_split=0.2, verbose=0)


def test_the_estimators_refuse_weights_whose_sum_overflows():
    sklearn = pytest.importorskip("polynn.sklearn", reason="needs scikit-learn")
    X, y = regression(rows=30)
    labels = (y[:, 0] > 0).astype(int)
    with pytest.raises(pn.PolynnValueError, match="sample_weight sums to inf"):
        sklearn.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2).fit(
            X, labels, sample_weight=np.full(30, 1e308)
        )


# -- 11. predict and evaluate agree, and name the weights ------------------------------------------
def test_predict_and_evaluate_both_refuse_an_overflowing_model_naming_its_weights(backend):
    net = pn.Sequential(pn.Dense(2, 3), pn.Dense(3, 1), backend=backend, seed=0)
    net.set_weights([np.full((2, 3), 1e20), np.zeros(3), np.full((3, 1), 1e20), np.zeros(1)])
    X, y = np.ones((4, 2)), np.ones(4)
    with pytest.raises(pn.PolynnValueError, match=r"largest weight is 1e\+20") as predicted:
        net.predict(X)
    with pytest.raises(pn.PolynnValueError, match=r"largest weight is 1e\+20") as evaluated:
        net.evaluate(X, y, loss="mse")
    assert "lower learning rate" in str(predicted.value) and "lower learning rate" in str(
        evaluated.value
    )


# -- 14. clearer errors ---------------------------------------------------------------------------
def test_class_weight_takes_the_keys_and_weights_numpy_gives(backend):
    X, labels = blobs(rows=20, features=3, classes=2, seed=4)
    keys = np.unique(labels)  # np.int64 keys, np.float32 weights
    numpy_weights = {keys[0]: np.float32(2.0), keys[1]: np.float64(1.0)}
    a = pn.Sequential(pn.Dense(3, 2), backend=backend, dtype="float64", seed=0)
    b = pn.Sequential(pn.Dense(3, 2), backend=backend, dtype="float64", seed=0)
    ha = a.fit(X, labels, loss="cross_entropy", class_weight=numpy_weights, epochs=2, verbose=0)
    hb = b.fit(X, labels, loss="cross_entropy", class_weight={0: 2.0, 1: 1.0}, epochs=2,
               verbose=0)  # fmt: skip
    assert ha["loss"] == hb["loss"]
    with pytest.raises(pn.PolynnValueError, match=r"got 0.5, not an integer"):
        a.fit(X, labels, loss="cross_entropy", class_weight={0.5: 1.0}, verbose=0)


def test_reduce_lr_on_plateau_never_raises_the_rate(backend):
    X, y = regression()
    net = small(backend)
    hist = net.fit(X, y, optimizer=pn.SGD(0.01), epochs=3, verbose=0,
                   callbacks=[pn.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=10.0,
                                                   min_lr=1.0)])  # fmt: skip
    assert hist["lr"] == [0.01, 0.01, 0.01]
    assert net.optimizer.lr == 0.01


@pytest.mark.parametrize("separator, kind", [("ab", pn.PolynnValueError), ("", pn.PolynnValueError),
                                             (5, pn.PolynnTypeError)])  # fmt: skip
def test_a_csv_separator_is_one_character_checked_up_front(tmp_path, separator, kind):
    with pytest.raises(kind, match="separator must be one character"):
        pn.CSVLogger(tmp_path / "log.csv", separator=separator)


def test_float16_overflow_of_the_inputs_is_not_blamed_on_the_learning_rate(backend):
    if backend.name == "array_api_strict":
        pytest.skip("array-api-strict has no float16")
    with pytest.warns(UserWarning) if backend.name == "numpy" else _nothing():
        net = pn.Sequential(pn.Dense(2, 1), backend=backend, dtype="mixed_float16", seed=0)
    X = np.full((4, 2), 60_000.0)  # fits float16 (65504), but not once summed in the network
    net.set_weights([np.ones((2, 1)), np.zeros(1)])
    with pytest.raises(pn.TrainingDivergedError) as info:
        net.fit(X, np.ones(4), epochs=2, verbose=0)
    message = str(info.value)
    assert "before any update" in message and "65504" in message
    assert "lower learning rate" not in message
    assert math.isfinite(pn.to_numpy(net.params[0].value).max())


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
