"""The story page: escaping, the sanitizer, image slots and the missing-picture figure."""

from __future__ import annotations

import base64

import pytest
from pagecheck import loading_parts, read_page

from storylab.story.html import (
    MISSING_IMAGE_TEXT,
    PAGE_CSS,
    assemble_html,
    content_type_for,
    escape_alt,
    escape_text,
    image_tag,
    render_story_page,
    sanitize_story_html,
    story_page,
)
from storylab.story.models import GeneratedImageResult, ImagePrompt, StoryOutput

OUT = "http://127.0.0.1:9/"  # where every hostile sample below points


def _img(ph: str, b64: str = "QUJD", alt: str = "alt") -> GeneratedImageResult:
    return GeneratedImageResult(placeholder=ph, content_type="image/png", alt_text=alt, base64=b64)


def _prompts(n: int) -> list[ImagePrompt]:
    return [
        ImagePrompt(f"{{{{IMAGE_{i}}}}}", f"prompt {i}", f"picture {i}") for i in range(1, n + 1)
    ]


def _page(html: str, prompts: list[ImagePrompt], images) -> str:
    clean = sanitize_story_html(html, [p.placeholder for p in prompts])
    return assemble_html(clean, prompts, images)


# -- escaping and the <img> tag (the spec's exact formats) ----------------------------
def test_alt_text_is_escaped_ampersand_first():
    assert escape_alt('a "b" <c> & d') == "a &quot;b&quot; &lt;c&gt; &amp; d"
    assert escape_alt("it's") == "it's"


def test_escaped_user_text_never_spells_a_placeholder():
    assert escape_text("a cat {{IMAGE_2}} <b>") == "a cat &#123;&#123;IMAGE_2&#125;&#125; &lt;b&gt;"
    assert "{{" not in escape_alt("{{IMAGE_1}}")


def test_exact_img_tag():
    assert image_tag("image/png", "QUJD", 'a "b"') == (
        '<img src="data:image/png;base64,QUJD" alt="a &quot;b&quot;" '
        'style="max-width:100%; border-radius:8px; box-shadow: 0 2px 8px rgba(0,0,0,0.15);" />'
    )


def test_content_type_png_or_jpeg():
    assert content_type_for("png") == "image/png"
    assert content_type_for("jpeg") == "image/jpeg"
    assert content_type_for("webp") == "image/jpeg"


# -- slots ---------------------------------------------------------------------------
def test_a_failed_image_becomes_a_visible_figure_that_keeps_its_placeholder():
    html = "<p>{{IMAGE_1}}</p><p>{{IMAGE_2}}</p><p>{{IMAGE_3}}</p>"
    prompts = [*_prompts(2), ImagePrompt("{{IMAGE_3}}", "p", 'a fox & a "hen"')]
    out = _page(html, prompts, [_img("{{IMAGE_2}}"), _img("{{IMAGE_1}}")])
    assert out.count("<img ") == 2
    dom = read_page(out)
    (missing,) = [a for _, a in dom.elements if a.get("class") == "storylab-missing"]
    assert missing["data-placeholder"] == "{{IMAGE_3}}"  # kept for the next run to fill
    text = dom.text
    assert MISSING_IMAGE_TEXT in text and 'a fox & a "hen"' in text
    assert "{{IMAGE_" not in text  # no raw placeholder for a reader to see


def test_only_the_first_occurrence_is_a_slot_and_the_rest_is_text():
    out = _page("<p>{{IMAGE_1}}...{{IMAGE_1}}</p>", _prompts(1), [_img("{{IMAGE_1}}")])
    assert out.startswith("<p><img ") and out.endswith("...&#123;&#123;IMAGE_1&#125;&#125;</p>")
    assert read_page(out).text == "...{{IMAGE_1}}"


def test_a_placeholder_no_prompt_declares_is_text():
    out = _page("<p>{{IMAGE_1}} {{IMAGE_7}}</p>", _prompts(1), [_img("{{IMAGE_1}}")])
    assert out.count("<img ") == 1 and "storylab-missing" not in out
    assert "{{IMAGE_7}}" in read_page(out).text


