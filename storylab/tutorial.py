"""Small conveniences shared by the tutorial notebooks.

The notebooks are about *one* idea each (a timeline, a capacity tree, a
resumed run). The plumbing around that idea is the same every time: a fresh
entity graph in a scratch folder, the simulated backends at a chosen speed,
a run wrapped in a :class:`~storylab.scheduling.Trace` and a live
:class:`~storylab.viz.ProgressPanel`, and the finished page shown inline.
Writing it once here keeps the notebook cells short and about the lesson::

    graph = fresh_graph("02-parallel")
    settings = simulated_settings(time_scale=0.1)
    run = await run_stories(graph, ["a brave kitten"], settings=settings)
    plot_timeline(run.trace)
    show_story(graph, run.results[0])

Everything here uses the public API of the layers below; nothing is
imported from ``storylab.viz`` or IPython until a function needs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storylab.entities import EntityGraph
from storylab.scheduling import EventKind, Trace
from storylab.story.backends import SimulatedImageBackend, SimulatedTextBackend
from storylab.story.entities import StoryPipelineEntity, create_story, story_html
from storylab.story.settings import StorySettings, use_settings

__all__ = [
    "Handoff",
    "StoryRun",
    "first_full",
    "fresh_graph",
    "handoffs",
    "image_nodes",
    "image_statuses",
    "in_use_at",
    "plot_in_use",
    "run_stories",
    "show_story",
    "simulated_settings",
    "tutorial_home",
    "workspace",
]


def tutorial_home() -> Path:
    """Where the notebooks keep their graphs and pages: ``$STORYLAB_HOME`` or ``./.storylab``."""
    return Path(os.environ.get("STORYLAB_HOME") or ".storylab")


def _check_name(name: Any) -> str:
    if (
        not isinstance(name, str)
        or not name.strip()
        or any(c in name for c in "/\\")
        or name.strip() in (".", "..")
    ):
        raise ValueError(f"name must be a non-empty folder name without slashes, got {name!r}")
    return name.strip()


def workspace(name: str, *, fresh: bool = True, home: str | os.PathLike | None = None) -> Path:
    """The folder ``<home>/<name>``, emptied first when ``fresh`` (so a re-run starts clean)."""
    folder = Path(home) if home is not None else tutorial_home()
    folder = folder / _check_name(name)
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fresh_graph(name: str, *, home: str | os.PathLike | None = None) -> EntityGraph:
    """An empty entity graph in ``<home>/<name>/graph.sqlite`` (any old one is removed)."""
    return EntityGraph.open(workspace(name, fresh=True, home=home) / "graph.sqlite")


def simulated_settings(time_scale: float, *, seed: int = 0, **changes: Any) -> StorySettings:
    """Story settings with the offline text and image backends at ``time_scale``.

    ``time_scale`` is wall seconds per model second (an image takes about 10
    model seconds). Other keyword arguments are :class:`StorySettings` fields
    (``image_mode``, ``story_limit``...) or, prefixed ``images_``, options of
    :class:`SimulatedImageBackend` (``images_fail=["IMAGE_3"]``).
    """
    _warm_up_drawing()
    image_options = {k[len("images_") :]: v for k, v in changes.items() if k.startswith("images_")}
    fields = {k: v for k, v in changes.items() if not k.startswith("images_")}
    return StorySettings(
        images=SimulatedImageBackend(time_scale=time_scale, seed=seed, **image_options),
        text=SimulatedTextBackend(time_scale=time_scale, seed=seed),
        **fields,
    )


def _warm_up_drawing() -> None:
    # The first picture pays for importing Pillow and its filters (a wall
    # second on a busy machine, which a small time_scale turns into many
    # model seconds). Pay it here, before any timed run.
    from storylab.story.backends.images import draw_illustration

    draw_illustration("warm-up", "watercolor", 64, 48)


@dataclass(frozen=True)
class StoryRun:
    """What :func:`run_stories` hands back.

    ``results`` are the pipelines' outputs in the order of ``pipelines`` (an
    exception instead of a result for a pipeline that raised, when
    ``return_exceptions`` was set); ``trace`` holds every scheduling event of
    the run, with ``meta["time_scale"]`` and ``meta["limits"]`` filled in so
    the charts read in model seconds and draw each limit.
    """

    pipelines: tuple[StoryPipelineEntity, ...]
    results: tuple[Any, ...]
    trace: Trace
    panel: Any = None

    @property
    def result(self) -> Any:
        """The result of the only pipeline (for one-story runs)."""
        if len(self.results) != 1:
            raise ValueError(f"this run has {len(self.results)} pipelines; use .results")
        return self.results[0]


def _limits(settings: StorySettings, pipelines: Iterable[StoryPipelineEntity]) -> dict[str, int]:
    limits = {settings.global_capacity.name: settings.global_limit}
    for p in pipelines:
        limits[f"story:{p.name}"] = settings.story_limit
    return limits


async def run_stories(
    graph: EntityGraph,
    topics: Iterable[Any],
    *,
    settings: StorySettings,
    customization: Mapping[str, Any] | None = None,
    panel: Any = True,
    title: str | None = None,
    stagger: float = 0.0,
    trace: Trace | None = None,
    return_exceptions: bool = False,
) -> StoryRun:
    """Create (or find) one pipeline per topic and run them all at once.

    ``panel`` is ``True`` for a new :class:`~storylab.viz.ProgressPanel`
    (a widget in Jupyter, lines elsewhere), an existing panel, or ``None``
    for no display. ``stagger`` waits that many *model* seconds between
    starting one pipeline and the next, so the order in which stories reach
    their images is the order of ``topics``. A pipeline that was interrupted
    earlier resumes: its finished children are not run again.
    """
    topics = list(topics)
    if not topics:
        raise ValueError("topics must name at least one story")
    if isinstance(stagger, bool) or not isinstance(stagger, int | float) or stagger < 0:
        raise ValueError(f"stagger must be a number of model seconds >= 0, got {stagger!r}")
    pipelines = [
        create_story(graph, t, dict(customization) if customization else None) for t in topics
    ]
    time_scale = settings.images.time_scale if hasattr(settings.images, "time_scale") else 1.0
    if trace is None:
        trace = Trace()
    trace.meta.setdefault("time_scale", time_scale)
    trace.meta.setdefault("limits", {}).update(_limits(settings, pipelines))
    if panel is True:
        from storylab.viz import ProgressPanel

        panel = ProgressPanel(title or ("Story" if len(topics) == 1 else "Stories"))

    async def one(i: int, pipeline: StoryPipelineEntity) -> Any:
        if stagger:
            await asyncio.sleep(i * stagger * time_scale)
        run = pipeline.start()
        if panel is None:
            return await _consume(run)
        return await panel.watch(run, root=pipeline.id)

    async def settled(i: int, pipeline: StoryPipelineEntity) -> Any:
        try:
            return await one(i, pipeline)
        except Exception as exc:
            if return_exceptions:
                return exc
            raise

    try:
        with use_settings(settings), trace:
            # A TaskGroup: if one story raises, the others are cancelled rather
            # than left running unseen in the background.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(settled(i, p)) for i, p in enumerate(pipelines)]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    finally:
        if panel is not None:
            panel.close()
    return StoryRun(tuple(pipelines), tuple(t.result() for t in tasks), trace, panel)


async def _consume(run: Any) -> Any:
    async for _ in run:
        pass
    return run.result


def image_nodes(graph: EntityGraph, pipeline_id: str) -> list[Any]:
    """The pipeline's image children (``NodeRecord``), in creation order."""
    return [n for n in graph.children(pipeline_id) if n.type == "ImageGenerationEntity"]


