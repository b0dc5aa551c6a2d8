"""Handwritten digits (scikit-learn's 8x8 images) with a one-hidden-layer ReLU network.

    python examples/digits.py                   # 50 epochs, progress bar, about 98% test accuracy
    python examples/digits.py --plot loss.png   # also draw the train/validation loss curves
    python examples/digits.py --quick --quiet   # 3 epochs, no progress bar (for CI)
    python examples/digits.py --backend array_api_strict

The 1797 images of ``sklearn.datasets.load_digits`` (64 pixels in 0..16, scaled to [0, 1])
are split 80/20 with ``random_state=0``. The network is 64-128-10 with a ReLU, trained with
Adam on the cross-entropy of its logits against the integer labels.
"""

from __future__ import annotations

import argparse

import numpy as np
from _requires import require, runnable_here

import polynn as pn


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test arrays: pixels scaled to [0, 1], labels 0..9."""
    digits = require("sklearn.datasets").load_digits()
    X = digits.data / 16.0
    split = require("sklearn.model_selection").train_test_split
    return split(X, digits.target, test_size=0.2, random_state=0)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs: rows are true, columns predicted."""
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(
        classes, classes
    )


def print_confusion(matrix: np.ndarray) -> None:
    classes = matrix.shape[0]
    print("confusion matrix (rows: true digit, columns: predicted digit)")
    print("      " + "".join(f"{c:>4}" for c in range(classes)))
    for c, row in enumerate(matrix):
        # Dots for empty off-diagonal cells make the few mistakes stand out.
        cells = "".join(f"{n:>4}" if n or i == c else "   ." for i, n in enumerate(row))
        print(f"  {c:>2}  {cells}")


def plot_losses(history: dict[str, list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, history["loss"], label="train")
    ax.plot(epochs, history["val_loss"], label="validation (test split)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax.set_title("polynn on sklearn digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None, help="numpy (default), cupy, auto, ...")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    parser.add_argument(
        "--dtype",
        default="float32",
        help="float32 (default), float64, mixed_bfloat16 or mixed_float16 (mixed precision)",
    )
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="3 epochs (for CI)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--plot", metavar="PNG", help="write the loss curves to this file")
    args = parser.parse_args()
    if args.plot:
        require("matplotlib")  # before training, not after it

    X_train, X_test, y_train, y_test = load_data()
    with runnable_here():
        net = pn.Sequential(
            pn.Dense(64, 128),
            pn.ReLU(),
            pn.Dense(128, 10),
            backend=args.backend,
            dtype=args.dtype,
            seed=args.seed,
        )
    # The test split doubles as validation data only to record val_loss per epoch for the
    # plot; nothing is tuned or stopped on it.
    history = net.fit(
        X_train,
        y_train,
        loss="cross_entropy",
        optimizer=pn.Adam(1e-3),
        epochs=3 if args.quick else args.epochs,
        batch_size=32,
        metrics=["accuracy"],
        validation_data=(X_test, y_test),
        verbose=0 if args.quiet else 1,
    )
    result = net.evaluate(X_test, y_test, metrics=["accuracy"])
    predicted = np.argmax(pn.to_numpy(net.predict(X_test)), axis=1)
    print(
        f"backend {net.backend.name}, dtype {net.dtype_name}, "
        f"{len(history.history['loss'])} epochs, "
        f"{len(y_train)} training / {len(y_test)} test images"
    )
    print(f"test loss {result['loss']:.4f}, test accuracy {result['accuracy']:.2%}")
    print_confusion(confusion_matrix(y_test, predicted, 10))
    if args.plot:
        plot_losses(history.history, args.plot)


if __name__ == "__main__":
    main()