def test_a_placeholder_typed_in_user_text_is_not_a_slot():
    # The writer escapes the topic (escape_text), then writes its own slot.
    topic = "a cat {{IMAGE_2}} and {{IMAGE_1}}"
    html = f"<h1>{escape_text(topic)}</h1><div>{{{{IMAGE_1}}}}</div><div>{{{{IMAGE_2}}}}</div>"
    out = _page(html, _prompts(2), [_img("{{IMAGE_1}}", "MQ=="), _img("{{IMAGE_2}}", "Mg==")])
    dom = read_page(out)
    assert dom.elements[0] == ("h1", {}) and dom.text == topic
    srcs = [a["src"] for t, a in dom.elements if t == "img"]
    assert srcs == ["data:image/png;base64,MQ==", "data:image/png;base64,Mg=="]
    assert out.index("MQ==") > out.index("</h1>")  # both pictures in the writer's slots


def test_a_placeholder_that_contains_another_gets_its_own_slot():
    prompts = [ImagePrompt("{{IMAGE_1}}", "p"), ImagePrompt("{{IMAGE_1}}b", "p")]
    out = _page("<p>{{IMAGE_1}}b</p><p>{{IMAGE_1}}</p>", prompts, [_img("{{IMAGE_1}}b", "Yg==")])
    assert out.startswith('<p><img src="data:image/png;base64,Yg=="')
    assert out.count("storylab-missing-note") == 1


def test_a_slot_forged_by_the_writer_is_dropped_whatever_its_number():
    # Slots are storylab's own markup, made after sanitizing: the writer's never count.
    forged = '<span data-storylab-slot="2"></span><span data-storylab-slot="1"></span>'
    out = sanitize_story_html(forged, ["{{IMAGE_1}}"])
    assert out == "<span></span><span></span>"


def test_a_placeholder_inside_an_attribute_takes_no_slot_and_leaves_no_stray_markup():
    html = '<p title="{{IMAGE_1}}">Once</p><p class="x {{IMAGE_2}}">upon</p><p>{{IMAGE_1}}</p>'
    prompts = _prompts(2)
    out = _page(html, prompts, [_img("{{IMAGE_1}}", "MQ=="), _img("{{IMAGE_2}}", "Mg==")])
    dom = read_page(out)
    # The picture is where the text put it, after "upon", and no '">' leaked into the text.
    assert dom.text == "Onceupon" and '">' not in dom.text
    assert out.index("MQ==") > out.index("upon")
    paragraphs = [a for t, a in dom.elements if t == "p"]
    assert paragraphs[0]["title"] == "{{IMAGE_1}}" and paragraphs[1]["class"] == "x {{IMAGE_2}}"
    # IMAGE_2 is only in an attribute: it has no place in the text, so no picture goes there.
    assert "Mg==" not in out and out.count("<img ") == 1


def test_a_placeholder_inside_a_script_does_not_take_the_picture_away():
    html = "<script>{{IMAGE_1}}</script><p>{{IMAGE_1}}</p>"
    out = _page(html, _prompts(1), [_img("{{IMAGE_1}}", "MQ==")])
    assert "<script" not in out and out.count("data:image/png;base64,MQ==") == 1


def test_a_failed_picture_without_alt_text_still_says_what_is_missing():
    out = _page("{{IMAGE_1}}", [ImagePrompt("{{IMAGE_1}}", "p", "")], [])
    assert read_page(out).text == MISSING_IMAGE_TEXT + "Story illustration"


def test_a_slot_left_unfilled_does_not_reach_the_page():
    page = story_page("t", sanitize_story_html("<p>{{IMAGE_1}}</p>", ["{{IMAGE_1}}"]))
    assert "data-storylab-slot" not in page and "<p></p>" in page


def test_dollar_patterns_are_not_special():
    out = _page("{{IMAGE_1}}", _prompts(1), [_img("{{IMAGE_1}}", alt="$& $1")])
    assert 'alt="$&amp; $1"' in out


