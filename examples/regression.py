"""Regression: fit a noisy sine curve with a small tanh network and the mean squared error.

    python examples/regression.py                  # 1-64-64-1 tanh MLP, Adam, 300 epochs
    python examples/regression.py --plot fit.png   # also draw the data and the fitted curve
    python examples/regression.py --quick          # 30 epochs (for CI)
    python examples/regression.py --backend array_api_strict

The data are ``y = sin(x) + noise`` for ``x`` uniform in [-3, 3], with Gaussian noise of
standard deviation 0.1, drawn from ``numpy.random.default_rng(seed)``. No model can predict
the noise, so the best achievable test MSE is its variance, 0.01 (the "noise floor"); a
training MSE well below it would mean the network memorises the noise.
"""

from __future__ import annotations

import argparse

import numpy as np
from _requires import require, runnable_here

import polynn as pn

NOISE = 0.1


def make_data(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-3.0, 3.0, size=(rows, 1))
    return x, np.sin(x) + NOISE * rng.standard_normal((rows, 1))


def plot_fit(net: pn.Sequential, x: np.ndarray, y: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-3.0, 3.0, 400).reshape(-1, 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(x[:, 0], y[:, 0], s=6, alpha=0.4, label="training data")
    ax.plot(grid[:, 0], np.sin(grid[:, 0]), "k--", lw=1, label="sin(x)")
    ax.plot(grid[:, 0], pn.to_numpy(net.predict(grid))[:, 0], "C3", lw=2, label="network")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None, help="numpy (default), cupy, auto, ...")
    parser.add_argument("--seed", type=int, default=0, help="data, initial weights, batch order")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="30 epochs (for CI)")
    parser.add_argument("--plot", metavar="PNG", help="draw the data and the fit to this file")
    args = parser.parse_args()
    if args.plot:
        require("matplotlib")  # before training, not after it

    rng = np.random.default_rng(args.seed)
    x_train, y_train = make_data(1000, rng)
    x_test, y_test = make_data(1000, rng)

    with runnable_here():
        net = pn.Sequential(
            pn.Dense(1, 64),
            pn.Tanh(),
            pn.Dense(64, 64),
            pn.Tanh(),
            pn.Dense(64, 1),
            backend=args.backend,
            seed=args.seed,
        )
    epochs = 30 if args.quick else args.epochs
    net.fit(
        x_train,
        y_train,
        loss="mse",
        optimizer=pn.Adam(3e-3),
        epochs=epochs,
        batch_size=64,
        verbose=0,
    )
    train_mse = net.evaluate(x_train, y_train)["loss"]
    test_mse = net.evaluate(x_test, y_test)["loss"]
    print(f"backend {net.backend.name}, {epochs} epochs, {len(x_train)} training points")
    print(f"train MSE  {train_mse:.5f}")
    print(f"test MSE   {test_mse:.5f}")
    print(f"noise floor {NOISE**2:.5f} (the variance of the noise: the best any model can do)")
    if args.plot:
        plot_fit(net, x_train, y_train, args.plot)


if __name__ == "__main__":
    main()
