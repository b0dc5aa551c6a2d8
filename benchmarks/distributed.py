"""Samples per second of data-parallel training on this machine: 1, 2, ... MPI ranks.

    python benchmarks/distributed.py                 # ranks 1 and 2 (needs polynn[mpi])
    python benchmarks/distributed.py --ranks 1 2 4

Each rank uses one BLAS thread. The network is the MNIST-size 784-1024-1024-10 ReLU MLP of
``run.py``'s large workload (float32, softmax cross-entropy, SGD), with a global batch of 256
rows per step (each rank computes its share), timed as the median of repeated ``fit`` calls of
one epoch of k steps on every rank, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from polynn.backends.mpi import mpiexec as launcher

BATCH, STEPS, REPEATS = 256, 24, 5


def worker() -> None:
    import polynn as pn

    dist = pn.distributed.MPI()
    rng = np.random.default_rng(0)
    X = rng.random((BATCH * STEPS, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=len(X))
    net = pn.Sequential(
        pn.Dense(784, 1024), pn.ReLU(), pn.Dense(1024, 1024), pn.ReLU(), pn.Dense(1024, 10),
        seed=0,
    )  # fmt: skip
    optimizer = pn.SGD(0.01)

    def epoch() -> None:
        net.fit(X, y, loss="cross_entropy", optimizer=optimizer, batch_size=BATCH,
                shuffle=False, verbose=0, distributed=dist)  # fmt: skip

    epoch()
    times = []
    for _ in range(REPEATS):
        dist.comm.Barrier()
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    if dist.is_root:
        print(json.dumps({"ranks": dist.size, "seconds": statistics.median(times)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return 0
    mpiexec, extra = launcher()
    if mpiexec is None:
        print('no mpiexec beside mpi4py or on the PATH: pip install "polynn[mpi]"')
        return 1
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    rows = []
    for ranks in args.ranks:
        done = subprocess.run(
            [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker"],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = BATCH * STEPS / rows[0]["seconds"]
    print(f"784-1024-1024-10 ReLU MLP, float32, global batch {BATCH}, one BLAS thread per rank, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print("| ranks | samples/s | speed-up |")
    print("|---:|---:|---:|")
    for row in rows:
        rate = BATCH * STEPS / row["seconds"]
        print(f"| {row['ranks']} | {rate:,.0f} | {rate / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
