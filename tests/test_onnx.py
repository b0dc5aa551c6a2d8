"""ONNX export: onnxruntime's predictions equal ``predict``'s (the ``tests-onnx`` nox session
installs onnx and onnxruntime; without them these tests skip).

Every layer is exported in a small trained model; float64 is checked wherever onnxruntime
has float64 kernels for the operators (its CPU ``Conv`` and ``Softplus`` are float32
only, so those models are checked in float32 and their float64 runs skip, saying so).
"""

from __future__ import annotations

import numpy as np
import pytest

import polynn as pn

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def network(backend, dtype, final):
    return pn.Sequential(
        pn.Dense(3, 6), pn.ReLU(), pn.Dense(6, 5), pn.LeakyReLU(0.2), pn.Dense(5, 4),
        pn.Tanh(), pn.Sigmoid(), pn.Identity(), pn.Dense(4, 3), final(),
        backend=backend, dtype=dtype, seed=0,
    )  # fmt: skip


def session(net, path, dtype):
    """An onnxruntime session on ``net``'s export; a skip where onnxruntime has no float64
    kernel for one of its operators."""
    ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime (nox -s tests-onnx)")
    pytest.importorskip("onnx", reason="needs onnx (polynn[onnx])")
    net.export_onnx(path)
    try:
        return ort.InferenceSession(str(path))
    except Exception as exc:  # onnxruntime raises its own NotImplemented class
        if dtype == "float64" and "NOT_IMPLEMENTED" in str(exc):
            pytest.skip(f"onnxruntime {ort.__version__} has no float64 kernel here: {exc}")
        raise


def check(net, path, X, dtype):
    """onnxruntime's output on ``X`` equals ``predict``'s to the dtype's tolerance."""
    got = session(net, path, dtype).run(None, {"X": X.astype(dtype)})[0]
    want = pn.to_numpy(net.predict(X))
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("final", [pn.Softmax, pn.Identity])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnxruntime_predicts_as_polynn(backend, tmp_path, dtype, final):
    net = network(backend, dtype, final)
    X = np.random.default_rng(0).normal(size=(7, 3))
    net.fit(X, np.random.default_rng(1).normal(size=(7, 3)), epochs=2, verbose=0)
    check(net, tmp_path / "m.onnx", X, dtype)


def activation_model(act):
    """The activation on the raw inputs (which reach +-25) and again after a Dense."""
    return [act(), pn.Dense(4, 6), act(), pn.Dense(6, 3)]


