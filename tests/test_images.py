"""Conv2D and the 2-d pools: each layer alone against PyTorch's ``torch.nn.functional``
(after the NHWC <-> NCHW transposes, padding worked out here from the definitions) and against
central differences, in float64, on every backend; a whole CNN's gradients; shapes, configs,
errors, files, resumed training and mixed precision."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_gradients import RTOL, analytic_gradients, numeric_gradients
from test_layers import built, randomise, relative_error

import polynn as pn
from polynn.registry import build, encode

EPS = 1e-6
RTOL_FD = 1e-6
RTOL_TORCH = 1e-12

# name: (factory, input shape)
CASES = {
    "Conv2D": (lambda: pn.Conv2D(2, 3, 3), (2, 5, 6, 2)),
    "Conv2D-pairs": (lambda: pn.Conv2D(2, 3, (2, 3), stride=(2, 1), padding=(1, 2)), (2, 6, 5, 2)),
    "Conv2D-same-odd": (lambda: pn.Conv2D(2, 2, 3, padding="same"), (2, 4, 5, 2)),
    "Conv2D-same-even": (lambda: pn.Conv2D(2, 2, (4, 2), padding="same"), (1, 5, 5, 2)),
    "Conv2D-same-stride": (lambda: pn.Conv2D(1, 2, 3, stride=2, padding="same"), (2, 7, 6, 1)),
    "Conv2D-1x1-stride3": (lambda: pn.Conv2D(3, 2, 1, stride=3), (2, 7, 5, 3)),
    "MaxPool2D": (lambda: pn.MaxPool2D(2), (2, 6, 5, 3)),
    "MaxPool2D-overlap": (lambda: pn.MaxPool2D((3, 2), stride=(2, 1)), (2, 7, 5, 2)),
    "AveragePool2D": (lambda: pn.AveragePool2D(2), (2, 5, 6, 3)),
    "AveragePool2D-overlap": (lambda: pn.AveragePool2D(3, stride=(1, 2)), (2, 5, 7, 2)),
    "GlobalAveragePool2D": (pn.GlobalAveragePool2D, (2, 3, 4, 3)),
}  # fmt: skip


def setup(name, backend):
    factory, shape = CASES[name]
    layer = built(factory(), backend)
    randomise(layer, backend)
    return layer, np.random.default_rng(2).normal(size=shape)


def same_pads(size, kernel, stride):
    """TensorFlow's "SAME" (PyTorch's "same" for stride 1): ceil(size / stride) outputs,
    the odd padding at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def torch_forward(layer, x, params, torch):
    """``layer`` written with ``torch.nn.functional`` on (rows, height, width, channels)."""
    F = torch.nn.functional
    xc = x.permute(0, 3, 1, 2)  # NCHW
    if isinstance(layer, pn.Conv2D):
        W, b = params
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        if layer.padding == "same":
            top, bottom = same_pads(x.shape[1], kh, sh)
            left, right = same_pads(x.shape[2], kw, sw)
        else:
            (top, left), (bottom, right) = layer.padding, layer.padding
        xc = F.pad(xc, (left, right, top, bottom))
        y = F.conv2d(xc, W.permute(3, 2, 0, 1), b, stride=(sh, sw))
    elif isinstance(layer, pn.MaxPool2D):
        y = F.max_pool2d(xc, layer.pool_size, layer.stride)
    elif isinstance(layer, pn.AveragePool2D):
        y = F.avg_pool2d(xc, layer.pool_size, layer.stride)
    else:
        return F.adaptive_avg_pool2d(xc, 1).flatten(1)
    return y.permute(0, 2, 3, 1)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_same_padding_with_stride_1_is_pytorchs(backend):
    """Against ``F.conv2d(padding="same")`` itself, for an odd and an even kernel."""
    torch = pytest.importorskip("torch", reason="the PyTorch comparison needs torch")
    for size in (3, (2, 4)):
        layer = built(pn.Conv2D(2, 3, size, padding="same"), backend)
        randomise(layer, backend)
        x = np.random.default_rng(0).normal(size=(2, 5, 6, 2))
        W, b = (torch.from_numpy(pn.to_numpy(p.value)) for p in layer.params)
        want = torch.nn.functional.conv2d(
            torch.from_numpy(x).permute(0, 3, 1, 2), W.permute(3, 2, 0, 1), b, padding="same"
        ).permute(0, 2, 3, 1)
        got = pn.to_numpy(layer.forward(backend.from_numpy(x)))
        assert relative_error(got, want.numpy()) < RTOL_TORCH


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_equal_pytorch(backend, name):
    torch = pytest.importorskip("torch", reason="the PyTorch comparison needs torch")
    layer, x = setup(name, backend)
    out = layer.forward(backend.from_numpy(x))
    R = np.random.default_rng(3).normal(size=tuple(out.shape))
    grad_x = pn.to_numpy(layer.backward(backend.from_numpy(R)))

    tx = torch.tensor(x, requires_grad=True)
    tparams = [torch.tensor(pn.to_numpy(p.value), requires_grad=True) for p in layer.params]
    tout = torch_forward(layer, tx, tparams, torch)
    (tout * torch.from_numpy(R)).sum().backward()

    assert tuple(out.shape) == tuple(tout.shape)
    assert relative_error(pn.to_numpy(out), tout.detach().numpy()) < RTOL_TORCH
    assert relative_error(grad_x, tx.grad.numpy()) < RTOL_TORCH
    for p, t in zip(layer.params, tparams):
        assert relative_error(pn.to_numpy(p.grad), t.grad.numpy()) < RTOL_TORCH, p.name


