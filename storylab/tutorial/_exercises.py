"""Checkers for the exercises that ask for code: they run what the learner wrote.

Each takes the learner's function or class, builds a small real world around
it (capacity sources, a runner, an entity graph in a scratch folder), runs it
and says what happened in words. A checker never trusts a printed claim: it
looks at units in use, stored statuses and counted children.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import traceback
import types
from pathlib import Path
from typing import Any

from storylab.entities import EntityGraph, Return, RunnableEntity
from storylab.scheduling import (
    CapacitySource,
    HierarchicalTaskPoolRunner,
    SourceBufferObj,
    SourceFromIterable,
    TaskEventType,
)
from storylab.tutorial._verdict import Verdict, missing, returned_not_raised

__all__ = [
    "check_capacity_tree",
    "check_error_branch",
    "check_finish_story",
    "check_give_up",
    "check_limited_sketchbook",
    "check_polite_burst",
    "check_retry_two",
    "check_bound_function",
    "check_even_limit",
    "check_failing_entity",
    "check_fair_misses",
    "check_lonely_round",
    "check_prompt_names",
    "check_stable_names",
    "check_state_of",
    "check_to_redraw",
    "check_two_level_tree",
]


def _raised(what: str, exc: BaseException) -> Verdict:
    where = traceback.extract_tb(exc.__traceback__)[-1:]
    line = f" (line {where[0].lineno})" if where else ""
    return Verdict(False, f"{what} raised {type(exc).__name__}: {exc}{line}")


# -- a two-level capacity tree ------------------------------------------------------
def check_two_level_tree(build: Any, *, global_limit: int = 4, story_limit: int = 3) -> Verdict:
    """Exercise: ``build()`` returns ``(global_source, story_a, story_b)``: one global
    source of ``global_limit`` units and two story sources of ``story_limit`` under it.

    The checker takes units by hand: story A fills its own limit, then story B
    must get only what is left globally, and giving everything back must empty
    all three.
    """
    if (v := missing(build)) is not None:
        return v
    if not callable(build):
        return Verdict(False, "pass your function itself, build_tree, not what it returns")
    try:
        made = build()
    except Exception as exc:
        return _raised("build_tree()", exc)
    if not isinstance(made, tuple | list) or len(made) != 3 \
            or not all(isinstance(s, CapacitySource) for s in made):
        return Verdict(False, "build_tree() must return three CapacitySource objects: "
                              "(global_source, story_a, story_b)")
    root, a, b = made
    parents = [s for s in made if sum(o.parent is s for o in made) == 2]
    if parents and parents[0] is not root:
        where = ("second", "third")[[a, b].index(parents[0])]
        return Verdict(False, f"the global source (the parent of the other two) is {where} in "
                              "what you return: the order is (global_source, story_a, "
                              "story_b), the global one first")
    if a is b or root in (a, b):
        same = "story_a and story_b are" if a is b else "the global source and a story are"
        return Verdict(False, f"{same} one and the same CapacitySource object in what you "
                              "return, so the units one takes are the other's too")
    linked = [s.parent is root for s in (a, b)]
    if linked.count(True) == 1:
        inside, outside = ("A", "B") if linked[0] else ("B", "A")
        if (b if linked[0] else a).parent is (a if linked[0] else b):
            return Verdict(False, f"story {outside} hangs under story {inside}, not beside it: "
                                  f"every unit {outside} takes is also taken from {inside}'s "
                                  f"own {story_limit}")
        return Verdict(False, f"story {inside} is under the global source, but story {outside} "
                              f"is not: a unit story {outside} takes is never counted at the "
                              "global level")
    if root.capacity != global_limit:
        return Verdict(False, f"the global source has {root.capacity} units, not {global_limit}")
    if (a.capacity, b.capacity) != (story_limit, story_limit):
        return Verdict(False, f"the stories have {a.capacity} and {b.capacity} units, "
                              f"not {story_limit} each")
    if any(s.in_use for s in made):
        return Verdict(False, "build_tree() should hand back sources with no unit taken")
    taken: list[CapacitySource] = []
    try:
        for _ in range(story_limit):
            if not a.try_acquire():
                return Verdict(False, f"story A could not take {story_limit} units of its own")
            taken.append(a)
        b_got = 0
        while b_got <= story_limit and b.try_acquire():
            taken.append(b)
            b_got += 1
        expected_b = min(story_limit, global_limit - story_limit)
        if b_got > expected_b:
            return Verdict(False, f"story B took {b_got} units while A held {story_limit}, "
                                  f"but only {global_limit} exist in all: nothing ties the "
                                  "stories to the global source yet")
        if root.in_use != story_limit + b_got:
            return Verdict(False, f"the global source counts {root.in_use} units in use while "
                                  f"the stories hold {story_limit + b_got}: a unit a story "
                                  "takes is not taken from the global source")
        if b_got < expected_b:
            return Verdict(False, f"story B got only {b_got} units though {expected_b} were free")
    finally:
        for source in reversed(taken):
            source.release()
    if any(s.in_use for s in made):
        return Verdict(False, "after every release some units are still counted in use")
    return Verdict(True, f"A took {story_limit}, B was held back at {expected_b} by the global "
                         f"level with room of its own left, and each release freed both levels")


# -- a capacity tree from a plan ----------------------------------------------------
#: An argument the learner was not asked for (no prediction to check).
_NOT_ASKED = object()
#: The plans tried, in order: the notebook's own (4 over two stories of 3), then one
#: with a different limit per story, where the global level binds in the third.
_TREE_PLANS = [(4, {"A": 3, "B": 3}), (5, {"A": 2, "B": 1, "C": 3})]


def check_capacity_tree(build: Any, *, predicted_c: Any = _NOT_ASKED) -> Verdict:
    """Exercise: ``build(global_limit, story_limits)`` returns ``(global_source, stories)``:
    a global source of ``global_limit`` units and, for each ``name: limit`` of the
    dict ``story_limits``, ``stories[name]``, a source of ``limit`` units under it.

    For each plan the checker takes units by hand: each story in turn takes all
    it can. A story must stop at its own limit or when the global level has none
    left, whichever comes first; giving everything back must empty every level.
    With ``predicted_c`` (the learner's count of C's units in the second plan,
    worked out before the run) the prediction must match what C took.
    """
    if (v := missing(build)) is not None:
        return v
    if not callable(build):
        return Verdict(False, "pass your function itself, build_tree, not what it returns")
    for global_limit, limits in _TREE_PLANS:
        plan = f"build_tree({global_limit}, {limits})"
        try:
            made = build(global_limit, dict(limits))
        except Exception as exc:
            return _raised(plan, exc)
        if not isinstance(made, tuple | list) or len(made) != 2:
            return Verdict(False, f"{plan} must return two things: (global_source, stories)")
        root, stories = made
        if not isinstance(root, CapacitySource):
            return Verdict(False, f"{plan}: the first thing returned must be the global "
                                  f"CapacitySource, not {type(root).__name__}")
        if not isinstance(stories, dict):
            return Verdict(False, f"{plan}: stories must be a dict from each story's name to "
                                  f"its CapacitySource, not {type(stories).__name__}")
        if sorted(stories) != sorted(limits):
            return Verdict(False, f"{plan} returned stories {sorted(stories)}, not one per "
                                  f"name of the plan: {sorted(limits)}")
        if root.capacity != global_limit:
            return Verdict(False, f"{plan}: the global source has {root.capacity} units, not "
                                  f"{global_limit}: use the global_limit you are given")
        for name, limit in limits.items():
            source = stories[name]
            if not isinstance(source, CapacitySource):
                return Verdict(False, f"{plan}: story {name} is {type(source).__name__}, not a "
                                      "CapacitySource")
            if source is root or sum(s is source for s in stories.values()) > 1:
                return Verdict(False, f"{plan}: story {name}'s source is also used for another "
                                      "level, so the units one takes are the other's too")
            if source.capacity != limit:
                return Verdict(False, f"{plan}: story {name} has {source.capacity} units, not "
                                      f"its own limit {limit}: each story takes its limit from "
                                      "story_limits")
            if source.parent is not root:
                under = next((n for n, o in stories.items() if o is source.parent), None)
                where = (f"under story {under}" if under else "under no source"
                         if source.parent is None else "under a source that is not the global one")
                return Verdict(False, f"{plan}: story {name} hangs {where}: a unit it takes is "
                                      "never counted at the global level")
        if root.in_use or any(s.in_use for s in stories.values()):
            return Verdict(False, f"{plan} should hand back sources with no unit taken")
        taken: list[CapacitySource] = []
        try:
            left = global_limit
            for name, limit in limits.items():
                got = 0
                while got <= limit and stories[name].try_acquire():
                    taken.append(stories[name])
                    got += 1
                expected = min(limit, left)
                if got != expected:
                    return Verdict(False, f"{plan}: story {name} took {got} units with "
                                          f"{left} left globally and its own limit of {limit}: "
                                          f"it should take {expected}")
                left -= got
            if root.in_use != global_limit - left:
                return Verdict(False, f"{plan}: the global source counts {root.in_use} units "
                                      f"in use while the stories hold {global_limit - left}")
        finally:
            for source in reversed(taken):
                source.release()
        if root.in_use or any(s.in_use for s in stories.values()):
            return Verdict(False, f"{plan}: after every release some units are still in use")
    done = ("both plans: each story stopped at its own limit or when the global level ran "
            "out (4 over 3 + 3: A 3, B 1; 5 over 2, 1, 3: A 2, B 1, C 2, held back with room "
            "of its own), and each release freed both levels")
    if predicted_c is _NOT_ASKED:
        return Verdict(True, done)
    return _check_c(predicted_c, done)


def _check_c(predicted: Any, done: str) -> Verdict:
    """The prediction of exercise 2: how many units C gets in ``build_tree(5, {A: 2, B: 1,
    C: 3})``, once A and B have taken theirs."""
    global_limit, limits = _TREE_PLANS[1]
    before = sum(v for k, v in limits.items() if k != "C")
    wanted = min(limits["C"], global_limit - before)
    if predicted is None:
        return Verdict(False, f"your tree is right ({done}); now fill in predicted_c, the "
                              "units C gets, before you look at what it took")
    if isinstance(predicted, bool) or not isinstance(predicted, int | float) \
            or predicted != int(predicted):
        return Verdict(False, f"your tree is right; predicted_c is a whole number of units, "
                              f"not {predicted!r}")
    if predicted == wanted:
        return Verdict(True, f"{done}. You predicted C's {wanted}: A and B hold {before} of "
                             f"the {global_limit} global units, so the global level runs out "
                             f"before C's own limit of {limits['C']} does")
    if predicted == limits["C"]:
        why = (f"{limits['C']} is C's own limit, but a unit must come from the global level "
               f"too, and A and B already hold {before} of its {global_limit}")
    elif predicted == global_limit:
        why = (f"{global_limit} is the whole global limit; C's own limit is {limits['C']} "
               f"and A and B already hold {before} of the global units")
    else:
        why = (f"A takes {limits['A']} and B {limits['B']} first; count what the global "
               f"level has left for C, and compare it with C's own limit")
    return Verdict(False, f"your tree is right, but C does not get {predicted:g}: {why}")


# -- what a resume redraws ----------------------------------------------------------
_CRASHES = [
    [("image-{{IMAGE_1}}", "Completed"), ("image-{{IMAGE_2}}", "stale"),
     ("image-{{IMAGE_3}}", "not stored")],
    [("image-{{IMAGE_1}}", "stale"), ("image-{{IMAGE_2}}", "Completed"),
     ("image-{{IMAGE_3}}", "Completed"), ("image-{{IMAGE_4}}", "not stored"),
     ("image-{{IMAGE_5}}", "not stored")],
    [("image-{{IMAGE_1}}", "Completed"), ("image-{{IMAGE_2}}", "Completed")],
    # Read while another process still runs the story: a running picture is waited
    # for (its holder keeps its lease), not drawn a second time.
    [("image-{{IMAGE_1}}", "running"), ("image-{{IMAGE_2}}", "stale"),
     ("image-{{IMAGE_3}}", "not stored")],
]
#: The states a resumed run draws: the rest are handed back (Completed) or waited for.
_REDRAWN = ("stale", "not stored")


def check_to_redraw(to_redraw: Any, crashed: Any = None, drawn: Any = None) -> Verdict:
    """Exercise: ``to_redraw(states)`` takes a list as :func:`picture_states` returns it
    (each with ``.name`` and ``.state``) and returns the set of names a resumed run draws.

    It is tried on a few made-up crashes, then, when given, on a real one:
    ``crashed`` (the states read right after the kill) against ``drawn``, the
    placeholders the resumed run's image backend was really called for.
    """
    from types import SimpleNamespace

    if (v := missing(to_redraw)) is not None:
        return v
    if not callable(to_redraw):
        return Verdict(False, "pass your function itself, to_redraw, not what it returns")
    cases = [[SimpleNamespace(name=n, state=s, finished_at=None) for n, s in case]
             for case in _CRASHES]
    real = None
    if crashed is not None and drawn is not None:
        real = {f"image-{p}" for p in drawn}
        cases.append(list(crashed))
    as_list = False  # a list or tuple works, but a set was asked for
    for i, states in enumerate(cases):
        try:
            got = to_redraw(states)
        except Exception as exc:
            return _raised("to_redraw(states)", exc)
        if isinstance(got, str) or not isinstance(got, set | frozenset | list | tuple):
            return Verdict(False, f"to_redraw must return a set of names, got {got!r}")
        as_list = as_list or not isinstance(got, set | frozenset)
        got = set(got)
        names = {p.name for p in states}
        expected = {p.name for p in states if p.state in _REDRAWN}
        where = "this notebook's real crash" if real is not None and i == len(cases) - 1 \
            else "a crash with " + ", ".join(f"{p.name} {p.state}" for p in states)
        if got == expected:
            continue
        if not got <= names:
            strange = sorted(got - names, key=str)
            if all(isinstance(x, str) and x.startswith("image-{{") for x in strange):
                # Names of pictures, but not of this crash's: written out, not computed.
                return Verdict(False, f"on {where} you returned {sorted(got, key=str)}, but "
                                      f"{', '.join(strange)} is no picture of that crash: "
                                      "compute the names from states (each p.name and "
                                      "p.state) instead of writing them out; there it "
                                      f"should be {sorted(expected)}")
            return Verdict(False, f"on {where} you returned {sorted(got, key=str)}: use the full "
                                  "names, p.name, such as 'image-{{IMAGE_4}}'")
        if got & {p.name for p in states if p.state == "Completed"}:
            return Verdict(False, f"on {where} you would redraw a Completed picture: its "
                                  "stored output is handed back instead")
        if got & {p.name for p in states if p.state == "running"}:
            return Verdict(False, f"on {where} you would draw a running picture a second "
                                  "time: its holder still has its lease, so it is waited for")
        lost = expected - got
        kinds = sorted({p.state for p in states if p.name in lost})
        return Verdict(False, f"on {where} you leave out {sorted(lost)} ({', '.join(kinds)}): "
                              "a resumed run draws those too")
    if real is not None:
        mine = to_redraw(list(crashed))
        if set(mine) != real:
            return Verdict(False, f"your function says {sorted(mine)}, but the resumed run "
                                  f"drew {sorted(real)}")
        note = " (a set is what was asked; a list works here)" if as_list else ""
        return Verdict(True, f"on the real crash your function names exactly the pictures the "
                             f"resumed run drew: {sorted(real)}{note}")
    note = " (a set is what was asked; a list works here)" if as_list else ""
    return Verdict(True, f"every picture that was not Completed, on each made-up crash{note}")


# -- the lease rule: running or stale -------------------------------------------------
def _exited_pid() -> int:
    """The pid of a process that has just run and exited (and been reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def check_state_of(state_of: Any, crashed: Any = None, crash_leases: Any = None) -> Verdict:
    """Exercise: ``state_of(status, lease, now, alive)`` names a picture's state after a
    crash from what the graph stores: ``"Completed"``, ``"running"``, ``"stale"`` or
    ``"not stored"``.

    It is tried on leases held by real processes (this one and another, alive, and one
    that has exited), fresh and run out; then, when given, on the notebook's crash:
    ``crash_leases`` maps each stored picture's name to its ``(status, lease)`` read
    right after the kill, and ``crashed`` is what :func:`picture_states` said then.
    """
    import os
    import subprocess
    import sys
    import time

    if (v := missing(state_of)) is not None:
        return v
    if not callable(state_of):
        return Verdict(False, "pass your function itself, state_of, not what it returns")
    now, me, gone = time.time(), os.getpid(), _exited_pid()
    # A live holder that is not this kernel: a rule that only trusts its own pid is wrong.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        return _state_of_verdict(state_of, crashed, crash_leases, now, me, gone, other.pid)
    finally:
        other.kill()
        other.wait()


def _state_of_verdict(state_of: Any, crashed: Any, crash_leases: Any, now: float, me: int,
                      gone: int, other: int) -> Verdict:
    import time

    from storylab.entities.records import HOST, LeaseRecord, pid_alive

    def lease(pid, expires_in):
        return LeaseRecord("node", f"{HOST}:{pid}", HOST, pid, "token", now - 20, now - 1,
                           now + expires_in)

    cases = [
        ("a Completed picture", "Completed", None, "Completed", "its output is stored"),
        ("a picture with no node", None, None, "not stored", "no node reached the graph"),
        (f"an InProgress picture whose holder (pid {me}) is alive and whose lease runs 30 s "
         "more", "InProgress", lease(me, 30), "running", "its holder is alive and renews its "
         "lease: a resumed run waits for it"),
        (f"an InProgress picture whose holder (pid {other}, another process on this machine) "
         "is alive and whose lease runs 30 s more", "InProgress", lease(other, 30), "running",
         "ask alive(lease.pid): any live holder counts, not only this kernel"),
        (f"an InProgress picture whose holder (pid {gone}) has exited, its lease not yet run "
         "out", "InProgress", lease(gone, 30), "stale", "its holder no longer exists, so "
         "nobody will finish it, whatever the lease's time says"),
        (f"an InProgress picture whose holder (pid {me}) is alive but whose lease ran out 5 s "
         "ago", "InProgress", lease(me, -5), "stale", "its holder stopped renewing the lease: "
         "compare lease.expires_at with now"),
        ("an InProgress picture with no lease at all", "InProgress", None, "stale",
         "nobody holds it (check for lease None before reading its fields)"),
    ]
    for what, status, held, expected, why in cases:
        try:
            got = state_of(status, held, now, pid_alive)
        except Exception as exc:
            v = _raised(f"state_of on {what}", exc)
            return Verdict(False, f"{v.message}; it should be {expected!r}: {why}")
        if got != expected:
            return Verdict(False, f"on {what} you said {got!r}; it is {expected!r}: {why}")
    if crashed is not None and crash_leases is not None:
        for p in crashed:
            status, held = crash_leases.get(p.name, (None, None))
            try:
                got = state_of(None if status is None else str(status), held, time.time(),
                               pid_alive)
            except Exception as exc:
                return _raised(f"state_of on this notebook's {p.name}", exc)
            if got != p.state:
                return Verdict(False, f"on this notebook's crash you said {got!r} for {p.name}, "
                                      f"but picture_states said {p.state!r}")
        states = ", ".join(sorted({p.state for p in crashed}))
        return Verdict(True, f"every made-up case, and every picture of this notebook's crash "
                             f"({states}) as picture_states named it")
    return Verdict(True, "every made-up case: Completed, not stored, running and stale")


# -- names that survive a resume ----------------------------------------------------
class _NameProbe(RunnableEntity):
    """A parent that only asks for children, as a pipeline does when it (re)starts."""

    async def run_impl(self):
        yield Return(None)


class _Picture(RunnableEntity):
    async def run_impl(self):
        yield Return(self.data.get("placeholder", self.data["prompt"]))


_PROMPTS = [{"placeholder": f"{{{{IMAGE_{n}}}}}", "prompt": f"picture {n} of the story"}
            for n in range(1, 6)]


# Prompts with no placeholder: only their text can name them. Two share a long
# opening, so a name cut from the first characters collides.
_BARE_PROMPTS = [
    # These two differ only in their last word, so no prefix short enough to be a
    # name tells them apart.
    {"prompt": "A small grey owl on a branch at dusk, watercolour, soft light"},
    {"prompt": "A small grey owl on a branch at dusk, watercolour, soft mist"},
    {"prompt": "A red fox asleep in the snow under a pine tree, watercolour"},
    {"prompt": "Two hedgehogs sharing an apple in an autumn garden, watercolour"},
    {"prompt": "A whale and a little boat under a starry sky, watercolour"},
    # The same words in another order: a name made from the letters alone (a sum of
    # their codes, a sorted string) cannot tell these two apart.
    {"prompt": "A little whale and a boat under a starry sky, watercolour"},
    # These two differ only after 40 characters, in a last word whose first letters are
    # the same: cutting the text short, or keeping a few letters of each word, collides.
    {"prompt": "A red fox asleep in the snow under a pine tree, pencil"},
    {"prompt": "A red fox asleep in the snow under a pine tree, pen"},
]
#: The longest name :func:`check_prompt_names` accepts: a name is a key, not a copy.
NAME_LIMIT = 40


def check_prompt_names(name_for: Any) -> Verdict:
    """Exercise: ``name_for(prompt)`` names a picture whose prompt has no placeholder,
    only its text (``{"prompt": "..."}``). The names must be short (at most
    ``NAME_LIMIT`` characters), differ between prompts, and be found again by a
    resumed run and by two other Python processes.
    """
    return check_stable_names(name_for, prompts=_BARE_PROMPTS, max_length=NAME_LIMIT)


def check_stable_names(name_for: Any, *, prompts: list[dict[str, str]] | None = None,
                       max_length: int | None = None) -> Verdict:
    """Exercise: ``name_for(prompt)`` names a picture's child entity. A first run and
    a resumed run (a graph reopened from its file) both ask for all five children:
    right when the resumed run finds exactly the first run's five. ``prompts``
    replaces the five placeholder prompts; ``max_length`` caps a name's length.
    """
    if (v := missing(name_for)) is not None:
        return v
    prompts = _PROMPTS if prompts is None else prompts
    if not callable(name_for):
        return Verdict(False, "pass your naming function itself")
    with tempfile.TemporaryDirectory(prefix="storylab-names-") as folder:
        path = Path(folder) / "graph.sqlite"
        counts = []
        for _run in ("first run", "resumed run"):
            with EntityGraph.open(path) as graph:
                parent = graph.create_or_retrieve(_NameProbe, "a-story", {})
                try:
                    names = [name_for(dict(p)) for p in prompts]
                except Exception as exc:
                    return _raised("your naming function", exc)
                if not all(isinstance(n, str) and n.strip() for n in names):
                    return Verdict(False, f"names must be non-empty strings, got {names!r}")
                if max_length is not None and (long := [n for n in names
                                                        if len(n) > max_length]):
                    return Verdict(False, f"{long[0]!r} has {len(long[0])} characters, more "
                                          f"than {max_length}: a name is a short key for the "
                                          "prompt, not a copy of it")
                if len(set(names)) < len(names):
                    return _collision(names, prompts, name_for)
                for name, prompt in zip(names, prompts, strict=True):
                    parent.append_or_retrieve_call(_Picture, name, prompt)
                counts.append(len(parent.children()))
    if counts[-1] != len(prompts):
        return Verdict(False, f"after the resume the story has {counts[-1]} children for "
                              f"{len(prompts)} pictures: the names changed between runs")
    # A real resume is a new Python process: run the function there too.
    for seed in ("1", "2"):
        other = _names_in_another_process(name_for, seed, prompts)
        if isinstance(other, Verdict):
            return other
        if other != names and len(other) != len(names):
            return Verdict(False, f"a second Python process made {len(other)} names for "
                                  f"{len(names)} prompts: {other}")
        if other != names:
            i = next(k for k, (a, b) in enumerate(zip(other, names, strict=True)) if a != b)
            return Verdict(False, f"for the prompt {prompts[i]['prompt']!r}, a second Python "
                                  f"process made the name {other[i]!r} and this one "
                                  f"{names[i]!r}: a resumed run would not find that child. "
                                  "Values such as hash() of a "
                                  "string or id() change from process to process")
    return Verdict(True, f"the resumed run found the same {len(prompts)} children by name: build "
                         "the name only from what the request itself holds")


def _collision(names: list[str], prompts: list[dict[str, str]], name_for: Any) -> Verdict:
    """Which two prompts share a name, the name, and why they share it.

    A cause is named only when ``name_for`` shows it: the shared beginning (or last
    word) alone gets the same name. Otherwise the key keeps too little of the text
    (a short digest collides by chance).
    """
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            a, b = prompts[seen[name]]["prompt"], prompts[i]["prompt"]
            break
        seen[name] = i
    same = 0
    while same < min(len(a), len(b)) and a[same] == b[same]:
        same += 1

    def named_by(part: str) -> bool:
        try:
            return bool(part) and name_for({"prompt": part}) == name
        except Exception:  # the learner's function on a text it was not written for
            return False

    fix = "make the name from the whole text"
    if sorted(a.split()) == sorted(b.split()):
        how = "they have the same words in another order"
    elif a.split()[-1:] == b.split()[-1:] and named_by(a.split()[-1]):
        how = "they end with the same word, and your name keeps only that"
    elif same and named_by(a[:same]):
        how = (f"they are the same for their first {same} characters, and your name keeps "
               "no more than that")
    else:
        how = ("your function maps two different texts to one name: a key that keeps only "
               "a little of the text, such as a few characters of a digest, collides by chance")
        fix = ("make the name from the whole text, and keep enough of it (8 hex characters "
               "of a digest or more) that two prompts practically never share it")
    return Verdict(False, f"two prompts got the same name, {name!r}: {a!r} and {b!r} ({how}). "
                          "The second picture would be handed the first one's result: " + fix)


_NAME_SCRIPT = """
import json, sys
spec = json.loads(sys.stdin.read())
space = {"__name__": "__learner__"}
for alias, module in spec["modules"].items():
    space[alias] = __import__(module, fromlist=["_"])
for alias, (module, qualname) in spec["objects"].items():
    value = __import__(module, fromlist=["_"])
    for part in qualname.split("."):
        value = getattr(value, part)
    space[alias] = value
space.update(spec["values"])
exec(compile(spec["source"], "<your naming function>", "exec"), space)
name_for = space[spec["name"]]
print(json.dumps([name_for(dict(p)) for p in spec["prompts"]]))
"""


def _names_in_another_process(name_for: Any, seed: str,
                              prompts: list[dict[str, str]]) -> list[Any] | Verdict:
    """The names ``name_for`` gives in a fresh interpreter whose ``PYTHONHASHSEED`` is ``seed``.

    The function's own source runs there, with the modules and plain constants
    it uses from its notebook (nothing else of this process travels).
    """
    name = getattr(name_for, "__name__", "")
    try:
        source = textwrap.dedent(inspect.getsource(name_for))
    except (OSError, TypeError):
        source = ""
    if not name.isidentifier() or f"def {name}" not in source:
        return Verdict(False, "define your naming function with `def` at the top of a cell so "
                              "the checker can also run it in a second Python process")
    modules: dict[str, str] = {}
    objects: dict[str, tuple[str, str]] = {}
    values: dict[str, Any] = {}
    left: list[str] = []  # the notebook's own functions and objects: they do not travel
    known = getattr(name_for, "__globals__", {})
    for used in _global_names(getattr(name_for, "__code__", None)):
        value = known.get(used)
        if isinstance(value, types.ModuleType):
            modules[used] = value.__name__
        elif isinstance(value, str | int | float | bool):
            values[used] = value
        elif (where := _importable(value)) is not None:
            objects[used] = where  # from hashlib import sha256: imported there too
        elif used in known:
            left.append(used)
    spec = {"source": source, "name": name, "modules": modules, "objects": objects,
            "values": values, "prompts": prompts}
    env = {**os.environ, "PYTHONHASHSEED": seed}
    try:
        done = subprocess.run([sys.executable, "-c", _NAME_SCRIPT], input=json.dumps(spec),
                              capture_output=True, text=True, env=env, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return Verdict(False, "your naming function did not finish within a minute "
                              "in a second Python process")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        lost = next((n for n in left if f"name '{n}' is not defined" in last), None)
        if lost is not None:
            hint = (f"{lost} is defined in your notebook, and only {name}'s own code travels: "
                    f"define {lost} inside {name}")
        elif "is not defined" in last:
            hint = f"import what it needs, in any cell or inside {name}"
        else:
            hint = "it must run with nothing but its own code and what it imports"
        return Verdict(False, f"run on its own in a second Python process, your naming function "
                              f"failed: {last} ({hint})")
    return json.loads(done.stdout)


def _global_names(code: types.CodeType | None) -> list[str]:
    """Every global name ``code`` may read, with those of the functions, lambdas and
    comprehensions nested inside it (each is a code object among its constants)."""
    if code is None:
        return []
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += [n for n in _global_names(const) if n not in names]
    return names


def _importable(value: Any) -> tuple[str, str] | None:
    """``(module, qualname)`` when ``value`` (a function or class) can be imported again
    from an installed module by that name, else None (a notebook's own objects)."""
    import importlib

    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)) or "<" in qualname \
            or module in ("__main__", "builtins") or module.startswith("__"):
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return (module, qualname) if found is value else None


