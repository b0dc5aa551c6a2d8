"""What a new user runs into first: names given wrongly, arguments from other libraries,
a forgotten loss, the history, the package's type information."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import polynn as pn


@pytest.mark.parametrize(
    "call, suggestion",
    [
        (lambda: pn.Sequential(pn.Dense(2, 1), backend="CuPy"), "did you mean 'cupy'"),
        (lambda: pn.Sequential(pn.Dense(2, 1), backend="gpu"), "did you mean 'cupy'"),
        (lambda: pn.Sequential(pn.Dense(2, 1)).fit([[1, 2]], [1], optimizer="adma"), "'adam'"),
        (lambda: pn.Sequential(pn.Dense(2, 1)).fit([[1, 2]], [1], loss="mes"), "'mse'"),
        (lambda: pn.Sequential(pn.Dense(2, 1)).fit([[1, 2]], [1], metrics=["acuracy"]),
         "did you mean 'accuracy'"),
    ],
)  # fmt: skip
def test_a_mistyped_name_gets_a_suggestion(call, suggestion):
    with pytest.raises(pn.PolynnValueError, match=suggestion):
        call()


def test_a_backend_named_by_the_environment_says_so(monkeypatch):
    monkeypatch.setenv("POLYNN_BACKEND", "gpu")
    with pytest.raises(pn.PolynnValueError, match="from the POLYNN_BACKEND environment"):
        pn.Sequential(pn.Dense(2, 1))


@pytest.mark.parametrize(
    "make, name, hint",
    [
        (lambda: pn.SGD(learning_rate=0.1), "learning_rate", "did you mean 'lr'"),
        (lambda: pn.Adam(beta_1=0.9), "beta_1", "did you mean 'beta1'"),
        (lambda: pn.Adam(epsilon=1e-7), "epsilon", "did you mean 'eps'"),
        (lambda: pn.SGD(0.1, foo=1), "foo", "its arguments are"),
    ],
)
def test_arguments_named_as_in_other_libraries_are_pointed_to_ours(make, name, hint):
    with pytest.raises(pn.PolynnTypeError, match=f"no argument '{name}'; .*{hint}"):
        make()


def test_class_labels_without_cross_entropy_point_to_it(backend):
    net = pn.Sequential(pn.Dense(2, 3), backend=backend)
    with pytest.raises(pn.PolynnValueError, match="loss='cross_entropy'"):
        net.fit(np.ones((4, 2)), [0, 1, 2, 1], verbose=0)


def test_the_history_reads_like_a_dict(backend):
    hist = pn.Sequential(pn.Dense(2, 1), backend=backend).fit([[1, 2]], [1], epochs=2, verbose=0)
    assert hist["loss"] is hist.history["loss"] and len(hist["loss"]) == 2
    with pytest.raises(pn.PolynnValueError, match="has no 'val_loss'; it holds \\['loss', 'lr'\\]"):
        hist["val_loss"]


def test_jax_classification_does_not_warn_about_int64():
    """In JAX's default 32-bit mode (a fresh process: the tests switch 64-bit mode on)."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed")
    program = (
        "import numpy as np, polynn as pn; "
        "net = pn.Sequential(pn.Dense(2, 3), backend='jax', seed=0); "
        "net.evaluate(np.ones((4, 2)), [0, 1, 2, 1], loss='cross_entropy')"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", program], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_package_carries_its_type_information():
    assert (Path(pn.__file__).parent / "py.typed").is_file()


def test_summary_and_count_params(backend):
    net = pn.Sequential(pn.Dense(3, 5), pn.ReLU(), pn.Dense(5, 2), pn.Softmax(), backend=backend)
    sizes = [w.size for w in net.get_weights()]
    assert net.count_params() == sum(sizes) == 3 * 5 + 5 + 5 * 2 + 2
    lines = []
    net.summary(print_fn=lines.append)
    text = lines[0]
    rows = text.splitlines()
    assert rows[2].startswith("Dense(in_features=3, out_features=5)") and "(None, 5)" in rows[2]
    assert rows[2].split()[-1] == str(sizes[0] + sizes[1])
    assert "(None, 2)" in rows[5] and rows[5].split()[-1] == "0"
    assert f"Total params: {sum(sizes)} (trainable {sum(sizes)}, non-trainable 0)" in text
    assert f"backend {backend.name}" in text
