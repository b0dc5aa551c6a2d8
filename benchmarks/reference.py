"""Hand-written NumPy training loops: the baseline polynn is measured against.

This is the code the classic tutorial writes: plain arrays, the forward pass spelled out,
the gradient of the loss, the backward pass, and the update, in one loop. Each function does
the same arithmetic as ``polynn`` does for the same network (same formulas for the sigmoid,
the ReLU mask, the losses and their gradients, the SGD update, and one loss value computed
per step), so the time difference between them is what the library costs.

The weights are updated in place, like ``Sequential.fit`` does; every function returns the
mean training loss of each epoch.

``zero_d=True`` turns the loop's scalars (the sigmoid's 0.5 and 1, the learning rate) from
Python floats, as the tutorial writes them, into 0-d arrays of the data's dtype, as polynn
keeps them: NumPy combines a small array with a 0-d array about 0.25 us faster than with a
Python float. The comparison with that form isolates what polynn's Python layer costs.
"""

from __future__ import annotations

import numpy as np


def scalars(dtype, zero_d, *values):
    """``values`` as Python floats, or with ``zero_d`` as 0-d arrays of ``dtype``."""
    return [np.asarray(v, dtype=dtype) for v in values] if zero_d else list(values)


def sigmoid(z, half):
    # the overflow-free form polynn uses: 1 / (1 + exp(-z)) == (tanh(z / 2) + 1) / 2
    return half * np.tanh(half * z) + half


def train_xor(X, y, weights, lr, epochs, zero_d=False):
    """2-2-1 sigmoid network, full batch, mean squared error, plain SGD."""
    W1, b1, W2, b2 = weights
    half, one, lr = scalars(X.dtype, zero_d, 0.5, 1.0, lr)
    history = []
    for _ in range(epochs):
        # forward
        a1 = sigmoid(X @ W1 + b1, half)
        a2 = sigmoid(a1 @ W2 + b2, half)
        # loss and its gradient
        diff = a2 - y
        loss = (diff * diff).sum() / diff.size
        d_a2 = diff * (2.0 / diff.size)
        # backward
        d_z2 = d_a2 * (a2 * (one - a2))
        dW2 = a1.T @ d_z2
        db2 = d_z2.sum(axis=0)
        d_a1 = d_z2 @ W2.T
        d_z1 = d_a1 * (a1 * (one - a1))
        dW1 = X.T @ d_z1
        db1 = d_z1.sum(axis=0)
        # update
        W1 -= lr * dW1
        b1 -= lr * db1
        W2 -= lr * dW2
        b2 -= lr * db2
        history.append(float(loss))
    return history


def train_mlp(X, labels, weights, lr, batch_size, epochs, zero_d=False):
    """ReLU network (Dense, ReLU, ..., Dense) with softmax cross-entropy on the logits,
    mini-batches in order (no shuffling), plain SGD.

    ``weights`` is ``[W1, b1, W2, b2, ...]``; ``labels`` are integer classes.
    """
    (lr,) = scalars(X.dtype, zero_d, lr)
    n_layers = len(weights) // 2
    n_classes = weights[-1].shape[0]
    Y = np.eye(n_classes, dtype=X.dtype)[labels]  # one-hot targets
    rows = X.shape[0]
    history = []
    for _ in range(epochs):
        batch_losses = []
        for start in range(0, rows, batch_size):
            xb = X[start : start + batch_size]
            yb = Y[start : start + batch_size]
            # forward: keep each layer's input and each ReLU's mask for the backward pass
            inputs, masks = [], []
            out = xb
            for i in range(n_layers):
                W, b = weights[2 * i], weights[2 * i + 1]
                inputs.append(out)
                out = out @ W + b
                if i < n_layers - 1:
                    mask = (out > 0).astype(out.dtype)
                    masks.append(mask)
                    out = out * mask
            # softmax cross-entropy on the logits, shifted by the row maximum
            shifted = out - out.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            total = e.sum(axis=1, keepdims=True)
            n = out.shape[0]
            loss = -(yb * (shifted - np.log(total))).sum() / n
            grad = (e / total - yb) / n
            # backward
            grads = [None] * len(weights)
            for i in reversed(range(n_layers)):
                grads[2 * i] = inputs[i].T @ grad
                grads[2 * i + 1] = grad.sum(axis=0)
                if i > 0:
                    grad = (grad @ weights[2 * i].T) * masks[i - 1]
            # update
            for w, g in zip(weights, grads):
                w -= lr * g
            batch_losses.append(loss)
        history.append(float(np.mean(batch_losses)))
    return history
