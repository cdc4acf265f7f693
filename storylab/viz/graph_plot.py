"""The entity tree as a graph: what a pipeline made, and how each part ended.

After (or during) a run the entity graph store holds the whole call tree: a
story pipeline, its safety check and writer, and one node per image, each
with a status, timings and, for failures, the error. :func:`entity_graph`
reads that tree into a :class:`networkx.DiGraph` (parent -> child edges) so it
can be analysed like any graph; :func:`plot_entity_tree` draws it top-down
(no graphviz needed: the layout is computed here), nodes coloured by status,
labelled ``Type (name)``, failures marked with a cross; several pipelines
are drawn side by side. :class:`LiveEntityTree` redraws the picture in a
notebook while the runs go on.

networkx and matplotlib are imported inside the functions.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from storylab.viz._figure import new_figure
from storylab.viz._palette import COLOURS, REUSED_COLOUR, status_from_node
from storylab.viz.labels import task_label

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "NOT_STORED",
    "LiveEntityTree",
    "add_missing_children",
    "entity_graph",
    "entity_tree_summary",
    "plot_entity_tree",
    "tree_layout",
]

# A glyph inside every node, so a status reads without its colour.
_GLYPHS = {"Pending": "·", "InProgress": "▶", "Completed": "✓", "Failed": "✗", "Cancelled": "⊘"}

_NODE_STATUSES = ("Pending", "InProgress", "Completed", "Failed")


def _open_graph(graph: Any) -> tuple[Any, bool]:
    """An entity graph store, and whether we opened it (and must close it)."""
    if isinstance(graph, str | os.PathLike):
        from storylab.entities import EntityGraph

        return EntityGraph.open(graph), True
    if not (hasattr(graph, "get_node") and hasattr(graph, "descendants")):
        raise TypeError(
            f"graph must be an EntityGraph or a path to one, got {type(graph).__name__}"
        )
    return graph, False


def _root_ids(roots: Any) -> list[str]:
    if isinstance(roots, str):
        roots = [roots]
    elif hasattr(roots, "id") and isinstance(roots.id, str):  # an entity or a NodeRecord
        roots = [roots.id]
    ids = []
    for r in roots:
        rid = r.id if hasattr(r, "id") else r
        if not isinstance(rid, str) or not rid:
            raise TypeError(f"roots must be entity ids (or entities); got {r!r}")
        ids.append(rid)
    if not ids:
        raise ValueError("roots must name at least one root entity")
    return ids


def _stale(store: Any, node: Any) -> bool:
    """An ``InProgress`` node whose lease nobody holds any more (its process is gone)."""
    if node.status != "InProgress" or not hasattr(store, "lease_state"):
        return False
    lease = store.lease(node.id)
    return lease is None or store.lease_state(lease) != "live"


def _add_tree(g: nx.DiGraph, store: Any, root_id: str) -> None:
    root = store.get_node(root_id)  # UnknownEntityError (a LookupError) for an unknown id
    nodes = [root, *store.descendants(root_id)]
    depth = {root.id: 0}
    for position, node in enumerate(nodes):
        if node.id != root.id:
            depth[node.id] = depth.get(node.parent_id, 0) + 1
        started, finished = node.started_at, node.finished_at
        g.add_node(
            node.id,
            type=node.type,
            name=node.name,
            label=f"{node.type} ({node.name})",
            status=node.status,
            parent_id=node.parent_id if node.id != root.id else None,
            root=root.id,
            depth=depth[node.id],
            order=position,
            created_at=node.created_at,
            started_at=started,
            finished_at=finished,
            duration=(finished - started) if started is not None and finished else None,
            error=node.error,
            stale=_stale(store, node),
        )
        if node.id != root.id:
            g.add_edge(node.parent_id, node.id, edge_type="Calls")


def entity_graph(graph: Any, root_id: str | Iterable[str]) -> nx.DiGraph:
    """The entities under ``root_id`` (one id or several) as a networkx DiGraph.

    Nodes are entity ids with attributes ``type``, ``name``, ``label``
    (``"Type (name)"``), ``status`` (as stored: Pending, InProgress,
    Completed, Failed), ``depth``, ``root``, ``parent_id``, the timings
    ``created_at``, ``started_at``, ``finished_at`` (epoch seconds or None)
    and ``duration``, and ``error`` (``{"type", "message", "traceback"}`` or
    None). Edges go from parent to child in creation order. ``graph`` is an
    :class:`~storylab.entities.EntityGraph` or a path to its file.
    """
    import networkx as nx

    store, opened = _open_graph(graph)
    try:
        g = nx.DiGraph()
        for rid in _root_ids(root_id):
            _add_tree(g, store, rid)
        return g
    finally:
        if opened:
            store.close()


def tree_layout(g: nx.DiGraph, roots: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """Top-down positions for a forest: leaves one unit apart, parents centred above.

    ``y`` is minus the depth, so roots are on top; trees of several roots
    are placed left to right with a gap of one unit.
    """
    if roots is None:
        roots = [n for n in g if g.in_degree(n) == 0]

    def ordered_children(n: str) -> list[str]:
        return sorted(g.successors(n), key=lambda c: g.nodes[c].get("order", 0))

    pos: dict[str, tuple[float, float]] = {}
    next_x = 0.0
    for root in roots:
        # Iterative post-order so deep trees do not hit the recursion limit.
        stack: list[tuple[str, int, bool]] = [(root, 0, False)]
        while stack:
            node, depth, expanded = stack.pop()
            kids = ordered_children(node)
            if not kids:
                pos[node] = (next_x, -float(depth))
                next_x += 1.0
            elif not expanded:
                stack.append((node, depth, True))
                stack.extend((k, depth + 1, False) for k in reversed(kids))
            else:
                xs = [pos[k][0] for k in kids]
                pos[node] = ((min(xs) + max(xs)) / 2, -float(depth))
        next_x += 1.0
    return pos


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_entity_tree(
    graph: Any,
    roots: Any,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    missing: Iterable[str] = (),
    run_started: float | None = None,
    time_scale: float | None = None,
    trace: Any = None,
) -> Figure:
    """Draw the entity tree(s) under ``roots`` top-down, coloured by status.

    ``roots`` is one root id (or entity), or several: their trees are drawn
    side by side. Nodes are labelled ``Type (name)``; failed nodes are red,
    outlined and marked with ✗ (their error type is shown under the label).
    Returns the matplotlib figure (draws into ``ax`` if given). For a picture
    that keeps itself up to date during a run, see :class:`LiveEntityTree`.

    ``missing`` names children the first root was meant to have but that have
    no node in the graph (a picture not stored before a crash, say): they are
    drawn as hollow, dashed nodes after the real children, so what is absent
    is as visible as what is there.

    Every node carries a glyph for its status (✓ ▶ · ✗) and, once finished,
    how long it ran under its label: wall seconds, or model seconds when the
    time scale is known. Pass the run's ``trace`` and the scale is read from it
    (``trace.meta["time_scale"]``, which :func:`run_stories` fills in), so it
    is the scale the run really had; ``time_scale`` (wall seconds per model
    second) gives it by hand, and must agree with the trace's when both are
    given. Pictures read as the charts write them (``image-2``). With
    ``run_started`` (epoch seconds, e.g. ``time.time()`` taken before a
    resumed run), a Completed node that finished before it is drawn as
    *reused from the graph* (↺, its own colour, a dotted outline): the run
    handed back its stored result instead of running it again.
    ``fig.storylab_summary`` is the picture's one-line text equivalent.

    No two pieces of text overlap: the figure is sized from the measured
    labels, and a row too crowded for one line of labels hangs every other
    one a band lower. Drawn into a given ``ax``, the layout has only that
    axes' width; a very crowded tree then needs a larger axes.
    """
    time_scale = _scale_of(trace, time_scale)
    g = entity_graph(graph, roots)
    add_missing_children(g, missing)
    return draw_entity_graph(g, ax=ax, title=title, run_started=run_started,
                             time_scale=time_scale)


def _scale_of(trace: Any, time_scale: float | None) -> float | None:
    """The time scale to label durations with: the trace's, or the one given."""
    if time_scale is not None and (isinstance(time_scale, bool)
                                   or not isinstance(time_scale, int | float)
                                   or time_scale <= 0):
        raise ValueError(f"time_scale must be a number of wall seconds per model second > 0, "
                         f"got {time_scale!r}")
    if trace is None:
        return time_scale
    meta = getattr(trace, "meta", None)
    if not isinstance(meta, dict):
        raise ValueError(f"trace must be a storylab Trace, got {type(trace).__name__}")
    recorded = meta.get("time_scale")
    if recorded is None:
        if time_scale is None:
            raise ValueError("this trace does not say its time scale (no meta['time_scale']): "
                             "pass time_scale= as well")
        return time_scale
    if time_scale is not None and abs(float(recorded) - float(time_scale)) > 1e-12:
        raise ValueError(f"time_scale={time_scale!r} disagrees with the trace's "
                         f"{recorded!r}: the durations would be read at the wrong scale")
    return float(recorded)


