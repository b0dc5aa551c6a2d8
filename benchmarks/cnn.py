"""Time a training step of the digits CNN (``examples/digits_cnn.py``) against PyTorch on the CPU.

    python benchmarks/cnn.py                 # 11 rounds, the table
    python benchmarks/cnn.py --quick         # 3 rounds
    python benchmarks/cnn.py --threads 1     # BLAS and PyTorch on one thread each

The network, in both libraries, from the same initial weights: ``Conv2D(1, 16, 3, padding=1)``,
ReLU, ``Conv2D(16, 32, 3, padding=1)``, ReLU, ``MaxPool2D(2)``, ``Flatten``, ``Dense(512, 10)``
on 8x8 one-channel images (PyTorch: ``nn.Conv2d``, ``nn.MaxPool2d`` and ``nn.Linear`` on NCHW
tensors, the Linear's weight columns permuted to its channels-first flattening), softmax
cross-entropy, plain SGD(lr=0.05), float32, batches of 64 rows, one ``fit`` epoch of k steps
against PyTorch's loop over the same batches. Rounds alternate the two (as
``benchmarks/run.py``); the ratio is the median of the per-round ratios. Before timing, the
losses after one epoch are compared (they must agree: the same arithmetic).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import TORCH_PAUSE_S, fmt_time, machine_lines, timed  # noqa: E402

import polynn as pn  # noqa: E402

BATCH, STEPS, LR = 64, 40, 0.05


def data() -> tuple[np.ndarray, np.ndarray]:
    """STEPS batches of random 8x8 images in [0, 1] (the digits' scale) and labels."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 1.0, size=(BATCH * STEPS, 8, 8, 1)).astype(np.float32)
    return X, rng.integers(0, 10, size=BATCH * STEPS)


def polynn_net() -> pn.Sequential:
    return pn.Sequential(
        pn.Conv2D(1, 16, 3, padding=1), pn.ReLU(),
        pn.Conv2D(16, 32, 3, padding=1), pn.ReLU(),
        pn.MaxPool2D(2), pn.Flatten(), pn.Dense(512, 10),
        backend="numpy", dtype="float32", seed=0,
    )  # fmt: skip


def setup_polynn(weights: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> Any:
    net = polynn_net()
    net.set_weights(weights)
    optimizer = pn.SGD(lr=LR)

    def run() -> float:
        hist = net.fit(X, y, loss="cross_entropy", optimizer=optimizer, epochs=1,
                       batch_size=BATCH, shuffle=False, verbose=0)  # fmt: skip
        return hist.history["loss"][-1]

    return run


def setup_torch(torch: Any, weights: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> Any:
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 10),
    )  # fmt: skip
    W1, b1, W2, b2, W3, b3 = weights
    # polynn flattens (height, width, channels), PyTorch (channels, height, width)
    W3 = W3.reshape(4, 4, 32, 10).transpose(2, 0, 1, 3).reshape(512, 10)
    with torch.no_grad():
        for module, W, b in ((model[0], W1, b1), (model[2], W2, b2)):
            module.weight.copy_(torch.from_numpy(W.transpose(3, 2, 0, 1).copy()))
            module.bias.copy_(torch.from_numpy(b))
        model[6].weight.copy_(torch.from_numpy(W3.T.copy()))
        model[6].bias.copy_(torch.from_numpy(b3))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    Xt = torch.from_numpy(X.transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(y)

    def run() -> float:
        losses = []
        for start in range(0, Xt.shape[0], BATCH):
            optimizer.zero_grad()
            loss = loss_fn(model(Xt[start : start + BATCH]), yt[start : start + BATCH])
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses).mean().item()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="BLAS and PyTorch threads")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 11)
    try:
        import torch
    except ImportError as exc:
        print(f"PyTorch cannot be imported ({exc}): nothing to compare with.")
        return 1
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
    print("\n".join(machine_lines(torch)))

    X, y = data()
    weights = polynn_net().get_weights()
    losses = {"polynn": setup_polynn(weights, X, y)(), "torch": setup_torch(torch, weights, X, y)()}
    if abs(losses["polynn"] - losses["torch"]) > 1e-4 * max(1.0, abs(losses["torch"])):
        print(f"WARNING: the epoch losses differ: {losses}")
    impls = {
        "polynn": lambda: setup_polynn(weights, X, y),
        "torch": lambda: setup_torch(torch, weights, X, y),
    }
    times: dict[str, list[float]] = {name: [] for name in impls}
    for round_ in range(repeats + 1):  # round 0 is the warm-up
        for name, setup in impls.items():
            seconds = timed(setup()) / STEPS
            if round_ > 0:
                times[name].append(seconds)
            if name == "torch":
                time.sleep(TORCH_PAUSE_S)
    ratio = statistics.median(a / b for a, b in zip(times["polynn"], times["torch"]))
    print(f"\nepoch losses: polynn {losses['polynn']:.6f}, PyTorch {losses['torch']:.6f}")
    print(f"{STEPS} steps per timed call, {repeats} rounds\n")
    print("| workload | polynn | PyTorch | polynn / PyTorch |")
    print("|---|---:|---:|---:|")
    print(
        f"| digits CNN, batch {BATCH}, float32 | {fmt_time(statistics.median(times['polynn']))} "
        f"| {fmt_time(statistics.median(times['torch']))} | {ratio:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
