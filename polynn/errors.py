"""The errors polynn raises.

Every error derives from :class:`PolynnError` *and* from the builtin exception that fits, so
``except pn.PolynnError`` and ``except ValueError`` both catch a bad shape.
"""

from __future__ import annotations

__all__ = [
    "PolynnError",
    "PolynnValueError",
    "PolynnTypeError",
    "BackendUnavailableError",
    "TrainingDivergedError",
    "PolynnFileError",
    "PolynnFileNotFoundError",
]


class PolynnError(Exception):
    """Base class of every error raised by polynn."""


class PolynnValueError(PolynnError, ValueError):
    """A bad value, shape or name: the message says what was expected and what was given."""


class PolynnTypeError(PolynnError, TypeError):
    """An argument of the wrong type (a string where a number was expected, non-numeric data)."""


class BackendUnavailableError(PolynnError, RuntimeError):
    """A known backend that cannot run on this machine (library missing, no device)."""


class TrainingDivergedError(PolynnError, FloatingPointError):
    """Training produced an infinite or NaN loss."""


class PolynnFileError(PolynnError, OSError):
    """A model file that cannot be written or read (truncated, foreign, pickled)."""


class PolynnFileNotFoundError(PolynnFileError, FileNotFoundError):
    """A model file that does not exist."""