_NAMES_ONLY = 6  # this many siblings or more are labelled by name only


def _shown_labels(g: nx.DiGraph) -> dict[str, str]:
    """``Type (name)``, or just the name among three or more siblings of one type, or
    among six or more siblings (a pipeline's safety check, writer and pictures).

    Seven ``ImageGenerationEntity (image-{{IMAGE_n}})`` labels in a row say
    the type seven times and crowd out the names, which are what a reader
    compares with the other charts (``image-2``).
    """
    out = {n: g.nodes[n]["label"] for n in g}
    for parent in g:
        kids = list(g.successors(parent))
        types: dict[Any, int] = {}
        for k in kids:
            types[g.nodes[k]["type"]] = types.get(g.nodes[k]["type"], 0) + 1
        for k in kids:
            t = g.nodes[k]["type"]
            if t is not None and (types[t] >= 3 or len(kids) >= _NAMES_ONLY):
                out[k] = task_label(g.nodes[k]["name"])
    return out


def _reused(data: dict[str, Any], run_started: float | None) -> bool:
    finished = data.get("finished_at")
    return (run_started is not None and data.get("status") == "Completed"
            and finished is not None and finished < run_started)


def _duration_text(data: dict[str, Any], time_scale: float | None) -> str | None:
    duration = data.get("duration")
    if duration is None:
        return None
    if time_scale:
        return f"{duration / time_scale:.1f} model s"
    return f"{duration:.2f} s"


