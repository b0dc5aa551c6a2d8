"""Sphinx configuration of polynn's API reference (``python -m nox -s docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polynn  # noqa: E402

project = "polynn"
author = "polynn developers"
release = version = polynn.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Optional packages that autodoc needs not import to describe polynn.
autodoc_mock_imports = ["cupy", "torch", "jax", "mpi4py", "onnx", "safetensors"]
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
