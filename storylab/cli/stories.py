"""``storylab stories``: forget a story, or make it again from the start.

    storylab stories delete NAME     the story, its steps and pictures leave the graph
    storylab stories redo NAME       delete it, then run it again (run's flags apply)

``NAME`` is what ``storylab eg`` accepts: the story's topic, the name ``run``
printed, or the start of its id. A story's name is made from its topic and
options, so running the same command twice finds the same story; ``redo`` is
how to get a new one (another ``--seed``, say) without changing the topic.
Pictures and pages that no other story shares are removed from the blob
folder, and the page from ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from storylab.cli.args import EXIT_FAILED, EXIT_USAGE, graph_location

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    from storylab.cli import run as cli_run

    sub = parser.add_subparsers(dest="stories_command", metavar="{delete,redo}")
    p_delete = sub.add_parser("delete", help="remove a story, its steps and its pictures")
    p_delete.add_argument("name", metavar="NAME", help="topic, name or start of the id")
    p_delete.add_argument(
        "--graph", type=graph_location, metavar="PATH", help="entity graph file or folder"
    )
    p_delete.add_argument("--out", default="out", metavar="DIR", help="folder of the pages")
    p_redo = sub.add_parser(
        "redo",
        help="delete a story and run it again from the start (takes run's flags)",
        description="Delete the story, then run its topic again with the options it was "
        "made with; flags given here (--seed, --backend, ...) apply to the new run.",
    )
    cli_run.configure(p_redo)  # its TOPIC argument takes the NAME


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"storylab stories: error: {message}", file=sys.stderr)
    return code


def main(args: argparse.Namespace) -> int:
    command = getattr(args, "stories_command", None)
    if command is None:
        return _fail("choose a command: delete or redo (see `storylab stories --help`)", EXIT_USAGE)
    if command == "redo":
        if len(args.topics) != 1:
            return _fail("redo takes one story: storylab stories redo NAME [run flags]", EXIT_USAGE)
        name = args.topics[0]
    else:
        name = args.name
    from storylab.entities import EntityGraph, EntityGraphError

    try:
        with EntityGraph.open(args.graph, create=False) as graph:
            story = _delete(graph, name, Path(args.out))
    except EntityGraphError as exc:
        return _fail(str(exc))
    if command == "delete":
        return 0
    return _run_again(args, story)


def _delete(graph: Any, name: str, out: Path) -> dict[str, Any]:
    """Delete the story ``name`` names; return its topic and customization."""
    from storylab._text import printable
    from storylab.entities import EntityGraphError
    from storylab.entities.reading import Words, resolve
    from storylab.story.words import PIPELINE_TYPE, describe, page_file_name, story_summary

    root = resolve(graph, name, Words(describe, story_summary))
    if root.type != PIPELINE_TYPE or root.parent_id is not None:
        raise EntityGraphError(
            f"{printable(name)!r} is {describe(root) or root.name}, not a story: give a "
            "story's topic, name or id (`storylab eg list` shows them)"
        )
    if not hasattr(graph, "delete_tree"):
        raise EntityGraphError(f"deleting a story needs a SQLite graph; {graph.path} is not one")
    deleted = graph.delete_tree(root.id)
    kept = _blob_keys(graph, graph.roots(limit=10**6))
    # Files beside a SQLite graph, rows of a server's blob table.
    unit = "file(s)" if hasattr(graph.blobs, "path_for") else "blob row(s)"
    removed = 0
    for key in sorted(_keys_of(deleted) - kept):
        if graph.blobs.delete(key):
            removed += 1
    topic = root.data.get("topic", "") if isinstance(root.data, dict) else ""
    page = out / f"{page_file_name(root.name, topic)}.html"
    said = ""
    if page.is_file():
        page.unlink()
        said = f"; {page} removed"
    print(
        f"deleted {describe(root)}: {len(deleted)} entities, {removed} stored {unit}{said}",
        flush=True,
    )
    data = root.data if isinstance(root.data, dict) else {}
    return {"topic": topic, "customization": data.get("customization"), "seed": data.get("seed")}


def _keys_of(nodes: list[Any]) -> set[str]:
    keys = set()
    for node in nodes:
        for value in (node.output, node.data):
            if isinstance(value, dict):
                for field in ("object_key", "html_key"):
                    if isinstance(value.get(field), str):
                        keys.add(value[field])
    return keys


def _blob_keys(graph: Any, roots: list[Any]) -> set[str]:
    keys: set[str] = set()
    for root in roots:
        keys |= _keys_of([root, *graph.descendants(root.id)])
    return keys


# customization key -> the run flag's attribute
_OPTIONS = {
    "illustration_count": "images",
    "style": "style",
    "image_quality": "quality",
    "aspect_ratio": "aspect",
    "age_range": "age_range",
}


def _run_again(args: argparse.Namespace, story: dict[str, Any]) -> int:
    """Run the deleted story's topic again, with its options unless a flag says otherwise."""
    from storylab.cli import run as cli_run

    args.topics = [story["topic"]]
    for key, value in (story.get("customization") or {}).items():
        attr = _OPTIONS.get(key)
        if attr and getattr(args, attr, None) is None:
            setattr(args, attr, value)
    if args.seed is None and isinstance(story.get("seed"), int):
        args.seed = story["seed"]  # made again as it was, unless --seed says otherwise
    return cli_run.main(args)
