"""The README's Python blocks run as written, in order, in one namespace (as a reader pastes
them into one session), and print no warning."""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_blocks():
    assert len(blocks()) >= 4


def test_the_readme_blocks_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the blocks save files
    namespace: dict = {}
    for i, code in enumerate(blocks()):
        if "pn.distributed" in code and importlib.util.find_spec("mpi4py") is None:
            continue  # needs polynn[mpi]; tests-mpi runs the distributed example instead
        if "sklearn" in code and importlib.util.find_spec("sklearn") is None:
            pytest.skip("the scikit-learn block needs scikit-learn")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exec(compile(code, f"README.md python block {i}", "exec"), namespace)
    capsys.readouterr()
