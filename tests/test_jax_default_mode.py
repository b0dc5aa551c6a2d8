"""JAX in its default 32-bit mode. The rest of the suite turns JAX's 64-bit mode on (for its
float64 tests), which hid that Dropout's hash passed Python ints of 2**31 and more, which
32-bit JAX refuses. Here a child process, in JAX's default mode, trains every layer in every
dtype 32-bit JAX has and compares each run with the same run on NumPy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import requested_backends

SCRIPT = textwrap.dedent(
    """
    import warnings
    import jax
    import numpy as np
    import polynn as pn

    assert not jax.config.jax_enable_x64, "JAX must be in its default 32-bit mode"
    warnings.filterwarnings("ignore", "mixed precision on NumPy")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 12)), rng.integers(0, 3, size=32)

    def mlp():
        return [pn.Dense(12, 16), pn.ReLU(), pn.BatchNorm(16), pn.Dense(16, 16), pn.Tanh(),
                pn.Dropout(0.3), pn.Residual(pn.Dense(16, 16), pn.GELU()), pn.LayerNorm(16),
                pn.Dense(16, 16), pn.Sigmoid(), pn.Dense(16, 16), pn.LeakyReLU(0.1),
                pn.Dense(16, 16), pn.ELU(), pn.Dense(16, 16), pn.SiLU(), pn.Dense(16, 16),
                pn.Softplus(), pn.Identity(), pn.Dense(16, 3), pn.Softmax()]

    def cnn():
        return [pn.Reshape((12, 1)), pn.Conv1D(1, 4, 3, padding=1), pn.ReLU(),
                pn.MaxPool1D(2), pn.Dropout(0.2), pn.Conv1D(4, 4, 3), pn.Tanh(),
                pn.GlobalAveragePool1D(), pn.Dense(4, 3)]

    tolerance = {"float32": 1e-4, "mixed_float16": 5e-2, "mixed_bfloat16": 2e-1}
    for name, layers in (("mlp", mlp), ("cnn", cnn)):
        for dtype, rtol in tolerance.items():
            fits = {}
            for backend in ("jax", "numpy"):
                net = pn.Sequential(*layers(), backend=backend, dtype=dtype, seed=1)
                hist = net.fit(X, y, loss="cross_entropy", optimizer=pn.Adam(1e-2), epochs=2,
                               batch_size=16, verbose=0)
                scores = net.evaluate(X, y, metrics=["accuracy"])
                fits[backend] = [*hist.history["loss"], scores["loss"]]
                out = net.predict(X)
                assert pn.to_numpy(out).shape == (32, 3)
            np.testing.assert_allclose(fits["jax"], fits["numpy"], rtol=rtol, err_msg=name + dtype)
            print(name, dtype, "ok")
    """
)


def test_every_layer_trains_on_jax_in_its_default_mode():
    if "jax" not in requested_backends():
        pytest.skip("jax is not among the backends POLYNN_TEST_BACKENDS asks for")
    pytest.importorskip("jax", reason="needs JAX (the tests-jax nox session installs it)")
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count(" ok") == 6
