"""polynn on JAX: compiled training steps (``fit(compile=True)``, one ``jax.jit`` call a step)
against polynn's eager steps (one dispatch per operation) and a hand-written ``jax.jit`` loop
with the same arithmetic (the batch cut inside the compiled function, as polynn's is).

Workloads: the digits network (64-128-10, batch 32) and the MNIST-size network
(784-1024-1024-10, batch 256), ReLU, softmax cross-entropy on integer labels, SGD, float32,
no shuffling; one timed call is one ``fit`` of ``EPOCHS`` epochs with the data on the device
(each epoch's losses read back at its end), and as many epochs of the hand-written loop.
Rounds alternate the three implementations; the table shows medians over rounds of the time
per step, and each ratio is the median of the per-round ratios.

    python benchmarks/jax_steps.py            # or: python benchmarks/run.py --jax
    python benchmarks/jax_steps.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

LR = 0.01
EPOCHS = 5
#: (name, layer sizes, batch, batches per epoch)
WORKLOADS = [("digits", (64, 128, 10), 32, 56), ("mnist", (784, 1024, 1024, 10), 256, 16)]


def polynn_epoch(pn: Any, sizes: tuple[int, ...], X: Any, y: Any, batch: int,
                 compile: bool) -> Callable[[], None]:  # fmt: skip
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(pn.Dense(a, b))
        if i < len(sizes) - 2:
            layers.append(pn.ReLU())
    net = pn.Sequential(*layers, backend="jax", seed=0)
    optimizer = pn.SGD(LR)

    def epoch() -> None:
        net.fit(X, y, loss="cross_entropy", optimizer=optimizer, batch_size=batch,
                epochs=EPOCHS, shuffle=False, verbose=0, compile=compile)  # fmt: skip

    return epoch


def hand_epoch(jax: Any, sizes: tuple[int, ...], X: Any, y: Any, batch: int) -> Callable[[], None]:
    """The same network and updates written directly in JAX, one ``jax.jit`` call a step
    that cuts its batch from the epoch's arrays."""
    jnp = jax.numpy
    rng = np.random.default_rng(0)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [jnp.asarray(rng.normal(0, (2 / a) ** 0.5, (a, b)), jnp.float32),
                   jnp.zeros(b, jnp.float32)]  # fmt: skip
    classes = sizes[-1]

    def loss(params: list[Any], x: Any, t: Any) -> Any:
        h = x
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            if i + 2 < len(params):
                h = jnp.maximum(h, 0)
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(h) * jax.nn.one_hot(t, classes), axis=1))

    @jax.jit
    def step(params: list[Any], X: Any, y: Any, start: Any) -> tuple[list[Any], Any]:
        x = jax.lax.dynamic_slice_in_dim(X, start, batch)
        t = jax.lax.dynamic_slice_in_dim(y, start, batch)
        value, grads = jax.value_and_grad(loss)(params, x, t)
        return [p - LR * g for p, g in zip(params, grads)], value

    state = {"params": params}

    def epoch() -> None:
        for _ in range(EPOCHS):
            values = []
            for start in range(0, X.shape[0], batch):
                state["params"], value = step(state["params"], X, y, start)
                values.append(value)
            jax.device_get(values)

    return epoch


def measure(quick: bool) -> list[dict[str, Any]]:
    import jax

    import polynn as pn

    rows = []
    rounds = 3 if quick else 7
    for name, sizes, batch, steps in WORKLOADS:
        rng = np.random.default_rng(1)
        X = jax.numpy.asarray(rng.random((batch * steps, sizes[0]), dtype=np.float32))
        y = jax.numpy.asarray(rng.integers(0, sizes[-1], size=batch * steps))
        runs = {
            "compiled": polynn_epoch(pn, sizes, X, y, batch, True),
            "eager": polynn_epoch(pn, sizes, X, y, batch, False),
            "jax.jit": hand_epoch(jax, sizes, X, y, batch),
        }
        for run in runs.values():  # warm-up: tracing and compilation
            run()
        times: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(rounds):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                times[key].append((time.perf_counter() - start) / (steps * EPOCHS))
        rows.append({
            "name": name, "sizes": sizes, "batch": batch,
            **{key: statistics.median(t) for key, t in times.items()},
            "compiled/jit": per_round(times, "compiled", "jax.jit"),
            "eager/compiled": per_round(times, "eager", "compiled"),
        })  # fmt: skip
    return rows


def per_round(times: dict[str, list[float]], a: str, b: str) -> float:
    """The median over rounds of ``a``'s time over ``b``'s in the same round."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def report(rows: list[dict[str, Any]]) -> list[str]:
    import jax

    out = [
        f"JAX {jax.__version__} on {jax.devices()[0].platform}, float32, us per step (median):",
        "",
        "| network | batch | polynn compiled | polynn eager | hand-written jax.jit | "
        "compiled / jax.jit | eager / compiled |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sizes = "-".join(map(str, r["sizes"]))
        out.append(
            f"| {r['name']} {sizes} | {r['batch']} | {r['compiled'] * 1e6:,.0f} | "
            f"{r['eager'] * 1e6:,.0f} | {r['jax.jit'] * 1e6:,.0f} | {r['compiled/jit']:.2f} | "
            f"{r['eager/compiled']:.1f}x |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three rounds instead of seven")
    args = parser.parse_args(argv)
    try:
        import jax  # noqa: F401
    except ImportError:
        print("JAX is not installed (pip install jax): nothing to measure")
        return 0
    print("\n".join(report(measure(args.quick))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
