"""polynn against scikit-learn's MLPClassifier on the 8x8 digits: test accuracy and fit time.

    python benchmarks/digits_vs_sklearn.py               # seeds 0, 1, 2; 50 epochs each
    python benchmarks/digits_vs_sklearn.py --epochs 5    # a quick look

Both libraries train the same network on the same split (``load_digits``, pixels / 16,
80/20 with ``random_state=0``): 64-128-10 with a ReLU, softmax cross-entropy, Adam(lr=1e-3),
batches of 32 reshuffled every epoch, no L2 penalty, no early stopping, a fixed number of
epochs. polynn's ``Sequential.fit`` runs on NumPy in float32. scikit-learn's
``MLPClassifier`` and polynn's estimator ``polynn.sklearn.MLPClassifier`` (on NumPy) get the
same hyperparameters and are each timed twice: on the float64 pixels that ``load_digits``
gives (their usual use) and on float32 pixels (which both keep in float32). Each time is the
wall-clock time of ``fit`` alone; the last row holds the medians over the seeds. Seeds change
the initial weights and the batch order; the split is the same for all. Given a seed the two
estimators draw the same initial weights and batch orders and take the same steps (polynn's
follows scikit-learn's), so their accuracies agree; the times compare the implementations.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import numpy as np
import sklearn
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

import polynn as pn
import polynn.sklearn


def polynn_run(data: tuple, seed: int, epochs: int) -> tuple[float, float]:
    X_train, X_test, y_train, y_test = data
    net = pn.Sequential(pn.Dense(64, 128), pn.ReLU(), pn.Dense(128, 10), backend="numpy", seed=seed)
    start = time.perf_counter()
    net.fit(
        X_train,
        y_train,
        loss="cross_entropy",
        optimizer=pn.Adam(1e-3),
        epochs=epochs,
        batch_size=32,
        shuffle=True,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    return net.evaluate(X_test, y_test, metrics=["accuracy"])["accuracy"], seconds


def estimator_run(
    data: tuple, seed: int, epochs: int, dtype: type, make: type = MLPClassifier
) -> tuple[float, float]:
    """Test accuracy and fit seconds of scikit-learn's (or polynn's) MLPClassifier."""
    X_train, X_test, y_train, y_test = data
    clf = make(
        hidden_layer_sizes=(128,),
        solver="adam",
        learning_rate_init=1e-3,
        batch_size=32,
        max_iter=epochs,
        alpha=0.0,
        tol=0.0,
        n_iter_no_change=epochs,
        shuffle=True,
        random_state=seed,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Stopping after max_iter epochs is the point here, not a failure to converge.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train.astype(dtype), y_train)
    seconds = time.perf_counter() - start
    return clf.score(X_test.astype(dtype), y_test), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()

    digits = load_digits()
    data = train_test_split(digits.data / 16.0, digits.target, test_size=0.2, random_state=0)
    polynn_run(data, 0, 1)  # warm-up: first-call costs are not part of the comparison
    estimator_run(data, 0, 1, np.float64, polynn.sklearn.MLPClassifier)

    header = (
        f"| {'seed':>6} | polynn acc | polynn fit s | pn.sklearn acc | pn.sklearn fit s "
        "| pn.sklearn f32 acc | pn.sklearn f32 fit s | sklearn acc | sklearn fit s "
        "| sklearn f32 acc | sklearn f32 fit s |"
    )
    print(
        f"digits, {len(data[2])} train / {len(data[3])} test rows, {args.epochs} epochs, "
        f"batch 32; polynn {pn.__version__}, scikit-learn {sklearn.__version__}, "
        f"NumPy {np.__version__}, Python {platform.python_version()}"
    )
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    columns: list[list[float]] = [[] for _ in range(10)]
    ours = polynn.sklearn.MLPClassifier
    for seed in args.seeds:
        row = [
            *polynn_run(data, seed, args.epochs),
            *estimator_run(data, seed, args.epochs, np.float64, ours),
            *estimator_run(data, seed, args.epochs, np.float32, ours),
            *estimator_run(data, seed, args.epochs, np.float64),
            *estimator_run(data, seed, args.epochs, np.float32),
        ]
        for column, value in zip(columns, row):
            column.append(value)
        print(_row(str(seed), row), flush=True)
    print(_row("median", [statistics.median(column) for column in columns]))
    below = [s for s, acc in zip(args.seeds, columns[0]) if acc < 0.97]
    print(
        "polynn test accuracy >= 97% for every seed"
        if not below
        else f"polynn test accuracy below 97% for seed(s) {below}"
    )


def _row(label: str, values: list[float]) -> str:
    widths = (10, 12, 14, 16, 18, 20, 11, 13, 15, 17)
    cells = [
        f"{value:>{width}.2%}" if i % 2 == 0 else f"{value:>{width}.2f}"
        for i, (value, width) in enumerate(zip(values, widths))
    ]
    return f"| {label:>6} | " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
