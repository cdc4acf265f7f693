"""Reading a story page the way a browser and a reader would (shared by the story tests).

``read_page`` parses HTML with the standard library's parser (an independent
one, not the sanitizer's) into its elements and the text a reader sees;
``loading_parts`` lists everything in a page that could run or fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

# Attributes that can neither load nor run anything; storylab adds the last two.
SAFE_ATTRIBUTES = frozenset(
    {"class", "id", "lang", "dir", "title", "data-storylab-slot", "data-placeholder"}
)
LOADING_TAGS = frozenset(
    """style link img image picture source svg math base meta iframe frame object embed
    video audio input form button script a template noscript""".split()
)
_HIDDEN = frozenset({"style", "title", "script", "template"})


@dataclass
class Page:
    elements: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The visible text, joined (entities decoded)."""
        return "".join(self.text_parts)

    def having(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        """Attributes of each ``tag`` element whose attributes include ``attrs``."""
        return [
            a
            for t, a in self.elements
            if t == tag and all(a.get(_attribute(k)) == v for k, v in attrs.items())
        ]


def _attribute(keyword: str) -> str:
    """``class_`` -> ``class``, ``data_placeholder`` -> ``data-placeholder``."""
    return keyword.rstrip("_").replace("_", "-")


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self.page.elements.append((tag, dict(attrs)))
        if tag in _HIDDEN:
            self._hidden += 1

    def handle_endtag(self, tag):
        if tag in _HIDDEN:
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self.page.text_parts.append(data)

    def handle_comment(self, data):
        self.page.comments.append(data)

    def unknown_decl(self, data):  # <![CDATA[...]]>, <![if ...]>
        self.page.comments.append(data)


def read_page(html: str) -> Page:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.page


def loading_parts(html: str) -> list[str]:
    """Everything in ``html`` a browser could run, or fetch something for.

    Any element of a loading kind, any attribute outside a short allow-list
    (``style``, ``src``, ``on...``, anything unknown) and any comment or
    CDATA section, where old parsers and mutation tricks hide markup.
    """
    page = read_page(html)
    found = [f"<{tag}>" for tag, _ in page.elements if tag in LOADING_TAGS]
    for tag, attrs in page.elements:
        found += [f"{tag}[{a}]" for a in attrs if a not in SAFE_ATTRIBUTES]
    found += [f"<!--{c}-->" for c in page.comments]
    return found
