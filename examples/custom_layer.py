"""A layer of your own with weights: PReLU, a ReLU whose negative slope is learnt per feature.

    python examples/custom_layer.py            # trains on a kinked curve, saves and reloads
    python examples/custom_layer.py --quick    # a few epochs (for CI)
    python examples/custom_layer.py --backend array_api_strict

``PReLU`` is all a layer with weights needs: ``add_param`` in ``__init__`` declares the
slopes (the model creates them on its backend, in its dtype), ``forward`` keeps what
``backward`` needs, ``backward`` fills ``alpha.grad`` and returns the input gradient, and
``get_config`` returns the constructor's arguments so that files can rebuild it
(``@pn.register`` lets ``pn.load`` find the class). Its gradients are tested against finite
differences on every backend (``tests/test_custom_layers.py``).

The data, ``y = x`` for ``x > 0`` and ``0.3 x`` elsewhere (plus noise), is one PReLU with
slope 0.3; the network starts every slope at 0.25 and learns them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _requires import runnable_here

import polynn as pn


@pn.register
class PReLU(pn.Layer):
    """``y = x`` where ``x > 0``, else ``alpha * x``, with one learnt ``alpha`` per feature
    (the last axis)."""

    init = "he_normal"  # a Dense before it starts He-normal, as before a ReLU
    compilable = True  # forward and backward read nothing back to the host (polynn.compiled)

    def __init__(self, features: int, alpha: float = 0.25) -> None:
        self.features, self.alpha_init = features, alpha
        self.alpha = self.add_param("alpha", (features,), init=alpha)

    def forward(self, x: Any) -> Any:
        self._x, self._positive = x, x > 0
        return self.xp.where(self._positive, x, self.alpha.value * x)

    def backward(self, grad: Any) -> Any:
        xp = self.xp
        rows = tuple(range(grad.ndim - 1))  # every axis but the features
        negative_part = xp.where(self._positive, xp.zeros_like(grad), grad * self._x)
        self.alpha.grad = xp.sum(negative_part, axis=rows)
        return xp.where(self._positive, grad, self.alpha.value * grad)

    def get_config(self) -> dict[str, Any]:
        return {"features": self.features, "alpha": self.alpha_init}


def make_data(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-2.0, 2.0, size=(rows, 1))
    y = np.where(x > 0, x, 0.3 * x) + rng.normal(0.0, 0.02, size=(rows, 1))
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None, help="numpy (default), cupy, auto, ...")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    parser.add_argument("--quick", action="store_true", help="a few epochs (for CI)")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    x_train, y_train = make_data(512, rng)
    x_test, y_test = make_data(512, rng)
    with runnable_here():
        net = pn.Sequential(
            pn.Dense(1, 1, init="ones"),  # starts as the identity: the PReLU does the rest
            PReLU(1),
            backend=args.backend,
            seed=args.seed,
        )
    history = net.fit(
        x_train,
        y_train,
        loss="mse",
        optimizer=pn.Adam(0.01),
        epochs=5 if args.quick else 100,
        batch_size=64,
        verbose=0,
    )
    slope = float(pn.to_numpy(net.layers[1].alpha.value)[0])
    test = net.evaluate(x_test, y_test)["loss"]
    print(f"backend {net.backend.name}: {len(history['loss'])} epochs, test MSE {test:.5f}")
    print(f"learnt negative slope {slope:.3f} (the data's: 0.300; it started at 0.250)")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prelu.npz"
        net.save(path)
        again = pn.load(path, backend=args.backend)
    same = np.array_equal(pn.to_numpy(again.predict(x_test)), pn.to_numpy(net.predict(x_test)))
    print(f"saved and loaded: {type(again.layers[1]).__name__}, same predictions: {same}")


if __name__ == "__main__":
    main()
