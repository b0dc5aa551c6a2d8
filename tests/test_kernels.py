"""The kernel seam: every primitive against a NumPy float64 reference written from the
equations, and every fast path against the array API default on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

import polynn as pn
from polynn.kernels import ACTIVATIONS, Act, Kernels, Scalars
from polynn.layers import Fused, Parameter

# Relative tolerances against float64 references: float32 rounding, and float64's.
RTOL = {"float32": 2e-6, "float64": 1e-13}
SLOPE = 0.1


def reference_activation(name, v):
    """``(f(v), f'(v))`` in NumPy float64."""
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-v))
        return s, s * (1.0 - s)
    if name == "tanh":
        t = np.tanh(v)
        return t, 1.0 - t * t
    if name == "relu":
        return np.maximum(v, 0.0), (v > 0).astype(float)
    if name == "leaky_relu":
        return np.where(v > 0, v, SLOPE * v), np.where(v > 0, 1.0, SLOPE)
    raise AssertionError(name)


def inputs(seed=0, rows=7, cols=5):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(rows, cols))
    z[0, :2] = 0.0  # the kink of the ReLU family
    return z, rng.normal(size=cols), rng.normal(size=(rows, cols))


def on(backend, a, dtype):
    return backend.from_numpy(np.asarray(a), dtype)


