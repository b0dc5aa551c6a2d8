"""float32 accuracy against float64 references, and ``matmul_precision``."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import polynn as pn

SIZES = (16, 32, 32, 4)
LR, BATCH, STEPS = 0.1, 32, 30
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(BATCH * STEPS, SIZES[0]))
    return X, rng.integers(0, SIZES[-1], size=BATCH * STEPS)


def mlp(backend, dtype="float32", **kwargs):
    return pn.Sequential(
        pn.Dense(16, 32), pn.ReLU(), pn.Dense(32, 32), pn.ReLU(), pn.Dense(32, 4),
        backend=backend, dtype=dtype, seed=0, **kwargs,
    )  # fmt: skip


def reference_training(weights, X, labels, dtype):
    """The same SGD run written from the equations in NumPy, in ``dtype``."""
    W = [w.astype(dtype) for w in weights]
    X, Y = X.astype(dtype), np.eye(SIZES[-1], dtype=dtype)[labels]
    lr = dtype(LR)
    for start in range(0, len(X), BATCH):
        x, y = X[start : start + BATCH], Y[start : start + BATCH]
        z1 = x @ W[0] + W[1]
        h1 = np.maximum(z1, 0)
        z2 = h1 @ W[2] + W[3]
        h2 = np.maximum(z2, 0)
        out = h2 @ W[4] + W[5]
        p = np.exp(out - out.max(1, keepdims=True))
        d_out = (p / p.sum(1, keepdims=True) - y) / len(x)
        d2 = (d_out @ W[4].T) * (z2 > 0)
        d1 = (d2 @ W[2].T) * (z1 > 0)
        grads = [x.T @ d1, d1.sum(0), h1.T @ d2, d2.sum(0), h2.T @ d_out, d_out.sum(0)]
        W = [w - lr * g for w, g in zip(W, grads)]
    return W


def normwise_error(weights, reference):
    diff = np.concatenate([(np.float64(a) - b).ravel() for a, b in zip(weights, reference)])
    return np.linalg.norm(diff) / np.linalg.norm(np.concatenate([b.ravel() for b in reference]))


def test_float32_training_is_as_accurate_as_numpy_float32(backend):
    """Against a float64 run of the same steps, the backend's float32 training is no less
    accurate than a float32 NumPy loop (within a factor for rounding in another order), so
    no lower precision (TF32, say) slips into a "highest" model."""
    X, labels = data()
    net = mlp(backend)
    start = [w.astype(np.float64) for w in net.get_weights()]
    net.fit(X, labels, loss="cross_entropy", optimizer=pn.SGD(LR), batch_size=BATCH,
            shuffle=False, verbose=0)  # fmt: skip
    exact = reference_training(start, X, labels, np.float64)
    numpy32 = normwise_error(reference_training(start, X, labels, np.float32), exact)
    assert normwise_error(net.get_weights(), exact) <= 4 * max(numpy32, FLOAT32_EPS)


def test_matmul_precision_is_checked():
    with pytest.raises(pn.PolynnValueError, match="'highest', 'high'"):
        mlp("numpy", matmul_precision="medium")


def test_matmul_precision_is_kept_by_files_copies_and_pickles(backend, tmp_path):
    net = mlp(backend, matmul_precision="high")
    assert "matmul_precision='high'" in repr(net)
    net.save(tmp_path / "m.npz")
    copies = [pn.load(tmp_path / "m.npz", backend=backend), net.to(backend)]
    copies.append(pickle.loads(pickle.dumps(net)))
    assert [c.matmul_precision for c in copies] == ["high"] * 3
    assert mlp(backend).matmul_precision == "highest"


def test_matmul_precision_high_stays_close_to_float64(backend):
    """TF32 keeps about 10 mantissa bits in the products: predictions stay within 1e-2 of a
    float64 run; where there are no tensor cores they equal "highest"'s."""
    X, _ = data()
    exact = mlp("numpy", dtype="float64").predict(X)
    for precision, rtol in (("highest", 1e-5), ("high", 1e-2)):
        got = pn.to_numpy(mlp(backend, matmul_precision=precision).predict(X))
        np.testing.assert_allclose(got, exact, rtol=rtol, atol=rtol * np.abs(exact).max())


def precision_switch(backend):
    """A function reading the library's process-wide float32 matmul setting."""
    if backend.name == "torch":
        import torch

        return torch.get_float32_matmul_precision
    if backend.name == "cupy":
        from cupy._core import _routines_linalg

        return lambda: _routines_linalg.get_compute_type(np.float32)
    if backend.name == "jax":
        import jax

        return lambda: jax.config.jax_default_matmul_precision
    pytest.skip(f"backend {backend.name!r} has no float32 matmul precision switch")


class Record(pn.Callback):
    def __init__(self, read):
        self.read, self.seen = read, []

    def on_epoch_end(self, epoch, logs):
        self.seen.append(self.read())


def test_matmul_precision_is_set_inside_the_model_calls_only(backend):
    read = precision_switch(backend)
    before = read()
    X, labels = data()
    inside = {}
    for precision in ("highest", "high"):
        record = Record(read)
        mlp(backend, matmul_precision=precision).fit(
            X[:64], labels[:64], loss="cross_entropy", callbacks=[record], verbose=0
        )
        inside[precision] = record.seen[0]
        assert read() == before
    assert inside["high"] != inside["highest"]
