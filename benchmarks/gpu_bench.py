"""GPU benchmark of polynn: step times, peak memory and float32 accuracy against PyTorch
and a hand-written fused CuPy loop.

The workload: a 784-1024-1024-10 ReLU MLP trained with softmax cross-entropy on integer
labels and plain SGD, float32, at batch 256, 4096 and 16384. One step is the forward pass,
backward pass and update of one batch, timed as one epoch of k batches (data already on the
device, losses read back once per epoch, the device synchronised before the clock stops),
the median over repeats after warm-up. Columns:

* ``polynn-cupy``: ``Sequential.fit`` on CuPy (``matmul_precision="highest"``);
* ``fused-cupy``: the same arithmetic written by hand with CuPy and its own fused kernels
  (bias + ReLU, ReLU backward, the cross-entropy gradient, the SGD update; bias gradients as
  ``ones @ g``): what polynn's kernels can reach, so ``polynn / fused`` is polynn's overhead;
* ``torch-cuda``: ``nn.Sequential`` of ``Linear``/``ReLU`` with ``CrossEntropyLoss``, in a
  subprocess (a torch failure cannot take the rest down), and ``polynn-torch``: polynn on its
  torch backend on the same GPU;
* a TF32 pair: ``polynn-cupy`` with ``matmul_precision="high"`` against ``torch-cuda`` with
  TF32 allowed (and the fused loop with TF32).

Peak memory is the largest amount of device memory one training step (a ``fit`` of one
batch, input checks included) holds beyond what was allocated before it (data, parameters and
optimizer state excluded): CuPy's pool allocations through a memory hook, PyTorch's
``max_memory_allocated``.

The limit and the launches: ``gemm-floor`` is the sum of the step's eight matrix products
(forward 3, weight gradients 3, input gradients 2) each timed alone with PyTorch in the same
precision, the floor for this network; ``kernels/step`` counts the CUDA kernels of one
polynn step (PyTorch's profiler over CUPTI), beside PyTorch's own.

Small models, where a step is bound by launches: the MLP at batch 256 (SGD and Adam) and the
MNIST-1D CNN of ``examples/mnist1d.py`` at batch 100 (Adam), polynn with ``compile=False``
and ``compile=True`` (the step replayed as a CUDA graph), against PyTorch eager and PyTorch
with its whole step captured by ``torch.cuda.graph`` (the anchor).

Accuracy: float32 training amplifies rounding, so NumPy and CuPy do not agree to 1e-4 after
100 steps; each float32 backend is compared with a float64 run of the same steps instead
(normwise relative error of the weights), and CuPy's error must be at most 1.25 times NumPy's.
float64 NumPy and CuPy must agree to 1e-10.

    python benchmarks/gpu_bench.py            # full run (about two minutes on an H200)
    python benchmarks/gpu_bench.py --quick    # a short run

It writes ``benchmarks/RESULTS-gpu.md`` (``--out`` to change) and prints the summary last.
Without CuPy or a CUDA device it says so and exits 0. It exits 1 when a polynn measurement
fails or an accuracy check is missed; the speed targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = (784, 1024, 1024, 10)
BATCHES = (256, 4096, 16384)
SEED = 0
LR = 0.01
ACCURACY_BATCH, ACCURACY_SLACK = 128, 1.25
MIB = 2**20


# -- the workload ------------------------------------------------------------------------------
def host_data(rows: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped data: pixels in [0, 1) as float32 and integer labels 0..9."""
    rng = np.random.default_rng(seed)
    X = rng.random((rows, SIZES[0]), dtype=np.float32)
    return X, rng.integers(0, SIZES[-1], size=rows, dtype=np.int64)


def make_net(pn: Any, backend: Any, dtype: str = "float32", precision: str = "highest") -> Any:
    """The benchmark's network; ``dtype`` may be a mixed-precision policy."""
    return pn.Sequential(
        pn.Dense(784, 1024), pn.ReLU(), pn.Dense(1024, 1024), pn.ReLU(), pn.Dense(1024, 10),
        backend=backend, dtype=dtype, seed=SEED, matmul_precision=precision,
    )  # fmt: skip


def make_cnn(pn: Any, backend: Any) -> Any:
    """The MNIST-1D CNN of ``examples/mnist1d.py --model cnn`` (inputs of 40 values)."""
    return pn.Sequential(
        pn.Reshape((40, 1)), pn.Conv1D(1, 25, 5, stride=2, padding=1), pn.ReLU(),
        pn.Conv1D(25, 25, 3, stride=2, padding=1), pn.ReLU(),
        pn.Conv1D(25, 25, 3, stride=2, padding=1), pn.ReLU(), pn.Flatten(), pn.Dense(125, 10),
        backend=backend, seed=SEED,
    )  # fmt: skip


