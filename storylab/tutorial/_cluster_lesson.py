"""Notebook 8's bookkeeping, behind names that say what each step does: the worker's
own code, the fair-share exercise, the kill of a worker caught half-way, the count of
draws read back from the graph, and the words under the kill chart.

Every function here reads what the run left (a trace, the graph, the scheduler); none
of them changes how storylab schedules anything."""

from __future__ import annotations

import inspect
import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from storylab.tutorial._verdict import Verdict, missing

__all__ = ["check_fair_targets", "close_cluster", "comparison_table", "count_draws",
           "first_unit_words", "ideal_bound", "kill_chart_words", "kill_half_way",
           "tally_graph", "worker_code"]


# -- what a worker runs --------------------------------------------------------
def worker_code() -> Any:
    """The heart of what every worker process runs for one story, cut from storylab's
    own source (``storylab.story.cluster``), so it cannot drift from the code that ran."""
    from IPython.display import Code

    from storylab.story import cluster

    lines = inspect.getsource(cluster._attempt).splitlines()

    def cut(start: str, end: str) -> list[str]:
        a = next(i for i, s in enumerate(lines) if start in s)
        b = next(i for i, s in enumerate(lines)
                 if i >= a and (s.strip() == end if end == ")" else end in s))
        part = [s for s in lines[a:b + 1] if s.strip() and not s.strip().startswith("#")]
        indent = len(part[0]) - len(part[0].lstrip())
        return [s[indent:] for s in part]

    text = "\n".join(
        ["# once per worker process: its share of the global limit, leased from the scheduler"]
        + cut("root = _worker_root(", ")")
        + ["", "# for each story Dask hands this worker: the shared graph, then the story"]
        + cut("graph = EntityGraph.open(", "graph = EntityGraph.open(")
        + cut("pipeline = await acreate_story(", "result = await pipeline.run()"))
    return Code(text, language="python")


# -- exercise 1: the allocator's fair targets ------------------------------------
def _fair(wants: Sequence[Sequence[int]], limit: int) -> list[float]:
    flat = sorted(w for ws in wants for w in ws)
    if sum(flat) <= limit:
        return [float(sum(ws)) for ws in wants]
    left, level = float(limit), 0.0
    for i, w in enumerate(flat):
        if w * (len(flat) - i) <= left:
            left -= w
            continue
        level = left / (len(flat) - i)
        break
    return [sum(min(w, level) for w in ws) for ws in wants]


# (wants per process, limit): this notebook's run, the explore run, a story that wants
# little, stories that all fit, and one process with a crowd of stories.
_FAIR_CASES: tuple[tuple[list[list[int]], int], ...] = (
    ([[3, 3], [3], [3], [3]], 10),
    ([[3, 3, 3, 3], [3, 3, 3, 3]], 4),
    ([[1], [5, 5], [5]], 10),
    ([[2], [3]], 10),
    ([[3], [3], [3, 3]], 10),
    ([[3, 3, 3, 3, 3], [3]], 6),
)


def check_fair_targets(fair_targets: Any) -> Verdict:
    """Exercise: ``fair_targets(wants, limit)`` gives each process its entitlement (a
    float) when ``wants[p]`` lists how many units each story of process ``p`` could use:
    every story is entitled to the same level, capped by what it wants, and a process to
    the sum over its stories. Checked on several cases, never telling the expected list."""
    if (v := missing(fair_targets)) is not None:
        return v
    if not callable(fair_targets):
        return Verdict(False, "pass your function itself, fair_targets")
    from storylab.scheduling.distributed import _targets

    for wants, limit in _FAIR_CASES:
        call = f"fair_targets({wants}, {limit})"
        try:
            got = fair_targets([list(ws) for ws in wants], limit)
        except Exception as exc:
            return Verdict(False, f"{call} raised {type(exc).__name__}: {exc}")
        if got is ... or got is None:
            return Verdict(False, "fair_targets still returns the placeholder: return one "
                                  "number per process")
        try:
            got = [float(x) for x in got]
        except (TypeError, ValueError):
            return Verdict(False, f"{call} gave {got!r}: return a list of numbers, one per "
                                  "process")
        want = _fair(wants, limit)
        if len(got) != len(wants):
            return Verdict(False, f"{call} gave {len(got)} numbers for {len(wants)} processes: "
                                  "return one number per process")
        if all(abs(a - b) < 1e-6 for a, b in zip(got, want, strict=True)):
            continue
        n = sum(len(ws) for ws in wants)
        if abs(sum(got) - min(limit, sum(map(sum, wants)))) > 1e-6:
            why = (f"they add up to {sum(got):g}: together the processes should be entitled to "
                   "the whole limit, or to everything their stories want if that is less")
        elif all(abs(g - limit / len(wants)) < 1e-6 for g in got):
            why = ("that splits the limit between processes; the allocator splits it between "
                   "stories, so a process with more stories is entitled to more")
        elif all(abs(g - len(ws) * limit / n) < 1e-6 for g, ws in zip(got, wants, strict=True)):
            why = ("an equal share per story, but a story that wants less than its share keeps "
                   "only what it wants, and the rest goes to the others")
        elif all(abs(g - round(g)) < 1e-9 for g in got):
            why = ("whole numbers: the entitlement is exact (often a fraction); the allocator "
                   "rounds it afterwards, and hands out the spare units in turn")
        else:
            why = ("find the one level that every story gets (or what it wants, if less) "
                   "so that the levels add up to the limit")
        return Verdict(False, f"{call} gave {[round(g, 3) for g in got]}; not yet: {why}")
    wants, limit = _FAIR_CASES[0]
    whole = _targets([list(ws) for ws in wants], [0.0] * len(wants), limit)
    return Verdict(True, f"every story gets the same level, capped by what it wants. For this "
                         f"notebook's default run ({wants}, limit {limit}) the entitlements are "
                         f"{[round(x, 2) for x in _fair(wants, limit)]}; the allocator on the "
                         f"scheduler hands out whole units, {whole}: it rounds fractions down "
                         "and gives the spare units to the processes in turn")


