"""Orientation for notebook 00: the big picture as a labelled diagram, the glossary and
the table from the chapter's TypeScript names to storylab's Python names.

The diagram is an SVG written here, box by box, so it needs no plotting
library, scales in any browser, keeps its words selectable and searchable,
and carries its own title and description for screen readers.
"""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass
from typing import Any

__all__ = [
    "API_TABLE",
    "CHAPTER",
    "GLOSSARY",
    "ApiRow",
    "api_markdown",
    "api_table",
    "check_python_form",
    "check_python_name",
    "check_return_form",
    "glossary_markdown",
    "glossary_myst",
    "glossary_table",
    "overview_diagram",
    "overview_text",
]

CHAPTER = "Part 5: Parallel Image Generation with Entity-Based Parallelism"

# The one source of the glossary and of the chapter-to-Python table: notebook 00
# shows them (glossary_table, api_table) and the book's pages docs/glossary.md and
# docs/api_map.md hold them as rendered by glossary_myst and api_markdown (written
# there by docs/reference_pages.py, checked by tests/test_tutorial_reference.py).
# Term -> meaning, in Markdown, in alphabetical order.
GLOSSARY: dict[str, str] = {
    "capacity source": "a counter of units with a limit (`CapacitySource`), optionally under "
                       "a parent. Sources form a tree (3 per story under 10 in total) and a "
                       "unit is taken at every level up to the root at once, or not at all; "
                       "giving it back frees every level",
    "capacity tree": "capacity sources linked parent to child. A task runs only while it holds "
                     "a unit at its own level and at each level above",
    "child entity": "an entity created by another one (its parent) through `append_call`, "
                    "`append_or_retrieve_call` or `parallel_calls`. Its name is unique under "
                    "the parent, so asking again finds the same child",
    "completion order": "the order in which tasks finish, which is the order the runner "
                        "reports them in, whatever the order they were started in",
    "entity": "a persisted unit of work: a node in the entity graph with a name, a type, its "
              "input, a status, progress and, once done, its output. In storylab, a subclass "
              "of `RunnableEntity` whose `async def run_impl(self)` yields envelopes",
    "entity graph": "the store of every entity and of the edges from parents to children "
                    "(`EntityGraph`, one SQLite file). It outlives the process, which is what "
                    "makes resuming possible",
    "envelope": "a small record an entity or the runner yields while working. An entity "
                "yields `STATUS`, `VALUE` and `ERROR` envelopes (`Envelope`); the runner "
                "yields one `TaskProgressEnvelope` per streamed item (`INTERMEDIATE`) and per "
                "finished task (`FINAL` or `ERROR`)",
    "fair and FIFO": "the two ways a capacity tree can hand out a freed unit. Fair (the "
                     "default): among the waiters that could run now, the one whose story "
                     "(and every level above it) holds the fewest units goes first, and "
                     "nobody waits behind a story held back only by its own limit. FIFO: "
                     "strict arrival order, so while the oldest waiter cannot run nobody "
                     "behind it runs either (head-of-line blocking)",
    "global limit": "the root capacity shared by every story of a process (10 in the "
                    "tutorial). Notebook 8 makes it hold across several processes, each "
                    "holding a leased share of it",
    "idempotent creation": "creating a child under a deterministic name, so that a second "
                           "attempt (after a crash, or in a second process) gets the existing "
                           "child back instead of making a duplicate",
    "lease": "a claim on a running entity (or on a process's share of the global limit) that "
             "its owner must keep renewing; when the owner dies, the claim lapses and another "
             "process may take over",
    "makespan": "the time from a run's first request for a unit to the end of its last task: "
                "the bracket under every timeline and the number in its title",
    "model second": "a second of a hosted model's time, the tutorial's unit of time. The "
                    "simulated model sleeps `time_scale` wall seconds for each, so runs are "
                    "quick but the charts read as they would against the real service",
    "per-story limit": "the capacity of one story's source (3 in the tutorial): how many of "
                       "its pictures may be drawn at once",
    "placeholder": "the `{{IMAGE_n}}` marker the writer puts in the story text where a "
                   "picture belongs (`{{IMAGE_1}}` ... `{{IMAGE_5}}`). Each picture entity is "
                   "named after its marker (`image-{{IMAGE_2}}`), and the charts shorten that "
                   "name to `image-2`",
    "progress panel": "the live view of a run's entities (`ProgressPanel`): a widget in "
                      "Jupyter, lines of text in a terminal. An exported notebook (or the "
                      "web book made from these notebooks) shows a still snapshot of its last "
                      "state",
    "resume": "running a stopped pipeline again: finished children are read back from the "
              "graph, unfinished ones are run, nothing finished is done twice",
    "runner": "the task pool runner, `HierarchicalTaskPoolRunner`: takes a unit, pulls the "
              "next task from a source, runs the tasks concurrently and streams their "
              "results in completion order, each task's failure kept from the others",
    "source": "where the runner pulls tasks from, one at a time. `SourceFromIterable` is lazy: "
              "it is pulled only once a unit is held, so each child is created when it can "
              "start rather than all up front",
    "stale": "an entity stored `InProgress` whose process is gone; a resumed run resets it "
             "and runs it again",
    "trace": "the record of every scheduling event of a run (`Trace`): asked, waited, "
             "granted, started, ended, released, and which level held a task back. Every "
             "chart and number of the series is read from it",
    "unit": "one permission to run one task now; taken from a capacity source before the "
            "task starts, given back when it ends",
    "utilisation": "the share of the available capacity that was in use over a run",
}


