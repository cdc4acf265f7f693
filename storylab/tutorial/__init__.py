"""The notebook kit: the plumbing every lesson shares, so its cells stay about the lesson.

Each notebook is about *one* idea (a timeline, a capacity tree, a resumed
run); around it is the same plumbing every time: a fresh entity graph in a
scratch folder, the simulated backends at a chosen speed, stories run under
a :class:`~storylab.scheduling.Trace` and a live progress panel, the finished
page shown inline, a few measured facts remembered for the tests, and the
checkers of the exercises::

    graph = fresh_graph("02-parallel")
    settings = simulated_settings(time_scale=0.1)
    run = await run_stories(graph, ["a brave kitten"], settings=settings)
    plot_timeline(run.trace)          # from storylab.viz
    show_story(graph, run.results[0])

Around the lessons, in private modules re-exported here:

* ``_pace``: :func:`lesson_pace`, the only plumbing a notebook opens with (the
  CI switch and a slower speed for the runs a learner watches);
* ``_solutions``: every exercise's solution, shown only on request with
  :func:`show_solution` (no notebook cell runs one);
* ``_exercises`` and ``_capstone``: checkers that run the learner's code (a
  capacity tree, a naming function, a failing entity, an ERROR branch, a
  pipeline killed by a real signal and resumed);
* ``_overview``: notebook 00's diagram, glossary and chapter-to-Python table.

Charts and the numbers read from a trace live in :mod:`storylab.viz` (this
kit draws nothing itself; :func:`show_figure` only shows a chart with its
words); sweeps of the limits in :mod:`storylab.sweep`. Nothing is imported
from ``storylab.viz``, matplotlib or IPython until a function needs it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import shutil
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storylab.entities import EntityGraph
from storylab.scheduling import Trace
from storylab.story.backends import (
    HttpImageBackend,
    ImageServer,
    SimulatedImageBackend,
    SimulatedTextBackend,
)
from storylab.story.cluster import (
    gather_stories,
    global_units_out,
    lease_settings,
    run_stories_on_cluster,
    submit_stories,
)
from storylab.story.entities import (
    StoryPipelineEntity,
    acreate_story,
    create_story,
    story_html,
)
from storylab.story.html import story_fragment
from storylab.story.settings import StorySettings, global_image_capacity, use_settings
from storylab.tutorial._capacity import (
    TogetherRun,
    check_draw_picture,
    check_split_and_even,
    handoff_lines,
    start_together,
)
from storylab.tutorial._capstone import (
    CapstoneRun,
    check_capstone,
    check_item,
    check_item_name,
    check_run_items,
    judge_capstone,
    kill_and_resume,
    plot_capstone,
    write_capstone,
)
from storylab.tutorial._cluster import (
    check_lapse_window,
    check_out_of_reach,
    check_regained,
    cluster_labels,
    mark_window,
    split_words,
    start_stagger,
    story_of_task,
    unit_sources,
    widest_gap,
)
from storylab.tutorial._cluster_lesson import (
    check_fair_targets,
    close_cluster,
    comparison_table,
    count_draws,
    first_unit_words,
    ideal_bound,
    kill_chart_words,
    kill_half_way,
    tally_graph,
    worker_code,
)
from storylab.tutorial._exercises import (
    check_bound_function,
    check_capacity_tree,
    check_error_branch,
    check_even_limit,
    check_failing_entity,
    check_fair_misses,
    check_fifo_losses,
    check_finish_story,
    check_give_up,
    check_limited_sketchbook,
    check_lonely_round,
    check_polite_burst,
    check_prompt_names,
    check_retry_two,
    check_stable_names,
    check_state_of,
    check_to_redraw,
    check_two_level_tree,
)
from storylab.tutorial._http import CapacityReadout, capacity_readout
from storylab.tutorial._last_round import last_round
from storylab.tutorial._legend import relabel_legend
from storylab.tutorial._overview import (
    API_TABLE,
    CHAPTER,
    GLOSSARY,
    api_table,
    check_python_form,
    check_python_name,
    check_restart_box,
    check_return_form,
    glossary_table,
    overview_diagram,
    overview_text,
)
from storylab.tutorial._pace import FAST_SCALE, WATCH_FACTOR, Pace, fast_mode, lesson_pace
from storylab.tutorial._postgres import ServerGraph, server_graph
from storylab.tutorial._server import ensure_serving, stop_server_on_error
from storylab.tutorial._solutions import EXPLAINED, SOLUTIONS, show_solution, solution_code
from storylab.tutorial._sweep_words import SweepSummary, sweep_summary
from storylab.tutorial._verdict import Verdict, missing

__all__ = [
    "API_TABLE",
    "CapstoneRun",
    "CHAPTER",
    "api_table",
    "check_bound",
    "check_capstone",
    "CapacityReadout",
    "capacity_readout",
    "check_bound_function",
    "check_even_limit",
    "check_fair_misses",
    "check_lonely_round",
    "check_error_branch",
    "check_fifo_losses",
    "check_finish_story",
    "check_capacity_tree",
    "check_draw_picture",
    "last_round",
    "check_split_and_even",
    "handoff_lines",
    "start_together",
    "TogetherRun",
    "check_give_up",
    "check_polite_burst",
    "check_retry_two",
    "check_error_type",
    "check_retry_calls",
    "check_even_split",
    "check_failing_entity",
    "check_first_split",
    "check_item",
    "check_item_name",
    "check_python_form",
    "check_python_name",
    "check_limited_sketchbook",
    "check_longest_picture",
    "check_makespan_with_limit",
    "check_most_at_once",
    "check_out_of_reach",
    "check_regained",
    "check_lapse_window",
    "check_fair_targets",
    "close_cluster",
    "comparison_table",
    "count_draws",
    "first_unit_words",
    "ideal_bound",
    "kill_chart_words",
    "kill_half_way",
    "tally_graph",
    "worker_code",
    "mark_window",
    "cluster_labels",
    "check_redrawn",
    "check_restart_box",
    "check_return_form",
    "Refill",
    "refill_moment",
    "check_run_items",
    "check_prompt_names",
    "check_stable_names",
    "check_state_of",
    "check_to_redraw",
    "check_two_level_tree",
    "cluster_progress",
    "create_story",
    "FACTS_MIME",
    "fast_mode",
    "FAST_SCALE",
    "first_split",
    "fresh_graph",
    "gather_stories",
    "global_units_out",
    "glossary_table",
    "global_image_capacity",
    "GLOSSARY",
    "HttpImageBackend",
    "image_nodes",
    "image_statuses",
    "ImageServer",
    "judge_capstone",
    "kill_and_resume",
    "lease_settings",
    "lesson_pace",
    "notebook_facts",
    "overview_diagram",
    "overview_text",
    "Pace",
    "picture_states",
    "plot_capstone",
    "PictureState",
    "pool_makespan",
    "remember",
    "run_stories",
    "run_stories_on_cluster",
    "show_figure",
    "sweep_summary",
    "SweepSummary",
    "show_solution",
    "show_story",
    "story_thumbnails",
    "simulated_settings",
    "ensure_serving",
    "relabel_legend",
    "stop_server_on_error",
    "SimulatedImageBackend",
    "SimulatedTextBackend",
    "solution_code",
    "server_graph",
    "ServerGraph",
    "EXPLAINED",
    "SOLUTIONS",
    "SUMMARY_PREFIX",
    "stage3_code",
    "story_gaps",
    "story_html",
    "story_labels",
    "StoryRun",
    "StorySettings",
    "story_of_task",
    "split_words",
    "start_stagger",
    "unit_sources",
    "widest_gap",
    "submit_stories",
    "tutorial_home",
    "use_settings",
    "Verdict",
    "WATCH_FACTOR",
    "workspace",
    "write_capstone",
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


def simulated_settings(time_scale: float, *, seed: int = 0, pictures: int = 5,
                       **changes: Any) -> StorySettings:
    """Story settings with the offline text and image backends at ``time_scale``.

    ``time_scale`` is wall seconds per model second (an image takes about 10
    model seconds). Other keyword arguments are :class:`StorySettings` fields
    (``image_mode``, ``story_limit``...) or, prefixed ``images_``, options of
    :class:`SimulatedImageBackend` (``images_fail=["IMAGE_3"]``). The pictures
    named in ``images_fail`` and ``images_slow`` must exist in a story of
    ``pictures`` pictures (``IMAGE_1`` ... ``IMAGE_<pictures>``): a name that
    matches no picture would make nothing fail, silently.
    """
    image_options = {k[len("images_") :]: v for k, v in changes.items() if k.startswith("images_")}
    for option in ("fail", "slow"):
        if option in image_options:
            _check_picture_names(f"images_{option}", image_options[option], pictures)
    _warm_up_drawing()
    fields = {k: v for k, v in changes.items() if not k.startswith("images_")}
    return StorySettings(
        images=SimulatedImageBackend(time_scale=time_scale, seed=seed, **image_options),
        text=SimulatedTextBackend(time_scale=time_scale, seed=seed),
        **fields,
    )


_PICTURE_NAME = re.compile(r"\{\{IMAGE_([1-9][0-9]*)\}\}")


def _check_picture_names(field: str, names: Any, pictures: int) -> None:
    """Refuse a fault aimed at a picture the story does not have (``image_1``, ``IMAGE_9``)."""
    allowed = f"IMAGE_1 ... IMAGE_{pictures}" if pictures > 1 else "IMAGE_1"
    if isinstance(names, str):
        names = [names]
    elif isinstance(names, Mapping):
        names = list(names)
    for name in names:
        text = str(name).strip()
        key = text if text.startswith("{{") else "{{" + text + "}}"
        if text.isdigit():
            key = "{{IMAGE_" + text + "}}"
        found = _PICTURE_NAME.fullmatch(key)
        if found is None or not 1 <= int(found.group(1)) <= pictures:
            raise ValueError(f"{field}: {name!r} names no picture of a {pictures}-picture story; "
                             f"allowed: {allowed} (or {{{{IMAGE_n}}}}, or n)")


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
        await acreate_story(graph, t, dict(customization) if customization else None)
        for t in topics
    ]
    time_scale = settings.images.time_scale if hasattr(settings.images, "time_scale") else 1.0
    if trace is None:
        trace = Trace()
    trace.meta.setdefault("time_scale", time_scale)
    trace.meta.setdefault("limits", {}).update(_limits(settings, pipelines))
    if panel is True:
        from storylab.viz import ProgressPanel

        # Several stories: the capacity-tree gauge above the bars (who holds
        # what, and which level each wait is blocked by) and one line of
        # glyphs per story, so five stories fit a screen.
        several = len(pipelines) > 1
        panel = ProgressPanel(title or ("Story" if not several else "Stories"),
                              trace=trace if several else None,
                              names=_label_map(pipelines) if several else None,
                              compact=several,
                              # a plain loop holds no capacity: its pending rows wait for it
                              waiting_text=("not started yet"
                                            if getattr(settings, "image_mode", None)
                                            == "sequential" else None))

    # Each pipeline is named as the charts, the replay and the gauge name it
    # ("story A (a curious fox)"), one story or several, not by its entity's long name.
    letters = _label_map(pipelines)

    async def one(i: int, pipeline: StoryPipelineEntity) -> Any:
        if stagger:
            await asyncio.sleep(i * stagger * time_scale)
        run = pipeline.start()
        if panel is None:
            return await _consume(run)
        return await panel.watch(run, root=pipeline.id,
                                 label=letters.get(f"story:{pipeline.name}"))

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


# A picture that could not be drawn is a box on the page that keeps its
# placeholder in an attribute (see storylab.story.html.missing_image_tag).
_GAP = re.compile(r'class="storylab-missing" data-placeholder="(\{\{IMAGE_\d+\}\})"')
GAP_CLASS = "storylab-gap"


def _page(graph: EntityGraph, result: Any) -> str:
    page = story_html(graph, result)
    if page is None:
        stage = result.get("stage") if isinstance(result, Mapping) else None
        raise ValueError(f"this result has no story page (stage {stage!r})")
    return page


def story_gaps(graph: EntityGraph, result: Any) -> list[str]:
    """The placeholders (``{{IMAGE_3}}``...) of the pictures missing from the page:
    each is a "could not be drawn" box that keeps its placeholder for a retry."""
    return _GAP.findall(_page(graph, result))


def show_story(graph: EntityGraph, result: Any, *, mark_gaps: bool = True) -> Any:
    """The finished page as an :class:`IPython.display.HTML` (pictures inlined).

    The page's body is shown in a ``<div class="storylab-story">`` with its
    stylesheet scoped to that element (:func:`storylab.story.html.story_fragment`),
    so the notebook around it keeps its own fonts, colours and margins.
    The box that stands where a picture is missing is also outlined in red
    (with ``mark_gaps``), so the gap is plain to see.
    Raises :class:`ValueError` when ``result`` holds no page (a rejected
    topic, or a run that did not finish).
    """
    from IPython.display import HTML

    page = _page(graph, result)
    if mark_gaps:
        page = _GAP.sub(
            lambda m: (
                f'class="storylab-missing {GAP_CLASS}" data-placeholder="{m.group(1)}" '
                'style="outline:3px solid #D55E00;outline-offset:3px"'
            ),
            page,
        )
    return HTML(story_fragment(page))


_INLINE_IMG = re.compile(r'<img\b[^>]*\bsrc="(data:image/png;base64,[^"]+)"[^>]*>')
_ALT = re.compile(r'\balt="([^"]*)"')


def story_thumbnails(graph: EntityGraph, result: Any, *, width: int = 120) -> Any:
    """The page's pictures only, as a row of small thumbnails (an :class:`IPython.display.HTML`).

    For a story already shown in full elsewhere: the pictures say it is the
    same one without the whole page again. Each keeps the page's alt text.
    Raises :class:`ValueError` when ``result`` holds no page, or ``width`` is
    not a number of pixels between 16 and 640.
    """
    from IPython.display import HTML

    if isinstance(width, bool) or not isinstance(width, int) or not 16 <= width <= 640:
        raise ValueError(f"width must be a whole number of pixels in [16, 640], got {width!r}")
    tags = []
    for m in _INLINE_IMG.finditer(_page(graph, result)):
        alt = _ALT.search(m.group(0))
        text = alt.group(1) if alt else "a picture of the story"  # already escaped there
        tags.append(f'<img src="{m.group(1)}" alt="{text}" title="{text}" width="{width}" '
                    'style="margin:2px;border:1px solid #ccc">')
    if not tags:
        raise ValueError("this story's page holds no pictures")
    return HTML('<div class="storylab-thumbnails" style="display:flex;flex-wrap:wrap">'
                + "".join(tags) + "</div>")


def story_labels(run: StoryRun, letters: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ") -> dict[str, str]:
    """Short names for the charts: ``{"story:<pipeline name>": "story A (a curious fox)"}``.

    Letters follow the order of the run's topics; the global source keeps its
    name. Pass the result as ``names=`` to ``plot_timeline`` or ``plot_capacity``.
    """
    if len(run.pipelines) > len(letters):
        raise ValueError(f"letters has {len(letters)} letters for {len(run.pipelines)} stories")
    return _label_map(run.pipelines, letters)


def _label_map(pipelines: Iterable[Any], letters: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
               ) -> dict[str, str]:
    return {
        f"story:{p.name}": f"story {letter} ({p.data.get('topic', p.name)})"
        for p, letter in zip(pipelines, letters, strict=False)
    }


def stage3_code() -> Any:
    """The pipeline's real Stage 3 (parallel pictures), as highlighted source code."""
    from IPython.display import Code

    source = textwrap.dedent(inspect.getsource(StoryPipelineEntity._parallel_images))
    return Code(source, language="python")


