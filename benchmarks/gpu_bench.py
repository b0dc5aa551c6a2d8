"""GPU benchmark and NumPy/CuPy parity check for polynn.

The workload: a 784-1024-1024-10 ReLU MLP trained with softmax cross-entropy on integer
labels, float32, at batch 256 and 4096. For each batch size it times one training step
(``net.fit`` over k batches of one epoch, ``verbose=0``, ``shuffle=False``, the data already
on the device, the device synchronised before the clock stops) on

* polynn on CuPy,
* polynn on NumPy (fewer steps: it runs on the CPU),
* PyTorch on CUDA (a plain ``nn.Sequential`` of ``Linear``/``ReLU`` with ``CrossEntropyLoss``
  and the same optimizer), run in a subprocess so that a torch failure cannot take the rest
  down; skipped when torch or ``torch.cuda`` is unavailable.

It also measures the card's float32 matmul rate (a CuPy 8192x8192 sgemm) and reports each
workload's achieved matmul rate as a fraction of it, and checks parity: the same seed and
data trained for 100 steps on NumPy and on CuPy must give the same weights (float64: max
absolute difference <= 1e-10; float32: max relative difference <= 1e-4).

    python benchmarks/gpu_bench.py            # full run (about a minute or two on an H100)
    python benchmarks/gpu_bench.py --quick    # a short run

It writes ``benchmarks/RESULTS-gpu.md`` (``--out`` to change) and prints the table. Without
CuPy or without a CUDA device it says so and exits 0. It exits 1 when a polynn-on-CuPy
measurement fails or a parity target is missed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = (784, 1024, 1024, 10)
BATCHES = (256, 4096)
SEED = 0
LR_SGD = 0.01
LR_ADAM = 1e-3
PARITY_BATCH = 128
PARITY_TARGETS = {"float64": ("max abs", 1e-10), "float32": ("max rel", 1e-4)}


# -- the workload ------------------------------------------------------------------------------
def matmul_flops(batch: int) -> int:
    """Matmul FLOPs of one training step: forward (2·B·in·out per Dense), the weight gradient
    (the same again) and the input gradient (the same, except for the first layer, whose input
    gradient is not computed by polynn nor by torch)."""
    pairs = list(zip(SIZES[:-1], SIZES[1:]))
    total = sum(i * o for i, o in pairs)
    return 2 * batch * (3 * total - pairs[0][0] * pairs[0][1])


def n_params() -> int:
    return sum(i * o + o for i, o in zip(SIZES[:-1], SIZES[1:]))


def host_data(rows: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped data: pixels in [0, 1) as float32 and integer labels 0..9."""
    rng = np.random.default_rng(seed)
    X = rng.random((rows, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], size=rows, dtype=np.int64)
    return X, y


def make_net(pn: Any, backend: Any, dtype: str) -> Any:
    return pn.Sequential(
        pn.Dense(784, 1024),
        pn.ReLU(),
        pn.Dense(1024, 1024),
        pn.ReLU(),
        pn.Dense(1024, 10),
        backend=backend,
        dtype=dtype,
        seed=SEED,
    )


def make_optimizer(pn: Any, name: str) -> Any:
    return pn.SGD(lr=LR_SGD) if name == "sgd" else pn.Adam(lr=LR_ADAM)


def optimizer_label(name: str) -> str:
    return f"SGD(lr={LR_SGD})" if name == "sgd" else f"Adam(lr={LR_ADAM})"