def test_max_pool_gives_ties_gradient_as_pytorch(backend):
    """Windows with several equal maxima: the gradient goes to the first in row-major order."""
    torch = pytest.importorskip("torch", reason="the PyTorch comparison needs torch")
    x = np.random.default_rng(4).integers(0, 3, size=(2, 6, 6, 2)).astype(np.float64)
    for layer in (pn.MaxPool2D(2), pn.MaxPool2D(3, stride=1)):
        layer = built(layer, backend)
        out = layer.forward(backend.from_numpy(x))
        R = np.random.default_rng(5).normal(size=tuple(out.shape))
        got = pn.to_numpy(layer.backward(backend.from_numpy(R)))
        tx = torch.tensor(x, requires_grad=True)
        (torch_forward(layer, tx, [], torch) * torch.from_numpy(R)).sum().backward()
        # (overlapping windows add gradients in another order than PyTorch: rounding only)
        np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-14, atol=1e-15)


def numeric(f, a):
    """Central differences of ``f`` at ``a``."""
    out = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        values = []
        for sign in (1, -1):
            trial = a.copy()
            trial[idx] += sign * EPS
            values.append(f(trial))
        out[idx] = (values[0] - values[1]) / (2 * EPS)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_against_finite_differences(backend, name):
    layer, x = setup(name, backend)
    out = layer.forward(backend.from_numpy(x))
    R = np.random.default_rng(3).normal(size=tuple(out.shape))
    grad_x = pn.to_numpy(layer.backward(backend.from_numpy(R)))
    grads = [pn.to_numpy(p.grad) for p in layer.params]

    def value(x):
        return float(np.sum(pn.to_numpy(layer.forward(backend.from_numpy(x))) * R))

    assert relative_error(grad_x, numeric(value, x)) < RTOL_FD
    for p, g in zip(layer.params, grads):
        w = pn.to_numpy(p.value)

        def of_param(trial, p=p):
            p.value = backend.from_numpy(trial)
            return value(x)

        numeric_grad = numeric(of_param, w)
        p.value = backend.from_numpy(w)
        assert relative_error(g, numeric_grad) < RTOL_FD, p.name


def cnn(backend, dtype="float64", seed=0):
    return pn.Sequential(
        pn.Reshape((6, 5, 1)),
        pn.Conv2D(1, 3, 3, padding="same"), pn.Tanh(),
        pn.Conv2D(3, 2, (2, 3), stride=(2, 1), padding=(1, 0)), pn.ELU(),
        pn.MaxPool2D(2, stride=1), pn.AveragePool2D((1, 2)),
        pn.Flatten(), pn.Dense(6, 4), pn.Tanh(), pn.Dense(4, 3),
        backend=backend, dtype=dtype, seed=seed,
    )  # fmt: skip


def test_a_whole_cnn_against_finite_differences(backend):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(3, 30)), rng.integers(0, 3, size=3)
    net = cnn(backend)
    assert net.input_shape == (30,) and net.output_shape == (3,)
    for a, n in zip(
        analytic_gradients(net, X, y, "cross_entropy"),
        numeric_gradients(net, X, y, "cross_entropy"),
    ):
        assert relative_error(a, n) < RTOL


def test_images_of_any_size_enter_a_conv_model(backend):
    net = pn.Sequential(
        pn.Conv2D(2, 4, 3, stride=2, padding="same"), pn.ReLU(), pn.GlobalAveragePool2D(),
        pn.Dense(4, 2), backend=backend, seed=0,
    )  # fmt: skip
    assert net.input_shape == (None, None, 2)
    rng = np.random.default_rng(0)
    for shape in ((3, 3), (8, 5), (1, 1)):
        assert tuple(net.predict(rng.normal(size=(5, *shape, 2))).shape) == (5, 2)
    hist = net.fit(rng.normal(size=(6, 7, 4, 2)), rng.integers(0, 2, 6), loss="cross_entropy",
                   epochs=2, verbose=0)  # fmt: skip
    assert len(hist["loss"]) == 2