# -- the kill ----------------------------------------------------------------------
def stored_pictures(graph: Any) -> dict[str, set[str]]:
    """Stored pictures per pipeline name, read from the shared graph."""
    return {root.name: {k.name for k in graph.children(root.id)
                        if k.type == "ImageGenerationEntity" and k.status == "Completed"}
            for root in graph.roots()}


@dataclass
class Kill:
    """Who was killed, when (wall clock), and what the graph held at that moment."""

    pid: int
    story: str  # the story caught with 3 of 5 stored
    on_victim: list[str]  # every story the killed worker was running
    at: float
    before: dict[str, set[str]] = field(default_factory=dict)


def kill_half_way(client: Any, names: dict[str, str], graph_path: Any, pids: dict[str, int],
                  *, patience: float = 120.0) -> Kill:
    """Watch the shared graph until a worker runs a story with 3 of its 5 pictures
    stored, then ``SIGKILL`` that worker's process (no clean-up, no goodbye)."""
    from storylab.entities import EntityGraph

    give_up = time.monotonic() + patience
    while True:
        if time.monotonic() > give_up:
            raise RuntimeError("no story caught with 3 of 5 stored: run the kill slower "
                               "(a larger time_scale)")
        time.sleep(0.02)
        with EntityGraph.open(graph_path, create=False, read_only=True) as g:
            stored = stored_pictures(g)
        for address, keys in client.processing().items():
            mine = [names[k] for k in keys if k in names]
            half_way = [s for s in mine if 3 <= len(stored.get(s, ())) < 5]
            if half_way:
                # Dask's nanny restarts the worker at once and would warn that it did:
                # that is the recovery working, not a new problem.
                logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
                os.kill(pids[address], signal.SIGKILL)
                return Kill(pids[address], half_way[0], mine, time.time(), stored)


def draws(graph: Any, node: Any) -> int:
    """How often a picture was really drawn: its ``Generating image`` progress lines."""
    return sum(1 for e in graph.progress(node.id) if e.entity_id == node.id
               and e.type == "STATUS" and str(e.message).startswith("Generating image"))


def count_draws(graph_path: Any, stories: Sequence[str],
                before: dict[str, set[str]]) -> list[tuple[str, str, bool, int]]:
    """``(story, picture, stored before the kill?, times drawn)`` for every picture of
    ``stories``, read back from the graph."""
    from storylab.entities import EntityGraph

    rows = []
    with EntityGraph.open(graph_path, create=False) as g:
        for root in g.roots():
            if root.name in stories:
                rows += [(root.name, k.name, k.name in before.get(root.name, ()), draws(g, k))
                         for k in g.children(root.id) if k.type == "ImageGenerationEntity"]
    return rows


@dataclass(frozen=True)
class KillChartWords:
    """What the kill chart shows, read from the survivors' global series."""

    before_kill: int  # most units the survivors held before the kill
    short: int  # most they held from the kill to the start of the lapse window
    back: float | None  # when they first held the whole limit again, if ever
    climbs: str  # that, in words, against the window


def kill_chart_words(series: Sequence[tuple[float, int]], killed: float, lapse_from: float,
                     lapse_by: float, limit: int) -> KillChartWords:
    """Read the survivors' ``(model s, units)`` steps of the global limit around a kill."""
    before_kill = max((v for t, v in series if t < killed), default=0)
    short = max([v for t, v in series if t < killed][-1:]
                + [v for t, v in series if killed <= t < lapse_from], default=0)
    back = next((t for t, v in series if t >= killed and v >= limit), None)
    if back is None:
        most = max((v for t, v in series if t >= killed), default=0)
        climbs = (f"and never regains {limit} in this run (at most {most} after the kill: by "
                  "the time the leases lapsed too few pictures were left)")
    else:
        where = "before" if back < lapse_from else "inside" if back <= lapse_by else "only after"
        climbs = f"and regains {limit} {where} the shaded window"
    return KillChartWords(before_kill, short, back, climbs)