#: The launch-bound cases: (name, batch, input features, optimizer).
SMALL = [("mlp-sgd", 256, 784, "sgd"), ("mlp-adam", 256, 784, "adam"),
         ("cnn-adam", 100, 40, "adam")]  # fmt: skip


#: How each column computes: polynn's (dtype, matmul_precision) for it.
MODES = {
    "fp32": ("float32", "highest"),
    "tf32": ("float32", "high"),
    "bf16": ("mixed_bfloat16", "highest"),
    "fp16": ("mixed_float16", "highest"),
}


def n_params() -> int:
    return sum(i * o + o for i, o in zip(SIZES[:-1], SIZES[1:]))


def plan(quick: bool) -> dict[str, Any]:
    return {
        "steps": {256: 20, 4096: 5, 16384: 3} if quick else {256: 100, 4096: 25, 16384: 10},
        "repeats": 3 if quick else 7,
        "warmup": 1 if quick else 2,
        "accuracy_steps": 20 if quick else 100,
    }


def fit_epoch(
    pn: Any, net: Any, X: Any, y: Any, batch: int, optimizer: Any = None, compile: Any = None
) -> Callable[[], None]:
    """One epoch of ``net.fit`` over ``(X, y)`` in batches, with one optimizer throughout
    (``SGD(lr=LR)`` by default); ``compile`` as ``fit`` takes it (None: its default)."""
    optimizer = pn.SGD(lr=LR) if optimizer is None else optimizer

    def epoch() -> None:
        net.fit(X, y, loss="cross_entropy", optimizer=optimizer, batch_size=batch,
                shuffle=False, verbose=0, compile=compile)  # fmt: skip

    return epoch


def timed(epoch: Callable[[], Any], sync: Callable[[], None], steps: int, repeats: int,
          warmup: int) -> dict[str, Any]:  # fmt: skip
    """Median seconds per step of ``epoch()`` (``steps`` steps each) over ``repeats``."""
    for _ in range(warmup):
        epoch()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        epoch()
        sync()
        times.append((time.perf_counter() - start) / steps)
    return {"s_per_step": statistics.median(times), "steps": steps, "repeats": repeats}


# -- CuPy: polynn and the hand-written fused loop ----------------------------------------------
class PeakMemory:
    """The largest number of bytes CuPy's memory pool handed out at once while active,
    beyond what was handed out when it started (a ``cupy.cuda.MemoryHook``)."""

    def __init__(self, cupy: Any) -> None:
        outer = self

        class Hook(cupy.cuda.MemoryHook):
            name = "polynn_peak"

            def malloc_postprocess(self, **kw: Any) -> None:
                outer.live += kw["mem_size"]
                outer.peak = max(outer.peak, outer.live)

            def free_postprocess(self, **kw: Any) -> None:
                outer.live -= kw["mem_size"]

        self.hook, self.live, self.peak = Hook(), 0, 0

    def measure(self, run: Callable[[], Any]) -> int:
        self.live = self.peak = 0
        with self.hook:
            run()
        return self.peak


def fused_kernels(cupy: Any) -> dict[str, Any]:
    """The hand-written loop's own kernels (independent of polynn's)."""

    def k(inputs: str, outputs: str, body: str, name: str) -> Any:
        return cupy.ElementwiseKernel(inputs, outputs, body, name)

    return {
        "bias_relu": k("T b", "T y", "T v = y + b; y = v > (T)0 ? v : (T)0;", "ref_bias_relu"),
        "relu_grad": k("T g, T y", "T d", "d = y > (T)0 ? g : (T)0;", "ref_relu_grad"),
        "ce": k(
            "T z, T m, T s, T t, T rows",
            "T d, T term",
            "T e = exp(z - m); d = (e / s - t) / rows; term = t * (z - m - log(s));",
            "ref_ce",
        ),  # fmt: skip
        "sgd": k("T g, T lr", "T p", "p -= lr * g;", "ref_sgd"),
    }