def test_bytes_are_read_back_from_the_blob_store():
    blobs = {"k1": b"\x89PNG fake"}
    image = GeneratedImageResult(
        placeholder="{{IMAGE_1}}", content_type="image/png", alt_text="a", object_key="k1"
    )
    clean = sanitize_story_html("{{IMAGE_1}}", ["{{IMAGE_1}}"])
    out = assemble_html(clean, _prompts(1), [image], blobs.__getitem__)
    assert base64.b64encode(b"\x89PNG fake").decode() in out


def test_alt_text_with_script_is_inert():
    alt = '"><script>alert(1)</script>'
    out = _page("{{IMAGE_1}}", _prompts(1), [_img("{{IMAGE_1}}", alt=alt)])
    missing = _page("{{IMAGE_1}}", [ImagePrompt("{{IMAGE_1}}", "p", alt)], [])
    for page in (out, missing):
        assert "<script" not in page
        assert [t for t, _ in read_page(page).elements] in (["img"], ["span", "span", "span"])


# -- the sanitizer -----------------------------------------------------------------------
# Each sample tries to run something or to make the browser fetch OUT.
HOSTILE = {
    "style url": f'<p style="background:url({OUT}a)">t</p>',
    "style u\\72l escape": f'<p style="background:u\\72l({OUT}a)">t</p>',
    "style \\75rl escape": f'<p style="background-image:\\75rl({OUT}a)">t</p>',
    "style image-set": f"<p style=\"background:image-set('{OUT}a' 1x)\">t</p>",
    "style expression": '<p style="width:expression(alert(1))">t</p>',
    "style element url": f"<style>p{{background:url({OUT}a)}}</style><p>t</p>",
    "style element @import": f'<style>@import "{OUT}a.css";</style><p>t</p>',
    "style element @\\69mport": f'<style>@\\69mport "{OUT}a.css";</style><p>t</p>',
    "STYLE upper case": f'<STYLE>@IMPORT "{OUT}a";</STYLE><P STYLE="BACKGROUND:URL({OUT})">t</P>',
    "link stylesheet": f'<link rel="stylesheet" href="{OUT}a.css"><p>t</p>',
    "img src": f"<img src={OUT}a><p>t</p>",
    "IMG mixed case": f'<ImG SrC="{OUT}a" OnErRoR="alert(1)"><p>t</p>',
    "img srcset": f'<img srcset="{OUT}a 1x"><p>t</p>',
    "picture source": f'<picture><source srcset="{OUT}a"><img></picture><p>t</p>',
    "svg image": f'<svg><image href="{OUT}a"/><image xlink:href="{OUT}b"/></svg><p>t</p>',
    "svg style": f"<svg><style>*{{background:url({OUT}a)}}</style></svg><p>t</p>",
    "javascript link": '<a href="javascript:alert(1)">t</a>',
    "data link": '<a href="data:text/html,<script>alert(1)</script>">t</a>',
    "base href": f'<base href="{OUT}"><p>t</p>',
    "meta refresh": f'<meta http-equiv="refresh" content="0;url={OUT}"><p>t</p>',
    "iframe": f'<iframe src="{OUT}"></iframe><iframe srcdoc="<img src={OUT}>"></iframe><p>t</p>',
    "object and embed": f'<object data="{OUT}a"></object><embed src="{OUT}b"><p>t</p>',
    "video poster": f'<video poster="{OUT}a"><source src="{OUT}b"></video><p>t</p>',
    "audio": f'<audio src="{OUT}a" autoplay></audio><p>t</p>',
    "input image": f'<input type="image" src="{OUT}a"><p>t</p>',
    "table background": f'<table background="{OUT}a"><tr><td>t</td></tr></table>',
    "body background": f'<body background="{OUT}a" onload="alert(1)"><p>t</p></body>',
    "form action": f'<form action="{OUT}"><button formaction="{OUT}">t</button></form>',
    "script": f'<script src="{OUT}a"></script><script>alert(1)</script><p>t</p>',
    "event handler": '<p onclick="alert(1)" onmouseover="alert(2)">t</p>',
    "comment": f'<!--<img src="{OUT}a">--><p>t</p>',
    "conditional comment": f'<!--[if IE]><link rel=stylesheet href="{OUT}a"><![endif]--><p>t</p>',
    "CDATA": f'<![CDATA[<img src="{OUT}a">]]><p>t</p>',
    "noscript breakout": f'<noscript><p title="</noscript><img src={OUT}a>"></noscript><p>t</p>',
    "mathml style": f"<math><mtext><table><mglyph><style><img src={OUT}a>",
    "template": f'<template><img src="{OUT}a"></template><p>t</p>',
}


