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
stderr), 2 bad usage. The reading itself (names, short ids, lists, trees) is
``storylab.entities.reading``; this module is the command around it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from storylab._text import printable
from storylab.cli.args import graph_location
from storylab.entities.errors import EntityGraphError
from storylab.entities.graph import EntityGraph
from storylab.entities.reading import (
    Words,
    _no_label,
    format_list,
    format_tree,
    node_view,
    resolve,
)

__all__ = ["configure", "main"]

NODE_VIEWS = ("get", "io", "progress", "edges")


def _add_graph_option(parser: argparse.ArgumentParser, default: Any) -> None:
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
                if _on_a_server(graph):
                    schema = getattr(graph.path, "schema", None) or "public"
                    return _fail(
                        f"eg export copies a SQLite graph file with its blob folder; "
                        f"{graph.path} is a PostgreSQL graph: copy it with the server's own "
                        f"tools (pg_dump --schema={schema} holds its nodes and blobs)"
                    )
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
                print(json.dumps(node_view(graph, view, node.id), indent=2, ensure_ascii=False))
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


def _on_a_server(graph: EntityGraph) -> bool:
    """Whether the graph is a PostgreSQL one (its path is the URL shown)."""
    from storylab.entities.postgres.url import is_server_url

    return is_server_url(str(graph.path))


def _check(graph: EntityGraph) -> int:
    if _on_a_server(graph) or not hasattr(graph, "integrity_problems"):
        # (Its integrity_problems() finds nothing to read on a server: saying
        # "ok" would claim a check that was not made.)
        return _fail(
            f"eg check reads a SQLite graph file page by page; {graph.path} is a PostgreSQL "
            "graph, whose server checks its own storage (pg_amcheck)"
        )
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
