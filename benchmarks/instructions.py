"""Instructions per training step of the tutorial XOR network, counted by valgrind.

Wall-clock time on a shared machine varies by tens of percent from run to run; the number
of instructions executed does not (to a few percent: allocation and hashing vary). This
counts them with callgrind for ``polynn.fit`` and for the hand-written loop of
``reference.py``, each at two epoch counts, so that start-up cancels out:

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
    reference.train_xor(X, y, net.get_weights(), 0.2, epochs)
"""


def instructions(which: str, epochs: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
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
    for which in ("reference", "polynn"):
        base = instructions(which, 100)
        per_step[which] = (instructions(which, 100 + args.epochs) - base) / args.epochs
    print("| XOR 2-2-1, float64, full batch | instructions per step |")
    print("|---|---:|")
    print(f"| NumPy by hand | {per_step['reference']:,.0f} |")
    print(f"| polynn | {per_step['polynn']:,.0f} |")
    print(f"| polynn / NumPy | {per_step['polynn'] / per_step['reference']:.3f} |")


if __name__ == "__main__":
    main()
