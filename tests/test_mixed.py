"""Mixed precision: float32 master weights, half-precision compute, float16 loss scaling."""

from __future__ import annotations

import numpy as np
import pytest

import polynn as pn
from polynn.losses import get_loss
from polynn.precision import LossScale

pytestmark = pytest.mark.filterwarnings("ignore:mixed precision on NumPy:UserWarning")

POLICIES = ["mixed_bfloat16", "mixed_float16"]
#: Relative tolerance of a gradient against float32's: a few roundings of the half type.
RTOL = {"mixed_bfloat16": 3e-2, "mixed_float16": 4e-3}


def supported(backend, policy):
    """Skip, saying why, where ``backend`` has no half type for ``policy``."""
    try:
        backend.compute_dtype(policy)
    except pn.PolynnValueError as exc:
        pytest.skip(str(exc))


def mlp(backend, dtype, seed=0, out=3):
    return pn.Sequential(
        pn.Dense(4, 16), pn.Tanh(), pn.Dense(16, 16), pn.ReLU(), pn.Dense(16, out),
        backend=backend, dtype=dtype, seed=seed,
    )  # fmt: skip


def test_a_backend_without_half_types_names_those_that_have_them():
    pytest.importorskip("array_api_strict", reason="needs array-api-strict")
    with pytest.raises(pn.PolynnValueError, match=r"bfloat16.*backends with it: numpy"):
        mlp("array_api_strict", "mixed_bfloat16")


@pytest.mark.parametrize("policy", POLICIES)
def test_parameters_and_state_stay_float32_while_layers_compute_in_half(backend, policy):
    supported(backend, policy)
    net = mlp(backend, policy)
    X, labels = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
    net.fit(X, labels, loss="cross_entropy", optimizer=pn.Adam(), epochs=2, verbose=0)
    f32 = backend.dtype("float32")
    state = [s for d in net.optimizer.state for s in d.values()]
    assert all(a.dtype == f32 for a in [p.value for p in net.params] + state)
    assert net.forward(X).dtype == backend.compute_dtype(policy)
    assert net.layers[0]._x.dtype == backend.compute_dtype(policy)
    assert net.predict(X).dtype == f32  # predict answers in float32


@pytest.mark.parametrize("policy", POLICIES)
def test_gradients_equal_float32_within_the_half_types_rounding(backend, policy):
    supported(backend, policy)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 3))
    grads = []
    for dtype in ("float32", policy):
        net = mlp(backend, dtype)
        out = net.forward(X)
        xp = backend.xp
        loss = get_loss("mse", backend)
        target = loss.prepare_targets(y, 3, backend, net.dtype)
        _, grad = loss.value_and_grad(xp.astype(out, net.dtype), target)
        net.backward(grad)
        grads.append([pn.to_numpy(p.grad) for p in net.params])
    for mixed, full in zip(grads[1], grads[0]):
        np.testing.assert_allclose(mixed, full, rtol=0, atol=RTOL[policy] * np.abs(full).max())


def test_loss_scale_skips_overflowing_steps_and_grows_back():
    xp = pn.backends.get("numpy").xp
    scale = LossScale(scale=8.0, growth_interval=2)
    p = pn.Parameter(np.zeros(3, dtype=np.float32), "w")
    p.grad = np.array([8.0, np.inf, 0.0], dtype=np.float32)
    assert not scale.unscale([p], xp) and scale.scale == 4.0
    # Each gradient is divided by the scale in force; two clean steps in a row double it.
    for grad, new_scale in ((1.0, 4.0), (1.0, 8.0), (0.5, 8.0), (0.5, 16.0)):
        p.grad = np.full(3, 4.0, dtype=np.float32)
        assert scale.unscale([p], xp)
        np.testing.assert_array_equal(p.grad, np.full(3, grad))
        assert scale.scale == new_scale
    assert scale.take_skipped() == 1 and scale.take_skipped() == 0


def test_float16_training_skips_overflowing_steps_and_is_not_divergence(backend):
    """Targets near 100 make the scaled loss gradient overflow float16 (65504): the first
    steps are skipped with the scale halved each time, then training goes on."""
    supported(backend, "mixed_float16")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4, 4))
    y = 100.0 + rng.normal(size=(4, 3))
    net = mlp(backend, "mixed_float16")
    hist = net.fit(X, y, optimizer=pn.SGD(1e-3), epochs=40, verbose=0)
    skipped = hist.history["skipped_steps"]
    assert sum(skipped) >= 1 and skipped[-1] == 0
    assert hist.history["loss_scale"][-1] < 2.0**15
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert all(np.isfinite(w).all() for w in net.get_weights())