def image_statuses(graph: EntityGraph, pipeline_id: str) -> Counter[str]:
    """How many image children are in each status (``Completed``, ``InProgress``...)."""
    return Counter(n.status for n in image_nodes(graph, pipeline_id))


def show_story(graph: EntityGraph, result: Any) -> Any:
    """The finished page as an :class:`IPython.display.HTML` (pictures inlined).

    Raises :class:`ValueError` when ``result`` holds no page (a rejected
    topic, or a run that did not finish).
    """
    from IPython.display import HTML

    page = story_html(graph, result)
    if page is None:
        stage = result.get("stage") if isinstance(result, Mapping) else None
        raise ValueError(f"this result has no story page (stage {stage!r})")
    return HTML(page)


# -- reading a trace -------------------------------------------------------------
def _time_scale(trace: Trace) -> float:
    scale = trace.meta.get("time_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"trace.meta['time_scale'] must be a number > 0, got {scale!r}")
    return float(scale)


def in_use_at(trace: Trace, t: float) -> dict[str, int]:
    """Units in use per capacity source just after model second ``t`` of the trace."""
    scale = _time_scale(trace)
    out: dict[str, int] = {}
    for name, points in trace.in_use_series().items():
        value = 0
        for when, n in points:
            if when / scale > t:
                break
            value = n
        out[name] = value
    return out


def first_full(trace: Trace, source: str, limit: int) -> float | None:
    """The model second at which ``source`` first had ``limit`` units in use (or ``None``)."""
    scale = _time_scale(trace)
    for when, n in trace.in_use_series().get(source, []):
        if n >= limit:
            return when / scale
    return None


@dataclass(frozen=True)
class Handoff:
    """A unit given back by one task and taken next by another, through ``source``."""

    released_at: float  # model seconds
    taken_at: float
    released_by: str  # leaf capacity source (the story) of each side
    taken_by: str
    label: str | None  # the task the unit was taken for


def handoffs(trace: Trace, *, after: float = 0.0, source: str = "global") -> list[Handoff]:
    """Each unit released at ``source`` after model second ``after`` and who took it next.

    Releases and takes are paired in order: the first take after a release is
    the freed unit moving on. Releases nobody took (the end of a run) are
    left out.
    """
    scale = _time_scale(trace)
    labels = {
        (e.runner, e.task_id): e.label for e in trace.events if e.kind is EventKind.TASK_START
    }
    free: list[tuple[float, str]] = []
    out: list[Handoff] = []
    for e in trace.events:
        t = trace.relative(e.t) / scale
        if t < after or source not in e.path:
            continue
        if e.kind is EventKind.RELEASE:
            free.append((t, e.path[0]))
        elif e.kind in (EventKind.ACQUIRE, EventKind.GRANT) and free:
            released_at, by = free.pop(0)
            label = e.label or labels.get((e.runner, e.task_id))
            out.append(Handoff(released_at, t, by, e.path[0], label))
    return out


def _root_name(trace: Trace) -> str | None:
    for event in trace.events:
        if event.path:
            return event.path[-1]
    return None


def plot_in_use(
    traces: Mapping[str, Trace],
    *,
    source: str | None = None,
    limit: int | None = None,
    title: str | None = None,
) -> Any:
    """One step line per trace: units in use at ``source`` over model seconds.

    Handy to compare runs of the same work (two policies, two limits). Each
    legend entry carries the run's makespan; ``limit`` draws a dashed line.
    ``source`` defaults to each trace's root capacity source (the last level
    of the paths it recorded), so runs whose global sources have different
    names (``global`` and ``global-fifo``) still share one chart.
    """
    import matplotlib.pyplot as plt

    from storylab.viz import makespan
    from storylab.viz.timeline import _BURST, _merge_bursts, capacity_series

    if not traces:
        raise ValueError("traces must map a label to at least one Trace")
    fig, ax = plt.subplots(figsize=(10, 3.6), layout="constrained")
    for label, trace in traces.items():
        name = source if source is not None else _root_name(trace)
        lines = [c for c in capacity_series(trace) if c.name == name]
        if not lines:
            raise ValueError(f"no capacity source named {name!r} in the trace {label!r}")
        span = makespan(trace)
        # A unit handed straight from a finished task to a waiter is one step, not a dip.
        points = _merge_bursts(lines[0].points, span * _BURST)
        xs = [t for t, _ in points] + [span]
        ys = [n for _, n in points] + [points[-1][1]]
        ax.step(xs, ys, where="post", lw=1.8, label=f"{label} (makespan {span:.1f} model s)")
    if limit is not None:
        ax.axhline(limit, color="#d62728", ls="--", lw=1.2, label=f"limit {limit}")
        ax.set_ylim(0, limit * 1.25)
    ax.set_xlabel("time (model seconds)")
    ax.set_ylabel(f"units in use ({source or 'root'})")
    ax.set_xlim(left=0)
    ax.grid(color="#eeeeee")
    ax.legend(loc="lower center", fontsize=8, frameon=False)
    default = (
        f"Units in use at {source!r}" if source else "Units in use at the root capacity source"
    )
    ax.set_title(title or f"{default} over time")
    return fig
