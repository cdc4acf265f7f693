"""The capstone: a pipeline over 100 items, limited to a few at once, killed half-way
by a real signal and resumed, then judged from its graph alone.

The learner writes three pieces in the notebook, each with a checker that runs
it: ``item_name(n)`` (:func:`check_item_name`, also in a second Python
process), the ``Item`` entity (:func:`check_item`) and ``run_items``, which
runs the items under a capacity limit and keeps the failures
(:func:`check_run_items`). :func:`write_capstone` puts the three, as written,
into a script around a fixed ``Batch`` root; :func:`judge_capstone` checks the
pieces, writes the script and hands it to :func:`kill_and_resume`.

A script takes two arguments, the graph file and the wall seconds one item's
work lasts, and runs a root entity named ``batch`` whose children are the
items. :func:`kill_and_resume` starts it as a separate process, kills it with
``SIGKILL`` once about half of the items are stored as finished, notes what
the graph holds, runs it again to the end and reads the graph once more.
:func:`check_capstone` then asks its questions of that record.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import storylab
from storylab.entities import EntityGraph, EntityGraphError, Return, RunnableEntity
from storylab.tutorial._verdict import Verdict, missing, returned_not_raised

__all__ = ["CapstoneRun", "check_capstone", "check_item", "check_item_name", "check_run_items",
           "judge_capstone", "kill_and_resume", "plot_capstone", "write_capstone"]

ITEMS = 100
LIMIT = 4
FAIL_EVERY = 25  # the service refuses items 24, 49, 74 and 99


@dataclass(frozen=True)
class CapstoneRun:
    """What happened to the capstone script, read from its graph.

    ``killed_at`` is how many items were stored Completed when the first process
    was killed (``None`` if it ended before the kill); ``kept`` counts the
    items finished before the kill that kept their ``finished_at`` through the
    resume; ``peak`` is the most items whose stored runs overlap.
    """

    items: int
    limit: int
    killed_at: int | None
    first_exit: int | None
    second_exit: int | None
    children: int
    completed: int
    kept: int
    finished_before: int
    peak: int
    second_output: str = ""
    intervals: list[tuple[float, float]] = field(default_factory=list, repr=False)
    failed: int = 0
    """Children stored ``Failed`` after the resume."""
    expected_failed: int | None = None
    """How many items the service refuses (None: the script refuses none on purpose)."""
    recorded_failed: int | None = None
    """Failures the batch's stored result lists (None: it lists none)."""
    killed_wall: float | None = None
    """Wall-clock time of the kill (the intervals are wall-clock too)."""
    started_wall: float | None = None
    """Wall-clock time the first process was started."""
    resumed_wall: float | None = None
    """Wall-clock time the second process was started."""
    refused_intervals: list[tuple[float, float]] = field(default_factory=list, repr=False)
    """Stored (start, finish) of the items stored ``Failed``: they held a place too. An item
    refused before the kill, and again after the resume, gives both attempts."""
    unnamed_failed: list[int] = field(default_factory=list)
    """The n of each item stored ``Failed`` whose stored message does not contain its own n."""
    recorded_distinct: int | None = None
    """How many different strings the batch's stored ``"failed"`` list holds."""
    in_flight: list[tuple[float, float]] = field(default_factory=list, repr=False)
    """(start, kill) of the items stored ``Running`` when the first process was killed:
    they held a place until the kill, died with it and were done again after the resume."""

    ran = True
    """A process was started (:class:`NotRun` says False)."""

    def describe(self) -> str:
        killed = (f"killed with {self.killed_at} of {self.items} items stored"
                  if self.killed_at is not None else "not killed: it ended first")
        failures = (f", {self.failed} failed ({self.recorded_failed} recorded by the batch)"
                    if self.expected_failed is not None else "")
        return (f"first run {killed}; after the resume {self.completed} completed{failures}, "
                f"{self.children} children, {self.kept} of {self.finished_before} finished "
                f"items untouched, at most {self.peak} at once (limit {self.limit})")


@dataclass(frozen=True)
class NotRun:
    """What :func:`judge_capstone` returns when a piece is not right yet: no process
    was started. It answers ``describe()`` and ``ran`` like a :class:`CapstoneRun`."""

    verdict: Verdict
    ran = False

    def describe(self) -> str:
        return f"no process started: {self.verdict.message}"


def _items(graph_path: Path) -> list[Any]:
    if not graph_path.exists():
        return []
    try:
        with EntityGraph.open(graph_path, create=False, read_only=True) as graph:
            roots = [r for r in graph.roots() if r.name == "batch"]
            return list(graph.children(roots[0].id)) if roots else []
    except (EntityGraphError, sqlite3.Error):
        return []  # the script has created the file but not its tables yet


def _batch_output(graph_path: Path) -> Any:
    try:
        with EntityGraph.open(graph_path, create=False, read_only=True) as graph:
            roots = [r for r in graph.roots() if r.name == "batch"]
            return graph.get_node(roots[0].id).output if roots else None
    except (EntityGraphError, sqlite3.Error):
        return None


def _peak(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                   key=lambda x: (x[0], x[1]))
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


