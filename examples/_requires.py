"""What the examples need beyond polynn: import it, or exit saying how to install it."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import polynn as pn


def require(module: str, extra: str = "examples") -> ModuleType:
    """``module``, imported; if it is missing, exit with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        sys.exit(
            f"{sys.argv[0]} needs {package} ({exc}); install the examples' extras with: "
            f'pip install -e ".[{extra}]"'
        )


@contextlib.contextmanager
def runnable_here() -> Iterator[None]:
    """Around building the model: a backend or dtype from the command line that cannot run
    here (CuPy without a GPU, bfloat16 without ml-dtypes) exits with polynn's message, which
    names the fix, instead of a traceback."""
    try:
        yield
    except (pn.BackendUnavailableError, pn.PolynnValueError, pn.PolynnTypeError) as exc:
        sys.exit(f"{sys.argv[0]}: {exc}")
