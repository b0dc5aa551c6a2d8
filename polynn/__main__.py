"""``python -m polynn info``: versions, backends (usable or why not) and visible GPUs.

Versions come from the installed distributions' metadata, so no heavy library is imported
just to print its version; only probing a backend's usability imports its library.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from importlib import metadata

import polynn as pn
from polynn.backends.devices import visible_gpus

#: (label, distributions that provide it: the first installed one is reported)
LIBRARIES = [
    ("NumPy", ("numpy",)),
    ("array-api-compat", ("array-api-compat",)),
    ("array-api-strict", ("array-api-strict",)),
    ("CuPy", ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x", "cupy")),
    ("PyTorch", ("torch",)),
    ("JAX", ("jax",)),
    ("nvmath-python", ("nvmath-python",)),
    ("scikit-learn", ("scikit-learn",)),
]
WIDTH = 18


def version_of(distributions: Sequence[str]) -> str:
    """The version of the first installed distribution (with its name if it is not the
    first choice), or ``"not installed"``."""
    for dist in distributions:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        return version if dist == distributions[0] else f"{version} ({dist})"
    return "not installed"


def info_lines() -> list[str]:
    lines = [
        f"{'polynn':<{WIDTH}}{pn.__version__}",
        f"{'Python':<{WIDTH}}{platform.python_version()} ({platform.python_implementation()})",
        f"{'platform':<{WIDTH}}{platform.platform()}",
    ]
    lines += [f"{label:<{WIDTH}}{version_of(dists)}" for label, dists in LIBRARIES]
    lines += ["", "backends:"]
    names = [name for name in pn.backends.names() if name != "auto"]
    width = max(len(name) for name in names) + 2
    for name in names:
        try:
            backend = pn.backends.get(name)
        except pn.BackendUnavailableError as exc:
            status = f"not usable: {exc}"
        except Exception as exc:  # a broken install should not hide the other backends
            status = f"not usable: {type(exc).__name__}: {exc}"
        else:
            why = backend.compile_reason()
            steps = f"compiled by {backend.compiler}" if why is None else f"eager: {why}"
            status = (
                f"usable (device {backend.device}; kernels: {backend.kernels.name}; steps: {steps})"
            )
        lines.append(f"  {name:<{width}}{status}")
    gpus, source = visible_gpus()
    lines += ["", f"GPUs ({source}):" if gpus else "GPUs:"]
    lines += [f"  {gpu}" for gpu in gpus] if gpus else [f"  none ({source})"]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m polynn",
        description="polynn: neural networks written once against the Python array API.",
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser(
        "info", help="print versions, which backends are usable here (and why not), and GPUs"
    )
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    print("\n".join(info_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
