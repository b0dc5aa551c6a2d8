"""Reliability: what NumPy users pass and mean, values beyond the dtype, divergence wherever it
shows, saves that are killed, hostile files, and argument checks that always raise polynn
errors. Each test is named after the finding it guards."""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import signal
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import polynn as pn
from polynn.backends import host

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def net_for(backend, dtype="float32", seed=0):
    return pn.Sequential(
        pn.Dense(2, 3), pn.ReLU(), pn.Dense(3, 2), backend=backend, dtype=dtype, seed=seed
    )


X = np.array([[1.0, 2.0], [3.0, -4.0]])


# -- 1. np.matrix and masked arrays ----------------------------------------------------------
def test_matrix_input_predicts_like_a_plain_array(backend):
    net = net_for(backend)
    plain = pn.to_numpy(net.predict(X))
    np.testing.assert_array_equal(pn.to_numpy(net.predict(np.matrix(X))), plain)
    assert type(pn.to_numpy(np.matrix(X))) is np.ndarray


def test_matrix_targets_train_like_plain_ones(backend):
    runs = []
    for y in (np.array([[0.5, 1.0], [1.0, 0.0]]), np.matrix([[0.5, 1.0], [1.0, 0.0]])):
        net = net_for(backend, "float64")
        runs.append(net.fit(np.matrix(X), y, epochs=3, verbose=0).history["loss"])
    assert runs[0] == runs[1]


def test_masked_values_are_refused_and_a_full_mask_is_not_needed(backend):
    net = net_for(backend)
    hidden_nan = np.ma.array([[1.0, np.nan], [3.0, 4.0]], mask=[[0, 1], [0, 0]])
    with pytest.raises(pn.PolynnValueError, match="masked array with 1 masked entries"):
        net.predict(hidden_nan)
    np.testing.assert_array_equal(
        pn.to_numpy(net.predict(np.ma.array(X))), pn.to_numpy(net.predict(X))
    )


# -- 2. finite data beyond the model's dtype ---------------------------------------------------
@pytest.mark.parametrize("call", ["predict", "evaluate", "fit"])
def test_values_beyond_float32_are_refused_by_name(backend, call):
    net = net_for(backend)
    big = [[1e308, 1.0], [0.0, 1.0]]
    run = {
        "predict": lambda: net.predict(big),
        "evaluate": lambda: net.evaluate(big, [[0.0, 1.0], [1.0, 0.0]]),
        "fit": lambda: net.fit(big, [[0.0, 1.0], [1.0, 0.0]], verbose=0),
    }[call]
    with pytest.raises(pn.PolynnValueError, match=r"1e\+308.*beyond float32's range"):
        run()
    with pytest.raises(pn.PolynnValueError, match="beyond float32's range"):
        net.fit(X, [[1e300, 0.0], [0.0, 1.0]], verbose=0)


def test_the_same_values_fit_float64(backend):
    net = net_for(backend, "float64")
    assert np.isfinite(pn.to_numpy(net.predict([[1e300, 1.0]]))).all()


# -- 7. argument checks raise polynn errors of the right builtin kind ------------------------
@pytest.mark.parametrize(
    "call, kind",
    [
        (lambda net: pn.SGD(lr=10**400), pn.PolynnValueError),
        (lambda net: pn.SGD(lr=np.array([0.1, 0.2])), pn.PolynnTypeError),
        (lambda net: net.predict(X, batch_size=np.array([1, 2])), pn.PolynnTypeError),
        (lambda net: pn.Sequential(pn.Dense(2, 1), device=[0]), pn.PolynnTypeError),
        (lambda net: net.fit(X, X, callbacks=5, verbose=0), pn.PolynnTypeError),
        (lambda net: net.save(None), pn.PolynnTypeError),
        (lambda net: net.save("a\x00b.npz"), pn.PolynnValueError),
        (lambda net: pn.load("a\x00b.npz"), pn.PolynnValueError),
        (lambda net: net.predict(np.rec.fromarrays([np.ones(2), np.ones(2)])), pn.PolynnTypeError),
    ],
)
def test_bad_arguments_raise_polynn_errors(call, kind):
    with pytest.raises(kind):
        call(net_for("numpy"))


def test_a_layer_too_large_for_memory_says_how_many_bytes():
    with pytest.raises(pn.PolynnValueError, match=r"9,223,372,036,854,775,808 bytes"):
        pn.Sequential(pn.Dense(2**40, 2**20))


