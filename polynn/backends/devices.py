"""The GPUs visible on this machine, for ``python -m polynn info``.

CuPy is asked first (only when the cupy backend is usable); otherwise ``nvidia-smi -L`` where
it is installed. Nothing here runs at import time.
"""

from __future__ import annotations

import shutil
import subprocess

from polynn.errors import BackendUnavailableError

__all__ = ["visible_gpus"]


def visible_gpus() -> tuple[list[str], str]:
    """``(names, source)``: one line per visible GPU and where the list came from.

    ``source`` is ``"cupy"``, ``"nvidia-smi -L"`` or a sentence saying why there is none.
    """
    from polynn.backends import get

    try:
        get("cupy")
    except BackendUnavailableError:
        pass
    else:
        import cupy

        names = []
        for index in range(cupy.cuda.runtime.getDeviceCount()):
            props = cupy.cuda.runtime.getDeviceProperties(index)
            name = props["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            memory = props["totalGlobalMem"] / 2**30
            names.append(f"cuda:{index} {name} ({memory:.1f} GiB)")
        return names, "cupy"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [], "the cupy backend is not usable and nvidia-smi is not installed"
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"nvidia-smi -L failed: {exc}"
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        return [], f"nvidia-smi -L failed: {reason[0] if reason else f'exit {done.returncode}'}"
    return [line.strip() for line in done.stdout.splitlines() if line.strip()], "nvidia-smi -L"