def fused_loop(cupy: Any, X: Any, Y: Any, weights: list[Any], batch: int) -> Callable[[], Any]:
    """One epoch of the hand-written fused training loop over ``(X, Y)`` (one-hot ``Y``)."""
    kern = fused_kernels(cupy)
    W1, b1, W2, b2, W3, b3 = weights
    params = weights
    ones = cupy.ones(batch, dtype=X.dtype)
    lr = cupy.asarray(LR, dtype=X.dtype)

    def step(x: Any, y: Any) -> Any:
        h1 = x @ W1
        kern["bias_relu"](b1, h1)
        h2 = h1 @ W2
        kern["bias_relu"](b2, h2)
        out = h2 @ W3 + b3
        m = out.max(axis=1, keepdims=True)
        s = cupy.exp(out - m).sum(axis=1, keepdims=True)
        d3, term = kern["ce"](out, m, s, y, float(len(x)))
        d2 = kern["relu_grad"](d3 @ W3.T, h2)
        d1 = kern["relu_grad"](d2 @ W2.T, h1)
        grads = [x.T @ d1, ones @ d1, h1.T @ d2, ones @ d2, h2.T @ d3, ones @ d3]
        for p, g in zip(params, grads):
            kern["sgd"](g, lr, p)
        return -term.sum() / len(x)

    def epoch() -> None:
        losses = [step(X[i : i + batch], Y[i : i + batch]) for i in range(0, len(X), batch)]
        cupy.stack(losses).get()

    return epoch


@contextlib.contextmanager
def cupy_tf32(cupy: Any, on: bool) -> Iterator[None]:
    from cupy._core import _routines_linalg as linalg

    old = linalg.get_compute_type(np.float32)
    new = linalg.COMPUTE_TYPE_TF32 if on else linalg.COMPUTE_TYPE_DEFAULT
    linalg.set_compute_type(np.float32, new)
    try:
        yield
    finally:
        linalg.set_compute_type(np.float32, old)


def cupy_rows(pn: Any, cupy: Any, gpu: Any, p: dict[str, Any]) -> list[dict[str, Any]]:
    """polynn-cupy in every mode and the fused loop in float32 and TF32, per batch size."""
    rows = []
    peak = PeakMemory(cupy)
    sync = gpu.synchronize
    for batch in BATCHES:
        steps = p["steps"][batch]
        X_host, y_host = host_data(batch * steps)
        X, y = gpu.from_numpy(X_host), gpu.from_numpy(y_host)
        Y = gpu.from_numpy(np.eye(SIZES[-1], dtype=np.float32)[y_host])
        for mode, (dtype, precision) in MODES.items():
            row = {"batch": batch, "impl": "polynn-cupy", "mode": mode}
            try:
                net = make_net(pn, gpu, dtype, precision)
                epoch = fit_epoch(pn, net, X, y, batch)
                row.update(timed(epoch, sync, steps, p["repeats"], p["warmup"]))
                row["peak_bytes"] = peak.measure(fit_epoch(pn, net, X[:batch], y[:batch], batch))
            except Exception as exc:
                traceback.print_exc()
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(f"gpu_bench: {json.dumps(row)}", flush=True)
            if mode not in ("fp32", "tf32"):
                continue
            row = {"batch": batch, "impl": "fused-cupy", "mode": mode}
            try:
                weights = [gpu.from_numpy(w) for w in make_net(pn, "numpy").get_weights()]
                with cupy_tf32(cupy, mode == "tf32"):
                    epoch = fused_loop(cupy, X, Y, weights, batch)
                    row.update(timed(epoch, sync, steps, p["repeats"], p["warmup"]))
                    one_step = fused_loop(cupy, X[:batch], Y[:batch], weights, batch)
                    row["peak_bytes"] = peak.measure(one_step)
            except Exception as exc:
                traceback.print_exc()
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(f"gpu_bench: {json.dumps(row)}", flush=True)
        del X, y, Y
        cupy.get_default_memory_pool().free_all_blocks()
    return rows


def small_rows(pn: Any, cupy: Any, gpu: Any, p: dict[str, Any]) -> list[dict[str, Any]]:
    """polynn-cupy on the launch-bound models, eager and compiled (a CUDA graph a step)."""
    rows = []
    steps = p["steps"][256]
    for name, batch, features, opt in SMALL:
        X_host, y_host = host_data(batch * steps)
        X = gpu.from_numpy(X_host[:, :features].copy())
        y = gpu.from_numpy(y_host)
        for compiled in (False, True):
            impl = "polynn-graph" if compiled else "polynn-cupy"
            row = {"batch": batch, "impl": impl, "mode": name}
            try:
                net = make_cnn(pn, gpu) if name.startswith("cnn") else make_net(pn, gpu)
                optimizer = pn.SGD(lr=LR) if opt == "sgd" else pn.Adam(1e-3)
                epoch = fit_epoch(pn, net, X, y, batch, optimizer, compile=compiled)
                row.update(timed(epoch, gpu.synchronize, steps, p["repeats"], p["warmup"] + 1))
                row["kernels"] = kernels_per_step(epoch, gpu.synchronize, steps)
            except Exception as exc:
                traceback.print_exc()
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(f"gpu_bench: {json.dumps(row)}", flush=True)
    return rows


