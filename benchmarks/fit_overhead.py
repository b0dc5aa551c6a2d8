"""What a ``fit`` call costs besides its epochs: the data checks, the copy of the weights it
keeps in case training diverges, and the check of the weights after the last update.

    python benchmarks/fit_overhead.py                 # full run, prints the table
    python benchmarks/fit_overhead.py --quick         # fewer rounds
    python benchmarks/fit_overhead.py --threads 1     # BLAS on one thread (steadier)
    python benchmarks/fit_overhead.py --threads 1 --cpu-time   # on a machine others load

The workload is the large one of ``run.py``: a 784-1024-1024-10 ReLU network, float32,
softmax cross-entropy, SGD(lr=0.01), 2,048 rows in batches of 256, no shuffling. Each round
times, in turn, polynn's ``fit`` and the hand-written NumPy loop of ``reference.py``, each for
one epoch and for ``--epochs`` epochs, from the same initial weights (set, and the garbage
collected, before each call). The first epoch of a call runs on cold caches in both, so the
per-fit cost is polynn's excess over NumPy in a one-epoch call less its excess per epoch in
the longer call: the median over the rounds, shown as a share of an epoch. The pieces of
that cost are also timed alone (medians of 21 calls each), which is far steadier.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference  # noqa: E402  (the hand-written loops beside this file)
import run  # noqa: E402  (the machine description of the main benchmark)

import polynn as pn  # noqa: E402
from polynn.data import pairs  # noqa: E402
from polynn.training import Snapshot  # noqa: E402

ROWS, BATCH = 2048, 256


def workload() -> tuple[pn.Sequential, np.ndarray, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=ROWS)
    net = pn.Sequential(pn.Dense(784, 1024), pn.ReLU(), pn.Dense(1024, 1024), pn.ReLU(),
                        pn.Dense(1024, 10), backend="numpy", dtype="float32", seed=0)  # fmt: skip
    return net, X, y, net.get_weights()


#: The clock: wall-clock time, or (``--cpu-time``) this process's CPU time, which on a machine
#: loaded by other work (and with BLAS on one thread) leaves out the time spent waiting for a
#: core.
CLOCK = time.perf_counter


def seconds(call) -> float:
    gc.collect()
    start = CLOCK()
    call()
    return CLOCK() - start


def polynn_fit(net: pn.Sequential, X: np.ndarray, y: np.ndarray, weights: list, epochs: int):
    net.set_weights(weights)
    return seconds(
        lambda: net.fit(
            X,
            y,
            loss="cross_entropy",
            optimizer=pn.SGD(0.01),
            epochs=epochs,
            batch_size=BATCH,
            shuffle=False,
            verbose=0,
        )  # fmt: skip
    )


def numpy_loop(X: np.ndarray, y: np.ndarray, weights: list, epochs: int) -> float:
    copies = [w.copy() for w in weights]
    return seconds(lambda: reference.train_mlp(X, y, copies, 0.01, BATCH, epochs, zero_d=True))


def median_seconds(call, repeats: int = 21) -> float:
    times = []
    for _ in range(repeats):
        start = CLOCK()
        call()
        times.append(CLOCK() - start)
    return statistics.median(times)


def pieces(net: pn.Sequential, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Each per-fit piece timed alone, in seconds."""
    loss = pn.losses.get_loss("cross_entropy", net.backend)
    kept = [*net.params, *net.buffers]
    snapshot = Snapshot(kept, net.backend)
    X64 = X.astype(np.float64)  # data as NumPy makes it by default: cast for each fit
    return {
        "data checks (X and the labels)": median_seconds(lambda: pairs(net, X, y, loss)),
        "the same, X in float64": median_seconds(lambda: pairs(net, X64, y, loss)),
        "copy of the weights (Snapshot)": median_seconds(lambda: Snapshot(kept, net.backend)),
        "check of the weights after the last update": median_seconds(snapshot.finite),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 15)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the longer fit")
    parser.add_argument("--threads", type=int, default=None, help="limit BLAS to this many")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time this process's CPU time, not wall-clock"
    )
    args = parser.parse_args(argv)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    rounds = args.rounds if args.rounds is not None else (5 if args.quick else 15)
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    print("\n".join(run.machine_lines(None)[:-1]))
    net, X, y, weights = workload()
    polynn_fit(net, X, y, weights, 1)  # warm-up
    numpy_loop(X, y, weights, 1)
    E = args.epochs
    times: dict[str, list[float]] = {"polynn 1": [], "numpy 1": [], "polynn E": [], "numpy E": []}
    for _ in range(rounds):
        times["polynn 1"].append(polynn_fit(net, X, y, weights, 1))
        times["numpy 1"].append(numpy_loop(X, y, weights, 1))
        times["polynn E"].append(polynn_fit(net, X, y, weights, E) / E)
        times["numpy E"].append(numpy_loop(X, y, weights, E) / E)
    p1, n1, pE, nE = (times[k] for k in ("polynn 1", "numpy 1", "polynn E", "numpy E"))
    epoch = statistics.median(nE)
    extra = statistics.median((a - b) - (c - d) for a, b, c, d in zip(p1, n1, pE, nE))
    parts = pieces(net, X, y)
    lines = [
        "",
        f"| {ROWS:,} rows, batches of {BATCH}, {rounds} rounds | ms | share of an epoch |",
        "|---|---:|---:|",
        f"| epoch of the NumPy loop, within {E}-epoch calls (median) | {epoch * 1e3:.1f} | |",
        f"| polynn / NumPy, one-epoch calls (median of the rounds' ratios) | "
        f"{statistics.median(a / b for a, b in zip(p1, n1)):.3f} | |",
        f"| polynn / NumPy, {E}-epoch calls | "
        f"{statistics.median(a / b for a, b in zip(pE, nE)):.3f} | |",
        f"| per-fit cost (polynn's excess in one-epoch calls less its excess per epoch) | "
        f"{extra * 1e3:.2f} | {extra / epoch:.1%} |",
    ]
    for name, took in parts.items():
        lines.append(f"| - {name}, alone | {took * 1e3:.2f} | {took / epoch:.1%} |")
    total = sum(parts.values()) - parts["the same, X in float64"]
    lines.append(f"| - the three (X in float32), alone | {total * 1e3:.2f} | {total / epoch:.1%} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