@pytest.mark.parametrize("sample", list(HOSTILE.values()), ids=list(HOSTILE))
def test_nothing_that_loads_or_runs_survives_the_sanitizer(sample):
    assert loading_parts(sample), "the checker must see the hostile sample"  # it can fail
    clean = sanitize_story_html(sample)
    assert loading_parts(clean) == [], clean


def test_the_sanitizer_keeps_structure_text_and_harmless_attributes():
    dirty = (
        '<!doctype html><html lang="en"><head><title>T</title></head><body>'
        '<section class="page" id="p1"><h1 title="t" dir="ltr">Hi &lt;b&gt; &amp; you</h1>'
        "<p><em>soft</em> <strong>loud</strong><br>next</p><ul><li>one</li></ul>"
        '<a href="https://example.org">a link\'s text</a></section>'
        '<p title="x&quot;><img src=y>">&lt;img src=x onerror=alert(1)&gt;</p></body></html>'
    )
    assert sanitize_story_html(dirty) == (
        '<section class="page" id="p1"><h1 title="t" dir="ltr">Hi &lt;b&gt; &amp; you</h1>'
        "<p><em>soft</em> <strong>loud</strong><br>next</p><ul><li>one</li></ul>"
        "a link's text</section>"
        '<p title="x&quot;&gt;&lt;img src=y&gt;">&lt;img src=x onerror=alert(1)&gt;</p>'
    )


def test_the_page_has_only_storylabs_stylesheet_and_an_escaped_title():
    page = story_page('<Tom> & "Jerry" {{IMAGE_1}}', "<p>body</p>")
    dom = read_page(page)
    styles = [t for t, _ in dom.elements if t == "style"]
    assert len(styles) == 1 and f"<style>\n{PAGE_CSS}\n</style>" in page
    assert "url(" not in PAGE_CSS.lower() and "@import" not in PAGE_CSS.lower()
    assert (
        "<title>&lt;Tom&gt; &amp; &quot;Jerry&quot; &#123;&#123;IMAGE_1&#125;&#125;</title>" in page
    )
    assert [t for t, _ in dom.elements] == ["html", "head", "meta", "title", "style", "body", "p"]


def test_the_whole_page_of_a_hostile_writer_loads_nothing():
    # Slots first: an unclosed sample (the MathML one) swallows what follows it.
    html = "<p>{{IMAGE_1}}</p><p>{{IMAGE_2}}</p>" + "".join(HOSTILE.values())
    story = StoryOutput("A {{IMAGE_2}} title", html, _prompts(2), "moral", "3-10")
    page = render_story_page(story, [_img("{{IMAGE_1}}")])
    dom = read_page(page)
    # Only storylab's own markup may carry a URL or CSS: the data: picture and the stylesheet.
    imgs = [a for t, a in dom.elements if t == "img"]
    assert len(imgs) == 1 and imgs[0]["src"] == "data:image/png;base64,QUJD"
    own = (
        f"<style>\n{PAGE_CSS}\n</style>",
        image_tag("image/png", "QUJD", "alt"),
        '<meta charset="utf-8">',
    )
    rest = page
    for part in own:
        assert part in rest
        rest = rest.replace(part, "")
    assert loading_parts(rest) == []
    assert page.count('class="storylab-missing-note"') == 1 and page.count("{{IMAGE_2}}") == 1