def entity_tree_summary(g: nx.DiGraph, *, run_started: float | None = None,
                        time_scale: float | None = None) -> str:
    """One line that says what the entity-tree picture shows (its text equivalent)."""
    roots = [n for n in g if g.nodes[n]["depth"] == 0]
    counts: dict[str, int] = {}
    for n in g:
        data = g.nodes[n]
        key = "reused from the graph" if _reused(data, run_started) else data["status"]
        counts[key] = counts.get(key, 0) + 1
    durations = [g.nodes[n]["duration"] for n in g
                 if g.nodes[n]["depth"] > 0 and g.nodes[n].get("duration") is not None]
    unit = "model s" if time_scale else "s"
    scale = time_scale or 1.0
    text = (f"Entity tree: {len(roots)} root{'' if len(roots) == 1 else 's'}, "
            f"{g.number_of_nodes()} entities "
            f"({', '.join(f'{v} {k}' for k, v in counts.items())})")
    if durations:
        text += (f"; children ran {min(durations) / scale:.1f} to "
                 f"{max(durations) / scale:.1f} {unit}")
    failed = [g.nodes[n]["label"] for n in g if g.nodes[n]["status"] == "Failed"]
    if failed:
        text += f"; failed: {', '.join(failed)}"
    fresh = not any(_reused(g.nodes[n], run_started) for n in g)  # one run's own times
    if len(roots) == 1 and fresh and (parts := _where_the_time_went(g, roots[0], scale, unit)):
        text += f"; in time, {parts}"
    return text + "."


def _where_the_time_went(g: nx.DiGraph, root: str, scale: float, unit: str) -> str:
    """``the root (26.0 model s) = safety-check 1.3 + story-writer 4.0 + 5 pictures side by
    side 20.5 + 0.2 between them``: the root's time split among its children, those of
    one type that ran together counted once, over the span from the first's start to the
    last's end. What no child covers (the root's own steps between and around them) is
    the last term, so the printed numbers add up to the root's."""
    data = g.nodes[root]
    if data.get("duration") is None:
        return ""
    kids = list(g.successors(root))
    groups: dict[Any, list[str]] = {}
    for k in kids:
        groups.setdefault(g.nodes[k]["type"], []).append(k)
    parts = []
    spans: list[float] = []
    for members in groups.values():
        timed = [g.nodes[k] for k in members if g.nodes[k].get("started_at") is not None
                 and g.nodes[k].get("finished_at") is not None]
        if len(timed) != len(members):
            return ""  # something unfinished or not stored: no honest sum to give
        span = (max(d["finished_at"] for d in timed) - min(d["started_at"] for d in timed))
        spans.append(round(span / scale, 1))
        if len(members) == 1:
            parts.append(f"{task_label(g.nodes[members[0]]['name'])} {span / scale:.1f}")
        else:
            parts.append(f"{len(members)} {task_label(g.nodes[members[0]]['name']).split('-')[0]}"
                         f"s side by side {span / scale:.1f}")
    if not parts:
        return ""
    whole = round(data["duration"] / scale, 1)
    rest = round(whole - sum(spans), 1)  # of the numbers as printed, so the sum is exact
    if rest > 0:
        parts.append(f"{rest:.1f} between them (the parent's own steps)")
    elif rest < 0:
        return ""  # children overlapping one another: no honest sum to give
    return f"{task_label(str(data['name']))} ({whole:.1f} {unit}) = " + " + ".join(parts)


