"""The new layers inside models: gradients of a whole CNN against finite differences, inputs
of shape (rows, length, channels) at the model's entry, copies and files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from test_gradients import RTOL, analytic_gradients, numeric_gradients, relative_error

import polynn as pn
from polynn import files
from polynn.backends import host


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
    """Every kind of layer that has no buffers; the next test saves BatchNorm's."""
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


def regularised(backend, seed=0):
    return pn.Sequential(
        pn.Dense(3, 6), pn.BatchNorm(6), pn.ReLU(), pn.Dropout(0.3),
        pn.Residual(pn.Dense(6, 6), pn.Dropout(0.2), pn.LayerNorm(6)),
        pn.Dense(6, 2),
        backend=backend, dtype="float64", seed=seed,
    )  # fmt: skip


@pytest.mark.parametrize("onto", ["same", "numpy"])
@pytest.mark.parametrize("how", ["npz", "safetensors", "pickle"])
def test_running_statistics_and_dropout_counters_survive_save_and_load(
    backend, how, onto, tmp_path
):
    """Format 2 keeps BatchNorm's running statistics (buffers) and each Dropout's key and
    step (layer state, nested ones included): predictions match, and training resumed from
    the file (on the same backend, or on NumPy) equals training that never stopped (the
    same masks), to 1e-12 in float64."""
    if how == "safetensors":
        pytest.importorskip("safetensors", reason="the safetensors extra is not installed")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(24, 3)), rng.integers(0, 2, size=24)
    kwargs = dict(loss="cross_entropy", batch_size=8, verbose=0)
    whole = regularised(backend)
    whole.fit(X, y, optimizer=pn.Adam(0.01), epochs=4, **kwargs)

    first = regularised(backend)
    first.fit(X, y, optimizer=pn.Adam(0.01), epochs=2, **kwargs)
    target = backend.name if onto == "same" else onto
    if how == "pickle":
        again = pickle.loads(pickle.dumps(first))
        again = again if onto == "same" else again.to(target)
    else:
        first.save(tmp_path / f"m.{how}")
        again = pn.load(tmp_path / f"m.{how}", backend=target)
    for a, b in zip(again.buffers, first.buffers):
        np.testing.assert_array_equal(pn.to_numpy(a.value), pn.to_numpy(b.value))
    assert [layer.get_state() for layer in again.layers] == [
        layer.get_state() for layer in first.layers
    ]
    assert again.layers[3].get_state()["step"] == 6  # 3 batches x 2 epochs
    np.testing.assert_allclose(pn.to_numpy(again.predict(X)), pn.to_numpy(first.predict(X)))

    again.fit(X, y, epochs=2, **kwargs)  # the file's optimizer, RNG and dropout steps
    # Onto another library: the bias of the Dense before BatchNorm has a zero gradient in
    # exact arithmetic (the normalisation removes it), so it holds rounding noise of about
    # 1e-10 that each library's matrix products round differently; the running mean adds it.
    rtol, atol = (1e-12, 1e-14) if onto == "same" else (1e-9, 1e-9)
    for a, b in zip(again.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    for a, b in zip(again.buffers, whole.buffers):
        np.testing.assert_allclose(pn.to_numpy(a.value), pn.to_numpy(b.value), rtol=rtol, atol=atol)


@pn.register(name="TestLayersScale")
class Scale(pn.Layer):
    """A user's layer: ``y = 2 x``."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad):
        return 2 * grad


def test_a_registered_layer_inside_a_residual_round_trips(backend, tmp_path):
    net = pn.Sequential(
        pn.Dense(3, 3), pn.Residual(pn.Dense(3, 3), Scale()), backend=backend, seed=0
    )
    net.save(tmp_path / "m.npz")
    again = pn.load(tmp_path / "m.npz", backend=backend.name)
    assert isinstance(again.layers[1].layers[1], Scale)
    X = np.ones((2, 3))
    np.testing.assert_allclose(pn.to_numpy(again.predict(X)), pn.to_numpy(net.predict(X)))


def test_a_file_naming_an_unknown_layer_inside_a_residual_is_refused(tmp_path):
    net = pn.Sequential(pn.Dense(3, 3), pn.Residual(pn.Dense(3, 3)), seed=0)
    config, arrays = files.state(net)
    config["layers"][1]["config"]["layers"][0]["type"] = "os.system"
    host.write_model(tmp_path / "m.npz", arrays, config, config["arrays"])
    with pytest.raises(pn.PolynnFileError, match=r"os\.system") as info:
        pn.load(tmp_path / "m.npz")
    assert isinstance(info.value, OSError)


@pytest.mark.filterwarnings("ignore:mixed precision on NumPy:UserWarning")
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_the_new_layers_train_in_mixed_precision(backend, policy):
    """Half-precision compute through every new layer: the outputs in the half type, the
    parameters, gradients and buffers in float32, the loss close to float32's."""
    try:
        half = backend.compute_dtype(policy)
    except pn.PolynnValueError as exc:
        pytest.skip(str(exc))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 10)), rng.integers(0, 3, size=16)

    def model(dtype):
        return pn.Sequential(
            pn.Reshape((10, 1)), pn.Conv1D(1, 4, 3, padding=1), pn.BatchNorm(4), pn.GELU(),
            pn.MaxPool1D(2), pn.GlobalAveragePool1D(), pn.Dropout(0.2), pn.Dense(4, 8),
            pn.LayerNorm(8), pn.Residual(pn.Dense(8, 8), pn.SiLU()), pn.ELU(), pn.Softplus(),
            pn.Dense(8, 3), backend=backend, dtype=dtype, seed=0,
        )  # fmt: skip

    kwargs = dict(loss="cross_entropy", optimizer=pn.SGD(lr=0.05), epochs=3, batch_size=8)
    mixed, full = model(policy), model("float32")
    losses = mixed.fit(X, y, verbose=0, **kwargs)["loss"]
    np.testing.assert_allclose(losses, full.fit(X, y, verbose=0, **kwargs)["loss"], rtol=5e-2)
    f32 = backend.dtype("float32")
    assert mixed.forward(X).dtype == half
    assert all(p.value.dtype == f32 and p.grad.dtype == f32 for p in mixed.params)
    assert all(b.value.dtype == f32 for b in mixed.buffers)


@pytest.mark.parametrize("between", [pn.Dropout(0.5), pn.BatchNorm(300), pn.LayerNorm(300)],
                         ids=["dropout", "batchnorm", "layernorm"])  # fmt: skip
def test_the_init_hint_passes_through_dropout_and_normalisation(between):
    """A Dense before Dropout or a normalisation, then ReLU, starts He-normal (std
    sqrt(2 / fan_in), unbounded); before Tanh, Glorot-uniform (within sqrt(6 / (in + out)))."""
    relu = pn.Sequential(pn.Dense(400, 300), between, pn.ReLU(), pn.Dense(300, 1), seed=0)
    tanh = pn.Sequential(pn.Dense(400, 300), type(between)(**between.get_config()), pn.Tanh(),
                         pn.Dense(300, 1), seed=0)  # fmt: skip
    he, glorot = relu.get_weights()[0], tanh.get_weights()[0]
    limit = np.sqrt(6.0 / 700)
    assert np.std(he) == pytest.approx(np.sqrt(2.0 / 400), rel=0.02)
    assert np.abs(he).max() > limit
    assert np.abs(glorot).max() <= limit
    assert np.std(glorot) == pytest.approx(limit / np.sqrt(3.0), rel=0.02)