async def kill_and_resume(script: str | os.PathLike, graph_path: str | os.PathLike, *,
                          items: int = 100, limit: int = 4, work_seconds: float = 0.05,
                          kill_fraction: float = 0.5, timeout: float = 120,
                          failing: int | None = None) -> CapstoneRun:
    """Run ``script`` as its own process, SIGKILL it half-way, run it again to the end.

    ``failing`` is how many items the script's service refuses on purpose, if
    any: the record then also counts the failed children and the failures the
    batch's stored result lists (under ``"failed"``)."""
    script, graph_path = Path(script), Path(graph_path)
    if not script.is_file():
        raise ValueError(f"script {str(script)!r} does not exist; write it first")
    if not 0 < kill_fraction < 1:
        raise ValueError(f"kill_fraction must be between 0 and 1, got {kill_fraction!r}")
    if graph_path.exists():
        graph_path.unlink()
    for extra in ("-wal", "-shm"):
        Path(f"{graph_path}{extra}").unlink(missing_ok=True)
    command = [sys.executable, str(script), str(graph_path), str(work_seconds)]
    started_wall = time.time()
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at, killed_wall, give_up = None, None, time.monotonic() + timeout
    in_flight: list[tuple[float, float]] = []
    refused_first: list[tuple[float, float]] = []
    try:
        while first.poll() is None and time.monotonic() < give_up:
            done = [k for k in _items(graph_path) if k.status == "Completed"]
            if len(done) >= kill_fraction * items:
                first.kill()
                first.wait()
                killed_at, killed_wall = len(done), time.time()
                # The items the kill caught running: their new run after the resume
                # overwrites their stored start, so keep it now.
                caught = _items(graph_path)
                in_flight = [(k.started_at, killed_wall) for k in caught
                             if k.status == "InProgress" and k.started_at]
                # A refused item is asked again by the resume, which overwrites its
                # stored times: keep those of its first attempt too.
                refused_first = [(k.started_at, k.finished_at) for k in caught
                                 if k.status == "Failed" and k.started_at and k.finished_at]
                break
            await asyncio.sleep(0.01)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    before = {k.name: k.finished_at for k in _items(graph_path) if k.status == "Completed"}
    resumed_wall = time.time()
    second = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                     timeout=timeout)
    after = _items(graph_path)
    intervals = [(k.started_at, k.finished_at) for k in after
                 if k.status == "Completed" and k.started_at and k.finished_at]
    # Refused items held a place at the service too: the limit counts them.
    refused = [(k.started_at, k.finished_at) for k in after
               if k.status == "Failed" and k.started_at and k.finished_at]
    refused += [span for span in refused_first if span not in refused]
    unnamed = sorted(n for k in after if k.status == "Failed"
                     and (n := (k.data or {}).get("n")) is not None
                     and str(n) not in str((k.error or {}).get("message", "")))
    recorded = _batch_output(graph_path)
    listed = recorded.get("failed") if isinstance(recorded, dict) else None
    return CapstoneRun(
        unnamed_failed=unnamed,
        recorded_distinct=len(set(map(str, listed))) if isinstance(listed, list) else None,
        items=items, limit=limit, killed_at=killed_at, first_exit=first.returncode,
        second_exit=second.returncode, children=len(after),
        completed=sum(k.status == "Completed" for k in after),
        kept=sum(1 for k in after if k.name in before and k.finished_at == before[k.name]),
        finished_before=len(before), peak=_peak(intervals + refused + in_flight),
        second_output=(second.stdout + second.stderr)[-2000:], intervals=intervals,
        failed=sum(k.status == "Failed" for k in after), expected_failed=failing,
        recorded_failed=_recorded(_batch_output(graph_path)), killed_wall=killed_wall,
        started_wall=started_wall, resumed_wall=resumed_wall,
        refused_intervals=refused, in_flight=in_flight,
    )


def _recorded(output: Any) -> int | None:
    failed = output.get("failed") if isinstance(output, dict) else None
    return len(failed) if isinstance(failed, list) else None


def check_capstone(run: Any) -> Verdict:
    """The capstone's verdict: killed half-way, resumed to 100 stored items, nothing
    finished done twice, never more than the limit at once, the refused items
    stored Failed and listed by the batch."""
    if isinstance(run, NotRun):  # judge_capstone refused a piece before any process ran
        return run.verdict
    if isinstance(run, Verdict):
        return run
    if not isinstance(run, CapstoneRun):
        return Verdict(False, "pass what judge_capstone (or kill_and_resume) returned")
    if run.second_exit != 0:
        tail = run.second_output.strip().splitlines()[-1:] or ["(no output)"]
        return Verdict(False, f"the resumed run exited with {run.second_exit}: {tail[0]}")
    if run.killed_at is None:
        return Verdict(False, "the first run ended before it could be killed half-way: with a "
                              "limit, 100 items take many rounds")
    if run.peak > run.limit:
        return Verdict(False, f"{run.peak} items ran at once, above the limit of {run.limit}: "
                              "run them through a runner with CapacitySource(LIMIT)")
    if run.peak > LIMIT:  # the judge was given a larger limit than the service takes
        return Verdict(False, f"{run.peak} items ran at once, above the service's limit of "
                              f"{LIMIT}: a limit of {run.limit} lets the runner send more than "
                              "the service takes")
    # With a limit this small next to the batch, every round of a right runner fills it.
    if 4 * run.limit <= run.items and run.peak < run.limit:
        why = ("one at a time: is the work a blocking call such as time.sleep, which stops "
               "every other item? Use await asyncio.sleep" if run.peak <= 1 else
               f"never more than {run.peak}")
        return Verdict(False, f"your runner never used all {run.limit} units ({why}): is its "
                              "capacity CapacitySource(LIMIT), and does the work await?")
    if run.killed_at > 0.75 * run.items:
        return Verdict(False, f"the kill landed only at {run.killed_at} of {run.items} stored: so "
                              "many items finish together that it cannot land half-way; with "
                              "a small limit they finish a few at a time")
    if run.children != run.items:
        return Verdict(False, f"the batch has {run.children} children for {run.items} items: "
                              "the resumed run did not find the first run's items by name")
    refused = run.expected_failed or 0
    if run.completed != run.items - refused:
        return Verdict(False, f"{run.completed} of {run.items} items are Completed, expected "
                              f"{run.items - refused}")
    if run.kept != run.finished_before:
        return Verdict(False, f"{run.finished_before - run.kept} items finished before the kill "
                              "were done again")
    if run.expected_failed is not None:
        if run.failed != refused:
            return Verdict(False, f"{run.failed} items are stored Failed; the service refuses "
                                  f"{refused}")
        if run.recorded_failed != refused:
            return Verdict(False, f"the batch's result lists {run.recorded_failed} failures for "
                                  f"{refused} refused items: keep each ERROR in run_items")
        if run.unnamed_failed:
            return Verdict(False, f"items {run.unnamed_failed} are stored Failed with a message "
                                  "that does not contain their own n: say which item was "
                                  "refused, so the record can be read later")
        if run.recorded_distinct is not None and run.recorded_distinct < refused:
            return Verdict(False, f"the batch's result lists {refused} failures but only "
                                  f"{run.recorded_distinct} different messages: each refusal "
                                  "should name its own item")
    failures = f", recorded the {refused} refused items" if refused else ""
    return Verdict(True, f"killed at {run.killed_at} of {run.items}; the resume kept all "
                         f"{run.kept} finished items, did the rest{failures}, and ran up to "
                         f"{run.peak} at once, never more than {run.limit}")


