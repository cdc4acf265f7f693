"""Turning the writer's HTML and the finished images into one self-contained page.

The page is built in three steps, each with one job:

1. :func:`sanitize_story_html` cleans the writer's HTML with a maintained
   sanitizer (``nh3``, the Python binding of Ammonia). Only structure, text
   and a few harmless attributes survive: no scripts, no event handlers, no
   ``style`` at all and no attribute that names a URL, so nothing the writer
   (or a topic it echoes) wrote can run or make the browser fetch anything.
   On the way in, the *first* occurrence of each of the writer's own
   placeholders (the ones its ``image_prompts`` list declares) becomes an
   empty slot element numbered after its prompt. Any other ``{{IMAGE_N}}``,
   for instance one a user typed into the topic, is plain text and stays text.
2. :func:`assemble_html` fills each slot: with the ``<img>`` of the finished
   picture (inlined as base64), or, for a picture that failed, with a visible
   "this picture could not be drawn" figure that shows the alt text and keeps
   the placeholder in a ``data-placeholder`` attribute.
3. :func:`story_page` wraps the result in storylab's own document: a fixed
   stylesheet (:data:`PAGE_CSS`) and the escaped title.

A page shown inside another document (a notebook's output, the book) is
first cut down to its body by :func:`story_fragment`, with the stylesheet
rewritten by :func:`scope_css` so that it styles the story and nothing
around it.

Only storylab's own markup (the slots, the ``<img>`` tags with ``data:`` URIs
and the stylesheet) is added after sanitizing, so the finished page loads
nothing but what it carries.
"""

from __future__ import annotations

import base64 as _b64
import html as _html
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from storylab.story.models import GeneratedImageResult, ImagePrompt, StoryOutput

__all__ = [
    "IMG_STYLE",
    "MISSING_IMAGE_TEXT",
    "PAGE_CSS",
    "STORY_CLASS",
    "assemble_html",
    "clean_story_html",
    "content_type_for",
    "escape_alt",
    "escape_text",
    "image_tag",
    "missing_image_tag",
    "render_story_page",
    "sanitize_story_html",
    "scope_css",
    "story_fragment",
    "story_page",
]

IMG_STYLE = "max-width:100%; border-radius:8px; box-shadow: 0 2px 8px rgba(0,0,0,0.15);"
MISSING_IMAGE_TEXT = "This picture could not be drawn."

# Braces become character references wherever storylab escapes text, so user
# text put into HTML can never spell a placeholder such as {{IMAGE_2}}.
_BRACES = str.maketrans({"{": "&#123;", "}": "&#125;"})


def _escape_attribute(text: str) -> str:
    # & first, so the references made for the others are not escaped again.
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def escape_alt(text: str) -> str:
    """Escape alt text for a double-quoted attribute: ``&`` first, then ``"``, ``<``, ``>``.

    Single quotes are left alone: the attribute is always double-quoted.
    Braces become references too, as in :func:`escape_text`.
    """
    return _escape_attribute(text).translate(_BRACES)


def escape_text(text: str) -> str:
    """Escape user text for an element body or attribute.

    The five HTML special characters, and also ``{`` and ``}``: a topic such
    as ``a cat {{IMAGE_2}}`` must reach the page as text, never as an image slot.
    """
    return _html.escape(text, quote=True).translate(_BRACES)


def content_type_for(fmt: str | None) -> str:
    """``png`` is ``image/png``; any other format is treated as ``image/jpeg``."""
    return "image/png" if (fmt or "").lower() == "png" else "image/jpeg"


def image_tag(content_type: str, b64: str, alt_text: str) -> str:
    """The exact ``<img>`` element that takes a finished picture's slot."""
    return (
        f'<img src="data:{content_type};base64,{b64}" alt="{escape_alt(alt_text)}" '
        f'style="{IMG_STYLE}" />'
    )