def kernels_per_step(epoch: Callable[[], Any], sync: Callable[[], None], steps: int) -> Any:
    """CUDA kernels (memory copies and sets included) per step of ``epoch``, counted with
    PyTorch's profiler (CUPTI); None without PyTorch."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except Exception:
        return None
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        epoch()
        sync()
    launched = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return round(len(launched) / steps, 1)


def mlp_kernels(pn: Any, gpu: Any, batch: int, steps: int) -> dict[str, Any]:
    """Kernels per step of polynn's MLP step at ``batch`` in each mode."""
    X_host, y_host = host_data(batch * steps)
    X, y = gpu.from_numpy(X_host), gpu.from_numpy(y_host)
    out = {}
    for mode, (dtype, precision) in MODES.items():
        try:
            net = make_net(pn, gpu, dtype, precision)
            epoch = fit_epoch(pn, net, X, y, batch)
            for _ in range(3):  # warm-up (and the graph's capture)
                epoch()
            out[mode] = kernels_per_step(epoch, gpu.synchronize, steps)
        except Exception as exc:
            out[mode] = f"error: {type(exc).__name__}: {exc}"
    return out


# -- PyTorch, in a subprocess --------------------------------------------------------------------
def torch_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a subprocess: PyTorch in every mode (bf16 and fp16 under autocast, fp16 with
    a ``GradScaler``) and polynn's torch backend in float32."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        return {"skipped": f"torch cannot be imported ({type(exc).__name__}: {exc})"}
    if not torch.cuda.is_available():
        return {"skipped": "torch.cuda is not available", "version": torch.__version__}
    import polynn as pn

    device = torch.device("cuda", spec["device"])
    torch.cuda.set_device(device)
    sync = torch.cuda.synchronize
    rows = []
    for batch in BATCHES:
        steps = spec["steps"][str(batch)]
        X_host, y_host = host_data(batch * steps)
        X, y = torch.as_tensor(X_host, device=device), torch.as_tensor(y_host, device=device)
        for mode in MODES:
            torch.manual_seed(SEED)
            layers = []
            for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
                layers.append(torch.nn.Linear(a, b))
                if i < len(SIZES) - 2:
                    layers.append(torch.nn.ReLU())
            model = torch.nn.Sequential(*layers).to(device)
            epochs = [torch_epoch(torch, model, X[:n], y[:n], batch, mode) for n in (len(X), batch)]
            torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
            row = measure_torch(torch, "torch-cuda", batch, mode, epochs, sync, spec, steps)
            if batch == BATCHES[-1] and "error" not in row:
                row["kernels"] = kernels_per_step(epochs[0], sync, steps)
            rows.append(row)
        torch.set_float32_matmul_precision("highest")
        net = make_net(pn, pn.backends.get("torch", device))
        epochs = [fit_epoch(pn, net, X[:n], y[:n], batch) for n in (len(X), batch)]
        rows.append(measure_torch(torch, "polynn-torch", batch, "fp32", epochs, sync, spec, steps))
        for mode in MODES:
            rows.append(gemm_floor(torch, device, batch, mode))
        del X, y
        torch.cuda.empty_cache()
    rows += torch_small_rows(torch, device, spec)
    return {"version": torch.__version__, "cuda": torch.version.cuda, "rows": rows}


def gemm_floor(torch: Any, device: Any, batch: int, mode: str) -> dict[str, Any]:
    """The sum of the MLP step's eight matrix products, each timed alone (CUDA events,
    median of 20 after warm-up), in ``mode``'s precision."""
    row: dict[str, Any] = {"batch": batch, "impl": "gemm-floor", "mode": mode}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    try:
        products = []  # (m, k) @ (k, n) for each of the step's products
        for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
            products += [(batch, a, b), (a, batch, b)]  # forward; weight gradient
            if i:
                products.append((batch, b, a))  # input gradient (none for the first layer)
        total = 0.0
        for m, k, n in products:
            left = torch.randn(m, k, device=device, dtype=dtype)
            right = torch.randn(k, n, device=device, dtype=dtype)
            for _ in range(3):
                left @ right
            times = []
            for _ in range(20):
                start = torch.cuda.Event(enable_timing=True)
                stop = torch.cuda.Event(enable_timing=True)
                start.record()
                left @ right
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) / 1e3)
            total += statistics.median(times)
        row["s_per_step"] = total
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    return row


