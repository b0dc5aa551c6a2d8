"""BatchNorm's running statistics (against a NumPy float64 recurrence and against PyTorch's
BatchNorm1d through whole training runs), LayerNorm against NumPy, and how fit tells the
layers whether they train."""

from __future__ import annotations

import numpy as np
import pytest

import polynn as pn


def batches(X, size):
    return [X[i : i + size] for i in range(0, len(X), size)]


@pytest.mark.parametrize("shape", [(4,), (6, 2)], ids=["rows", "sequences"])
def test_running_statistics_follow_pytorchs_rule(backend, shape):
    """A BatchNorm that sees the data first (rows of 4 features, or sequences of 6 steps of
    2 channels): its running statistics after 3 epochs of training equal PyTorch's update
    rule applied in NumPy float64 (unbiased variance)."""
    rng = np.random.default_rng(0)
    X = rng.normal(2.0, 3.0, size=(20, *shape))
    y = rng.normal(size=(20, 1))
    features = shape[-1]
    if len(shape) == 1:
        layers = [pn.BatchNorm(4, momentum=0.2), pn.Dense(4, 1)]
    else:
        layers = [pn.Reshape(shape), pn.BatchNorm(2, momentum=0.2), pn.Flatten(), pn.Dense(12, 1)]
    net = pn.Sequential(*layers, backend=backend, dtype="float64", seed=0)
    kwargs = dict(optimizer=pn.SGD(lr=0.01), epochs=3, batch_size=6, shuffle=False, verbose=0)
    net.fit(X.reshape(20, -1), y, **kwargs)
    mean, var = np.zeros(features), np.ones(features)
    for _ in range(3):
        for xb in batches(X, 6):
            flat = xb.reshape(-1, features)
            mean = 0.8 * mean + 0.2 * flat.mean(axis=0)
            var = 0.8 * var + 0.2 * flat.var(axis=0, ddof=1)
    running_mean, running_var = (pn.to_numpy(b.value) for b in net.buffers)
    np.testing.assert_allclose(running_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(running_var, var, rtol=1e-12)
    assert len(net.get_weights()) == len(net.params) == 4  # gamma, beta, W, b: no buffers


def test_training_equals_pytorch_batchnorm1d(backend):
    """Dense-BatchNorm-ReLU-Dense trained by SGD on the MSE: the weights, running
    statistics and inference outputs equal PyTorch's (float64, same initial weights)."""
    torch = pytest.importorskip("torch", reason="the PyTorch comparison needs torch")
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(24, 3)), rng.normal(size=(24, 2))
    net = pn.Sequential(
        pn.Dense(3, 5), pn.BatchNorm(5, momentum=0.3, eps=1e-3), pn.ReLU(), pn.Dense(5, 2),
        backend=backend, dtype="float64", seed=4,
    )  # fmt: skip
    start = net.get_weights()

    W1, b1, gamma, beta, W2, b2 = (torch.tensor(w, requires_grad=True) for w in start)
    bn = torch.nn.BatchNorm1d(5, momentum=0.3, eps=1e-3, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    params = [W1, b1, bn.weight, bn.bias, W2, b2]
    opt = torch.optim.SGD(params, lr=0.05)

    def model(x):
        return torch.relu(bn(x @ W1 + b1)) @ W2 + b2

    bn.train()
    for _ in range(3):
        for xb, yb in zip(batches(X, 8), batches(y, 8)):
            opt.zero_grad()
            loss = ((model(torch.from_numpy(xb)) - torch.from_numpy(yb)) ** 2).mean()
            loss.backward()
            opt.step()
    net.fit(X, y, optimizer=pn.SGD(lr=0.05), epochs=3, batch_size=8, shuffle=False, verbose=0)

    for mine, theirs in zip(net.get_weights(), params):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    running = [pn.to_numpy(b.value) for b in net.buffers]
    np.testing.assert_allclose(running[0], bn.running_mean.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(running[1], bn.running_var.numpy(), rtol=1e-10)
    bn.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(pn.to_numpy(net.predict(X)), expected, rtol=1e-10, atol=1e-12)


def test_inference_uses_the_running_statistics(backend):
    net = pn.Sequential(pn.BatchNorm(3), backend=backend, dtype="float64", seed=0)
    layer = net.layers[0]
    rng = np.random.default_rng(0)
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    layer.running_mean.value = backend.from_numpy(mean)
    layer.running_var.value = backend.from_numpy(var)
    net.set_weights([gamma, beta])
    X = rng.normal(size=(5, 3))
    expected = (X - mean) / np.sqrt(var + 1e-5) * gamma + beta
    np.testing.assert_allclose(pn.to_numpy(net.predict(X)), expected, rtol=1e-12)
    np.testing.assert_allclose(pn.to_numpy(layer.running_mean.value), mean)  # unchanged


def test_a_training_batch_of_one_row_is_refused(backend):
    net = pn.Sequential(pn.Dense(2, 3), pn.BatchNorm(3), pn.Dense(3, 1), backend=backend)
    X, y = np.ones((5, 2)), np.ones((5, 1))
    with pytest.raises(ValueError, match=r"more than one value per feature.*batch size") as info:
        net.fit(X, y, batch_size=4, verbose=0)
    assert isinstance(info.value, pn.PolynnValueError)
    assert not net.layers[1].training  # fit ended in inference mode, also on error


def test_layer_norm_equals_numpy(backend):
    net = pn.Sequential(pn.LayerNorm(4, eps=1e-3), backend=backend, dtype="float64", seed=0)
    rng = np.random.default_rng(2)
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    net.set_weights([gamma, beta])
    X = rng.normal(3.0, 2.0, size=(6, 4))
    expected = (X - X.mean(1, keepdims=True)) / np.sqrt(X.var(1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(pn.to_numpy(net.predict(X)), expected * gamma + beta, rtol=1e-12)


class Recorder(pn.Layer):
    """Records ``training`` at every forward pass."""

    def __init__(self):
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x

    def backward(self, grad):
        return grad


class Probe(pn.Callback):
    def __init__(self, recorder, X):
        self.recorder, self.X, self.flags = recorder, X, []

    def on_epoch_begin(self, epoch, logs):
        self.flags.append(self.recorder.training)
        self.model.predict(self.X)  # a callback's predict infers

    def on_epoch_end(self, epoch, logs):
        self.flags.append(self.recorder.training)
        self.model.predict(self.X)


def test_fit_trains_and_everything_else_infers(backend):
    recorder = Recorder()
    inner = Recorder()
    net = pn.Sequential(
        pn.Dense(2, 3), recorder, pn.Residual(inner, pn.Dense(3, 3)), pn.Dense(3, 1),
        backend=backend, seed=0,
    )  # fmt: skip
    X, y = np.ones((6, 2)), np.ones((6, 1))
    probe = Probe(recorder, X)
    # compile=False: the Recorder sees every pass, which a compiled step traces once
    net.fit(X, y, epochs=2, batch_size=3, validation_data=(X, y), callbacks=[probe], verbose=0,
            compile=False)  # fmt: skip
    # per epoch: a predict in on_epoch_begin, 2 training batches, 1 validation pass, a
    # predict in on_epoch_end
    assert recorder.seen == [False, True, True, False, False] * 2
    assert inner.seen == recorder.seen  # Residual passes the flag down
    # between its steps fit leaves the layers training; a callback's predict infers all the same
    assert probe.flags == [True, True, True, True]
    assert not recorder.training and not inner.training
    net.evaluate(X, y)
    net.forward(X)
    assert recorder.seen[-2:] == [False, False]