def missing_image_tag(placeholder: str, alt_text: str) -> str:
    """The figure that takes a failed picture's slot.

    Spans (shown as blocks by :data:`PAGE_CSS`) rather than ``<figure>``: the
    slot may sit inside a paragraph, where a block element would split it.
    The placeholder stays in ``data-placeholder`` so the gap is easy to find.
    """
    return (
        f'<span class="storylab-missing" data-placeholder="{_escape_attribute(placeholder)}">'
        f'<span class="storylab-missing-note">{MISSING_IMAGE_TEXT}</span>'
        f'<span class="storylab-missing-alt">{escape_text(alt_text)}</span></span>'
    )


# -- step 1: sanitizing the writer's HTML --------------------------------------------
_ALLOWED_TAGS = frozenset(
    """h1 h2 h3 h4 h5 h6 p div span section article header footer main nav aside em
    strong b i u s small sub sup br hr blockquote ul ol li dl dt dd figure figcaption
    table thead tbody tfoot tr th td caption""".split()
)
# Dropped together with everything inside them. The document's own <title>
# and <style> are storylab's (story_page), so the writer's go too.
_DROPPED_WITH_CONTENT = frozenset(
    """script style title template noscript iframe frame frameset object embed applet
    svg math textarea select xmp noembed noframes""".split()
)
# Nothing that can hold a URL or CSS: no href, src, srcset, style, background...
_ALLOWED_ATTRIBUTES = {"*": {"class", "id", "lang", "dir", "title"}}
_SLOT_ATTRIBUTE = "data-storylab-slot"


def _slot(number: int) -> str:
    return f'<span {_SLOT_ATTRIBUTE}="{number}"></span>'


# Private-use characters that stand for a declared placeholder while nh3
# cleans the HTML: "\ue000" + its index + "\ue001". nh3 keeps them as they are,
# in text and in attribute values alike, so where each one ended up says
# whether the placeholder was in the story's text (a slot) or not (text).
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")
_MARK_CHARS = re.compile(f"[{_MARK_OPEN}{_MARK_CLOSE}]")
# After nh3 every tag is well formed and ">" inside an attribute is "&gt;".
_CLEAN_TAG = re.compile(r"<[^>]*>")


