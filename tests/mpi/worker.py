"""One rank of the distributed tests: ``mpiexec -n N python worker.py BACKEND MODE OUT``.

Trains the network of ``tests/test_distributed.py`` with ``distributed=pn.distributed.MPI()``
and writes what this rank ended with (weights, history, or the error it raised) to OUT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import distributed_setup as setup  # noqa: E402

import polynn as pn  # noqa: E402
from polynn.backends.host import HostRNG  # noqa: E402

backend, mode, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
if backend == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)
sharded = mode.startswith("sharded")
dist = pn.distributed.MPI(sharded=sharded)
X, y, Xv, yv = setup.data(mode)
net = setup.network(backend, mode)
kwargs = setup.fit_arguments(mode)
if sharded:
    start, stop = dist.share(len(X))
    X, y = X[start:stop], y[start:stop]
if mode == "unseeded" and dist.rank > 0:  # as if built without a seed: rank 0's order rules
    net._rng = HostRNG(None)
if mode == "bad-data" and dist.rank == 1:
    X = X.copy()
    X[0, 0] = np.nan
if mode == "failing-step" and dist.rank == 1:
    forward, calls = net.layers[0].forward, []

    def failing(x, *act):  # a Dense runs the activation after it as forward(x, act)
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("this layer broke on rank 1")
        return forward(x, *act)

    net.layers[0].forward = failing


class Fails(pn.Callback):
    """Raises in ``hook`` (on the rank it is given to)."""

    def __init__(self, hook):
        self.hook = hook

    def fail(self, hook):
        if hook == self.hook:
            raise RuntimeError("this callback broke on rank 1")

    def on_train_begin(self, logs):
        self.fail("on_train_begin")

    def on_epoch_begin(self, epoch, logs):
        self.fail("on_epoch_begin")

    def on_train_end(self, logs):
        self.fail("on_train_end")


callbacks = []
if mode.startswith("fails-in-") and dist.rank == 1:
    callbacks.append(Fails(mode.removeprefix("fails-in-")))
if mode == "stops-on-root" and dist.is_root:  # gives up at once: the loss never improves by 1e9
    callbacks.append(pn.EarlyStopping(monitor="loss", patience=0, min_delta=1e9))
if mode == "restores-on-root" and dist.is_root:
    callbacks.append(pn.EarlyStopping(monitor="loss", restore_best_weights=True))
if mode == "lowers-rate-on-root" and dist.is_root:
    callbacks.append(pn.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=1e9))
if dist.rank == 1:  # what differs on rank 1
    if mode == "epochs-differ":
        kwargs["epochs"] += 1
    elif mode == "rows-differ":
        X, y = X[:-2], y[:-2]
    elif mode == "batches-differ":
        X, y = X[:12], y[:12]
    elif mode == "widths-differ":
        net = pn.Sequential(pn.Dense(4, 7), pn.Tanh(), pn.Dense(7, 3), dtype="float64", seed=3,
                            backend=backend)  # fmt: skip
    elif mode == "dtypes-differ":
        net = pn.Sequential(pn.Dense(4, 6), pn.Tanh(), pn.Dense(6, 3), dtype="float32", seed=3,
                            backend=backend)  # fmt: skip
    elif mode == "bad-argument":
        kwargs["verbose"] = 5
    elif mode == "fails-in-validation":
        infer = net.layers[-1].forward

        def failing_inference(x):
            if not net.layers[-1].training:
                raise RuntimeError("inference broke on rank 1")
            return infer(x)

        net.layers[-1].forward = failing_inference
report: dict = {"rank": dist.rank, "size": dist.size}
try:
    hist = net.fit(X, y, validation_data=(Xv, yv), distributed=dist, callbacks=callbacks, **kwargs)
    report["history"] = hist.history
    report["evaluate"] = net.evaluate(Xv, yv, metrics=["accuracy"], distributed=dist)
    np.savez(out / f"weights{dist.rank}.npz", *net.get_weights())
except Exception as exc:
    report["error"] = [type(exc).__name__, str(exc), isinstance(exc, pn.PolynnError)]
(out / f"report{dist.rank}.json").write_text(json.dumps(report))
