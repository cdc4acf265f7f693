"""Write the glossary and the API map into their book pages from their one source.

The terms and the table live in ``storylab/tutorial/_overview.py`` (``GLOSSARY``
and ``API_TABLE``), which notebook 00 displays. The pages docs/glossary.md and
docs/api_map.md hold the same data, rendered, between two marker comments; the
prose around the markers is the page's own.

    python docs/reference_pages.py           # rewrite the rendered blocks
    python docs/reference_pages.py --check   # exit 1 and name the pages that differ

docs/prepare_book.py refuses to build the book from pages that differ, and
tests/test_tutorial_reference.py fails on them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BEGIN = (
    "<!-- begin: written by docs/reference_pages.py from storylab/tutorial/_overview.py;"
    " edit it there, not here -->"
)
END = "<!-- end: written by docs/reference_pages.py -->"


def blocks() -> dict[str, Callable[[], str]]:
    """Page name -> the function that renders its block."""
    from storylab.tutorial._overview import api_markdown, glossary_myst

    return {"glossary.md": glossary_myst, "api_map.md": api_markdown}


def with_block(text: str, block: str, page: str = "page") -> str:
    """``text`` with what stands between the markers replaced by ``block``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{page} needs one {BEGIN!r} line and one {END!r} line after it")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def stale(docs: Path = DOCS) -> list[str]:
    """The pages whose rendered block differs from the source."""
    out = []
    for page, render in blocks().items():
        text = (docs / page).read_text(encoding="utf-8")
        if with_block(text, render(), page) != text:
            out.append(page)
    return out


def write(docs: Path = DOCS) -> list[str]:
    """Rewrite every page whose block is stale; returns their names."""
    changed = stale(docs)
    for page in changed:
        path = docs / page
        path.write_text(with_block(path.read_text(encoding="utf-8"), blocks()[page](), page),
                        encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only check, change nothing")
    args = parser.parse_args(argv)
    if args.check:
        differ = stale()
        for page in differ:
            print(f"docs/{page} differs from storylab/tutorial/_overview.py: "
                  "run python docs/reference_pages.py", file=sys.stderr)
        return 1 if differ else 0
    for page in write():
        print(f"rewrote docs/{page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
