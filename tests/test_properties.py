"""Properties that must hold for any input (hypothesis draws the inputs)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import polynn as pn
from polynn.losses import get_loss

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

# No deadline: the first call of a kernel on a GPU backend compiles it.
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
logits = arrays(
    np.float64, st.tuples(st.integers(1, 6), st.integers(2, 5)), elements=st.floats(-1e4, 1e4)
)


@SETTINGS
@given(z=logits, shift=st.floats(-100, 100))
def test_cross_entropy_is_finite_and_shift_invariant(backend, z, shift):
    labels = np.arange(z.shape[0]) % z.shape[1]
    loss = get_loss("cross_entropy", backend)
    target = loss.prepare_targets(labels, z.shape[1], backend, backend.dtype("float64"))
    a, grad = loss.value_and_grad(backend.from_numpy(z), target)
    b, _ = loss.value_and_grad(backend.from_numpy(z + shift), target)
    assert np.isfinite(float(a)) and float(a) >= 0
    np.testing.assert_allclose(float(a), float(b), rtol=1e-9, atol=1e-9)
    # each row of the gradient sums to zero: softmax rows and one-hot rows both sum to one
    np.testing.assert_allclose(pn.to_numpy(grad).sum(axis=1), 0, atol=1e-12)


@SETTINGS
@given(z=logits)
def test_softmax_rows_are_probabilities(backend, z):
    net = pn.Sequential(
        pn.Dense(z.shape[1], z.shape[1]), pn.Softmax(), backend=backend, dtype="float64"
    )
    net.set_weights([np.eye(z.shape[1]), np.zeros(z.shape[1])])
    p = pn.to_numpy(net.predict(z))
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-12)


@SETTINGS
@given(
    p=arrays(np.float64, (4, 2), elements=st.floats(0, 1)),
    y=arrays(np.float64, (4, 2), elements=st.sampled_from([0.0, 1.0])),
)
def test_bce_never_gives_inf_or_nan(backend, p, y):
    loss = get_loss("bce", backend)
    target = loss.prepare_targets(y, 2, backend, backend.dtype("float64"))
    value, grad = loss.value_and_grad(backend.from_numpy(p), target)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(pn.to_numpy(grad)))


@SETTINGS
@given(
    pred=arrays(np.float64, (3, 2), elements=st.floats(-1e3, 1e3)),
    y=arrays(np.float64, (3, 2), elements=st.floats(-1e3, 1e3)),
)
def test_mse_equals_the_mean_of_squares(backend, pred, y):
    loss = get_loss("mse", backend)
    target = loss.prepare_targets(y, 2, backend, backend.dtype("float64"))
    value, grad = loss.value_and_grad(backend.from_numpy(pred), target)
    np.testing.assert_allclose(float(value), np.mean((pred - y) ** 2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        pn.to_numpy(grad), 2 * (pred - y) / pred.size, rtol=1e-12, atol=1e-15
    )


# Any finite float64 input, in the containers NumPy users pass: polynn answers with finite
# predictions or a polynn error, never a raw exception, a silent NaN or matrix semantics.
host_inputs = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.just(3)),
    elements=st.floats(-1e308, 1e308) | st.floats(-10, 10),
)
containers = st.sampled_from(["array", "matrix", "masked", "list"])


@SETTINGS
@given(X=host_inputs, container=containers)
def test_any_finite_input_gives_finite_predictions_or_a_polynn_error(backend, X, container):
    net = pn.Sequential(pn.Dense(3, 4), pn.Tanh(), pn.Dense(4, 2), backend=backend, seed=0)
    data = {
        "array": X,
        "matrix": np.asmatrix(X),
        "masked": np.ma.array(X),
        "list": X.tolist(),
    }[container]
    try:
        out = pn.to_numpy(net.predict(data))
    except pn.PolynnError as exc:  # values beyond float32, or that overflow inside the network
        assert "beyond float32's range" in str(exc) or "overflow" in str(exc)
        assert np.abs(X).max() > 1e30
        return
    assert type(out) is np.ndarray and out.shape == (X.shape[0], 2)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, pn.to_numpy(net.predict(np.asarray(X))))