# -- an ERROR branch ------------------------------------------------------------------
class _Refused(RuntimeError):
    pass


def _task(n: int, fail: bool):
    async def work() -> str:
        await asyncio.sleep(0.01 * (n % 3))
        if fail:
            raise _Refused(f"the model refused picture {n}")
        return f"picture {n}"
    work.__qualname__ = f"picture-{n}"
    return work


async def check_error_branch(collect: Any, *, tasks: int = 5, failing: int = 3) -> Verdict:
    """Exercise: ``await collect(runner)`` consumes the runner's envelopes and returns
    ``(finished, failed)``: the FINAL values and the ERROR envelopes' errors. One of
    ``tasks`` tasks fails; the others must all arrive and nothing may be raised.
    """
    if (v := missing(collect)) is not None:
        return v
    if not inspect.iscoroutinefunction(collect):
        return Verdict(False, "collect must be an `async def` function taking the runner")
    capacity = CapacitySource(2, name="exercise")
    thunks = [_task(n, n == failing) for n in range(1, tasks + 1)]
    runner = HierarchicalTaskPoolRunner("exercise", SourceBufferObj(thunks), capacity)
    try:
        got = await asyncio.wait_for(collect(runner), timeout=30)
    except _Refused as exc:
        return Verdict(False, f"collect raised the task's own error ({exc}): the ERROR branch "
                              "should keep it and go on, so the other tasks still arrive")
    except Exception as exc:
        return _raised("collect(runner)", exc)
    if capacity.in_use:
        return Verdict(False, f"{capacity.in_use} units were still in use after collect "
                              "returned: read the envelopes inside `async with runner.run_tasks()`")
    if not isinstance(got, tuple | list) or len(got) != 2:
        return Verdict(False, "collect must return two lists: (finished, failed)")
    finished, failed = (list(x) for x in got)
    want = sorted(f"picture {n}" for n in range(1, tasks + 1) if n != failing)
    if sorted(map(str, finished)) != want:
        return Verdict(False, f"finished holds {finished}, expected the {len(want)} values of "
                              "the tasks that succeeded (envelope.value of each FINAL)")
    if len(failed) != 1:
        return Verdict(False, f"failed holds {len(failed)} entries for 1 failed task: add a "
                              "branch for TaskEventType.ERROR that keeps envelope.error")
    if not isinstance(failed[0], _Refused) and f"picture {failing}" not in str(failed[0]):
        return Verdict(False, f"failed holds {failed[0]!r}; keep the envelope's error")
    return Verdict(True, f"{len(want)} pictures arrived and the refusal of picture {failing} was "
                         "kept, not raised: one failure never stops its siblings")


