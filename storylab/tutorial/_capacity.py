"""Notebook 3's helpers: the hand-offs in words, the run started together, and the
checker of the exercise that takes and gives back units by hand; and the checker
of notebook 6's even split, handed out by a real capacity tree.

The notebook shows the capacity tree; what it needs to *say* about a trace
(who could have taken a freed unit, and why the fair rule chose the one it did)
is bookkeeping, so it lives here, behind :func:`handoff_lines`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from storylab.scheduling import CapacitySource, Trace
from storylab.tutorial._verdict import Verdict, missing

__all__ = ["TogetherRun", "check_draw_picture", "check_split_and_even", "handoff_lines",
           "start_together"]


@dataclass(frozen=True)
class _Candidate:
    short: str  # "B"
    held: int  # units the story holds once the freed unit is back
    since: float  # model second its oldest waiting picture began to wait


def _candidates(trace: Trace, names: Mapping[str, str], handoff: Any) -> list[_Candidate]:
    """The waiting stories that had room of their own when ``handoff``'s unit came back."""
    from storylab.viz import replay_state

    before = replay_state(trace, handoff.released_at - 1e-6, names=names)  # just before
    freed_by = names.get(handoff.released_by, handoff.released_by)
    found: dict[str, _Candidate] = {}
    for wait in before.waits:
        story = next(s for s in before.stories if s.label == wait.story)
        held = story.in_use - (story.label == freed_by)  # the freer holds one fewer
        if held >= story.limit:
            continue
        old = found.get(story.short)
        found[story.short] = _Candidate(story.short, held,
                                        min(wait.since, old.since) if old else wait.since)
    return list(found.values())


def _since_digits(candidates: list[_Candidate]) -> int:
    """Decimals enough that the waiting times that break a tie print differently (1 to 4):
    stories started together ask a few thousandths of a model second apart."""
    fewest = min(c.held for c in candidates)
    times = {c.since for c in candidates if c.held == fewest}
    return next((d for d in range(1, 4) if len({round(t, d) for t in times}) == len(times)), 4)


def _why(chosen: str, candidates: list[_Candidate]) -> str:
    """Why the fair rule gave the unit to ``chosen``: fewest held, then longest waiting."""
    fewest = min(c.held for c in candidates)
    tied = [c for c in candidates if c.held == fewest]
    if len(tied) == 1:
        return f"fair rule: {tied[0].short} holds the fewest ({fewest})"
    first = min(tied, key=lambda c: c.since)
    names = ", ".join(c.short for c in tied)
    d = _since_digits(tied)
    verdict = (f"{first.short} has waited longest (since {first.since:.{d}f})"
               if first.short == chosen else f"{chosen} was served")
    return f"fair rule: a tie at {fewest} held between {names}, broken by waiting time: {verdict}"


def handoff_lines(trace: Trace, names: Mapping[str, str], *, after: float,
                  count: int = 2) -> list[str]:
    """The first ``count`` units given back after model second ``after``, in words.

    For each: who freed it, who took it and for which picture; then every waiting
    story that could have taken it (room of its own once the unit was back), how many
    units it held and since when it waited; and why the fair rule chose as it did,
    with any tie on the units held named and broken by the longest wait.
    """
    from storylab.viz import handoffs, task_label

    lines = []
    for h in handoffs(trace, after=after)[:count]:
        freed, took = names.get(h.released_by, h.released_by), names.get(h.taken_by, h.taken_by)
        lines.append(f"{h.released_at:4.1f} model s, a unit of {freed} went to {took}, "
                     f"for its picture {task_label(h.label or '?')}")
        could = _candidates(trace, names, h)
        if could:
            chosen = next((c.short for c in could if took.startswith(f"story {c.short}")),
                          took)
            d = _since_digits(could)
            lines.append(f"{'':20}could take it: " + ", ".join(
                f"{c.short} holding {c.held} (waiting since {c.since:.{d}f})" for c in could))
            lines.append(f"{'':20}{_why(chosen, could)}")
    return lines


@dataclass(frozen=True)
class TogetherRun:
    """The stories started at the same moment: the run, its split and its first hand-offs."""

    run: Any  # the StoryRun
    asked_at: float  # model second by which every story had asked
    split: tuple[int, ...]  # units each story held then, in the order of the topics
    lines: tuple[str, ...]  # what start_together printed

    def __repr__(self) -> str:
        # Short on purpose: a notebook shows this under the lines already printed, and the
        # run's whole trace (thousands of events) would bury them.
        split = ", ".join(map(str, self.split))
        return (f"<TogetherRun: {len(self.split)} stories started together, split {split} at "
                f"{self.asked_at:.1f} model s; .run holds the run and its trace>")


