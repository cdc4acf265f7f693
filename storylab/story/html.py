"""Turning the writer's HTML and the finished images into one self-contained page.

The writer returns a document with ``{{IMAGE_N}}`` placeholders. Assembly puts
each finished image in place of the *first* occurrence of its placeholder as
an ``<img>`` with the picture inlined as base64, so the page needs no other
file. A placeholder whose image failed stays in the page, visibly, rather
than silently disappearing.

Nothing a user or a model wrote may run in the reader's browser. Topic, title
and every piece of story text are escaped where they are put into HTML, alt
text is escaped inside its attribute, and HTML that comes from a model goes
through :func:`sanitize_story_html`, an allow-list that keeps document
structure and text and drops scripts, event handlers and active content.
"""

from __future__ import annotations

import base64 as _b64
import html as _html
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from typing import Any

from storylab.story.models import GeneratedImageResult

__all__ = [
    "IMG_STYLE",
    "assemble_html",
    "content_type_for",
    "escape_alt",
    "escape_text",
    "image_tag",
    "sanitize_story_html",
]

IMG_STYLE = "max-width:100%; border-radius:8px; box-shadow: 0 2px 8px rgba(0,0,0,0.15);"


def escape_alt(text: str) -> str:
    """Escape alt text for a double-quoted attribute: ``&`` first, then ``"``, ``<``, ``>``.

    Single quotes are left alone: the attribute is always double-quoted.
    """
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def escape_text(text: str) -> str:
    """Escape text for an HTML element body or attribute (all five special characters)."""
    return _html.escape(text, quote=True)


def content_type_for(fmt: str | None) -> str:
    """``png`` is ``image/png``; any other format is treated as ``image/jpeg``."""
    return "image/png" if (fmt or "").lower() == "png" else "image/jpeg"


def image_tag(content_type: str, b64: str, alt_text: str) -> str:
    """The exact ``<img>`` element that replaces a placeholder."""
    return (
        f'<img src="data:{content_type};base64,{b64}" alt="{escape_alt(alt_text)}" '
        f'style="{IMG_STYLE}" />'
    )


def assemble_html(
    html_content: str,
    images: Iterable[GeneratedImageResult | dict[str, Any]],
    read_bytes: Callable[[str], bytes] | None = None,
) -> str:
    """Replace each image's placeholder (first occurrence only) with its ``<img>``.

    ``images`` come in completion order; each needs ``base64`` or an
    ``object_key`` that ``read_bytes`` turns back into bytes (the blob store).
    Placeholders of images not in ``images`` are left as they are.
    """
    out = html_content
    for image in images:
        if not isinstance(image, GeneratedImageResult):
            image = GeneratedImageResult.from_json(image)
        b64 = image.base64
        if b64 is None:
            if read_bytes is None or image.object_key is None:
                raise ValueError(
                    f"image {image.placeholder} has neither base64 nor a readable object_key"
                )
            b64 = _b64.b64encode(read_bytes(image.object_key)).decode("ascii")
        # str.replace with count=1: only the first occurrence, and no "$&"-style
        # patterns in the replacement (unlike JavaScript's String.replace).
        out = out.replace(image.placeholder, image_tag(image.content_type, b64, image.alt_text), 1)
    return out


# -- sanitizing model-written HTML -------------------------------------------------
_ALLOWED_TAGS = frozenset(
    """html head body title meta style h1 h2 h3 h4 h5 h6 p div span section article header
    footer main nav em strong b i u s small sub sup br hr blockquote ul ol li figure
    figcaption table thead tbody tr th td caption""".split()
)
_VOID_TAGS = frozenset({"meta", "br", "hr"})
# Tags whose whole content is dropped, not just the tags themselves.
_DROP_WITH_CONTENT = frozenset(
    "script iframe object embed noscript template svg math frame frameset applet".split()
)
_ALLOWED_ATTRS = frozenset({"class", "id", "lang", "dir", "charset", "style", "title"})
_BAD_STYLE = ("url(", "expression", "javascript", "@import", "<")


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_depth = 0
        self.in_style = False

    def handle_decl(self, decl: str) -> None:
        if decl.lower().startswith("doctype") and not self.skip_depth:
            self.out.append("<!DOCTYPE html>")

    def _attrs(self, attrs: list[tuple[str, str | None]]) -> str:
        parts = []
        for name, value in attrs:
            name = name.lower()
            if name not in _ALLOWED_ATTRS:
                continue
            value = value or ""
            if name == "style" and any(bad in value.lower() for bad in _BAD_STYLE):
                continue
            parts.append(f' {name}="{escape_text(value)}"')
        return "".join(parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_WITH_CONTENT:
            if tag not in _VOID_TAGS:
                self.skip_depth += 1
            return
        if self.skip_depth or tag not in _ALLOWED_TAGS:
            return
        if tag == "style":
            self.in_style = True
        self.out.append(f"<{tag}{self._attrs(attrs)}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip_depth or tag not in _ALLOWED_TAGS or tag in _DROP_WITH_CONTENT:
            return
        self.out.append(f"<{tag}{self._attrs(attrs)} />")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth or tag not in _ALLOWED_TAGS or tag in _VOID_TAGS:
            return
        if tag == "style":
            self.in_style = False
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.in_style:
            # CSS cannot close its own element or pull in resources here.
            if not any(bad in data.lower() for bad in _BAD_STYLE):
                self.out.append(data)
            return
        self.out.append(_html.escape(data, quote=False))


def sanitize_story_html(html_content: str) -> str:
    """Keep structure, text and simple styling; drop anything that could run.

    Scripts, frames, embedded objects, SVG and their content go; event
    handlers and every attribute outside a small allow-list go; text is
    re-escaped, so an entity-encoded ``&lt;script&gt;`` stays text. The
    ``{{IMAGE_N}}`` placeholders are text and pass through unchanged.
    """
    parser = _Sanitizer()
    parser.feed(html_content)
    parser.close()
    return "".join(parser.out)