NOT_STORED = "NotStored"


def add_missing_children(g: nx.DiGraph, names: Iterable[str]) -> None:
    """Add a hollow ``NotStored`` node under the first root for each name not already a child."""
    if isinstance(names, str):
        raise TypeError("missing must be a list of child names, not a single string")
    names = list(names)
    if not names:
        return
    roots = [n for n in g if g.nodes[n]["depth"] == 0]
    if not roots:
        raise ValueError("the graph has no root to hang missing children on")
    root = roots[0]
    present = {g.nodes[c]["name"] for c in g.successors(root)}
    order = max((g.nodes[n]["order"] for n in g), default=0)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"missing must hold child names (strings); got {name!r}")
        if name in present:
            continue
        order += 1
        node_id = f"missing:{root}:{name}"
        g.add_node(node_id, type=None, name=name, label=f"not stored ({task_label(name)})",
                   status=NOT_STORED, parent_id=root, root=root, depth=1, order=order,
                   created_at=None, started_at=None, finished_at=None, duration=None,
                   error=None)
        g.add_edge(root, node_id, edge_type="Missing")


# Text sizes (points) and the room around a node. Text sits at fixed offsets
# in points from its node, so it keeps its size whatever the figure's: the
# layout makes room for the text, never the other way round.
_LABEL_PT = 10.0
_DETAIL_PT = 9.0
_TITLE_PT = 12.0
_LINE = 1.25  # the height of a line of text, in font sizes (with a little air)
_NODE_PT = 14.0  # from a node's centre to the text just under or over it
_PAD_PT = 8.0  # the least room between two neighbours' text
_ROW_PT = 95.0  # the least distance from one depth to the next
_MAX_WIDTH_IN = 16.0  # a wider figure is shrunk so much in a notebook that its text is tiny
_ONE_BAND_IN = 9.5  # wider than this, every other leaf label hangs one band lower


def _text_size(text: str, points: float) -> tuple[float, float]:
    """Width and height, in points, of (possibly several lines of) text."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(size=points)
    lines = text.split("\n")
    width = max(text_to_path.get_text_width_height_descent(line or " ", prop, ismath=False)[0]
                for line in lines)
    return width, len(lines) * points * _LINE


def _wrap_to(text: str, points: float, width_pt: float) -> str:
    """``text`` broken at spaces into lines no wider than ``width_pt`` (when it can be)."""
    import textwrap

    if _text_size(text, points)[0] <= width_pt:
        return text
    for chars in range(len(text), 10, -2):
        wrapped = textwrap.fill(text, chars, break_long_words=False)
        if _text_size(wrapped, points)[0] <= width_pt:
            return wrapped
    return textwrap.fill(text, 10, break_long_words=False)


def _node_texts(g: nx.DiGraph, n: str, shown: dict[str, str], run_started: float | None,
                time_scale: float | None) -> tuple[str, str | None]:
    """A node's label and, for a leaf, the detail line under it (how long it ran, or reused)."""
    data = g.nodes[n]
    leaf = not any(True for _ in g.successors(n))
    text = shown[n]
    if data["depth"] == 0:
        label = _short(text, 60)
    elif leaf and text.endswith(")") and " (" in text:
        # Under a leaf, "Type (name)" goes on two lines so that neighbours fit.
        head, _, tail = text.partition(" (")
        label = _short(head, 26) + "\n(" + _short(tail[:-1], 24) + ")"
    else:
        label = _short(text, 28)
    if data["status"] == "Failed" and data.get("error"):
        label += "\n" + _short(f"{data['error'].get('type', 'error')}", 28)
    took = _duration_text(data, time_scale)
    if _reused(data, run_started):
        # How long it ran in the earlier run: the time the reuse saved.
        extra: str | None = f"reused · {took}" if took else "reused"
    else:
        extra = took
        if took and data["depth"] == 0 and any(_reused(g.nodes[m], run_started) for m in g):
            extra = f"{took} (this run)"  # the root's time counts only the run that reused
    if data.get("stale"):
        extra = "stale"  # InProgress, but its process is gone
    if extra and not leaf:
        return label + "\n" + extra, None
    return label, extra