def test_bfloat16_has_no_loss_scale(backend):
    supported(backend, "mixed_bfloat16")
    net = mlp(backend, "mixed_bfloat16")
    hist = net.fit(np.ones((4, 4)), np.zeros((4, 3)), epochs=1, verbose=0)
    assert net.loss_scale is None and "loss_scale" not in hist.history


@pytest.mark.parametrize("policy", POLICIES)
def test_the_policy_is_saved_and_loaded(backend, policy, tmp_path):
    supported(backend, policy)
    X = np.random.default_rng(3).normal(size=(5, 4))
    net = mlp(backend, policy)
    net.save(tmp_path / "m.npz")
    loaded = pn.load(tmp_path / "m.npz", backend=backend)
    assert loaded.dtype_name == policy
    np.testing.assert_array_equal(pn.to_numpy(loaded.predict(X)), pn.to_numpy(net.predict(X)))


def test_data_beyond_float16s_range_is_refused(backend):
    supported(backend, "mixed_float16")
    with pytest.raises(pn.PolynnValueError, match="beyond the range of float16"):
        mlp(backend, "mixed_float16").predict([[1e5, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("policy", POLICIES)
def test_digits_accuracy_matches_float32(backend, policy):
    """Within half a percentage point of float32's test accuracy (or better)."""
    supported(backend, policy)
    datasets = pytest.importorskip("sklearn.datasets", reason="the digits come from sklearn")
    X, y = datasets.load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order] / 16.0, y[order]
    train, test = slice(0, 1350), slice(1350, None)
    accuracy = {}
    for dtype in ("float32", policy):
        net = pn.Sequential(pn.Dense(64, 64), pn.ReLU(), pn.Dense(64, 10),
                            backend=backend, dtype=dtype, seed=0)  # fmt: skip
        net.fit(X[train], y[train], loss="cross_entropy", optimizer=pn.Adam(3e-3), epochs=30,
                batch_size=32, verbose=0)  # fmt: skip
        accuracy[dtype] = net.evaluate(X[test], y[test], metrics=["accuracy"])["accuracy"]
    assert accuracy["float32"] > 0.95
    assert accuracy[policy] >= accuracy["float32"] - 0.005


@pytest.mark.parametrize("policy", POLICIES)
def test_clip_and_isdtype_take_the_half_types(backend, policy):
    """The backend's own namespace clips a half-type array into its own dtype and classes
    it as real floating (CuPy's array-api-compat wrapper failed on bfloat16 in both; NumPy's
    clip gave float32)."""
    supported(backend, policy)
    xp, half = backend.xp, backend.compute_dtype(policy)
    x = xp.astype(backend.from_numpy(np.array([-30.0, -1.5, 0.0, 2.25, 30.0])), half)
    out = xp.clip(x, -20.0, 20.0)
    assert out.dtype == half
    got = pn.to_numpy(xp.astype(out, xp.float32))
    np.testing.assert_array_equal(got, [-20.0, -1.5, 0.0, 2.25, 20.0])
    assert xp.isdtype(half, "real floating") and xp.isdtype(half, ("integral", "numeric"))
    assert not xp.isdtype(half, "integral")


def test_array_api_compat_wrappers_take_bfloat16_through_polynns_namespace():
    """CuPy's namespace is array-api-compat's wrapper; its NumPy twin goes through the same
    code on a CPU: its clip fails on bfloat16, polynn's namespace over it does not."""
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 comes from ml-dtypes")
    compat = pytest.importorskip("array_api_compat.numpy")
    from polynn.backends._half import with_bfloat16

    a = np.array([-30.0, -1.5, 0.0, 2.25, 30.0], dtype=ml_dtypes.bfloat16)
    with pytest.raises(TypeError):
        compat.clip(a, -20.0, 20.0)
    xp = with_bfloat16(compat, np)
    out = xp.clip(a, -20.0, 20.0)
    assert out.dtype == a.dtype
    np.testing.assert_array_equal(out.astype(np.float64), [-20.0, -1.5, 0.0, 2.25, 20.0])
    assert xp.isdtype(a.dtype, "real floating") and not xp.isdtype(a.dtype, "bool")
    # Every other dtype is answered as before.
    assert xp.isdtype(np.dtype(np.int32), "integral") and not xp.isdtype(np.float32, "integral")
    f = np.array([-3.0, 0.5, 3.0], dtype=np.float32)
    assert xp.clip(f, max=1.0).dtype == np.float32