def torch_small_rows(torch: Any, device: Any, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """PyTorch on the launch-bound models: eager, and the whole step as a CUDA graph."""
    rows = []
    steps = spec["steps"]["256"]
    for name, batch, features, opt in SMALL:
        X_host, y_host = host_data(batch * steps)
        X = torch.as_tensor(X_host[:, :features].copy(), device=device)
        y = torch.as_tensor(y_host, device=device)
        for impl, run in torch_small(torch, device, name, opt, X, y, batch).items():
            row = {"batch": batch, "impl": impl, "mode": name}
            try:
                row.update(timed(run, torch.cuda.synchronize, steps, spec["repeats"],
                                 spec["warmup"]))  # fmt: skip
                if impl == "torch-cuda":
                    row["kernels"] = kernels_per_step(run, torch.cuda.synchronize, steps)
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            print(f"gpu_bench (torch): {json.dumps(row)}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def torch_small(
    torch: Any, device: Any, name: str, opt: str, X: Any, y: Any, batch: int
) -> dict[str, Callable[[], None]]:
    """Epochs of one launch-bound model in PyTorch: ``torch-cuda`` (eager) and
    ``torch-graph`` (the whole step captured once and replayed)."""
    torch.manual_seed(SEED)
    if name.startswith("cnn"):
        model = torch.nn.Sequential(
            torch.nn.Unflatten(1, (1, 40)), torch.nn.Conv1d(1, 25, 5, 2, 1), torch.nn.ReLU(),
            torch.nn.Conv1d(25, 25, 3, 2, 1), torch.nn.ReLU(),
            torch.nn.Conv1d(25, 25, 3, 2, 1), torch.nn.ReLU(), torch.nn.Flatten(),
            torch.nn.Linear(125, 10),
        ).to(device)  # fmt: skip
    else:
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
            torch.nn.ReLU(), torch.nn.Linear(1024, 10),
        ).to(device)  # fmt: skip
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    else:
        optimizer = torch.optim.Adam(model.parameters(), 1e-3, capturable=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    static_x, static_y = X[:batch].clone(), y[:batch].clone()

    def step() -> Any:
        optimizer.zero_grad(set_to_none=False)
        loss = loss_fn(model(static_x), static_y)
        loss.backward()
        optimizer.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()

    def epoch(replay: bool) -> None:
        losses = []
        for start in range(0, X.shape[0], batch):
            static_x.copy_(X[start : start + batch])
            static_y.copy_(y[start : start + batch])
            if replay:
                graph.replay()
                losses.append(static_loss.clone())
            else:
                losses.append(step().detach())
        torch.stack(losses).cpu()

    return {"torch-cuda": lambda: epoch(False), "torch-graph": lambda: epoch(True)}


def torch_epoch(
    torch: Any, model: Any, X: Any, y: Any, batch: int, mode: str
) -> Callable[[], None]:
    """One epoch of plain PyTorch training of ``model`` over ``(X, y)`` in batches; in the
    bf16 and fp16 modes under ``torch.autocast``, fp16 with a ``GradScaler``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    scaler = torch.amp.GradScaler("cuda") if mode == "fp16" else None

    def epoch() -> None:
        losses = []
        for start in range(0, X.shape[0], batch):
            xb, yb = X[start : start + batch], y[start : start + batch]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=half, enabled=half is not None):
                loss = loss_fn(model(xb), yb)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            losses.append(loss.detach())
        torch.stack(losses).cpu()  # like polynn: the losses reach the host once

    return epoch


def measure_torch(
    torch: Any,
    impl: str,
    batch: int,
    mode: str,
    epochs: list[Callable[[], Any]],
    sync: Callable[[], None],
    spec: dict[str, Any],
    steps: int,
) -> dict[str, Any]:
    """Time the first of ``epochs`` (``steps`` steps); measure the peak memory of the second
    (one step) beyond what was allocated before it."""
    row: dict[str, Any] = {"batch": batch, "impl": impl, "mode": mode}
    try:
        row.update(timed(epochs[0], sync, steps, spec["repeats"], spec["warmup"]))
        sync()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        epochs[1]()
        sync()
        row["peak_bytes"] = torch.cuda.max_memory_allocated() - before
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    print(f"gpu_bench (torch): {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def run_torch(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``torch_worker`` in a subprocess; its answer is the last line of its stdout."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"the torch subprocess ran past {timeout:.0f} s"}
    sys.stderr.write(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"the torch subprocess exited {proc.returncode}: " + " | ".join(tail)}


# -- accuracy ------------------------------------------------------------------------------------
def trained(pn: Any, backend: Any, dtype: str, steps: int) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED + 1)
    X = rng.random((ACCURACY_BATCH * steps, SIZES[0]))
    y = rng.integers(0, SIZES[-1], size=len(X))
    net = make_net(pn, backend, dtype)
    net.fit(X, y, loss="cross_entropy", optimizer=pn.SGD(lr=LR), batch_size=ACCURACY_BATCH,
            shuffle=False, verbose=0)  # fmt: skip
    return [w.astype(np.float64) for w in net.get_weights()]


def accuracy(pn: Any, gpu: Any, steps: int) -> dict[str, Any]:
    """float64 agreement of NumPy and CuPy, and each float32 run's normwise error against the
    float64 NumPy run of the same steps from the same initial weights."""
    exact = trained(pn, "numpy", "float64", steps)
    on_gpu = trained(pn, gpu, "float64", steps)
    flat = np.concatenate([w.ravel() for w in exact])

    def error(weights: list[np.ndarray]) -> float:
        diff = np.concatenate([(a - b).ravel() for a, b in zip(weights, exact)])
        return float(np.linalg.norm(diff) / np.linalg.norm(flat))

    result = {
        "steps": steps,
        "float64_max_abs": max(float(np.abs(a - b).max()) for a, b in zip(on_gpu, exact)),
        "numpy32": error(trained(pn, "numpy", "float32", steps)),
        "cupy32": error(trained(pn, gpu, "float32", steps)),
    }
    result["ok"] = bool(
        result["float64_max_abs"] <= 1e-10
        and result["cupy32"] <= ACCURACY_SLACK * result["numpy32"]
    )
    return result


# -- reporting -----------------------------------------------------------------------------------
def fmt_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[int, str, str], dict[str, Any]]:
    return {(r["batch"], r["impl"], r["mode"]): r for r in rows}


COLUMNS = [
    ("polynn-cupy", "fp32"), ("fused-cupy", "fp32"), ("torch-cuda", "fp32"),
    ("polynn-torch", "fp32"), ("polynn-cupy", "tf32"), ("fused-cupy", "tf32"),
    ("torch-cuda", "tf32"), ("polynn-cupy", "bf16"), ("torch-cuda", "bf16"),
    ("polynn-cupy", "fp16"), ("torch-cuda", "fp16"),
]  # fmt: skip


def cell(row: dict[str, Any] | None, key: str) -> str:
    if row is None:
        return "-"
    if key not in row:
        return "n/a" if "error" not in row else "error"
    return f"{1e3 * row[key]:.3f}" if key == "s_per_step" else f"{row[key] / MIB:.0f}"


def tables(rows: list[dict[str, Any]]) -> list[str]:
    got = by_key(rows)
    title = [f"{impl} {mode}" for impl, mode in COLUMNS]
    out = ["Step time, ms (median):", "", fmt_row(["batch", *title]),
           fmt_row(["---:"] * (len(COLUMNS) + 1))]  # fmt: skip
    for batch in BATCHES:
        cells = [cell(got.get((batch, *c)), "s_per_step") for c in COLUMNS]
        out.append(fmt_row([str(batch), *cells]))
    out += ["", "Peak memory of one step beyond what was allocated before it, MiB:", "",
            fmt_row(["batch", *title]), fmt_row(["---:"] * (len(COLUMNS) + 1))]  # fmt: skip
    for batch in BATCHES:
        cells = [cell(got.get((batch, *c)), "peak_bytes") for c in COLUMNS]
        out.append(fmt_row([str(batch), *cells]))
    out += ["", *limit_table(rows), "", *small_table(rows)]
    errors = [
        f"- {r['impl']} {r['mode']} batch {r['batch']}: {r['error']}" for r in rows if "error" in r
    ]
    return out + (["", "Errors:", *errors] if errors else [])


def limit_table(rows: list[dict[str, Any]]) -> list[str]:
    """At the largest batch, per precision: polynn's step against the sum of its matrix
    products timed alone, and the kernels each library launches per step."""
    got, batch = by_key(rows), BATCHES[-1]
    out = [f"Batch {batch}: the step against its matrix products alone (ms), kernels per step:",
           "", fmt_row(["precision", "polynn-cupy", "gemm-floor", "polynn / floor",
                        "polynn kernels", "torch kernels"]),
           fmt_row(["---", "---:", "---:", "---:", "---:", "---:"])]  # fmt: skip
    for mode in MODES:
        ours, floor = got.get((batch, "polynn-cupy", mode)), got.get((batch, "gemm-floor", mode))
        torch = got.get((batch, "torch-cuda", mode), {})
        a, b = (ours or {}).get("s_per_step"), (floor or {}).get("s_per_step")
        share = f"{a / b:.3f}" if a and b else "-"
        kernels = (ours or {}).get("kernels", "-")
        out.append(fmt_row([mode, cell(ours, "s_per_step"), cell(floor, "s_per_step"), share,
                            str(kernels), str(torch.get("kernels", "-"))]))  # fmt: skip
    return out


def small_table(rows: list[dict[str, Any]]) -> list[str]:
    """The launch-bound models: eager and compiled steps against PyTorch's."""
    got = by_key(rows)
    impls = ("polynn-cupy", "polynn-graph", "torch-cuda", "torch-graph")
    out = ["Launch-bound models, ms per step (polynn-graph: compile=True, a CUDA graph a step; "
           "torch-graph: the whole step captured by torch.cuda.graph), kernels per eager step:",
           "", fmt_row(["model", "batch", *impls, "polynn kernels", "torch kernels"]),
           fmt_row(["---", "---:", *["---:"] * len(impls), "---:", "---:"])]  # fmt: skip
    for name, batch, _, _ in SMALL:
        cells = [cell(got.get((batch, impl, name)), "s_per_step") for impl in impls]
        kernels = [str(got.get((batch, impl, name), {}).get("kernels", "-"))
                   for impl in ("polynn-cupy", "torch-cuda")]  # fmt: skip
        out.append(fmt_row([name, str(batch), *cells, *kernels]))
    return out


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The speed and memory targets, each with its figures and whether it is met."""
    got = by_key(rows)

    def ratio(a: tuple, b: tuple, key: str = "s_per_step") -> float | None:
        x, y = got.get(a, {}).get(key), got.get(b, {}).get(key)
        return x / y if x and y else None

    ours, torch = "polynn-cupy", "torch-cuda"
    checks = [
        (f"batch {b}: polynn-cupy / torch-cuda <= 0.97",
         ratio((b, ours, "fp32"), (b, torch, "fp32")), 0.97) for b in (4096, 16384)
    ] + [
        (f"batch {b}: polynn-cupy / fused-cupy <= 1.05",
         ratio((b, ours, "fp32"), (b, "fused-cupy", "fp32")), 1.05) for b in BATCHES
    ] + [
        (f"batch 16384, {mode}: polynn-cupy / torch-cuda <= 0.90",
         ratio((16384, ours, mode), (16384, torch, mode)), 0.90)
        for mode in ("tf32", "bf16", "fp16")
    ] + [
        (f"batch 16384, {mode}: polynn-cupy / its matrix products alone <= 1.05",
         ratio((16384, ours, mode), (16384, "gemm-floor", mode)), 1.05) for mode in MODES
    ] + [
        (f"{name} (batch {b}): polynn-graph / torch-graph <= 1",
         ratio((b, "polynn-graph", name), (b, "torch-graph", name)), 1.0)
        for name, b, _, _ in SMALL
    ] + [
        (f"batch {b}: peak memory polynn-cupy / torch-cuda <= 1",
         ratio((b, ours, "fp32"), (b, torch, "fp32"), "peak_bytes"), 1.0) for b in BATCHES
    ]  # fmt: skip
    cnn = got.get((100, ours, "cnn-adam"), {}).get("kernels")
    checks.append(("cnn-adam (batch 100): kernels per eager step < 40",
                   cnn if isinstance(cnn, (int, float)) else None, 39.9))  # fmt: skip
    lines = []
    for text, value, limit in checks:
        verdict = "not measured" if value is None else ("met" if value <= limit else "MISSED")
        lines.append(f"- {text}: {'-' if value is None else f'{value:.3f}'} ({verdict})")
    return lines


def accuracy_lines(acc: dict[str, Any]) -> list[str]:
    if "error" in acc:
        return [f"- accuracy: ERROR {acc['error']}"]
    return [
        f"- float64, NumPy vs CuPy after {acc['steps']} steps: max abs difference "
        f"{acc['float64_max_abs']:.2e} (target <= 1e-10)",
        f"- float32 normwise error against float64: NumPy {acc['numpy32']:.3e}, CuPy "
        f"{acc['cupy32']:.3e} (target: CuPy <= {ACCURACY_SLACK} x NumPy)",
        f"- accuracy: {'ok' if acc['ok'] else 'FAILED'}",
    ]


def versions(cupy: Any, pn: Any, device: int, torch_info: dict[str, Any]) -> list[str]:
    props = cupy.cuda.runtime.getDeviceProperties(device)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)

    def cuda_version(v: int) -> str:
        return f"{v // 1000}.{(v % 1000) // 10}"

    torch_text = torch_info.get("version", torch_info.get("skipped", "not available"))
    if torch_info.get("cuda"):
        torch_text += f" (CUDA {torch_info['cuda']})"
    return [
        f"- GPU: {name} (device {device}, {props['totalGlobalMem'] / 2**30:.0f} GiB)",
        f"- CUDA runtime (CuPy) {cuda_version(cupy.cuda.runtime.runtimeGetVersion())}, "
        f"driver {cuda_version(cupy.cuda.runtime.driverGetVersion())}",
        f"- CuPy {cupy.__version__}, PyTorch {torch_text}, NumPy {np.__version__}, "
        f"polynn {pn.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores",
    ]


# -- main ----------------------------------------------------------------------------------------
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
    if not 0 <= device < count:
        return None, f"there is no CUDA device {device} (found {count})"
    return cupy, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--device", type=int, default=0, help="CUDA device number")
    parser.add_argument("--out", default=str(HERE / "RESULTS-gpu.md"), help="results markdown")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    parser.add_argument(
        "--budget", type=float, default=600.0, help="seconds for the whole run: the PyTorch "
        "subprocess gets what is left of it (at least 30 s)"
    )  # fmt: skip
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

    p = plan(args.quick)
    print(f"gpu_bench: {'quick' if args.quick else 'full'} run on CUDA device {args.device}")
    gpu = pn.backends.get("cupy", args.device)
    failed = False
    try:
        acc = accuracy(pn, gpu, p["accuracy_steps"])
    except Exception as exc:
        traceback.print_exc()
        acc = {"error": f"{type(exc).__name__}: {exc}", "ok": False}
    failed |= not acc["ok"]
    print(f"gpu_bench: accuracy {json.dumps(acc)}", flush=True)

    rows = cupy_rows(pn, cupy, gpu, p)
    for mode, count in mlp_kernels(pn, gpu, BATCHES[-1], p["steps"][BATCHES[-1]]).items():
        row = by_key(rows).get((BATCHES[-1], "polynn-cupy", mode))
        if row is not None:
            row["kernels"] = count
    rows += small_rows(pn, cupy, gpu, p)
    failed |= any("error" in r for r in rows if r["impl"].startswith("polynn"))  # every mode
    if args.no_torch:
        torch_info: dict[str, Any] = {"skipped": "--no-torch"}
    else:
        spec = {**p, "device": args.device, "steps": {str(b): s for b, s in p["steps"].items()}}
        left = args.budget - (time.perf_counter() - t0) - 10
        torch_info = run_torch(spec, max(left, 30.0))
    rows += torch_info.get("rows", [])
    if "rows" not in torch_info:
        print(f"gpu_bench: torch columns: {torch_info}", flush=True)

    elapsed = time.perf_counter() - t0
    summary = [
        *tables(rows), "", "Targets (speed and memory; reported, not enforced):", "",
        *targets(rows), "", "Accuracy:", "", *accuracy_lines(acc),
    ]  # fmt: skip
    md = [
        "# polynn on the GPU: step time, memory and float32 accuracy",
        "",
        f"Written by `python benchmarks/gpu_bench.py{' --quick' if args.quick else ''}` on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s.",
        "",
        *versions(cupy, pn, args.device, torch_info),
        "",
        f"784-1024-1024-10 ReLU MLP ({n_params():,} parameters), softmax cross-entropy on "
        f"integer labels, float32, SGD(lr={LR}); one step = forward, backward and update of "
        "one batch, timed as an epoch of k batches with the data on the device. "
        "`fused-cupy` is a hand-written CuPy loop with fused kernels. tf32: polynn "
        'with `matmul_precision="high"`, PyTorch with `set_float32_matmul_precision("high")`, '
        "the fused loop with CuPy's compute type TF32; bf16 and fp16: polynn with "
        '`dtype="mixed_bfloat16"` / `"mixed_float16"`, PyTorch under `torch.autocast` (fp16 '
        "with a `GradScaler`). "
        f"Steps x repeats per batch: {p['steps']} x {p['repeats']} (median).",
        "",
        *summary,
        "",
    ]
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(md))
        print(f"gpu_bench: wrote {out}", flush=True)
    except OSError as exc:
        print(f"gpu_bench: could not write {out}: {exc}", flush=True)
    print("\n" + "\n".join(summary))
    print(f"\ngpu_bench: done in {elapsed:.0f} s; {'FAILED' if failed else 'ok'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
