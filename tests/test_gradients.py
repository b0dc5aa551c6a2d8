"""Finite-difference checks, in float64, of every layer, activation and loss.

The analytic gradients come from polynn's explicit backward pass; the reference is a central
difference of the loss computed by ``evaluate`` (forward pass only).
"""

from __future__ import annotations

import numpy as np
import pytest

import polynn as pn
from polynn.losses import get_loss

EPS = 1e-6
RTOL = 1e-6


def numeric_gradients(net, X, y, loss):
    weights = net.get_weights()
    grads = []
    for i, w in enumerate(weights):
        g = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            values = []
            for sign in (1, -1):
                trial = [v.copy() for v in weights]
                trial[i][idx] += sign * EPS
                net.set_weights(trial)
                values.append(net.evaluate(X, y, loss=loss)["loss"])
            g[idx] = (values[0] - values[1]) / (2 * EPS)
        grads.append(g)
    net.set_weights(weights)
    return grads


def analytic_gradients(net, X, y, loss_name):
    loss = get_loss(loss_name, net.backend)
    target = loss.prepare_targets(y, net.n_outputs, net.backend, net.dtype)
    out = net.forward(X)
    _, grad = loss.value_and_grad(out, target)
    net.backward(grad)
    return [pn.to_numpy(p.grad) for p in net.params]


def relative_error(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-8)


def data(seed=0, rows=6, features=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features))


ACTIVATIONS = {
    "Sigmoid": pn.Sigmoid,
    "Tanh": pn.Tanh,
    "ReLU": pn.ReLU,
    "LeakyReLU": lambda: pn.LeakyReLU(0.1),
    "Softmax": pn.Softmax,
    "Identity": pn.Identity,
}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_dense_and_activation_gradients(backend, activation):
    X = data()
    y = np.random.default_rng(1).normal(size=(6, 2))
    net = pn.Sequential(
        pn.Dense(3, 5),
        ACTIVATIONS[activation](),
        pn.Dense(5, 2),
        backend=backend,
        dtype="float64",
        seed=3,
    )
    analytic = analytic_gradients(net, X, y, "mse")
    numeric = numeric_gradients(net, X, y, "mse")
    for a, n in zip(analytic, numeric):
        assert relative_error(a, n) < RTOL


LOSS_SETUPS = {
    # loss name: (final layer, targets)
    "mse": (pn.Identity, lambda rng: rng.normal(size=(6, 3))),
    "bce": (pn.Sigmoid, lambda rng: rng.uniform(0.05, 0.95, size=(6, 3))),
    "cross_entropy": (pn.Identity, lambda rng: rng.integers(0, 3, size=6)),
}


@pytest.mark.parametrize("loss", list(LOSS_SETUPS))
def test_loss_gradients_through_a_network(backend, loss):
    final, targets = LOSS_SETUPS[loss]
    X = data()
    y = targets(np.random.default_rng(2))
    net = pn.Sequential(
        pn.Dense(3, 4), pn.Tanh(), pn.Dense(4, 3), final(), backend=backend, dtype="float64", seed=5
    )
    analytic = analytic_gradients(net, X, y, loss)
    numeric = numeric_gradients(net, X, y, loss)
    for a, n in zip(analytic, numeric):
        assert relative_error(a, n) < RTOL


@pytest.mark.parametrize("loss", list(LOSS_SETUPS))
def test_loss_gradient_with_respect_to_predictions(backend, loss):
    """The loss gradient alone, against central differences on the predictions."""
    rng = np.random.default_rng(4)
    pred = rng.uniform(0.1, 0.9, size=(5, 3))
    y = LOSS_SETUPS[loss][1](rng)[:5]
    fn = get_loss(loss, backend)
    target = fn.prepare_targets(y, 3, backend, backend.dtype("float64"))
    _, grad = fn.value_and_grad(backend.from_numpy(pred), target)
    numeric = np.zeros_like(pred)
    for idx in np.ndindex(pred.shape):
        values = []
        for sign in (1, -1):
            trial = pred.copy()
            trial[idx] += sign * EPS
            values.append(float(fn.value(backend.from_numpy(trial), target)))
        numeric[idx] = (values[0] - values[1]) / (2 * EPS)
    assert relative_error(pn.to_numpy(grad), numeric) < RTOL


def test_softmax_before_cross_entropy_is_fused(backend):
    """A final Softmax with cross-entropy trains on the logits: the gradients equal those of
    the same network without the Softmax."""
    X, y = data(), np.random.default_rng(3).integers(0, 3, size=6)
    with_softmax = pn.Sequential(
        pn.Dense(3, 3), pn.Softmax(), backend=backend, dtype="float64", seed=1
    )
    logits_only = pn.Sequential(pn.Dense(3, 3), backend=backend, dtype="float64", seed=1)
    a = with_softmax.fit(X, y, loss="cross_entropy", optimizer=pn.SGD(lr=0.1), epochs=3, verbose=0)
    b = logits_only.fit(X, y, loss="cross_entropy", optimizer=pn.SGD(lr=0.1), epochs=3, verbose=0)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-12)
    for wa, wb in zip(with_softmax.get_weights(), logits_only.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12)
