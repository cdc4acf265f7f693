"""How fast a lesson runs: one place for the speed knobs every notebook shares.

A notebook's parameters cell names only what a learner may want to change
(``fast`` and ``time_scale``); what a continuous-integration run needs (the
``STORYLAB_FAST`` switch, a floor on the sleeps) lives here, so no lesson
opens with plumbing.

Two speeds, because two kinds of cells exist. Most runs only need to finish;
a few are there to be *watched* (a panel filling up while five stories share
ten units), and those get the slower ``watch_scale``. In fast mode both are
the fast speed: nobody watches a CI run.
"""

from __future__ import annotations

import os
from typing import NamedTuple

#: Wall seconds per model second in fast mode (CI): an image lasts 0.2 s.
FAST_SCALE = 0.02
#: How much slower a watched cell runs than the others, outside fast mode.
WATCH_FACTOR = 4.0


class Pace(NamedTuple):
    """The two speeds of a lesson, in wall seconds per model second.

    Unpack it: ``time_scale, watch_scale = lesson_pace(fast, time_scale)``.
    """

    time_scale: float
    watch_scale: float

    def describe(self, fast: bool) -> str:
        picture = 10 * self.time_scale
        watched = 10 * self.watch_scale
        mode = "fast mode: " if fast else ""
        return (f"{mode}one model second lasts {self.time_scale:g} wall s (a picture about "
                f"{picture:.1f} s); the cells to watch run at {self.watch_scale:g} "
                f"(a picture about {watched:.1f} s)")


def fast_mode(fast: bool = False) -> bool:
    """True when the notebook asked for it or the environment sets ``STORYLAB_FAST=1``."""
    if not isinstance(fast, bool):
        raise ValueError(f"fast must be True or False, got {fast!r}")
    return fast or os.environ.get("STORYLAB_FAST") == "1"


def lesson_pace(fast: bool = False, time_scale: float = 0.05, *,
                fast_scale: float = FAST_SCALE, quiet: bool = False) -> Pace:
    """The speeds a lesson runs at, after the CI switch.

    ``time_scale`` is the notebook's parameter. In fast mode (``fast`` or
    ``STORYLAB_FAST=1``) both speeds become ``min(time_scale, fast_scale)``;
    otherwise the watched cells run ``WATCH_FACTOR`` times slower. Prints
    one line saying so, unless ``quiet``.
    """
    if isinstance(time_scale, bool) or not isinstance(time_scale, int | float) \
            or not 0 < time_scale <= 10:
        raise ValueError(f"time_scale must be a number of wall seconds per model second in "
                         f"(0, 10], got {time_scale!r}")
    if isinstance(fast_scale, bool) or not isinstance(fast_scale, int | float) \
            or fast_scale <= 0:
        raise ValueError(f"fast_scale must be a number > 0, got {fast_scale!r}")
    fast = fast_mode(fast)
    if fast:
        pace = Pace(min(time_scale, fast_scale), min(time_scale, fast_scale))
    else:
        pace = Pace(float(time_scale), float(time_scale) * WATCH_FACTOR)
    if not quiet:
        print(pace.describe(fast))
    return pace
