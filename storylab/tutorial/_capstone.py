"""The capstone: a pipeline over 100 items, limited to a few at once, killed half-way
by a real signal and resumed, then judged from its graph alone.

The learner's script takes two arguments, the graph file and the wall seconds
one item's work lasts, and runs a root entity named ``batch`` whose children
are the items. :func:`kill_and_resume` starts it as a separate process, kills
it with ``SIGKILL`` once about half of the items are stored as finished,
notes what the graph holds, runs it again to the end and reads the graph once
more. :func:`check_capstone` then asks four questions of that record.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storylab.entities import EntityGraph, EntityGraphError
from storylab.tutorial._verdict import Verdict

__all__ = ["CapstoneRun", "check_capstone", "kill_and_resume"]


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

    def describe(self) -> str:
        killed = (f"killed with {self.killed_at} of {self.items} items stored"
                  if self.killed_at is not None else "not killed: it ended first")
        return (f"first run {killed}; after the resume {self.completed} completed, "
                f"{self.children} children, {self.kept} of {self.finished_before} finished "
                f"items untouched, at most {self.peak} at once (limit {self.limit})")


def _items(graph_path: Path) -> list[Any]:
    if not graph_path.exists():
        return []
    try:
        with EntityGraph.open(graph_path, create=False, read_only=True) as graph:
            roots = [r for r in graph.roots() if r.name == "batch"]
            return list(graph.children(roots[0].id)) if roots else []
    except (EntityGraphError, sqlite3.Error):
        return []  # the script has created the file but not its tables yet


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
                          kill_fraction: float = 0.5, timeout: float = 120) -> CapstoneRun:
    """Run ``script`` as its own process, SIGKILL it half-way, run it again to the end."""
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
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at, give_up = None, time.monotonic() + timeout
    try:
        while first.poll() is None and time.monotonic() < give_up:
            done = [k for k in _items(graph_path) if k.status == "Completed"]
            if len(done) >= kill_fraction * items:
                first.kill()
                first.wait()
                killed_at = len(done)
                break
            await asyncio.sleep(0.01)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    before = {k.name: k.finished_at for k in _items(graph_path) if k.status == "Completed"}
    second = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                     timeout=timeout)
    after = _items(graph_path)
    intervals = [(k.started_at, k.finished_at) for k in after
                 if k.status == "Completed" and k.started_at and k.finished_at]
    return CapstoneRun(
        items=items, limit=limit, killed_at=killed_at, first_exit=first.returncode,
        second_exit=second.returncode, children=len(after),
        completed=sum(k.status == "Completed" for k in after),
        kept=sum(1 for k in after if k.name in before and k.finished_at == before[k.name]),
        finished_before=len(before), peak=_peak(intervals),
        second_output=(second.stdout + second.stderr)[-2000:], intervals=intervals,
    )


def check_capstone(run: Any) -> Verdict:
    """The capstone's verdict: killed half-way, resumed to 100 stored items, nothing
    finished done twice, never more than the limit at once."""
    if not isinstance(run, CapstoneRun):
        return Verdict(False, "pass what kill_and_resume returned")
    if run.second_exit != 0:
        tail = run.second_output.strip().splitlines()[-1:] or ["(no output)"]
        return Verdict(False, f"the resumed run exited with {run.second_exit}: {tail[0]}")
    if run.killed_at is None:
        return Verdict(False, "the first run ended before it could be killed half-way: with a "
                              "limit, 100 items take many rounds")
    if run.peak > run.limit:
        return Verdict(False, f"{run.peak} items ran at once, above the limit of {run.limit}: "
                              "run them through a runner with CapacitySource(LIMIT)")
    if run.children != run.items:
        return Verdict(False, f"the batch has {run.children} children for {run.items} items: "
                              "the resumed run did not find the first run's items by name")
    if run.completed != run.items:
        return Verdict(False, f"{run.completed} of {run.items} items are Completed")
    if run.kept != run.finished_before:
        return Verdict(False, f"{run.finished_before - run.kept} items finished before the kill "
                              "were done again")
    return Verdict(True, f"killed at {run.killed_at} of {run.items}; the resume kept all "
                         f"{run.kept} finished items, did the rest, and never ran more than "
                         f"{run.limit} at once")
