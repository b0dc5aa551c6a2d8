"""The data, network and fit arguments shared by ``test_distributed.py`` and the MPI worker."""

from __future__ import annotations

import numpy as np

import polynn as pn

ROWS = 22  # not a multiple of the batch size nor of 2 or 3 ranks: uneven shares
FIT = {
    "replicated": dict(loss="cross_entropy", optimizer=None, epochs=4, batch_size=8,
                       shuffle=True, metrics=["accuracy"], verbose=0),
    "sharded": dict(loss="cross_entropy", optimizer=None, epochs=3, batch_size=6,
                    shuffle=False, metrics=["accuracy"], verbose=0),
}  # fmt: skip
FIT["bad-data"] = FIT["failing-step"] = FIT["unseeded"] = FIT["replicated"]
#: One rank differs from the others, or its callbacks do: every rank must stop, never hang.
DISAGREEING = [
    "fails-in-on_train_begin", "fails-in-on_epoch_begin", "fails-in-on_train_end",
    "fails-in-validation", "stops-on-root", "restores-on-root", "lowers-rate-on-root",
    "epochs-differ", "rows-differ", "batches-differ", "widths-differ", "dtypes-differ",
    "bad-argument",
]  # fmt: skip
for mode in DISAGREEING:
    FIT[mode] = FIT["replicated"]
FIT["replicated-dropout"], FIT["sharded-dropout"] = FIT["replicated"], FIT["sharded"]
FIT["replicated-images"] = FIT["replicated-tokens"] = FIT["replicated"]


def data(mode=""):
    """Rows of 4 features (2x2 images for "-images"), or of 4 ids in [0, 7) for "-tokens"."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(ROWS, 4))
    y = rng.integers(0, 3, size=ROWS)
    Xv, yv = rng.normal(size=(9, 4)), rng.integers(0, 3, size=9)
    if mode.endswith("tokens"):
        X, Xv = (np.floor(np.abs(a) * 3).astype(int) % 7 for a in (X, Xv))
    return X, y, Xv, yv


def network(backend, mode=""):
    """The network of ``mode``: with a Dropout (nested in a Residual too) for "-dropout", a
    Conv2D and 2-d pools for "-images", an Embedding for "-tokens"."""
    if mode.endswith("images"):
        layers = (pn.Reshape((2, 2, 1)), pn.Conv2D(1, 3, 2, padding="same"), pn.Tanh(),
                  pn.MaxPool2D(2, stride=1), pn.Flatten(), pn.Dense(3, 3))  # fmt: skip
    elif mode.endswith("tokens"):
        layers = (pn.Embedding(7, 3), pn.GlobalAveragePool1D(), pn.Dense(3, 3))
    elif mode.endswith("dropout"):
        layers = (pn.Dense(4, 6), pn.Tanh(), pn.Dropout(0.4),
                  pn.Residual(pn.Dense(6, 6), pn.Dropout(0.3)), pn.Dense(6, 3))  # fmt: skip
    else:
        layers = (pn.Dense(4, 6), pn.Tanh(), pn.Dense(6, 3))
    return pn.Sequential(*layers, backend=backend, dtype="float64", seed=3)


def fit_arguments(mode):
    arguments = dict(FIT[mode])
    arguments["optimizer"] = pn.SGD(0.1, momentum=0.9)
    return arguments