# -- an entity that fails ---------------------------------------------------------------
class _Harness(RunnableEntity):
    """Runs three children of the learner's class, the middle one told to fail."""

    async def run_impl(self):
        kind = self.data["kind"]
        items = [{"name": f"child-{n}", "data": {"value": n, "fail": n == 2}} for n in (1, 2, 3)]
        runner = HierarchicalTaskPoolRunner(
            "harness", SourceFromIterable(self.parallel_calls(_KINDS[kind], items)),
            CapacitySource(2, name="harness"))
        outcome = []
        async with runner.run_tasks() as results:
            async for envelope in results:
                if envelope.type is TaskEventType.ERROR:
                    outcome.append(type(envelope.error).__name__)
        yield Return(outcome)


_KINDS: dict[str, type] = {}


async def check_failing_entity(cls: Any, why: Any = None) -> Verdict:
    """Exercise: an entity class that returns ``data["value"]``, and raises a clear
    error when ``data["fail"]`` is true. Three children run under one parent; the
    failing one must end ``Failed`` with its error stored, the others ``Completed``.
    With ``why``, ``why(graph, parent_id)`` must then read the failures back from the
    graph: ``{child name: stored error message}`` for the failed children only.
    """
    if (v := missing(cls)) is not None:
        return v
    if not (isinstance(cls, type) and issubclass(cls, RunnableEntity)):
        return Verdict(False, "pass your RunnableEntity subclass itself (the class, not an "
                              "instance)")
    _KINDS[cls.__name__] = cls
    with tempfile.TemporaryDirectory(prefix="storylab-failing-") as folder:
        with EntityGraph.open(Path(folder) / "graph.sqlite") as graph:
            parent = graph.create_or_retrieve(_Harness, "harness", {"kind": cls.__name__})
            try:
                await asyncio.wait_for(parent.run(), timeout=30)
            except Exception as exc:
                return _raised("the parent of your entities", exc)
            kids = {k.name: graph.get_node(k.id) for k in graph.children(parent.id)}
            read_back: Any = None
            if why is not None:
                if not callable(why):
                    return Verdict(False, "pass your function itself, why")
                try:
                    read_back = why(graph, parent.id)
                except Exception as exc:
                    read_back = exc
    if sorted(kids) != ["child-1", "child-2", "child-3"]:
        return Verdict(False, f"the parent has children {sorted(kids)}")
    bad = kids["child-2"]
    if bad.status != "Failed":
        return Verdict(False, f"the child with fail=True ended {bad.status}: it was told to "
                              "fail, yet nothing in its run went wrong")
    for name in ("child-1", "child-3"):
        node = kids[name]
        if node.status == "Failed":
            error = node.error or {}
            return Verdict(False, f"{name} has fail=False but ended Failed with "
                                  f"{error.get('type')}: {error.get('message')!r}; a child "
                                  "told not to fail must complete")
        if node.status != "Completed" or node.output != int(name[-1]):
            return Verdict(False, f"{name} ended {node.status} with {node.output!r}: it should "
                                  "complete and return data['value']")
    error = bad.error or {}
    if (returned := returned_not_raised("child-2", error)) is not None:
        return returned
    if not str(error.get("message", "")).strip():
        return Verdict(False, "the failure was stored without a message: say what went wrong")
    stored = f"child-2 is Failed with {error.get('type')}: {error.get('message')!r} stored"
    if why is None:
        return Verdict(True, f"{stored}; its siblings completed")
    if isinstance(read_back, Exception):
        return _raised("why(graph, parent_id)", read_back)
    if not isinstance(read_back, dict):
        return Verdict(False, f"{stored}, but why returned {read_back!r}: return a dict, "
                              "{child name: its stored error message}")
    if "child-2" not in read_back:
        extra = f" (it named {sorted(map(str, read_back))})" if read_back else ""
        return Verdict(False, f"{stored}, but why did not find it{extra}: look at each "
                              "child's status in the graph")
    if set(read_back) != {"child-2"}:
        return Verdict(False, f"why named {sorted(map(str, read_back))}; only child-2 failed, "
                              "its siblings completed")
    if isinstance(read_back["child-2"], dict) and read_back["child-2"] == error:
        return Verdict(False, "why gave child-2 the whole error record (type, message, "
                              "traceback); return only its 'message'")
    if read_back["child-2"] != error.get("message"):
        return Verdict(False, f"why gave child-2 {read_back['child-2']!r}; the graph stores "
                              f"the message {error.get('message')!r} in the child's error "
                              "record")
    return Verdict(True, f"{stored}, its siblings completed, and why read the message back "
                         "from the graph")


