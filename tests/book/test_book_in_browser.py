"""The published book, opened page by page in a real headless Chromium.

Every page of the built book is loaded from disk with all network access
refused, so the book is proved to work offline. On each page: no console
error, no uncaught exception, no request leaving the book; every image
loaded. On each chapter: the progress panels' static snapshots are shown,
one for each snapshot the executed notebook holds; the exercise's "✘ not
yet" answer is shown while no solution cell and no "✔ right" answer is; the
Binder launch button opens this chapter in the repository named by
pyproject.toml. A screenshot of each page is kept in build/book-screenshots/.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "build" / "book-screenshots"
SNAPSHOT_CLASS = "storylab-progress-snapshot"
HIDING_TAGS = {"remove-cell", "hide-cell"}

pytestmark = [pytest.mark.book, pytest.mark.slow]


def project_urls() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]


def expected_binder_url(chapter: str) -> str:
    """The Binder link for a chapter, from pyproject's Source URL (github.com/ORG/REPO)."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", project_urls()["Source"])
    assert match, "pyproject's Source URL should be a GitHub repository"
    org, repo = match.groups()
    return (
        f"https://mybinder.org/v2/gh/{org}/{repo}/main"
        f"?urlpath=lab/tree/notebooks/{chapter}.ipynb"
    )


def test_the_start_here_binder_url_is_the_projects():
    assert expected_binder_url("00_start_here") == project_urls()["Binder"]


def pages(html: Path) -> list[str]:
    found = sorted(
        str(p.relative_to(html)) for p in html.rglob("*.html") if "_static" not in p.parts
    )
    # index.html at the root is Jupyter Book's redirect to docs/index.html.
    return [p for p in found if p != "index.html"]


def staged_notebook(html: Path, chapter: str) -> nbformat.NotebookNode:
    """The executed notebook the chapter was built from (Jupyter Book keeps it in _sources)."""
    return nbformat.read(html / "_sources" / "notebooks" / f"{chapter}.ipynb", as_version=4)


def shown(cell) -> bool:
    return not {"remove-cell", "remove-output"} & set(cell.metadata.get("tags", []))


def snapshots_in(nb) -> int:
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or not shown(cell):
            continue
        for out in cell.get("outputs", []):
            if SNAPSHOT_CLASS in str(out.get("data", {}).get("text/html", "")):
                count += 1
    return count


class PageReport:
    """What one page did while it loaded."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.blocked: list[str] = []
        page.on(
            "console",
            lambda msg: self.errors.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "assert")
            else None,
        )
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on(
            "requestfailed",
            lambda req: None
            if req.url in self.blocked
            else self.errors.append(f"failed to load {req.url}: {req.failure}"),
        )

        def only_local(route):
            url = route.request.url
            if url.startswith(("file://", "data:", "blob:")):
                route.continue_()
            else:
                self.blocked.append(url)
                route.abort()

        page.route("**/*", only_local)


@pytest.fixture(scope="module")
def opened(browser, book_html):
    """Every page opened once: name -> (report, facts read from the page)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in pages(book_html):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        report = PageReport(page)
        page.goto((book_html / name).as_uri(), wait_until="load")
        page.wait_for_load_state("networkidle")
        facts = page.evaluate(
            """(snapshotClass) => {
                const visible = (el) => {
                    const r = el.getBoundingClientRect();
                    const s = getComputedStyle(el);
                    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden'
                        && s.display !== 'none' && el.closest('details:not([open])') === null;
                };
                const imgs = [...document.querySelectorAll('article img, main img')];
                const binder = [...document.querySelectorAll('a[href*="mybinder.org"]')];
                const texts = (needle) => [...document.querySelectorAll('main *')]
                    .filter((el) => el.children.length === 0 && el.textContent.includes(needle)
                                    && visible(el)).length;
                return {
                    images: imgs.map((i) => ({src: i.getAttribute('src'), ok: i.complete
                        && i.naturalWidth > 0, visible: visible(i)})),
                    snapshots: [...document.querySelectorAll('.' + snapshotClass)]
                        .map((el) => visible(el)),
                    binder: binder.map((a) => a.href),
                    right: texts('✔ right'),
                    notYet: texts('✘ not yet'),
                    code: [...document.querySelectorAll('div.cell')]
                        .filter((el) => visible(el)).map((el) => el.innerText),
                    mathjaxErrors: document.querySelectorAll('.MathJax_Error, merror').length,
                    wideTables: [...document.querySelectorAll('article table')]
                        .filter((t) => t.scrollWidth > t.parentElement.clientWidth + 2).length,
                };
            }""",
            SNAPSHOT_CLASS,
        )
        page.screenshot(path=str(SHOTS / (name.replace("/", "__") + ".png")), full_page=True)
        results[name] = (report, facts)
        context.close()
    return results


def chapters(book_html: Path) -> list[str]:
    return sorted(p.stem for p in (book_html / "notebooks").glob("*.html"))


def test_the_book_has_every_chapter_and_the_reference_pages(book_html):
    expected = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))
    assert chapters(book_html) == expected
    for page in ("docs/index.html", "docs/glossary.html", "docs/api_map.html",
                 "docs/benchmarks.html", "docs/architecture.html"):
        assert (book_html / page).is_file(), f"{page} was not built"