MODELS = {
    "gelu": lambda: activation_model(pn.GELU),
    "silu": lambda: activation_model(pn.SiLU),
    "elu": lambda: activation_model(lambda: pn.ELU(0.7)),
    "softplus": lambda: activation_model(pn.Softplus),
    "dropout": lambda: [pn.Dense(4, 6), pn.Dropout(0.5), pn.Tanh(), pn.Dense(6, 3)],
    "layer_norm": lambda: [pn.Dense(4, 6), pn.LayerNorm(6, eps=1e-3), pn.Dense(6, 3)],
    "reshape_flatten": lambda: [pn.Reshape((2, 2)), pn.Tanh(), pn.Flatten(), pn.Dense(4, 3)],
    "softmax_sequences": lambda: [pn.Reshape((2, 2)), pn.Softmax(), pn.Flatten(), pn.Dense(4, 3)],
    "conv1d": lambda: [
        pn.Reshape((4, 1)), pn.Conv1D(1, 3, 3, stride=2, padding=2), pn.Flatten(),
        pn.Dense(9, 3),
    ],
    "max_pool1d": lambda: [
        pn.Reshape((4, 1)), pn.MaxPool1D(2, stride=1), pn.Flatten(), pn.Dense(3, 3),
    ],
    "global_average_pool1d": lambda: [
        pn.Reshape((2, 2)), pn.GlobalAveragePool1D(), pn.Dense(2, 3),
    ],
    "conv2d": lambda: [
        pn.Reshape((2, 2, 1)), pn.Conv2D(1, 3, (2, 3), stride=(1, 2), padding=(1, 2)),
        pn.Flatten(), pn.Dense(18, 3),
    ],
    "conv2d_same": lambda: [
        pn.Reshape((2, 2, 1)), pn.Conv2D(1, 2, (2, 3), stride=(2, 1), padding="same"),
        pn.Flatten(), pn.Dense(4, 3),
    ],
    "max_pool2d": lambda: [
        pn.Reshape((2, 2, 1)), pn.MaxPool2D((2, 1), stride=1), pn.Flatten(), pn.Dense(2, 3),
    ],
    "average_pool2d": lambda: [
        pn.Reshape((2, 2, 1)), pn.AveragePool2D((1, 2)), pn.Flatten(), pn.Dense(2, 3),
    ],
    "global_average_pool2d": lambda: [
        pn.Reshape((1, 2, 2)), pn.GlobalAveragePool2D(), pn.Dense(2, 3),
    ],
}  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_each_layer_exports_as_predict_computes(backend, tmp_path, dtype, name):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(9, 4)) * 3
    X[0] = [25.0, -25.0, 12.0, -12.0]  # large inputs: GELU's clip, stable ELU and Softplus
    net = pn.Sequential(*MODELS[name](), backend=backend, dtype=dtype, seed=0)
    net.fit(X, rng.normal(size=(9, 3)), optimizer=pn.Adam(0.01), epochs=2, verbose=0)
    check(net, tmp_path / "m.onnx", X, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sequences", [False, True], ids=["rows", "sequences"])
def test_batch_norm_exports_its_running_statistics(backend, tmp_path, dtype, sequences):
    rng = np.random.default_rng(3)
    if sequences:  # (rows, length, channels): the statistics are per channel
        layers = [pn.Reshape((3, 2)), pn.BatchNorm(2), pn.Flatten(), pn.Dense(6, 3)]
    else:
        layers = [pn.Dense(6, 5), pn.BatchNorm(5, momentum=0.3), pn.ReLU(), pn.Dense(5, 3)]
    net = pn.Sequential(*layers, backend=backend, dtype=dtype, seed=0)
    X = rng.normal(size=(16, 6)) * 2 + 1
    net.fit(X, rng.normal(size=(16, 3)), epochs=4, batch_size=8, verbose=0)
    mean, var = (pn.to_numpy(b.value) for b in net.buffers)
    assert not np.allclose(mean, 0.0) and not np.allclose(var, 1.0)  # trained, not initial
    check(net, tmp_path / "m.onnx", X, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_residual_with_nested_layers(backend, tmp_path, dtype):
    net = pn.Sequential(
        pn.Dense(4, 6),
        pn.Residual(
            pn.Dense(6, 6), pn.GELU(), pn.Dropout(0.2),
            pn.Residual(pn.LayerNorm(6), pn.Dense(6, 6), pn.Tanh()),
            pn.BatchNorm(6),
        ),
        pn.Residual(pn.SiLU()),
        pn.Dense(6, 3),
        backend=backend, dtype=dtype, seed=0,
    )  # fmt: skip
    rng = np.random.default_rng(4)
    X = rng.normal(size=(12, 4))
    net.fit(X, rng.normal(size=(12, 3)), epochs=3, batch_size=6, verbose=0)
    check(net, tmp_path / "m.onnx", X, dtype)


def test_an_mnist1d_style_cnn(backend, tmp_path):
    """float32 only: onnxruntime's CPU Conv has no float64 kernel."""
    net = pn.Sequential(
        pn.Reshape((40, 1)),
        pn.Conv1D(1, 8, 5, stride=2, padding=2), pn.ReLU(), pn.MaxPool1D(2),
        pn.Conv1D(8, 16, 3, padding=1), pn.ReLU(),
        pn.GlobalAveragePool1D(), pn.Dense(16, 10),
        backend=backend, dtype="float32", seed=0,
    )  # fmt: skip
    rng = np.random.default_rng(5)
    X = rng.normal(size=(32, 40))
    net.fit(X, rng.integers(0, 10, 32), loss="cross_entropy", batch_size=16, verbose=0)
    check(net, tmp_path / "m.onnx", X, "float32")


def test_a_digits_style_cnn(backend, tmp_path):
    """float32 only: onnxruntime's CPU Conv has no float64 kernel."""
    net = pn.Sequential(
        pn.Reshape((8, 8, 1)),
        pn.Conv2D(1, 4, 3, padding="same"), pn.ReLU(),
        pn.Conv2D(4, 6, 3, stride=2, padding=1), pn.ReLU(), pn.MaxPool2D(2),
        pn.Flatten(), pn.Dense(24, 10),
        backend=backend, dtype="float32", seed=0,
    )  # fmt: skip
    rng = np.random.default_rng(7)
    X = rng.uniform(size=(16, 64))
    net.fit(X, rng.integers(0, 10, 16), loss="cross_entropy", batch_size=8, verbose=0)
    check(net, tmp_path / "m.onnx", X, "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_embedding_takes_int64_ids(backend, tmp_path, dtype):
    net = pn.Sequential(
        pn.Embedding(12, 4), pn.GlobalAveragePool1D(), pn.Dense(4, 3),
        backend=backend, dtype=dtype, seed=0,
    )  # fmt: skip
    rng = np.random.default_rng(8)
    X = rng.integers(0, 12, size=(9, 5))
    net.fit(X, rng.integers(0, 3, 9), loss="cross_entropy", optimizer=pn.Adam(0.01), epochs=2,
            verbose=0)  # fmt: skip
    runner = session(net, tmp_path / "m.onnx", dtype)
    (x_info,) = runner.get_inputs()
    assert x_info.type == "tensor(int64)" and x_info.shape == ["rows", "X_axis1"]
    got = runner.run(None, {"X": X.astype(np.int64)})[0]
    np.testing.assert_allclose(got, pn.to_numpy(net.predict(X)), rtol=TOLERANCE[dtype],
                               atol=TOLERANCE[dtype])  # fmt: skip


def test_sequences_of_any_length(backend, tmp_path):
    """A model that takes sequences of any length exports a symbolic length."""
    net = pn.Sequential(
        pn.Conv1D(2, 4, 3, stride=2), pn.ReLU(), pn.GlobalAveragePool1D(), pn.Dense(4, 3),
        backend=backend, dtype="float32", seed=0,
    )  # fmt: skip
    assert net.input_shape == (None, 2)
    runner = session(net, tmp_path / "m.onnx", "float32")
    (x_info,) = runner.get_inputs()
    assert x_info.shape == ["rows", "X_axis1", 2]
    rng = np.random.default_rng(6)
    for length in (5, 12):
        X = rng.normal(size=(3, length, 2)).astype("float32")
        got = runner.run(None, {"X": X})[0]
        np.testing.assert_allclose(got, pn.to_numpy(net.predict(X)), rtol=1e-5, atol=1e-5)


class Double(pn.Layer):
    def forward(self, x):
        return 2 * x

    def backward(self, grad):
        return 2 * grad


class OwnDense(pn.Dense):
    """A subclass of a polynn layer: its forward may differ, so it has no ONNX form."""


@pytest.mark.parametrize(
    "layers, where, name",
    [
        (lambda: [pn.Dense(2, 2), Double()], "layer 1", "Double"),
        (lambda: [pn.Dense(2, 2), OwnDense(2, 2)], "layer 1", "OwnDense"),
        (
            lambda: [pn.Dense(2, 2), pn.Residual(pn.Tanh(), Double())],
            "layer 1 of the Residual at layer 1",
            "Double",
        ),
    ],
    ids=["custom", "subclass", "nested"],
)
def test_a_layer_without_an_onnx_form_is_refused(tmp_path, layers, where, name):
    pytest.importorskip("onnx", reason="needs onnx (polynn[onnx])")
    net = pn.Sequential(*layers())
    message = rf"^{where} \(.*\) has no ONNX form: {name} is not one of polynn's layers"
    with pytest.raises(pn.PolynnValueError, match=message):
        net.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_that_takes_rows_of_any_shape_is_refused(tmp_path):
    """ONNX fixes the number of the input's axes; this model leaves it open."""
    pytest.importorskip("onnx", reason="needs onnx (polynn[onnx])")
    net = pn.Sequential(pn.Flatten(), pn.Dense(12, 3))
    assert net.input_shape is None
    with pytest.raises(pn.PolynnValueError, match=r"takes X of any shape .*Flatten\(\)"):
        net.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_the_file_states_the_ir_version_its_opset_needs(tmp_path):
    """A runtime older than the onnx package opens the file: it states the oldest IR version
    that its opset needs (onnx's own table), not the package's newest."""
    onnx = pytest.importorskip("onnx", reason="needs onnx (polynn[onnx])")
    net = pn.Sequential(pn.Dense(2, 3), pn.ReLU(), pn.Dense(3, 1), seed=0)
    net.export_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    opsets = list(model.opset_import)
    assert model.ir_version == onnx.helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model, full_check=True)