# -- the pieces the learner writes -------------------------------------------------------
def _raised(what: str, exc: BaseException) -> Verdict:
    where = traceback.extract_tb(exc.__traceback__)[-1:]
    line = f" (line {where[0].lineno})" if where else ""
    return Verdict(False, f"{what} raised {type(exc).__name__}: {exc}{line}")


def _item_data(n: int, seconds: float) -> dict[str, Any]:
    return {"n": n, "seconds": seconds, "fail": n % FAIL_EVERY == FAIL_EVERY - 1}


_NAMES_ELSEWHERE = """
import json, sys
spec = json.loads(sys.stdin.read())
space = {"__name__": "__capstone__"}
exec(compile(spec["source"], "<your item_name>", "exec"), space)
print(json.dumps([space[spec["name"]](n) for n in range(spec["items"])]))
"""


def check_item_name(item_name: Any, *, items: int = ITEMS) -> Verdict:
    """Piece 1: ``item_name(n)`` names item ``n``'s child entity. Right when the 100
    names are distinct non-empty strings, and the same when asked again, and in
    two other Python processes (with different hash seeds), as a resumed run is."""
    if (v := missing(item_name)) is not None:
        return v
    if not callable(item_name):
        return Verdict(False, "pass your function itself, item_name, not what it returns")
    try:
        names = [item_name(n) for n in range(items)]
        again = [item_name(n) for n in range(items)]
    except Exception as exc:
        return _raised("item_name(n)", exc)
    if any(x is ... for x in names):
        return Verdict(False, "item_name still returns ... (the placeholder): return a name "
                              "(a string) for item n")
    if not all(isinstance(x, str) and x.strip() for x in names):
        bad = next(x for x in names if not (isinstance(x, str) and x.strip()))
        return Verdict(False, f"a name must be a non-empty string; item_name gave {bad!r}")
    if len(set(names)) < items:
        return Verdict(False, f"{items - len(set(names))} of the {items} names repeat another: "
                              "two items with one name would share one result")
    if again != names:
        return Verdict(False, f"asked twice in this process, item 0 was named {names[0]!r}, then "
                              f"{again[0]!r}: a resumed run would not find the first run's items")
    source = _source_of(item_name, "item_name")
    if isinstance(source, Verdict):
        return source
    # The imports and constants it uses travel with it, as write_capstone copies them
    # into the script (where LIMIT and ITEMS are defined by the fixed part).
    imports, values = _needs([item_name])
    known = getattr(item_name, "__globals__", {})
    fixed = [f"{name} = {known[name]!r}" for code in _codes(item_name.__code__)
             for name in code.co_names if name in ("LIMIT", "ITEMS")
             and isinstance(known.get(name), int)]
    source = "\n".join([*imports, *values, *sorted(set(fixed)), source])
    for seed in ("1", "2"):
        try:
            done = subprocess.run(
                [sys.executable, "-c", _NAMES_ELSEWHERE], capture_output=True, text=True,
                input=json.dumps({"source": source, "items": items,
                                  "name": getattr(item_name, "__name__", "item_name")}),
                timeout=60,
                env={**os.environ, "PYTHONHASHSEED": seed}, check=False)
        except subprocess.TimeoutExpired:
            return Verdict(False, "item_name did not finish within a minute in another process")
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return Verdict(False, f"run in another Python process, item_name failed: {last}")
        elsewhere = json.loads(done.stdout)
        if elsewhere != names:
            n = next(k for k, (a, b) in enumerate(zip(names, elsewhere, strict=True)) if a != b)
            return Verdict(False, f"another Python process named the items differently: here "
                                  f"item {n} is {names[n]!r}, in another process "
                                  f"{elsewhere[n]!r}. Values such as the process id, hash() of "
                                  "a string, id(), the clock or a counter do not outlive a "
                                  "process, so a resumed run would not find them")
    return Verdict(True, f"{items} distinct names, the same in every process: "
                         f"{names[0]!r} ... {names[-1]!r}")