def sanitize_story_html(html_content: str, placeholders: Sequence[str] = ()) -> str:
    """The writer's HTML as a safe body fragment, with its image slots marked.

    ``placeholders`` are the writer's own, in prompt order: the first
    occurrence *in the story's text* of the i-th one becomes slot ``i``
    (counting from 1), to be filled by :func:`assemble_html`. An occurrence
    inside an attribute (``<p title="{{IMAGE_1}}">``) or inside an element
    dropped with its content (``<script>``) takes no slot: it stays text
    there, or goes with the element, and the picture keeps its place in the
    text. What survives sanitizing is text and the elements in a fixed
    allow-list with ``class``, ``id``, ``lang``, ``dir`` and ``title``
    attributes; comments, ``<style>``, ``style=``, links and every URL-bearing
    attribute are removed, so no CSS escape trick (``u\\72l(``,
    ``@\\69mport``) has anywhere to live. Braces in the result are written
    as character references, so no text in it spells a placeholder.
    """
    import nh3  # imported here: `import storylab` stays light

    distinct = list(dict.fromkeys(p for p in placeholders if p))
    open_slots: dict[str, list[int]] = {p: [] for p in distinct}
    for number, placeholder in enumerate(placeholders, start=1):
        if placeholder:
            open_slots[placeholder].append(number)

    # The writer's text may not forge a mark; then every declared placeholder
    # becomes its mark (longest first, so one that contains another wins).
    marked = _MARK_CHARS.sub("", html_content)
    if distinct:
        index = {p: i for i, p in enumerate(distinct)}
        alternatives = sorted(distinct, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(p) for p in alternatives))
        marked = pattern.sub(lambda m: f"{_MARK_OPEN}{index[m.group(0)]}{_MARK_CLOSE}", marked)
    clean = nh3.clean(
        marked,
        tags=set(_ALLOWED_TAGS),
        clean_content_tags=set(_DROPPED_WITH_CONTENT),
        attributes={k: set(v) for k, v in _ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(),
        link_rel=None,
        strip_comments=True,
    )

    def as_text(match: re.Match[str]) -> str:
        return escape_text(distinct[int(match.group(1))])

    def in_text(match: re.Match[str]) -> str:
        waiting = open_slots[distinct[int(match.group(1))]]
        return _slot(waiting.pop(0)) if waiting else as_text(match)

    # Tags and text alternate; a mark in a tag is in an attribute value.
    out: list[str] = []
    pos = 0
    for tag in _CLEAN_TAG.finditer(clean):
        out.append(_MARK.sub(in_text, clean[pos : tag.start()].translate(_BRACES)))
        out.append(_MARK.sub(as_text, tag.group(0).translate(_BRACES)))
        pos = tag.end()
    out.append(_MARK.sub(in_text, clean[pos:].translate(_BRACES)))
    # After nh3, markup is only tags and attribute quotes; braces can be in
    # text or attribute values only, where a character reference means the same.
    return "".join(out)


def clean_story_html(html_content: str, placeholders: Sequence[str]) -> str:
    """The writer's HTML sanitized as :func:`sanitize_story_html` does, with each
    placeholder that took a slot written back as itself.

    For a writer that stores what a model sent: what it keeps is already
    clean (no script, no style, no link), every placeholder left is in the
    text where its picture goes, and rendering it later changes nothing more.
    """
    out = sanitize_story_html(html_content, placeholders)
    for number, placeholder in enumerate(placeholders, start=1):
        out = out.replace(_slot(number), placeholder, 1)
    return out


# -- step 2: filling the slots ---------------------------------------------------------
def assemble_html(
    clean_html: str,
    prompts: Sequence[ImagePrompt],
    images: Iterable[GeneratedImageResult | dict[str, Any]],
    read_bytes: Callable[[str], bytes] | None = None,
) -> str:
    """Put each finished image in its slot, and a "could not be drawn" figure in the rest.

    ``clean_html`` comes from :func:`sanitize_story_html` with the same
    ``prompts``. ``images`` come in completion order; each needs ``base64``
    or an ``object_key`` that ``read_bytes`` turns back into bytes (the blob
    store). An image whose placeholder no prompt declares is ignored.
    """
    by_placeholder: dict[str, GeneratedImageResult] = {}
    for item in images:
        image = (
            item if isinstance(item, GeneratedImageResult) else GeneratedImageResult.from_json(item)
        )
        by_placeholder.setdefault(image.placeholder, image)
    out = clean_html
    for number, prompt in enumerate(prompts, start=1):
        found = by_placeholder.get(prompt.placeholder)
        if found is None:
            # The same fallback alt text a finished picture gets.
            tag = missing_image_tag(prompt.placeholder, prompt.alt_text or "Story illustration")
        else:
            image = found
            b64 = image.base64
            if b64 is None:
                if read_bytes is None or image.object_key is None:
                    raise ValueError(
                        f"image {image.placeholder} has neither base64 nor a readable object_key"
                    )
                b64 = _b64.b64encode(read_bytes(image.object_key)).decode("ascii")
            tag = image_tag(image.content_type, b64, image.alt_text)
        # str.replace with count=1: one slot, and no "$&"-style patterns in the
        # replacement (unlike JavaScript's String.replace).
        out = out.replace(_slot(number), tag, 1)
    return out


# -- step 3: the document ------------------------------------------------------------
PAGE_CSS = """
body { font-family: Georgia, 'Times New Roman', serif; background: #fdf8f0; color: #2d2a26;
       margin: 0; line-height: 1.6; }
.page { max-width: 760px; margin: 0 auto; padding: 40px 32px; page-break-after: always; }
.title-page { text-align: center; }
h1 { font-size: 2.4em; margin-bottom: 0.2em; }
.subtitle { color: #6b5e50; font-style: italic; }
.illustration { text-align: center; margin: 24px 0; }
.moral-page { text-align: center; font-size: 1.2em; }
.storylab-missing { display: flex; flex-direction: column; justify-content: center;
       box-sizing: border-box; width: 100%; max-width: 640px; min-height: 260px; margin: 0 auto;
       padding: 28px; border: 2px dashed #c8b9a6; border-radius: 8px; background: #f5eee3;
       color: #7b6e60; text-align: center; line-height: 1.4; }
.storylab-missing-note { display: block; font-size: 1.05em; font-weight: bold;
       margin-bottom: 8px; }
.storylab-missing-alt { display: block; font-style: italic; font-size: 0.95em; }
""".strip()

_SLOT_LEFT = re.compile(r"<span data-storylab-slot=\"\d+\"></span>")


def story_page(title: str, body_html: str, *, lang: str = "en") -> str:
    """A whole HTML document around a sanitized, assembled body.

    The stylesheet is :data:`PAGE_CSS`, fixed: it styles the writer's
    classes (``page``, ``title-page``, ``subtitle``, ``illustration``,
    ``moral-page``) and the missing-picture figure. Slots nobody filled
    (a body not passed through :func:`assemble_html`) are removed.
    """
    body = _SLOT_LEFT.sub("", body_html)
    return (
        f'<!DOCTYPE html>\n<html lang="{escape_text(lang)}">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape_text(title)}</title>\n<style>\n{PAGE_CSS}\n</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


STORY_CLASS = "storylab-story"
# The selectors that mean "the whole document": in a fragment, the wrapper.
_DOCUMENT_SELECTORS = frozenset({"html", "body", ":root"})
_CSS_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_PAGE_PARTS = re.compile(
    r'<html lang="(?P<lang>[^"]*)">.*?<body>\n(?P<body>.*)\n</body>\s*</html>\s*\Z', re.S
)


def scope_css(css: str, scope: str) -> str:
    """``css`` with every rule limited to the elements of class ``scope`` and inside them.

    ``body``, ``html`` and ``:root`` become the ``.scope`` element itself; any
    other selector is prefixed with ``.scope``, so no rule reaches outside.
    Only plain rules are understood (storylab's stylesheet has no ``@``
    rules): anything else raises :class:`ValueError` rather than leak.
    """
    if not re.fullmatch(r"-?[A-Za-z_][\w-]*", scope):
        raise ValueError(f"scope must be a CSS class name, got {scope!r}")
    rules = []
    pos = 0
    for match in _CSS_RULE.finditer(css):
        if css[pos : match.start()].strip():
            raise ValueError(f"cannot scope this CSS: {css[pos : match.start()].strip()[:40]!r}")
        pos = match.end()
        selectors = []
        for selector in match.group(1).split(","):
            selector = " ".join(selector.split())
            if not selector or "@" in selector:
                raise ValueError(f"cannot scope the selector {selector!r}")
            first, _, rest = selector.partition(" ")
            if first in _DOCUMENT_SELECTORS:
                selectors.append(f".{scope} {rest}".rstrip())
            else:
                selectors.append(f".{scope} {selector}")
        rules.append(f"{', '.join(selectors)} {{{match.group(2)}}}")
    if css[pos:].strip():
        raise ValueError(f"cannot scope this CSS: {css[pos:].strip()[:40]!r}")
    return "\n".join(rules)


def story_fragment(page: str) -> str:
    """A page made by :func:`story_page`, to show inside another document.

    The body goes into ``<div class="storylab-story">`` (:data:`STORY_CLASS`)
    with :data:`PAGE_CSS` scoped to that element by :func:`scope_css`: the
    story looks as it does on its own page, and the document around it (a
    notebook, JupyterLab, the book) keeps its own fonts, colours and margins.
    Raises :class:`ValueError` for text that is not such a page.
    """
    parts = _PAGE_PARTS.search(page)
    if parts is None:
        raise ValueError("not a storylab story page (no <html lang=...> ... <body> ... </body>)")
    return (
        f'<div class="{STORY_CLASS}" lang="{parts.group("lang")}">\n'
        f"<style>\n{scope_css(PAGE_CSS, STORY_CLASS)}\n</style>\n"
        f"{parts.group('body')}\n</div>"
    )


def render_story_page(
    story: StoryOutput,
    images: Iterable[GeneratedImageResult | dict[str, Any]],
    read_bytes: Callable[[str], bytes] | None = None,
) -> str:
    """The finished page of ``story``: sanitize, fill the slots, wrap in the document."""
    prompts = story.image_prompts
    clean = sanitize_story_html(story.html_content, [p.placeholder for p in prompts])
    return story_page(story.title, assemble_html(clean, prompts, images, read_bytes))
