"""Credentials are hidden wherever a message is built from a URL or a server's words."""

from __future__ import annotations

import base64

import pytest

from storylab.story.redaction import REDACTED, Redactor, redact_url, split_credentials


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://bob:hunter22@127.0.0.1:8765", "http://***@127.0.0.1:8765"),
        ("https://tok3n@images.example/v1", "https://***@images.example/v1"),
        (
            "http://127.0.0.1:8765/x?api_key=abc&size=2",
            "http://127.0.0.1:8765/x?api_key=***&size=2",
        ),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
    ],
)
def test_redact_url_hides_user_info_and_key_like_parameters(url, shown):
    assert redact_url(url) == shown


def test_split_credentials_unquotes_and_keeps_the_rest_of_the_url():
    assert split_credentials("http://bob:p%40ss@h:1/v1") == ("http://h:1/v1", "bob", "p@ss")
    assert split_credentials("http://tok@h") == ("http://h", "tok", None)
    assert split_credentials("http://h:1") == ("http://h:1", None, None)


def test_redactor_hides_secrets_their_basic_form_and_any_token():
    redact = Redactor.for_url("http://bob:p%40ss99@h:1").with_secrets("sk-live-123")
    basic = base64.b64encode(b"bob:p@ss99").decode()
    text = (
        f"bad key sk-live-123; Authorization: Basic {basic}; Bearer other-token-9; "
        "user bob password p@ss99 (typed p%40ss99) at http://bob:p%40ss99@h:1/v1"
    )
    out = redact(text)
    for secret in ("sk-live-123", basic, "other-token-9", "p@ss99", "p%40ss99"):
        assert secret not in out, out
    assert out.count(REDACTED) >= 6
    assert "http://***@h:1/v1" in out
    assert "Redactor(" in repr(redact) and "p@ss99" not in repr(redact)


def test_redactor_leaves_ordinary_words_alone():
    text = "Basic authentication failed: Bearer token missing"
    assert Redactor()(text) == text
    assert Redactor([None, ""])("nothing to hide") == "nothing to hide"
