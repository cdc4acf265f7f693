"""``storylab eg``: look inside an entity graph from the terminal.

    storylab eg list                    recent root entities
    storylab eg tree <id>               an entity and its descendants with statuses
                                        (who runs an InProgress one, or that it is stale)
    storylab eg node <id>               the node as JSON (same as ``node get <id>``)
    storylab eg node io <id>            {"input": ..., "output": ...}
    storylab eg node progress <id>      the progress log (children's envelopes included)
    storylab eg node edges <id>         the Calls edges from and to the node
    storylab eg check                   read the whole file: is anything damaged?
    storylab eg export PATH             copy the graph and its blob folder to PATH
    storylab eg export-pictures DEST    the stored pictures and pages, as plain files

Where an ``<id>`` is asked for, a root's name, its topic or the start of an
id that no other id shares does as well.

Every command takes ``--graph PATH`` (default: ``$STORYLAB_HOME/graph.sqlite``
or ``./.storylab/graph.sqlite``) and only reads: it never creates, upgrades or
writes a graph, so it also works on a read-only file, folder or disk.

Exit codes: 0 done, 1 the graph or the entity cannot be read (one line on
stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from storylab._text import printable
from storylab.entities.errors import EntityGraphError, UnknownEntityError
from storylab.entities.graph import EntityGraph, NodeRecord

__all__ = [
    "AmbiguousEntityError",
    "Words",
    "configure",
    "format_list",
    "format_tree",
    "main",
    "resolve",
    "short_ids",
]

NODE_VIEWS = ("get", "io", "progress", "edges")


def _add_graph_option(parser: argparse.ArgumentParser, default: Any) -> None:
    from storylab._cli_args import graph_location

    parser.add_argument(
        "--graph",
        type=graph_location,
        metavar="PATH",
        default=default,
        help="entity graph file or postgresql:// URL "
        "(default: $STORYLAB_HOME/graph.sqlite or ./.storylab/graph.sqlite)",
    )


MAX_LIST = 1_000_000  # roots `eg list` prints at most (SQLite's integers end at 2**63)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIST:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_LIST}; got {text!r}"
        )
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    _add_graph_option(parser, None)
    sub = parser.add_subparsers(
        dest="eg_command", metavar="{list,tree,node,check,export,export-pictures}"
    )
    p_list = sub.add_parser("list", help="recent root entities")
    p_list.add_argument(
        "--limit",
        type=_positive_int,
        default=20,
        help=f"how many (default 20, at most {MAX_LIST:,})",
    )
    p_tree = sub.add_parser("tree", help="an entity and its descendants, with statuses")
    p_tree.add_argument("id")
    p_node = sub.add_parser(
        "node",
        help="a node as JSON: node [get|io|progress|edges] <id>",
        description="Print a node (get, the default), its input and output (io), "
        "its progress log (progress) or its edges (edges), as JSON.",
    )
    p_node.add_argument("words", nargs="+", metavar="[VIEW] ID")
    p_check = sub.add_parser(
        "check",
        help="check the whole file (SQLite's integrity_check and storylab's own rules)",
        description="Read every page of the graph and list what is damaged; exit 1 if "
        "anything is. It only reads.",
    )
    p_export = sub.add_parser(
        "export",
        help="copy the graph with its blobs to PATH (how to move or share a graph)",
        description="Write a consistent copy of the graph file to PATH and its blob folder "
        "(pictures, pages) beside it as PATH's name with .blobs. The graph is only read.",
    )
    p_export.add_argument("path", metavar="PATH")
    p_pictures = sub.add_parser(
        "export-pictures",
        help="copy the pictures (and pages) out of the blob folder, with readable names",
        description="Copy every stored picture of one root (or of all of them) to DEST, "
        "one folder per root: DEST/<name>/picture-1.png, ... The graph is only read.",
    )
    p_pictures.add_argument("dest", metavar="DEST")
    p_pictures.add_argument("id", nargs="?", metavar="ID", help="one root (default: all)")
    # Also accept --graph after the subcommand; SUPPRESS keeps the parent's value.
    for p in (p_list, p_tree, p_node, p_check, p_export, p_pictures):
        _add_graph_option(p, argparse.SUPPRESS)


def _fail(message: str, code: int = 1) -> int:
    print(f"storylab eg: error: {message}", file=sys.stderr)
    return code


USAGE = 2  # exit code of a command line that makes no sense (as argparse's own)


def main(args: argparse.Namespace) -> int:
    command = getattr(args, "eg_command", None)
    if command is None:
        return _fail(
            "choose a command: list, tree, node, check, export or export-pictures "
            "(see `storylab eg --help`)",
            USAGE,
        )
    if command == "node":
        words = args.words
        if len(words) == 1:
            view, ref = "get", words[0]
        elif len(words) == 2 and words[0] in NODE_VIEWS:
            view, ref = words
        else:
            return _fail(
                f"usage: storylab eg node [VIEW] ID, with VIEW one of {', '.join(NODE_VIEWS)}; "
                f"got {' '.join(words)!r}",
                USAGE,
            )
    words_for = Words(
        getattr(args, "describe", None) or _no_label,
        getattr(args, "summarize", None),
        getattr(args, "reword", None),
    )
    try:
        graph = EntityGraph.open(args.graph, read_only=True)
    except EntityGraphError as exc:
        return _fail(str(exc))
    with graph:
        try:
            if command == "check":
                return _check(graph)
            if command == "export":
                if not hasattr(graph, "copy_to"):
                    return _fail(f"eg export copies SQLite files; {graph.path} is another store")
                dest = graph.copy_to(args.path)
                print(
                    f"copied {graph.path} to {dest} with its blobs in {dest.with_suffix('.blobs')}"
                )
                return 0
            if command == "export-pictures":
                return _export_pictures(graph, args.dest, args.id, words_for)
            if command == "list":
                print(format_list(graph.roots(limit=args.limit), graph, words_for))
            elif command == "tree":
                node = resolve(graph, args.id, words_for)
                print(format_tree(graph, node.id, words_for))
            else:
                node = resolve(graph, ref, words_for)
                print(json.dumps(_node_view(graph, view, node.id), indent=2, ensure_ascii=False))
        except (EntityGraphError, ValueError) as exc:
            return _fail(str(exc))
        except OSError as exc:  # export: a full disk, a folder we may not write
            where = f"{exc.filename}: " if exc.filename else ""
            return _fail(f"{where}{exc.strerror or exc}")
    return 0


def _export_pictures(graph: EntityGraph, dest: str, ref: str | None, words: Words) -> int:
    """Copy every blob a node's output names (``object_key``; a root's page,
    ``html_key``) to ``dest/<root name>/<node label>.<ext>``."""
    from pathlib import Path

    roots = [resolve(graph, ref, words)] if ref else graph.roots(limit=MAX_LIST)
    out = Path(dest)
    copied = missing = 0
    for root in roots:
        folder = out / _file_name(root.name)
        for node in [root, *graph.descendants(root.id)]:
            output = node.output if isinstance(node.output, dict) else {}
            key = output.get("object_key") or output.get("html_key")
            if not isinstance(key, str):
                continue
            try:
                data = graph.blobs.get(key)
            except EntityGraphError:  # gone from the blob store (or a malformed key)
                missing += 1
                continue
            base = "page" if node is root else _file_name(words.label(node))
            folder.mkdir(parents=True, exist_ok=True)
            suffix = "." + key.rsplit(".", 1)[-1] if "." in key else ""
            (folder / f"{base}{suffix}").write_bytes(data)
            copied += 1
    note = f"; {missing} missing from the blob folder (run the story again)" if missing else ""
    print(f"copied {copied} file(s) to {out}{note}")
    return 0 if not missing else 1


def _file_name(text: str) -> str:
    """A label as a file name: letters and digits kept, anything else one ``-``."""
    return re.sub(r"[\W_]+", "-", printable(text).casefold()).strip("-")[:80] or "item"


def _check(graph: EntityGraph) -> int:
    if not hasattr(graph, "integrity_problems"):
        return _fail(f"eg check reads SQLite files; {graph.path} is another kind of store")
    problems = graph.integrity_problems(full=True)
    if not problems:
        nodes = graph._read("SELECT count(*) FROM nodes")[0][0]
        print(f"ok: {graph.path} ({nodes} nodes; every page, index and node read)")
        return 0
    for problem in problems:
        print(printable(problem))
    return _fail(
        f"the entity graph {graph.path} is damaged ({len(problems)} problem(s), listed "
        "above); restore it from a copy, or move it away to start a new graph"
    )


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
    ids = sorted(row[0] for row in graph._read("SELECT id FROM nodes"))
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
    if graph._read("SELECT 1 FROM nodes WHERE id = ?", (text,)):
        return graph.get_node(text)
    root = graph.find_root(text)
    if root is not None:
        return root
    matches: list[str] = []
    if _ID_PREFIX.fullmatch(text):
        pattern = text.lower() + "%"
        matches = [
            row[0]
            for row in graph._read(
                "SELECT id FROM nodes WHERE id LIKE ? ORDER BY rowid LIMIT 21", (pattern,)
            )
        ]
    if not matches:
        rows = graph._read("SELECT id, data FROM nodes WHERE parent_id IS NULL")
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


def _node_view(graph: EntityGraph, view: str, node_id: str) -> Any:
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
    shorts = short_ids(graph) if graph is not None else {}
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
    shorts = short_ids(graph)
    labels = [prefix + words.label(node) for prefix, node in rows]
    width = max(len(label) for label in labels) + 2
    id_width = max(len(shorts.get(node.id, node.id)) for _, node in rows) + 2
    lines = []
    summary = words.summary(graph, root) if root.parent_id is None else None
    now = time.time()
    for i, (label, (_, node)) in enumerate(zip(labels, rows, strict=True)):
        status = summary["state"] if (i == 0 and summary) else node.status
        line = f"{label:<{width}}{shorts.get(node.id, node.id):<{id_width}}Status: {status}"
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
    return f"stale: {lease.owner} held it for {held}, {why}; the next run takes it over"
