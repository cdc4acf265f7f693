"""The glossary and the chapter-to-Python table have one source, shown in two places.

``storylab/tutorial/_overview.py`` holds them; notebook 00 displays them
(``glossary_table()``, ``api_table()``) and the book's pages docs/glossary.md
and docs/api_map.md hold them rendered by docs/reference_pages.py. These tests
read both places back and compare them, so neither can drift from the other.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

from storylab.tutorial import API_TABLE, GLOSSARY, api_table, glossary_table

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _reference_pages():
    spec = importlib.util.spec_from_file_location("reference_pages", DOCS / "reference_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(page: str) -> str:
    pages = _reference_pages()
    text = (DOCS / page).read_text(encoding="utf-8")
    assert text.count(pages.BEGIN) == 1 and text.count(pages.END) == 1, page
    return text.split(pages.BEGIN, 1)[1].split(pages.END, 1)[0].strip("\n")


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _glossary_of_the_book() -> dict[str, str]:
    """Term -> meaning, read from the {glossary} block of docs/glossary.md."""
    block = _block("glossary.md")
    lines = block.splitlines()
    assert lines[0] == "```{glossary}" and lines[-1] == "```"
    terms: dict[str, list[str]] = {}
    for line in lines[1:-1]:
        if line and not line.startswith(" "):
            terms[line] = []
        elif line.strip():
            terms[list(terms)[-1]].append(line.strip())
    return {term: _squash(" ".join(words)) for term, words in terms.items()}


def _glossary_of_the_notebook() -> dict[str, str]:
    """Term -> meaning, read from the table notebook 00 displays."""
    rows = glossary_table().data.splitlines()
    assert rows[0] == "| term | meaning |"
    found = {}
    for row in rows[2:]:
        match = re.fullmatch(r"\| \*\*(.+?)\*\* \| (.*) \|", row)
        assert match, row
        found[match.group(1)] = _squash(match.group(2))
    return found


def test_the_book_and_notebook_00_show_the_same_glossary():
    book, notebook = _glossary_of_the_book(), _glossary_of_the_notebook()
    assert list(book) == list(notebook) == list(GLOSSARY)
    assert book == notebook
    assert len(book) >= 20 and all(meaning.endswith(".") for meaning in book.values())


def test_the_book_and_notebook_00_show_the_same_api_table():
    shown = api_table().data
    assert _block("api_map.md") == shown
    rows = [line for line in shown.splitlines()[2:] if line.startswith("| ")]
    assert len(rows) == len(API_TABLE)
    for name in ("appendOrRetrieveCall", "parallelCalls", "runTasks()", "updateEntityData",
                 "append_or_retrieve_call", "parallel_calls", "run_tasks", "TaskEventType"):
        assert name in shown, name


def test_the_pages_are_up_to_date_and_the_check_sees_a_change(tmp_path, monkeypatch):
    pages = _reference_pages()
    assert pages.stale() == [], "run python docs/reference_pages.py"
    for page in ("glossary.md", "api_map.md"):
        (tmp_path / page).write_text((DOCS / page).read_text(encoding="utf-8"), "utf-8")
    assert pages.stale(tmp_path) == []
    # A meaning changed at the source makes the page stale; writing brings it back.
    monkeypatch.setitem(GLOSSARY, "unit", "one permission to run one task, reworded")
    assert pages.stale(tmp_path) == ["glossary.md"]
    assert pages.write(tmp_path) == ["glossary.md"]
    assert "One permission to run one task, reworded." in (tmp_path / "glossary.md").read_text()
    assert pages.stale(tmp_path) == []
    # The prose around the block is the page's own and is kept.
    head = (DOCS / "glossary.md").read_text().split(pages.BEGIN)[0]
    assert (tmp_path / "glossary.md").read_text().startswith(head)


def test_a_page_without_its_markers_is_refused(tmp_path):
    pages = _reference_pages()
    (tmp_path / "glossary.md").write_text("# Glossary\n\nno markers\n", "utf-8")
    (tmp_path / "api_map.md").write_text((DOCS / "api_map.md").read_text(), "utf-8")
    with pytest.raises(ValueError, match="glossary.md needs one"):
        pages.stale(tmp_path)


def test_notebook_00_displays_the_source_and_keeps_no_copy_of_its_own():
    nb = nbformat.read(REPO / "notebooks" / "00_start_here.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any(src.strip().endswith("glossary_table()") for src in code)
    assert any(src.strip().endswith("api_table()") for src in code)
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for header in ("| term |", "TypeScript) |"):
            assert header not in cell.source, (
                f"cell {cell.get('id')} holds a table of its own: show the kit's instead"
            )
        assert "```{glossary}" not in cell.source


def _code_of_every_notebook() -> dict[int, str]:
    code = {}
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code[int(path.name[:2])] = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return code


def test_the_api_tables_where_column_names_exactly_the_notebooks_whose_code_uses_the_name():
    code = _code_of_every_notebook()
    assert len(code) >= 10
    wrong = []
    for row in API_TABLE:
        if not row.shown_by:
            assert not row.notebooks and not row.python_name, (
                f"{row.typescript}: a row naming Python needs shown_by, the pattern to look for")
            continue
        found = tuple(n for n, src in code.items() if re.search(row.shown_by, src))
        if found != row.notebooks:
            wrong.append(f"{row.typescript}: the table says {row.notebooks}, the code of "
                         f"notebooks {found} uses it")
        for label, pattern, numbers in row.parts:
            # each name of a several-name row: where its own code is, and named in the row
            assert label.strip("`").lstrip(".") in row.python, (row.typescript, label)
            found = tuple(n for n, src in code.items() if re.search(pattern, src))
            if found != numbers:
                wrong.append(f"{row.typescript}, {label}: the table says {numbers}, the code "
                             f"of notebooks {found} uses it")
        if row.parts:
            union = tuple(sorted({n for _, _, numbers in row.parts for n in numbers}))
            assert union == row.notebooks, (row.typescript, union, row.notebooks)
    assert not wrong, "\n".join(wrong)
    # an empty "where" cell is empty, not "notebook " or "notebooks  and "
    shown = api_table().data
    # notebook 0's exercise imports Return for the learner's line: its row says so; a name of
    # a several-name row that no notebook writes says where it is used instead of vanishing
    assert "| notebooks 0, 2, 5 and 9 |" in next(
        ln for ln in shown.splitlines() if ln.startswith("| `return result`"))
    assert "`.ERROR`: notebook 5; `.INTERMEDIATE`: only the package's own code |" in shown
    for row in API_TABLE:
        if not row.notebooks:
            line = next(ln for ln in shown.splitlines() if ln.startswith(f"| {row.typescript} |"))
            assert line.rstrip().endswith("|  |"), line
