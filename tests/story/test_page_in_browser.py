"""The finished story page in a real browser: it fetches nothing, and a failed picture shows.

A writer that smuggles every loading trick it can into its HTML runs through
the real pipeline; the stored page is opened in headless Chromium while a
real HTTP server on 127.0.0.1 counts every request that reaches it. The
same tricks, unsanitized, make Chromium call that server (the control), so
the check can see a page that loads something.

Without Chromium or Playwright the tests skip, saying what is missing; with
``CI`` set they fail instead, so a CI run cannot pass without them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from storylab.story.backends import SimulatedImageBackend, SimulatedTextBackend
from storylab.story.entities import create_story, story_html
from storylab.story.html import MISSING_IMAGE_TEXT
from storylab.story.models import StoryOutput
from storylab.story.settings import StorySettings, use_settings

# What each trick loads, by name; {u} is a URL on the counting server.
TRICKS = {
    "style-url": '<p style="background:url({u})">t</p>',
    "style-escaped-url": '<p style="background:u\\72l({u})">t</p>',
    "style-escaped-url-2": '<p style="background-image:\\75rl({u})">t</p>',
    "style-image-set": "<p style=\"background:image-set('{u}' 1x)\">t</p>",
    "style-element-url": "<style>body{{background:url({u})}}</style>",
    "style-element-import": '<style>@import "{u}";</style>',
    "style-element-escaped-import": '<style>@\\69mport "{u}";</style>',
    "link-stylesheet": '<link rel="stylesheet" href="{u}">',
    "img": "<img src={u}>",
    "img-mixed-case": '<ImG SrC="{u}">',
    "img-srcset": '<img srcset="{u} 1x">',
    "picture-source": '<picture><source srcset="{u}"><img></picture>',
    "svg-image": '<svg><image href="{u}" width="9" height="9"/></svg>',
    "iframe": '<iframe src="{u}"></iframe>',
    "object": '<object data="{u}"></object>',
    "embed": '<embed src="{u}">',
    "video-poster": '<video poster="{u}"></video>',
    "audio": '<audio src="{u}" preload="auto"></audio>',
    "input-image": '<input type="image" src="{u}">',
    "table-background": '<table background="{u}"><tr><td>t</td></tr></table>',
    "script": '<script src="{u}"></script>',
}
# These change the whole document, so the control loads each on its own page.
DOCUMENT_TRICKS = {
    "meta-refresh": '<meta http-equiv="refresh" content="0;url={u}">',
    "base-href": '<base href="{u}/"><img src="relative.png">',
}


def _chromium() -> str:
    """The Chromium to drive, or skip (fail under CI) saying what is missing."""
    problems = []
    path = (
        os.environ.get("STORYLAB_CHROMIUM")
        or (shutil.which("chromium") if not Path("/usr/bin/chromium").exists() else None)
        or "/usr/bin/chromium"
    )
    if not Path(path).exists():
        problems.append("Chromium not found (apt-get install -y chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        problems.append(f"Playwright is not importable ({exc}); pip install -e '.[test]'")
    if problems:
        reason = "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(f"the browser check of the story page needs: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


class _Counter(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.hits.append(self.path)
        body = b"p{color:red}" if self.path.endswith(".css") else b"x"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """(base URL, paths requested so far) of a real HTTP server on 127.0.0.1."""
    hits: list[str] = []
    handler = type("Handler", (_Counter,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _tricks(base: str, tricks: dict[str, str]) -> str:
    return "".join(t.format(u=f"{base}/{name}") for name, t in tricks.items())


async def _open(browser, html: str) -> tuple[object, list[str]]:
    """A new page showing ``html`` once the network is quiet, and every URL it requested."""
    page = await browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.set_content(html, wait_until="load")
    await page.wait_for_load_state("networkidle")
    return page, requested


async def _launch(pw, executable: str):
    return await pw.chromium.launch(
        executable_path=executable,
        headless=True,
        args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    )


async def test_control_the_tricks_unsanitized_do_make_chromium_fetch(counting_server):
    executable = _chromium()
    from playwright.async_api import async_playwright

    base, hits = counting_server
    expected = set(TRICKS) | set(DOCUMENT_TRICKS)
    async with async_playwright() as pw:
        browser = await _launch(pw, executable)
        try:
            await _open(browser, f"<!DOCTYPE html><body>{_tricks(base, TRICKS)}</body>")
            for name, trick in DOCUMENT_TRICKS.items():
                page = await browser.new_page()
                await page.set_content(_tricks(base, {name: trick}), wait_until="load")
            # A refresh or a late fetch may land after "load": wait for them (bounded).
            for _ in range(200):
                if expected <= {h.strip("/").split("/")[0] for h in hits}:
                    break
                await asyncio.sleep(0.05)
        finally:
            await browser.close()
    missing = expected - {h.strip("/").split("/")[0] for h in hits}
    assert not missing, f"these tricks fetched nothing even unsanitized: {sorted(missing)}"


class _SmugglingWriter(SimulatedTextBackend):
    """The offline writer, with every trick above put into its story's HTML."""

    def __init__(self, base: str) -> None:
        super().__init__(time_scale=0.001)
        self.base = base

    async def write_story(self, topic, customization=None) -> StoryOutput:
        story = await super().write_story(topic, customization)
        smuggled = _tricks(self.base, TRICKS) + _tricks(self.base, DOCUMENT_TRICKS)
        html = story.html_content.replace("<body>", "<body>" + smuggled, 1)
        html = html.replace("</head>", _tricks(self.base, DOCUMENT_TRICKS) + "</head>", 1)
        return StoryOutput.from_json({**story.to_json(), "html_content": html})


