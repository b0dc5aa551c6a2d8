"""ONNX export: onnxruntime's predictions equal ``predict``'s (the ``tests-onnx`` nox session
installs onnx and onnxruntime; without them these tests skip)."""

from __future__ import annotations

import numpy as np
import pytest

import polynn as pn

TOLERANCE = {"float32": 1e-5, "float64": 1e-9}


def network(backend, dtype, final):
    return pn.Sequential(
        pn.Dense(3, 6), pn.ReLU(), pn.Dense(6, 5), pn.LeakyReLU(0.2), pn.Dense(5, 4),
        pn.Tanh(), pn.Sigmoid(), pn.Identity(), pn.Dense(4, 3), final(),
        backend=backend, dtype=dtype, seed=0,
    )  # fmt: skip


@pytest.mark.parametrize("final", [pn.Softmax, pn.Identity])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnxruntime_predicts_as_polynn(backend, tmp_path, dtype, final):
    ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime (nox -s tests-onnx)")
    pytest.importorskip("onnx", reason="needs onnx (polynn[onnx])")
    net = network(backend, dtype, final)
    X = np.random.default_rng(0).normal(size=(7, 3))
    net.fit(X, np.random.default_rng(1).normal(size=(7, 3)), epochs=2, verbose=0)
    net.export_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {"X": X.astype(dtype)})[0]
    assert got.dtype == np.dtype(dtype) and got.shape == (7, 3)
    want = pn.to_numpy(net.predict(X))
    np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_a_layer_without_an_onnx_form_is_refused(tmp_path):
    pytest.importorskip("onnx", reason="needs onnx (polynn[onnx])")

    class Double(pn.Layer):
        def forward(self, x):
            return 2 * x

        def backward(self, grad):
            return 2 * grad

    net = pn.Sequential(pn.Dense(2, 2), Double())
    with pytest.raises(pn.PolynnValueError, match="has no ONNX form"):
        net.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