@dataclass(frozen=True, slots=True)
class ApiRow:
    """A name of the chapter, its storylab spelling (both Markdown) and the notebooks whose
    code uses it (none: only the package uses it)."""

    typescript: str
    python: str
    notebooks: tuple[int, ...]
    #: A regular expression that finds the Python of this row in a notebook's code cells.
    #: ``notebooks`` must be exactly the notebooks it finds (a test checks it), so the
    #: table's "where" column cannot send a reader to a notebook without the name.
    shown_by: str = ""
    #: For a row that names several things used in different notebooks: one
    #: ``(label, pattern, notebooks)`` per thing, so the "where" column says which
    #: notebook has which (``notebooks`` is then their union; a test checks each).
    parts: tuple[tuple[str, str, tuple[int, ...]], ...] = ()

    @property
    def python_name(self) -> str:
        """The first code span of :attr:`python`: the name itself, without the prose
        (empty when the row names no Python at all)."""
        spans = self.python.split("`")
        return spans[1] if len(spans) > 2 else ""


API_TABLE: tuple[ApiRow, ...] = (
    ApiRow("`class ImageGenerationEntity extends RunnableEntity`",
           "`class ImageGenerationEntity(RunnableEntity)` (`storylab.story.entities`)",
           (2, 5, 9), r"class \w+\(RunnableEntity\)"),
    ApiRow("`protected async *run_impl()`", "`async def run_impl(self)`, an async generator",
           (2, 5, 9), r"def run_impl\("),
    ApiRow("`@EntityMixin({specificType: ...})` and registering the entity",
           "nothing to call: subclassing `RunnableEntity` registers the class under its name "
           "(`type_name=` in the class statement picks another); "
           "`storylab.entities.registered_types()` lists them",
           (2, 5, 9), r"class \w+\(RunnableEntity\)"),
    ApiRow("`(await this.get_dto()).data`", "`self.data`", (2, 5, 9), r"self\.data\b"),
    ApiRow("`await this.updateEntityData({...})`",
           "`await self.update_entity_data(key=value, ...)`", (), r"update_entity_data\("),
    ApiRow("`yield await this.createStatusEnvelope('RUNNING', msg)`",
           "`yield self.status(\"RUNNING\", msg)` (also `self.status_envelope(...)`)", (2, 5),
           r"self\.status(_envelope)?\("),
    ApiRow("`return result` at the end of `run_impl`",
           "`yield Return(result)` (a Python async generator cannot `return` a value)",
           (0, 2, 5, 9), r"\bReturn\(|from storylab import Return\b"),
    ApiRow("`this.appendOrRetrieveCall(Cls, name, data)`",
           "`self.append_or_retrieve_call(Cls, name, data)`", (2,),
           r"\bappend_or_retrieve_call\("),
    ApiRow("`this.appendCall(Cls, name, data)`",
           "`self.append_call(Cls, name, data)` (refuses a name already used)", (2,),
           r"\bappend_call\("),
    ApiRow("`this.parallelCalls(Cls, items)`",
           "`self.parallel_calls(Cls, items)`, items of `{\"name\": ..., \"data\": {...}}`; "
           "each child is created when the runner pulls it", (2,), r"\bparallel_calls\("),
    ApiRow("`new SourceFromIterable(iterable)`",
           "`SourceFromIterable(iterable)` (lazy: pulled only once a unit is held)", (2, 9),
           r"\bSourceFromIterable\b"),
    ApiRow("`new SourceBufferObj(tasks)`",
           "`SourceBufferObj(tasks)` (every task made up front)", (2, 5), r"\bSourceBufferObj\("),
    ApiRow("`new CapacitySource(10)`", "`CapacitySource(10)` (a root: no parent)", (2, 3, 5, 6),
           r"\bCapacitySource\((?![^)]*parent)"),
    ApiRow("`new CapacitySource(3, GLOBAL_IMAGE_CAPACITY)`",
           "`CapacitySource(3, parent, name=\"story:...\")`", (3, 6),
           r"\bCapacitySource\([^)]*parent"),
    ApiRow("`await capacity.acquire()`, `capacity.release()`",
           "`await capacity.acquire()`, `capacity.release()` (a unit at every level, or none)",
           (3,), r"\.acquire\("),
    ApiRow("`GLOBAL_IMAGE_CAPACITY` (a module constant of 10)",
           "`storylab.story.settings.global_image_capacity(10)`, shared by every story of the "
           "process (notebook 8 shares it between processes)", (),
           r"\bglobal_image_capacity\("),
    ApiRow("`new HierarchicalTaskPoolRunner(name, source, capacity)`",
           "`HierarchicalTaskPoolRunner(name, source, capacity)`", (2, 5, 9),
           r"\bHierarchicalTaskPoolRunner\b"),
    ApiRow("`for await (const envelope of runner.runTasks())`",
           "`async with runner.run_tasks() as envelopes:` then `async for envelope in "
           "envelopes:` (the `async with` cancels what is still running when you leave)",
           (2, 5), r"\.run_tasks\("),
    ApiRow("`envelope.type === 'FINAL'`", "`envelope.type is TaskEventType.FINAL`", (2, 5),
           r"TaskEventType\.FINAL"),
    ApiRow("`envelope.type === 'ERROR'`, `'INTERMEDIATE'`",
           "`envelope.type is TaskEventType.ERROR`, `TaskEventType.INTERMEDIATE`", (5,),
           r"TaskEventType\.(ERROR|INTERMEDIATE)",
           parts=(("`.ERROR`", r"TaskEventType\.ERROR\b", (5,)),
                  ("`.INTERMEDIATE`", r"TaskEventType\.INTERMEDIATE\b", ()))),
    ApiRow("`envelope.value`, `envelope.error`",
           "`envelope.value`, `envelope.error` (and `envelope.task_id`, 1-based in start "
           "order)", (2, 5), r"envelope\.(value|error)|\.task_id\b",
           parts=(("`.value`", r"envelope\.value\b", (2, 5)),
                  ("`.error`", r"envelope\.error\b", (5,)),
                  ("`.task_id`", r"\.task_id\b", (5,)))),
    ApiRow("`brokerClient.generateImage({...})`",
           "the configured image backend, `SimulatedImageBackend` offline or "
           "`HttpImageBackend` over HTTP; the picture entity calls it, in the package's own "
           "code, as `await current_settings().images.generate(ImageRequest(...))`", (5, 6, 8),
           r"SimulatedImageBackend|HttpImageBackend",
           parts=(("`SimulatedImageBackend`", r"\bSimulatedImageBackend\b", (5, 6, 8)),
                  ("`HttpImageBackend`", r"\bHttpImageBackend\b", (6,)))),
    ApiRow("`ImageService.generateImage()` (removed by the chapter)",
           "no service class either: the entity is the unit of work", (), ""),
    ApiRow("blob storage, `getBlob(objectKey)`",
           "the graph's blob store: `graph.blobs.put(data, content_type)`, "
           "`graph.blobs.get(key)`", (), r"\.blobs\.(put|get)\("),
    ApiRow("`GeneratedImageResult`", "`storylab.story.models.GeneratedImageResult`", (),
           r"\bGeneratedImageResult\b"),
    ApiRow("`StoryPipelineEntity`, started per request",
           "`StoryPipelineEntity`, created with `create_story(graph, topic)` and run by "
           "`generate_story(...)`; `storylab run` from the shell", (4, 5, 6),
           r"\b(create_story|generate_story)\(|storylab run"),
    ApiRow("the entity graph service",
           "`EntityGraph.open(\"graph.sqlite\")`: one SQLite file, also read by "
           "`storylab eg tree <id>`", (2, 4, 5, 6, 8), r"\bEntityGraph\.open\(|eg tree",
           parts=(("`EntityGraph.open`", r"\bEntityGraph\.open\(", (6, 8)),
                  ("`storylab eg tree`", r"\beg tree\b", (2, 4, 5)))),
)

