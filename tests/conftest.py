"""The ``backend`` fixture: every behavioural test runs once per backend.

``POLYNN_TEST_BACKENDS`` (comma-separated) picks the backends; by default every backend
polynn knows is tried and those unusable here are skipped with the reason. With
``POLYNN_REQUIRE_GPU=1`` an unusable cupy backend fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import polynn as pn

ALL_BACKENDS = [name for name in pn.backends.names() if name != "auto"]


def requested_backends() -> list[str]:
    env = os.environ.get("POLYNN_TEST_BACKENDS", "").strip()
    return [name.strip() for name in env.split(",") if name.strip()] if env else ALL_BACKENDS


def require_gpu() -> bool:
    return os.environ.get("POLYNN_REQUIRE_GPU", "") == "1"


def resolve(name: str) -> pn.backends.Backend:
    """The backend ``name``, or a skip (a failure for a required GPU) saying why not."""
    try:
        return pn.backends.get(name)
    except pn.BackendUnavailableError as exc:
        if name == "cupy" and require_gpu():
            pytest.fail(f"POLYNN_REQUIRE_GPU=1, but the cupy backend cannot run: {exc}")
        pytest.skip(f"backend {name!r} is not usable here: {exc}")


def pytest_configure(config: pytest.Config) -> None:
    # The float64 tests need JAX's 64-bit mode, switched on before any JAX array exists.
    if importlib.util.find_spec("jax") is not None:
        import jax

        jax.config.update("jax_enable_x64", True)


def pytest_sessionstart(session: pytest.Session) -> None:
    if require_gpu():
        try:
            pn.backends.get("cupy")
        except pn.BackendUnavailableError as exc:
            raise pytest.UsageError(
                f"POLYNN_REQUIRE_GPU=1, but no GPU is usable through cupy: {exc}"
            ) from None


@pytest.fixture(params=requested_backends())
def backend(request: pytest.FixtureRequest) -> pn.backends.Backend:
    """One usable backend per parametrisation (skipped with the reason where unusable)."""
    return resolve(request.param)


@pytest.fixture
def other_backend(request: pytest.FixtureRequest) -> pn.backends.Backend:
    return resolve(request.param)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``other_backend`` pairs ``backend`` with every backend usable here, requested or not
    (round trips between libraries)."""
    if "other_backend" in metafunc.fixturenames:
        metafunc.parametrize("other_backend", ALL_BACKENDS, indirect=True)


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = np.array([[0], [1], [1], [0]], dtype=np.float64)


def tutorial_weights() -> list[np.ndarray]:
    """The tutorial's initial weights: the legacy ``np.random.seed(42)`` draw, in its order."""
    state = np.random.RandomState(42)
    w1 = state.randn(2, 2)
    w2 = state.randn(2, 1)
    return [w1, np.zeros(2), w2, np.zeros(1)]


def blobs(rows: int = 60, features: int = 4, classes: int = 3, seed: int = 0):
    """Small separable classification data: (X float64, integer labels)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(classes, features))
    labels = rng.integers(0, classes, size=rows)
    X = centers[labels] + rng.normal(0, 1, size=(rows, features))
    return X, labels