# -- what a crash left behind ----------------------------------------------------
@dataclass(frozen=True)
class PictureState:
    """One picture of a pipeline as the graph has it.

    ``state`` is ``Completed``, ``Failed``, ``Pending``, ``running`` (stored
    as ``InProgress`` and a live process holds its lease), ``stale``
    (``InProgress`` but its holder is gone or its lease expired, as after a
    crash) or ``not stored`` (the pipeline planned it but no node reached the
    graph).
    """

    name: str
    state: str
    finished_at: float | None


def picture_states(graph: EntityGraph, pipeline_id: str) -> list[PictureState]:
    """Every picture the pipeline planned, in prompt order, with its stored state.

    An ``InProgress`` node is ``running`` while the process holding its
    lease is alive and renews it, ``stale`` once nobody does (the check
    ``storylab eg tree`` prints). Raises :class:`ValueError` if the pipeline
    has not written its prompts yet.
    """
    prompts = (graph.get_node(pipeline_id).data.get("story_result") or {}).get("image_prompts")
    if not prompts:
        raise ValueError(f"pipeline {pipeline_id!r} has not stored its image prompts yet")
    found = {node.name: node for node in image_nodes(graph, pipeline_id)}
    out = []
    for prompt in prompts:
        name = f"image-{prompt['placeholder']}"
        node = found.get(name)
        if node is None:
            out.append(PictureState(name, "not stored", None))
        else:
            state = str(node.status)
            if state == "InProgress":
                lease = graph.lease(node.id)
                live = lease is not None and graph.lease_state(lease) == "live"
                state = "running" if live else "stale"
            out.append(PictureState(name, state, node.finished_at))
    return out


