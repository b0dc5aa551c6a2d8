"""``python -m polynn info`` and the bare ``python -m polynn``.

These tests run the command line in a subprocess, which reports on every backend itself;
they do not use the ``backend`` fixture, because nothing here depends on one backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import polynn as pn


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "POLYNN_BACKEND"}
    return subprocess.run(
        [sys.executable, "-m", "polynn", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_info_lists_versions_backends_and_gpus():
    done = run("info")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    pairs = [line.split(maxsplit=1) for line in lines]
    fields = {pair[0]: pair[1] for pair in pairs if len(pair) == 2}
    assert fields["polynn"] == pn.__version__
    assert fields["NumPy"] == metadata.version("numpy")
    assert fields["array-api-compat"] == metadata.version("array-api-compat")
    assert fields["Python"].startswith(".".join(map(str, sys.version_info[:3])))
    for label in ("platform", "array-api-strict", "CuPy", "PyTorch", "JAX"):
        assert label in fields, label
    backends = [name for name in pn.backends.names() if name != "auto"]
    for name in backends:
        status = fields[name]
        try:
            pn.backends.get(name)
        except pn.BackendUnavailableError as exc:
            assert status.startswith("not usable: "), status
            assert str(exc) in status  # the reason, not only the verdict
        else:
            assert status.startswith("usable"), status
            assert f"kernels: {pn.backends.get(name).kernels.name}" in status
    assert "auto" not in fields
    assert "numpy" in fields and fields["numpy"].startswith("usable")
    gpus = lines.index(next(line for line in lines if line.startswith("GPUs")))
    assert lines[gpus + 1].strip()  # at least one line under it: a GPU or "none (why)"


def test_without_a_command_prints_help():
    done = run()
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "info" in done.stdout


def test_unknown_command_is_refused():
    done = run("frobnicate")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