# The rows whose Python differs from the chapter in kind, not only in spelling: a piece
# of the chapter's column that finds the row -> what Python writes instead, and why.
OTHER_KIND: dict[str, str] = {
    "return result": "a Python async generator cannot `return` a value, so the entity yields "
                     "one more item, `Return(result)`, and the runner reads the result from it",
    "for await": "Python splits the loop in two: `async with` opens the stream and, however "
                 "you leave it, cancels what still runs and gives the units back; `async for` "
                 "reads it",
    "envelope.type === 'FINAL'": "a string compared with `===` becomes a member of the "
                                 "`TaskEventType` enum compared with `is`, so a typo fails at "
                                 "once instead of never matching",
    "envelope.type === 'ERROR'": "strings become members of the `TaskEventType` enum, "
                                 "compared with `is`",
}


# Rows that look like a change of kind and are not: what Python does there instead.
SAME_KIND: dict[str, str] = {
    "@EntityMixin": "Python drops the decorator, since defining the subclass of "
                    "RunnableEntity registers it: shorter, but nothing new to write",
    "get_dto": "Python drops the call and its await, since the data is an attribute, "
               "self.data: shorter, but nothing new to write",
    "GLOBAL_IMAGE_CAPACITY` (a module": "the module constant becomes a call, "
                                        "global_image_capacity(10), that returns the same "
                                        "shared CapacitySource of 10: where the chapter names "
                                        "the constant you write the call, and nothing else "
                                        "changes (no new statement or keyword, the same kind "
                                        "of value)",
    "updateEntityData": "the same call, spelt update_entity_data in snake_case; the object "
                        "literal ({...}) becomes keyword arguments (key=value, ...): another "
                        "way to pass the same values, no new statement or keyword",
    "ImageService": "Python drops the service class, since the entity itself is the unit of "
                    "work: shorter, but nothing new to write",
}


