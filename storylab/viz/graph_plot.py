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
    how long it ran under its label: wall seconds, or model seconds when
    ``time_scale`` (wall seconds per model second) is given. With
    ``run_started`` (epoch seconds, e.g. ``time.time()`` taken before a
    resumed run), a Completed node that finished before it is drawn as
    *reused from the graph* (↺, its own colour, a dotted outline): the run
    handed back its stored result instead of running it again.
    ``fig.storylab_summary`` is the picture's one-line text equivalent.
    """
    g = entity_graph(graph, roots)
    add_missing_children(g, missing)
    return draw_entity_graph(g, ax=ax, title=title, run_started=run_started,
                             time_scale=time_scale)


def _shown_labels(g: nx.DiGraph) -> dict[str, str]:
    """``Type (name)``, or just the name among three or more siblings of one type.

    Seven ``ImageGenerationEntity (image-{{IMAGE_n}})`` labels in a row say
    the type seven times and crowd out the names; the type is then said once,
    in the axis label.
    """
    out = {n: g.nodes[n]["label"] for n in g}
    for parent in g:
        kids = list(g.successors(parent))
        types: dict[Any, int] = {}
        for k in kids:
            types[g.nodes[k]["type"]] = types.get(g.nodes[k]["type"], 0) + 1
        for k in kids:
            t = g.nodes[k]["type"]
            if t is not None and types[t] >= 3:
                out[k] = g.nodes[k]["name"]
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
    text = (f"Entity tree: {len(roots)} root(s), {g.number_of_nodes()} entities "
            f"({', '.join(f'{v} {k}' for k, v in counts.items())})")
    if durations:
        text += (f"; children ran {min(durations) / scale:.1f} to "
                 f"{max(durations) / scale:.1f} {unit}")
    failed = [g.nodes[n]["label"] for n in g if g.nodes[n]["status"] == "Failed"]
    if failed:
        text += f"; failed: {', '.join(failed)}"
    return text + "."


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
        g.add_node(node_id, type=None, name=name, label=f"not stored ({name})",
                   status=NOT_STORED, parent_id=root, root=root, depth=1, order=order,
                   created_at=None, started_at=None, finished_at=None, duration=None,
                   error=None)
        g.add_edge(root, node_id, edge_type="Missing")


def draw_entity_graph(
    g: nx.DiGraph, *, ax: Axes | None = None, title: str | None = None,
    run_started: float | None = None, time_scale: float | None = None,
) -> Figure:
    """Draw a graph made by :func:`entity_graph` (see :func:`plot_entity_tree`)."""
    import networkx as nx
    from matplotlib.lines import Line2D

    roots = [n for n in g if g.nodes[n]["depth"] == 0]  # insertion order = given order
    pos = tree_layout(g, roots)
    width = max((x for x, _ in pos.values()), default=0.0) + 1
    depth = max((g.nodes[n]["depth"] for n in g), default=0)
    # Crowded rows: tilt the leaf labels so they do not overlap. A label of
    # more than ~16 characters is wider than the room a leaf gets, so a row
    # of several long labels ("ImageGenerationEntity (image-{{IMAGE_1}})")
    # is crowded too.
    leaves = [n for n in g if not any(True for _ in g.successors(n))]
    shown = _shown_labels(g)
    longest = max((len(_short(shown[n])) for n in leaves), default=0)
    many = width > 8 or (len(leaves) > 2 and longest > 16)
    if ax is None:
        per_leaf = 0.85 if many else 1.25
        fig, ax = new_figure(
            figsize=(min(max(6.0, per_leaf * width + 2.5), 36),
                     min(1.8 + 1.4 * (depth + 1) + (0.8 if many else 0), 20)),
            layout="constrained",
        )
    else:
        fig = cast("Figure", ax.figure)  # a sub-figure's axes are not drawn here
    ghosts = [n for n in g if g.nodes[n]["status"] == NOT_STORED]
    nodes = [n for n in g if g.nodes[n]["status"] != NOT_STORED]
    reused = [_reused(g.nodes[n], run_started) for n in nodes]
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
    for n, r in zip(nodes, reused, strict=True):
        x, y = pos[n]
        status = g.nodes[n]["status"]
        if status != "Failed":  # failures get their own, bolder mark below
            ax.text(x, y, "↺" if r else _GLYPHS.get(status, "?"), ha="center", va="center",
                    color="white", fontsize=11, fontweight="bold", zorder=4,
                    gid=f"glyph:{n}")
    for n in ghosts:
        x, y = pos[n]
        ax.text(x, y, "?", ha="center", va="center", color="#777777", fontsize=10,
                fontweight="bold", zorder=4)
    label_nodes = nodes + ghosts
    failed = failed + [False] * len(ghosts)
    for n, is_failed in zip(label_nodes, failed, strict=True):
        x, y = pos[n]
        data = g.nodes[n]
        if is_failed:
            ax.text(x, y, "✗", ha="center", va="center", color="white", fontsize=11,
                    fontweight="bold", zorder=4, gid=f"failed-mark:{n}")
        leaf = not list(g.successors(n))
        tilt = many and data["depth"] > 0 and leaf
        # Tilted labels have room to show the name, which tells siblings apart.
        label = _short(shown[n], 60 if data["depth"] == 0 else 44 if tilt else 28)
        if is_failed and data.get("error"):
            label += "\n" + _short(f"{data['error'].get('type', 'error')}", 28)
        # Under the node, level: how long it ran, or that it was reused.
        extra = "reused" if _reused(data, run_started) else _duration_text(data, time_scale)
        if extra and leaf:
            ax.text(x, y - 0.13, extra, ha="center", va="top", fontsize=9, color="#333333",
                    zorder=4, gid=f"detail:{n}")
        elif extra:
            label += "\n" + extra
        # Leaves are labelled below, inner nodes above (clear of their edges).
        ax.text(x, y - (0.3 if extra else 0.14) if leaf else y + 0.14, label,
                ha="right" if tilt else "center", va="top" if leaf else "bottom",
                rotation=35 if tilt else 0, rotation_mode="anchor", fontsize=10,
                color="#b00000" if is_failed else "black", zorder=4, gid=f"label:{n}",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    handles = [
        Line2D([], [], marker="o", ls="", markersize=9, markerfacecolor=COLOURS[
            status_from_node(s)], markeredgecolor="black" if s == "Failed" else "white",
            markeredgewidth=2 if s == "Failed" else 1, label=s)
        for s in _NODE_STATUSES
    ]
    if any(reused):
        handles.append(Line2D([], [], marker="o", ls="", markersize=9,
                              markerfacecolor=REUSED_COLOUR, markeredgecolor="white",
                              label="reused from the graph (↺)"))
    if ghosts:
        handles.append(Line2D([], [], marker="o", ls="", markersize=9, markerfacecolor="white",
                              markeredgecolor="#777777", markeredgewidth=1.5,
                              label="not stored (no node)"))
    ax.legend(handles=handles, title="status", loc="upper left", bbox_to_anchor=(1.0, 1.0),
              fontsize=10, title_fontsize=10, frameon=False)
    # Tilted labels reach down and to the left of their node: make room.
    ax.set_xlim(-0.8 - (1.4 if many else 0.0), width - 0.2)
    ax.set_ylim(-depth - (1.3 if many else 0.6), 0.5)
    # networkx hides the ticks; the depth axis is part of the picture here.
    ax.tick_params(left=True, labelleft=True)
    ax.set_yticks([-d for d in range(depth + 1)], [str(d) for d in range(depth + 1)])
    ax.set_ylabel("call depth (0 = root)")
    named = sorted({g.nodes[n]["type"] for n in g if shown[n] != g.nodes[n]["label"]
                    and g.nodes[n]["type"]})
    ax.set_xlabel("children in creation order, left to right"
                  + (f" (labelled by name: {', '.join(named)})" if named else ""))
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
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
    ax.set_title(title)
    fig.storylab_summary = entity_tree_summary(g, run_started=run_started,
                                               time_scale=time_scale)
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