async def start_together(topics: Iterable[str], settings: Any, *, home: Any = None,
                         name: str = "03-together", show: bool = True) -> TogetherRun:
    """Run the stories of ``topics`` started together (no stagger) in a fresh graph, and
    print the split once every story has asked and the first two hand-offs."""
    from storylab.tutorial import fresh_graph, run_stories, story_labels
    from storylab.viz import all_asked_at, replay_state

    run = await run_stories(fresh_graph(name, home=home), list(topics), settings=settings,
                            stagger=0, title="Stories started together",
                            panel=True if show else None)
    names = story_labels(run)
    asked = all_asked_at(run.trace, names)
    state = replay_state(run.trace, asked, names=names)
    lines = [f"{asked:4.1f} model s, the split: {state.gauge_text()}",
             *handoff_lines(run.trace, names, after=asked)]
    if show:
        print("\n".join(lines))
    return TogetherRun(run, asked, tuple(state.split), tuple(lines))


# -- the exercise: take a unit at both levels, give it back whatever happens --------
_GLOBAL, _STORY = 2, 3  # the checker's tree: a global 2 over two stories of 3
_PLAN = [("A", False), ("A", False), ("A", True), ("A", False), ("B", False), ("B", False)]


async def check_draw_picture(draw_picture: Any, *, seconds: float = 0.02,
                             timeout: float = 5.0) -> Verdict:
    """Exercise: ``draw_picture(story, work)`` takes one unit from ``story`` (and so from
    the global source above it), awaits ``work()`` while holding it, gives the unit
    back even when ``work()`` raises, and returns what ``work()`` returned.

    The checker builds a global source of 2 over stories A and B of 3 each and draws
    six pictures at once, four of A's (the third one raises) and two of B's. While
    each picture works it reads the units in use: no more pictures may work at once
    than the global limit, each must hold a unit of its own story, and the global
    level must count one unit per working picture, not two. At the end every level
    must be empty again.
    """
    if (v := missing(draw_picture)) is not None:
        return v
    if not inspect.iscoroutinefunction(draw_picture):
        return Verdict(False, "draw_picture must be an async def: taking a unit may have to "
                              "wait, so it is awaited")
    top = CapacitySource(_GLOBAL, name="global")
    stories = {s: CapacitySource(_STORY, parent=top, name=f"story {s}") for s in "AB"}
    working: list[str] = []
    problems: list[str] = []
    ran: list[int] = []

    def work_for(n: int, story: str, fails: bool) -> Any:
        async def work() -> str:
            working.append(story)
            ran.append(n)
            try:
                if len(working) > _GLOBAL and not problems:
                    problems.append(f"{len(working)} pictures worked at once under a global "
                                    f"limit of {_GLOBAL}: take a unit from the story's "
                                    "source before calling work()")
                own = sum(w == story for w in working)
                if top.in_use == 0 and not problems:
                    problems.append("a picture worked while no unit was in use at any level: "
                                    "take one from the story's source before calling work()")
                if stories[story].in_use < own and not problems:
                    problems.append(f"a picture of story {story} worked while its story's "
                                    f"source had {stories[story].in_use} units in use: take "
                                    "the unit from the story's source (it takes the global "
                                    "one in the same step), not from the global source")
                held = sum(src.in_use for src in stories.values())
                if top.in_use > held and not problems:
                    problems.append(f"the global level counted {top.in_use} units while the "
                                    f"stories held {held}: the story's acquire already takes "
                                    "the global unit; taking it again counts it twice")
                await asyncio.sleep(seconds)
                if fails:
                    raise RuntimeError(f"picture {n} refused")
                return f"picture {n}"
            finally:
                working.remove(story)
        return work

    calls = [draw_picture(stories[s], work_for(n, s, fails)) for n, (s, fails) in
             enumerate(_PLAN, start=1)]
    try:
        got = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout)
    except TimeoutError:
        if problems:
            return Verdict(False, problems[0])
        held = ", ".join(f"{src.name} {src.in_use}" for src in (top, *stories.values()))
        return Verdict(False, f"the six pictures had not finished after {timeout:g} s; units "
                              f"still in use: {held}. A unit not given back is lost: release "
                              "it once work() is done, also when work() raises")
    except Exception as exc:  # noqa: BLE001 - a learner's slip, said in words
        return Verdict(False, f"draw_picture raised {type(exc).__name__}: {exc}")
    if problems:
        return Verdict(False, problems[0])
    if sorted(ran) != list(range(1, len(_PLAN) + 1)):
        return Verdict(False, f"each picture's work() must run exactly once; ran: {sorted(ran)}")
    left = {src.name: src.in_use for src in (top, *stories.values()) if src.in_use}
    if left:
        return Verdict(False, f"after every picture ended, units are still in use ({left}): "
                              "the picture whose work() raised kept its unit; give it back in "
                              "a finally block")
    failed = got[2]
    if not isinstance(failed, RuntimeError):
        return Verdict(False, f"picture 3's work() raised, but draw_picture returned "
                              f"{failed!r}: let the failure out, so the runner can report it")
    wrong = [(n, g) for n, g in enumerate(got, start=1) if n != 3 and g != f"picture {n}"]
    if wrong:
        n, g = wrong[0]
        return Verdict(False, f"draw_picture for picture {n} returned {g!r}, not what its "
                              f"work() returned ('picture {n}')")
    return Verdict(True, "six pictures under a global 2: never more than 2 at once, each "
                         "holding a unit of its own story counted once globally, the refused "
                         "picture's unit given back, every level empty at the end")


