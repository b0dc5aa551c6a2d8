"""Instructions per training step of the tutorial XOR network, counted by valgrind.

Wall-clock time on a shared machine varies by tens of percent from run to run; the number
of instructions executed does not. This counts them with callgrind for ``polynn.fit`` and
for the hand-written loop of ``reference.py`` (with Python-float and with 0-d scalars), each
at two epoch counts, so that start-up cancels out. OpenBLAS runs with one thread: its idle
worker threads spin, and callgrind would count a varying number of their instructions (on
4x2 matrices OpenBLAS computes on one thread anyway). With that, two runs agree to within
about 10 instructions per step:

    python benchmarks/instructions.py            # needs valgrind on the PATH (about 2 min)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PROGRAM = """
import sys
import numpy as np
sys.path.insert(0, {here!r})
import reference
import polynn as pn
which, epochs = sys.argv[1], int(sys.argv[2])
X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
y = np.array([[0], [1], [1], [0]], float)
net = pn.Sequential(pn.Dense(2, 2), pn.Sigmoid(), pn.Dense(2, 1), pn.Sigmoid(),
                    dtype="float64", seed=0)
if which == "polynn":
    net.fit(X, y, optimizer=pn.SGD(0.2), epochs=epochs, shuffle=False, verbose=0)
else:
    reference.train_xor(X, y, net.get_weights(), 0.2, epochs, zero_d=which == "reference_0d")
"""


def instructions(which: str, epochs: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            PROGRAM.format(here=str(HERE)),
            which,
            str(epochs),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1000, help="the epochs that are counted")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed; nothing to count")
        return
    per_step = {}
    for which in ("polynn", "reference", "reference_0d"):
        base = instructions(which, 100)
        per_step[which] = (instructions(which, 100 + args.epochs) - base) / args.epochs
    polynn = per_step["polynn"]
    print("| XOR 2-2-1, float64, full batch | instructions per step | polynn / this |")
    print("|---|---:|---:|")
    print(f"| polynn | {polynn:,.0f} | |")
    for which, title in (("reference", "NumPy by hand"), ("reference_0d", "NumPy, 0-d scalars")):
        print(f"| {title} | {per_step[which]:,.0f} | {polynn / per_step[which]:.3f} |")


if __name__ == "__main__":
    main()
