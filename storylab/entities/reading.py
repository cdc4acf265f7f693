"""Read an entity graph for a person: short ids, names, lists and trees.

What ``storylab eg`` (``storylab.cli.eg``) prints is built here, from the
graph alone: a reference a person types (a root's name, the start of an id
no other id shares, or the ``topic`` field of a root's data) resolved to a
node, ids cut to the shortest unique prefix, one line per root, an indented
tree with statuses and leases. The words used for a node are passed in
(:class:`Words`), so this module knows nothing of what the entities mean.
Only reads; standard library only.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from storylab._text import printable
from storylab.entities.errors import UnknownEntityError
from storylab.entities.graph import EntityGraph, NodeRecord

__all__ = [
    "AmbiguousEntityError",
    "Words",
    "format_list",
    "format_tree",
    "node_view",
    "resolve",
    "short_ids",
]

def _no_label(node: NodeRecord) -> str | None:
    return None


class Words:
    """How the listing names things: ``describe(node)`` gives a node's label
    for a reader (``None``: show its stored name), ``summarize(root, children)``
    a root's outcome (a dict with ``topic``, ``state``, ``done``, ``failed`` and
    ``reused``, or ``None``), ``reword(text)`` an error message in a reader's
    words. The layer that knows what the entities mean
    passes them in (the ``storylab`` command passes the story's words)."""

    def __init__(
        self,
        describe: Callable[[NodeRecord], str | None] = _no_label,
        summarize: Callable[[NodeRecord, list[NodeRecord]], dict | None] | None = None,
        reword: Callable[[str], str] | None = None,
    ) -> None:
        self.describe = describe
        self.summarize = summarize
        self.reword = reword or (lambda text: text)

    def label(self, node: NodeRecord) -> str:
        return printable(self.describe(node) or f"{node.type} ({node.name})")

    def summary(self, graph: EntityGraph, root: NodeRecord) -> dict | None:
        if self.summarize is None:
            return None
        return self.summarize(root, graph.children(root.id))


PLAIN = Words()

_ID_PREFIX = re.compile(r"[0-9a-fA-F][0-9a-fA-F-]*")
MIN_SHORT_ID = 8  # characters of an id shown at least (more where needed to be unique)


def short_ids(graph: EntityGraph) -> dict[str, str]:
    """Every node id and the shortest prefix of it (at least ``MIN_SHORT_ID``
    characters) that no other id in the graph starts with."""
    ids = sorted(graph.node_ids())
    out = {}
    for i, node_id in enumerate(ids):
        n = MIN_SHORT_ID
        for other in ids[max(i - 1, 0) : i + 2]:
            if other != node_id:
                n = max(n, len(os.path.commonprefix([node_id, other])) + 1)
        if node_id[n - 1 : n] == "-":
            n += 1
        out[node_id] = node_id[:n]
    return out


def _one_length(shorts: dict[str, str], ids: list[str]) -> dict[str, str]:
    """The short ids of ``ids`` cut to one length, the longest any of them
    needs: the column lines up, and each stays unique (a longer prefix of a
    unique prefix is unique too)."""
    n = max((len(shorts.get(i, i)) for i in ids), default=MIN_SHORT_ID)
    return {i: i[:n] for i in ids}


def _topic_of(data: Any) -> str:
    """A root's ``data["topic"]`` as stored (JSON text, or already a dict), or ``""``."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return ""
    topic = data.get("topic") if isinstance(data, dict) else None
    return topic if isinstance(topic, str) else ""


def _same_topic(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def resolve(graph: EntityGraph, ref: str, words: Words = PLAIN) -> NodeRecord:
    """The node ``ref`` names: its id, a root's name, a prefix of an id that no
    other id shares, or a root's topic (``data["topic"]``, case and spacing
    ignored). An unknown reference raises :class:`UnknownEntityError`, one that
    fits several nodes :class:`AmbiguousEntityError` listing them."""
    text = ref.strip()
    if not text:
        raise UnknownEntityError("give an entity: a name, an id (or its start) or a topic")
    if graph.has_node(text):
        return graph.get_node(text)
    root = graph.find_root(text)
    if root is not None:
        return root
    matches: list[str] = []
    if _ID_PREFIX.fullmatch(text):
        matches = graph.node_ids(text, limit=21)
    if not matches:
        rows = graph.root_data()
        matches = [i for i, data in rows if _same_topic(_topic_of(data), text)]
    if len(matches) == 1:
        return graph.get_node(matches[0])
    if not matches:
        raise UnknownEntityError(
            f"no entity with id, name or topic {printable(text)!r} in {graph.path}: give "
            "a pipeline's name, an id or the start of one, or a topic (`storylab eg list` "
            "shows them)"
        )
    shorts = short_ids(graph)
    shown = [f"  {shorts.get(i, i)}  {words.label(graph.get_node(i))}" for i in matches[:20]]
    more = "\n  ..." if len(matches) > 20 else ""
    raise AmbiguousEntityError(
        f"{printable(text)!r} fits {len(matches) if len(matches) <= 20 else 'more than 20'} "
        "entities; give more of the id:\n" + "\n".join(shown) + more
    )


class AmbiguousEntityError(UnknownEntityError):
    """A reference that fits several entities (the message lists them)."""


def node_view(graph: EntityGraph, view: str, node_id: str) -> Any:
    if view == "get":
        return graph.get_node(node_id).to_json()
    if view == "io":
        return graph.io(node_id)
    if view == "progress":
        return [env.to_json() for env in graph.progress(node_id)]
    return graph.edges(node_id)


def format_list(
    roots: list[NodeRecord], graph: EntityGraph | None = None, words: Words = PLAIN
) -> str:
    """One line per root: short id, when it was made, how it ended, and (for a
    story) its pictures and topic; then its name, which ``eg tree`` accepts."""
    if not roots:
        return "(no entities yet)"
    shorts = _one_length(short_ids(graph), [r.id for r in roots]) if graph is not None else {}
    lines = []
    for r in roots:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        summary = words.summary(graph, r) if graph is not None else None
        ident = shorts.get(r.id, r.id)
        if summary is None:
            lines.append(f"{ident}  {when}  {r.status:<10}  {words.label(r)}  {r.name}")
            continue
        counts = f"{summary['done']} done, {summary['failed']} failed, {summary['reused']} reused"
        lines.append(
            f"{ident}  {when}  {summary['state']:<21}  pictures: {counts}  "
            f"“{summary['topic']}”  {r.name}"
        )
    return "\n".join(lines)


def _one_line(error: dict | None) -> str:
    if not error:
        return ""
    text = f"{error.get('type', 'Error')}: {error.get('message', '')}".strip()
    return printable(text, 120)


def format_tree(graph: EntityGraph, node_id: str, words: Words = PLAIN) -> str:
    """The node's label and short id, padded, then its status; children in
    creation order under ``├── ``/``└── `` connectors; a failed node shows its
    error."""
    root = graph.get_node(node_id)
    rows: list[tuple[str, NodeRecord]] = [("", root)]

    def walk(parent: NodeRecord, indent: str) -> None:
        kids = graph.children(parent.id)
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            rows.append((indent + ("└── " if last else "├── "), kid))
            walk(kid, indent + ("    " if last else "│   "))

    walk(root, "  ")
    shorts = _one_length(short_ids(graph), [node.id for _, node in rows])
    labels = [prefix + words.label(node) for prefix, node in rows]
    # Children are padded to their own widest label: a long root name (a story's
    # topic) would otherwise push every child's status off a narrow screen.
    width = max(len(label) for label in labels[1:] or labels) + 2
    id_width = max(len(shorts.get(node.id, node.id)) for _, node in rows) + 2
    lines = []
    summary = words.summary(graph, root) if root.parent_id is None else None
    now = time.time()
    for i, (label, (_, node)) in enumerate(zip(labels, rows, strict=True)):
        pad = max(width, len(label) + 2)
        line = f"{label:<{pad}}{shorts.get(node.id, node.id):<{id_width}}Status: {node.status}"
        # The root's own status is the entity's; what became of the work it
        # stands for (rejected, completed with errors...) follows in brackets.
        state = str(summary["state"]) if (i == 0 and summary) else ""
        if state and state.lower() != node.status.lower() and node.status != "InProgress":
            line += f"  (outcome: {state})"
        if node.status == "Failed" and node.error:
            line += f"  ({words.reword(_one_line(node.error))})"
        elif node.status == "InProgress":
            line += f"  ({_lease_note(graph, node.id, now)})"
        if isinstance(node.data, dict) and node.data.get("verdict"):
            line += f"  ({_verdict_note(node.data)})"
        lines.append(line)
    return "\n".join(lines)


def _verdict_note(data: dict) -> str:
    """A node that judged something (``verdict``, ``verdict_source``,
    ``verdict_reason`` in its data): what it said, who said it and why."""
    note = f"verdict: {data['verdict']}"
    if data.get("verdict_source"):
        note += f" by {data['verdict_source']}"
    reason = printable(data.get("verdict_reason") or "", 100)
    if reason:
        note += f": {reason}"
    return note


def _seconds(s: float) -> str:
    s = max(s, 0.0)
    return f"{s:.1f}s" if s < 60 else f"{s / 60:.0f}m" if s < 3600 else f"{s / 3600:.1f}h"


def _lease_note(graph: EntityGraph, node_id: str, now: float) -> str:
    """Who runs an InProgress node: a live lease, or why it is stale."""
    lease = graph.lease(node_id)
    if lease is None:
        return "stale: nobody holds it; the next run takes it over"
    state = graph.lease_state(lease, now)
    held = _seconds(now - lease.taken_at)
    if state == "live":
        beat = _seconds(now - lease.heartbeat_at)
        return f"running in {lease.owner}, for {held}, heartbeat {beat} ago"
    why = (
        f"lease expired {_seconds(now - lease.expires_at)} ago"
        if state == "expired"
        else "its process is gone"
    )
    return f"stale: {lease.owner} took it {held} ago, {why}; the next run takes it over"
