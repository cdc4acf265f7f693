"""``show_story`` shows the story inside a notebook without restyling the notebook.

The story page carries its own stylesheet (``body``, ``h1``, ``.page``...).
Shown inline, that stylesheet must reach only the story: first read from the
markup (every rule starts at the story's wrapper, no document-level element is
left), then in a real headless Chromium, where a page standing in for a
notebook (a body, a heading, a paragraph and elements with the story's own
class names) is measured before and after the story's output is inserted the
way JupyterLab inserts an HTML output.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from storylab.story.html import PAGE_CSS, STORY_CLASS, scope_css, story_fragment, story_page
from storylab.tutorial import fresh_graph, run_stories, show_story, simulated_settings

sys.path.insert(0, str(Path(__file__).resolve().parent / "ui"))

import labharness  # noqa: E402

SCALE = 0.002


async def _shown(tmp_path, **settings) -> str:
    graph = fresh_graph("show", home=tmp_path)
    try:
        run = await run_stories(
            graph,
            ["a kitten who paints the sea"],
            settings=simulated_settings(SCALE, **settings),
            customization={"illustration_count": 2},
            panel=None,
        )
        return show_story(graph, run.result).data
    finally:
        graph.close()


def _rules(html: str) -> list[tuple[str, str]]:
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html, flags=re.S | re.I)
    assert len(styles) == 1, f"{len(styles)} <style> elements in the output"
    return re.findall(r"([^{}]+)\{([^{}]*)\}", styles[0])


async def test_the_shown_story_is_a_fragment_whose_every_rule_starts_at_its_wrapper(tmp_path):
    shown = await _shown(tmp_path)
    for tag in ("<html", "<head", "<body", "<title", "<!doctype"):
        assert tag not in shown.lower(), f"the output still holds a document's {tag}>"
    assert shown.startswith(f'<div class="{STORY_CLASS}"')
    assert shown.count('src="data:image/png;base64,') == 2
    rules = _rules(shown)
    assert len(rules) == PAGE_CSS.count("{")
    for selectors, _ in rules:
        for selector in selectors.split(","):
            selector = selector.strip()
            assert selector == f".{STORY_CLASS}" or selector.startswith(f".{STORY_CLASS} "), (
                f"the rule {selector!r} reaches outside the story"
            )


def test_scope_css_rewrites_document_selectors_and_refuses_what_it_cannot_scope():
    css = "body { margin: 0 }\nh1, .page p { color: red }\nbody .x { top: 0 }"
    assert scope_css(css, "s") == (
        ".s { margin: 0 }\n.s h1, .s .page p { color: red }\n.s .x { top: 0 }"
    )
    for bad in ("@media print { h1 { color: red } }", "h1 { color: red } stray", "@import 'x';"):
        with pytest.raises(ValueError, match="cannot scope"):
            scope_css(bad, "s")
    with pytest.raises(ValueError, match="scope must be a CSS class name"):
        scope_css("h1 {}", "a b")
    with pytest.raises(ValueError, match="not a storylab story page"):
        story_fragment("<p>just a paragraph</p>")
    fragment = story_fragment(story_page("T", '<div class="page"><h1>T</h1></div>', lang="fr"))
    assert fragment.startswith(f'<div class="{STORY_CLASS}" lang="fr">')
    assert fragment.endswith('<div class="page"><h1>T</h1></div>\n</div>')


# A stand-in for the notebook: what the story's stylesheet could reach if it
# leaked, including elements with the story's own class names.
HOST = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body { font-family: sans-serif; margin: 8px; background: rgb(255, 255, 255); }
</style></head><body>
<h1 id="host-h1">The notebook</h1>
<p id="host-p">A cell's text.</p>
<div class="page" id="host-page">a notebook element that happens to be called page</div>
<div class="illustration" id="host-illustration">and one called illustration</div>
<div id="output"></div>
</body></html>"""

MEASURE = """() => {
    const read = (el) => {
        const s = getComputedStyle(el);
        return [s.fontFamily, s.fontSize, s.color, s.backgroundColor, s.margin, s.padding,
                s.maxWidth, s.textAlign, s.lineHeight, s.fontStyle].join(' | ');
    };
    const out = {};
    for (const id of ['host-h1', 'host-p', 'host-page', 'host-illustration']) {
        out[id] = read(document.getElementById(id));
    }
    out.body = read(document.body);
    out.html = read(document.documentElement);
    out.title = document.title;
    return out;
}"""

STORY_LOOK = """(cls) => {
    const root = document.querySelector('.' + cls);
    const h1 = root.querySelector('h1');
    const pic = root.querySelector('.illustration');
    const gap = root.querySelector('.storylab-missing');
    return {
        font: getComputedStyle(root).fontFamily,
        background: getComputedStyle(root).backgroundColor,
        h1: h1 ? getComputedStyle(h1).fontFamily : null,
        pictureAlign: pic ? getComputedStyle(pic).textAlign : null,
        gapBorder: gap ? getComputedStyle(gap).borderTopStyle : null,
        images: [...root.querySelectorAll('img')].filter((i) => i.naturalWidth > 0).length,
    };
}"""


@pytest.mark.ui
async def test_in_a_browser_the_story_is_styled_and_nothing_around_it_changes(tmp_path):
    executable = labharness.browser_or_skip()
    from playwright.async_api import async_playwright

    shown = await _shown(tmp_path, images_fail=["IMAGE_2"])
    host = tmp_path / "host.html"
    host.write_text(HOST, encoding="utf-8")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            page = await browser.new_page()
            await page.goto(host.as_uri())
            before = await page.evaluate(MEASURE)
            # As JupyterLab renders a text/html output: the markup set as innerHTML.
            await page.evaluate(
                "(html) => { document.getElementById('output').innerHTML = html; }", shown
            )
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#output img')].every((i) => i.complete)"
            )
            after = await page.evaluate(MEASURE)
            look = await page.evaluate(STORY_LOOK, STORY_CLASS)
        finally:
            await browser.close()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert changed == {}, f"the story's stylesheet changed the page around it: {changed}"
    # ...while the story itself keeps its look.
    assert "Georgia" in look["font"] and "Georgia" in look["h1"]
    assert look["background"] == "rgb(253, 248, 240)"
    assert look["pictureAlign"] == "center"
    assert look["gapBorder"] == "dashed" and look["images"] == 1
