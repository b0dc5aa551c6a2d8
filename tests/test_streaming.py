"""Streams of batches for ``fit``, ``evaluate`` and ``predict``: the same numbers as the arrays
they come from, read ahead in a worker thread (boundedly), checked like arrays, and a data set
larger than the process may hold trained from a memory-mapped file in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import blobs

import polynn as pn
from polynn.streaming import PREFETCH

SIZES = (25, 25, 25, 11)  # uneven: the last batch is smaller


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(sum(SIZES), 3))
    return X, X @ np.array([[1.0], [2.0], [-1.0]]) + 0.1 * rng.normal(size=(len(X), 1))


def batches_of(X, y=None):
    start = 0
    for size in SIZES:
        part = X[start : start + size]
        yield part if y is None else (part, y[start : start + size])
        start += size


def net(backend, seed=0):
    return pn.Sequential(pn.Dense(3, 4), pn.Tanh(), pn.Dense(4, 1), backend=backend,
                         dtype="float64", seed=seed)  # fmt: skip


def test_fit_on_a_stream_equals_fit_on_the_arrays(backend):
    X, y = data()
    streamed, arrays = net(backend), net(backend)
    a = streamed.fit(lambda: batches_of(X, y), optimizer=pn.Adam(0.01), epochs=3, verbose=0)
    b = arrays.fit(X, y, optimizer=pn.Adam(0.01), epochs=3, batch_size=25, shuffle=False,
                   verbose=0)  # fmt: skip
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-12)
    for wa, wb in zip(streamed.get_weights(), arrays.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12)


def test_evaluate_and_predict_on_a_stream(backend):
    X, y = data(1)
    model = net(backend)
    want = np.mean((pn.to_numpy(model.predict(X)) - y) ** 2)
    assert model.evaluate(batches_of(X, y))["loss"] == pytest.approx(want, rel=1e-12)
    assert model.evaluate(list(batches_of(X, y)))["loss"] == pytest.approx(want, rel=1e-12)
    out = pn.to_numpy(model.predict(batches_of(X)))
    # equal to rounding: some libraries sum a matmul differently for another number of rows
    np.testing.assert_allclose(out, pn.to_numpy(model.predict(X)), rtol=1e-12, atol=1e-14)


def test_a_stream_of_class_labels_with_metrics_and_validation(backend):
    X, labels = blobs(rows=sum(SIZES), features=3, classes=3, seed=2)
    model = pn.Sequential(pn.Dense(3, 3), backend=backend, dtype="float64", seed=0)
    hist = model.fit(lambda: batches_of(X, labels), loss="cross_entropy", metrics=["accuracy"],
                     validation_data=(X[:20], labels[:20]), epochs=2, verbose=0)  # fmt: skip
    assert set(hist.history) == {"loss", "accuracy", "lr", "val_loss", "val_accuracy"}
    scores = model.evaluate(batches_of(X, labels))
    want = np.mean(np.argmax(pn.to_numpy(model.predict(X)), axis=1) == labels)
    assert scores["accuracy"] == pytest.approx(want, rel=1e-12)


def test_batches_are_read_ahead_in_a_worker_thread_and_boundedly(backend):
    X, y = data()
    readers, lead = set(), []
    consumed = [0]

    class Count(pn.Layer):
        def forward(self, x):
            consumed[0] += 1
            return x

        def backward(self, grad):
            return grad

    def stream():
        for i, batch in enumerate(batches_of(X, y)):
            readers.add(threading.current_thread().name)
            lead.append(i - consumed[0])
            yield batch

    model = pn.Sequential(Count(), pn.Dense(3, 1), backend=backend, dtype="float64", seed=0)
    model.fit(stream, epochs=2, verbose=0, compile=False)  # Count counts the passes: eagerly
    assert threading.current_thread().name not in readers
    assert max(lead) <= PREFETCH + 1  # never more than the queue ahead of the computation
    assert consumed[0] == 2 * len(SIZES)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, X, y: m.fit(batches_of(X, y), y, verbose=0), "leave y out"),
        (lambda m, X, y: m.fit(X, verbose=0), "needs the targets y"),
        (lambda m, X, y: m.fit(batches_of(X, y), epochs=2, verbose=0), "can be read once"),
        (lambda m, X, y: m.fit(lambda: batches_of(X, y), batch_size=10, verbose=0),
         "the stream makes the batches"),
        (lambda m, X, y: m.fit(lambda: iter([]), verbose=0), "gave no batches"),
        (lambda m, X, y: m.fit(lambda: 5, verbose=0), "must return an iterable of batches"),
        (lambda m, X, y: m.fit(lambda: batches_of(X), verbose=0), "must be a pair"),
        (lambda m, X, y: m.evaluate(iter([(X[:5, :2], y[:5])])), r"X has shape \(5, 2\)"),
        (lambda m, X, y: m.evaluate(iter([(X[:5], y[:4])])), "X has 5 rows but y has 4"),
        (lambda m, X, y: m.predict(iter([X[:3] * np.nan])), "X .*contains NaN"),
    ],
    ids=["y-too", "no-y", "iterator-twice", "batch-size", "empty", "not-iterable", "not-pairs",
         "wrong-shape", "rows-differ", "nan"],
)  # fmt: skip
def test_bad_streams_get_clear_errors(backend, call, match):
    X, y = data()
    with pytest.raises((pn.PolynnValueError, pn.PolynnTypeError), match=match):
        call(net(backend), X, y)


def test_an_error_inside_the_stream_reaches_the_caller(backend):
    X, y = data()

    def broken():
        yield X[:10], y[:10]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        net(backend).fit(broken, verbose=0)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """2,000,000 rows of 16 features and a target, float32: 136 MB on disk."""
    rows, features = 2_000_000, 16
    path = tmp_path_factory.mktemp("stream") / "big.f32"
    data = np.memmap(path, dtype=np.float32, mode="w+", shape=(rows, features + 1))
    rng = np.random.default_rng(0)
    w = rng.normal(size=features).astype(np.float32)
    for start in range(0, rows, 250_000):
        x = rng.normal(size=(250_000, features)).astype(np.float32)
        data[start : start + 250_000, :features] = x
        data[start : start + 250_000, features] = x @ w
    data.flush()
    del data
    return path, rows, features


@pytest.mark.skipif(sys.platform != "linux", reason="the cap is Linux's RLIMIT_DATA")
def test_a_data_set_larger_than_the_memory_cap_streams_through(backend, big_file):
    """In a subprocess capped at what it holds after a first fit plus 96 MB (the file is
    136 MB): reading the file into memory fails there, streaming it trains."""
    path, rows, features = big_file
    script = Path(__file__).resolve().parent / "streaming" / "capped.py"
    args = [str(path), str(rows), str(features), backend.name, "96"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loss, val, predicted = done.stdout.split()
    assert float(loss) < 1e-6 and float(val) < 1e-6  # the targets are a linear function of X
    assert int(predicted) == rows


class Interrupted(pn.Layer):
    """Raises KeyboardInterrupt in its first training pass, as Ctrl-C would."""

    def forward(self, x):
        if self.training:
            raise KeyboardInterrupt
        return x

    def backward(self, grad):
        return grad


@pytest.mark.parametrize("stop", ["bad batch", "ctrl-c"])
def test_stopping_never_waits_on_a_blocked_source(backend, stop):
    """The stream yields a batch (of the wrong shape, or one during which Ctrl-C comes), then
    blocks on its source. The error must reach the caller without waiting for the source:
    here the source is released only after ``fit`` has raised (or, should ``fit`` wait for
    it, after 20 s, and the test fails). The worker thread ends once the source returns."""
    X, y = data()
    release, returned = threading.Event(), threading.Event()
    first = X[:10, :2] if stop == "bad batch" else X[:10]  # two features; the network takes 3

    def stuck():
        yield first, y[:10]
        release.wait(timeout=20)
        returned.set()
        yield X[:10], y[:10]

    model = net(backend)
    if stop == "bad batch":
        expected, match = pn.PolynnValueError, r"X has shape \(10, 2\)"
    else:
        model = pn.Sequential(Interrupted(), pn.Dense(3, 1), backend=backend, seed=0)
        expected, match = KeyboardInterrupt, ""
    with pytest.raises(expected, match=match):
        model.fit(stuck, verbose=0, compile=False)  # Interrupted raises in a pass: eagerly
    assert not returned.is_set(), "fit waited for the blocked source before raising"
    release.set()
    for thread in threading.enumerate():
        if thread.name == "polynn-prefetch":
            thread.join(timeout=20)
            assert not thread.is_alive()