# -- 8. smaller ---------------------------------------------------------------------------------
def test_early_stopping_on_a_figure_never_logged_leaves_the_weights_alone(backend):
    net = net_for(backend)
    before = net.get_weights()
    with pytest.raises(pn.PolynnValueError, match="back to what they were"):
        net.fit(X, X, epochs=3, callbacks=[pn.EarlyStopping(monitor="val_loss")], verbose=0)
    for got, want in zip(net.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_set_weights_with_an_empty_array_names_the_shape(backend):
    net = net_for(backend)
    with pytest.raises(pn.PolynnValueError, match=r"must have shape \(2, 3\); got \(0, 3\)"):
        net.set_weights([np.zeros((0, 3)), *net.get_weights()[1:]])


def test_estimators_take_numpy_dtypes_and_refuse_momentum_1():
    sklearn = pytest.importorskip("polynn.sklearn", reason="needs scikit-learn")
    rng = np.random.default_rng(0)
    Xc, yc = rng.normal(size=(40, 3)), rng.integers(0, 2, size=40)
    clf = sklearn.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, dtype=np.float32)
    with pytest.warns(UserWarning, match="max_iter"):  # two epochs: a ConvergenceWarning
        assert clf.fit(Xc, yc).model_.dtype_name == "float32"
    with pytest.raises(pn.PolynnValueError, match=r"'momentum' .* a number in \[0.0, 1.0\)"):
        sklearn.MLPClassifier(solver="sgd", momentum=1.0).fit(Xc, yc)


# -- 4 and 6. killed saves leave nothing that accumulates; the umask is left alone ----------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked process in mid-save")
def test_killed_saves_leave_no_temporary_files(tmp_path, monkeypatch):
    target = tmp_path / "model.npz"
    net = pn.Sequential(pn.Dense(300, 300), pn.Dense(300, 300), seed=0)  # ~0.7 MB a save
    rng = np.random.default_rng(0)
    for _ in range(8):
        pid = os.fork()
        if pid == 0:  # the child saves until it is killed
            try:
                while True:
                    net.save(target)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.02, 0.2))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    assert host._unnamed_files_work(target) or left, "no save was caught in the middle"
    monkeypatch.setattr(host, "DEAD_AFTER_S", 0)
    net.save(target)  # removes what the killed processes left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    np.testing.assert_array_equal(pn.load(target).get_weights()[0], net.get_weights()[0])


def test_save_never_touches_the_umask(tmp_path, monkeypatch):
    def umask(_mask):
        raise AssertionError("save changed the process umask")

    monkeypatch.setattr(os, "umask", umask)
    net_for("numpy").save(tmp_path / "a.npz")
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def current_umask() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))


def test_temporary_files_of_running_processes_and_other_users_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "DEAD_AFTER_S", 0)
    target = tmp_path / "m.npz"
    alive = tmp_path / f".m.npz.{host._HOST}-{os.getpid()}-00aa.tmp"
    other = tmp_path / ".other.npz.abcdef-1-00aa.tmp"
    for path in (alive, other):
        path.write_bytes(b"partial")
    net_for("numpy").save(target)
    assert alive.exists() and other.exists()


# -- 5. hostile files cost little and never block ----------------------------------------------
def model_file(path, config_text, members, compression=zipfile.ZIP_STORED):
    """An archive shaped like a model file: ``config.npy`` and ``members`` (name -> bytes)."""
    buffer = io.BytesIO()
    np.save(buffer, np.array(config_text))
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("config.npy", buffer.getvalue())
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def config_of(in_features=2, out_features=1):
    return json.dumps({
        "format": "polynn", "format_version": 1, "dtype": "float64",
        "layers": [{"type": "Dense",
                    "config": {"in_features": in_features, "out_features": out_features}}],
    })  # fmt: skip


