"""The tutorial's run, reproduced through polynn on every backend.

The reference is the tutorial's own loop, re-implemented here in NumPy float64: sigmoid
layers, the update ``W += lr * H.T @ ((y - out) * out * (1 - out))`` with ``lr = 0.1`` on
half the summed squared error. polynn's MSE is a mean over the 4 rows, so the same steps
need ``SGD(lr=0.2)``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import XOR_X, XOR_Y, tutorial_weights

import polynn as pn

EPOCHS = 10_000
ROOT = Path(__file__).resolve().parents[1]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def tutorial_loop(epochs: int, learning_rate: float = 0.1):
    """The tutorial's training loop; returns the loss of every epoch and the final output."""
    w1, _, w2, _ = tutorial_weights()
    b1, b2 = np.zeros((1, 2)), np.zeros((1, 1))
    losses = []
    for _ in range(epochs):
        hidden = sigmoid(XOR_X @ w1 + b1)
        output = sigmoid(hidden @ w2 + b2)
        losses.append(np.mean((XOR_Y - output) ** 2))
        d_output = (XOR_Y - output) * output * (1 - output)
        d_hidden = d_output @ w2.T * hidden * (1 - hidden)
        w2 += hidden.T @ d_output * learning_rate
        b2 += np.sum(d_output, axis=0, keepdims=True) * learning_rate
        w1 += XOR_X.T @ d_hidden * learning_rate
        b1 += np.sum(d_hidden, axis=0, keepdims=True) * learning_rate
    final = sigmoid(sigmoid(XOR_X @ w1 + b1) @ w2 + b2)
    return np.array(losses), final


def test_tutorial_parity(backend):
    net = pn.Sequential(
        pn.Dense(2, 2),
        pn.Sigmoid(),
        pn.Dense(2, 1),
        pn.Sigmoid(),
        backend=backend,
        dtype="float64",
    )
    net.set_weights(tutorial_weights())
    history = net.fit(
        XOR_X,
        XOR_Y,
        loss="mse",
        optimizer=pn.SGD(lr=0.2),
        epochs=EPOCHS,
        batch_size=None,
        shuffle=False,
        verbose=0,
    )
    ref_losses, ref_final = tutorial_loop(EPOCHS)
    np.testing.assert_allclose(history.history["loss"], ref_losses, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pn.to_numpy(net.predict(XOR_X)), ref_final, rtol=0, atol=1e-9)


def test_tutorial_network_trains_identically_on_every_backend(backend):
    """The same run on this backend and on NumPy agree to 1e-12 in float64."""
    runs = []
    for name in ("numpy", backend):
        net = pn.Sequential(
            pn.Dense(2, 2),
            pn.Sigmoid(),
            pn.Dense(2, 1),
            pn.Sigmoid(),
            backend=name,
            dtype="float64",
        )
        net.set_weights(tutorial_weights())
        net.fit(XOR_X, XOR_Y, optimizer=pn.SGD(lr=0.2), epochs=2000, shuffle=False, verbose=0)
        runs.append((pn.to_numpy(net.predict(XOR_X)), net.get_weights()))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=0, atol=1e-12)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_xor_example_prints_what_the_tutorial_prints(backend):
    """``examples/xor.py --tutorial`` prints the tutorial program's measured output
    (``shared/seed/MEASURED.md``: the tutorial run as written, NumPy 2.4, float64)."""
    measured_losses = [
        0.25583,
        0.24941,
        0.24544,
        0.20471,
        0.15320,
        0.13869,
        0.13359,
        0.13115,
        0.12975,
        0.12885,
    ]
    measured_final = [0.05300376, 0.49554286, 0.95091752, 0.50319846]
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "xor.py"),
            "--tutorial",
            "--backend",
            backend.name,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    losses = [float(v) for v in re.findall(r"Epoch \d+, Loss: ([\d.]+)", out)]
    assert losses == measured_losses
    final = [
        float(v) for v in re.findall(r"\[\[?\s*([\d.]+)\]", out.split("Final Predictions:")[1])
    ]
    np.testing.assert_allclose(final, measured_final, rtol=0, atol=5e-9)