class _ItemProbe(RunnableEntity):
    """Asks for a few children of the learner's Item class and runs them at once, as
    the runner does: a blocking wait in one would hold up the others."""

    async def run_impl(self):
        kind = _KINDS[self.data["kind"]]
        children = [self.append_or_retrieve_call(kind, f"probe-{n}",
                                                 _item_data(n, self.data["seconds"]))
                    for n in self.data["ns"]]
        # The stored status is what is checked, so the errors are only collected here.
        await asyncio.gather(*(child.run() for child in children), return_exceptions=True)
        yield Return(None)


_KINDS: dict[str, type] = {}


async def check_item(cls: Any, *, seconds: float = 0.2) -> Verdict:
    """Piece 2: the ``Item`` entity. Its data is ``{"n", "seconds", "fail"}``: it
    waits ``seconds`` (the slow work), then returns ``n * n``, or, when ``fail``
    is true, raises an error that says which item was refused."""
    if (v := missing(cls)) is not None:
        return v
    if not (isinstance(cls, type) and issubclass(cls, RunnableEntity)):
        return Verdict(False, "pass your RunnableEntity subclass itself, Item (the class)")
    _KINDS[cls.__name__] = cls
    ns = [3, FAIL_EVERY - 1, 5, 2 * FAIL_EVERY - 1]
    with tempfile.TemporaryDirectory(prefix="storylab-item-") as folder:
        with EntityGraph.open(Path(folder) / "graph.sqlite") as graph:
            parent = graph.create_or_retrieve(
                _ItemProbe, "probe", {"kind": cls.__name__, "ns": ns, "seconds": seconds})
            try:
                await asyncio.wait_for(parent.run(), timeout=30)
            except Exception as exc:
                return _raised("running your Item", exc)
            kids = {k.name: graph.get_node(k.id) for k in graph.children(parent.id)}
    if sorted(kids) != sorted(f"probe-{n}" for n in ns):
        return Verdict(False, f"the probe has children {sorted(kids)}")
    for n in (3, 5):
        node = kids[f"probe-{n}"]
        if node.status != "Completed" or node.output != n * n:
            error = (node.error or {}).get("message", "")
            why = f" ({error})" if error else ""
            return Verdict(False, f"item {n} (fail=False) ended {node.status}{why} with "
                                  f"{node.output!r}: it should return n * n = {n * n}")
        took = (node.finished_at or 0) - (node.started_at or 0)
        if took < 0.75 * seconds:
            return Verdict(False, f"item {n} took {took:.2f} s with seconds={seconds}: await "
                                  "asyncio.sleep(self.data['seconds']) first, the slow work "
                                  "the judge needs to catch it half-way")
    first, second = kids["probe-3"], kids["probe-5"]
    if None in (first.started_at, first.finished_at, second.started_at, second.finished_at):
        return Verdict(False, "items 3 and 5 have no stored start and end: did Item's "
                              "run_impl run to its end?")
    if not (first.started_at < second.finished_at  # type: ignore[operator]
            and second.started_at < first.finished_at):  # type: ignore[operator]
        return Verdict(False, "items 3 and 5 were started together but ran one after the "
                              "other: the wait blocks every other item (time.sleep does); "
                              "use await asyncio.sleep(self.data['seconds'])")
    said = {}
    for n in (FAIL_EVERY - 1, 2 * FAIL_EVERY - 1):
        bad = kids[f"probe-{n}"]
        if bad.status != "Failed":
            return Verdict(False, f"item {n} (fail=True) ended {bad.status}: raise an "
                                  "exception in run_impl when self.data['fail'] is true")
        if (returned := returned_not_raised(f"item {n}", bad.error)) is not None:
            return returned
        said[n] = message = str((bad.error or {}).get("message", ""))
        if str(n) not in message:
            return Verdict(False, f"item {n}'s refusal was stored as {message!r}: say which "
                                  "item (its own n, self.data['n']) was refused, so the record "
                                  "can be read later")
    first_n, second_n = said
    return Verdict(True, f"items 3 and 5 waited side by side and returned 9 and 25; items "
                         f"{first_n} and {second_n} are stored Failed with {said[first_n]!r} "
                         f"and {said[second_n]!r}")


_RUNNING = {"now": 0, "peak": 0}


class _Counted(RunnableEntity):
    """The checker's own item: counts how many run at once; fails when told to."""

    async def run_impl(self):
        _RUNNING["now"] += 1
        _RUNNING["peak"] = max(_RUNNING["peak"], _RUNNING["now"])
        try:
            await asyncio.sleep(self.data["seconds"])
        finally:
            _RUNNING["now"] -= 1
        if self.data["fail"]:
            raise RuntimeError(f"item {self.data['n']} was refused by the service")
        yield Return(self.data["n"] ** 2)


class _RunProbe(RunnableEntity):
    async def run_impl(self):
        run_items = _RUN_ITEMS[self.data["key"]]
        items = [{"name": f"probe-{n:02d}", "data": _item_data(n, self.data["seconds"])}
                 for n in self.data["ns"]]
        got = await run_items(self, _Counted, items)
        if not isinstance(got, tuple | list) or len(got) != 2:
            yield Return({"shape": repr(got)[:80]})
            return
        done, failed = (list(x) for x in got)
        yield Return({"done": done, "failed": [str(e) for e in failed]})


_RUN_ITEMS: dict[str, Any] = {}