def _stagger_and_scale(rows: dict[float, list[str]], pos: dict[str, tuple[float, float]],
                       half: dict[str, float], room_pt: float | None) -> tuple[int, float]:
    """How many bands the leaf labels need, and the points one unit of the layout needs.

    Neighbours in one band must clear each other: half a label each, plus a
    gap. With two bands, every other label hangs lower, so a label may be up
    to twice as wide as its column. ``room_pt`` is the width available for
    the layout (None: as wide as needed, up to the widest figure we draw).
    """
    span = max((x for x, _ in pos.values()), default=0.0) - min(
        (x for x, _ in pos.values()), default=0.0) or 1.0

    def need(bands: int) -> float:
        most = 60.0  # nodes never closer than this
        for row in rows.values():
            for i, a in enumerate(row):
                if i + bands < len(row):
                    b = row[i + bands]
                    most = max(most, (half[a] + half[b] + _PAD_PT) / (pos[b][0] - pos[a][0]))
        return most

    limits = [room_pt] if room_pt is not None else [_ONE_BAND_IN * 72, _MAX_WIDTH_IN * 72 - 200]
    for limit in limits:
        for bands in range(1, 7):
            if need(bands) * span <= limit:
                return bands, need(bands)
    return 6, need(6)


def draw_entity_graph(
    g: nx.DiGraph, *, ax: Axes | None = None, title: str | None = None,
    run_started: float | None = None, time_scale: float | None = None,
) -> Figure:
    """Draw a graph made by :func:`entity_graph` (see :func:`plot_entity_tree`).

    No two pieces of text overlap, whatever the number of children: every
    label is measured first, the figure is made wide enough for its
    neighbours to clear each other and, when that would be too wide, every
    other leaf label hangs one band lower.
    """
    import networkx as nx
    from matplotlib.lines import Line2D
    from matplotlib.transforms import offset_copy

    roots = [n for n in g if g.nodes[n]["depth"] == 0]  # insertion order = given order
    pos = tree_layout(g, roots)
    depth = max((g.nodes[n]["depth"] for n in g), default=0)
    shown = _shown_labels(g)
    ghosts = [n for n in g if g.nodes[n]["status"] == NOT_STORED]
    nodes = [n for n in g if g.nodes[n]["status"] != NOT_STORED]
    leaf = {n: not any(True for _ in g.successors(n)) for n in g}
    texts = {n: _node_texts(g, n, shown, run_started, time_scale) for n in g}

    # Measure: how far each node's text reaches left/right, and down (leaves) or up.
    half: dict[str, float] = {}
    hang: dict[str, float] = {}
    for n, (label, extra) in texts.items():
        lw, lh = _text_size(label, _LABEL_PT)
        dw, dh = _text_size(extra, _DETAIL_PT) if extra else (0.0, 0.0)
        half[n] = max(lw, dw) / 2 + 3.0  # the label's rounded box
        hang[n] = _NODE_PT + dh + lh + 4.0
    rows: dict[float, list[str]] = {}
    for n in g:
        if leaf[n] and g.nodes[n]["depth"] > 0:
            rows.setdefault(pos[n][1], []).append(n)
    for row in rows.values():
        row.sort(key=lambda n: pos[n][0])

    xs = [x for x, _ in pos.values()] or [0.0]
    span = (max(xs) - min(xs)) or 1.0
    own = ax is None
    if ax is None:
        bands, unit = _stagger_and_scale(rows, pos, half, None)
    else:
        fig = cast("Figure", ax.figure)  # a sub-figure's axes are not drawn here
        box = ax.get_position()
        room = box.width * fig.get_figwidth() * 72 - 2 * max(half.values(), default=0.0)
        bands, unit = _stagger_and_scale(rows, pos, half, max(room, 72.0))
        unit = max(room, 72.0) / span
        given_w = box.width * fig.get_figwidth() * 72
        given_h = box.height * fig.get_figheight() * 72
    # Where each leaf's text hangs (points under its node), band by band.
    band_pt = {y: max(hang[n] for n in row) + 6.0 for y, row in rows.items()}
    drop = {n: 0.0 for n in g}
    for y, row in rows.items():
        for k, n in enumerate(row):
            drop[n] = (k % bands) * band_pt[y]
    below = max((hang[n] + drop[n] for n in g if leaf[n] and g.nodes[n]["depth"] == depth),
                default=_NODE_PT)
    # Rows above the last one: a leaf there hangs its text towards the row below.
    row_pt = max([_ROW_PT] + [hang[n] + drop[n] + 30.0 for n in g
                              if leaf[n] and 0 < g.nodes[n]["depth"] < depth])
    above = max((_NODE_PT + _text_size(texts[n][0], _LABEL_PT)[1] for n in g if not leaf[n]),
                default=_NODE_PT) + 6.0
    left = max((half[n] - (pos[n][0] - min(xs)) * unit for n in g), default=0.0)
    right = max((half[n] - (max(xs) - pos[n][0]) * unit for n in g), default=0.0)
    pad_x = max(left, right, 20.0) + 6.0
    ax_w = span * unit + 2 * pad_x
    ax_h = depth * row_pt + below + above + 10.0

    reused = [_reused(g.nodes[n], run_started) for n in nodes]
    # The legend names only what the picture shows: statuses of nodes drawn in them.
    # (stale nodes have a legend entry of their own, below)
    present = {g.nodes[n]["status"] for n, r in zip(nodes, reused, strict=True)
               if not r and not g.nodes[n].get("stale")}
    handles = [
        Line2D([], [], marker="o", ls="", markersize=9, markerfacecolor=COLOURS[
            status_from_node(s)], markeredgecolor="black" if s == "Failed" else "white",
            markeredgewidth=2 if s == "Failed" else 1, label=f"{_GLYPHS[s]} {s}")
        for s in _NODE_STATUSES if s in present
    ]
    if any(reused):
        handles.append(Line2D([], [], marker="o", ls="", markersize=9,
                              markerfacecolor=REUSED_COLOUR, markeredgecolor="white",
                              label="reused from the graph (↺)"))
    if any(g.nodes[n].get("stale") for n in nodes):
        handles.append(Line2D([], [], marker="o", ls="", markersize=9,
                              markerfacecolor=COLOURS[status_from_node("InProgress")],
                              markeredgecolor="#333333", markeredgewidth=1.5,
                              label="stale: InProgress, its process gone"))
    if ghosts:
        handles.append(Line2D([], [], marker="o", ls="", markersize=9, markerfacecolor="white",
                              markeredgecolor="#777777", markeredgewidth=1.5,
                              label="not stored (no node)"))
    legend_w = max(_text_size(str(h.get_label()), _LABEL_PT)[0] for h in handles) + 45.0

    if title is None:
        if len(roots) == 1:
            title = f"Entity tree of {g.nodes[roots[0]]['label']}"
        else:
            title = f"Entity trees of {len(roots)} pipelines"
        n_reused = sum(1 for n in g if _reused(g.nodes[n], run_started))
        counts = {s: sum(1 for n in g if g.nodes[n]["status"] == s
                         and not _reused(g.nodes[n], run_started))
                  for s in (*_NODE_STATUSES, NOT_STORED)}
        counts["reused"] = n_reused
        title += " — " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    xlabel = "children, left to right in the order they were created"
    if any(texts[n][1] for n in g if leaf[n] and g.nodes[n]["depth"] > 0):
        xlabel += "; under each, how long it ran, then its name"

    if own:
        margin_l, margin_r = 62.0, legend_w + 12.0
        fig_w = min(max(6.0 * 72, ax_w + margin_l + margin_r), _MAX_WIDTH_IN * 72)
        ax_w = fig_w - margin_l - margin_r
        # The title is centred over the axes, which the legend pushes to the left.
        centre = margin_l + ax_w / 2
        title = _wrap_to(title, _TITLE_PT, 2 * min(centre, fig_w - centre) - 16.0)
        xlabel = _wrap_to(xlabel, _LABEL_PT, ax_w)
        margin_t = _text_size(title, _TITLE_PT)[1] + 16.0
        margin_b = _text_size(xlabel, _LABEL_PT)[1] + 14.0
        fig_h = min(ax_h + margin_t + margin_b, 20 * 72)
        fig, ax = new_figure(figsize=(fig_w / 72, fig_h / 72))
        ax.set_position((margin_l / fig_w, margin_b / fig_h, ax_w / fig_w,
                         (fig_h - margin_t - margin_b) / fig_h))
        ax_h = fig_h - margin_t - margin_b
    else:
        ax_w, ax_h = given_w, given_h
    ax = cast("Axes", ax)
    fig = cast("Figure", ax.figure)
    # Data limits that give each unit of the layout ``unit`` points across and
    # each depth ``row_pt`` points down (or whatever the axes allow).
    x_per_pt = span / max(ax_w - 2 * pad_x, 1.0)
    if own and span * unit <= ax_w - 2 * pad_x:
        x_per_pt = 1.0 / unit
    mid = (max(xs) + min(xs)) / 2
    half_x = ax_w / 2 * x_per_pt
    ax.set_xlim(mid - half_x, mid + half_x)
    y_per_pt = (depth or 1) / max(ax_h - below - above - 10.0, 1.0) if depth else 1.0 / _ROW_PT
    ax.set_ylim(-depth - (below + 5.0) * y_per_pt, (above + 5.0) * y_per_pt)

    def at(n: str, points: float) -> Any:
        """Text anchored at node ``n``, ``points`` above it (negative: under it)."""
        return offset_copy(ax.transData, fig=fig, x=0, y=points, units="points")

    colours = [REUSED_COLOUR if r else COLOURS[status_from_node(g.nodes[n]["status"])]
               for n, r in zip(nodes, reused, strict=True)]
    failed = [g.nodes[n]["status"] == "Failed" for n in nodes]
    real_edges = [(a, b) for a, b in g.edges if b not in ghosts]
    nx.draw_networkx_edges(g, pos, edgelist=real_edges, ax=ax, arrows=True,
                           arrowstyle="-|>", arrowsize=10, edge_color="#888888", node_size=500)
    if ghosts:
        nx.draw_networkx_edges(g, pos, edgelist=[(a, b) for a, b in g.edges if b in ghosts],
                               ax=ax, arrows=True, arrowstyle="-|>", arrowsize=10,
                               edge_color="#bbbbbb", style="dashed", node_size=500)
        hollow = ax.scatter([pos[n][0] for n in ghosts], [pos[n][1] for n in ghosts], s=500,
                            facecolors="white", edgecolors="#777777", linewidths=1.5,
                            linestyles="--", zorder=3)
        hollow.set_gid("missing-nodes")
    drawn = nx.draw_networkx_nodes(
        g, pos, nodelist=nodes, ax=ax, node_color=colours, node_size=500,
        edgecolors=["black" if f else "white" for f in failed],
        linewidths=[2.5 if f else 1.0 for f in failed],
    )
    drawn.set_gid("entity-nodes")
    drawn.set_zorder(3)
    if any(reused):
        again = ax.scatter([pos[n][0] for n, r in zip(nodes, reused, strict=True) if r],
                           [pos[n][1] for n, r in zip(nodes, reused, strict=True) if r],
                           s=700, facecolors="none", edgecolors=REUSED_COLOUR, linewidths=1.8,
                           linestyles=":", zorder=3)
        again.set_gid("reused-nodes")
    stale = [n for n in nodes if g.nodes[n].get("stale")]
    if stale:  # a dashed ring: started, and nobody is drawing it any more
        ring = ax.scatter([pos[n][0] for n in stale], [pos[n][1] for n in stale], s=700,
                          facecolors="none", edgecolors="#333333", linewidths=1.5,
                          linestyles="--", zorder=3)
        ring.set_gid("stale-nodes")
    for n, r in zip(nodes, reused, strict=True):
        status = g.nodes[n]["status"]
        if status == "Failed":  # a bolder mark of its own
            ax.text(*pos[n], "✗", ha="center", va="center", color="white", fontsize=11,
                    fontweight="bold", zorder=4, gid=f"failed-mark:{n}")
        else:
            ax.text(*pos[n], "↺" if r else _GLYPHS.get(status, "?"), ha="center",
                    va="center", color="white", fontsize=11, fontweight="bold", zorder=4,
                    gid=f"glyph:{n}")
    for n in ghosts:
        ax.text(*pos[n], "?", ha="center", va="center", color="#777777", fontsize=10,
                fontweight="bold", zorder=4)
    for n in [*nodes, *ghosts]:
        label, extra = texts[n]
        is_failed = g.nodes[n]["status"] == "Failed"
        colour = "#b00000" if is_failed else "black"
        backing = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}
        if leaf[n] and g.nodes[n]["depth"] > 0:
            # Under a leaf: how long it ran (or that it was reused), then its label.
            down = _NODE_PT + drop[n]
            if drop[n]:  # a thin line leads from the node down to its lowered text
                ax.annotate("", xy=pos[n], xycoords="data", xytext=(0, -down + 2),
                            textcoords="offset points", zorder=2,
                            arrowprops={"arrowstyle": "-", "color": "#bbbbbb", "lw": 0.8,
                                        "shrinkA": 0, "shrinkB": 12})
            if extra:
                ax.text(*pos[n], extra, ha="center", va="top", fontsize=_DETAIL_PT,
                        color="#333333", zorder=4, gid=f"detail:{n}",
                        transform=at(n, -down))
                down += _text_size(extra, _DETAIL_PT)[1]
            ax.text(*pos[n], label, ha="center", va="top", fontsize=_LABEL_PT, color=colour,
                    zorder=4, gid=f"label:{n}", transform=at(n, -down), bbox=backing,
                    linespacing=1.1)
        else:  # over a parent, clear of the edges to its children
            ax.text(*pos[n], label, ha="center", va="bottom", fontsize=_LABEL_PT,
                    color=colour, zorder=4, gid=f"label:{n}", transform=at(n, _NODE_PT),
                    bbox=backing, linespacing=1.1)
    ax.legend(handles=handles, title="status", loc="upper left", bbox_to_anchor=(1.0, 1.0),
              fontsize=10, title_fontsize=10, frameon=False)
    # networkx hides the ticks; the depth axis is part of the picture here.
    ax.tick_params(left=True, labelleft=True)
    ax.set_yticks([-d for d in range(depth + 1)], [str(d) for d in range(depth + 1)])
    # The depth axis ends at the deepest row: labels hung lower are not another depth.
    ax.spines["left"].set_bounds(-depth - 0.15 if depth else -0.15, 0.15)
    ax.set_ylabel("call depth (0 = root)")
    ax.set_xlabel(xlabel)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title)
    summary = entity_tree_summary(g, run_started=run_started, time_scale=time_scale)
    fig.storylab_summary = summary  # type: ignore[attr-defined]
    return fig


