"""Test matrix: one session per backend, plus lint, examples and benchmarks.

    nox              the default set (no GPU needed: tests-cupy skips without CUDA)
    nox -l           list the sessions
    nox -s tests-numpy -- -k tutorial    pass pytest arguments after --

Sessions run on the interpreter that runs nox. POLYNN_REQUIRE_GPU=1 turns a skipped cupy
session into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import nox

nox.options.sessions = [
    "tests-numpy",
    "tests-array_api_strict",
    "tests-cupy",
    "tests-sklearn",
    "lint",
    "examples",
]
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))
nox.options.reuse_existing_virtualenvs = False

EXAMPLES = [
    "xor.py --quick",
    "xor.py --tutorial",
    "digits.py --quick",
    "digits_cnn.py --quick",
    "tokens.py --quick",
    "mnist1d.py --quick",
    "mnist1d.py --quick --model cnn",
    "regression.py --quick",
    "custom_layer.py --quick",
    "memmap.py --quick",
]


def _pytest(session: nox.Session, backend: str, *extras: str) -> None:
    session.install("-e", f".[{','.join(('test', *extras))}]")
    session.run("pytest", *session.posargs, env={"POLYNN_TEST_BACKENDS": backend})


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The test suite on NumPy."""
    _pytest(session, "numpy")


@nox.session(name="tests-array_api_strict")
def tests_array_api_strict(session: nox.Session) -> None:
    """The test suite on array-api-strict: proves the network code is standard-only."""
    _pytest(session, "array_api_strict")


def _cuda_major() -> int | None:
    """The CUDA version the driver supports (from nvidia-smi), or None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*(\d+)", out)
    return int(match.group(1)) if match else None


@nox.session(name="tests-cupy")
def tests_cupy(session: nox.Session) -> None:
    """The test suite on CuPy; skips without a CUDA device unless POLYNN_REQUIRE_GPU=1."""
    major = _cuda_major()
    if major is None:
        reason = "no CUDA device visible (nvidia-smi missing or lists no GPU)"
        if os.environ.get("POLYNN_REQUIRE_GPU") == "1":
            session.error(f"POLYNN_REQUIRE_GPU=1 but {reason}")
        session.skip(reason)
    extra = "cuda13" if major >= 13 else "cuda12"
    session.install("-e", f".[test,{extra}]")
    session.run("pytest", *session.posargs, env={"POLYNN_TEST_BACKENDS": "cupy"})


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    """The test suite on PyTorch (not in the default set: a large install).

    POLYNN_TORCH_SPEC overrides what is installed, e.g. "torch==2.13.0".
    """
    session.install(os.environ.get("POLYNN_TORCH_SPEC", "torch"))
    _pytest(session, "torch")


@nox.session(name="tests-jax")
def tests_jax(session: nox.Session) -> None:
    """The test suite on JAX on the CPU (not in the default set: a large install)."""
    session.install("jax")
    _pytest(session, "jax")


@nox.session(name="tests-sklearn")
def tests_sklearn(session: nox.Session) -> None:
    """scikit-learn's own MLP tests against polynn.sklearn on array-api-strict (20-35 s;
    the default run has them on NumPy)."""
    session.install("-e", ".[test,sklearn]")
    session.run(
        "pytest", "tests/test_sklearn_suite.py", *session.posargs,
        env={"POLYNN_TEST_BACKENDS": "array_api_strict", "POLYNN_SKLEARN_SUITE": "1"},
    )  # fmt: skip


@nox.session(name="tests-mpi")
def tests_mpi(session: nox.Session) -> None:
    """Data-parallel training through mpiexec with 2 and 3 ranks, on NumPy and
    array-api-strict (not in the default set: it installs mpi4py and the mpich library)."""
    session.install("-e", ".[test,mpi,examples]")
    session.run(
        "pytest", "tests/test_distributed.py", *session.posargs,
        env={"POLYNN_TEST_BACKENDS": "numpy,array_api_strict"},
    )  # fmt: skip
    session.run("mpiexec", "-n", "2", "python", "examples/distributed.py", "--quick")


@nox.session(name="tests-onnx")
def tests_onnx(session: nox.Session) -> None:
    """ONNX export checked against onnxruntime (not in the default set: installs both)."""
    session.install("-e", ".[test,onnx]", "onnxruntime")
    session.run(
        "pytest", "tests/test_onnx.py", *session.posargs,
        env={"POLYNN_TEST_BACKENDS": "numpy,array_api_strict"},
    )  # fmt: skip


@nox.session
def docs(session: nox.Session) -> None:
    """The API reference (Sphinx autodoc) in docs/_build/html; any warning fails it."""
    session.install("-e", ".[sklearn]", "sphinx>=7")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )  # fmt: skip


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: style, imports, and no numpy/cupy imports outside polynn/backends."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example in its quick mode."""
    session.install("-e", ".[examples]")
    for example in EXAMPLES:
        script, *args = example.split()
        session.run("python", f"examples/{script}", *args, env={"MPLBACKEND": "Agg"})


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against hand-written NumPy (and PyTorch when installed); not default."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)
