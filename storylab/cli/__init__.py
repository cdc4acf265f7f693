"""The ``storylab`` command: wires the layers together.

The command line is this package, one module per command (``run``,
``serve-images``, ``eg``, ``stories``, ``demo``, ``notebooks``), each exposing
``configure(parser)`` and ``main(args) -> int``, with the shared argument
checks and exit codes in :mod:`storylab.cli.args`; this module collects them.
It is the top layer: it may import every other layer, and no other layer
imports it. The command modules import only the standard library and the light
layers at the top (plotting, widgets, HTTP and imaging libraries are imported by the
code that runs a command), so ``storylab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from storylab.cli import demo, eg, notebooks, run, serve, stories
from storylab.cli.args import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PIPE,
    EXIT_USAGE,
)

# name -> (module, help), in the order `storylab --help` lists them.
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "run": (run, "generate illustrated stories (resumes an interrupted run)"),
    "serve-images": (
        serve,
        "serve the simulated models (images, chat, moderations) over an OpenAI-compatible API",
    ),
    "eg": (eg, "inspect the entity graph (list, tree, node, check, export, export-pictures)"),
    "stories": (stories, "delete a story, or redo it from the start"),
    "demo": (demo, "a small scheduling demo: five groups under a shared limit"),
    "notebooks": (notebooks, "copy the tutorial notebooks out, to open in JupyterLab"),
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose refusal is one line (argparse's usage block is
    left to ``--help``); subcommand parsers are made of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def version() -> str:
    """The installed distribution's version, or the package's own when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("storylab")
    except PackageNotFoundError:
        from storylab import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="storylab",
        description="See and learn entity-based parallelism.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"storylab {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(cmd)
        cmd.set_defaults(_main=module.main)
        if name == "eg":  # the graph's entities are the story's: list them in its words
            from storylab.story import words

            cmd.set_defaults(
                describe=words.describe, summarize=words.story_summary, reword=words.user_line
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a refused command line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "_main", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from storylab.errors import StorylabError

    try:
        code = int(args._main(args) or 0)
        # What is still buffered goes out here, where a reader that left is
        # caught below, not at interpreter exit ("Exception ignored ...").
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StorylabError as exc:
        # A graph that cannot be used, a refused argument: the user's to fix,
        # not a bug (see storylab.errors): one line.
        print(f"storylab {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`storylab run | head`): stop quietly, as
        # command-line tools do, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