def close(got, want, dtype, scale=1.0):
    np.testing.assert_allclose(pn.to_numpy(got), want, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def default_kernels(backend):
    return Kernels(backend.xp, backend.device)


def fast_or_skip(backend):
    if type(backend.kernels) is Kernels:
        pytest.skip(f"backend {backend.name!r} uses the array API defaults: no fast path")
    return backend.kernels


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_the_reference(backend, name, dtype):
    z, b, g = inputs()
    forward, backward = backend.kernels.activation(name, backend.dtype(dtype), negative_slope=SLOPE)
    for bias in (None, b):
        v = z if bias is None else z + bias
        f, df = reference_activation(name, v)
        y, saved = forward(on(backend, z, dtype), None if bias is None else on(backend, b, dtype))
        close(y, f, dtype, scale=np.abs(f).max())
        close(backward(on(backend, g, dtype), saved), g * df, dtype, scale=np.abs(g).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_standalone_activation_leaves_its_input_alone(backend, dtype):
    """Without a bias the input is another layer's output (kept for its backward pass)."""
    z, _, _ = inputs()
    x = on(backend, z, dtype)
    for name in ACTIVATIONS:
        backend.kernels.activation(name, backend.dtype(dtype))[0](x, None)
        np.testing.assert_array_equal(pn.to_numpy(x), z.astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bias_grad_and_cross_entropy_match_the_reference(backend, dtype):
    z, _, g = inputs(rows=9)
    # Sums of 9 (here) and 64 (below) rows: their rounding depends on the order of the terms.
    close(backend.kernels.bias_grad(on(backend, g, dtype)), g.sum(0), dtype, scale=100.0)
    target = np.eye(5)[np.random.default_rng(1).integers(0, 5, size=9)]
    value, grad = backend.kernels.softmax_cross_entropy(
        on(backend, z, dtype), on(backend, target, dtype)
    )
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    close(value, -np.mean(np.sum(target * np.log(p), axis=1)), dtype, scale=10.0)
    close(grad, (p - target) / 9, dtype)


def sgd_reference(w, grads, lr, momentum, nesterov, decay):
    v = None
    for g in grads:
        g = g + decay * w
        if momentum:
            v = g if v is None else momentum * v + g
            g = g + momentum * v if nesterov else v
        w = w - lr * g
    return w


def adam_reference(w, grads, lr, b1, b2, eps, decay):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w * (1 - lr * decay)
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w


def run_updates(kernels, backend, dtype, which, settings, w, grads):
    """Apply ``grads`` in turn through ``kernels``' update ``which``; the final weights."""
    p, state = Parameter(on(backend, w, dtype), "W"), {}
    scalars = Scalars(backend.xp, backend.dtype(dtype), backend.device, backend.inplace)
    scalars.set(settings["lr"], 0)
    for g in grads:
        p.grad = on(backend, g, dtype)
        getattr(kernels, which)([p], [state], scalars, *settings["args"])
    return pn.to_numpy(p.value)


UPDATES = {
    "sgd": {"lr": 0.1, "args": (0.0, False, 0.0)},
    "sgd-decay": {"lr": 0.1, "args": (0.0, False, 0.01)},
    "momentum": {"lr": 0.1, "args": (0.9, False, 0.0)},
    "nesterov-decay": {"lr": 0.1, "args": (0.9, True, 0.01)},
    "adam": {"lr": 0.01, "args": (0.9, 0.999, 1e-8, 0.0)},
    "adam-decay": {"lr": 0.01, "args": (0.9, 0.99, 1e-6, 0.1)},
}


def update_case(name):
    rng = np.random.default_rng(5)
    which = "adam" if name.startswith("adam") else "sgd"
    return (
        which,
        UPDATES[name],
        rng.normal(size=(4, 3)),
        [rng.normal(size=(4, 3)) for _ in range(4)],
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", UPDATES)
def test_optimizer_updates_match_the_reference(backend, name, dtype):
    which, settings, w, grads = update_case(name)
    got = run_updates(backend.kernels, backend, dtype, which, settings, w, grads)
    reference = sgd_reference if which == "sgd" else adam_reference
    want = reference(w, grads, settings["lr"], *settings["args"])
    np.testing.assert_allclose(got, want, rtol=50 * RTOL[dtype], atol=50 * RTOL[dtype])


# -- fast paths against the defaults -------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_fast_activation_equals_the_default(backend, name, dtype):
    fast = fast_or_skip(backend)
    z, b, g = inputs(seed=2, rows=33, cols=17)
    pairs = [
        k.activation(name, backend.dtype(dtype), negative_slope=SLOPE)
        for k in (fast, default_kernels(backend))
    ]
    for bias in (None, b):
        outs = []
        for forward, backward in pairs:
            y, saved = forward(
                on(backend, z, dtype), None if bias is None else on(backend, b, dtype)
            )
            outs.append((pn.to_numpy(y), pn.to_numpy(backward(on(backend, g, dtype), saved))))
        for got, want in zip(*outs):
            np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_gradients_equal_the_default(backend, dtype):
    fast = fast_or_skip(backend)
    default = default_kernels(backend)
    z, _, g = inputs(seed=3, rows=64, cols=10)
    target = on(backend, np.eye(10)[np.arange(64) % 10], dtype)
    got, want = fast.bias_grad(on(backend, g, dtype)), default.bias_grad(on(backend, g, dtype))
    close(got, pn.to_numpy(want), dtype, scale=100.0)
    (v1, g1), (v2, g2) = (
        k.softmax_cross_entropy(on(backend, z, dtype), target) for k in (fast, default)
    )
    close(v1, float(pn.to_numpy(v2)), dtype)
    close(g1, pn.to_numpy(g2), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", UPDATES)
def test_fast_optimizer_updates_equal_the_default(backend, name, dtype):
    fast = fast_or_skip(backend)
    which, settings, w, grads = update_case(name)
    got = run_updates(fast, backend, dtype, which, settings, w, grads)
    want = run_updates(default_kernels(backend), backend, dtype, which, settings, w, grads)
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype])


# -- windows of images and sums by index --------------------------------------------------
# (size, stride, pads, input shape): padding on every side or some (as wide as the kernel in
# one), windows that do not reach the last rows and columns.
WINDOWS = [
    ((3, 3), (1, 1), (1, 1, 1, 1), (2, 5, 6, 3)),
    ((2, 4), (1, 1), (0, 1, 3, 0), (2, 4, 5, 2)),
    ((2, 2), (1, 1), (2, 0, 0, 1), (1, 3, 4, 2)),
    ((2, 3), (2, 1), (1, 0, 2, 1), (2, 6, 5, 2)),
    ((3, 2), (3, 2), (0, 0, 0, 0), (1, 8, 7, 2)),
    ((1, 1), (1, 1), (0, 0, 0, 0), (3, 2, 2, 4)),
]


def windows_reference(x, size, stride, pads):
    """Each output position's window, read one by one from the padded image."""
    (kh, kw), (sh, sw), (top, bottom, left, right) = size, stride, pads
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, kh * kw * x.shape[3]))
    for r in range(oh):
        for c in range(ow):
            window = x[:, r * sh : r * sh + kh, c * sw : c * sw + kw, :]
            out[:, r, c, :] = window.reshape(x.shape[0], -1)
    return out


def windows_grad_reference(grad, shape, size, stride, pads):
    """The adjoint of ``windows_reference``: each window's gradient added where it was read."""
    (kh, kw), (sh, sw), (top, bottom, left, right) = size, stride, pads
    n, h, w, c = shape
    out = np.zeros((n, h + top + bottom, w + left + right, c))
    for r in range(grad.shape[1]):
        for col in range(grad.shape[2]):
            window = grad[:, r, col, :].reshape(n, kh, kw, c)
            out[:, r * sh : r * sh + kh, col * sw : col * sw + kw, :] += window
    return out[:, top : top + h, left : left + w, :]


def windows_data(shape, size, stride, pads, cout=3):
    rng = np.random.default_rng(6)
    x = rng.normal(size=shape)
    cols = windows_reference(x, size, stride, pads)
    grad = rng.normal(size=cols.shape)
    W = rng.normal(size=(*size, shape[3], cout))
    g_out = rng.normal(size=(*cols.shape[:3], cout))
    return x, grad, W, g_out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", WINDOWS)
def test_windows_match_the_reference(backend, case, dtype):
    size, stride, pads, shape = case
    x, grad, W, g_out = windows_data(shape, size, stride, pads)
    k = backend.kernels
    close(
        k.windows(on(backend, x, dtype), size, stride, pads),
        windows_reference(x, size, stride, pads),
        dtype,
        5.0,
    )
    want = windows_grad_reference(grad, shape, size, stride, pads)
    got = k.windows_grad(on(backend, grad, dtype), shape, size, stride, pads)
    close(got, want, dtype, scale=10.0)
    dcols = (g_out.reshape(-1, W.shape[3]) @ W.reshape(-1, W.shape[3]).T).reshape(grad.shape)
    want = windows_grad_reference(dcols, shape, size, stride, pads)
    got = k.conv_input_grad(on(backend, g_out, dtype), on(backend, W, dtype), shape, stride, pads)
    close(got, want, dtype, scale=30.0)


def scatter_case(seed=7):
    rng = np.random.default_rng(seed)
    index = rng.integers(0, 9, size=40)
    index[:5] = 3  # a run of one id; ids 9 and 10 of the 11 rows never appear
    return index, rng.normal(size=(40, 2, 3)), 11


def test_scatter_add_matches_the_reference(backend):
    index, values, rows = scatter_case()
    want = np.zeros((rows, 2, 3))
    np.add.at(want, index, values)
    got = backend.kernels.scatter_add(
        backend.from_numpy(index), on(backend, values, "float64"), rows
    )
    close(got, want, "float64", scale=10.0)
    one = backend.kernels.scatter_add(
        backend.from_numpy(np.array([0])), on(backend, values[:1, 0], "float64"), 1
    )
    close(one, values[:1, 0], "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", WINDOWS)
def test_fast_windows_equal_the_default(backend, case, dtype):
    fast = fast_or_skip(backend)
    default = default_kernels(backend)
    size, stride, pads, shape = case
    x, grad, W, g_out = windows_data(shape, size, stride, pads)
    for args in (
        ("windows", on(backend, x, dtype), size, stride, pads),
        ("windows_grad", on(backend, grad, dtype), shape, size, stride, pads),
        ("conv_input_grad", on(backend, g_out, dtype), on(backend, W, dtype), shape, stride, pads),
    ):
        got, want = (getattr(k, args[0])(*args[1:]) for k in (fast, default))
        assert got.dtype == want.dtype
        close(got, pn.to_numpy(want), dtype, scale=30.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_scatter_add_equals_the_default(backend, dtype):
    fast = fast_or_skip(backend)
    index, values, rows = scatter_case(seed=8)
    got, want = (
        k.scatter_add(backend.from_numpy(index), on(backend, values, dtype), rows)
        for k in (fast, default_kernels(backend))
    )
    close(got, pn.to_numpy(want), dtype, scale=10.0)


@pytest.fixture
def every_product(monkeypatch):
    """cuBLASLt takes every product on CuPy (not only those that pay for its host cost)."""
    from polynn.backends import _cupy_gemm

    monkeypatch.setattr(_cupy_gemm, "MIN_SECONDS", 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [None, *ACTIVATIONS])
def test_fast_dense_equals_the_default(backend, name, dtype, every_product):
    """The products of a Dense with the activation after it (CuPy: cuBLASLt with the bias and
    ReLU in the epilogue, the bias gradient in the weight gradient's) against the default."""
    fast = fast_or_skip(backend)
    default = default_kernels(backend)
    rng = np.random.default_rng(4)
    x, W, b = rng.normal(size=(48, 20)), rng.normal(size=(20, 12)), rng.normal(size=12)
    grad = rng.normal(size=(48, 12))
    outs = []
    for k in (fast, default):
        act = None
        if name is not None:
            act = Act(name, *k.activation(name, backend.dtype(dtype), negative_slope=SLOPE), SLOPE)
        Wp, bp = Parameter(on(backend, W, dtype), "W"), Parameter(on(backend, b, dtype), "b")
        xd = on(backend, x, dtype)
        y, saved = k.dense(xd, Wp.value, bp.value, act)
        y = pn.to_numpy(y)
        dx = k.dense_backward(on(backend, grad, dtype), xd, Wp, bp, saved, act, True)
        outs.append([y, pn.to_numpy(dx), pn.to_numpy(Wp.grad), pn.to_numpy(bp.grad)])
    for got, want in zip(*outs):
        np.testing.assert_allclose(got, want, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 100)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_dropout_equals_the_default(backend, dtype):
    fast = fast_or_skip(backend)
    h = fast.hash()
    scale = backend.xp.asarray(2.0, dtype=backend.dtype(dtype), device=backend.device)
    for step, offset in ((0, 0), (7, 3), (2**31 + 5, 1)):
        got, want = (
            pn.to_numpy(k.dropout((9, 13), 123456789, h.word_array(step), offset, 2**31, scale))
            for k in (fast, default_kernels(backend))
        )
        np.testing.assert_array_equal(got, want)


def rule_case(name):
    """An optimizer of each rule, with clipping: its update through the kernels given."""
    return {
        "rmsprop": lambda: pn.RMSprop(0.01, momentum=0.5, centered=True, weight_decay=0.01,
                                      clipvalue=0.5),
        "adagrad": lambda: pn.Adagrad(0.05, initial_accumulator=0.1, clipnorm=0.3),
        "sgd-clip": lambda: pn.SGD(0.1, momentum=0.9, clipnorm=0.2, clipvalue=0.05),
        "adamw": lambda: pn.AdamW(0.01, clipnorm=1.0),
    }[name]()  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["rmsprop", "adagrad", "sgd-clip", "adamw"])
def test_fast_updates_of_every_rule_equal_the_default(backend, name, dtype):
    """Every rule and clipping, over several parameters (CuPy: one flat arena)."""
    fast = fast_or_skip(backend)
    rng = np.random.default_rng(6)
    shapes = [(4, 3), (3,), (2, 3, 2)]
    start = [rng.normal(size=s) for s in shapes]
    grads = [[rng.normal(size=s) for s in shapes] for _ in range(3)]
    finals = []
    for kernels in (fast, default_kernels(backend)):
        params = [Parameter(on(backend, w, dtype), f"p{i}") for i, w in enumerate(start)]
        opt = rule_case(name)
        opt.bind(params, backend)
        opt.kernels = kernels
        for step in grads:
            for p, g in zip(params, step):
                p.grad = on(backend, g, dtype)
            opt.step()
        finals.append([pn.to_numpy(p.value) for p in params])
    for got, want in zip(*finals):
        np.testing.assert_allclose(got, want, rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])


