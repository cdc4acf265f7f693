"""``storylab notebooks [DEST]``: copy the tutorial notebooks out for a learner.

The copying rules (what is copied, updated, or refused because the learner
edited it) are ``storylab._tutorial_files``; this module is the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from storylab._tutorial_files import DEFAULT_DEST, TutorialFilesError, copy_tutorial
from storylab.cli.args import EXIT_FAILED, EXIT_OK

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dest",
        nargs="?",
        default=DEFAULT_DEST,
        metavar="DEST",
        help=f"folder to copy the tutorial into (default: ./{DEFAULT_DEST}; created if needed)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace copies you have edited with the shipped notebooks",
    )


def _lab_available() -> bool:
    from importlib.util import find_spec

    return find_spec("jupyterlab") is not None


def main(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    try:
        done = copy_tutorial(dest, force=args.force)
    except TutorialFilesError as exc:
        print(f"storylab notebooks: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    replaced = done.edited if args.force else []
    print(
        f"{dest}: {len(done.copy)} copied, {len(done.update)} updated, "
        f"{len(done.same)} already up to date"
        + (f", {len(replaced)} edited copies replaced ({', '.join(replaced)})" if replaced else "")
    )
    print("Start the tutorial with:")
    print(f"  cd {shlex.quote(str(dest))} && jupyter lab")
    if not _lab_available():
        print('(JupyterLab is not installed here: pip install "storylab[lab]" first)')
    return EXIT_OK
