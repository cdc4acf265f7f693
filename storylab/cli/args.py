"""What every ``storylab`` subcommand shares: exit codes, value checks, flag names.

Standard library only, so every command module may use it, and
``storylab --help`` stays fast.

The value checks are argparse ``type=`` functions: a bad value is refused
while the command line is parsed, before anything runs or is stored, with the
flag's name and the values it accepts. Errors raised later by the library
name its *fields* (``illustration_count``); :func:`flag_message` turns those
names into the flags a user typed (``--images``), from the one table
:data:`FLAGS`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "EXIT_CODES_HELP",
    "FLAGS",
    "MAX_AGE",
    "age_range",
    "flag_message",
    "graph_location",
    "http_url",
    "int_in_range",
    "non_negative_float",
    "port",
    "positive_float",
    "positive_int",
    "probability",
]

EXIT_OK = 0  # everything asked for was done
EXIT_FAILED = 1  # it ran but did not fully succeed, or the graph/port cannot be used
EXIT_USAGE = 2  # the command line was refused; nothing ran, nothing was stored
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); run the same command again to resume
EXIT_PIPE = 141  # the reader of the output went away (128 + SIGPIPE), e.g. `| head`

EXIT_CODES_HELP = """exit codes:
  0    done
  1    done with failures (a failed image, a rejected topic), or a graph, an
       entity or a port that cannot be used; one line on stderr says which
  2    bad command line (a flag's value, a missing command); nothing was run
  130  interrupted with Ctrl-C; run the same command again to resume
  141  the output was closed early (e.g. piped into `head`)"""

# Library field name -> the flag of the command line that sets it. Only names
# that cannot be ordinary words ("style", "limit" and "topic" are, and read
# well as they are).
FLAGS: dict[str, str] = {
    "illustration_count": "--images",
    "image_quality": "--quality",
    "aspect_ratio": "--aspect",
    "age_range": "--age-range",
    "time_scale": "--time-scale",
    "fail_probability": "--fail-probability",
    "story_limit": "--story-limit",
    "global_limit": "--global-limit",
    "base_url": "--images-url",
    "max_concurrent": "--max-concurrent",
    "retry_after": "--retry-after",
    "per_group": "--per-group",
}


def flag_message(message: str, flags: Mapping[str, str] = FLAGS) -> str:
    """``message`` with every whole-word field name replaced by its flag."""
    if not flags:
        return message
    names = sorted(flags, key=len, reverse=True)  # longest first: story_limit before limit
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])")
    return pattern.sub(lambda m: flags[m.group(1)], message)


def _refuse(expected: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {expected}; got {text!r}")


def _number(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _refuse(expected, text) from None
    if not math.isfinite(value):  # inf would sleep forever, nan compares false to anything
        raise _refuse(expected, text)
    return value


def int_in_range(
    lo: int, hi: int | None = None, what: str = "", *, expected: str = ""
) -> Callable[[str], int]:
    """A ``type=`` for a whole number from ``lo`` to ``hi`` (no upper bound if ``None``);
    ``expected`` replaces the generated description of the allowed values."""
    if not expected:
        expected = (
            f"a whole number from {lo} to {hi}" if hi is not None else f"a whole number >= {lo}"
        )
        if what:
            expected += f" ({what})"

    def check(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise _refuse(expected, text) from None
        if value < lo or (hi is not None and value > hi):
            raise _refuse(expected, text)
        return value

    check.__name__ = "whole number"
    return check


positive_int = int_in_range(1)


def positive_float(text: str) -> float:
    """A finite number > 0 (a time scale: ``inf`` would never finish)."""
    expected = "a number > 0, like 0.05"
    value = _number(text, expected)
    if value <= 0:
        raise _refuse(expected, text)
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (seconds)."""
    expected = "a number of seconds >= 0, like 0.2"
    value = _number(text, expected)
    if value < 0:
        raise _refuse(expected, text)
    return value


def probability(text: str) -> float:
    expected = "a probability from 0 to 1, like 0.25"
    value = _number(text, expected)
    if not 0 <= value <= 1:
        raise _refuse(expected, text)
    return value


#: A TCP port from 1 to 65535, or 0 for "any free port" (the server prints which).
port = int_in_range(0, 65535, expected="a port from 1 to 65535, or 0 for any free port")


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host (and a valid port, if it has one)."""
    expected = "an http:// or https:// URL with a host, like http://127.0.0.1:8765"
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise _refuse(expected, text) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(expected, text)
    return text.strip()


MAX_AGE = 18
_AGES = re.compile(r"\s*(\d{1,3})\s*-\s*(\d{1,3})\s*")


def age_range(text: str) -> str:
    """Two ages, youngest first, from 1 to :data:`MAX_AGE`: ``3-5``; written back as ``lo-hi``."""
    expected = f"two ages from 1 to {MAX_AGE}, youngest first, like 3-5"
    m = _AGES.fullmatch(text)
    if not m:
        raise _refuse(expected, text)
    lo, hi = int(m.group(1)), int(m.group(2))
    if not 1 <= lo <= hi <= MAX_AGE:
        raise _refuse(expected, text)
    return f"{lo}-{hi}"


def graph_location(text: str) -> str:
    """``--graph``: a graph file, a folder (``graph.sqlite`` inside it), or a
    store's URL (``scheme://...``, passed on as it is).

    Refused before anything is opened or created: something that is neither a
    file nor a folder (``/dev/null``, a pipe), and a path whose folder does not
    exist (a typo would otherwise create folders silently; the default
    location, used when ``--graph`` is not given, is created as needed).
    """
    value = text.strip()
    if not value:
        raise argparse.ArgumentTypeError("must be a graph file or a folder; got ''")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        return value
    try:
        st = os.stat(value)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(value))
        if not os.path.isdir(parent):
            shown = os.path.dirname(value) or "."
            raise argparse.ArgumentTypeError(
                f"the folder {shown!r} does not exist; create it first "
                f"(mkdir -p {shown}) or fix the path; got {text!r}"
            ) from None
        return value
    except OSError as exc:  # a name too long, a loop of links, no permission
        raise argparse.ArgumentTypeError(f"cannot use {text!r} ({exc.strerror or exc})") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise argparse.ArgumentTypeError(
            f"must be a graph file or a folder, not a device, pipe or socket; got {text!r}"
        )
    return value