# -- notebook 6: the even split, handed out by a real tree ------------------------------
_SPLITS = ((4, 3, 2), (10, 3, 5), (5, 2, 3), (6, 6, 2), (7, 2, 2))


def check_split_and_even(split: Any, even_limit: Any) -> Verdict:
    """Exercise: ``split(global_limit, story_limit, stories)`` hands the units of a real
    capacity tree to stories that ask one after another, each taking all it can, and
    returns what each holds; ``even_limit(global_limit, stories)`` is the largest
    per-story limit for which that split is even. ``split`` is checked against the
    hand-out the runner makes, then ``even_limit`` as :func:`check_even_limit` does."""
    from storylab.tutorial._exercises import _first_holdings, _raised, check_even_limit

    if (v := missing(split)) is not None:
        return v
    if not callable(split):
        return Verdict(False, "pass your function itself, split, not what it returns")
    for g, p, n in _SPLITS:
        call = f"split({g}, {p}, {n})"
        try:
            got = split(g, p, n)
        except Exception as exc:
            return _raised(call, exc)
        want = _first_holdings(p, g, n)
        try:
            got = [int(x) for x in got]
        except (TypeError, ValueError):
            return Verdict(False, f"{call} gave {got!r}: return a list of units, one number "
                                  "per story")
        if got == want:
            continue
        if len(got) != n:
            return Verdict(False, f"{call} gave {got}: one number per story, {n} in all")
        if not any(got):
            return Verdict(False, f"{call} gave {got}: no story took a unit; let each take "
                                  "units from its own source until try_acquire() says no")
        if any(x > p for x in got):
            return Verdict(False, f"{call} gave {got}: a story holds more than its limit of "
                                  f"{p}; take units from the story's source, not the global one")
        if sum(got) > g:
            return Verdict(False, f"{call} gave {got}: {sum(got)} units out of a global "
                                  f"{g}; hang every story's source under the global one")
        return Verdict(False, f"{call} gave {got}; stories asking one after another hold "
                              f"{want}: each takes all it can before the next asks")
    verdict = check_even_limit(even_limit)
    if not verdict:
        return verdict
    try:
        got = even_limit(2, 3)
    except Exception as exc:
        return _raised("even_limit(2, 3)", exc)
    if got != 0:
        return Verdict(False, f"even_limit(2, 3) gave {got!r}: with more stories than units no "
                              "limit of 1 or more splits evenly, so return 0")
    # The same even_limit on another tree, one where a formula on global_limit and stories
    # gives the wrong limit: another job already holds one global unit.
    scope = getattr(even_limit, "__globals__", {})
    for g, n in _BUSY_CASES:
        best = max((k for k in range(1, g + 1) if len(set(_busy_split(g, k, n))) == 1),
                   default=0)
        had, scope["split"] = scope.get("split", _NOTHING), _busy_split
        try:
            got = even_limit(g, n)
        except Exception as exc:
            return _raised(f"even_limit({g}, {n}) on the busier tree", exc)
        finally:
            if had is _NOTHING:
                scope.pop("split", None)
            else:
                scope["split"] = had
        if got != best:
            return Verdict(False, f"even_limit({g}, {n}) gave {got!r} on a tree where another job "
                                  f"already holds 1 of the {g} global units: there "
                                  f"split({g}, {got}, {n}) hands out "
                                  f"{_busy_split(g, int(got or 0), n)}, and the largest even "
                                  f"limit is {best}. Let even_limit try limits on split rather "
                                  "than compute one from the numbers")
    return Verdict(True, "split hands out the units as the runner does (4 over two stories "
                         "of 3: [3, 1]), and even_limit finds the largest even limit by "
                         "trying it on split: on a tree with one unit already taken it "
                         "found a smaller one")


_NOTHING = object()
_BUSY_CASES = ((4, 2), (9, 3))


def _busy_split(global_limit: int, story_limit: int, stories: int) -> list[int]:
    """A real capacity tree's hand-out when another job already holds one global unit."""
    top = CapacitySource(global_limit, name="global")
    top.try_acquire()  # the other job's unit
    held = []
    for n in range(stories):
        story, taken = CapacitySource(story_limit, parent=top, name=f"story {n}"), 0
        while story.try_acquire():
            taken += 1
        held.append(taken)
    return held
