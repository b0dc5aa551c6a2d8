"""The model file format: one ``.npz`` holding the weights and a JSON config (or, for paths
ending in ``.safetensors``, a safetensors file with the config in its metadata).

The config names the format and its version, the dtype, and each layer by its class name and
constructor arguments. Layer names map only to the classes in ``polynn.layers.LAYERS``:
nothing in a file can name code to import or run. Reading and writing the archive itself
(atomically, never unpickling) is ``polynn.backends.host``'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from polynn import __version__
from polynn import _checks as checks
from polynn.backends import Backend, dtype_name, get
from polynn.backends.host import read_model, write_model
from polynn.errors import PolynnError, PolynnFileError, PolynnValueError
from polynn.layers import LAYERS, Layer

if TYPE_CHECKING:
    from polynn.model import Sequential

__all__ = ["FORMAT", "FORMAT_VERSION", "config", "layers_from", "load", "read", "write"]

FORMAT = "polynn"
FORMAT_VERSION = 1


def config(layers: Sequence[Layer], dtype: str, **settings: Any) -> dict[str, Any]:
    """The config of a model: format, versions, dtype, layers, and any ``settings``."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "polynn_version": __version__,
        "dtype": dtype,
        "layers": [
            {"type": type(layer).__name__, "config": layer.get_config()} for layer in layers
        ],
        **settings,
    }


def layers_from(config: dict[str, Any]) -> list[Layer]:
    """New layer objects built from a config's ``layers`` entries."""
    return [LAYERS[spec["type"]](**spec["config"]) for spec in config["layers"]]


def write(path: str | os.PathLike, weights: list[Any], config: dict[str, Any]) -> None:
    """Write ``weights`` (NumPy arrays) and ``config`` to ``path``, atomically."""
    write_model(checks.path(path, "the model file path"), weights, config)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], list[Any], str]:
    """``(config, weights, dtype name)`` of a model file, after checking that it is one this
    polynn can read: its config first, then each array against the shape the config implies
    (before reading it). Anything else raises ``PolynnFileError``."""
    path = checks.path(path, "the model file path")
    config, weights = read_model(path, lambda config: param_shapes(config, path))
    return config, weights, dtype_name(config["dtype"])


def param_shapes(config: dict[str, Any], path: str | os.PathLike) -> list[tuple[int, ...]]:
    """Check ``config`` (format, version, dtype, layers) and return the shapes of the
    parameters it describes, in ``get_weights`` order."""
    if config.get("format") != FORMAT:
        raise PolynnFileError(f"{str(path)!r} is not a polynn model file (no polynn config).")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PolynnFileError(
            f"{str(path)!r} has format version {version!r}; this polynn ({__version__}) reads "
            f"versions up to {FORMAT_VERSION}: upgrade polynn."
        )
    try:
        dtype_name(config["dtype"])
    except (KeyError, PolynnValueError) as exc:
        raise PolynnFileError(f"{str(path)!r} has no valid dtype in its config: {exc}") from None
    try:
        unknown = [s.get("type") for s in config["layers"] if s.get("type") not in LAYERS]
        if unknown:
            raise PolynnFileError(f"{str(path)!r} names unknown layer types {unknown}.")
        # Layers are cheap to construct (no arrays until a model builds them).
        layers = layers_from(config)
    except PolynnFileError:
        raise
    except (PolynnError, KeyError, TypeError, AttributeError) as exc:
        raise PolynnFileError(
            f"{str(path)!r} holds an inconsistent polynn model: {type(exc).__name__}: {exc}"
        ) from None
    return [shape for layer in layers for shape in layer.param_shapes()]


def load(
    path: str | os.PathLike,
    *,
    backend: str | Backend | None = None,
    device: Any = None,
    dtype: Any = None,
) -> Sequential:
    """Read a model written by ``Sequential.save`` onto ``backend`` (and ``device``).

    ``dtype=None`` keeps the saved dtype. Nothing is unpickled: a truncated, foreign or
    pickled file raises ``PolynnFileError``; a missing one ``PolynnFileNotFoundError``.
    """
    from polynn.model import Sequential  # polynn.model imports this module

    config, weights, saved_dtype = read(path)
    # What the caller asks for (backend, device, dtype) is the caller's to fix, not the file's.
    backend = get(backend, device)
    dtype = saved_dtype if dtype is None else dtype_name(dtype)
    backend.compute_dtype(dtype)  # a half type this backend lacks: the caller's to change
    try:
        net = Sequential.from_config(config, backend, dtype=dtype)
        net.set_weights(weights)
    except (PolynnError, KeyError, TypeError, AttributeError) as exc:
        raise PolynnFileError(
            f"{str(path)!r} holds an inconsistent polynn model: {type(exc).__name__}: {exc}"
        ) from None
    return net


def unpickle(config: dict, weights: list[Any], backend: str, seed: int | None) -> Sequential:
    """The model a pickle holds (``Sequential.__reduce__`` writes these arguments)."""
    from polynn.model import Sequential  # polynn.model imports this module

    net = Sequential.from_config(config, backend, seed=seed)
    net.set_weights(weights)
    return net
