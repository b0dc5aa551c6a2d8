"""What the examples need beyond polynn: import it, or exit saying how to install it."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


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
