"""The layers of issue 11, each alone: gradients (inputs and parameters) against central
differences in float64 and against PyTorch's autograd with the same weights, on every
backend; shape checks; configs that rebuild the layer.

Each case computes ``f = sum(layer(x) * R)`` for a fixed random ``R``: its gradient with
respect to ``x`` is ``layer.backward(R)``, and the parameters' are what that call leaves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import polynn as pn
from polynn.backends.host import HostRNG
from polynn.layers import LAYERS
from polynn.registry import build, encode

EPS = 1e-6
RTOL_FD = 1e-6
RTOL_TORCH = 1e-9


def built(layer, backend, training=False, seed=0):
    """``layer`` built alone on ``backend`` in float64 (weights from ``seed``)."""
    with backend.context():
        layer.build(backend, backend.dtype("float64"), HostRNG(seed), "glorot_uniform")
    layer.training = training
    return layer


def randomise(layer, backend, seed=1):
    """Give every parameter random values (a BatchNorm's scale starts at exactly one)."""
    rng = np.random.default_rng(seed)
    for p in layer.params:
        shape = tuple(p.value.shape)
        p.value = backend.from_numpy(rng.normal(size=shape), backend.dtype("float64"))


def relative_error(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-12)


# name: (factory, input shape, training); torch_forward(x, params, layer) where torch runs
CASES = {
    "GELU": (pn.GELU, (4, 5), False),
    "SiLU": (pn.SiLU, (4, 5), False),
    "ELU": (lambda: pn.ELU(alpha=0.7), (4, 5), False),
    "Softplus": (pn.Softplus, (4, 5), False),
    "Dropout-train": (lambda: pn.Dropout(0.4), (4, 5), True),
    "Dropout-infer": (lambda: pn.Dropout(0.4), (4, 5), False),
    "BatchNorm-train": (lambda: pn.BatchNorm(5), (6, 5), True),
    "BatchNorm-train-3d": (lambda: pn.BatchNorm(3), (3, 4, 3), True),
    "BatchNorm-infer": (lambda: pn.BatchNorm(5), (6, 5), False),
    "LayerNorm": (lambda: pn.LayerNorm(5), (4, 5), False),
    "LayerNorm-3d": (lambda: pn.LayerNorm(3), (2, 4, 3), False),
    "Residual": (lambda: pn.Residual(pn.Dense(5, 7), pn.Tanh(), pn.Dense(7, 5)), (4, 5), False),
    "Reshape": (lambda: pn.Reshape((3, 2)), (4, 6), False),
    "Flatten": (pn.Flatten, (4, 3, 2), False),
    "Conv1D": (lambda: pn.Conv1D(3, 4, 3), (2, 7, 3), False),
    "Conv1D-stride-pad": (lambda: pn.Conv1D(2, 3, 5, stride=2, padding=1), (2, 12, 2), False),
    "Conv1D-stride3": (lambda: pn.Conv1D(2, 3, 2, stride=3, padding=1), (2, 9, 2), False),
    "MaxPool1D": (lambda: pn.MaxPool1D(2), (2, 7, 3), False),
    "MaxPool1D-overlap": (lambda: pn.MaxPool1D(3, stride=2), (2, 9, 2), False),
    "GlobalAveragePool1D": (pn.GlobalAveragePool1D, (2, 5, 3), False),
}


def setup(name, backend):
    factory, shape, training = CASES[name]
    layer = built(factory(), backend, training)
    randomise(layer, backend)
    if isinstance(layer, pn.BatchNorm):  # running statistics other than 0 and 1
        rng = np.random.default_rng(7)
        layer.running_mean.value = backend.from_numpy(rng.normal(size=layer.features))
        layer.running_var.value = backend.from_numpy(rng.uniform(0.5, 2, size=layer.features))
    x = np.random.default_rng(2).normal(size=shape)
    return layer, x


def value_of(layer, backend, x, R, state):
    layer.set_state(state)  # the same dropout mask at every evaluation
    out = pn.to_numpy(layer.forward(backend.from_numpy(x)))
    return float(np.sum(out * R))


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_against_finite_differences(backend, name):
    layer, x = setup(name, backend)
    state = layer.get_state()
    out = layer.forward(backend.from_numpy(x))
    R = np.random.default_rng(3).normal(size=tuple(out.shape))
    grad_x = pn.to_numpy(layer.backward(backend.from_numpy(R)))
    grads = [pn.to_numpy(p.grad) for p in layer.params]

    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        values = []
        for sign in (1, -1):
            trial = x.copy()
            trial[idx] += sign * EPS
            values.append(value_of(layer, backend, trial, R, state))
        numeric[idx] = (values[0] - values[1]) / (2 * EPS)
    assert relative_error(grad_x, numeric) < RTOL_FD

    for p, g in zip(layer.params, grads):
        w = pn.to_numpy(p.value)
        numeric = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            values = []
            for sign in (1, -1):
                trial = w.copy()
                trial[idx] += sign * EPS
                p.value = backend.from_numpy(trial)
                values.append(value_of(layer, backend, x, R, state))
            numeric[idx] = (values[0] - values[1]) / (2 * EPS)
        p.value = backend.from_numpy(w)
        assert relative_error(g, numeric) < RTOL_FD, p.name


def torch_forward(name, layer, x, params, torch):
    """The same layer written with PyTorch's own functions, on float64 CPU tensors."""
    F = torch.nn.functional
    kind = name.split("-")[0]
    if kind == "GELU":
        return F.gelu(x, approximate="tanh")
    if kind == "SiLU":
        return F.silu(x)
    if kind == "ELU":
        return F.elu(x, alpha=layer.alpha)
    if kind == "Softplus":
        return F.softplus(x)
    if kind == "Dropout":
        if not layer.training:
            return x
        keep = torch.from_numpy(pn.to_numpy(layer.mask(tuple(x.shape), 0)))
        return x * keep / (1 - layer.rate)
    if kind in ("BatchNorm", "LayerNorm"):
        gamma, beta = params
        if kind == "LayerNorm":
            return F.layer_norm(x, (layer.features,), gamma, beta, eps=layer.eps)
        mean = torch.from_numpy(pn.to_numpy(layer.running_mean.value))
        var = torch.from_numpy(pn.to_numpy(layer.running_var.value))
        xc = x.transpose(1, -1)  # PyTorch keeps the channels on axis 1
        y = F.batch_norm(xc, mean, var, gamma, beta, training=layer.training, eps=layer.eps)
        return y.transpose(1, -1)
    if kind == "Residual":
        W1, b1, W2, b2 = params
        return x + torch.tanh(x @ W1 + b1) @ W2 + b2
    if kind in ("Reshape", "Flatten"):
        return x.reshape(x.shape[0], -1) if kind == "Flatten" else x.reshape(-1, *layer.shape)
    if kind == "Conv1D":
        W, b = params
        y = F.conv1d(
            x.transpose(1, 2), W.permute(2, 1, 0), b, stride=layer.stride, padding=layer.padding
        )
        return y.transpose(1, 2)
    if kind == "MaxPool1D":
        return F.max_pool1d(x.transpose(1, 2), layer.pool_size, layer.stride).transpose(1, 2)
    if kind == "GlobalAveragePool1D":
        return x.mean(dim=1)
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_equal_pytorch(backend, name):
    torch = pytest.importorskip("torch", reason="the PyTorch comparison needs torch")
    layer, x = setup(name, backend)
    state = layer.get_state()
    out = layer.forward(backend.from_numpy(x))
    R = np.random.default_rng(3).normal(size=tuple(out.shape))
    grad_x = pn.to_numpy(layer.backward(backend.from_numpy(R)))

    tx = torch.tensor(x, requires_grad=True)
    tparams = [torch.tensor(pn.to_numpy(p.value), requires_grad=True) for p in layer.params]
    layer.set_state(state)
    tout = torch_forward(name, layer, tx, tparams, torch)
    (tout * torch.from_numpy(R)).sum().backward()

    assert relative_error(pn.to_numpy(out), tout.detach().numpy()) < RTOL_TORCH
    assert relative_error(grad_x, tx.grad.numpy()) < RTOL_TORCH
    for p, t in zip(layer.params, tparams):
        assert relative_error(pn.to_numpy(p.grad), t.grad.numpy()) < RTOL_TORCH, p.name


@pytest.mark.parametrize("name", list(CASES))
def test_config_rebuilds_the_layer(name):
    """Through the names a file uses, and only those (``polynn.layers.LAYERS``)."""
    layer = CASES[name][0]()
    spec = encode(layer, "the layer")
    assert spec["type"] in LAYERS
    again = build("layer", json.loads(json.dumps(spec)))
    assert repr(again) == repr(layer)
    assert again.param_shapes() == layer.param_shapes()
    assert again.buffer_shapes() == layer.buffer_shapes()


@pytest.mark.parametrize("kind", [pn.GELU, pn.SiLU, pn.ELU, pn.Softplus])
def test_activations_stay_finite_for_large_inputs(backend, kind):
    """float32 inputs up to 3e38: finite outputs and gradients, with the limits expected
    (x for large x; 0 or -alpha for very negative x)."""
    with backend.context():
        layer = kind()
        layer.build(backend, backend.dtype("float32"), HostRNG(0), "glorot_uniform")
    x = np.array([[-3e38, -1e4, -50.0, 0.0, 50.0, 1e4, 3e38]], dtype=np.float32)
    out = pn.to_numpy(layer.forward(backend.from_numpy(x, backend.dtype("float32"))))
    grad = pn.to_numpy(layer.backward(backend.from_numpy(np.ones_like(x))))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(out[0, 4:], x[0, 4:], rtol=1e-6)
    np.testing.assert_allclose(grad[0, 4:], 1.0, rtol=1e-6)
    low = -1.0 if kind is pn.ELU else 0.0
    np.testing.assert_allclose(out[0, :2], low, atol=1e-6)


def test_gelu_is_the_tanh_approximation():
    """Against the formula in NumPy float64 (not the erf form, which differs by ~1e-3)."""
    x = np.linspace(-6, 6, 49).reshape(7, 7)
    backend = pn.backends.get("numpy")
    layer = built(pn.GELU(), backend)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(pn.to_numpy(layer.forward(x)), expected, rtol=1e-14, atol=1e-15)


def test_conv1d_equals_a_numpy_loop(backend):
    """Conv1D with stride and padding against the definition, looped in NumPy float64."""
    layer = built(pn.Conv1D(3, 4, kernel_size=3, stride=2, padding=2), backend)
    randomise(layer, backend)
    x = np.random.default_rng(0).normal(size=(2, 9, 3))
    W, b = (pn.to_numpy(p.value) for p in layer.params)
    padded = np.pad(x, ((0, 0), (2, 2), (0, 0)))
    length = (9 + 4 - 3) // 2 + 1
    expected = np.zeros((2, length, 4))
    for j in range(length):
        for k in range(3):
            expected[:, j, :] += padded[:, 2 * j + k, :] @ W[k]
    expected += b
    np.testing.assert_allclose(pn.to_numpy(layer.forward(backend.from_numpy(x))), expected)


def test_residual_lists_its_weights_in_place(backend):
    net = pn.Sequential(
        pn.Dense(3, 4),
        pn.Residual(pn.Dense(4, 4), pn.Tanh()),
        pn.Dense(4, 2),
        backend=backend,
        seed=0,
    )
    shapes = [w.shape for w in net.get_weights()]
    assert shapes == [(3, 4), (4,), (4, 4), (4,), (4, 2), (2,)]


@pytest.mark.parametrize(
    "layers, pattern",
    [
        ((pn.Dense(8, 4),), r"must give the shape they take.*take 8 and give 4"),
        ((pn.Flatten(), pn.Dense(4, 4)), None),
        ((pn.Dense(4, 4), pn.ReLU()), None),
    ],
    ids=["narrowing", "flatten-first", "square"],
)
def test_residual_checks_its_widths(layers, pattern):
    if pattern is None:
        pn.Residual(*layers)
        return
    with pytest.raises(ValueError, match=pattern) as info:
        pn.Residual(*layers)
    assert isinstance(info.value, pn.PolynnError)


def test_residual_in_a_model_checks_the_width_it_is_given():
    with pytest.raises(ValueError, match=r"layer 1: .*Residual adds its input") as info:
        pn.Sequential(pn.Dense(3, 5), pn.Residual(pn.Flatten(), pn.Dense(5, 4)))
    assert isinstance(info.value, pn.PolynnValueError)


@pytest.mark.parametrize(
    "layers, pattern",
    [
        ((pn.Conv1D(2, 4, 3), pn.Dense(4, 2)), r"expects 4 inputs.*rows of shape.*Flatten"),
        ((pn.Dense(6, 6), pn.Conv1D(1, 2, 3)), r"takes rows of shape \(length, 1\).*Reshape"),
        ((pn.Reshape((5, 2)), pn.Conv1D(2, 2, 7)), r"at least 7 steps; .*gives 5"),
        ((pn.Dense(3, 6), pn.Reshape((4, 2))), r"needs rows of 8 values.*gives 6"),
        ((pn.Dense(3, 6), pn.BatchNorm(5)), r"normalises 5 features.*gives 6"),
        ((pn.Dense(3, 6), pn.MaxPool1D(2)), r"takes rows of shape \(length, channels\)"),
        ((pn.Reshape((6, 1)), pn.MaxPool1D(7)), r"at least 7 steps"),
    ],
)
def test_shapes_that_do_not_chain(layers, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        pn.Sequential(*layers)
    assert isinstance(info.value, pn.PolynnValueError)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (lambda: pn.Dropout(1.0), ValueError),
        (lambda: pn.Dropout(-0.1), ValueError),
        (lambda: pn.Dropout("0.5"), TypeError),
        (lambda: pn.BatchNorm(0), ValueError),
        (lambda: pn.BatchNorm(4, momentum=1.5), ValueError),
        (lambda: pn.LayerNorm(4, eps=0.0), ValueError),
        (lambda: pn.Conv1D(1, 2, 0), ValueError),
        (lambda: pn.Conv1D(1, 2, 3, stride=0), ValueError),
        (lambda: pn.Conv1D(1, 2, 3, padding=-1), ValueError),
        (lambda: pn.MaxPool1D(0), ValueError),
        (lambda: pn.Reshape(40), TypeError),
        (lambda: pn.Reshape((4, 0)), ValueError),
        (lambda: pn.Residual(), ValueError),
        (lambda: pn.Residual(pn.Dense), TypeError),
        (lambda: pn.ELU(alpha=-1.0), ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error) as info:
        kwargs()
    assert isinstance(info.value, pn.PolynnError)


def test_softmax_normalises_the_last_axis_of_sequences(backend):
    """On (rows, length, channels) inputs each step's channels sum to 1 (as PyTorch's
    ``softmax(dim=-1)``), against NumPy float64."""
    x = np.random.default_rng(5).normal(size=(3, 4, 5))
    net = pn.Sequential(pn.Reshape((4, 5)), pn.Softmax(), backend=backend, dtype="float64")
    got = pn.to_numpy(net.predict(x.reshape(3, 20)))
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(axis=-1, keepdims=True), rtol=1e-13)