# -- two failures, one retry -----------------------------------------------------------
async def check_retry_two(fail_two_then_retry: Any, *, time_scale: float = 0.002) -> Verdict:
    """Exercise: ``await fail_two_then_retry(graph, time_scale)`` runs a story whose
    image model refuses two pictures, then retries it with a fixed model, and
    returns that fixed model. Right when the story ends with all its pictures
    and the fixed model was asked for exactly two pictures, once each.
    """
    if (v := missing(fail_two_then_retry)) is not None:
        return v
    if not inspect.iscoroutinefunction(fail_two_then_retry):
        return Verdict(False, "fail_two_then_retry must be an `async def` function taking "
                              "(graph, time_scale)")
    from storylab.story.entities import StoryPipelineEntity

    with tempfile.TemporaryDirectory(prefix="storylab-retry-") as folder:
        with EntityGraph.open(Path(folder) / "graph.sqlite") as graph:
            try:
                fixed = await asyncio.wait_for(fail_two_then_retry(graph, time_scale), 120)
            except Exception as exc:
                return _raised("fail_two_then_retry(graph, time_scale)", exc)
            calls = getattr(fixed, "calls", None)
            if calls is None:
                return Verdict(False, "return the fixed model (the SimulatedImageBackend of the "
                                      f"retry), not {type(fixed).__name__}")
            stories = [r for r in graph.roots() if r.type == StoryPipelineEntity.__name__]
            if len(stories) != 1:
                return Verdict(False, f"the graph holds {len(stories)} stories: run the same "
                                      "request twice, so the retry finds the first story")
            story = graph.get_node(stories[0].id)
            pictures = [c for c in graph.children(story.id) if c.type == "ImageGenerationEntity"]
            failed = sorted(c.name for c in pictures if c.status != "Completed")
            stage = (story.output or {}).get("stage") if isinstance(story.output, dict) else None
    redrawn = {k: n for k, n in dict(calls).items() if n}
    if not redrawn:
        return Verdict(False, "the fixed model got no call: asking again returns the stored "
                              "result; ask for create_story(..., retry_failed=True)")
    if len(redrawn) < 2:
        return Verdict(False, f"the retry redrew only {sorted(redrawn)}: make two pictures fail "
                              "in the first run (images_fail=[..., ...])")
    if len(redrawn) > 2 or any(n != 1 for n in redrawn.values()):
        return Verdict(False, f"the fixed model was asked {dict(redrawn)}: exactly two pictures, "
                              "once each, should reach it")
    if failed or stage != "completed":
        return Verdict(False, f"after the retry the story is at stage {stage!r} with "
                              f"{failed or 'no'} pictures missing; retry with the fixed model")
    shown = ", ".join(sorted(k.strip("{}").replace("IMAGE_", "picture ") for k in redrawn))
    return Verdict(True, f"the retry asked the fixed model for {shown} only, once each; the "
                         f"{len(pictures) - 2} other pictures came back from the graph")