# -- the end -----------------------------------------------------------------------
def _quiet_worker_logs() -> None:
    for logger in ("distributed.worker", "distributed.core", "distributed.comm"):
        logging.getLogger(logger).setLevel(logging.CRITICAL)


def close_cluster(client: Any, cluster: Any) -> None:
    """Close the client and the cluster. A worker may still send one heartbeat to the
    closing scheduler, which Dask would log as an error though nothing went wrong: that
    log is turned off first, in every worker process (it is written there) and here."""
    client.run(_quiet_worker_logs)
    client.run(_quiet_worker_logs, nanny=True)
    logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)
    client.close()
    cluster.close()


def ideal_bound(stories: int, limit: int, seconds: float, per_story: int = 5,
                story_limit: int = 3) -> tuple[int, float]:
    """Rounds of at most ``limit`` pictures (and ``story_limit`` per story), each as long as
    the service's mean time: ``(rounds, model seconds)``."""
    rounds = max(math.ceil(stories * per_story / limit), math.ceil(per_story / story_limit))
    return rounds, rounds * seconds


def first_unit_words(trace: Any, story: str, label: str, killed: float, lapse_from: float,
                     lapse_by: float, *, slack: float = 0.5) -> tuple[float | None, str]:
    """When the new attempt of ``story`` (its pipeline name) first held a unit after the
    kill, and what that says against the lapse window. ``slack`` (model s): the window
    comes from wall-clock readings, not exact."""
    from storylab.viz import in_use_series

    first = next((t for t, v in in_use_series(trace).get("story:" + story, []) if t >= killed
                  and v > 0), None)
    window = f"({lapse_from:.1f} to {lapse_by:.1f})"
    if first is None:
        return None, (f"{label} (the story caught half-way) held no unit after the kill in "
                      "this trace")
    said = (f"{label}, the story caught half-way, was resumed by Dask at once and got its "
            f"first unit at {first:.1f} model s ({first - killed:.1f} after the kill)")
    if first < lapse_from - slack:
        return first, (f"{said}, before the leases lapsed {window}: a unit the survivors freed, "
                       "not one of the dead worker's")
    if first <= lapse_by + slack:
        return first, (f"{said}, as the dead worker's leases lapsed {window}: it waited for "
                       "units its own dead attempt still held")
    return first, (f"{said}, after the leases lapsed {window}: when the units came back, other "
                   "waiting stories were served first")


def tally_graph(where: Any, pipelines: set[str]) -> dict[str, int]:
    """Stories completed, pictures stored and times drawn, read back from one graph
    (a SQLite path or a ``postgresql://`` URL)."""
    from storylab.entities import EntityGraph

    with EntityGraph.open(where, create=False, read_only=True) as g:
        roots = [r for r in g.roots() if r.name in pipelines]
        images = [k for r in roots for k in g.children(r.id)
                  if k.type == "ImageGenerationEntity"]
        return {"completed": sum(r.status == "Completed" for r in roots),
                "pictures": sum(k.status == "Completed" for k in images),
                "drawn": sum(draws(g, k) for k in images)}


def comparison_table(workdir: Any, server: Any, run: Any, on_pg: Any, on_file: dict[str, int],
                     on_server: dict[str, int], *, png_files: int, new_files: int,
                     lease_timeout: float, limit: int, peaks: tuple[int, int]) -> str:
    """The two runs side by side, SQLite file against PostgreSQL server, as a Markdown table."""
    from storylab.viz import makespan

    rows = [
        ("the graph", f"`{workdir / 'graph.sqlite'}`", f"`{server.shown}`"),
        ("the pictures", f"PNG files beside it ({png_files}: both runs above)",
         f"in the graph's tables ({new_files} files written here)"),
        ("worker processes", len(run.pids), len(on_pg.pids)),
        ("lease timeout (wall s)", lease_timeout, 10),
        ("stories completed", on_file["completed"], on_server["completed"]),
        ("pictures stored", on_file["pictures"], on_server["pictures"]),
        ("times a picture was drawn", on_file["drawn"], on_server["drawn"]),
        (f"global peak (limit {limit})", peaks[0], peaks[1]),
        ("last picture ends (model s)", f"{makespan(run.trace):.0f}",
         f"{makespan(on_pg.trace):.0f}")]
    return ("| | SQLite file | PostgreSQL |\n|---|---|---|\n"
            + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows))
