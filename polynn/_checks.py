"""Checks of hyperparameters, shared by the public entry points."""

from __future__ import annotations

import difflib
import math
import operator
import os
from collections.abc import Iterable
from typing import Any

from polynn.errors import PolynnTypeError, PolynnValueError

#: The largest count polynn takes (steps, epochs, sizes): what a signed 64-bit integer holds.
MAX_INTEGER = 2**63 - 1


def integer(value: Any, what: str, minimum: int) -> int:
    """``value`` as an int no smaller than ``minimum`` and no larger than ``MAX_INTEGER``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise PolynnTypeError(f"{what} must be an integer; got {value!r}.")
    try:
        value = operator.index(value)
    except TypeError:  # an array of several numbers, say
        raise PolynnTypeError(f"{what} must be one integer; got {value!r}.") from None
    if value < minimum:
        raise PolynnValueError(f"{what} must be at least {minimum}; got {value}.")
    if value > MAX_INTEGER:
        shown = str(value) if value < 10**30 else f"a number of {len(str(value))} digits"
        raise PolynnValueError(f"{what} must be at most 2**63 - 1; got {shown}.")
    return value


def path(value: Any, what: str = "path") -> str | os.PathLike:
    """``value`` as a file path (a str or an ``os.PathLike``) without NUL characters."""
    if not isinstance(value, (str, os.PathLike)):
        raise PolynnTypeError(f"{what} must be a str or a path; got {value!r}.")
    text = os.fspath(value)
    if (b"\x00" if isinstance(text, bytes) else "\x00") in text:
        raise PolynnValueError(f"{what} must not contain NUL characters; got {value!r}.")
    return value


def number(
    value: Any,
    what: str,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    """``value`` as a float in the interval, or an error naming the interval expected."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        and not hasattr(value, "__float__")
    ):
        raise PolynnTypeError(f"{what} must be a number; got {value!r}.")
    try:
        value = float(value)
    except OverflowError:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:30]}... (too large)"
        raise PolynnValueError(f"{what} must be a finite number; got {shown}.") from None
    except (TypeError, ValueError):  # an array of several numbers, say
        raise PolynnTypeError(f"{what} must be one number; got {value!r}.") from None
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or math.isnan(value):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise PolynnValueError(f"{what} must lie in {interval}; got {value!r}.")
    return value


def unknown_name(
    kind: str, name: Any, valid: Iterable[str], aliases: dict[str, str] | None = None
) -> str:
    """The message for a name that is not one of ``valid``, with the closest one suggested
    ("unknown loss 'mes'; did you mean 'mse'? valid names are [...]"); ``aliases`` maps other
    words people use (``"gpu"``) to the name they mean."""
    valid = list(valid)
    text = str(name)
    close = [v for v in valid if v.lower() == text.lower()]
    close = close or [v for k, v in (aliases or {}).items() if k == text.lower()]
    close = close or difflib.get_close_matches(text.lower(), valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {kind} {name!r}; {hint}valid names are {valid}."


def unknown_keywords(
    owner: str, unknown: dict[str, Any], function: Any, aliases: dict[str, str]
) -> PolynnTypeError:
    """The error for keyword arguments ``function`` (called as ``owner``) does not take:
    the closest valid name suggested ("did you mean 'epochs'?"), or what ``aliases`` says of
    a name other libraries use (a valid name, or a hint)."""
    import inspect

    name = next(iter(unknown))
    valid = [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"
    ]
    hint = aliases.get(name) or next(iter(difflib.get_close_matches(name, valid, n=1)), None)
    if hint is None:
        said = ""
    elif hint in valid:
        said = f"did you mean {hint!r}? "
    else:
        said = f"{hint}. "
    return PolynnTypeError(
        f"{owner} got an unexpected argument {name!r}; {said}its arguments are {valid}."
    )