@pytest.mark.parametrize(
    "layers, pattern",
    [
        ((pn.Conv2D(2, 4, 3), pn.Dense(4, 2)),
         r"expects 4 inputs.*rows of shape \(height, width, 4\).*Flatten"),
        ((pn.Dense(6, 6), pn.Conv2D(1, 2, 3)),
         r"takes rows of shape \(height, width, 1\).*Reshape"),
        ((pn.Reshape((2, 3, 1)), pn.Conv2D(1, 2, 3)),
         r"at least 3x3 \(with its padding\); .*\(2, 3, 1\)"),
        ((pn.Reshape((3, 3, 2)), pn.Conv2D(3, 2, 2)), r"takes rows of shape \(height, width, 3\)"),
        ((pn.Reshape((3, 3, 2)), pn.MaxPool2D((2, 4))), r"at least 2x4; .*\(3, 3, 2\)"),
        ((pn.Reshape((6, 1)), pn.AveragePool2D(2)), r"takes rows of shape \(height, width, ch"),
        ((pn.Dense(3, 6), pn.GlobalAveragePool2D()), r"takes rows of shape \(height, width, ch"),
    ],
)  # fmt: skip
def test_shapes_that_do_not_chain(layers, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        pn.Sequential(*layers)
    assert isinstance(info.value, pn.PolynnValueError)


def test_inputs_of_the_wrong_shape_are_refused(backend):
    net = pn.Sequential(pn.Conv2D(2, 3, 3), pn.GlobalAveragePool2D(), backend=backend)
    with pytest.raises(ValueError, match=r"expects rows of shape \(height, width, 2\)"):
        net.predict(np.ones((4, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"at least 3x3.*\(4, 2, 5, 2\)") as info:
        net.predict(np.ones((4, 2, 5, 2)))
    assert isinstance(info.value, pn.PolynnValueError)


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: pn.Conv2D(1, 2, 0), ValueError),
        (lambda: pn.Conv2D(1, 2, (3, 0)), ValueError),
        (lambda: pn.Conv2D(1, 2, (3, 3, 3)), ValueError),
        (lambda: pn.Conv2D(1, 2, 3, stride=0), ValueError),
        (lambda: pn.Conv2D(1, 2, 3, padding=-1), ValueError),
        (lambda: pn.Conv2D(1, 2, 3, padding="valid"), ValueError),
        (lambda: pn.Conv2D(1, 2, 2.5), TypeError),
        (lambda: pn.MaxPool2D(0), ValueError),
        (lambda: pn.MaxPool2D(2, stride=(1, 0)), ValueError),
        (lambda: pn.AveragePool2D("2"), TypeError),
    ],
)
def test_bad_arguments(make, error):
    with pytest.raises(error) as info:
        make()
    assert isinstance(info.value, pn.PolynnError)


@pytest.mark.parametrize("name", list(CASES))
def test_config_rebuilds_the_layer(name):
    layer = CASES[name][0]()
    spec = encode(layer, "the layer")
    again = build("layer", json.loads(json.dumps(spec)))
    assert repr(again) == repr(layer)
    assert again.param_shapes() == layer.param_shapes()


def test_a_saved_cnn_resumes_as_if_it_never_stopped(backend, tmp_path):
    """Two epochs, saved, loaded and two more equal four epochs, to 1e-12 in float64."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(12, 30)), rng.integers(0, 3, size=12)
    kwargs = dict(loss="cross_entropy", batch_size=4, verbose=0)
    whole = cnn(backend)
    whole.fit(X, y, optimizer=pn.Adam(0.01), epochs=4, **kwargs)
    first = cnn(backend)
    first.fit(X, y, optimizer=pn.Adam(0.01), epochs=2, **kwargs)
    first.save(tmp_path / "cnn.npz")
    again = pn.load(tmp_path / "cnn.npz", backend=backend.name)
    assert repr(again.layers) == repr(first.layers)
    np.testing.assert_allclose(pn.to_numpy(again.predict(X)), pn.to_numpy(first.predict(X)))
    again.fit(X, y, epochs=2, **kwargs)
    for a, b in zip(again.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.filterwarnings("ignore:mixed precision on NumPy:UserWarning")
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_cnn_trains_in_mixed_precision(backend, policy):
    """Half-precision compute through every 2-d layer: outputs in the half type, parameters
    and gradients in float32, the losses close to float32's."""
    try:
        half = backend.compute_dtype(policy)
    except pn.PolynnValueError as exc:
        pytest.skip(str(exc))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 36)), rng.integers(0, 3, size=16)

    def model(dtype):
        return pn.Sequential(
            pn.Reshape((6, 6, 1)), pn.Conv2D(1, 4, 3, padding="same"), pn.ReLU(),
            pn.MaxPool2D(2), pn.Conv2D(4, 4, 2, stride=(1, 2)), pn.AveragePool2D((2, 1)),
            pn.GlobalAveragePool2D(), pn.Dense(4, 3), backend=backend, dtype=dtype, seed=0,
        )  # fmt: skip

    kwargs = dict(loss="cross_entropy", optimizer=pn.SGD(lr=0.05), epochs=3, batch_size=8)
    mixed, full = model(policy), model("float32")
    losses = mixed.fit(X, y, verbose=0, **kwargs)["loss"]
    np.testing.assert_allclose(losses, full.fit(X, y, verbose=0, **kwargs)["loss"], rtol=5e-2)
    f32 = backend.dtype("float32")
    assert mixed.forward(X).dtype == half
    assert all(p.value.dtype == f32 and p.grad.dtype == f32 for p in mixed.params)