async def test_the_stored_page_fetches_nothing_and_shows_the_failed_picture(graph, counting_server):
    executable = _chromium()
    from playwright.async_api import async_playwright

    base, hits = counting_server
    settings = StorySettings(
        images=SimulatedImageBackend(time_scale=0.001, fail=["IMAGE_2"]),
        text=_SmugglingWriter(base),
    )
    topic = "a cat {{IMAGE_2}} <b>who</b> sings"
    with use_settings(settings):
        result = await create_story(graph, topic, {"illustration_count": 3}).run()
    assert result["stage"] == "completed_with_errors"
    html = story_html(graph, result)

    async with async_playwright() as pw:
        browser = await _launch(pw, executable)
        try:
            page, requested = await _open(browser, html)
            shown = await page.evaluate(
                """() => {
                  const box = document.querySelector('.storylab-missing');
                  const style = box && getComputedStyle(box);
                  return {
                    text: document.body.innerText,
                    pictures: [...document.images].map(i => [i.naturalWidth, i.src.slice(0, 22)]),
                    box: box && {text: box.innerText, border: style.borderTopStyle,
                                 height: box.getBoundingClientRect().height},
                    styles: document.styleSheets.length,
                  };
                }"""
            )
        finally:
            await browser.close()

    assert hits == []  # the counting server never heard from the page
    assert [u for u in requested if not u.startswith(("data:", "about:"))] == []
    # The two pictures that were drawn are there, inlined, and decode to their stored size.
    widths = [
        c.output["width"]
        for c in graph.children(graph.roots()[0].id)
        if c.type == "ImageGenerationEntity" and c.status == "Completed"
    ]
    assert shown["pictures"] == [[w, "data:image/png;base64,"] for w in widths] and len(widths) == 2
    assert shown["styles"] == 1  # storylab's own stylesheet only
    box = shown["box"]
    assert box["border"] == "dashed" and box["height"] > 40
    assert box["text"].startswith(MISSING_IMAGE_TEXT) and "Illustration 2: " in box["text"]
    assert "A story about a cat {{IMAGE_2}} <b>who</b> sings" in shown["text"]
    # Wherever {{IMAGE_2}} shows, it is part of the topic, as the user wrote it.
    assert shown["text"].count("{{IMAGE_2}}") == shown["text"].count(topic) >= 1
