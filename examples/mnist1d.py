"""MNIST-1D with a two-hidden-layer ReLU network, against the MNIST-1D paper's MLP figure.

    python examples/mnist1d.py                 # the full data set, about 69% test accuracy
    python examples/mnist1d.py --quick         # a small data set and a few epochs (for CI)
    python examples/mnist1d.py --backend array_api_strict

MNIST-1D (Greydanus 2020, "Scaling down deep learning") is generated offline by the
``mnist1d`` package with its default arguments: 4000 training and 1000 test sequences of 40
values, 10 classes. The paper reports about 68% test accuracy for its MLP.

The network is 40-100-100-10 with ReLUs, trained with Adam on the cross-entropy in batches
of 100: 60 epochs at lr=1e-2, then 20 at lr=1e-3 (a one-step schedule: at 1e-2 the final
accuracy swings by a few points from epoch to epoch). A decoupled weight decay of 0.1 keeps
the network from memorising the small training set.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polynn as pn

PAPER_MLP_ACCURACY = 0.68


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None, help="numpy (default), cupy, auto, ...")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    parser.add_argument("--quick", action="store_true", help="1000 samples, 4 epochs (for CI)")
    parser.add_argument("--verbose", action="store_true", help="show a progress bar")
    args = parser.parse_args()

    start = time.perf_counter()
    data = make_data(1000 if args.quick else None)
    print(
        f"MNIST-1D: {len(data['y'])} training and {len(data['y_test'])} test sequences "
        f"of {data['x'].shape[1]} values (generated in {time.perf_counter() - start:.1f} s)"
    )

    net = pn.Sequential(
        pn.Dense(40, 100),
        pn.ReLU(),
        pn.Dense(100, 100),
        pn.ReLU(),
        pn.Dense(100, 10),
        backend=args.backend,
        seed=args.seed,
    )
    schedule = [(1e-2, 3), (1e-3, 1)] if args.quick else [(1e-2, 60), (1e-3, 20)]
    start = time.perf_counter()
    for lr, epochs in schedule:
        # A fresh Adam per stage (its moments restart): the simplest lr schedule with fit.
        net.fit(
            data["x"],
            data["y"],
            loss="cross_entropy",
            optimizer=pn.Adam(lr, weight_decay=0.1),
            epochs=epochs,
            batch_size=100,
            verbose=int(args.verbose),
        )
    seconds = time.perf_counter() - start

    train = net.evaluate(data["x"], data["y"], metrics=["accuracy"])
    test = net.evaluate(data["x_test"], data["y_test"], metrics=["accuracy"])
    print(f"backend {net.backend.name}, {sum(e for _, e in schedule)} epochs in {seconds:.1f} s")
    print(f"train accuracy {train['accuracy']:.1%}")
    paper = f"(MNIST-1D paper, MLP: ~{PAPER_MLP_ACCURACY:.0%})"
    print(f"test accuracy  {test['accuracy']:.1%}   {paper}")
    if args.quick:
        print("(--quick: a smaller data set and 4 epochs, not comparable with the paper)")


if __name__ == "__main__":
    main()