# Okabe-Ito colours, one per layer, with the layer's name always written in the box.
_FILL = {"request": "#F0E442", "entity": "#56B4E9", "runner": "#E69F00",
         "capacity": "#009E73", "graph": "#CC79A7"}

_BOXES: list[tuple[str, str, float, float, float, float, str]] = [
    # key, layer, x, y, width, height, label (\n separates lines)
    ("request", "request", 10, 50, 140, 60, "request\n\"a shy hedgehog\""),
    ("pipeline", "entity", 240, 50, 180, 60, "pipeline entity\nStoryPipelineEntity"),
    ("runner", "runner", 510, 50, 210, 60, "runner\nHierarchicalTaskPoolRunner"),
    ("global", "capacity", 790, 25, 170, 44, "global source: 10"),
    ("story", "capacity", 790, 115, 170, 44, "story source: 3"),
    ("children", "entity", 240, 210, 480, 60, "children: one ImageGenerationEntity per "
     "picture\nimage-{{IMAGE_1}} ... image-{{IMAGE_5}}"),
    ("graph", "graph", 240, 330, 480, 60, "entity graph (SQLite file)\nevery entity: name, "
     "status, input, output, error"),
]

_ARROWS: list[tuple[str, str, str]] = [
    ("request", "pipeline", "create_story"),
    ("pipeline", "runner", "parallel_calls"),
    ("runner", "story", "acquire"),
    ("runner", "children", "starts one per unit"),
    ("children", "graph", "stored by name"),
]

# Drawn dashed: the pipeline entity is stored too, beside its children. The line leaves
# the pipeline box on its left, below the request's arrow, runs down the diagram's left
# margin and enters the graph box from the left: (x, y) points, then the label and where it goes.
_STORED_PATH = ((240, 100), (212, 100), (212, 360), (240, 360))
_STORED_LABEL = ("stored", 205, 240)

_CAPTION = ("A request becomes a pipeline entity; its picture stage hands the runner a lazy "
            "source of child entities; the runner takes a unit from the capacity tree (a story "
            "source of 3 under a global source of 10) before it creates and starts each child; "
            "the pipeline entity and every child are stored in the entity graph (the dashed arrow "
            "and the one below the children), so a rerun finds finished work by name.")


def overview_text() -> str:
    """The diagram in one paragraph, for readers who cannot see it."""
    return _CAPTION


def _centre(box: tuple) -> tuple[float, float]:
    _, _, x, y, w, h, _ = box
    return x + w / 2, y + h / 2