# -- retry until the story is complete ----------------------------------------------------
# What each model in turn refuses: the first run loses two pictures, the first retry one.
_FINISH_FAULTS = (("IMAGE_2", "IMAGE_4"), ("IMAGE_4",), (), ())


async def check_finish_story(finish_story: Any, *, time_scale: float = 0.002) -> Verdict:
    """Exercise: ``await finish_story(graph, models, time_scale)`` asks for one story
    with each image model of ``models`` in turn, until the story is complete, and
    returns how many models it used. The first model refuses two pictures, the
    second one of them, the third and fourth none: a right answer uses three, and
    each retry reaches its model only for the pictures still missing.
    """
    if (v := missing(finish_story)) is not None:
        return v
    if not inspect.iscoroutinefunction(finish_story):
        return Verdict(False, "finish_story must be an `async def` function taking "
                              "(graph, models, time_scale)")
    from storylab.story.backends.images import SimulatedImageBackend
    from storylab.story.entities import StoryPipelineEntity

    models = [SimulatedImageBackend(time_scale=time_scale, fail=f) for f in _FINISH_FAULTS]
    with tempfile.TemporaryDirectory(prefix="storylab-finish-") as folder:
        with EntityGraph.open(Path(folder) / "graph.sqlite") as graph:
            try:
                used = await asyncio.wait_for(finish_story(graph, list(models), time_scale), 120)
            except Exception as exc:
                return _raised("finish_story(graph, models, time_scale)", exc)
            stories = [r for r in graph.roots() if r.type == StoryPipelineEntity.__name__]
            story = graph.get_node(stories[0].id) if len(stories) == 1 else None
            stage = (story.output or {}).get("stage") if story is not None and isinstance(
                story.output, dict) else None
    asked = [sorted(k.strip("{}") for k, n in dict(m.calls).items() if n) for m in models]
    times = [sum(dict(m.calls).values()) for m in models]
    if not stories:
        return Verdict(False, "no story was asked for: create the story with "
                              "create_story(graph, ...) and await its run() with the first "
                              "model in use")
    if len(stories) != 1:
        return Verdict(False, f"the graph holds {len(stories)} stories: every request must be "
                              "the same one, so that each finds the story of the first")
    if times[0] != 5:
        return Verdict(False, f"the first model was asked for {times[0]} pictures instead of the "
                              "story's 5: the first request should use models[0]")
    if times[1] == 0:
        return Verdict(False, "the second model received no request: the story was asked for "
                              "again, but its two missing pictures were not drawn again, so "
                              "the stored result came back")
    if asked[1] != ["IMAGE_2", "IMAGE_4"] or times[1] != 2:
        return Verdict(False, f"the second model was asked for {', '.join(asked[1])} "
                              f"({times[1]} requests); only the two pictures still missing, "
                              "once each, should reach it")
    if times[2] == 0:
        return Verdict(False, f"after the second model the story is at stage {stage!r} and "
                              "picture 4 is still missing, yet the third model received no "
                              "request: the story is not finished at that point")
    if asked[2] != ["IMAGE_4"] or times[2] != 1:
        return Verdict(False, f"the third model was asked for {', '.join(asked[2])} "
                              f"({times[2]} requests), not only the one picture still missing")
    if times[3]:
        return Verdict(False, f"the fourth model was asked for {times[3]} pictures after the "
                              "story was complete")
    if stage != "completed":
        return Verdict(False, f"the story ended at stage {stage!r}, not completed")
    if isinstance(used, bool) or used != 3:
        return Verdict(False, f"finish_story returned {used!r}, but the story was complete "
                              "after 3 models: count only the models it really asked, and "
                              "stop once nothing is missing")
    return Verdict(True, "three requests: the first model received 5 requests and refused "
                         "2, the second was asked only for pictures 2 and 4 (and refused 4 "
                         "again), the third only for picture 4; the fourth model was never "
                         "needed")


# -- give up after too many failures ---------------------------------------------------------
def _give_up_task(n: int, fail: bool, started: list[int], cancelled: list[int]):
    async def work() -> str:
        started.append(n)
        if fail:
            raise _Refused(f"the model refused picture {n}")
        if n > 100:  # a task that only ends when it is cancelled
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(n)
                raise
        await asyncio.sleep(0)
        return f"picture {n}"
    return work


async def _run_give_up(collect: Any, plan: list[tuple[int, bool]], max_errors: int,
                       capacity: int):
    started: list[int] = []
    cancelled: list[int] = []
    thunks = [_give_up_task(n, fail, started, cancelled) for n, fail in plan]
    source = CapacitySource(capacity, name="exercise")
    runner = HierarchicalTaskPoolRunner("exercise", SourceBufferObj(thunks), source)
    outcome: Any
    try:
        # The tasks take no time: a loop still reading after 2 s never gives up.
        outcome = await asyncio.wait_for(collect(runner, max_errors), timeout=2)
    except TimeoutError:
        outcome = TimeoutError()
    except Exception as exc:  # the learner's own exception, or a slip
        outcome = exc
    await asyncio.sleep(0)
    return outcome, source.in_use, cancelled


