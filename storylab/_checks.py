"""Argument checks shared by every layer: one message for each kind of value.

Each check returns the value (as the type it promises) or raises
:class:`~storylab.errors.ArgumentError` (a ``ValueError``) naming the argument
and what it allows. The command line's flag checks are in
``storylab.cli.args``; these are for the Python API. Standard library only.
"""

from __future__ import annotations

import math
from typing import Any

from storylab.errors import ArgumentError

__all__ = ["check_positive_int", "check_positive_number", "check_seconds"]


def check_positive_int(name: str, value: Any) -> int:
    """``value`` if it is an integer >= 1 (a bool is not), else an error naming ``name``.

    Every limit and count in storylab is checked this way, with this message.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _finite_positive(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and value > 0
        and math.isfinite(value)
    )


def check_positive_number(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number > 0 (a time scale, a rate)."""
    if not _finite_positive(value):
        raise ArgumentError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def check_seconds(name: str, value: Any) -> float:
    """``value`` as seconds if it is a finite number > 0 (a timeout, a deadline)."""
    if not _finite_positive(value):
        raise ArgumentError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)
