"""MNIST-1D with an MLP (Dropout) or the MNIST-1D paper's small CNN, against the paper's figures.

    python examples/mnist1d.py --model mlp           # 40-256-256-10 ReLU MLP with Dropout
    python examples/mnist1d.py --model cnn           # three Conv1D layers and a Dense head
    python examples/mnist1d.py --model cnn --seed 0 1 2    # three seeds and their median
    python examples/mnist1d.py --quick               # a small data set and a few epochs (CI)
    python examples/mnist1d.py --backend array_api_strict

MNIST-1D (Greydanus 2020, "Scaling down deep learning") is generated offline by the
``mnist1d`` package with its default arguments: 4000 training and 1000 test sequences of 40
values, 10 classes. The paper reports about 68% test accuracy for its MLP and 94% for its CNN.

- ``--model mlp``: 40-256-256-10 with ReLUs and ``Dropout(0.3)`` after each hidden layer,
  Adam at lr=2e-3, batches of 100, 100 epochs (PyTorch's same network and schedule: 72.7%).
- ``--model cnn``: the paper's network, channels last: ``Reshape((40, 1))``, then
  ``Conv1D(1, 25, 5, stride=2, padding=1)``, ``Conv1D(25, 25, 3, stride=2, padding=1)`` twice,
  each followed by a ReLU (lengths 40 -> 19 -> 10 -> 5), ``Flatten`` and ``Dense(125, 10)``;
  Adam at lr=1e-2, batches of 100, 150 epochs (6000 steps, the paper's count).

Measured with ``--seed 0 1 2`` on NumPy (float32), on a 2-core CPU shared with other jobs
(so the times vary by a factor of up to ten; a seed's accuracy is the same in every run):

| model | test accuracy, seeds 0, 1, 2 | median | training time per seed |
|---|---|---|---|
| mlp | 72.0%, 75.2%, 74.1% | 74.1% (paper's MLP: 68%) | 8-90 s |
| cnn | 92.9%, 93.0%, 92.6% | 92.9% (paper's CNN: 94%) | 41-162 s |

Training accuracy reaches 100% in every run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _requires import runnable_here

import polynn as pn

PAPER_ACCURACY = {"mlp": 0.68, "cnn": 0.94}


def make_data(num_samples: int | None) -> dict:
    """The MNIST-1D arrays; ``num_samples=None`` keeps the package's default (5000)."""
    # This script is named like the package: drop its folder from the import path, or
    # `import mnist1d` would import this file instead.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        sys.exit(f'{sys.argv[0]} needs mnist1d ({exc}); install the examples\' extras with: '
                 'pip install -e ".[examples]"')  # fmt: skip

    if num_samples is None:
        return make_dataset()
    args = get_dataset_args()
    args.num_samples = num_samples
    return make_dataset(args)


def network(model: str, backend: str | None, seed: int) -> pn.Sequential:
    """The ``mlp`` or ``cnn`` network described in this module's docstring."""
    if model == "mlp":
        layers = [
            pn.Dense(40, 256), pn.ReLU(), pn.Dropout(0.3),
            pn.Dense(256, 256), pn.ReLU(), pn.Dropout(0.3),
            pn.Dense(256, 10),
        ]  # fmt: skip
    else:
        layers = [
            pn.Reshape((40, 1)),
            pn.Conv1D(1, 25, 5, stride=2, padding=1), pn.ReLU(),
            pn.Conv1D(25, 25, 3, stride=2, padding=1), pn.ReLU(),
            pn.Conv1D(25, 25, 3, stride=2, padding=1), pn.ReLU(),
            pn.Flatten(),
            pn.Dense(125, 10),
        ]  # fmt: skip
    return pn.Sequential(*layers, backend=backend, seed=seed)


def run_seed(args: argparse.Namespace, data: dict, seed: int) -> tuple[float, float, float, str]:
    """Train one network; its train and test accuracy, the seconds it took, the backend."""
    with runnable_here():
        net = network(args.model, args.backend, seed)
    lr, epochs = {"mlp": (2e-3, 100), "cnn": (1e-2, 150)}[args.model]
    if args.quick:
        epochs = 3
    start = time.perf_counter()
    net.fit(
        data["x"],
        data["y"],
        loss="cross_entropy",
        optimizer=pn.Adam(lr),
        epochs=epochs,
        batch_size=100,
        verbose=int(args.verbose),
    )
    seconds = time.perf_counter() - start
    train = net.evaluate(data["x"], data["y"], metrics=["accuracy"])["accuracy"]
    test = net.evaluate(data["x_test"], data["y_test"], metrics=["accuracy"])["accuracy"]
    return train, test, seconds, f"{net.backend.name}, {epochs} epochs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp", help="the network")
    parser.add_argument("--backend", default=None, help="numpy (default), cupy, auto, ...")
    parser.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="one or more seeds (weights, batches)"
    )
    parser.add_argument("--quick", action="store_true", help="1000 samples, 3 epochs (for CI)")
    parser.add_argument("--verbose", action="store_true", help="show a progress bar")
    args = parser.parse_args()

    start = time.perf_counter()
    data = make_data(1000 if args.quick else None)
    print(
        f"MNIST-1D: {len(data['y'])} training and {len(data['y_test'])} test sequences "
        f"of {data['x'].shape[1]} values (generated in {time.perf_counter() - start:.1f} s)"
    )
    tests = []
    for seed in args.seed:
        train_accuracy, test_accuracy, seconds, how = run_seed(args, data, seed)
        tests.append(test_accuracy)
        print(
            f"{args.model} seed {seed} ({how}, {seconds:.1f} s): "
            f"train accuracy {train_accuracy:.1%}, test accuracy {test_accuracy:.1%}"
        )
    paper = f"(MNIST-1D paper, {args.model.upper()}: ~{PAPER_ACCURACY[args.model]:.0%})"
    if len(tests) > 1:
        median = statistics.median(tests)
        print(f"median test accuracy {median:.1%} over {len(tests)} seeds {paper}")
    else:
        print(f"test accuracy {tests[0]:.1%} {paper}")
    if args.quick:
        print("(--quick: a smaller data set and 3 epochs, not comparable with the paper)")


if __name__ == "__main__":
    main()