# -- facts a test can read back ---------------------------------------------------
FACTS_MIME = "application/vnd.storylab.facts+json"


def remember(**facts: Any) -> None:
    """Keep measured numbers in the cell's outputs, under a mime type nobody renders.

    The reader sees nothing; the executed notebook carries the numbers its
    figures claim, so tests (and tools) can check them with
    :func:`notebook_facts`. Values must be JSON (numbers, strings, lists...).
    """
    from IPython.display import display

    try:
        payload = json.loads(json.dumps(facts))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"facts must be JSON values: {exc}") from None
    display({FACTS_MIME: payload}, raw=True)


def notebook_facts(nb: Any) -> dict[str, Any]:
    """Every fact a notebook remembered (later cells win); ``nb`` is a path or a notebook."""
    if isinstance(nb, str | os.PathLike):
        nb = json.loads(Path(nb).read_text(encoding="utf-8"))
    facts: dict[str, Any] = {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = out.get("data", {})
            if FACTS_MIME in data:
                facts.update(data[FACTS_MIME])
    return facts


# -- exercises --------------------------------------------------------------------
_missing = missing


def _number(answer: Any) -> float | None:
    if isinstance(answer, bool) or not isinstance(answer, int | float):
        return None
    return float(answer)


_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z]+_(\d+)\s*\}\}")


