"""Data-parallel training over MPI: N ranks equal one process on the same global batches.

Each test launches ``mpiexec -n N python tests/mpi/worker.py`` and compares what every rank
wrote with a single-process run in this process. They need mpi4py and an MPI library
(``pip install "polynn[mpi]"``, the ``tests-mpi`` nox session); without them they skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from distributed_setup import DISAGREEING, data, fit_arguments, network

import polynn as pn
from polynn.backends.mpi import mpiexec as launcher

WORKER = Path(__file__).resolve().parent / "mpi" / "worker.py"


def mpiexec() -> tuple[str, dict[str, str]]:
    pytest.importorskip("mpi4py", reason="distributed training needs mpi4py (polynn[mpi])")
    path, env = launcher()
    if path is None:
        pytest.skip("no mpiexec beside mpi4py or on the PATH (pip install mpich, or a system MPI)")
    return path, env


def launch(ranks, backend, mode, out, timeout=180):
    path, extra = mpiexec()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **extra)
    done = subprocess.run(
        [path, "-n", str(ranks), sys.executable, str(WORKER), backend.name, mode, str(out)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((out / f"report{r}.json").read_text()) for r in range(ranks)]
    return reports


def single_process(backend, mode):
    X, y, Xv, yv = data(mode)
    net = network(backend, mode)
    if mode.startswith("sharded"):  # the rows of each step, in the order the ranks hold them
        X, y = interleaved(X, 2, 3), interleaved(y, 2, 3)
    hist = net.fit(X, y, validation_data=(Xv, yv), **fit_arguments(mode))
    return net, hist.history


def interleaved(a, ranks, local):
    """The rows of ``a`` reordered as sharded steps take them: step k is every rank's k-th
    batch of ``local`` rows, rank after rank (shards are the ranks' even shares)."""
    base, extra = divmod(len(a), ranks)
    bounds = np.cumsum([0] + [base + (r < extra) for r in range(ranks)])
    shards = [a[bounds[r] : bounds[r + 1]] for r in range(ranks)]
    steps = max(-(-len(s) // local) for s in shards)
    return np.concatenate([s[k * local : (k + 1) * local] for k in range(steps) for s in shards])


@pytest.mark.parametrize(
    "ranks, mode",
    [(2, "replicated"), (3, "replicated"), (3, "unseeded"), (3, "replicated-dropout"),
     (2, "replicated-images"), (2, "replicated-tokens")],
)  # fmt: skip
def test_ranks_train_as_one_process_on_the_same_global_batches(backend, tmp_path, ranks, mode):
    """ "unseeded": the ranks' own shuffles differ; rank 0's batch order is everyone's.
    "-dropout": each rank draws the Dropout masks of its rows of the global batch;
    "-images" and "-tokens": Conv2D with 2-d pools, and an Embedding (integer inputs)."""
    reports = launch(ranks, backend, mode, tmp_path)
    net, history = single_process(backend, "replicated" if mode == "unseeded" else mode)
    for rank, report in enumerate(reports):
        assert "error" not in report, report
        for key, values in history.items():
            np.testing.assert_allclose(report["history"][key], values, rtol=1e-12, atol=1e-14)
        with np.load(tmp_path / f"weights{rank}.npz") as got:
            for i, want in enumerate(net.get_weights()):
                np.testing.assert_allclose(got[f"arr_{i}"], want, rtol=1e-12, atol=1e-14)
    assert all(r["history"] == reports[0]["history"] for r in reports)
    want = net.evaluate(*data(mode)[2:], metrics=["accuracy"])
    for report in reports:
        assert report["evaluate"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("mode", ["sharded", "sharded-dropout"])
def test_sharded_ranks_train_as_one_process_on_their_combined_steps(backend, tmp_path, mode):
    reports = launch(2, backend, mode, tmp_path)
    net, history = single_process(backend, mode)
    for rank, report in enumerate(reports):
        assert "error" not in report, report
        np.testing.assert_allclose(report["history"]["loss"], history["loss"], rtol=1e-12)
        with np.load(tmp_path / f"weights{rank}.npz") as got:
            for i, want in enumerate(net.get_weights()):
                np.testing.assert_allclose(got[f"arr_{i}"], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["bad-data", "failing-step"])
def test_a_failing_rank_stops_every_rank_with_its_error(backend, tmp_path, mode):
    reports = launch(3, backend, mode, tmp_path)
    errors = [report["error"] for report in reports]
    assert all(error is not None for error in errors)
    own = errors[1]
    assert own[0] == ("PolynnValueError" if mode == "bad-data" else "RuntimeError")
    for rank in (0, 2):
        name, message, is_polynn = errors[rank]
        assert is_polynn and message.startswith("rank 1 of 3 failed:")
        assert own[1] in message


def test_distributed_must_be_an_mpi_object():
    net = network("numpy")
    with pytest.raises(pn.PolynnValueError, match="polynn.distributed.MPI"):
        net.fit(np.ones((2, 4)), [0, 1], loss="cross_entropy", distributed="mpi", verbose=0)


#: What every rank's error says when rank 1 (or its callbacks) differs; None: no error.
SAID = {
    "fails-in-on_train_begin": "this callback broke on rank 1",
    "fails-in-on_epoch_begin": "this callback broke on rank 1",
    "fails-in-on_train_end": "this callback broke on rank 1",
    "fails-in-validation": "inference broke on rank 1",
    "stops-on-root": None,
    "restores-on-root": "callbacks that set the weights: rank 0 has ['EarlyStopping'], rank 1 "
    "has []",
    "lowers-rate-on-root": "the learning rate: rank 0 has 0.010000000000000002, rank 1 has 0.1",
    "epochs-differ": "the epochs: rank 0 has 4, rank 1 has 5",
    "rows-differ": "rank 0 has 22 rows in 3 batches, rank 1 has 20 rows in 3 batches",
    "batches-differ": "rank 0 has 22 rows in 3 batches, rank 1 has 12 rows in 2 batches",
    "widths-differ": "the shapes of the parameters and buffers: rank 0 has [(4, 6),",
    "dtypes-differ": "the dtype: rank 0 has float64, rank 1 has float32",
    "bad-argument": "verbose must be 0, 1 or 2; got 5",
}


@pytest.mark.parametrize("mode", DISAGREEING)
def test_ranks_that_disagree_all_stop_and_say_why(backend, tmp_path, mode):
    """An error on rank 1 only (in a callback's hook, in validation, in an argument), a
    callback on rank 0 only, or settings and data that differ on rank 1: every rank ends
    (no hang) with the same error, or, for a stop on rank 0, every rank stops with it."""
    reports = launch(2, backend, mode, tmp_path, timeout=60)
    if SAID[mode] is None:
        assert all("error" not in r for r in reports), reports
        assert len(reports[0]["history"]["loss"]) == 2  # EarlyStopping gave up after epoch 2
        assert reports[1]["history"] == reports[0]["history"]
        return
    for report in reports:
        assert "error" in report, report
        assert SAID[mode] in report["error"][1]