async def check_run_items(run_items: Any, *, limit: int = LIMIT, seconds: float = 0.05) -> Verdict:
    """Piece 3: ``await run_items(batch, kind, items)`` runs the items as children of
    ``batch`` (``batch.parallel_calls(kind, items)``) through a runner under a
    capacity source of ``limit``, and returns ``(done, failed)``: the values of
    the FINAL envelopes and the errors of the ERROR ones. The checker's items
    count how many run at once; two of its twelve are refused."""
    if (v := missing(run_items)) is not None:
        return v
    if not inspect.iscoroutinefunction(run_items):
        return Verdict(False, "run_items must be an `async def` function (batch, kind, items)")
    key = f"{run_items.__module__}.{run_items.__qualname__}"
    _RUN_ITEMS[key] = run_items
    _RUNNING.update(now=0, peak=0)
    ns = [1, 2, 3, FAIL_EVERY - 1, 5, 6, 7, 8, 2 * FAIL_EVERY - 1, 10, 11, 12]
    refused = [n for n in ns if _item_data(n, 0)["fail"]]  # two of them
    with tempfile.TemporaryDirectory(prefix="storylab-run-items-") as folder:
        with EntityGraph.open(Path(folder) / "graph.sqlite") as graph:
            parent = graph.create_or_retrieve(_RunProbe, "probe",
                                              {"key": key, "ns": ns, "seconds": seconds})
            try:
                await asyncio.wait_for(parent.run(), timeout=60)
            except Exception as exc:
                if "refused by the service" in str(exc):
                    return Verdict(False, f"run_items raised an item's own error ({exc}): keep "
                                          "it in `failed` in a TaskEventType.ERROR branch, and "
                                          "go on so the other items still arrive")
                said = _raised("run_items", exc)
                if isinstance(exc, TypeError) and "'TaskStream' object is not iterable" \
                        in str(exc):
                    said = Verdict(False, f"{said.message}; the results arrive while the items "
                                          "run: read them with `async for envelope in "
                                          "results:`")
                if isinstance(exc, TypeError) and "async_generator" in str(exc):
                    said = Verdict(False, f"{said.message}; batch.parallel_calls(kind, items) "
                                          "is an async source of tasks for a runner, not a "
                                          "list: wrap it in SourceFromIterable and give it to "
                                          "HierarchicalTaskPoolRunner")
                if isinstance(exc, TypeError) and "HierarchicalTaskPoolRunner" in str(exc):
                    said = Verdict(False, f"{said.message}; the runner is "
                                          "HierarchicalTaskPoolRunner(name, source, capacity), "
                                          "its name a string of your choice")
                return said
            output = graph.get_node(parent.id).output
            kids = graph.children(parent.id)
    if "shape" in output:
        return Verdict(False, f"run_items must return two lists, (done, failed); it returned "
                              f"{output['shape']}")
    if not kids:
        return Verdict(False, f"the batch has 0 children for {len(ns)} items: nothing created "
                              "the items as its children (notebook 2, or the hint for piece 3)")
    if len(kids) < len(ns) and output.get("failed"):
        # An item failed and the loop left early: the calls are right, the loop is not.
        return Verdict(False, f"the batch has {len(kids)} children for {len(ns)} items, and "
                              f"failed holds {len(output['failed'])}: your loop stopped at the "
                              "first error. Keep going: keep the error in failed and read the "
                              "next envelope (no break, no return inside the loop)")
    if len(kids) != len(ns):
        return Verdict(False, f"the batch has {len(kids)} children for {len(ns)} items: create "
                              "them with batch.parallel_calls(kind, items)")
    peak = _RUNNING["peak"]
    if peak > limit:
        yours = getattr(run_items, "__globals__", {}).get("LIMIT")
        if isinstance(yours, int) and yours != limit and peak <= yours:
            # The learner's code does use LIMIT: it is the value that differs.
            return Verdict(False, f"{peak} items ran at once: your LIMIT is {yours}, but the "
                                  f"service takes {limit} at once; set LIMIT = {limit} again")
        return Verdict(False, f"{peak} items ran at once, above LIMIT = {limit}: give the runner "
                              f"CapacitySource(LIMIT)")
    if peak == 0:
        return Verdict(False, "none of the items ran: the children exist, but nothing ran "
                              "them; hand the tasks to a HierarchicalTaskPoolRunner and read "
                              "its results in `async with runner.run_tasks() as results:`")
    if peak < 2:
        return Verdict(False, "the items ran one at a time: hand them to a "
                              "HierarchicalTaskPoolRunner, which runs up to LIMIT at once")
    if peak < min(limit, len(ns)):
        return Verdict(False, f"your runner never used all {limit} units (at most {peak} at "
                              "once): is its capacity CapacitySource(LIMIT)?")
    want = sorted(n * n for n in ns if n not in refused)
    if sorted(output["done"], key=str) != sorted(want, key=str):
        return Verdict(False, f"done holds {len(output['done'])} values, expected the "
                              f"{len(want)} squares of the items that succeeded "
                              "(envelope.value of each FINAL)")
    if len(output["failed"]) > len(refused):
        return Verdict(False, f"failed holds {len(output['failed'])} entries for "
                              f"{len(refused)} refused items: your failed list also caught "
                              "the progress and status envelopes the runner sends. Keep only "
                              "the envelopes whose type is TaskEventType.ERROR, and keep "
                              "their envelope.error")
    if len(output["failed"]) != len(refused):
        return Verdict(False, f"failed holds {len(output['failed'])} entries for "
                              f"{len(refused)} refused items: add a branch for "
                              "TaskEventType.ERROR that keeps envelope.error")
    return Verdict(True, f"{len(want)} items done and {len(refused)} refusals kept, never "
                         f"more than {peak} at once (LIMIT = {limit})")


