"""HTML assembly and escaping (items 49-51) and the sanitizer."""

from __future__ import annotations

import base64

from storylab.story.html import (
    assemble_html,
    content_type_for,
    escape_alt,
    image_tag,
    sanitize_story_html,
)
from storylab.story.models import GeneratedImageResult


def _img(ph: str, b64: str = "QUJD", alt: str = "alt") -> GeneratedImageResult:
    return GeneratedImageResult(placeholder=ph, content_type="image/png", alt_text=alt, base64=b64)


def test_alt_text_is_escaped_ampersand_first():
    assert escape_alt('a "b" <c> & d') == "a &quot;b&quot; &lt;c&gt; &amp; d"
    assert escape_alt("it's") == "it's"


def test_exact_img_tag():
    assert image_tag("image/png", "QUJD", 'a "b"') == (
        '<img src="data:image/png;base64,QUJD" alt="a &quot;b&quot;" '
        'style="max-width:100%; border-radius:8px; box-shadow: 0 2px 8px rgba(0,0,0,0.15);" />'
    )


def test_content_type_png_or_jpeg():
    assert content_type_for("png") == "image/png"
    assert content_type_for("jpeg") == "image/jpeg"
    assert content_type_for("webp") == "image/jpeg"


def test_failed_image_keeps_its_placeholder():
    html = "<p>{{IMAGE_1}}</p><p>{{IMAGE_2}}</p><p>{{IMAGE_3}}</p>"
    out = assemble_html(html, [_img("{{IMAGE_2}}"), _img("{{IMAGE_1}}")])
    assert "{{IMAGE_3}}" in out
    assert "{{IMAGE_1}}" not in out and "{{IMAGE_2}}" not in out
    assert out.count("<img ") == 2


def test_only_the_first_occurrence_is_replaced():
    out = assemble_html("{{IMAGE_1}}...{{IMAGE_1}}", [_img("{{IMAGE_1}}")])
    assert out.startswith("<img ") and out.endswith("...{{IMAGE_1}}")


def test_dollar_patterns_are_not_special():
    out = assemble_html("{{IMAGE_1}}", [_img("{{IMAGE_1}}", alt="$& $1")])
    assert 'alt="$&amp; $1"' in out


def test_bytes_are_read_back_from_the_blob_store():
    blobs = {"k1": b"\x89PNG fake"}
    image = GeneratedImageResult(
        placeholder="{{IMAGE_1}}", content_type="image/png", alt_text="a", object_key="k1"
    )
    out = assemble_html("{{IMAGE_1}}", [image], blobs.__getitem__)
    assert base64.b64encode(b"\x89PNG fake").decode() in out


def test_alt_text_with_script_is_inert():
    out = assemble_html("{{IMAGE_1}}", [_img("{{IMAGE_1}}", alt='"><script>alert(1)</script>')])
    assert "<script" not in out


def test_sanitizer_drops_active_content_and_keeps_text():
    dirty = (
        "<!doctype html><html><head><script>alert(1)</script><style>p{color:red}</style></head>"
        '<body onload="x()"><p class="a" onclick="y()">Hi &lt;b&gt; {{IMAGE_1}}</p>'
        '<img src=x onerror=alert(1)><iframe src="https://e.x"></iframe>'
        '<a href="javascript:alert(1)">link</a><svg><script>1</script></svg>'
        '<div style="background:url(javascript:1)">d</div></body></html>'
    )
    clean = sanitize_story_html(dirty)
    low = clean.lower()
    for bad in ("<script", "onload", "onclick", "onerror", "<iframe", "javascript:", "<svg", "<a "):
        assert bad not in low, bad
    assert '<p class="a">Hi &lt;b&gt; {{IMAGE_1}}</p>' in clean
    assert "<style>p{color:red}</style>" in clean
    assert "link" in clean and "<div>d</div>" in clean