def test_every_page_loads_offline_without_errors(opened):
    problems = []
    for name, (report, facts) in opened.items():
        problems += [f"{name}: {e}" for e in report.errors]
        problems += [f"{name}: tried to load {u} from the network" for u in report.blocked]
        if facts["mathjaxErrors"]:
            problems.append(f"{name}: {facts['mathjaxErrors']} formulas failed to typeset")
    assert len(opened) >= 12, f"only {len(opened)} pages were opened"
    assert problems == [], "\n".join(problems)


def test_every_image_loads(opened):
    broken = [
        f"{name}: {img['src'][:80]}"
        for name, (_, facts) in opened.items()
        for img in facts["images"]
        if not img["ok"]
    ]
    assert broken == [], "images that did not load:\n" + "\n".join(broken)
    figures = sum(len(facts["images"]) for _, facts in opened.values())
    assert figures >= 15, f"only {figures} images in the whole book; were the figures dropped?"


def test_the_progress_panels_static_snapshots_show(opened, book_html):
    seen_any = 0
    for chapter in chapters(book_html):
        _, facts = opened[f"notebooks/{chapter}.html"]
        expected = snapshots_in(staged_notebook(book_html, chapter))
        assert len(facts["snapshots"]) == expected, (
            f"{chapter}: {len(facts['snapshots'])} progress snapshots on the page, "
            f"the executed notebook holds {expected}"
        )
        assert all(facts["snapshots"]), f"{chapter}: a progress snapshot is hidden"
        seen_any += expected
    assert seen_any >= 5, "hardly any progress panel left a snapshot in the executed notebooks"


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_no_solution_is_visible_but_the_exercises_are(opened, book_html):
    for chapter in chapters(book_html):
        _, facts = opened[f"notebooks/{chapter}.html"]
        assert facts["right"] == 0, f"{chapter}: a '✔ right' answer is visible"
        assert facts["notYet"] >= 1, (
            f"{chapter}: the exercise's '✘ not yet' answer is not visible "
            "(so this check could not see a solution's output either)"
        )
        nb = staged_notebook(book_html, chapter)
        solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
        assert solutions, f"{chapter}: no solution cell to hide"
        visible_code = [_squash(t) for t in facts["code"]]
        for cell in solutions:
            assert HIDING_TAGS & set(cell.metadata.get("tags", [])), (
                f"{chapter}: solution cell {cell.get('id')} has no remove-cell/hide-cell tag"
            )
            lines = [ln for ln in cell.source.splitlines() if ln.strip()
                     and not ln.lstrip().startswith("#")]
            body = _squash(lines[0]) if lines else ""
            assert body, f"{chapter}: solution cell {cell.get('id')} is empty"
            leaked = [t for t in visible_code if body in t]
            assert leaked == [], f"{chapter}: the solution ({body!r}) is visible"


def test_the_launch_buttons_open_the_chapter_on_binder(opened, book_html):
    for chapter in chapters(book_html):
        _, facts = opened[f"notebooks/{chapter}.html"]
        assert facts["binder"], f"{chapter}: no Binder launch button"
        assert set(facts["binder"]) == {expected_binder_url(chapter)}, (
            f"{chapter}: Binder buttons {facts['binder']}"
        )


def test_the_reference_tables_fit_the_page(opened):
    wide = {name: facts["wideTables"] for name, (_, facts) in opened.items()
            if name.startswith("docs/") and facts["wideTables"]}
    assert wide == {}, f"tables wider than the page (readers must scroll sideways): {wide}"


def test_the_landing_page_teaches_the_path(opened, book_html):
    text = (book_html / "docs" / "index.html").read_text(encoding="utf-8")
    for heading in ("Prerequisites", "The learning path"):
        assert heading in text
    for chapter in chapters(book_html):
        assert f"../notebooks/{chapter}.html" in text, f"the landing page skips {chapter}"
    api = (book_html / "docs" / "api_map.html").read_text(encoding="utf-8")
    for name in ("appendOrRetrieveCall", "parallelCalls", "runTasks()", "FINAL",
                 "append_or_retrieve_call", "parallel_calls", "run_tasks", "TaskEventType"):
        assert name in api, f"the API map lacks {name}"
    glossary = (book_html / "docs" / "glossary.html").read_text(encoding="utf-8")
    assert glossary.count('<dt id="term-') >= 10


def test_the_architecture_page_is_in_the_book_with_its_sections(opened, book_html):
    report, facts = opened["docs/architecture.html"]
    assert report.errors == [] and facts["wideTables"] == 0
    text = (book_html / "docs" / "architecture.html").read_text(encoding="utf-8")
    for heading in ("Layers and the rule between them", "Not yet in the target layout",
                    "Module map", "Path 1: one unit of capacity", "Path 2: one image prompt"):
        assert heading in text, f"the architecture page lacks {heading!r}"
    # Its "#not-yet-in-the-target-layout" link, as written for GitHub, lands on the heading.
    assert 'href="#not-yet-in-the-target-layout"' in text
    assert 'id="not-yet-in-the-target-layout"' in text
    index = (book_html / "docs" / "index.html").read_text(encoding="utf-8")
    assert 'href="architecture.html"' in index, "the table of contents does not list it"


def test_start_here_shows_the_glossary_and_the_api_table_as_tables(opened, book_html):
    text = (book_html / "notebooks" / "00_start_here.html").read_text(encoding="utf-8")
    tables = re.findall(r"<table.*?</table>", text, flags=re.S)
    assert any("capacity tree" in t for t in tables), "the glossary is not a table"
    assert any("parallelCalls" in t and "parallel_calls" in t for t in tables), (
        "the chapter-to-Python table is not a table"
    )
    assert opened["notebooks/00_start_here.html"][1]["wideTables"] == 0
