"""Time polynn's ``fit`` against a hand-written NumPy loop and PyTorch, per training step.

    python benchmarks/run.py                      # full run, prints the tables
    python benchmarks/run.py --quick              # CI-sized, well under a minute
    python benchmarks/run.py --output benchmarks/RESULTS.md

Everything runs in one process. For each workload the three implementations are timed in
turn (polynn, NumPy, torch, polynn, NumPy, torch, ...) after a warm-up round, each from the
same initial weights; the table shows medians over the rounds, and each ratio is the median
of the per-round ratios (each round's implementations ran seconds apart, so the ratio is
less exposed to a noisy machine than a ratio of medians). After each torch measurement the
process sleeps, because PyTorch's idle worker threads keep spinning for about 0.1 s and slow
whatever NumPy runs next.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference  # noqa: E402  (the hand-written loops beside this file)

import polynn as pn  # noqa: E402

TORCH_PAUSE_S = 0.2


@dataclass
class Workload:
    name: str
    title: str
    sizes: tuple[int, ...]
    activation: str  # "sigmoid" or "relu"
    loss: str  # "mse" or "cross_entropy"
    dtype: str
    batch: int
    lr: float
    steps: int  # training steps per timed call
    data: dict[str, Any] = field(default_factory=dict)

    def epochs_and_rows(self) -> tuple[int, int]:
        """XOR: ``steps`` epochs of one full batch; the others: one epoch of ``steps``
        batches."""
        if self.loss == "mse":
            return self.steps, self.batch
        return 1, self.steps * self.batch


def make_workloads(quick: bool) -> list[Workload]:
    return [
        Workload(
            "xor",
            "XOR 2-2-1 sigmoid, batch 4 (full), float64, MSE, SGD(lr=0.2)",
            (2, 2, 1),
            "sigmoid",
            "mse",
            "float64",
            4,
            0.2,
            steps=500 if quick else 2000,
        ),
        Workload(
            "small",
            "64-128-10 ReLU, softmax cross-entropy, batch 32, float32, SGD(lr=0.05)",
            (64, 128, 10),
            "relu",
            "cross_entropy",
            "float32",
            32,
            0.05,
            steps=200 if quick else 500,
        ),
        Workload(
            "large",
            "784-1024-1024-10 ReLU, softmax cross-entropy, batch 256, float32, SGD(lr=0.01)",
            (784, 1024, 1024, 10),
            "relu",
            "cross_entropy",
            "float32",
            256,
            0.01,
            steps=3 if quick else 8,
        ),
    ]


# -- data and initial weights ------------------------------------------------------------------
def make_data(w: Workload) -> None:
    """Inputs, targets and initial weights, identical for every implementation."""
    rng = np.random.default_rng(0)
    _, rows = w.epochs_and_rows()
    if w.loss == "mse":
        X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=w.dtype)
        y = np.array([[0], [1], [1], [0]], dtype=w.dtype)
    else:
        X = rng.standard_normal((rows, w.sizes[0]), dtype=np.float32).astype(w.dtype)
        y = rng.integers(0, w.sizes[-1], size=rows)
    net = make_polynn(w)
    w.data = {"X": X, "y": y, "weights": net.get_weights(), "net": net}


def make_polynn(w: Workload) -> pn.Sequential:
    layers: list[pn.layers.Layer] = []
    for i, (a, b) in enumerate(zip(w.sizes, w.sizes[1:])):
        layers.append(pn.Dense(a, b))
        last = i == len(w.sizes) - 2
        if w.activation == "sigmoid":
            layers.append(pn.Sigmoid())
        elif not last:
            layers.append(pn.ReLU())
    return pn.Sequential(*layers, backend="numpy", dtype=w.dtype, seed=0)


# -- the three implementations: each returns a zero-argument training call ---------------------
def setup_polynn(w: Workload) -> Callable[[], Any]:
    net, X, y = w.data["net"], w.data["X"], w.data["y"]
    net.set_weights(w.data["weights"])
    optimizer = pn.SGD(lr=w.lr)
    epochs, _ = w.epochs_and_rows()
    batch_size = None if w.loss == "mse" else w.batch

    def run() -> Any:
        return net.fit(
            X,
            y,
            loss=w.loss,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=False,
            verbose=0,
        ).history["loss"]

    return run


def setup_numpy(w: Workload, zero_d: bool = False) -> Callable[[], Any]:
    X, y = w.data["X"], w.data["y"]
    weights = [a.copy() for a in w.data["weights"]]
    epochs, _ = w.epochs_and_rows()
    if w.loss == "mse":
        return lambda: reference.train_xor(X, y, weights, w.lr, epochs, zero_d)
    return lambda: reference.train_mlp(X, y, weights, w.lr, w.batch, epochs, zero_d)


def setup_torch(w: Workload, torch: Any) -> Callable[[], Any]:
    nn = torch.nn
    dtype = getattr(torch, w.dtype)
    modules: list[Any] = []
    weights = w.data["weights"]
    for i, (a, b) in enumerate(zip(w.sizes, w.sizes[1:])):
        linear = nn.Linear(a, b, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights[2 * i].T.copy()))
            linear.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
        modules.append(linear)
        if w.activation == "sigmoid":
            modules.append(nn.Sigmoid())
        elif i < len(w.sizes) - 2:
            modules.append(nn.ReLU())
    model = nn.Sequential(*modules)
    optimizer = torch.optim.SGD(model.parameters(), lr=w.lr)
    loss_fn = nn.MSELoss() if w.loss == "mse" else nn.CrossEntropyLoss()
    X = torch.from_numpy(w.data["X"])
    y = torch.from_numpy(w.data["y"])
    epochs, rows = w.epochs_and_rows()

    def run() -> Any:
        history = []
        for _ in range(epochs):
            losses = []
            for start in range(0, rows, w.batch):
                xb, yb = X[start : start + w.batch], y[start : start + w.batch]
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
            history.append(torch.stack(losses).mean().item())
        return history

    return run


# -- timing -----------------------------------------------------------------------------------
def timed(run: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def time_workload(w: Workload, repeats: int, torch: Any) -> dict[str, list[float]]:
    """Per-step seconds of each implementation, one list entry per round."""
    impls: dict[str, Callable[[], Callable[[], Any]]] = {
        "polynn": lambda: setup_polynn(w),
        "numpy": lambda: setup_numpy(w),
        "numpy_0d": lambda: setup_numpy(w, zero_d=True),
    }
    if torch is not None:
        impls["torch"] = lambda: setup_torch(w, torch)
    times: dict[str, list[float]] = {name: [] for name in impls}
    for round_ in range(repeats + 1):  # round 0 is the warm-up
        for name, setup in impls.items():
            run = setup()
            seconds = timed(run) / w.steps
            if round_ > 0:
                times[name].append(seconds)
            if name == "torch":
                time.sleep(TORCH_PAUSE_S)
    return times


def check_same_result(w: Workload, torch: Any) -> dict[str, float]:
    """The final epoch loss of each implementation: they must agree (same arithmetic)."""
    out = {
        "polynn": setup_polynn(w)()[-1],
        "numpy": setup_numpy(w)()[-1],
        "numpy_0d": setup_numpy(w, zero_d=True)()[-1],
    }
    if torch is not None:
        out["torch"] = setup_torch(w, torch)()[-1]
        time.sleep(TORCH_PAUSE_S)
    ref = out["numpy"]
    tol = 1e-9 if w.dtype == "float64" else 1e-4
    for name, value in out.items():
        if abs(value - ref) > tol * max(1.0, abs(ref)):
            print(f"WARNING: {w.name}: {name} ends at loss {value!r}, NumPy at {ref!r}")
    return out


# -- memory -----------------------------------------------------------------------------------
def minimum_bytes(w: Workload) -> int:
    """Parameters + gradients + optimizer state (none for plain SGD) + the activations of
    one batch (each layer's output: the Dense outputs and the activations after them)."""
    item = np.dtype(w.dtype).itemsize
    params = sum(a * b + b for a, b in zip(w.sizes, w.sizes[1:]))
    activations = 0
    for i, width in enumerate(w.sizes[1:]):
        last = i == len(w.sizes) - 2
        has_activation = w.activation == "sigmoid" or not last
        activations += w.batch * width * (2 if has_activation else 1)
    return item * (2 * params + activations)


class _MemoryPerEpoch(pn.Callback):
    def __init__(self) -> None:
        self.current: list[int] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.current.append(tracemalloc.get_traced_memory()[0])


def measure_memory(w: Workload, epochs_for_growth: int) -> dict[str, Any]:
    """Peak traced memory of one timed call of polynn and of NumPy (tracemalloc sees NumPy's
    array buffers), and polynn's current memory after epoch 2 vs after the last epoch."""
    item = np.dtype(w.dtype).itemsize
    params = item * sum(a * b + b for a, b in zip(w.sizes, w.sizes[1:]))
    result: dict[str, Any] = {"minimum": minimum_bytes(w), "params": params}
    # fit takes a NumPy X of the right dtype as it is (no copy), but turns integer labels
    # into one-hot rows for the whole data set: count those apart
    rows = w.data["X"].shape[0]
    result["inputs"] = 0 if w.loss == "mse" else rows * w.sizes[-1] * item
    for name, setup in (("polynn", setup_polynn), ("numpy", setup_numpy)):
        run = setup(w)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # the parameters exist before the call; count them, as the minimum does
        result[name] = peak - base + params
    # growth: polynn over several epochs (of fewer batches for the MLPs)
    net = w.data["net"]
    net.set_weights(w.data["weights"])
    X, y = w.data["X"], w.data["y"]
    rows = X.shape[0] if w.loss == "mse" else min(X.shape[0], 4 * w.batch)
    probe = _MemoryPerEpoch()
    gc.collect()
    tracemalloc.start()
    net.fit(
        X[:rows],
        y[:rows],
        loss=w.loss,
        optimizer=pn.SGD(lr=w.lr),
        epochs=epochs_for_growth,
        batch_size=None if w.loss == "mse" else w.batch,
        shuffle=False,
        verbose=0,
        callbacks=[probe],
    )
    tracemalloc.stop()
    result["growth_epochs"] = epochs_for_growth
    result["after_epoch_2"] = probe.current[1]
    result["after_last"] = probe.current[-1]
    return result


# -- reporting --------------------------------------------------------------------------------
def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return threadpool_info()


def machine_lines(torch: Any) -> list[str]:
    lines = [
        f"- CPU: {cpu_model()} ({platform.machine()}), {os.cpu_count()} logical cores "
        f"visible, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} "
        "usable by this process",
        f"- Python {platform.python_version()}, NumPy {np.__version__}, polynn {pn.__version__}",
    ]
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        lines.append(f"- load average at start (1, 5, 15 min): {load}")
    pools = blas_info()
    if not pools:
        lines.append("- BLAS: unknown (threadpoolctl is not installed)")
    for pool in pools:
        lines.append(
            f"- {pool.get('user_api')}: {pool.get('internal_api')} {pool.get('version')}, "
            f"kernel (threadpoolctl 'architecture'): {pool.get('architecture')}, "
            f"{pool.get('num_threads')} threads, threading layer {pool.get('threading_layer')}, "
            f"library {Path(pool.get('filepath', '')).name}"
        )
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    lines.append(
        f"- OPENBLAS_CORETYPE={coretype} (set in the environment; the kernel above is the one "
        "OpenBLAS reports using)"
        if coretype
        else "- OPENBLAS_CORETYPE is not set: OpenBLAS chose its kernel by probing the CPU"
    )
    if torch is not None:
        lines.append(f"- PyTorch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    else:
        lines.append("- PyTorch: not importable here; its column is skipped")
    return lines


def table(workloads: list[Workload], results: dict[str, dict[str, list[float]]]) -> list[str]:
    has_torch = any("torch" in r for r in results.values())
    head = (
        "| workload | polynn | NumPy by hand | polynn / NumPy | NumPy, 0-d scalars | "
        "polynn / that |"
    )
    rule = "|---|---:|---:|---:|---:|---:|"
    if has_torch:
        head += " PyTorch | polynn / PyTorch |"
        rule += "---:|---:|"
    lines = [head, rule]
    for w in workloads:
        r = results[w.name]
        row = (
            f"| {w.name} | {fmt_time(statistics.median(r['polynn']))} | "
            f"{fmt_time(statistics.median(r['numpy']))} | {ratio(r, 'numpy'):.2f} | "
            f"{fmt_time(statistics.median(r['numpy_0d']))} | {ratio(r, 'numpy_0d'):.2f} |"
        )
        if has_torch:
            if "torch" in r:
                row += f" {fmt_time(statistics.median(r['torch']))} | {ratio(r, 'torch'):.2f} |"
            else:
                row += " - | - |"
        lines.append(row)
    return lines


def ratio(r: dict[str, list[float]], other: str) -> float:
    return statistics.median(a / b for a, b in zip(r["polynn"], r[other]))


def memory_table(workloads: list[Workload], memory: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | minimum | polynn peak | NumPy peak | of which one-hot targets | "
        "polynn current after epoch 2 -> last |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for w in workloads:
        m = memory[w.name]
        growth = m["after_last"] - m["after_epoch_2"]
        per_epoch = growth / max(1, m["growth_epochs"] - 2)
        # History keeps a float and an int per epoch (about 70 B); more would be a leak
        verdict = "ok" if per_epoch < 1024 else "GROWS"
        lines.append(
            f"| {w.name} | {fmt_bytes(m['minimum'])} | {fmt_bytes(m['polynn'])} | "
            f"{fmt_bytes(m['numpy'])} | {fmt_bytes(m['inputs'])} | "
            f"{fmt_bytes(m['after_epoch_2'])} -> {fmt_bytes(m['after_last'])} "
            f"(epoch {m['growth_epochs']}; {per_epoch:+.0f} B/epoch, {verdict}) |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run, well under a minute")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per workload")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    parser.add_argument("--only", nargs="+", help="run only these workloads (xor small large)")
    parser.add_argument("--output", type=Path, help="also write the report (Markdown) here")
    parser.add_argument(
        "--jax", action="store_true", help="also time polynn on JAX (benchmarks/jax_steps.py)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="limit BLAS and PyTorch to this many threads (default: leave them as they are)",
    )
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 11)
    if repeats < 1:
        parser.error("--repeats must be at least 1")

    torch = None
    note = ""
    if args.no_torch:
        note = "PyTorch column skipped (--no-torch)."
    else:
        try:
            import torch  # type: ignore[no-redef]
        except ImportError as exc:
            note = f"PyTorch column skipped: torch cannot be imported ({exc})."
    if note:
        print(note)

    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)

    workloads = make_workloads(args.quick)
    if args.only:
        workloads = [w for w in workloads if w.name in args.only]
    machine = machine_lines(torch)
    print("\n".join(machine))
    results, memory, losses = {}, {}, {}
    for w in workloads:
        make_data(w)
        print(f"\n{w.name}: {w.title}; {w.steps} steps per timed call, {repeats} rounds")
        losses[w.name] = check_same_result(w, torch)
        # the large network gets fewer rounds: each is long and its noise small
        n = repeats if w.name != "large" else max(1, min(repeats, (repeats + 1) // 2))
        results[w.name] = time_workload(w, n, torch)
        for name, t in results[w.name].items():
            med, low = fmt_time(statistics.median(t)), fmt_time(min(t))
            print(f"  {name:8s} median {med}/step  (min {low})")
        memory[w.name] = measure_memory(w, 50 if w.loss == "mse" else (6 if args.quick else 10))

    report = [
        "## Machine",
        "",
        *machine,
        "",
        "## Time per training step (medians)",
        "",
        *table(workloads, results),
        "",
        "Ratios are medians of per-round ratios; rounds ran interleaved in one process.",
        '"NumPy by hand" writes its scalars as Python floats, as the tutorial does; "NumPy, '
        '0-d scalars" is the same loop with them as 0-d arrays of the dtype, as polynn keeps '
        'them, so "polynn / that" is what polynn\'s Python layer costs.',
        *([note] if note else []),
        "",
        "## Memory (tracemalloc: NumPy buffers and Python objects; parameters included)",
        "",
        *memory_table(workloads, memory),
        "",
    ]
    if args.jax:
        import jax_steps  # beside this script

        report += ["## JAX: compiled steps against a hand-written jax.jit loop", ""]
        report += [*jax_steps.report(jax_steps.measure(args.quick)), ""]
    print()
    print("\n".join(report))
    if args.output is not None:
        header = [
            "# polynn benchmark results",
            "",
            f"Written by `python benchmarks/run.py{' --quick' if args.quick else ''}"
            f"{f' --repeats {args.repeats}' if args.repeats is not None else ''}"
            f"{' --no-torch' if args.no_torch else ''}"
            f"{f' --threads {args.threads}' if args.threads is not None else ''}`.",
            "",
            "Workloads (time per step = one `fit` call over k steps, divided by k):",
            "",
            *[f"- **{w.name}**: {w.title}; k = {w.steps}" for w in workloads],
            "",
        ]
        args.output.write_text("\n".join(header + report))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
