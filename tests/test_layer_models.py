"""The new layers inside models: gradients of a whole CNN against finite differences, inputs
of shape (rows, length, channels) at the model's entry, copies and files."""

from __future__ import annotations

import numpy as np
import pytest
from test_gradients import RTOL, analytic_gradients, numeric_gradients, relative_error

import polynn as pn


def cnn(backend, dtype="float64", seed=0):
    return pn.Sequential(
        pn.Reshape((10, 1)),
        pn.Conv1D(1, 3, 3, stride=2, padding=1), pn.ELU(),
        pn.MaxPool1D(2, stride=1),
        pn.Conv1D(3, 2, 2), pn.GELU(),
        pn.Flatten(),
        pn.Dense(6, 4), pn.LayerNorm(4),
        pn.Residual(pn.Dense(4, 4), pn.Tanh()), pn.SiLU(), pn.Softplus(),
        pn.Dense(4, 3),
        backend=backend, dtype=dtype, seed=seed,
    )  # fmt: skip


def test_a_whole_cnn_against_finite_differences(backend):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(4, 10)), rng.integers(0, 3, size=4)
    net = cnn(backend)
    assert net.input_shape == (10,) and net.output_shape == (3,)
    for a, n in zip(
        analytic_gradients(net, X, y, "cross_entropy"),
        numeric_gradients(net, X, y, "cross_entropy"),
    ):
        assert relative_error(a, n) < RTOL


def sequence_net(backend):
    return pn.Sequential(
        pn.Conv1D(2, 3, 3), pn.ReLU(), pn.GlobalAveragePool1D(), pn.Dense(3, 2),
        backend=backend, seed=0,
    )  # fmt: skip


def test_sequences_of_any_length_enter_a_conv_model(backend):
    net = sequence_net(backend)
    assert net.input_shape == (None, 2)
    rng = np.random.default_rng(0)
    for length in (3, 8, 11):
        assert tuple(net.predict(rng.normal(size=(5, length, 2))).shape) == (5, 2)
    hist = net.fit(rng.normal(size=(6, 8, 2)), rng.integers(0, 2, 6), loss="cross_entropy",
                   epochs=2, verbose=0)  # fmt: skip
    assert len(hist["loss"]) == 2


@pytest.mark.parametrize(
    "shape, pattern",
    [
        ((5, 8, 3), r"X has shape \(5, 8, 3\), but the first Conv1D layer expects rows of shape "
                    r"\(length, 2\): shape \(rows, length, 2\)"),
        ((5, 8), r"X has shape \(5, 8\).*\(rows, length, 2\)"),
        ((5, 2, 2), r"at least 3 steps"),
    ],
)  # fmt: skip
def test_inputs_of_the_wrong_shape_are_refused(backend, shape, pattern):
    net = sequence_net(backend)
    with pytest.raises(ValueError, match=pattern) as info:
        net.predict(np.ones(shape))
    assert isinstance(info.value, pn.PolynnValueError)


def test_flat_rows_into_a_reshape(backend):
    net = cnn(backend)
    with pytest.raises(ValueError, match=r"first Reshape layer expects 10 features per row"):
        net.predict(np.ones((2, 9)))


def test_a_saved_model_with_the_new_layers_predicts_the_same(backend, tmp_path):
    """Config and weights (format 1 keeps no buffers: this model has none)."""
    net = pn.Sequential(
        pn.Dense(6, 6), pn.Dropout(0.2), pn.Reshape((3, 2)), pn.Conv1D(2, 2, 2, padding=1),
        pn.Flatten(), pn.Dense(8, 6), pn.LayerNorm(6), pn.Residual(pn.Dense(6, 6), pn.ReLU()),
        pn.Dense(6, 2), backend=backend, dtype="float64", seed=1,
    )  # fmt: skip
    X = np.random.default_rng(0).normal(size=(5, 6))
    net.save(tmp_path / "m.npz")
    again = pn.load(tmp_path / "m.npz", backend="numpy")
    assert repr(again.layers) == repr(net.layers)
    np.testing.assert_allclose(pn.to_numpy(again.predict(X)), pn.to_numpy(net.predict(X)))


def test_to_copies_buffers_and_state(backend):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 1))
    net = pn.Sequential(
        pn.Dense(3, 4), pn.BatchNorm(4), pn.Dropout(0.5), pn.Dense(4, 1),
        backend=backend, dtype="float64", seed=0,
    )  # fmt: skip
    net.fit(X, y, epochs=2, batch_size=4, verbose=0)
    copy = net.to("numpy")
    for a, b in zip(copy.buffers, net.buffers):
        np.testing.assert_array_equal(pn.to_numpy(a.value), pn.to_numpy(b.value))
    assert (
        copy.layers[2].get_state()
        == net.layers[2].get_state()
        == {
            "key": net.layers[2].key,
            "step": 6,
        }
    )
    np.testing.assert_allclose(pn.to_numpy(copy.predict(X)), pn.to_numpy(net.predict(X)))