# -- the script -------------------------------------------------------------------------
_TEMPLATE = '''\
"""The capstone pipeline, written by write_capstone from the notebook's pieces.

Usage: python capstone.py GRAPH_FILE WORK_SECONDS
"""
import asyncio
import sys

{imports}

LIMIT = {limit}  # items at once
ITEMS = {items}
WORK_SECONDS = float(sys.argv[2])
{values}

# -- piece 1 -------------------------------------------------------------------
{item_name}


# -- piece 2 -------------------------------------------------------------------
{item}


# -- piece 3 -------------------------------------------------------------------
{run_items}


# -- the fixed part: the batch and its graph -----------------------------------
class Batch(RunnableEntity):
    async def run_impl(self):
        items = [{{"name": item_name(n),
                  "data": {{"n": n, "seconds": WORK_SECONDS, "fail": n % {every} == {last}}}}}
                 for n in range(ITEMS)]
        done, failed = await run_items(self, Item, items)
        yield Return({{"done": len(done), "failed": sorted(str(e) for e in failed)}})


def count_stored(graph):
    """How many items the graph holds Completed (0 before the batch exists)."""
    batch = graph.find_root("batch")
    return 0 if batch is None else sum(k.status == "Completed" for k in graph.children(batch.id))


async def main(graph):
    batch = graph.create_or_retrieve(Batch, "batch", {{}})
    print(f"stored {{count_stored(graph)}} of {{ITEMS}} at the start", flush=True)
    work = asyncio.ensure_future(batch.run())
    while not work.done():  # now and then, how far the graph has got
        await asyncio.wait([work], timeout=max(1.0, WORK_SECONDS))
        print(f"stored {{count_stored(graph)}} of {{ITEMS}}", flush=True)
    await work
    print(f"done: {{count_stored(graph)}} of {{ITEMS}} stored", flush=True)


if __name__ == "__main__":
    with EntityGraph.open(sys.argv[1]) as graph:
        try:
            asyncio.run(main(graph))
        except KeyboardInterrupt:
            print(f"stopped with {{count_stored(graph)}} of {{ITEMS}} stored; run the same command "
                  "again to go on from the graph")
'''

_FIXED = {"asyncio", "sys", "LIMIT", "ITEMS", "WORK_SECONDS", "Batch", "item_name", "Item",
          "count_stored", "run_items", "EntityGraph", "Return", "RunnableEntity"}


def _source_of(fn: Any, what: str) -> str | Verdict:
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return Verdict(False, f"define {what} with `def` in a cell of its own, so that it can "
                              "be copied into the script")


def _class_source(cls: type) -> str | Verdict:
    """``class Item(RunnableEntity):`` rebuilt from its methods' sources (a class
    defined in a notebook has no source file of its own)."""
    body = []
    for attr, value in vars(cls).items():
        if (attr.startswith("__") and attr.endswith("__")) or attr == "type_name":
            continue  # Python's own, or set by the entity registry
        if isinstance(value, types.FunctionType):
            code = _source_of(value, f"Item.{attr}")
            if isinstance(code, Verdict):
                return code
            body.append(textwrap.indent(code, "    "))
        elif isinstance(value, str | int | float | bool | type(None)):
            body.append(f"    {attr} = {value!r}\n")
        else:
            return Verdict(False, f"Item.{attr} cannot be copied into the script: keep to "
                                  "methods and plain constants")
    return "class Item(RunnableEntity):\n" + ("\n".join(body) or "    pass\n")


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _needs(functions: list[Any]) -> tuple[list[str], list[str]]:
    """The import lines and constants the pieces use from their notebook."""
    imports: dict[str, str] = {}
    public = {"EntityGraph", "Return", "RunnableEntity"}
    values: dict[str, str] = {}
    for fn in functions:
        known = getattr(fn, "__globals__", {})
        for code in _codes(fn.__code__):
            for name in code.co_names:
                if name in _FIXED or name in values or hasattr(builtins, name) \
                        or name not in known:
                    continue
                value = known[name]
                if isinstance(value, types.ModuleType):
                    line = (f"import {value.__name__}" if value.__name__ == name
                            else f"import {value.__name__} as {name}")
                    imports[name] = line
                elif getattr(storylab, name, None) is value and value is not None:
                    public.add(name)
                elif isinstance(value, str | int | float | bool):
                    values[name] = f"{name} = {value!r}"
    lines = sorted(imports.values()) + [f"from storylab import {', '.join(sorted(public))}"]
    return lines, sorted(values.values())


def write_capstone(path: str | os.PathLike, item_name: Any, item: Any, run_items: Any, *,
                   limit: int = LIMIT, items: int = ITEMS) -> Path:
    """Write the capstone script to ``path`` from the three pieces as they are written
    in the notebook, around the fixed ``Batch`` root; returns the path."""
    for what, piece in (("item_name", item_name), ("Item", item), ("run_items", run_items)):
        if missing(piece) is not None:
            raise ValueError(f"{what} is not written yet")
    if not (isinstance(item, type) and issubclass(item, RunnableEntity)):
        raise ValueError("Item must be a RunnableEntity subclass")
    parts = [_source_of(item_name, "item_name"), _class_source(item),
             _source_of(run_items, "run_items")]
    texts = []
    for part in parts:
        if isinstance(part, Verdict):
            raise ValueError(part.message)
        texts.append(part)
    methods = [v for v in vars(item).values() if isinstance(v, types.FunctionType)]
    imports, values = _needs([item_name, run_items, *methods])
    text = _TEMPLATE.format(imports="\n".join(imports), values="\n".join(values), limit=limit,
                            items=items, item_name=texts[0].rstrip(), item=texts[1].rstrip(),
                            run_items=texts[2].rstrip(), every=FAIL_EVERY, last=FAIL_EVERY - 1)
    path = Path(path)
    path.write_text(text)
    return path


