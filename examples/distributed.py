"""Data-parallel training over MPI: the digits network on N processes.

    pip install -e ".[mpi,examples]"        # mpi4py and the mpich library (with mpiexec)
    mpiexec -n 2 python examples/distributed.py
    mpiexec -n 4 python examples/distributed.py --sharded      # each rank reads its own rows
    python examples/distributed.py                             # one process works too

Every rank runs this same script. With the default (replicated) data every rank loads all the
digits and takes its share of each batch; with ``--sharded`` each rank keeps only its own
rows, as when no machine holds the whole dataset. The weights, the history and the test
accuracy are the same on every rank; only rank 0 prints. On a cluster, name the machines in a
hostfile (``mpiexec -f hosts -n 8 python ...``); on a node with several GPUs start one rank
per GPU and give each its device (``--backend cupy``: rank r uses GPU r), so that the
gradients are summed by NCCL.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import polynn as pn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None, help="numpy (default), cupy, ...")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--sharded", action="store_true", help="each rank keeps its own rows")
    parser.add_argument("--quick", action="store_true", help="3 epochs (for CI)")
    args = parser.parse_args()
    try:
        from sklearn.datasets import load_digits

        dist = pn.distributed.MPI(sharded=args.sharded)
    except (ImportError, pn.BackendUnavailableError) as exc:
        sys.exit(f'this example needs scikit-learn and mpi4py: pip install -e ".[mpi,examples]" '
                 f"({exc})")  # fmt: skip
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order] / 16.0, y[order]
    X_train, y_train, X_test, y_test = X[:1437], y[:1437], X[1437:], y[1437:]
    if args.sharded:  # keep only this rank's rows
        start, stop = dist.share(len(X_train))
        X_train, y_train = X_train[start:stop], y_train[start:stop]
    device = dist.rank if args.backend == "cupy" else None
    net = pn.Sequential(
        pn.Dense(64, 128), pn.ReLU(), pn.Dense(128, 10),
        backend=args.backend, device=device, seed=0,
    )  # fmt: skip
    history = net.fit(
        X_train, y_train, loss="cross_entropy", optimizer=pn.Adam(1e-3),
        epochs=3 if args.quick else args.epochs, batch_size=64, metrics=["accuracy"],
        verbose=0, distributed=dist,
    )  # fmt: skip
    result = net.evaluate(X_test, y_test, metrics=["accuracy"], distributed=dist)
    if dist.is_root:
        mode = "sharded" if args.sharded else "replicated"
        print(f"{dist.size} rank(s), {mode} data, backend {net.backend.name}: "
              f"final training loss {history.history['loss'][-1]:.4f}, "
              f"test accuracy {result['accuracy']:.2%}")  # fmt: skip


if __name__ == "__main__":
    main()
