"""Orientation for notebook 00: the big picture as a labelled diagram, the glossary and
the table from the chapter's TypeScript names to storylab's Python names.

The diagram is an SVG written here, box by box, so it needs no plotting
library, scales in any browser, keeps its words selectable and searchable,
and carries its own title and description for screen readers.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = [
    "API_TABLE",
    "CHAPTER",
    "GLOSSARY",
    "api_table",
    "check_python_name",
    "glossary_table",
    "overview_diagram",
    "overview_text",
]

CHAPTER = "Part 5: Parallel Image Generation with Entity-Based Parallelism"

GLOSSARY: dict[str, str] = {
    "entity": "a persisted unit of work (a node in the graph with a name, a status, its "
              "input and its output); it runs by yielding envelopes from `run_impl`",
    "unit": "one permission to run one task now; taken from a capacity source before the "
            "task starts, given back when it ends",
    "capacity source": "a counter of units with a limit; sources form a tree (3 per story "
                       "under 10 in total) and a unit is taken at every level or at none",
    "runner": "`HierarchicalTaskPoolRunner`: takes a unit, pulls the next task from a "
              "source, runs it, and streams the results in the order they finish",
    "source": "where the runner pulls tasks from, one at a time (`SourceFromIterable` "
              "creates each child only when it is pulled)",
    "trace": "the record of every scheduling event of a run (asked, waited, started, "
             "ended, which level held a task back); every chart is drawn from it",
    "makespan": "the time from a run's first request for a unit to the end of its last task: "
                "the bracket under every timeline and the number in its title",
    "model second": "a second of a hosted model's time; `time_scale` says how many wall "
                    "seconds one lasts in a notebook",
    "lease": "a claim on a running entity (or on a process's share of the global limit) that "
             "its owner must keep renewing; when the owner dies, the claim lapses and another "
             "process may take over",
    "stale": "an entity stored `InProgress` whose process is gone; a resumed run resets it "
             "and runs it again",
}

# (the chapter's TypeScript, storylab's Python, where the series shows it)
API_TABLE: list[tuple[str, str, str]] = [
    ("class X extends RunnableEntity { async *run_impl() }",
     "class X(RunnableEntity): async def run_impl(self)", "02"),
    ("return value (end of run_impl)", "yield Return(value)", "02"),
    ("this.createStatusEnvelope('RUNNING', msg)", "yield self.status('RUNNING', msg)", "02"),
    ("this.appendCall(Cls, name, data)", "self.append_call(Cls, name, data)", "02"),
    ("this.appendOrRetrieveCall(Cls, name, data)",
     "self.append_or_retrieve_call(Cls, name, data)", "02"),
    ("this.parallelCalls(Cls, items)", "self.parallel_calls(Cls, items)", "02"),
    ("this.updateEntityData({...})", "await self.update_entity_data(**changes)", "02"),
    ("new SourceFromIterable(gen)", "SourceFromIterable(gen)", "02"),
    ("new SourceBufferObj(array)", "SourceBufferObj(thunks)", "02"),
    ("new CapacitySource(10)", "CapacitySource(10)", "03"),
    ("new CapacitySource(3, parent)", "CapacitySource(3, parent)", "03"),
    ("await capacity.acquire() / capacity.release()",
     "await capacity.acquire() / capacity.release()", "03"),
    ("new HierarchicalTaskPoolRunner(name, source, capacity)",
     "HierarchicalTaskPoolRunner(name, source, capacity)", "02"),
    ("for await (const envelope of runner.runTasks())",
     "async with runner.run_tasks() as results: async for envelope in results", "02"),
    ("envelope.type === 'FINAL'", "envelope.type is TaskEventType.FINAL", "02"),
    ("envelope.type === 'ERROR'", "envelope.type is TaskEventType.ERROR", "05"),
    ("envelope.value / envelope.error", "envelope.value / envelope.error", "05"),
]

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

_CAPTION = ("A request becomes a pipeline entity; its picture stage hands the runner a lazy "
            "source of child entities; the runner takes a unit from the capacity tree (a story "
            "source of 3 under a global source of 10) before it creates and starts each child; "
            "every entity is stored in the entity graph, so a rerun finds finished work by name.")


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
    labels = []
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


def glossary_table() -> Any:
    """The glossary as a Markdown table (term, meaning)."""
    rows = "\n".join(f"| **{term}** | {meaning} |" for term, meaning in GLOSSARY.items())
    return _markdown("| term | meaning |\n|---|---|\n" + rows)


def api_table() -> Any:
    """The chapter's TypeScript names next to storylab's Python names, as a Markdown table."""
    def cell(code: str) -> str:
        return "`" + code.replace("|", "\\|") + "`"

    rows = "\n".join(f"| {cell(ts)} | {cell(py)} | {nb} |" for ts, py, nb in API_TABLE)
    return _markdown("| in the chapter (TypeScript) | in storylab (Python) | notebook |\n"
                     "|---|---|---|\n" + rows)


def _bare_name(code: str) -> str:
    """``"self.parallel_calls(Cls, items)"`` -> ``"parallel_calls"``."""
    name = code.strip().split("(")[0].strip()
    for prefix in ("self.", "this.", "await "):
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

    rows = [(ts, py) for ts, py, _ in API_TABLE if chapter_name in ts]
    if not rows:
        raise ValueError(f"{chapter_name!r} is not in the API table")
    row_ts, expected = rows[0]
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
    others = {_bare_name(py): ts for ts, py, _ in API_TABLE}
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