async def judge_capstone(item_name: Any, item: Any, run_items: Any, *,
                         folder: str | os.PathLike = ".", work_seconds: float = 0.1,
                         limit: int = LIMIT) -> CapstoneRun | NotRun:
    """Check the three pieces; if all are right, write ``capstone.py`` in ``folder``,
    kill it half-way with SIGKILL, resume it, and return the record for
    :func:`check_capstone`. A piece that is not right yet comes back as its
    verdict inside a :class:`NotRun`, and no process is started."""
    checks = (("piece 1, item_name", lambda: check_item_name(item_name)),
              ("piece 2, Item", lambda: check_item(item)),
              ("piece 3, run_items", lambda: check_run_items(run_items, limit=limit)))
    for what, check in checks:
        verdict = check()
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if not verdict:
            return NotRun(Verdict(False, f"{what} is not right yet ({verdict.message}); its "
                                         "own checker above says more"))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    script = write_capstone(folder / "capstone.py", item_name, item, run_items, limit=limit)
    return await kill_and_resume(script, folder / "capstone.sqlite", items=ITEMS, limit=limit,
                                 work_seconds=work_seconds, failing=ITEMS // FAIL_EVERY)


# -- the record as a picture -------------------------------------------------------------
def plot_capstone(run: CapstoneRun, time_scale: float) -> Any:
    """Two panels on one time axis (model seconds from the first item's start): items running
    at once (accepted and refused: both held a place at the service), against the limit, and
    items stored Completed; the kill and the resume marked. Drawn only from the stored start
    and finish times. The figure carries its one-line summary (``storylab_summary``)."""
    if not isinstance(run, CapstoneRun):
        raise ValueError("plot_capstone draws what judge_capstone returned once it ran")
    if not run.intervals or run.killed_wall is None or run.started_wall is None:
        raise ValueError("the record has no kill to draw: the first run was not killed")
    from matplotlib.transforms import blended_transform_factory

    from storylab.viz._figure import new_figure
    from storylab.viz._palette import OKABE_ITO

    every = list(run.intervals) + list(run.refused_intervals) + list(run.in_flight)
    origin = min(s for s, _ in every)  # the first item's start

    def model(t: float) -> float:
        return (t - origin) / time_scale

    edges = sorted([(model(s), 1) for s, _ in every]
                   + [(model(e), -1) for _, e in every], key=lambda x: (x[0], x[1]))
    ends = sorted(model(e) for _, e in run.intervals)
    last = max(model(e) for _, e in every)
    killed = model(run.killed_wall)
    # The new process is working once it starts its first item.
    resumed = min((model(s) for s, _ in every if model(s) > killed), default=killed)
    before = sum(1 for e in ends if e <= killed)
    # Items running at once, as the most in each half model second: a finish and the
    # next start are milliseconds apart, and the exact count would flicker to zero. The
    # kill is a bin edge of its own, and so are the last start or finish before it and the
    # resumed process's first start: no bin reaches across them, so the line drops where the
    # first process's last item ended (with equal items, just before the kill) and rises
    # where the new process starts its first item, at the end of the grey band.
    window = 0.5
    cut = max((t for t, _ in edges if t < killed), default=killed)
    xs = sorted({window * k for k in range(int(last / window) + 2)} | {killed, cut, resumed})
    running, now, k = [], 0, 0
    for i, x in enumerate(xs):
        while k < len(edges) and edges[k][0] <= x:  # what happened at x is done by x
            now += edges[k][1]
            k += 1
        most = now
        upto = xs[i + 1] if i + 1 < len(xs) else x + window
        while k < len(edges) and edges[k][0] < upto:
            now += edges[k][1]
            most = max(most, now)
            k += 1
        running.append(most)
    # The items the kill caught running, counted the same way: drawn hatched on top.
    flying = [min(sum(1 for s, e in run.in_flight
                      if model(s) < (xs[i + 1] if i + 1 < len(xs) else x + window)
                      and model(e) > x), most)
              for i, (x, most) in enumerate(zip(xs, running, strict=True))]
    drawn_peak = max(running, default=0)
    allowed = min(run.limit, LIMIT)  # the runner's limit, and never more than the service's
    over = drawn_peak > allowed
    # A figure whose text form is its summary, like every chart of storylab.viz.
    fig, (top, bottom) = new_figure(2, 1, figsize=(12, 5.8), sharex=True,
                                    gridspec_kw={"height_ratios": [1, 1.2]})
    top.fill_between(xs, running, step="post", color=OKABE_ITO["blue"], alpha=0.35, lw=0)
    top.step(xs, running, where="post", color=OKABE_ITO["blue"], lw=1.4,
             label="items running (most per half model second)")
    if any(flying):
        # Tinted as well as hatched: the items started at most one item's time before the
        # kill, so the band is narrow; it is drawn at least 1.5 % of the axis wide, ending
        # at the kill, so that the legend's swatch has something to point at, and a
        # callout beside it says what it is.
        from matplotlib.colors import to_rgba
        from matplotlib.patches import Rectangle

        bin_at_kill = max((i for i, x in enumerate(xs) if x < killed), default=0)
        level = running[bin_at_kill]
        caught = max(min(max(flying), level), 1)
        began = min(model(s) for s, _ in run.in_flight)
        x0 = min(began, killed - 0.015 * max(xs[-1] - xs[0], window))
        top.add_patch(Rectangle((x0, max(level - caught, 0)), killed - x0, caught,
                                facecolor=to_rgba(OKABE_ITO["vermillion"], 0.45), hatch="///",
                                edgecolor=OKABE_ITO["vermillion"], lw=0, zorder=2.5,
                                label="killed in flight (died with the process)"))
        top.annotate(f"{len(run.in_flight)} killed in flight",
                     (x0, max(level - caught, 0) + caught / 2),
                     xytext=(-14, 0), textcoords="offset points", ha="right", va="center",
                     fontsize=10, color=OKABE_ITO["vermillion"], fontweight="bold",
                     bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                           "alpha": 0.9},
                     arrowprops={"arrowstyle": "->", "color": OKABE_ITO["vermillion"],
                                 "lw": 1.4})
    top.axhline(run.limit, ls="--", color=OKABE_ITO["black"], lw=1,
                label=f"LIMIT = {run.limit}")
    if run.limit > LIMIT:
        top.axhline(LIMIT, ls=":", color=OKABE_ITO["vermillion"], lw=1.4,
                    label=f"the service takes {LIMIT}")
    # A little room above the highest line; the legends sit beside the panels.
    top.set_ylim(0, max(drawn_peak, run.limit) * 1.15 + 0.5)
    top.set_ylabel("items at once", fontsize=11)
    first = [(e, k + 1) for k, e in enumerate(ends) if e <= killed]
    second = [(e, k + 1) for k, e in enumerate(ends) if e > killed]
    if first:
        # Drawn on to the kill: the count kept is the level the line holds at the SIGKILL.
        bottom.step([0] + [e for e, _ in first] + [killed],
                    [0] + [n for _, n in first] + [before], where="post",
                    color=OKABE_ITO["bluish green"], lw=2, label="finished by the first process")
    if second:
        bottom.step([resumed] + [e for e, _ in second], [before] + [n for _, n in second],
                    where="post", color=OKABE_ITO["reddish purple"], lw=2, ls="-.",
                    label="finished by the resumed process")
    bottom.set_ylim(0, max(len(ends), 1) * 1.08)
    bottom.set_ylabel("items stored Completed", fontsize=11)
    bottom.set_xlabel("time since the first item started (model seconds)", fontsize=11)
    for ax in (top, bottom):
        # Behind the lines (zorder under theirs): the first process's last step, which ends
        # on the kill, stays visible on top of it.
        ax.axvline(killed, color=OKABE_ITO["vermillion"], lw=2, alpha=0.8, zorder=1.5)
        ax.axvspan(killed, resumed, color="#dddddd", zorder=0)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    # The kill's label sits inside the bottom panel, left of its line and above the
    # staircase (which is at most half-way up there): no title or legend can reach it.
    at_top = blended_transform_factory(bottom.transData, bottom.transAxes)
    bottom.text(killed, 0.96, "SIGKILL ", transform=at_top, ha="right", va="top",
                fontsize=11, color=OKABE_ITO["vermillion"], fontweight="bold")
    if resumed - killed > 0.2:
        bottom.text((killed + resumed) / 2, 0.5, "new process starting",
                    transform=at_top, ha="center", va="center", rotation=90, fontsize=9,
                    color="#333333")
    bottom.annotate(f"{before} kept through the kill", (killed, before), xytext=(-8, 8),
                    textcoords="offset points", ha="right", fontsize=10)
    # Beside the panels, never over the lines: each legend has the room it needs.
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, frameon=False)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, frameon=False)
    if over:
        verdict = f"up to {drawn_peak} at once, over the limit of {allowed}"
    else:
        verdict = f"never more than {drawn_peak} at once (limit {allowed})"
    top.set_title(f"The capstone, killed at {before} of {run.items} and resumed: {verdict}",
                  fontsize=12, color=OKABE_ITO["vermillion"] if over else "black")
    fig.tight_layout()
    refused = len(run.refused_intervals)
    first_peak = max((v for x, v in zip(xs, running, strict=True) if x < killed), default=0)
    fig.storylab_summary = (
        f"the first process ran up to {first_peak} "
        f"items at once and had stored {before} when it was killed at {killed:.1f} model s; "
        f"after a gap of {resumed - killed:.1f} model s (the new process starting) the resumed "
        f"one finished the other {len(ends) - before} completed items; "
        + (f"at one moment {drawn_peak} items ran at once, over the limit of {allowed}; "
           if over else f"never above the limit of {allowed}; ")
        + (f"{len(run.in_flight)} items were running at the kill (hatched): they died with "
           "the process, stored no finish, and were done again after the resume; "
           if run.in_flight else "no item was stored running at the kill (the last of the "
           f"first process ended at {max((e for e in ends if e <= killed), default=0):.1f} "
           "model s, just before it, and the next had stored no start yet); ")
        + f"the {run.failed} refused items ran too (the top panel counts "
        + ("none of them: no stored times" if not refused else "them" if refused <= run.failed
           else "them, the first attempt of those refused before the kill included")
        + ") and are stored Failed, so "
        "the bottom panel, which counts Completed items, leaves them out")
    return fig
