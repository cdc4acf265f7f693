"""The ``storylab`` command: wires the layers together.

Each subcommand lives next to the layer it belongs to and exposes
``configure(parser)`` and ``main(args) -> int``; this module only collects
them, so ``storylab --help`` stays fast and imports no plotting library.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# name -> (module, help). A module that is not importable is left out.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("storylab.story.cli_run", "generate illustrated stories (resumes an interrupted run)"),
    "serve-images": (
        "storylab.story.cli_serve",
        "serve the simulated image generator over an OpenAI-compatible HTTP API",
    ),
    "eg": ("storylab.entities.cli", "inspect the entity graph (tree, node, list)"),
    "demo": ("storylab._demo", "a small scheduling demo: five groups under a shared limit"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="storylab",
        description="See and learn entity-based parallelism.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not exc.name or not module_name.startswith(exc.name):
                raise
            continue
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(cmd)
        cmd.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`storylab run | head`): stop quietly, as
        # command-line tools do, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
