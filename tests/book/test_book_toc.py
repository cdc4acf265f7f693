"""The book's table of contents and the pages staged for it agree with docs/ (no build)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _prepare_book():
    spec = importlib.util.spec_from_file_location("prepare_book", REPO / "docs" / "prepare_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_page_in_docs_is_in_the_table_of_contents_and_staged():
    staged = _prepare_book().toc_pages()
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert sorted(staged) == pages, (
        f"docs/ pages missing from docs/_toc.yml: {sorted(set(pages) - set(staged))}; "
        f"listed there but not in docs/: {sorted(set(staged) - set(pages))}"
    )
    assert staged[0] == "index.md" and "architecture.md" in staged


def test_the_staged_pages_follow_the_table_of_contents(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: docs/index\nparts:\n"
        "  - caption: A\n    chapters:\n      - file: notebooks/00_x\n      - file: docs/b\n"
        "  - caption: B\n    chapters:\n      - file: docs/a\n",
        encoding="utf-8",
    )
    assert _prepare_book().toc_pages(toc) == ["index.md", "b.md", "a.md"]