def npy_header(shape, dtype="<f8"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def refused_quickly(path):
    """``load`` refuses ``path`` within a second and with little memory; the error."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(pn.PolynnFileError) as info:
            pn.load(path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 8 * 2**20
    return str(info.value)


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    bomb = npy_header((2, 1)) + bytes(64 * 2**20)  # deflates to about 64 kB
    members = {"param_0.npy": bomb, "param_1.npy": npy_header((1,)) + bytes(8)}
    path = model_file(tmp_path / "bomb.npz", config_of(), members, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    assert "param_0.npy declares" in refused_quickly(path)


def test_a_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    huge = {"param_0.npy": npy_header((2**34,)), "param_1.npy": npy_header((1,))}
    assert "shape (17179869184,)" in refused_quickly(model_file(tmp_path / "h.npz",
                                                                config_of(), huge))  # fmt: skip
    consistent = {"param_0.npy": npy_header((2**17, 2**17)), "param_1.npy": npy_header((2**17,))}
    path = model_file(tmp_path / "c.npz", config_of(2**17, 2**17), consistent)
    assert "declares" in refused_quickly(path)  # its data would be 128 GiB; it holds none


def test_a_config_declaring_large_layers_is_checked_against_the_arrays_first(tmp_path):
    small = {"param_0.npy": npy_header((2, 1)) + bytes(16),
             "param_1.npy": npy_header((1,)) + bytes(8)}  # fmt: skip
    path = model_file(tmp_path / "big.npz", config_of(15000, 15000), small)
    assert "shape (15000, 15000)" in refused_quickly(path)


def test_deep_or_large_configs_are_refused(tmp_path):
    deep = model_file(tmp_path / "deep.npz", "[" * 100_000 + "]" * 100_000, {})
    assert "RecursionError" in refused_quickly(deep)
    large = model_file(tmp_path / "large.npz", " " * (2**20 + 1) + config_of(), {})
    assert "at most 1,048,576" in refused_quickly(large)


@pytest.mark.parametrize("kind", ["device", "symlink", "fifo"])
def test_only_regular_files_are_read(tmp_path, kind):
    if not os.path.exists("/dev/zero") and kind != "fifo":
        pytest.skip("no /dev/zero here")
    path = tmp_path / "m.npz"
    if kind == "device":
        path = pathlib.Path("/dev/zero")
    elif kind == "symlink":
        path.symlink_to("/dev/zero")
    else:
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes here")
        os.mkfifo(path)
    assert "not a regular file" in refused_quickly(path)


# -- 3. divergence is caught wherever it shows, and the last finite weights stay -------------
def kept_epoch(message):
    """The epoch whose weights the model kept, from a TrainingDivergedError (0: before fit)."""
    if "before this fit" in message:
        return 0
    return int(re.search(r"the weights of the end of epoch (\d+)", message).group(1))


class Recorder(pn.Callback):
    """Keeps the weights at the end of each epoch, and raises lr after ``blow_up`` epochs."""

    def __init__(self, blow_up=None):
        self.weights, self.blow_up = [], blow_up

    def on_train_begin(self, logs):
        self.weights = [self.model.get_weights()]

    def on_epoch_end(self, epoch, logs):
        self.weights.append(self.model.get_weights())
        if self.blow_up is not None and epoch + 1 == self.blow_up:
            self.model.optimizer.lr = 1e30


@pytest.mark.parametrize("batch_size", [None, 2])
def test_divergence_leaves_the_weights_of_the_last_finite_epoch(backend, batch_size):
    rng = np.random.default_rng(0)
    Xr, yr = rng.normal(size=(8, 2)), rng.normal(size=(8, 2))
    net = net_for(backend, "float64")
    recorder = Recorder(blow_up=3)
    with pytest.raises(pn.TrainingDivergedError, match="The model keeps") as info:
        net.fit(Xr, yr, optimizer=pn.SGD(0.01), epochs=20, batch_size=batch_size,
                callbacks=[recorder], verbose=0)  # fmt: skip
    kept = kept_epoch(str(info.value))
    assert 3 <= kept < len(recorder.weights)
    for got, want in zip(net.get_weights(), recorder.weights[kept]):
        np.testing.assert_array_equal(got, want)
    assert np.isfinite(pn.to_numpy(net.predict(Xr))).all()


def test_an_update_that_breaks_the_last_epoch_is_caught(backend):
    """The loss is computed before each update: after the last one only a check of the
    weights (or the validation loss) can see that it diverged."""
    net = net_for(backend, "float64")
    with pytest.raises(pn.TrainingDivergedError, match="after the last update") as info:
        net.fit(X, X, optimizer=pn.SGD(1e308), epochs=1, verbose=0)
    assert kept_epoch(str(info.value)) == 0
    assert np.isfinite(pn.to_numpy(net.predict(X))).all()
    with pytest.raises(pn.TrainingDivergedError, match="validation loss"):
        net.fit(X, X, optimizer=pn.SGD(1e306), epochs=1, validation_data=(X, X), verbose=0)


def test_a_clipped_loss_that_diverges_is_caught(backend):
    net = pn.Sequential(pn.Dense(2, 1), pn.Sigmoid(), backend=backend, dtype="float64", seed=0)
    with pytest.raises(pn.TrainingDivergedError):
        net.fit(X, [1.0, 0.0], loss="bce", optimizer=pn.SGD(1e308), epochs=3, verbose=0)
    assert np.isfinite(pn.to_numpy(net.predict(X))).all()


def test_save_refuses_weights_that_are_not_finite(backend, tmp_path):
    net = net_for(backend)
    net.save(tmp_path / "good.npz")
    net.params[0].value = net.params[0].value * float("nan")
    with pytest.raises(pn.PolynnValueError, match="not all finite"):
        net.save(tmp_path / "good.npz")
    assert np.isfinite(pn.load(tmp_path / "good.npz").get_weights()[0]).all()


def test_the_regressor_names_a_target_beyond_float32_and_refuses_strings():
    sklearn = pytest.importorskip("polynn.sklearn", reason="needs scikit-learn")
    Xr = np.random.default_rng(0).normal(size=(20, 2))
    y = np.ones(20)
    y[3] = 1e308
    with pytest.raises(pn.PolynnValueError, match="beyond float32's range"):
        sklearn.MLPRegressor(max_iter=2, dtype="float32").fit(Xr, y)  # float64 holds it
    with pytest.raises(pn.PolynnTypeError, match="y must hold real numbers"):
        sklearn.MLPRegressor(max_iter=2).fit(Xr, np.array(["a", "b"] * 10))