async def check_give_up(collect: Any) -> Verdict:
    """Exercise: ``await collect(runner, max_errors)`` returns ``(finished, failed)``
    (FINAL values and ERROR errors) while at most ``max_errors`` tasks fail, and
    once one more fails it stops reading, which closes the run (tasks still
    running are cancelled, their units given back), and raises an exception of
    its own that is not the task's error.
    """
    if (v := missing(collect)) is not None:
        return v
    if not inspect.iscoroutinefunction(collect):
        return Verdict(False, "collect must be an `async def` function taking "
                              "(runner, max_errors)")
    # 1. Two failures among five, and two allowed: everything is read, nothing raised.
    plan = [(1, False), (2, True), (3, False), (4, True), (5, False)]
    got, in_use, _ = await _run_give_up(collect, plan, max_errors=2, capacity=2)
    if isinstance(got, TimeoutError):
        return Verdict(False, "with 2 failures allowed and 2 tasks failing, collect never "
                              "returned")
    if isinstance(got, _Refused):  # the task's own error, passed on (stop_on_error=True?)
        return Verdict(False, f"with 2 failures allowed and exactly 2 tasks failing, collect "
                              f"let a task's own error escape ({got}); that many failures "
                              "are still within the limit, so keep reading the envelopes")
    if isinstance(got, BaseException):
        return Verdict(False, f"with 2 failures allowed and exactly 2 tasks failing, collect "
                              f"raised {type(got).__name__}: {got}; that many failures are "
                              "still within the limit")
    if not isinstance(got, tuple | list) or len(got) != 2:
        return Verdict(False, "collect must return two lists: (finished, failed)")
    finished, failed = (list(x) for x in got)
    if sorted(map(str, finished)) != ["picture 1", "picture 3", "picture 5"]:
        return Verdict(False, f"with 2 failures allowed, finished holds {finished}, not the "
                              "values of the 3 tasks that succeeded")
    if len(failed) != 2 or not all(isinstance(e, _Refused) for e in failed):
        return Verdict(False, f"with 2 failures allowed, failed holds {_plain(failed)}, not the 2 "
                              "errors of the tasks that failed")
    if in_use:
        return Verdict(False, f"{in_use} units were still in use after collect returned")
    # 2. Two failures and one allowed; the other tasks never end on their own.
    plan = [(1, True), (2, True)] + [(n, False) for n in (101, 102, 103, 104)]
    got, in_use, cancelled = await _run_give_up(collect, plan, max_errors=1, capacity=3)
    if isinstance(got, TimeoutError):
        return Verdict(False, "with 1 failure allowed, collect was still reading envelopes "
                              "after the second task had failed: it waited for tasks that "
                              "never end instead of giving up")
    if not isinstance(got, BaseException):
        return Verdict(False, "with 1 failure allowed and 2 tasks failing, collect returned "
                              f"{_plain(got)} instead of raising")
    if isinstance(got, _Refused):
        return Verdict(False, f"collect raised the task's own error ({got}); raise an error of "
                              "your own that says how many tasks failed")
    if in_use or not cancelled:
        return Verdict(False, f"collect raised, but the run was not closed: {in_use} units "
                              "still taken, the running tasks not cancelled")
    tasks = ("task still running was cancelled with its unit" if len(cancelled) == 1
             else "tasks still running were cancelled with their units")
    return Verdict(True, f"2 failures of 5 were tolerated; past the limit collect raised "
                         f"{type(got).__name__} ({got}), and the {len(cancelled)} {tasks} "
                         "given back")