def _edge(box: tuple, towards: tuple[float, float]) -> tuple[float, float]:
    """Where the line from the box's centre towards a point leaves the box."""
    _, _, x, y, w, h, _ = box
    cx, cy = _centre(box)
    dx, dy = towards[0] - cx, towards[1] - cy
    inf = float("inf")
    scale = min((w / 2) / abs(dx) if dx else inf, (h / 2) / abs(dy) if dy else inf)
    return cx + dx * scale, cy + dy * scale


def overview_svg() -> str:
    """The big picture as SVG text (title, description, boxes, labelled arrows)."""
    boxes = {b[0]: b for b in _BOXES}
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 980 410" width="100%" '
        'style="max-width:980px;height:auto" role="img" '
        'aria-labelledby="storylab-ov-title storylab-ov-desc" '
        'font-family="DejaVu Sans, sans-serif" font-size="14">',
        '<title id="storylab-ov-title">storylab: from a request to the entity graph</title>',
        f'<desc id="storylab-ov-desc">{html.escape(_CAPTION)}</desc>',
        '<defs><marker id="storylab-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
        '<rect x="772" y="10" width="206" height="166" rx="8" fill="none" stroke="#009E73" '
        'stroke-width="2" stroke-dasharray="6 4"/>',
        '<text x="875" y="196" text-anchor="middle" fill="#333">capacity tree</text>',
        '<line x1="875" y1="115" x2="875" y2="69" stroke="#333" stroke-width="1.5" '
        'marker-end="url(#storylab-arrow)"/>',
        '<text x="882" y="97" font-size="12" fill="#333">parent</text>',
    ]
    points = " ".join(f"{x},{y}" for x, y in _STORED_PATH)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#333" stroke-width="1.5" '
                 'stroke-dasharray="6 4" marker-end="url(#storylab-arrow)"/>')
    word, wx, wy = _STORED_LABEL
    labels = [f'<text x="{wx}" y="{wy}" text-anchor="end" font-size="13" fill="#222" '
              f'stroke="white" stroke-width="4" paint-order="stroke">{word}</text>']
    for key, src, label in _ARROWS:
        a, b = boxes[key], boxes[src]
        x1, y1 = _edge(a, _centre(b))
        x2, y2 = _edge(b, _centre(a))
        parts.append(f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" '
                     'stroke="#333" stroke-width="1.5" marker-end="url(#storylab-arrow)"/>')
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        anchor, dx, dy = ("middle", 0, -8) if abs(y2 - y1) < 40 else ("start", 8, 4)
        labels.append(f'<text x="{mx + dx:.0f}" y="{my + dy:.0f}" text-anchor="{anchor}" '
                      'font-size="13" fill="#222" stroke="white" stroke-width="4" '
                      f'paint-order="stroke">{html.escape(label)}</text>')
    for _key, layer, x, y, w, h, label in _BOXES:
        parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" '
                     f'fill="{_FILL[layer]}" stroke="#333"/>')
        lines = label.split("\n")
        for i, line in enumerate(lines):
            ty = y + h / 2 + (i - (len(lines) - 1) / 2) * 18 + 5
            weight = ' font-weight="bold"' if i == 0 else ""
            parts.append(f'<text x="{x + w / 2}" y="{ty:.0f}" text-anchor="middle"{weight}>'
                         f'{html.escape(line)}</text>')
    parts += labels
    parts.append("</svg>")
    return "\n".join(parts)


def overview_diagram() -> Any:
    """The big picture, displayed inline (an :class:`IPython.display.SVG`)."""
    from IPython.display import SVG

    return SVG(overview_svg())


def _markdown(text: str) -> Any:
    from IPython.display import Markdown

    return Markdown(text)


def _cell(markdown: str) -> str:
    return markdown.replace("|", "\\|")


def _notebooks(numbers: tuple[int, ...]) -> str:
    if not numbers:
        return ""
    words = [str(n) for n in numbers]
    if len(words) == 1:
        return f"notebook {words[0]}"
    return f"notebooks {', '.join(words[:-1])} and {words[-1]}"


def glossary_markdown() -> str:
    """The glossary as a Markdown table (term, meaning): what notebook 00 shows."""
    rows = "\n".join(
        f"| **{term}** | {_cell(meaning[0].upper() + meaning[1:])}. |"
        for term, meaning in GLOSSARY.items()
    )
    return "| term | meaning |\n|---|---|\n" + rows


