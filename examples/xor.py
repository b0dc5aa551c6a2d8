"""XOR with polynn.

    python examples/xor.py                 # a network that learns XOR
    python examples/xor.py --tutorial      # the tutorial's 2-2-1 network, reproduced exactly
    python examples/xor.py --backend array_api_strict

``--tutorial`` runs the classic from-scratch tutorial (2-2-1 sigmoid network, MSE, plain
gradient descent, ``np.random.seed(42)``) through polynn and prints what that program prints.
With that seed it does *not* learn XOR: it settles in a local minimum (about 0.05, 0.50,
0.95, 0.50). The tutorial updates with ``lr=0.1`` on half the *summed* squared error; polynn's
MSE is the mean over the 4 rows, so the same steps need ``lr = 0.1 * 4 / 2 = 0.2``.
"""

from __future__ import annotations

import argparse

import numpy as np

import polynn as pn

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
Y = np.array([[0], [1], [1], [0]], dtype=np.float64)


def tutorial(backend: str) -> None:
    """The tutorial's network, its initial weights and its 10,000 full-batch epochs."""
    if backend == "jax":  # float64 on JAX needs its 64-bit mode, switched on before any array
        import jax

        jax.config.update("jax_enable_x64", True)
    np.random.seed(42)  # the tutorial's legacy global seed and draw order
    w_input_hidden = np.random.randn(2, 2)
    w_hidden_output = np.random.randn(2, 1)
    net = pn.Sequential(
        pn.Dense(2, 2),
        pn.Sigmoid(),
        pn.Dense(2, 1),
        pn.Sigmoid(),
        backend=backend,
        dtype="float64",
    )
    net.set_weights([w_input_hidden, np.zeros(2), w_hidden_output, np.zeros(1)])
    history = net.fit(
        X,
        Y,
        loss="mse",
        optimizer=pn.SGD(lr=0.2),
        epochs=10_000,
        batch_size=None,
        shuffle=False,
        verbose=0,
    )
    for epoch in range(0, 10_000, 1000):
        print(f"Epoch {epoch}, Loss: {history.history['loss'][epoch]:.5f}")
    print("Final Predictions:")
    print(pn.to_numpy(net.predict(X)))


def learn_xor(backend: str, epochs: int, seed: int) -> None:
    """A wider network (2-8-1, tanh) that does learn XOR."""
    net = pn.Sequential(
        pn.Dense(2, 8),
        pn.Tanh(),
        pn.Dense(8, 1),
        pn.Sigmoid(),
        backend=backend,
        seed=seed,
    )
    history = net.fit(
        X, Y, loss="mse", optimizer=pn.SGD(lr=0.5, momentum=0.9), epochs=epochs, verbose=0
    )
    result = net.evaluate(X, Y, metrics=["accuracy"])
    print(
        f"backend {net.backend.name}, {epochs} epochs: loss {history.history['loss'][0]:.4f} "
        f"-> {result['loss']:.4f}, accuracy {result['accuracy']:.0%}"
    )
    print(" x1 x2  target  prediction")
    for (a, b), target, pred in zip(X, Y[:, 0], pn.to_numpy(net.predict(X))[:, 0]):
        print(f" {a:2.0f} {b:2.0f}  {target:6.0f}  {pred:10.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None, help="numpy (default), cupy, auto, ...")
    parser.add_argument("--tutorial", action="store_true", help="reproduce the tutorial's run")
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a short run (for CI)")
    args = parser.parse_args()
    if args.tutorial:
        tutorial(args.backend)
    else:
        learn_xor(args.backend, 200 if args.quick else args.epochs, args.seed)


if __name__ == "__main__":
    main()