# -- the kernels inside a model ------------------------------------------------------------
def test_activations_after_a_dense_run_with_it(backend):
    net = pn.Sequential(
        pn.Dense(3, 4), pn.ReLU(), pn.Tanh(), pn.Dense(4, 2), pn.Sigmoid(), backend=backend
    )
    dense1, relu, tanh, dense2, sigmoid = net.layers
    first, middle, last = net._layers
    assert isinstance(first, Fused) and (first.layer, first.activation) == (dense1, relu)
    assert middle is tanh
    assert isinstance(last, Fused) and (last.layer, last.activation) == (dense2, sigmoid)


def test_a_dense_layer_alone_computes_itself_alone(backend):
    """In a model the ReLU after a Dense runs with it; the Dense's own forward is x @ W + b."""
    net = pn.Sequential(pn.Dense(3, 4), pn.ReLU(), pn.Dense(4, 2), backend=backend, seed=0)
    X = np.random.default_rng(0).normal(size=(5, 3))
    W, b = net.get_weights()[:2]
    got = pn.to_numpy(net.layers[0].forward(backend.from_numpy(X, "float32")))
    np.testing.assert_allclose(got, X @ W + b, rtol=1e-5, atol=1e-6)
    assert (got < 0).any()


def test_a_stack_of_activations_trains_like_the_reference(backend):
    """Dense, ReLU, Tanh, Dense: the ReLU runs inside the Dense, the Tanh on its own, on the
    ReLU's output (which the fused layer keeps for its backward pass)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    net = pn.Sequential(
        pn.Dense(3, 5), pn.ReLU(), pn.Tanh(), pn.Dense(5, 2),
        backend=backend, dtype="float64", seed=1,
    )  # fmt: skip
    W1, b1, W2, b2 = net.get_weights()
    net.fit(X, y, optimizer=pn.SGD(0.1), epochs=1, verbose=0)
    h = np.tanh(np.maximum(X @ W1 + b1, 0))
    d_out = 2 * (h @ W2 + b2 - y) / y.size
    d_z = (d_out @ W2.T) * (1 - h**2) * (X @ W1 + b1 > 0)
    want = [
        W1 - 0.1 * X.T @ d_z,
        b1 - 0.1 * d_z.sum(0),
        W2 - 0.1 * h.T @ d_out,
        b2 - 0.1 * d_out.sum(0),
    ]
    for got, w in zip(net.get_weights(), want):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-14)


def test_backward_leaves_the_callers_gradient_alone(backend):
    """The backward pass writes into the gradients it makes, never into the one it is given."""
    net = pn.Sequential(pn.Dense(3, 4), pn.ReLU(), pn.Dense(4, 2), pn.Tanh(), backend=backend)
    X = np.random.default_rng(0).normal(size=(5, 3))
    out = net.forward(X)
    grad = backend.xp.ones_like(out)
    net.backward(grad)
    np.testing.assert_array_equal(pn.to_numpy(grad), np.ones((5, 2)))


def test_predict_until_gives_each_layers_own_output(backend):
    """``predict(X, until=k)``: the first k layers, each computing itself alone, also where
    k falls between a Dense and the activation that runs with it in the model."""
    net = pn.Sequential(
        pn.Dense(3, 4), pn.ReLU(), pn.Dense(4, 2), pn.Sigmoid(),
        backend=backend, dtype="float64", seed=0,
    )  # fmt: skip
    X = np.random.default_rng(1).normal(size=(6, 3))
    W1, b1, W2, b2 = net.get_weights()
    z1 = X @ W1 + b1
    h1 = np.maximum(z1, 0)
    z2 = h1 @ W2 + b2
    for until, want in [(1, z1), (2, h1), (3, z2), (4, 1 / (1 + np.exp(-z2)))]:
        got = pn.to_numpy(net.predict(X, until=until))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(pn.to_numpy(net(X)), pn.to_numpy(net.predict(X, until=4)))
    with pytest.raises(pn.PolynnValueError, match="until=5, but the model has 4 layers"):
        net.predict(X, until=5)