def _plain(value: Any) -> str:
    """``value`` as a learner reads it: an exception by its message, not its class."""
    if isinstance(value, BaseException):
        return repr(str(value))
    if isinstance(value, tuple | list):
        inner = ", ".join(_plain(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


# -- a polite client ----------------------------------------------------------------
async def check_polite_burst(ask: Any, *, requests: int = 12, ceiling: int = 4,
                             time_scale: float = 0.002) -> Verdict:
    """Exercise: ``await ask(client, url, n)`` asks the image server for picture ``n``
    and returns the status code. The checker starts its own server with a ceiling
    of ``ceiling`` and fires ``requests`` calls at once with ``asyncio.gather``:
    right when every answer is 200, the server refused none and, at the busiest
    moment, exactly ``ceiling`` requests were in flight (fewer leaves it idle).
    """
    if (v := missing(ask)) is not None:
        return v
    if not inspect.iscoroutinefunction(ask):
        return Verdict(False, "ask must be an `async def` function taking (client, url, n)")
    import httpx

    from storylab.story.backends import ImageServer, SimulatedImageBackend

    server = ImageServer(SimulatedImageBackend(time_scale=time_scale), max_concurrent=ceiling,
                         retry_after=2 * time_scale)
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = (ask(client, server.url, n) for n in range(requests))
            codes = await asyncio.wait_for(asyncio.gather(*calls), 120)
    except Exception as exc:
        return _raised("ask(client, url, n)", exc)
    finally:
        await server.close()
    stats = server.statistics()
    if stats.requests < requests:
        return Verdict(False, f"the server saw {stats.requests} requests for {requests} calls: "
                              "each call must send its request")
    names: set[str] = set()
    codes_left = [ask.__code__]
    while codes_left:  # the names ask's code uses, nested functions included
        code = codes_left.pop()
        names.update(code.co_names)
        codes_left += [c for c in code.co_consts if inspect.iscode(c)]
    if stats.rejected and "Semaphore" in names:
        return Verdict(False, f"the server refused {stats.rejected} of {stats.requests} requests: "
                              "each call of ask made its own semaphore, so no call ever waits "
                              "for another; create it once, outside ask, and share it")
    if stats.rejected:
        return Verdict(False, f"the server refused {stats.rejected} of {stats.requests} requests "
                              f"(at most {stats.peak_in_flight} at once): hold one of "
                              f"{ceiling} places while the request is in flight")
    if list(codes) != [200] * requests:
        return Verdict(False, f"the answers were {sorted(set(map(str, codes)))}: return "
                              "response.status_code")
    if stats.peak_in_flight <= 1 < ceiling:
        return Verdict(False, f"0 refused, but the requests went one at a time while the server "
                              f"serves {ceiling} at once: the client is {ceiling} times slower "
                              "than it need be")
    if stats.peak_in_flight < ceiling:
        return Verdict(False, f"0 refused, but at most {stats.peak_in_flight} requests were in "
                              f"flight while the server serves {ceiling} at once: "
                              f"{ceiling - stats.peak_in_flight} of its places stayed idle; "
                              f"give the client exactly the server's {ceiling} places")
    return Verdict(True, f"{requests} requests, 0 refused, {stats.peak_in_flight} at once at the "
                         f"busiest moment: exactly the server's {ceiling}, never more")


# -- the bound as code ----------------------------------------------------------------
def check_bound_function(bound: Any, result: Any) -> Verdict:
    """Exercise: ``bound(G, M, d, p, g)`` returns the lower bound on the makespan.
    Checked against every cell of ``result``, a sweep (each cell's ``ideal``), and a few
    cases the sweep does not hold."""
    if (v := missing(bound)) is not None:
        return v
    if not callable(bound):
        return Verdict(False, "pass your function itself, bound")
    from storylab.sweep import ideal_makespan

    d_sweep = getattr(result, "image_seconds", 10.0)
    cases = [(c.stories, c.images, d_sweep, c.story_limit, c.global_limit, c.ideal)
             for c in result.cells]
    for G, M, d, p, g in [(3, 7, 4.0, 2, 5), (1, 1, 10.0, 1, 1), (4, 6, 2.5, 6, 25),
                          (8, 3, 5.0, 2, 7)]:  # more stories than the sweep's
        cases.append((G, M, d, p, g, ideal_makespan(G, M, p, g, d)))
    for G, M, d, p, g, want in cases:
        try:
            got = bound(G, M, d, p, g)
        except Exception as exc:
            return _raised(f"bound({G}, {M}, {d:g}, {p}, {g})", exc)
        if isinstance(got, bool) or not isinstance(got, int | float) \
                or abs(got - want) > 1e-6:
            hint = _rounds_hint(got, want, d) or ("count the rounds one story needs and the "
                                                  "rounds the pool needs")
            rounds = max(math.ceil(M / p), math.ceil(G * M / g))
            if isinstance(got, int | float) and not isinstance(got, bool) and d != 10 \
                    and abs(got - 10 * rounds) < 1e-6:
                hint = (f"the rounds are right ({rounds}), but each lasted 10 model s: use the "
                        f"d argument ({d:g} here), not 10")
            if isinstance(got, int | float) and not isinstance(got, bool) \
                    and abs(got - d * max(M / p, G * M / g)) < 1e-6:
                hint = ("a round is whole: a part of a round still takes a full one, so round "
                        "each count up (math.ceil)")
            if isinstance(got, int | float) and not isinstance(got, bool):
                if abs(got - d * (math.ceil(M / p) + math.ceil(G * M / g))) < 1e-6:
                    hint = ("the two limits act at once, not one after the other: take the "
                            "larger of the two round counts, not their sum")
                elif abs(got - d * max(M // p, G * M // g)) < 1e-6 and got < want:
                    hint = ("round up, not down: a part of a round still takes a full one "
                            "(math.ceil, not //)")
                elif abs(got - d * max(M // p + 1, G * M // g + 1)) < 1e-6 and got > want:
                    hint = ("round up with math.ceil, not // + 1: when the pictures divide "
                            "evenly, // + 1 counts one round too many")
            return Verdict(False, f"bound({G}, {M}, {d:g}, {p}, {g}) gave {got!r}, the bound is "
                                  f"{want:g}: {hint}")
    return Verdict(True, f"your bound matches all {len(cases)} cases, every cell of the sweep "
                         "included")


def _rounds_hint(got: float, want: float, d: float) -> str:
    """What a wrong bound most likely counted: rounds instead of seconds, or d twice."""
    if d and d != 1 and abs(got * d - want) < 1e-6:
        return (f"{got:g} is a number of rounds; the bound is in model seconds: multiply by "
                f"the {d:g} model s each round lasts")
    if d and d != 1 and abs(got - want * d) < 1e-6:
        return f"{got:g} counts the {d:g} model s of a round twice"
    return ""


# -- an even split, as code ---------------------------------------------------------------
def _first_holdings(limit: int, global_limit: int, stories: int) -> list[int]:
    """What busy stories hold when they ask one after another, each up to ``limit``."""
    left, held = global_limit, []
    for _ in range(stories):
        take = max(0, min(limit, left))
        held.append(take)
        left -= take
    return held


def check_even_limit(even_limit: Any) -> Verdict:
    """Exercise: ``even_limit(global_limit, stories)`` returns the largest per-story
    limit under which ``stories`` busy stories always hold the same number of the
    ``global_limit`` units. Checked on a few pairs, the notebook's (4, 2) first."""
    if (v := missing(even_limit)) is not None:
        return v
    if not callable(even_limit):
        return Verdict(False, "pass your function itself, even_limit")
    for g, n in ((4, 2), (10, 3), (12, 5), (9, 3), (7, 7), (8, 3)):  # 8 / 3 rounds up
        want = g // n
        try:
            got = even_limit(g, n)
        except Exception as exc:
            return _raised(f"even_limit({g}, {n})", exc)
        call = f"even_limit({g}, {n}) gave {got!r}"
        if isinstance(got, bool) or not isinstance(got, int | float):
            return Verdict(False, f"{call}: return a number of units")
        if got != int(got):
            return Verdict(False, f"{call}: a limit is a whole number of units")
        got = int(got)
        if got == want:
            continue
        if got <= 0:
            return Verdict(False, f"{call}: with no unit per story no picture is ever drawn")
        if got > want:
            held = _first_holdings(got, g, n)
            return Verdict(False, f"{call}: with {got} per story the stories that ask first can "
                                  f"hold {held} of the {g} units, which is not even")
        return Verdict(False, f"{call}: {got} per story splits evenly too ({got} each), but "
                              f"leaves {g - n * got} of the {g} units idle; is it the largest "
                              "limit that splits evenly?")
    return Verdict(True, "every pair matches: global // stories, so that no story can hold "
                         "more than its share (and the remainder, if any, stays idle)")


# -- where the fair policy misses the bound -------------------------------------------
async def check_fair_misses(misses: Any, *, stories: int = 5, images: int = 8,
                            story_limits: tuple[int, ...] = (1, 2, 3, 4, 5, 6),
                            global_limits: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 16, 20, 25),
                            ) -> Verdict:
    """Exercise: ``misses``, the set of ``(story_limit, global_limit)`` cells of the grid
    where the fair policy ends above the bound for ``stories`` stories of ``images``
    pictures. The checker runs that sweep on the simulated clock and compares."""
    if (v := missing(misses)) is not None:
        return v
    from storylab.sweep import sweep

    try:
        cells = {(int(p), int(g)) for p, g in misses}
    except (TypeError, ValueError):
        return Verdict(False, "give a set of (per-story limit, global limit) pairs, such as "
                              "{(1, 4), (2, 6)}")
    outside = sorted((p, g) for p, g in cells
                     if p not in story_limits or g not in global_limits)
    if outside:
        return Verdict(False, f"{outside} is not in the grid: per-story limits "
                              f"{list(story_limits)}, global limits {list(global_limits)}")
    result = await sweep(list(story_limits), list(global_limits), stories=stories,
                         images=images)
    by_cell = {(c.story_limit, c.global_limit): c for c in result.cells}
    truth = {key for key, c in by_cell.items() if c.makespan > c.ideal + 1e-6}
    if cells == truth:
        return Verdict(True, f"all {len(truth)} cells: in each, the first stories to ask take "
                             "every unit at once, and the last pictures run a round of their "
                             "own, one round (10 model s) above the bound")
    if images != 5:
        five = await sweep(list(story_limits), list(global_limits), stories=stories, images=5)
        if cells == {(c.story_limit, c.global_limit) for c in five.cells
                     if c.makespan > c.ideal + 1e-6}:
            return Verdict(False, f"those are the misses for stories of 5 pictures; with "
                                  f"{images} the rounds fall differently")

    def said(key: tuple[int, int]) -> str:
        c = by_cell[key]
        return (f"per-story {key[0]}, global {key[1]}: {c.makespan:g} model s against a bound "
                f"of {c.ideal:g}")

    parts = [f"{len(cells & truth)} of your {len(cells)} cells are right"]
    extra, left_out = sorted(cells - truth), sorted(truth - cells)
    if extra:
        verb = "sits" if len(extra) == 1 else "sit"
        parts.append(f"{len(extra)} {verb} on the bound, for instance {said(extra[0])}")
    if left_out:
        parts.append(f"you left out {len(left_out)}, for instance {said(left_out[0])}")
    return Verdict(False, "; ".join(parts))


# -- the lonely round as a rule ---------------------------------------------------------
def _start_of_worst(G: int, M: int, p: int, g: int) -> tuple[int, int] | None:
    """At the first instant the stories ask one after another, each taking up to
    ``min(p, M)`` units until the ``g`` are gone. ``None`` when every story got its
    full start; else ``(units, rounds)`` of the story that fared worst: the units
    it started with (0, or the remainder) and the rounds it needs, one round late
    for the pictures it could not start."""
    q, r = divmod(g, min(p, M))
    if q >= G:
        return None
    units = r if q + (1 if r else 0) >= G else 0
    return units, 1 + math.ceil((M - units) / p)


def _lonely(G: int, M: int, p: int, g: int) -> bool:
    worst = _start_of_worst(G, M, p, g)
    return worst is not None and worst[1] > max(math.ceil(M / p), math.ceil(G * M / g))


async def check_lonely_round(lonely_round: Any, *, stories: int = 5,
                             story_limits: tuple[int, ...] = (1, 2, 3, 4, 5, 6),
                             global_limits: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 16, 20, 25),
                             ) -> Verdict:
    """Exercise: ``lonely_round(G, M, p, g)`` is true when the first instant of the run
    already leaves one story to finish a round above the bound: the first stories
    take every unit, and the story that fared worst (none, or the remainder) needs
    more rounds than the bound counts. Compared with the rule on every cell of the
    grid for 3 to 5 stories of 3, 5 and 8 pictures; then the sweep for ``stories``
    stories confirms that every cell the rule flags ends above the bound."""
    if (v := missing(lonely_round)) is not None:
        return v
    if not callable(lonely_round):
        return Verdict(False, "pass your function itself, lonely_round")
    for G in (stories, 3, 4):
        for M in (5, 8, 3):
            for p in story_limits:
                for g in global_limits:
                    try:
                        said = lonely_round(G, M, p, g)
                    except Exception as exc:
                        return _raised(f"lonely_round({G}, {M}, {p}, {g})", exc)
                    if said is ...:
                        return Verdict(False, "lonely_round still returns ... (the "
                                              "placeholder): return True or False")
                    if bool(said) == _lonely(G, M, p, g):
                        continue
                    bound = max(math.ceil(M / p), math.ceil(G * M / g))
                    worst = _start_of_worst(G, M, p, g)
                    call = f"lonely_round({G}, {M}, {p}, {g}) gave {said!r}"
                    if worst is None:
                        few = f" (all {M} of its pictures)" if p > M else ""
                        return Verdict(False, f"{call}: at the start each of the {G} stories "
                                              f"takes {min(p, M)} units{few}, {G * min(p, M)} "
                                              f"of {g}, so none starts late")
                    units, rounds = worst
                    start = ("gets none" if units == 0 else
                             f"starts only {units} of its pictures")
                    end = ("so it ends a round above the bound" if rounds > bound else
                           "so its late round is already in the bound")
                    return Verdict(False, f"{call}: at the start the first stories take all "
                                          f"{g} units and the worst-off story {start}; it "
                                          f"needs {rounds} rounds in all (the first, then "
                                          f"{M - units} pictures, {p} at a time), the bound "
                                          f"counts {bound}, {end}")
    from storylab.sweep import sweep

    flagged, missed, others = 0, 0, []
    for M in (3, 5, 8):
        result = await sweep(list(story_limits), list(global_limits), stories=stories,
                             images=M)
        for c in result.cells:
            off = c.makespan > c.ideal + 1e-6
            if _lonely(stories, M, c.story_limit, c.global_limit):
                flagged += 1
                if not off:  # the rule would be wrong: say so rather than pass
                    return Verdict(False, f"the rule flags per-story {c.story_limit}, global "
                                          f"{c.global_limit} at {M} pictures, but the sweep "
                                          f"ends it on the bound ({c.makespan:g} model s)")
                missed += 1
            elif off:
                others.append(f"per-story {c.story_limit}, global {c.global_limit} at {M} "
                              "pictures")
    more = (f"; in other cells the sweep finds {len(others)} misses that no rule about the "
            "start can see: exercise 4 looks at one") if others else ""
    return Verdict(True, f"your rule agrees on every case, and the sweep of {stories} stories "
                         f"of 3, 5 and 8 pictures confirms it: all {flagged} cells it flags "
                         f"end a round above the bound{more}")



async def check_fifo_losses(fifo_losses: Any, *, stories: int = 5, images: int = 5,
                            global_limits: tuple[int, ...] = tuple(range(2, 26))) -> Verdict:
    """Exercise: ``await fifo_losses(story_limit, global_limits)`` runs the simulated
    stories under both wake-up policies and returns the global limits (in the order
    given) at which FIFO ends later than fair. Checked against sweeps of both policies
    at 2, 3 and 4 per story."""
    if (v := missing(fifo_losses)) is not None:
        return v
    if not callable(fifo_losses):
        return Verdict(False, "pass your function itself, fifo_losses")
    from storylab.sweep import sweep

    limits = list(global_limits)
    for p in (2, 3, 4):
        fair = await sweep([p], limits, stories=stories, images=images)
        fifo = await sweep([p], limits, stories=stories, images=images, policy="fifo")
        right = [g for g in limits if fifo.cell(p, g).makespan > fair.cell(p, g).makespan + 1e-6]
        call = f"fifo_losses({p}, range(2, 26))"
        try:
            said = fifo_losses(p, limits)
            if inspect.isawaitable(said):
                said = await said
        except Exception as exc:
            return _raised(call, exc)
        if said is ...:
            return Verdict(False, "fifo_losses still returns ... (the placeholder): return a "
                                  "list of global limits")
        if not isinstance(said, list | tuple) or not all(
                isinstance(g, int) and not isinstance(g, bool) for g in said):
            return Verdict(False, f"{call} gave {said!r}: return a list of global limits "
                                  "(whole numbers), such as [5, 7]")
        said = list(said)
        if said == right:
            continue
        off_bound = [g for g in limits if fifo.cell(p, g).makespan > fifo.cell(p, g).ideal + 1e-6]
        fair_off = [g for g in limits if fair.cell(p, g).makespan > fair.cell(p, g).ideal + 1e-6]
        if said == off_bound and off_bound != right:
            return Verdict(False, f"{call} gave {said}: those are the limits where FIFO misses "
                                  f"the bound; fair misses it too at {fair_off}. Compare FIFO's "
                                  "makespan with fair's, not with the bound")
        if not said and right:
            return Verdict(False, f"{call} gave []: FIFO loses at {len(right)} of them. Did "
                                  "both runs use the same policy? Pass policy=\"fifo\" to one")
        if sorted(said) == right:
            return Verdict(False, f"{call} gave the right limits in another order: keep the "
                                  "order of global_limits")
        wrong = sorted(set(said) - set(right))
        lost = sorted(set(right) - set(said))
        if wrong:
            g = wrong[0]
            return Verdict(False, f"{call} lists global {g}, but there FIFO and fair both end "
                                  f"at {fair.cell(p, g).makespan:g} model s (FIFO must end "
                                  "later, not the same)" if fifo.cell(p, g).makespan
                                  == fair.cell(p, g).makespan else
                                  f"{call} lists global {g}, where FIFO is not slower")
        g = lost[0]
        return Verdict(False, f"{call} leaves out global {g}: there FIFO ends at "
                              f"{fifo.cell(p, g).makespan:g} model s, fair at "
                              f"{fair.cell(p, g).makespan:g}; run every global limit, with "
                              f"stories={stories} and images={images}")
    return Verdict(True, "right for 2, 3 and 4 per story: FIFO loses at many global limits when "
                         "a story's own limit is small (2), at one when it is 3, and never at 4, "
                         "where a story rarely waits on its own limit long enough to block the "
                         "queue")

# -- an entity that fans out its children, two at a time ---------------------------------
def _pool_order(lengths: dict[str, float], limit: int) -> tuple[list[str], float]:
    """The order ``lengths`` finish in (and the makespan) when each starts, in the order
    given, as soon as one of ``limit`` slots is free."""
    slots: list[tuple[float, str]] = []
    ends: list[tuple[float, str]] = []
    for name, length in lengths.items():
        start = 0.0
        if len(slots) >= limit:
            slots.sort()
            start = slots.pop(0)[0]
        slots.append((start + length, name))
        ends.append((start + length, name))
    ends.sort()
    return [name for _, name in ends], max((t for t, _ in ends), default=0.0)


def _peak_in_use(trace: Any) -> int:
    """The most units any capacity source of ``trace`` had out at once."""
    from storylab.scheduling.trace import EventKind

    out: dict[str, int] = {}
    peak = 0
    for ev in trace.events:
        step = {EventKind.ACQUIRE: 1, EventKind.GRANT: 1, EventKind.RELEASE: -1}.get(ev.kind)
        if step is None:
            continue
        for name in ev.path:
            out[name] = out.get(name, 0) + step
            peak = max(peak, out[name])
    return peak




async def check_limited_sketchbook(cls: Any, subjects: dict[str, float], *,
                                   time_scale: float, limit: int = 2,
                                   predicted: Any = _NOT_ASKED) -> Verdict:
    """Exercise: an entity class whose ``run_impl`` fans out one child per subject with
    ``parallel_calls``, runs them ``limit`` at a time through a runner and a
    ``CapacitySource``, and returns the subjects in the order they finished.

    The class is run for real in a scratch graph, with ``{"subjects": subjects}`` as
    its data, under a :class:`~storylab.scheduling.Trace`; ``time_scale`` is the one
    its children sleep at. The verdict reads the trace (units in use, makespan), the
    graph (children, and how many existed before the first child finished) and the
    returned list. With ``predicted`` (the learner's makespan, worked out on paper
    before the run), a right sketchbook passes only with a right prediction too.
    """
    from storylab.scheduling import Trace
    from storylab.viz import ChildCounter, makespan

    if (v := missing(cls)) is not None:
        return v
    if not (isinstance(cls, type) and issubclass(cls, RunnableEntity)):
        return Verdict(False, f"pass your entity class itself, a subclass of RunnableEntity, "
                              f"not {cls!r}")
    if isinstance(time_scale, bool) or not isinstance(time_scale, int | float) \
            or time_scale <= 0:
        raise ValueError(f"time_scale must be a number of wall seconds > 0, got {time_scale!r}")
    subjects = dict(subjects)
    order, span_wanted = _pool_order(subjects, limit)
    deadline = 10.0 + 3 * sum(subjects.values()) * time_scale  # wall seconds
    with tempfile.TemporaryDirectory(prefix="storylab-fanout-") as folder:
        with EntityGraph.open(Path(folder) / "graph.sqlite") as graph:
            book = graph.create_or_retrieve(cls, "limited-sketchbook", {"subjects": subjects})
            trace = Trace(meta={"time_scale": time_scale})
            try:
                with trace:
                    async with ChildCounter(graph, book, trace) as counter:
                        result = await asyncio.wait_for(book.run(), deadline)
            except TimeoutError:
                return Verdict(False, f"your sketchbook was still running after {deadline:.0f} "
                                      "wall seconds: does its loop wait for something that "
                                      "never comes?")
            except Exception as exc:
                return _raised("your sketchbook", exc)
            children = len(graph.children(book.id))
    span, peak = makespan(trace), _peak_in_use(trace)
    fan_out = ("fan out one Sketch child per subject of self.data[\"subjects\"], as the "
               "Sketchbook above does")
    if children != len(subjects):
        return Verdict(False, f"the sketchbook has {children} children in the graph for "
                              f"{len(subjects)} subjects: {fan_out}")
    if peak == 0:
        return Verdict(False, "no capacity source handed out a single unit: run the children "
                              "through HierarchicalTaskPoolRunner(name, source, "
                              f"CapacitySource({limit})) and read its run_tasks()")
    if peak != limit:
        many = "only one sketch ran at a time" if peak == 1 else \
            f"up to {peak} sketches ran at once"
        return Verdict(False, f"{many}; the sketchbook's own limit must be {limit}: "
                              f"CapacitySource({limit})")
    made = counter.most_before_first_finish
    if made > limit:
        return Verdict(False, f"{made} children were already in the graph before the first "
                              f"sketch finished, though only {limit} could run: wrap the "
                              "tasks in SourceFromIterable, which pulls (and so creates) a child "
                              "only once a unit is held, not in SourceBufferObj, which needs "
                              "them all up front")
    if not isinstance(result, list | tuple):
        return Verdict(False, "run_impl should end with yield Return(finished), the list of "
                              f"subjects in the order they finished; it returned {result!r}")
    result = list(result)
    if sorted(map(str, result)) != sorted(subjects):
        return Verdict(False, f"it returned {result}; wanted each of the {len(subjects)} "
                              "subjects once (the value of each FINAL envelope)")
    if result == list(subjects) and result != order:
        return Verdict(False, f"it returned the subjects in the order they were asked for, "
                              f"{result}; collect envelope.value as each FINAL envelope "
                              "arrives, and the list comes in the order they finished")
    if result != order:
        return Verdict(False, f"it returned {result}; {limit} at a time, each freed unit "
                              f"going to the next subject in the order asked, they finish "
                              f"{order}")
    if span > 1.3 * span_wanted + 1.5:
        return Verdict(False, f"the run took {span:.1f} model s; {limit} at a time it takes "
                              f"about {span_wanted:g}. Does something wait between the "
                              "sketches? (On a very busy machine, run the check again.)")
    done = (f"{limit} sketches at most at once, each child made only when a unit was free "
            f"({made} before the first finished), results in the order they finished "
            f"({', '.join(order)}), {span:.1f} model s in all")
    if predicted is not _NOT_ASKED:
        from storylab.tutorial import check_makespan_with_limit

        if isinstance(predicted, float) and not predicted.is_integer() \
                and float(span_wanted).is_integer():
            return Verdict(False, f"your sketchbook is right ({done}); now predicted: a "
                                  "sketch takes exactly its length, so the makespan is a "
                                  f"whole number of model seconds, not {predicted!r}")
        guess = check_makespan_with_limit(subjects.values(), limit, predicted)
        if not guess:
            said = ("fill in predicted" if "fill in" in guess.message
                    else f"your prediction: {guess.message}")
            return Verdict(False, f"your sketchbook is right ({done}); now {said}")
        return Verdict(True, f"{done}: the {span_wanted:g} you predicted, measured")
    return Verdict(True, f"{done}: the {span_wanted:g} that {limit} slots give on paper, measured")