def glossary_myst(width: int = 88) -> str:
    """The glossary as a MyST ``{glossary}`` block: what the book's glossary page holds."""
    out = ["```{glossary}"]
    for term, meaning in GLOSSARY.items():
        text = f"{meaning[0].upper() + meaning[1:]}."
        out += [term, *textwrap.wrap(text, width, initial_indent="  ", subsequent_indent="  ",
                                     break_on_hyphens=False, break_long_words=False), ""]
    out[-1] = "```"
    return "\n".join(out)


def _where(row: ApiRow) -> str:
    """The "where" cell: the notebooks, or for a row of several names, each name's."""
    if not row.parts:
        return _notebooks(row.notebooks)
    package_only = "only the package's own code"
    return "; ".join(f"{label}: {_notebooks(nbs) or package_only}" for label, _, nbs in row.parts)


def api_markdown() -> str:
    """The chapter's names next to storylab's, as a Markdown table (notebook 00 and the book)."""
    rows = "\n".join(
        f"| {_cell(r.typescript)} | {_cell(r.python)} | {_where(r)} |"
        for r in API_TABLE
    )
    return "| in the chapter (TypeScript) | in storylab (Python) | where |\n|---|---|---|\n" + rows


def glossary_table() -> Any:
    """The glossary, displayed as a Markdown table (term, meaning)."""
    return _markdown(glossary_markdown())


def api_table() -> Any:
    """The chapter's TypeScript names next to storylab's Python names, displayed as a table."""
    return _markdown(api_markdown())


def _bare_name(code: str) -> str:
    """``"self.parallel_calls(Cls, items)"`` (or in backticks) -> ``"parallel_calls"``."""
    name = code.replace("`", "").strip().split("(")[0].strip()
    for prefix in ("await ", "self.", "this."):
        name = name.removeprefix(prefix)
    return name


def _snake_case(name: str) -> str:
    """``"parallelCalls"`` -> ``"parallel_calls"``."""
    import re

    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def check_python_name(chapter_name: str, answer: Any) -> Any:
    """Exercise: the Python spelling, in storylab, of a name used in the chapter.

    A wrong answer is told what is wrong with it: the chapter's own spelling,
    the right words spelt another way, a near miss, the name of another row
    of the table, or a name that is not the one asked for.
    """
    import difflib

    from storylab.tutorial._verdict import Verdict, missing

    rows = [row for row in API_TABLE if chapter_name in row.typescript]
    if not rows:
        raise ValueError(f"{chapter_name!r} is not in the API table")
    expected = rows[0].python_name
    row_ts = rows[0].typescript
    if (v := missing(answer)) is not None:
        return v
    if not isinstance(answer, str):
        return Verdict(False, f"answer with the name as a string, in quotes, not {answer!r}")
    want, given = _bare_name(expected), _bare_name(answer)
    if given == want:
        return Verdict(True, f"{chapter_name} is {expected} in storylab")
    look_up = (f"find {chapter_name} in the chapter's (TypeScript) column of the table above "
               "and read the Python column next to it")
    if given == _bare_name(row_ts):
        return Verdict(False, f"{answer!r} is the chapter's TypeScript spelling; storylab is "
                              f"Python, which writes method names in snake_case: {look_up}")
    squash = str.maketrans({"_": "", "-": "", " ": ""})
    if given.lower().translate(squash) == want.replace("_", ""):
        return Verdict(False, f"{answer!r} has the right words, spelt differently: Python "
                              "method names are lower case with _ between the words "
                              "(snake_case)")
    others = {_bare_name(row.python_name): row.typescript.replace("`", "")
              for row in API_TABLE if row.python_name}
    if given in others:
        return Verdict(False, f"{answer!r} is in the table, but it is the Python name of "
                              f"{others[given]!r}, not of {chapter_name!r}: {look_up}")
    if difflib.SequenceMatcher(None, given.lower(), want).ratio() >= 0.8:
        return Verdict(False, f"{answer!r} is close, but a name must match letter for letter: "
                              f"{look_up}")
    if _snake_case(given) == given and given.isidentifier():
        return Verdict(False, f"{answer!r} is spelt the Python way, but it is not the name "
                              f"storylab gives to {chapter_name}: {look_up}")
    return Verdict(False, f"{answer!r} is not the name storylab gives to {chapter_name}, and "
                          "Python spells method names in snake_case (lower case, _ between "
                          f"words): {look_up}")


def _plain(text: str, *, case: bool = False) -> str:
    words = " ".join(text.replace("`", "").split())
    return words if case else words.lower()