def check_longest_picture(trace: Trace, answer: Any) -> Verdict:
    """Exercise: ``(label, seconds)`` of the picture whose bar is longest in ``trace``.

    The label may be written as the chart writes it (``image-2`` for
    ``image-{{IMAGE_2}}``); the seconds must be its bar's length to 0.3 model s.
    Told apart: the picture that ended last, the one that started last, a
    label that is not a lane, and the right picture with the wrong length.
    """
    from storylab.viz import timeline_lanes

    if (v := _missing(answer)) is not None:
        return v
    lanes = timeline_lanes(trace)
    if not lanes:
        raise ValueError("the trace holds no tasks")

    def length(lane: Any) -> float:
        return lane.run[1] - lane.run[0]

    def short(label: str) -> str:
        # The chart writes a label short (image-{{IMAGE_2}} reads image-2): both forms name it.
        return _PLACEHOLDER.sub(r"\1", label.strip())

    if isinstance(answer, str):
        return Verdict(False, "give the length too: answer = (label, seconds), such as "
                              "(\"image-1\", 9.5)")
    if not isinstance(answer, tuple | list) or len(answer) != 2:
        return Verdict(False, f"answer with two values, (label, seconds), not {answer!r}")
    label, seconds = answer
    if not isinstance(label, str):
        return Verdict(False, f"the first value is a lane's label (a string), not {label!r}")
    if _number(seconds) is None:
        return Verdict(False, f"the second value is a number of model seconds, not {seconds!r}")
    matching = [lane for lane in lanes if short(lane.label) == short(label)]
    if not matching:
        return Verdict(False, f"{label!r} is not a lane of the trace; labels are "
                              f"{[x.label for x in lanes]}")
    longest = max(lanes, key=length)
    lane = longest if longest in matching else max(matching, key=length)
    if lane is not longest:
        if lane is max(lanes, key=lambda x: x.run[1]):
            return Verdict(False, f"{lane.label} is the picture that ended last, not the one "
                                  "that ran longest: in a one-at-a-time run the last picture "
                                  "asked for always ends last. Compare the lengths, "
                                  "run[1] - run[0]")
        if lane is max(lanes, key=lambda x: x.run[0]):
            return Verdict(False, f"{lane.label} started last; compare the lengths of the "
                                  "bars, run[1] - run[0], not where they start")
        return Verdict(False, f"{lane.label} ran {length(lane):.1f} model s, and one picture "
                              "ran longer; compare run[1] - run[0] of every lane")
    took = length(longest)
    if abs(float(seconds) - took) > 0.3:
        if abs(float(seconds) - longest.run[1]) <= 0.3:
            return Verdict(False, f"right picture, but {seconds:g} is the moment it ended; its "
                                  "length is end - start")
        # Said without the true length, which the learner would only have to copy.
        return Verdict(False, f"right picture, but its length is not {seconds:g} (the check "
                              "wants it to within 0.3 model s): compute run[1] - run[0] of "
                              "its lane")
    return Verdict(True, f"{longest.label} ran longest, {took:.1f} model s, though it was not "
                         f"the last to end ({max(lanes, key=lambda x: x.run[1]).label} was)"
                   if longest is not max(lanes, key=lambda x: x.run[1]) else
                   f"{longest.label} ran longest, {took:.1f} model s")