# -- timing ------------------------------------------------------------------------------------
def time_polynn(
    pn: Any,
    backend: Any,
    X: Any,
    y: Any,
    batch: int,
    steps: int,
    repeats: int,
    warmup: int,
    optimizer: str,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Median seconds per training step of ``net.fit`` over ``steps`` batches of one epoch."""
    net = make_net(pn, backend, "float32")
    opt = make_optimizer(pn, optimizer)
    rows = batch * steps
    Xs, ys = X[:rows, ...], y[:rows, ...]

    def one_epoch() -> None:
        net.fit(
            Xs,
            ys,
            loss="cross_entropy",
            optimizer=opt,
            epochs=1,
            batch_size=batch,
            shuffle=False,
            verbose=0,
        )

    for _ in range(warmup):
        one_epoch()
    net.backend.synchronize()
    times = []
    for _ in range(repeats):
        if times and deadline is not None and time.perf_counter() > deadline:
            break
        net.backend.synchronize()
        start = time.perf_counter()
        one_epoch()
        net.backend.synchronize()
        times.append((time.perf_counter() - start) / steps)
    return {"s_per_step": statistics.median(times), "steps": steps, "repeats": len(times)}


def torch_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a subprocess: the same workload on PyTorch, one result per batch size."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        return {"skipped": f"torch cannot be imported ({type(exc).__name__}: {exc})"}
    device = spec["device"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        return {"skipped": "torch.cuda is not available", "version": torch.__version__}
    info = {"version": torch.__version__, "cuda": torch.version.cuda}
    if device.startswith("cuda"):
        # Plain float32 arithmetic, like CuPy's default (CUPY_TF32 unset): no TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        info["tf32"] = False
        sync = torch.cuda.synchronize
    else:

        def sync() -> None:
            pass

    torch.manual_seed(SEED)
    results = {}
    for batch, steps in zip(spec["batches"], spec["steps"]):
        X_host, y_host = host_data(batch * steps)
        X = torch.as_tensor(X_host, device=device)
        y = torch.as_tensor(y_host, device=device)
        layers = []
        for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(SIZES) - 2:
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers).to(device)
        if spec["optimizer"] == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=LR_SGD)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=LR_ADAM)
        loss_fn = torch.nn.CrossEntropyLoss()

        def one_epoch(X=X, y=y, model=model, opt=opt, loss_fn=loss_fn, batch=batch) -> None:
            losses = []
            for start in range(0, X.shape[0], batch):
                xb, yb = X[start : start + batch], y[start : start + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
            torch.stack(losses).cpu()  # like polynn: the epoch's losses come to the host once

        for _ in range(spec["warmup"]):
            one_epoch()
        sync()
        times = []
        for _ in range(spec["repeats"]):
            sync()
            start = time.perf_counter()
            one_epoch()
            sync()
            times.append((time.perf_counter() - start) / steps)
        results[str(batch)] = {
            "s_per_step": statistics.median(times),
            "steps": steps,
            "repeats": len(times),
        }
        del X, y, model, opt
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    info["results"] = results
    return info


def run_torch(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``torch_worker`` in a subprocess; its answer is the last line of its stdout."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"the torch subprocess ran past {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"the torch subprocess exited {proc.returncode}: " + " | ".join(tail)}


def sgemm_rate(cupy: Any, n: int, repeats: int) -> dict[str, Any]:
    """Median float32 matmul rate of the current device, in TFLOP/s (CuPy, n x n x n)."""
    rng = cupy.random.default_rng(SEED)
    a = rng.standard_normal((n, n), dtype=cupy.float32)
    b = rng.standard_normal((n, n), dtype=cupy.float32)
    c = cupy.empty((n, n), dtype=cupy.float32)
    for _ in range(3):
        cupy.matmul(a, b, out=c)
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        cupy.matmul(a, b, out=c)
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    seconds = statistics.median(times)
    del a, b, c
    return {"n": n, "seconds": seconds, "tflops": 2 * n**3 / seconds / 1e12}


# -- parity ------------------------------------------------------------------------------------
def parity(pn: Any, gpu: Any, dtype: str, steps: int) -> dict[str, Any]:
    """Train the same network from the same seed on the same host data on NumPy and on the
    GPU backend; compare the weights (in float64 on the host)."""
    rows = PARITY_BATCH * steps
    rng = np.random.default_rng(SEED + 1)
    X = rng.random((rows, SIZES[0]))
    y = rng.integers(0, SIZES[-1], size=rows)
    initial, trained = [], []
    for backend in ("numpy", gpu):
        net = make_net(pn, backend, dtype)
        initial.append(net.get_weights())
        net.fit(
            X,
            y,
            loss="cross_entropy",
            optimizer=pn.SGD(lr=LR_SGD),
            epochs=1,
            batch_size=PARITY_BATCH,
            shuffle=False,
            verbose=0,
        )
        trained.append([np.asarray(w, dtype=np.float64) for w in net.get_weights()])
    same_init = all(np.array_equal(a, b) for a, b in zip(*initial))
    max_abs = max(float(np.max(np.abs(a - b))) for a, b in zip(*trained))
    max_rel = max(
        float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-300))
        for a, b in zip(*trained)
    )
    kind, target = PARITY_TARGETS[dtype]
    value = max_abs if kind == "max abs" else max_rel
    return {
        "dtype": dtype,
        "steps": steps,
        "identical_initial_weights": same_init,
        "max_abs": max_abs,
        "max_rel": max_rel,
        "criterion": kind,
        "target": target,
        "ok": bool(same_init and value <= target),
    }


# -- reporting ---------------------------------------------------------------------------------
def fmt_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def results_table(rows: list[dict[str, Any]], peak: float | None) -> list[str]:
    head = [
        "batch",
        "implementation",
        "ms/step",
        "samples/s",
        "TFLOP/s",
        "% of sgemm",
        "steps x reps",
    ]
    lines = [fmt_row(head), fmt_row(["---:", "---", "---:", "---:", "---:", "---:", "---:"])]
    for row in rows:
        if "s_per_step" not in row:
            note = row.get("skipped") or row.get("error") or "not measured"
            cells = [str(row["batch"]), row["impl"], "-", "-", "-", "-", note]
        else:
            s = row["s_per_step"]
            tflops = matmul_flops(row["batch"]) / s / 1e12
            share = f"{100 * tflops / peak:.1f}%" if peak else "-"
            cells = [
                str(row["batch"]),
                row["impl"],
                f"{1e3 * s:.3f}",
                f"{row['batch'] / s:,.0f}",
                f"{tflops:.2f}",
                share,
                f"{row['steps']} x {row['repeats']}",
            ]
        lines.append(fmt_row(cells))
    return lines


def ratio_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    by = {(r["batch"], r["impl"]): r.get("s_per_step") for r in rows}
    for batch in BATCHES:
        gpu = by.get((batch, "polynn-cupy"))
        if not gpu:
            continue
        parts = []
        if by.get((batch, "polynn-numpy")):
            speedup = by[(batch, "polynn-numpy")] / gpu
            parts.append(f"{speedup:.1f}x the speed of polynn-numpy")
        if by.get((batch, "torch-cuda")):
            parts.append(f"{gpu / by[(batch, 'torch-cuda')]:.2f}x the step time of torch-cuda")
        if parts:
            out.append(f"- batch {batch}: polynn-cupy runs at " + ", ".join(parts) + ".")
    return out


def parity_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        fmt_row(["dtype", "steps", "same initial weights", "max abs diff", "max rel diff",
                 "target", "result"]),
        fmt_row(["---", "---:", "---", "---:", "---:", "---", "---"]),
    ]  # fmt: skip
    for r in results:
        if "error" in r:
            lines.append(fmt_row([r["dtype"], "-", "-", "-", "-", "-", "ERROR: " + r["error"]]))
            continue
        lines.append(
            fmt_row(
                [
                    r["dtype"],
                    str(r["steps"]),
                    "yes" if r["identical_initial_weights"] else "NO",
                    f"{r['max_abs']:.3e}",
                    f"{r['max_rel']:.3e}",
                    f"{r['criterion']} <= {r['target']:g}",
                    "ok" if r["ok"] else "FAIL",
                ]
            )
        )
    return lines


def versions(cupy: Any, pn: Any, device: int, torch_info: dict[str, Any]) -> dict[str, str]:
    props = cupy.cuda.runtime.getDeviceProperties(device)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)

    def cuda_version(v: int) -> str:
        return f"{v // 1000}.{(v % 1000) // 10}"

    torch_text = torch_info.get("version", "not available")
    if torch_info.get("cuda"):
        torch_text += f" (CUDA {torch_info['cuda']})"
    return {
        "GPU": f"{name} (device {device}, {props['totalGlobalMem'] / 2**30:.0f} GiB)",
        "CUDA runtime (CuPy)": cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
        "CUDA driver": cuda_version(cupy.cuda.runtime.driverGetVersion()),
        "CuPy": cupy.__version__,
        "PyTorch": torch_text,
        "NumPy": np.__version__,
        "polynn": pn.__version__,
        "Python": platform.python_version(),
        "CPU cores": str(os.cpu_count()),
        "CUPY_TF32": os.environ.get("CUPY_TF32", "unset (no TF32)"),
    }


# -- main --------------------------------------------------------------------------------------
def probe_gpu(device: int) -> tuple[Any, str | None]:
    """CuPy and None, or None and the reason no GPU can be used."""
    try:
        import cupy
    except Exception as exc:
        return None, f"CuPy cannot be imported ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy finds no usable CUDA device ({type(exc).__name__}: {exc})"
    if count == 0:
        return None, "CuPy finds no CUDA device"
    if not 0 <= device < count:
        return None, f"there is no CUDA device {device} (found {count})"
    return cupy, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--device", type=int, default=0, help="CUDA device number")
    parser.add_argument("--out", default=str(HERE / "RESULTS-gpu.md"), help="results markdown")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    parser.add_argument("--no-numpy", action="store_true", help="skip the polynn-numpy column")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds; later NumPy repeats are cut"
    )
    parser.add_argument("--torch-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.torch_worker is not None:
        try:
            answer = torch_worker(json.loads(args.torch_worker))
        except Exception as exc:
            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
        return 0

    t0 = time.perf_counter()
    cupy, reason = probe_gpu(args.device)
    if cupy is None:
        print(f"gpu_bench: no GPU: {reason}; nothing to measure (exit 0).", flush=True)
        return 0

    import polynn as pn

    quick = args.quick
    budget = args.budget if args.budget is not None else (60.0 if quick else 140.0)
    deadline = t0 + budget
    gpu_steps = {256: 20, 4096: 5} if quick else {256: 100, 4096: 25}
    gpu_repeats, gpu_warmup = (3, 1) if quick else (7, 2)
    cpu_steps = {256: 3, 4096: 1} if quick else {256: 10, 4096: 3}
    cpu_repeats = 2 if quick else 3
    parity_steps = 20 if quick else 100
    failed = False

    print(f"gpu_bench: {'quick' if quick else 'full'} run on CUDA device {args.device}", flush=True)
    gpu = pn.backends.get("cupy", args.device)

    with gpu.context():
        try:
            peak = sgemm_rate(cupy, 8192, 5 if quick else 20)
            print(f"gpu_bench: sgemm {peak['n']}: {peak['tflops']:.1f} TFLOP/s", flush=True)
        except Exception as exc:
            traceback.print_exc()
            peak = {"error": f"{type(exc).__name__}: {exc}"}
        cupy.get_default_memory_pool().free_all_blocks()

    parities = []
    for dtype in ("float64", "float32"):
        try:
            result = parity(pn, gpu, dtype, parity_steps)
        except Exception as exc:
            traceback.print_exc()
            result = {"dtype": dtype, "error": f"{type(exc).__name__}: {exc}", "ok": False}
        parities.append(result)
        failed |= not result["ok"]
        print(f"gpu_bench: parity {dtype}: {json.dumps(result)}", flush=True)

    rows: list[dict[str, Any]] = []
    X_host, y_host = host_data(max(b * gpu_steps[b] for b in BATCHES))
    X_gpu, y_gpu = gpu.from_numpy(X_host), gpu.from_numpy(y_host)
    for batch in BATCHES:
        row: dict[str, Any] = {"batch": batch, "impl": "polynn-cupy"}
        try:
            row.update(
                time_polynn(
                    pn, gpu, X_gpu, y_gpu, batch, gpu_steps[batch], gpu_repeats, gpu_warmup,
                    args.optimizer,
                )
            )  # fmt: skip
        except Exception as exc:
            traceback.print_exc()
            row["error"] = f"{type(exc).__name__}: {exc}"
            failed = True
        rows.append(row)
        print(f"gpu_bench: {json.dumps(row)}", flush=True)
    del X_gpu, y_gpu
    cupy.get_default_memory_pool().free_all_blocks()

    if args.no_torch:
        torch_info: dict[str, Any] = {"skipped": "--no-torch"}
    else:
        spec = {
            "device": f"cuda:{args.device}",
            "batches": list(BATCHES),
            "steps": [gpu_steps[b] for b in BATCHES],
            "repeats": gpu_repeats,
            "warmup": gpu_warmup,
            "optimizer": args.optimizer,
        }
        torch_info = run_torch(spec, timeout=max(deadline - time.perf_counter(), 30))
    for batch in BATCHES:
        row = {"batch": batch, "impl": "torch-cuda"}
        if "results" in torch_info:
            row.update(torch_info["results"].get(str(batch), {"error": "no result"}))
        else:
            row["skipped" if "skipped" in torch_info else "error"] = torch_info.get(
                "skipped", torch_info.get("error")
            )
        rows.append(row)
        print(f"gpu_bench: {json.dumps(row)}", flush=True)

    for batch in BATCHES:
        row = {"batch": batch, "impl": "polynn-numpy"}
        if args.no_numpy:
            row["skipped"] = "--no-numpy"
        elif time.perf_counter() > deadline:
            row["skipped"] = "time budget spent"
        else:
            try:
                row.update(
                    time_polynn(
                        pn, "numpy", X_host, y_host, batch, cpu_steps[batch], cpu_repeats, 1,
                        args.optimizer, deadline,
                    )
                )  # fmt: skip
            except Exception as exc:
                traceback.print_exc()
                row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        print(f"gpu_bench: {json.dumps(row)}", flush=True)

    order = {"polynn-cupy": 0, "torch-cuda": 1, "polynn-numpy": 2}
    rows.sort(key=lambda r: (r["batch"], order[r["impl"]]))
    info = versions(cupy, pn, args.device, torch_info)
    peak_tflops = peak.get("tflops")
    elapsed = time.perf_counter() - t0

    table = results_table(rows, peak_tflops)
    md = [
        "# polynn on the GPU: benchmark and NumPy/CuPy parity",
        "",
        f"Written by `python benchmarks/gpu_bench.py{' --quick' if quick else ''}` on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"in {elapsed:.0f} s.",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "## Training step time",
        "",
        f"784-1024-1024-10 ReLU MLP ({n_params():,} parameters), softmax cross-entropy on "
        f"integer labels, float32, {optimizer_label(args.optimizer)} in every column. One "
        "step = forward, backward and update of one batch; timed as `net.fit` over k batches "
        "of one epoch (`shuffle=False`, `verbose=0`, data already on the device, device "
        "synchronised before the clock stops), per step, median over repeats after warm-up. "
        "torch-cuda: `nn.Sequential` of `Linear`/`ReLU`, `CrossEntropyLoss`, the same optimizer, "
        "TF32 off. TFLOP/s counts matmul FLOPs only, "
        "2·B·(3·Σ in·out − 784·1024) per step (6·params·batch would be 14% more: the first "
        "layer's input gradient is not computed).",
        "",
        (
            f"Measured float32 matmul rate (CuPy sgemm {peak['n']}x{peak['n']}, median): "
            f"**{peak_tflops:.1f} TFLOP/s**; '% of sgemm' is the workload's rate against it."
            if peak_tflops
            else f"sgemm rate not measured: {peak.get('error')}"
        ),
        "",
        *table,
        "",
        *ratio_lines(rows),
        "",
        "## Parity: NumPy vs CuPy",
        "",
        f"Same seed and host data, {parity_steps} SGD(lr={LR_SGD}) steps of batch "
        f"{PARITY_BATCH} on each backend, weights compared in float64 on the host. max rel diff "
        "= the largest over the weight arrays of max|numpy - cupy| / max|numpy|.",
        "",
        *parity_lines(parities),
        "",
    ]
    text = "\n".join(md)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"gpu_bench: wrote {out}", flush=True)
    except OSError as exc:
        print(f"gpu_bench: could not write {out}: {exc}", flush=True)
    print()
    print("\n".join(table))
    print()
    print("\n".join(ratio_lines(rows)))
    print()
    print("\n".join(parity_lines(parities)))
    print(f"\ngpu_bench: done in {elapsed:.0f} s; {'FAILED' if failed else 'ok'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
