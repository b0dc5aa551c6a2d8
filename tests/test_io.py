"""save / load: round trips between every pair of backends, the file format, atomic writes,
and refusal of truncated, foreign or pickled files (never unpickled)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import blobs

import polynn as pn
from polynn.backends import host

# Different libraries sum the matmuls in different orders: equal to a few ulps of the outputs.
TOLERANCE = {"float32": (1e-5, 1e-6), "float64": (1e-12, 1e-14)}


def trained_net(backend, dtype, seed=0):
    """A small classifier whose weights (biases included) have moved from their init."""
    X, labels = blobs(rows=24, features=4, classes=3, seed=seed)
    net = pn.Sequential(
        pn.Dense(4, 5), pn.Tanh(), pn.Dense(5, 3), backend=backend, dtype=dtype, seed=seed
    )
    net.fit(X, labels, loss="cross_entropy", optimizer=pn.SGD(lr=0.1), epochs=3, verbose=0)
    return net, X


def host_prediction(net, X):
    return pn.to_numpy(net.predict(X)).astype(np.float64)


def files_in(directory):
    return sorted(p.name for p in directory.iterdir())


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_between_backends(backend, other_backend, dtype, tmp_path):
    net, X = trained_net(backend, dtype)
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = pn.load(path, backend=other_backend.name)
    assert loaded.backend.name == other_backend.name
    assert loaded.dtype_name == dtype
    saved_weights = net.get_weights()
    loaded_weights = loaded.get_weights()
    assert len(loaded_weights) == len(saved_weights)
    for a, b in zip(loaded_weights, saved_weights):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    out = pn.to_numpy(loaded.predict(X))
    assert out.dtype == np.dtype(dtype)
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(out, host_prediction(net, X), rtol=rtol, atol=atol)


def test_load_with_dtype_override(backend, other_backend, tmp_path):
    net, X = trained_net(backend, "float64")
    net.save(tmp_path / "m.npz")
    loaded = pn.load(tmp_path / "m.npz", backend=other_backend, dtype="float32")
    assert loaded.dtype_name == "float32"
    for a, b in zip(loaded.get_weights(), net.get_weights()):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b.astype(np.float32))
    out = pn.to_numpy(loaded.predict(X))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, host_prediction(net, X), rtol=1e-5, atol=1e-6)


def test_every_layer_type_round_trips(backend, tmp_path):
    layers = [
        pn.Dense(3, 4),
        pn.Sigmoid(),
        pn.Dense(4, 4, init="he_normal"),
        pn.Tanh(),
        pn.Dense(4, 5),
        pn.ReLU(),
        pn.Dense(5, 4),
        pn.LeakyReLU(0.2),
        pn.Dense(4, 3),
        pn.Identity(),
        pn.Softmax(),
    ]
    net = pn.Sequential(*layers, backend=backend, dtype="float64", seed=3)
    X = np.random.default_rng(1).normal(size=(7, 3))
    net.save(tmp_path / "all.npz")
    loaded = pn.load(tmp_path / "all.npz", backend=backend)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in layers]
    assert loaded.layers[7].negative_slope == 0.2
    assert loaded.layers[2].init_name == "he_normal"
    assert [(d.in_features, d.out_features) for d in loaded.layers if isinstance(d, pn.Dense)] == [
        (3, 4),
        (4, 4),
        (4, 5),
        (5, 4),
        (4, 3),
    ]
    for a, b in zip(loaded.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(
        pn.to_numpy(loaded.predict(X)), host_prediction(net, X), rtol=1e-13, atol=1e-15
    )


def test_loaded_model_trains_like_the_original(backend, tmp_path):
    net, X = trained_net(backend, "float64")
    net.save(tmp_path / "m.npz")
    loaded = pn.load(tmp_path / "m.npz", backend=backend)
    _, labels = blobs(rows=24, features=4, classes=3, seed=0)
    kwargs = dict(loss="cross_entropy", epochs=2, verbose=0, shuffle=False)
    a = net.fit(X, labels, optimizer=pn.SGD(lr=0.05), **kwargs)
    b = loaded.fit(X, labels, optimizer=pn.SGD(lr=0.05), **kwargs)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-12)


# -- the file format ------------------------------------------------------------------------
def test_the_file_is_one_npz_with_a_json_config(backend, tmp_path):
    net, _ = trained_net(backend, "float32")
    path = tmp_path / "model.npz"
    net.save(path)
    assert files_in(tmp_path) == ["model.npz"]
    assert zipfile.is_zipfile(path)
    with np.load(path, allow_pickle=False) as data:
        names = set(data.files)
        config = json.loads(str(data["config"]))
        order = ["layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b"]
        arrays = [data[name] for name in order]
    assert names == {"config", *order}  # named for the layer and weight each array is
    assert config["arrays"] == order
    assert isinstance(config["format_version"], int) and config["format_version"] >= 1
    assert config["dtype"] == "float32"
    assert [layer["type"] for layer in config["layers"]] == ["Dense", "Tanh", "Dense"]
    assert config["layers"][0]["config"] == {"in_features": 4, "out_features": 5}
    for a, b in zip(arrays, net.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_replaces_an_existing_file(backend, tmp_path):
    path = tmp_path / "m.npz"
    first, _ = trained_net(backend, "float64", seed=0)
    second, _ = trained_net(backend, "float64", seed=1)
    first.save(path)
    second.save(path)
    assert files_in(tmp_path) == ["m.npz"]
    for a, b in zip(pn.load(path).get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- atomic writes --------------------------------------------------------------------------
class WriteFailed(Exception):
    pass


def test_a_write_failing_midway_leaves_the_old_file_intact(backend, tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    net, _ = trained_net(backend, "float32")
    net.save(path)
    original = path.read_bytes()

    def half_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 partial archive " * 50)
        raise WriteFailed("disk full, say")

    monkeypatch.setattr(host.np, "savez", half_savez)
    other, _ = trained_net(backend, "float32", seed=5)
    with pytest.raises(WriteFailed):
        other.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert files_in(tmp_path) == ["m.npz"]  # no temporary file left behind


def test_a_failing_rename_leaves_the_old_file_intact(backend, tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    net, _ = trained_net(backend, "float32")
    net.save(path)
    original = path.read_bytes()

    def failing_replace(src, dst):
        raise PermissionError(13, "refused by the test", str(dst))

    monkeypatch.setattr(host.os, "replace", failing_replace)
    other, _ = trained_net(backend, "float32", seed=5)
    with pytest.raises(OSError):
        other.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert files_in(tmp_path) == ["m.npz"]


def test_a_failed_first_write_leaves_nothing(backend, tmp_path, monkeypatch):
    def half_savez(file, *args, **kwargs):
        file.write(b"partial")
        raise WriteFailed("interrupted")

    monkeypatch.setattr(host.np, "savez", half_savez)
    net, _ = trained_net(backend, "float32")
    with pytest.raises(WriteFailed):
        net.save(tmp_path / "m.npz")
    monkeypatch.undo()
    assert files_in(tmp_path) == []


def test_saving_into_a_missing_directory_raises_oserror(backend, tmp_path):
    net, _ = trained_net(backend, "float32")
    with pytest.raises(OSError):
        net.save(tmp_path / "no" / "such" / "dir" / "m.npz")
    assert files_in(tmp_path) == []


def test_saving_into_a_missing_directory_is_a_polynn_file_error(backend, tmp_path):
    net, _ = trained_net(backend, "float32")
    target = tmp_path / "missing" / "m.npz"
    with pytest.raises(OSError) as info:
        net.save(target)
    assert isinstance(info.value, pn.PolynnFileError)
    assert "m.npz" in str(info.value) and ".tmp" not in str(info.value)


# -- files load refuses ---------------------------------------------------------------------
def assert_refused(path, *, backend=None):
    with pytest.raises(OSError) as info:
        pn.load(path, backend=backend)
    assert isinstance(info.value, pn.PolynnFileError)
    assert isinstance(info.value, pn.PolynnError)
    assert path.name in str(info.value)
    return info.value


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_load_refuses_a_truncated_file(backend, tmp_path, keep):
    net, _ = trained_net(backend, "float32")
    path = tmp_path / "m.npz"
    net.save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: int(len(data) * keep)])
    assert_refused(cut, backend=backend)


def test_load_refuses_a_corrupted_file(backend, tmp_path):
    net, _ = trained_net(backend, "float32")
    path = tmp_path / "m.npz"
    net.save(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))
    assert_refused(path, backend=backend)


def test_load_refuses_a_foreign_npz(backend, tmp_path):
    path = tmp_path / "foreign.npz"
    rng = np.random.default_rng(0)
    np.savez(path, weights=rng.normal(size=(3, 3)), bias=rng.normal(size=3))
    error = assert_refused(path, backend=backend)
    assert "not a polynn model file" in str(error)


def test_load_refuses_an_npz_with_a_config_of_another_program(backend, tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, config=np.array(json.dumps({"model": "resnet"})), param_0=np.ones(3))
    assert_refused(path, backend=backend)


def test_load_refuses_a_plain_npy(backend, tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.arange(10.0))
    assert_refused(path, backend=backend)


@pytest.mark.parametrize("content", [b"hello, I am text\n", b"", b"\x00" * 64])
def test_load_refuses_text_and_junk(backend, tmp_path, content):
    path = tmp_path / "notes.npz"
    path.write_bytes(content)
    assert_refused(path, backend=backend)


def test_load_refuses_a_directory(tmp_path):
    (tmp_path / "d.npz").mkdir()
    assert_refused(tmp_path / "d.npz")


TRIPPED = []


def _trip():
    TRIPPED.append("unpickled")
    return "gotcha"


class Trap:
    """Unpickling an instance calls ``_trip``, which records that it happened."""

    def __reduce__(self):
        return (_trip, ())


def polynn_config(layers_in=2):
    return {
        "format": "polynn",
        "format_version": 1,
        "dtype": "float64",
        "layers": [{"type": "Dense", "config": {"in_features": layers_in, "out_features": 1}}],
    }


@pytest.mark.parametrize("where", ["param", "config"])
def test_load_never_unpickles(backend, tmp_path, where):
    path = tmp_path / "evil.npz"
    trap = np.array([Trap(), Trap()], dtype=object)
    if where == "param":
        np.savez(path, config=np.array(json.dumps(polynn_config())), param_0=trap, param_1=trap)
    else:
        np.savez(path, config=trap)
    TRIPPED.clear()
    assert_refused(path, backend=backend)
    assert TRIPPED == []
    # The trap is real: loading the same file with pickling allowed does set the flag.
    with np.load(path, allow_pickle=True) as data:
        data["param_0" if where == "param" else "config"]
    assert TRIPPED


def test_load_refuses_a_future_format_version(backend, tmp_path):
    net, _ = trained_net(backend, "float32")
    path = tmp_path / "m.npz"
    net.save(path)
    with np.load(path, allow_pickle=False) as data:
        contents = {name: data[name] for name in data.files}
    config = json.loads(str(contents["config"]))
    config["format_version"] += 1
    contents["config"] = np.array(json.dumps(config))
    future = tmp_path / "future.npz"
    np.savez(future, **contents)
    error = assert_refused(future, backend=backend)
    assert f"format version {config['format_version']}" in str(error)
    assert "upgrade" in str(error)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c, w: (c["layers"].append({"type": "Evil", "config": {}}), w),
        lambda c, w: (c["layers"][0]["config"].update(bias=False), w),
        lambda c, w: (c.update(dtype="float16"), w),
        lambda c, w: (c.update(layers=7), w),
        lambda c, w: (c, w[:1]),
        lambda c, w: (c, [w[0].T, w[1]]),
        lambda c, w: (c, [w[0] * np.nan, w[1]]),
    ],
    ids=[
        "unknown-layer",
        "unknown-argument",
        "bad-dtype",
        "bad-layers",
        "missing-weights",
        "wrong-shape",
        "nan-weights",
    ],
)
def test_load_refuses_an_inconsistent_model(backend, tmp_path, edit):
    config = polynn_config(layers_in=3)
    weights = [np.ones((3, 1)), np.zeros(1)]
    _, weights = edit(config, weights)
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        config=np.array(json.dumps(config)),
        **{f"param_{i}": w for i, w in enumerate(weights)},
    )
    assert_refused(path, backend=backend)


def test_a_hand_written_file_loads(backend, tmp_path):
    """The format is what the design says: an independent writer produces a loadable file."""
    W, b = np.array([[1.0], [-2.0], [0.5]]), np.array([0.25])
    path = tmp_path / "hand.npz"
    np.savez(path, config=np.array(json.dumps(polynn_config(3))), param_0=W, param_1=b)
    net = pn.load(path, backend=backend)
    X = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(pn.to_numpy(net.predict(X)), X @ W + b, rtol=1e-15)


def test_load_of_a_missing_path(tmp_path):
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError) as info:
        pn.load(missing)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, pn.PolynnError)
    assert isinstance(info.value, pn.PolynnFileError)
    assert "nowhere.npz" in str(info.value)


def test_load_accepts_str_and_pathlike(backend, tmp_path):
    net, X = trained_net(backend, "float64")
    net.save(str(tmp_path / "a.npz"))
    for path in (str(tmp_path / "a.npz"), tmp_path / "a.npz", os.fspath(tmp_path / "a.npz")):
        loaded = pn.load(path, backend=backend)
        np.testing.assert_array_equal(loaded.get_weights()[0], net.get_weights()[0])


def test_load_with_bad_arguments_is_the_callers_error(tmp_path):
    net, _ = trained_net("numpy", "float32")
    net.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"unknown backend 'nope'") as info:
        pn.load(tmp_path / "m.npz", backend="nope")
    assert isinstance(info.value, pn.PolynnValueError)
    with pytest.raises(ValueError, match=r"unknown dtype 'int8'") as info:
        pn.load(tmp_path / "m.npz", dtype="int8")
    assert isinstance(info.value, pn.PolynnValueError)


# -- safetensors ------------------------------------------------------------------------------
def test_safetensors_round_trip(backend, tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy", reason="needs safetensors")
    net, X = trained_net(backend, "float64")
    path = tmp_path / "m.safetensors"
    net.save(path)
    tensors = safetensors.load_file(str(path))  # a plain safetensors file for other tools
    assert sorted(tensors) == ["layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b"]
    np.testing.assert_array_equal(tensors["layers.0.W"], net.get_weights()[0])  # (in, out)
    loaded = pn.load(path, backend=backend)
    np.testing.assert_array_equal(pn.to_numpy(loaded.predict(X)), pn.to_numpy(net.predict(X)))
    assert loaded.get_config() == net.get_config()


def test_safetensors_header_is_checked_against_the_config(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy", reason="needs safetensors")
    config = polynn_config(layers_in=3)
    bad = {"param_0": np.ones((1, 3)), "param_1": np.zeros(1)}  # W should be (3, 1)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(safetensors.save(bad, metadata={"polynn_config": json.dumps(config)}))
    error = assert_refused(path)
    assert "implies shape (3, 1)" in str(error)
    path.write_bytes(b"\xff" * 8 + b"{}")
    assert_refused(path)


# -- files written by earlier versions keep loading ----------------------------------------------
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_a_format_1_file_written_by_polynn_0_1_0_loads(backend):
    """``polynn-0.1.0-format1.npz`` was written by polynn 0.1.0 (Dense(3, 4), Tanh,
    Dense(4, 2), LeakyReLU(0.1), float64, trained a few steps); its predictions are checked
    against the stored weights evaluated in NumPy."""
    path = FIXTURES / "polynn-0.1.0-format1.npz"
    with np.load(path, allow_pickle=False) as data:
        W1, b1, W2, b2 = (data[f"param_{i}"] for i in range(4))
        assert json.loads(str(data["config"]))["format_version"] == 1
    net = pn.load(path, backend=backend)
    assert net.dtype_name == "float64" and net.matmul_precision == "highest"
    X = np.random.default_rng(3).normal(size=(5, 3))
    z = np.tanh(X @ W1 + b1) @ W2 + b2
    want = np.where(z > 0, z, 0.1 * z)
    np.testing.assert_allclose(pn.to_numpy(net.predict(X)), want, rtol=1e-12)


def test_a_format_2_file_loads_with_its_training_state(backend):
    """``polynn-format2.npz`` (Dense(3, 4), BatchNorm(4), Tanh, Dropout(0.25), Dense(4, 2),
    float64, two epochs of Adam with a StepDecay schedule on the cross-entropy) holds the
    weights, BatchNorm's running statistics and Adam's moments; its predictions are checked
    against those arrays evaluated in NumPy, and its training state against its config."""
    path = FIXTURES / "polynn-format2.npz"
    with np.load(path, allow_pickle=False) as data:
        config = json.loads(str(data["config"]))
        W1, b1, gamma, beta, W2, b2, mean, var = (data[f"param_{i}"] for i in range(8))
        moments = [data[f"param_{i}"] for i in range(8, 20)]
    assert config["format_version"] == 2
    net = pn.load(path, backend=backend)
    X = np.random.default_rng(4).normal(size=(5, 3))
    z = (X @ W1 + b1 - mean) / np.sqrt(var + 1e-5) * gamma + beta
    logits = np.tanh(z) @ W2 + b2
    np.testing.assert_allclose(pn.to_numpy(net.predict(X)), logits, rtol=1e-12)
    labels = np.array([0, 1, 1, 0, 1])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    scores = net.evaluate(X, labels)  # the file's loss and metrics
    assert scores["loss"] == pytest.approx(-log_p[np.arange(5), labels].mean(), rel=1e-12)
    assert scores["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == labels))
    optimizer = config["training"]["optimizer"]
    assert net.optimizer.iterations == optimizer["iterations"] == 4
    assert net.optimizer.lr == pytest.approx(0.05 * 0.1 ** (4 // 2))  # the schedule's place
    state = [pn.to_numpy(s[key]) for s in net.optimizer.state for key in ("m", "v")]
    for got, want in zip(state, moments):
        np.testing.assert_array_equal(got, want)
    assert net.layers[3].get_state() == config["layer_state"][3]
    net.fit(X, labels, epochs=1, verbose=0)  # and training goes on
    assert net.optimizer.iterations == 5