def pool_makespan(durations: Iterable[float], limit: int) -> float:
    """When the last task ends if tasks start in order, each when one of ``limit`` slots frees."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
    ends: list[float] = []
    finish = 0.0
    for d in durations:
        if isinstance(d, bool) or not isinstance(d, int | float) or d < 0:
            raise ValueError(f"durations must be numbers >= 0, got {d!r}")
        start = 0.0
        if len(ends) >= limit:
            ends.sort()
            start = ends.pop(0)
        ends.append(start + d)
        finish = max(finish, start + d)
    return finish


def check_makespan_with_limit(durations: Iterable[float], limit: int, answer: Any) -> Verdict:
    """Exercise: the makespan of ``durations`` under a pool of ``limit`` (to 0.5 model s)."""
    durations = list(durations)
    expected = pool_makespan(durations, limit)
    if (v := _missing(answer)) is not None:
        return v
    value = _number(answer)
    if value is None:
        return Verdict(False, f"answer with a number of model seconds, not {answer!r}")
    if abs(value - expected) <= 0.5:
        return Verdict(True, f"{expected:g} model seconds with {limit} at a time")
    hint = "each task starts, in the order asked, when the earliest running one ends"
    if abs(value - sum(durations)) <= 0.5:
        return Verdict(False, f"{value:g} is every length added up: that is one at a time. "
                              f"With {limit} at once some of them overlap; {hint}")
    others = {k: pool_makespan(durations, k) for k in range(1, len(durations) + 1)
              if k != limit}
    for k, span in others.items():
        if abs(value - span) <= 0.5 and k > 1:
            return Verdict(False, f"{value:g} is the makespan with a limit of {k}, not {limit}: "
                                  f"that many run at once there; {hint}")
    if limit > 1 and abs(value - sum(durations) / limit) <= 0.5:
        return Verdict(False, f"{value:g} is the total work shared out evenly, but work can't "
                              f"be split evenly: a task runs whole, on one unit; {hint}")
    if limit > 1:
        hint += (f"; draw {limit} slots on paper, start the first {limit} tasks, and give "
                 "each freed slot to the next task asked for")
    return Verdict(False, f"{value:g} is not it; {hint}")


def first_split(stories: int, story_limit: int, global_limit: int) -> list[int]:
    """Units per story when ``stories`` arrive one after another and nothing has finished."""
    for name, value in (("stories", stories), ("story_limit", story_limit),
                        ("global_limit", global_limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    left, split = global_limit, []
    for _ in range(stories):
        take = min(story_limit, left)
        split.append(take)
        left -= take
    return split


def check_first_split(answer: Any, *, stories: int = 5, story_limit: int = 3,
                      global_limit: int = 12) -> Verdict:
    """Exercise: units per story (A first) once all have asked and none has finished."""
    expected = first_split(stories, story_limit, global_limit)
    if (v := _missing(answer)) is not None:
        return v
    if not isinstance(answer, list | tuple) or len(answer) != stories:
        return Verdict(False, f"answer with a list of {stories} numbers, one per story")
    if list(answer) == expected:
        return Verdict(True, f"{expected}: stories fill their own limit in arrival order "
                             f"until the {global_limit} global units run out")
    if not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in answer):
        return Verdict(False, "answer with whole numbers of units, 0 or more")
    if stories > 1 and len(set(answer)) == 1:
        return Verdict(False, f"{list(answer)} shares the units out evenly, but nothing divides "
                              "them in advance: a story takes units when it asks, and A asked "
                              "before any other story existed")
    over = [i for i, a in enumerate(answer) if a > story_limit]
    if over:
        letters = ", ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i] for i in over)
        who = f"story {letters} would hold" if len(over) == 1 else \
            f"stories {letters} would each hold"
        return Verdict(False, f"{who} more than a story's own limit of {story_limit}")
    total, room = sum(answer), min(global_limit, stories * story_limit)
    if total > global_limit:
        return Verdict(False, f"{total} units in all, but the global limit is {global_limit}")
    if total < room:
        return Verdict(False, f"{total} units in all, but {room} can be in use: a story with "
                              "room of its own takes a unit while the global level has one")
    # the first story given less than its turn: it asked before the ones that got more
    i = next(i for i, (a, e) in enumerate(zip(answer, expected, strict=True)) if a < e)
    later = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i + 1:stories]
    return Verdict(False, f"the units go to stories in the order they asked: story "
                          f"{'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[i]} asked before "
                          f"{', '.join(later)} and has room for {story_limit} of its own, "
                          "so it fills first")


def check_redrawn(before: Iterable[PictureState], answer: Any) -> Verdict:
    """Exercise: the names of the pictures a resumed run had to draw."""
    expected = {p.name for p in before if p.state != "Completed"}
    if (v := _missing(answer)) is not None:
        return v
    if isinstance(answer, str) or not isinstance(answer, Iterable):
        return Verdict(False, "answer with a set of names such as {'image-{{IMAGE_4}}'}")
    given = set(answer)
    if given == expected:
        return Verdict(True, f"{sorted(expected)}: everything that was not Completed")
    if not given <= {p.name for p in before}:
        return Verdict(False, "use the full names, as the states list them, such as "
                              "'image-{{IMAGE_4}}'")
    if given > expected:
        return Verdict(False, "a Completed picture is handed back, not drawn again")
    return Verdict(False, "stale pictures and pictures that were never stored are both drawn")


def check_error_type(record: Any, answer: Any) -> Verdict:
    """Exercise: the exception type stored on a failed entity (its node record, ``.error``)."""
    error = getattr(record, "error", None)
    if not isinstance(error, Mapping) or "type" not in error:
        raise ValueError("record must be the node record of a failed entity (with .error)")
    expected = error["type"]
    if (v := _missing(answer)) is not None:
        return v
    if answer == expected:
        return Verdict(True, f"{record.name} failed with {expected}")
    return Verdict(False, f"{answer!r} is not the stored type; look at the record's .error")


def check_retry_calls(answer: Any, *, pictures: int = 5, failed: int = 2) -> Verdict:
    """Exercise: the image-model calls a ``retry_failed=True`` run makes for a story of
    ``pictures`` pictures of which ``failed`` were refused (only those are drawn again)."""
    if not 0 <= failed <= pictures:
        raise ValueError(f"failed must be between 0 and pictures ({pictures}), got {failed}")
    if (v := _missing(answer)) is not None:
        return v
    if isinstance(answer, bool) or not isinstance(answer, int):
        return Verdict(False, "answer with a whole number of model calls, such as 3")
    if answer == failed:
        return Verdict(True, f"{failed} calls: the {pictures - failed} completed pictures are "
                             "handed back from the graph, only the failed ones are drawn again")
    if answer == pictures:
        return Verdict(False, "a retry does not redraw the whole story: completed pictures "
                              "keep their stored output")
    return Verdict(False, f"{answer} is not it: count the pictures that a retry opens again")


def check_even_split(answer: Any, *, global_limit: int = 4, stories: int = 2) -> Verdict:
    """Exercise: the per-story limit at which busy stories always split the global units evenly."""
    if global_limit % stories:
        raise ValueError(f"{global_limit} units cannot be split evenly among {stories} stories")
    expected = global_limit // stories
    if (v := _missing(answer)) is not None:
        return v
    if isinstance(answer, bool) or not isinstance(answer, int):
        return Verdict(False, f"answer with a whole number of units, not {answer!r}")
    if answer == expected:
        return Verdict(True, f"{expected} per story: no story can hold more than its share")
    if answer > expected:
        return Verdict(False, f"with {answer} per story one story can still hold more than "
                              f"{expected} of the {global_limit} units")
    return Verdict(False, f"{answer} per story splits evenly too, but leaves "
                          f"{global_limit - stories * answer} of the {global_limit} units idle; "
                          "is it the largest limit that splits evenly?")


def check_most_at_once(answer: Any, *, stories: int, story_limit: int,
                       global_limit: int) -> Verdict:
    """Exercise: the most pictures drawn at once, over every worker together, when
    ``stories`` stories of ``story_limit`` each share one ``global_limit``."""
    expected = min(global_limit, stories * story_limit)
    if (v := _missing(answer)) is not None:
        return v
    value = _number(answer)
    if value is None:
        return Verdict(False, f"answer with a number of pictures, not {answer!r}")
    if value == expected:
        binds = ("the global limit binds" if global_limit <= stories * story_limit
                 else "the stories' own limits bind")
        return Verdict(True, f"{expected}: the smaller of {global_limit} and {stories} x "
                             f"{story_limit}; here {binds}")
    if value == stories * story_limit:
        return Verdict(False, "every story may draw that many, but the global limit caps the sum")
    return Verdict(False, "compare the global limit with what all the stories allow together")


def check_bound(answer: Any, *, stories: int, images: int, story_limit: int,
                global_limit: int, image_seconds: float = 10.0) -> Verdict:
    """Exercise: the ideal makespan (the bound) for one pair of limits."""
    from storylab.sweep import ideal_makespan

    expected = ideal_makespan(stories, images, story_limit, global_limit, image_seconds)
    if (v := _missing(answer)) is not None:
        return v
    value = _number(answer)
    if value is None:
        return Verdict(False, f"answer with a number of model seconds, not {answer!r}")
    if abs(value - expected) < 1e-6:
        return Verdict(True, f"{expected:g} model s: the larger of the two round counts wins")
    from storylab.tutorial._exercises import _rounds_hint

    hint = _rounds_hint(value, expected, image_seconds)
    return Verdict(False, f"{value:g} is not it" + (f": {hint}" if hint else
                                                    "; count the rounds of each limit"))


# -- figures with their words ----------------------------------------------------------
SUMMARY_PREFIX = "In words: "


def show_figure(fig: Any, summary: str | None = None) -> None:
    """Show ``fig`` now, then one line saying what it shows (its text equivalent).

    The line comes straight under the picture in every output (JupyterLab,
    papermill, an HTML export), so a reader who cannot see the chart, or
    skims, reads the same claim. ``summary`` is the lesson's own sentence,
    built from the numbers the chart is drawn from (never typed in); without
    it, the figure's own summary from :mod:`storylab.viz` is used.
    """
    if summary is None:
        summary = getattr(fig, "storylab_summary", None)
        if summary is None:
            raise ValueError("this figure carries no summary of its own; pass summary=")
    if not isinstance(summary, str) or not summary.strip():
        raise ValueError("summary must be a non-empty sentence saying what the figure shows")
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig)
    plt.close(fig)
    print(SUMMARY_PREFIX + " ".join(summary.split()))


# -- one progress display for stories run elsewhere ------------------------------------------
def cluster_progress(panel: Any, graph_path: str | os.PathLike) -> Any:
    """An ``on_story`` callback for :func:`run_stories_on_cluster` and
    :func:`gather_stories` that shows each story in ``panel`` (a
    :class:`~storylab.viz.ProgressPanel`, the display every notebook uses).

    A worker process cannot update a widget in this kernel, but it writes
    every envelope of its story to the shared graph. When a story comes
    back, its stored progress log is replayed into the panel, so its bar
    and rows end exactly as they would have for a story run here.
    """
    # A postgresql:// URL stays a string (a Path would fold its "//").
    path = graph_path if isinstance(graph_path, str) and "://" in graph_path else Path(graph_path)

    def on_story(story: Any) -> None:
        with EntityGraph.open(path, create=False, read_only=True) as graph:
            for envelope in graph.progress(story.pipeline_id):
                panel.update(envelope, root=story.pipeline_id)
        panel.note(f"finished by worker process {story.pid}", root=story.pipeline_id,
                   label=story.topic)

    return on_story


# -- notebook 2's replay opens at a refill: a freed unit starting the next picture --
@dataclass(frozen=True, slots=True)
class Refill:
    """When ``label`` started, and what had happened around it by then."""

    at: float  # model seconds, on the charts' time axis
    ended_before: tuple[str, ...]  # the tasks that had ended by then
    next_start: float | None  # when the task after ``label`` started (None: there is none)

    def words(self, short: str, next_short: str) -> str:
        """One line: how many of the first tasks had ended, and whether the next waited."""
        line = (f"at {self.at:.1f} model s, when {short} starts, {len(self.ended_before)} of "
                f"the first three had ended; {next_short} ")
        if self.next_start is None:
            return line + "does not exist"
        if self.next_start <= self.at:
            return line + "started at the same moment"
        return line + f"waits for the next unit, until {self.next_start:.1f}"


def refill_moment(trace: Trace, label: str = "image-{{IMAGE_4}}",
                  next_label: str = "image-{{IMAGE_5}}") -> Refill:
    """The start of ``label`` in ``trace``: the first picture a freed unit let in."""
    from storylab.viz import timeline_lanes

    lanes = {lane.label: lane for lane in timeline_lanes(trace)}
    if label not in lanes:
        raise ValueError(f"no task {label!r} in the trace; it has {sorted(lanes)}")
    at = lanes[label].run[0]
    ended = tuple(name for name, lane in lanes.items() if lane.run[1] <= at)
    after = lanes.get(next_label)
    return Refill(at, ended, after.run[0] if after else None)