def check_python_form(answer: Any) -> Any:
    """Exercise: a row of the API table whose Python differs from the chapter in kind
    (another statement, keyword or construct), not only in spelling.

    ``answer`` is a piece of the chapter's (left) column that finds one row. A
    wrong answer is told what its row does change (the spelling, nothing, a
    module) and what to look for instead.
    """
    from storylab.tutorial._verdict import Verdict, missing

    if (v := missing(answer)) is not None:
        return v
    if not isinstance(answer, str) or not answer.strip():
        return Verdict(False, "answer with a piece of the chapter's column as a string, in "
                              f"quotes, such as \"parallelCalls\", not {answer!r}")
    given = _plain(answer)
    rows = [row for row in API_TABLE if given in _plain(row.typescript)]
    exact = _plain(answer, case=True)
    if not any(exact in _plain(row.typescript, case=True) for row in rows) and any(
            exact in _plain(row.python, case=True) for row in API_TABLE):
        rows = []  # "Return" is Python's spelling, whatever the chapter's "return" says
    if not rows:
        if any(given in _plain(row.python) for row in API_TABLE):
            return Verdict(False, f"{answer!r} is in the Python (middle) column: answer with the "
                                  "chapter's name of the row, from the left column")
        return Verdict(False, f"{answer!r} is not in the chapter's (left) column of the table: "
                              "copy a few words of one of its names")
    kinds = {key: why for key, why in OTHER_KIND.items()
             if any(_plain(key) in _plain(row.typescript) for row in rows)}
    expected = ("a row where Python needs something the chapter's code does not have: "
                "another statement, a keyword or another kind of value (read the words of "
                "the Python column, not only its names)")
    if len(rows) > 1 and kinds and len(kinds) < len(rows):
        return Verdict(False, f"{answer!r} is in {len(rows)} rows of the table: copy more of "
                              "the name, so that it finds one row")
    if kinds:
        key, why = next(iter(kinds.items()))
        row = next(row for row in rows if _plain(key) in _plain(row.typescript))
        return Verdict(True, f"{row.typescript}: {why}")
    if len(rows) > 1:  # several rows, none of them one of the changes of kind
        whys = "; ".join(_same_kind_why(row) for row in rows)
        return Verdict(False, f"{answer!r} is in {len(rows)} rows of the table, and none of "
                              f"them changes the kind of code: {whys}. Wanted: {expected}")
    return Verdict(False, f"{_same_kind_why(rows[0])}. Wanted: {expected}")


def _same_kind_why(row: ApiRow) -> str:
    """Why ``row`` of the API table changes no kind of code, in one clause."""
    chapter = _bare_name(row.typescript.split("`")[1] if "`" in row.typescript
                         else row.typescript)
    python = _bare_name(row.python_name)
    shown = row.typescript.replace("`", "")
    for key, why in SAME_KIND.items():
        if _plain(key) in _plain(row.typescript):
            return f"{shown}: {why}"
    if _plain(row.typescript.split(" (")[0]) == _plain(row.python.split(" (")[0]):
        return f"{shown} reads the same in Python"
    if python and _snake_case(chapter) == python:
        return (f"{chapter} becomes {python}: the same call with the same arguments, only "
                "spelt in snake_case")
    return (f"{shown} keeps its kind in Python: the same class, call or value, named or "
            "placed differently")


# Exercise 2 of notebook 00: the box of the diagram that makes a restart cheap. Words that
# find each box in an answer -> why that box is not the one (None: the right box).
_RESTART_BOXES: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("entity graph", ("graph", "sqlite", "database"), None),
    ("children", ("child", "imagegenerationentity", "picture"),
     "the children are the work a restart must not pay for twice, but they outlive the "
     "process only because they are stored: which box stores them?"),
    ("pipeline entity", ("pipeline", "storypipelineentity"),
     "the pipeline is found again by its name, but only because it is stored somewhere: "
     "follow the dashed arrow"),
    ("runner", ("runner", "hierarchicaltaskpoolrunner"),
     "the runner starts children a few at a time; it lives in the process and keeps nothing "
     "once the process dies"),
    ("capacity tree", ("capacity", "global", "story source", "source"),
     "the capacity sources decide how many pictures run at once; they live in memory; a "
     "restart builds them afresh and they remember nothing"),
    ("request", ("request", "topic", "hedgehog"),
     "the request is asked again after a restart; what makes that cheap is what it finds"),
)


