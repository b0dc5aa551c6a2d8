"""Layers of your own with weights (``add_param``; the PReLU of ``examples/custom_layer.py``
against finite differences), the initialisers, a manual training loop built from the public
pieces (equal to ``fit``), and ``net(X)``."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from test_gradients import RTOL, numeric_gradients, relative_error

import polynn as pn

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name):
    """The module of ``examples/<name>.py``, loaded once (its folder on the path for
    ``_requires``): loading it again would register a second class of the same name."""
    module = sys.modules.get(f"polynn_example_{name}")
    if module is not None:
        return module
    sys.path.insert(0, str(EXAMPLES))
    try:
        path = EXAMPLES / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"polynn_example_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    sys.modules[spec.name] = module
    return module


PReLU = example("custom_layer").PReLU


def test_the_example_prelu_against_finite_differences(backend):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    net = pn.Sequential(pn.Dense(3, 4), PReLU(4, alpha=0.3), pn.Dense(4, 2), backend=backend,
                        dtype="float64", seed=1)  # fmt: skip
    weights = net.get_weights()
    weights[2] = np.array([0.1, -0.4, 0.7, 0.25])  # slopes of both signs
    net.set_weights(weights)
    loss = pn.MSE()
    out = net.forward(X)
    assert np.any(pn.to_numpy(out) != 0)
    _, grad = loss.value_and_grad(out, loss.targets(y, net))
    net.backward(grad)
    analytic = [pn.to_numpy(p.grad) for p in net.params]
    numeric = numeric_gradients(net, X, y, "mse")
    assert len(analytic) == 5  # W, b, alpha, W, b
    for a, n in zip(analytic, numeric):
        assert relative_error(a, n) < RTOL


def test_the_example_trains_saves_and_loads(backend, tmp_path):
    rng = np.random.default_rng(1)
    x, y = example("custom_layer").make_data(256, rng)
    net = pn.Sequential(pn.Dense(1, 1, init="ones"), PReLU(1), backend=backend, seed=0)
    net.fit(x, y, optimizer=pn.Adam(0.02), epochs=10, batch_size=64, verbose=0)
    assert abs(float(pn.to_numpy(net.layers[1].alpha.value)[0]) - 0.3) < 0.05
    net.save(tmp_path / "prelu.npz")
    again = pn.load(tmp_path / "prelu.npz", backend=backend.name)
    assert isinstance(again.layers[1], PReLU)
    np.testing.assert_array_equal(pn.to_numpy(again.predict(x)), pn.to_numpy(net.predict(x)))


@pn.register(name="TestShiftAndCount")
class ShiftAndCount(pn.Layer):
    """``y = x + shift`` with a trained shift, and a buffer counting the rows seen."""

    compilable = True

    def __init__(self, features: int) -> None:
        self.features = features
        self.shift = self.add_param("shift", (features,), init=0.5)
        self.seen = self.add_buffer("seen", 1)

    def forward(self, x):
        if self.training:
            self.seen.value = self.seen.value + x.shape[0]
        return x + self.shift.value

    def backward(self, grad):
        self.shift.grad = self.xp.sum(grad, axis=0)
        return grad

    def get_config(self):
        return {"features": self.features}


def test_declared_parameters_and_buffers_live_on_the_backend(backend, tmp_path):
    net = pn.Sequential(pn.Dense(2, 3), ShiftAndCount(3), backend=backend, dtype="float64",
                        seed=0)  # fmt: skip
    layer = net.layers[1]
    assert layer.param_shapes() == [(3,)] and layer.buffer_shapes() == [(1,)]
    assert net.params[2] is layer.shift and net.buffers == [layer.seen]
    assert backend.owns(layer.shift.value) and layer.shift.value.dtype == net.dtype
    np.testing.assert_array_equal(net.get_weights()[2], [0.5, 0.5, 0.5])
    X, y = np.ones((4, 2)), np.zeros((4, 3))
    net.fit(X, y, optimizer=pn.SGD(0.1), epochs=2, verbose=0)
    assert pn.to_numpy(layer.seen.value).tolist() == [8.0]
    net.save(tmp_path / "m.npz")
    again = pn.load(tmp_path / "m.npz", backend=backend.name)
    np.testing.assert_array_equal(pn.to_numpy(again.layers[1].seen.value), [8.0])
    np.testing.assert_array_equal(again.get_weights()[2], net.get_weights()[2])


def test_add_param_checks_its_arguments():
    layer = pn.Layer()
    with pytest.raises(pn.PolynnValueError, match=r"unknown param 'w' initialiser 'glorot'"):
        layer.add_param("w", (2, 2), init="glorot")
    with pytest.raises(pn.PolynnValueError, match=r"the shape of param 'w' must be at least 1"):
        layer.add_param("w", (0, 2))
    net = pn.Sequential(pn.Dense(2, 2), seed=0)
    with pytest.raises(pn.PolynnValueError, match=r"after the model built the layer"):
        net.layers[0].add_param("late", (2,))


# -- initialisers ---------------------------------------------------------------------------
INITS = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal",
         "orthogonal", "zeros", "ones"]  # fmt: skip


def drawn(backend, init, shape=(300, 200), **kwargs):
    net = pn.Sequential(pn.Dense(*shape, init=init, **kwargs), backend=backend, dtype="float64",
                        seed=7)  # fmt: skip
    return net.get_weights()


@pytest.mark.parametrize("init", INITS)
def test_each_initialiser_draws_the_same_values_on_every_backend(backend, init):
    np.testing.assert_array_equal(drawn(backend, init)[0], drawn("numpy", init)[0])


@pytest.mark.parametrize(
    "init, low, high, std",
    [
        ("glorot_uniform", -math.sqrt(6 / 500), math.sqrt(6 / 500), math.sqrt(2 / 500)),
        ("glorot_normal", None, None, math.sqrt(2 / 500)),
        ("he_uniform", -math.sqrt(6 / 300), math.sqrt(6 / 300), math.sqrt(2 / 300)),
        ("he_normal", None, None, math.sqrt(2 / 300)),
        ("lecun_normal", None, None, math.sqrt(1 / 300)),
    ],
)
def test_random_initialisers_have_their_spread(backend, init, low, high, std):
    """60,000 draws of a (300, 200) matrix: fan_in 300, fan_out 200."""
    W = drawn(backend, init)[0]
    assert abs(W.std() / std - 1) < 0.02 and abs(W.mean()) < 0.05 * std
    if low is not None:
        assert low <= W.min() and W.max() <= high and W.max() > 0.99 * high


@pytest.mark.parametrize("shape", [(300, 200), (20, 50)])
def test_orthogonal_gives_orthonormal_columns_or_rows(backend, shape):
    W = drawn(backend, "orthogonal", shape)[0]
    gram = W.T @ W if shape[0] >= shape[1] else W @ W.T
    np.testing.assert_allclose(gram, np.eye(min(shape)), atol=1e-12)


def test_constant_and_function_initialisers_and_bias_init(backend):
    seen = []

    def fill(shape, rng):
        seen.append(shape)
        return np.arange(math.prod(shape), dtype=float).reshape(shape) + rng.uniform()

    W, b = drawn(backend, 0.5, (3, 2), bias_init="ones")
    np.testing.assert_array_equal(W, np.full((3, 2), 0.5))
    np.testing.assert_array_equal(b, [1.0, 1.0])
    W, b = drawn(backend, fill, (3, 2), bias_init=fill)
    assert seen == [(3, 2), (2,)]
    np.testing.assert_allclose(W - W[0, 0], np.arange(6.0).reshape(3, 2), atol=1e-12)
    W2, _ = drawn(backend, fill, (3, 2), bias_init=fill)
    np.testing.assert_array_equal(W2, W)  # the model's seed: the same values again
    assert drawn(backend, "zeros", (3, 2), bias_init=-0.25)[1].tolist() == [-0.25, -0.25]


def test_conv1d_takes_init_and_bias_init(backend):
    net = pn.Sequential(pn.Reshape((8, 1)), pn.Conv1D(1, 4, kernel_size=3, init="orthogonal",
                        bias_init=0.1), backend=backend, dtype="float64", seed=0)  # fmt: skip
    W, b = net.get_weights()
    rows = W.reshape(3, 4)  # a (kernel_size * in_channels, out_channels) matrix, wide
    np.testing.assert_allclose(rows @ rows.T, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(b, np.full(4, 0.1))
    assert net.layers[1].get_config()["init"] == "orthogonal"


@pytest.mark.parametrize(
    "make, builtin, pattern",
    [
        (lambda: pn.Dense(2, 2, init="glorot_unifrom"), ValueError, r"mean 'glorot_uniform'"),
        (lambda: pn.Dense(2, 2, bias_init="he_normal"), ValueError, r"'zeros', 'ones'"),
        (lambda: pn.Dense(2, 2, init=[1, 2]), TypeError, r"a number or a function"),
        (lambda: pn.Sequential(pn.Dense(2, 2, init=lambda s, r: np.ones(3))), ValueError,
         r"must return finite values of shape \(2, 2\); it returned .* shape \(3,\)"),
    ],
)  # fmt: skip
def test_bad_initialisers_are_refused(make, builtin, pattern):
    with pytest.raises(builtin, match=pattern) as info:
        make()
    assert isinstance(info.value, pn.PolynnError)


def test_a_function_initialiser_is_not_saved_but_the_weights_are(backend, tmp_path):
    net = pn.Sequential(pn.Dense(2, 2, init=lambda shape, rng: np.eye(2)), backend=backend)
    assert "init" not in net.layers[0].get_config()
    net.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(pn.load(tmp_path / "m.npz").get_weights()[0], np.eye(2))


# -- a manual training loop -----------------------------------------------------------------
def classifier(backend):
    return pn.Sequential(
        pn.Dense(4, 8), pn.ReLU(), pn.Dropout(0.25), pn.Dense(8, 3),
        backend=backend, dtype="float64", seed=0,
    )  # fmt: skip


def test_a_manual_loop_of_the_public_pieces_equals_fit(backend):
    rng = np.random.default_rng(3)
    X, labels = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)
    settings = dict(lr=0.1, momentum=0.9, clipnorm=1.0)

    by_fit = classifier(backend)
    hist = by_fit.fit(X, labels, loss="cross_entropy", optimizer=pn.SGD(**settings), epochs=3,
                      batch_size=10, shuffle=False, verbose=0)  # fmt: skip

    net = classifier(backend)
    loss, opt = pn.CrossEntropy(), pn.SGD(**settings)
    opt.bind(net)
    T = loss.targets(labels, net)
    losses = []
    for _ in range(3):
        values = []
        for start in range(0, 30, 10):
            out = net.forward(X[start : start + 10], training=True)
            value, grad = loss.value_and_grad(out, T[start : start + 10, ...])
            net.backward(grad)
            opt.step()
            values.append(float(value))
        losses.append(sum(values) / 3)
    for a, b in zip(net.get_weights(), by_fit.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(losses, hist["loss"], rtol=1e-12)
    assert not any(layer.training for layer in net.layers)  # forward put the flags back


def test_the_model_is_callable_and_infers(backend):
    net = classifier(backend)
    X = np.random.default_rng(4).normal(size=(5, 4))
    out = net(X)
    assert net.backend.owns(out)
    np.testing.assert_array_equal(pn.to_numpy(out), pn.to_numpy(net.predict(X)))
    np.testing.assert_allclose(pn.to_numpy(net(X, batch_size=2)), pn.to_numpy(out), rtol=1e-12)
    trained = pn.to_numpy(net.forward(X, training=True))  # Dropout drops here
    assert not np.allclose(trained, pn.to_numpy(out))
    with pytest.raises(pn.PolynnTypeError, match=r"training must be True, False or None"):
        net.forward(X, training="yes")