class LiveEntityTree:
    """The entity tree, redrawn in place while the runs go on (in a notebook).

    ``tree = LiveEntityTree(graph, [story_a.id, story_b.id])`` then
    ``results = await tree.follow(asyncio.gather(a.run(), b.run()))``: the
    picture is redrawn every ``interval`` seconds (and once at the end) into a
    single notebook output, as a PNG, so saved notebooks show the final tree.
    Outside a notebook nothing is displayed; :attr:`figure` holds the last
    drawing.
    """

    def __init__(self, graph: Any, roots: Any, *, interval: float = 0.5,
                 title: str | None = None) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval must be a number > 0, got {interval!r}")
        self.graph = graph
        self.roots = _root_ids(roots)
        self.interval = float(interval)
        self.title = title
        self.redraws = 0
        self.figure: Figure | None = None
        self._handle: Any = None

    def refresh(self) -> Figure:
        """Redraw now and update the notebook output."""
        import io

        import matplotlib.pyplot as plt

        fig = plot_entity_tree(self.graph, self.roots, title=self.title)
        plt.close(fig)  # shown through our own display handle, not by pyplot
        self.figure = fig
        self.redraws += 1
        try:
            from IPython.core.interactiveshell import InteractiveShell
        except ImportError:
            return fig
        if InteractiveShell.initialized():
            from IPython.display import Image, display

            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=90)
            image = Image(data=buffer.getvalue(), format="png")
            if self._handle is None:
                self._handle = display(image, display_id=True)
            else:
                self._handle.update(image)
        return fig

    async def follow(self, awaitable: Any) -> Any:
        """Await ``awaitable`` (e.g. ``asyncio.gather(...)``), redrawing meanwhile."""
        task = asyncio.ensure_future(awaitable)
        try:
            while not task.done():
                self.refresh()
                await asyncio.wait({task}, timeout=self.interval)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self.refresh()
        return task.result()
