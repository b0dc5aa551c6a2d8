"""Training: independent NumPy float64 references, cross-backend parity, dtypes, in-place."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import XOR_X, XOR_Y, blobs

import polynn as pn


def mlp(backend, dtype="float64", seed=0, *, out=1, final=pn.Identity):
    return pn.Sequential(
        pn.Dense(4, 6),
        pn.Tanh(),
        pn.Dense(6, out),
        final(),
        backend=backend,
        dtype=dtype,
        seed=seed,
    )


def regression_data(rows=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 4))
    return X, np.sin(X[:, :1]) + 0.1 * X[:, 1:2]


class Reference:
    """Dense-Tanh-Dense with MSE, in NumPy float64, written from the equations."""

    def __init__(self, weights):
        self.w = [w.astype(np.float64).copy() for w in weights]

    def loss_and_grads(self, X, y):
        W1, b1, W2, b2 = self.w
        h = np.tanh(X @ W1 + b1)
        out = h @ W2 + b2
        diff = out - y
        loss = np.mean(diff**2)
        d_out = 2 * diff / diff.size
        d_h = d_out @ W2.T * (1 - h**2)
        return loss, [X.T @ d_h, d_h.sum(0), h.T @ d_out, d_out.sum(0)]


def sgd_reference(weights, X, y, lr, momentum, nesterov, batch_size, epochs):
    ref, velocity, losses = Reference(weights), None, []
    for _ in range(epochs):
        epoch = []
        for start in range(0, len(X), batch_size):
            xb, yb = X[start : start + batch_size], y[start : start + batch_size]
            loss, grads = ref.loss_and_grads(xb, yb)
            epoch.append(loss * len(xb))
            if velocity is None:
                velocity = [g.copy() for g in grads]
            else:
                velocity = [momentum * v + g for v, g in zip(velocity, grads)]
            steps = [g + momentum * v for g, v in zip(grads, velocity)] if nesterov else velocity
            ref.w = [w - lr * s for w, s in zip(ref.w, steps)]
        losses.append(sum(epoch) / len(X))
    return ref.w, losses


def adam_reference(weights, X, y, lr, b1, b2, eps, steps):
    ref = Reference(weights)
    m = [np.zeros_like(w) for w in ref.w]
    v = [np.zeros_like(w) for w in ref.w]
    for t in range(1, steps + 1):
        _, grads = ref.loss_and_grads(X, y)
        m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
        v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads)]
        m_hat = [mi / (1 - b1**t) for mi in m]
        v_hat = [vi / (1 - b2**t) for vi in v]
        ref.w = [w - lr * mh / (np.sqrt(vh) + eps) for w, mh, vh in zip(ref.w, m_hat, v_hat)]
    return ref.w


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_minibatch_sgd_matches_reference(backend, momentum, nesterov):
    X, y = regression_data()
    net = mlp(backend)
    start = net.get_weights()
    history = net.fit(
        X,
        y,
        loss="mse",
        optimizer=pn.SGD(0.05, momentum, nesterov),
        epochs=4,
        batch_size=10,
        shuffle=False,
        verbose=0,
    )
    ref_w, ref_losses = sgd_reference(start, X, y, 0.05, momentum, nesterov, 10, 4)
    np.testing.assert_allclose(history.history["loss"], ref_losses, rtol=1e-12)
    for w, r in zip(net.get_weights(), ref_w):
        np.testing.assert_allclose(w, r, rtol=1e-10, atol=1e-12)


class HalveLearningRate(pn.Callback):
    def on_epoch_end(self, epoch, logs):
        self.model.optimizer.lr /= 2


def test_learning_rate_changed_between_epochs_takes_effect(backend):
    X, y = regression_data()
    net = mlp(backend)
    ref = Reference(net.get_weights())
    optimizer = pn.SGD(0.2)
    net.fit(X, y, optimizer=optimizer, epochs=5, verbose=0, callbacks=[HalveLearningRate()])
    lr = 0.2
    for _ in range(5):
        _, grads = ref.loss_and_grads(X, y)
        ref.w = [w - lr * g for w, g in zip(ref.w, grads)]
        lr /= 2
    assert optimizer.lr == lr
    for w, r in zip(net.get_weights(), ref.w):
        np.testing.assert_allclose(w, r, rtol=1e-10, atol=1e-12)


def test_one_optimizer_trains_a_float64_then_a_float32_model(backend):
    X, y = regression_data()
    optimizer = pn.SGD(0.1)
    for dtype, rtol in (("float64", 1e-10), ("float32", 1e-4)):
        net = mlp(backend, dtype)
        ref = Reference(net.get_weights())
        net.fit(X, y, optimizer=optimizer, epochs=2, verbose=0)
        for _ in range(2):
            _, grads = ref.loss_and_grads(X, y)
            ref.w = [w - 0.1 * g for w, g in zip(ref.w, grads)]
        assert all(p.value.dtype == net.dtype for p in net.params)
        for w, r in zip(net.get_weights(), ref.w):
            np.testing.assert_allclose(w, r, rtol=rtol, atol=rtol)


def test_adam_matches_reference(backend):
    X, y = regression_data()
    net = mlp(backend)
    start = net.get_weights()
    net.fit(X, y, loss="mse", optimizer=pn.Adam(lr=0.01), epochs=20, verbose=0)
    ref_w = adam_reference(start, X, y, 0.01, 0.9, 0.999, 1e-8, 20)
    for w, r in zip(net.get_weights(), ref_w):
        np.testing.assert_allclose(w, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_initial_weights_on_every_backend(backend, dtype):
    reference = mlp("numpy", dtype, seed=7).get_weights()
    for w, r in zip(mlp(backend, dtype, seed=7).get_weights(), reference):
        assert w.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(w, r)


@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-10), ("float32", 1e-4)])
def test_same_training_on_every_backend(backend, dtype, tolerance):
    """100 shuffled mini-batch steps (Adam, cross-entropy) agree with the NumPy backend."""
    X, labels = blobs(rows=50, features=4, classes=3)
    results = []
    for name in ("numpy", backend):
        net = pn.Sequential(
            pn.Dense(4, 16), pn.ReLU(), pn.Dense(16, 3), backend=name, dtype=dtype, seed=11
        )
        net.fit(
            X,
            labels,
            loss="cross_entropy",
            optimizer=pn.Adam(1e-2),
            epochs=20,
            batch_size=10,
            shuffle=True,
            verbose=0,
        )
        results.append(net.get_weights())
    for w, r in zip(*results):
        scale = np.max(np.abs(r))
        assert np.max(np.abs(w - r)) <= tolerance * (scale if dtype == "float32" else 1.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_through_training(backend, dtype):
    X, labels = blobs()
    net = pn.Sequential(
        pn.Dense(4, 8),
        pn.ReLU(),
        pn.Dense(8, 3),
        pn.Softmax(),
        backend=backend,
        dtype=dtype,
        seed=0,
    )
    net.fit(
        X, labels, loss="cross_entropy", optimizer=pn.Adam(), epochs=2, batch_size=16, verbose=0
    )
    assert all(p.value.dtype == net.dtype for p in net.params)
    assert all(p.grad.dtype == net.dtype for p in net.params)
    assert all(s.dtype == net.dtype for state in net.optimizer.state for s in state.values())
    assert net.predict(X).dtype == net.dtype


def test_parameters_are_updated_in_place(backend):
    """Where arrays are writable, training keeps the same parameter arrays (no copies)."""
    if not backend.inplace:
        pytest.skip(f"{backend.name} arrays are immutable: updates rebind new arrays")
    X, y = regression_data()
    net = mlp(backend)
    before = [p.value for p in net.params]
    net.fit(X, y, optimizer=pn.SGD(0.1, momentum=0.9), epochs=3, batch_size=8, verbose=0)
    assert all(p.value is b for p, b in zip(net.params, before))


def test_xor_is_learned(backend):
    net = pn.Sequential(
        pn.Dense(2, 8), pn.Tanh(), pn.Dense(8, 1), pn.Sigmoid(), backend=backend, seed=0
    )
    net.fit(XOR_X, XOR_Y, loss="mse", optimizer=pn.SGD(0.5, momentum=0.9), epochs=300, verbose=0)
    predictions = pn.to_numpy(net.predict(XOR_X))
    np.testing.assert_array_equal(predictions > 0.5, XOR_Y > 0.5)


def test_second_fit_continues_the_optimizer_state(backend):
    X, y = regression_data()
    one, two = mlp(backend), mlp(backend)
    optimizer = pn.Adam(0.01)
    one.fit(X, y, optimizer=optimizer, epochs=6, verbose=0)
    two.fit(X, y, optimizer=(opt := pn.Adam(0.01)), epochs=3, verbose=0)
    two.fit(X, y, optimizer=opt, epochs=3, verbose=0)
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_predict_in_chunks_equals_one_pass(backend):
    X, _ = regression_data(rows=25)
    net = mlp(backend)
    np.testing.assert_allclose(
        pn.to_numpy(net.predict(X, batch_size=7)), pn.to_numpy(net.predict(X)), rtol=1e-12
    )


def test_get_and_set_weights_copy(backend):
    """get_weights returns copies and set_weights never aliases the caller's arrays."""
    X, y = regression_data()
    net = mlp(backend)
    mine = net.get_weights()
    kept = [w.copy() for w in mine]
    net.set_weights(mine)
    net.fit(X, y, optimizer=pn.SGD(0.1), epochs=2, verbose=0)
    for w, k in zip(mine, kept):
        np.testing.assert_array_equal(w, k)


def test_pickle_round_trip(backend):
    import pickle

    X, _ = regression_data()
    net = mlp(backend)
    copy = pickle.loads(pickle.dumps(net))
    assert copy.backend == net.backend and copy.dtype_name == net.dtype_name
    np.testing.assert_array_equal(pn.to_numpy(copy.predict(X)), pn.to_numpy(net.predict(X)))
