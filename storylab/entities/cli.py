"""``storylab eg``: look inside an entity graph from the terminal.

    storylab eg list                    recent root entities
    storylab eg tree <id>               an entity and its descendants with statuses
                                        (who runs an InProgress one, or that it is stale)
    storylab eg node <id>               the node as JSON (same as ``node get <id>``)
    storylab eg node io <id>            {"input": ..., "output": ...}
    storylab eg node progress <id>      the progress log (children's envelopes included)
    storylab eg node edges <id>         the Calls edges from and to the node

Every command takes ``--graph PATH`` (default: ``$STORYLAB_HOME/graph.sqlite``
or ``./.storylab/graph.sqlite``) and only reads: it never creates, upgrades or
writes a graph, so it also works on a read-only file, folder or disk.

Exit codes: 0 done, 1 the graph or the entity cannot be read (one line on
stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from storylab.entities.errors import EntityGraphError
from storylab.entities.graph import EntityGraph, NodeRecord

__all__ = ["configure", "format_tree", "main"]

NODE_VIEWS = ("get", "io", "progress", "edges")


def _add_graph_option(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--graph",
        metavar="PATH",
        default=default,
        help="entity graph file or postgresql:// URL "
        "(default: $STORYLAB_HOME/graph.sqlite or ./.storylab/graph.sqlite)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1; got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    _add_graph_option(parser, None)
    sub = parser.add_subparsers(dest="eg_command", metavar="{list,tree,node}")
    p_list = sub.add_parser("list", help="recent root entities")
    p_list.add_argument("--limit", type=_positive_int, default=20, help="how many (default 20)")
    p_tree = sub.add_parser("tree", help="an entity and its descendants, with statuses")
    p_tree.add_argument("id")
    p_node = sub.add_parser(
        "node",
        help="a node as JSON: node [get|io|progress|edges] <id>",
        description="Print a node (get, the default), its input and output (io), "
        "its progress log (progress) or its edges (edges), as JSON.",
    )
    p_node.add_argument("words", nargs="+", metavar="[VIEW] ID")
    # Also accept --graph after the subcommand; SUPPRESS keeps the parent's value.
    for p in (p_list, p_tree, p_node):
        _add_graph_option(p, argparse.SUPPRESS)


def _fail(message: str, code: int = 1) -> int:
    print(f"storylab eg: error: {message}", file=sys.stderr)
    return code


USAGE = 2  # exit code of a command line that makes no sense (as argparse's own)


def main(args: argparse.Namespace) -> int:
    command = getattr(args, "eg_command", None)
    if command is None:
        return _fail("choose a command: list, tree or node (see `storylab eg --help`)", USAGE)
    if command == "node":
        words = args.words
        if len(words) == 1:
            view, node_id = "get", words[0]
        elif len(words) == 2 and words[0] in NODE_VIEWS:
            view, node_id = words
        else:
            return _fail(
                f"usage: storylab eg node [VIEW] ID, with VIEW one of {', '.join(NODE_VIEWS)}; "
                f"got {' '.join(words)!r}",
                USAGE,
            )
    try:
        graph = EntityGraph.open(args.graph, read_only=True)
    except EntityGraphError as exc:
        return _fail(str(exc))
    with graph:
        try:
            if command == "list":
                print(format_list(graph.roots(limit=args.limit)))
            elif command == "tree":
                print(format_tree(graph, args.id))
            else:
                print(json.dumps(_node_view(graph, view, node_id), indent=2, ensure_ascii=False))
        except (EntityGraphError, ValueError) as exc:
            return _fail(str(exc))
    return 0


def _node_view(graph: EntityGraph, view: str, node_id: str) -> Any:
    if view == "get":
        return graph.get_node(node_id).to_json()
    if view == "io":
        return graph.io(node_id)
    if view == "progress":
        return [env.to_json() for env in graph.progress(node_id)]
    return graph.edges(node_id)


def format_list(roots: list[NodeRecord]) -> str:
    if not roots:
        return "(no entities yet)"
    lines = []
    for r in roots:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        lines.append(f"{r.id}  {when}  {r.status:<10}  {r.type} ({r.name})")
    return "\n".join(lines)


def _one_line(error: dict | None) -> str:
    if not error:
        return ""
    text = f"{error.get('type', 'Error')}: {error.get('message', '')}".strip()
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


def format_tree(graph: EntityGraph, node_id: str) -> str:
    """``Type (name)`` padded, then ``Status: X``; children in creation order
    under ``├── ``/``└── `` connectors; a failed node shows its error."""
    root = graph.get_node(node_id)
    rows: list[tuple[str, NodeRecord]] = [("", root)]

    def walk(parent: NodeRecord, indent: str) -> None:
        kids = graph.children(parent.id)
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            rows.append((indent + ("└── " if last else "├── "), kid))
            walk(kid, indent + ("    " if last else "│   "))

    walk(root, "  ")
    labels = [prefix + f"{node.type} ({node.name})" for prefix, node in rows]
    width = max(len(label) for label in labels) + 3
    lines = []
    now = time.time()
    for label, (_, node) in zip(labels, rows, strict=True):
        line = f"{label:<{width}}Status: {node.status}"
        if node.status == "Failed" and node.error:
            line += f"  ({_one_line(node.error)})"
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
    reason = " ".join(str(data.get("verdict_reason") or "").split())
    if reason:
        note += f": {reason if len(reason) <= 100 else reason[:97] + '...'}"
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
    return f"stale: {lease.owner} held it for {held}, {why}; the next run takes it over"