def check_restart_box(answer: Any) -> Any:
    """Exercise: the name of the diagram's box that makes a restart cheap (the entity graph).

    A wrong box is told what it does instead, and why that does not survive a crash.
    """
    from storylab.tutorial._verdict import Verdict, missing

    if (v := missing(answer)) is not None:
        return v
    if not isinstance(answer, str) or not answer.strip():
        return Verdict(False, f"answer with the name of a box of the diagram as a string, in "
                              f"quotes, such as \"runner\", not {answer!r}")
    given = _plain(answer).replace("_", " ")
    for box, words, why in _RESTART_BOXES:
        if any(word in given for word in words):
            if why is None:
                return Verdict(True, f"the {box}: every entity is stored there under a name "
                                     "made from the request, with its status and output, so a "
                                     "restarted run finds the finished pictures instead of "
                                     "paying for them again")
            return Verdict(False, f"{answer!r} is the {box} box: {why}")
    boxes = ", ".join(box for box, _, _ in sorted(_RESTART_BOXES, key=lambda b: b[0]))
    return Verdict(False, f"{answer!r} is not a box of the diagram; its boxes are {boxes}")


def _drive(agen: Any) -> list[Any]:
    """Every item an async generator yields, read without an event loop (it must not
    really wait for anything: a notebook cell already runs inside a loop)."""
    items: list[Any] = []
    while True:
        step = agen.__anext__()
        try:
            step.send(None)
        except StopIteration as done:
            items.append(done.value)
            continue
        except StopAsyncIteration:
            return items
        step.close()
        raise RuntimeError("it waited for something (an await): this exercise needs none")


def check_return_form(fn: Any) -> Any:
    """Exercise: the Python form of the chapter's ``return result`` at the end of
    ``run_impl``. ``fn(pictures)`` must be an async generator that yields one progress
    report per picture and ends by yielding ``Return(len(pictures))``.

    Run on two lists of pictures; a wrong answer is told what it yielded instead
    (nothing, a bare number, the wrong count, something after the ``Return``, or
    no progress report for each picture before it).
    """
    import inspect

    from storylab.entities.run import Return
    from storylab.tutorial._verdict import Verdict, missing

    if (v := missing(fn)) is not None:
        return v
    if not callable(fn):
        return Verdict(False, f"pass your function itself, count_pictures, not {fn!r}")
    if not inspect.isasyncgenfunction(fn):
        kind = "a coroutine (async def with no yield)" if inspect.iscoroutinefunction(fn) \
            else "a plain function"
        return Verdict(False, f"{getattr(fn, '__name__', 'it')} is {kind}; run_impl is an async "
                              "generator: keep async def and the yield of each progress line")
    for pictures in (["owl", "fox", "whale"], ["moth", "hare"]):
        try:
            items = _drive(fn(list(pictures)))
        except Exception as exc:  # the learner's code: say what it raised
            if "event loop" in str(exc):
                exc = RuntimeError("it waited for something (an await): this exercise needs none")
            return Verdict(False, f"calling it on {pictures} raised {type(exc).__name__}: {exc}")
        ends = [i for i, item in enumerate(items) if isinstance(item, Return)]
        if not ends:
            if len(pictures) in items:
                return Verdict(False, f"it yields {len(pictures)} as a plain value, which the "
                                      "runner would read as one more progress report, not as "
                                      "the result: wrap the value in Return(...)")
            return Verdict(False, f"on {pictures} it yielded {items} and no Return: the "
                                  "result never reaches the runner. End with one more yield "
                                  "that hands the count back the storylab way (the table's "
                                  "row for 'return result')")
        if ends[0] != len(items) - 1:
            return Verdict(False, f"it yielded {items[ends[0] + 1:]} after the Return; a Return "
                                  "ends run_impl, so it must be the last item")
        reports = items[:ends[0]]
        drawn = [p for p in pictures if any(str(p) in str(item) for item in reports)]
        if len(reports) < len(pictures) or drawn != list(pictures):
            return Verdict(False, f"on {pictures} it yielded {reports} before the Return: the "
                                  "progress report of each picture is gone. Keep the loop and "
                                  "its yield as they were; the Return is one more line, after "
                                  "the loop")
        value = items[ends[0]].value
        if value != len(pictures):
            return Verdict(False, f"on {len(pictures)} pictures it handed back Return({value!r}); "
                                  "wanted the number of pictures, len(pictures)")
    return Verdict(True, "the count comes back as a yielded Return(...), the last item: the "
                         "Python form of the chapter's return result, since an async "
                         "generator may not return a value")
