"""Keep credentials out of everything a run stores or prints.

A password in ``http://user:pass@host``, an API key, or a server that echoes
the ``Authorization`` header back in its error must not end up in the entity
graph (data, errors, tracebacks), the trace, the logs or the terminal. The
rule is to redact *at the source*: whoever builds a message from a URL or from
a server's words passes it through here first, so nothing downstream has to
know which strings were secret.

* :func:`redact_url` shows a URL without its user info and with the values of
  key-like query parameters hidden;
* :func:`split_credentials` separates a URL from its user info, so the
  credentials can be sent as a header instead of living in the URL;
* :class:`Redactor` replaces given secrets (and their ``Basic`` encoding),
  ``Bearer``/``Basic`` tokens and credentials in any URL found in a text.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["REDACTED", "Redactor", "redact_url", "split_credentials"]

REDACTED = "***"
# Query parameters whose values are credentials more often than not.
_SECRET_PARAMS = re.compile(r"(key|token|secret|password|passwd|pwd|sig|signature|auth)", re.I)
# "Bearer <token>" / "Basic <token>" as servers echo them (the scheme word kept).
# A token has eight characters or more and a digit or sign among them, so that
# prose such as "Basic authentication failed" is left as it is.
_AUTH_TOKEN = re.compile(
    r"\b(Bearer|Basic)\s+(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}", re.I
)
# Any URL with user info: scheme://userinfo@
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``(url without user info, user, password)``; user and password are unquoted."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    clean = urlunsplit(parts._replace(netloc=hostport))
    return clean, unquote(user), unquote(password) if sep else None


def redact_url(url: str) -> str:
    """The URL as it may be shown: user info replaced by ``***``, key-like query values too."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not even parseable: hide anything that looks like user info
        return _URL_USERINFO.sub(rf"\1{REDACTED}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if _SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class Redactor:
    """Replace known secrets, auth tokens and URL credentials in texts with ``***``.

    ``Redactor(["s3cret"])("bad key s3cret")`` -> ``"bad key ***"``. A user and
    password given with :meth:`add_basic` are also hidden in their
    ``base64(user:password)`` form, which is what an echoed ``Authorization:
    Basic`` header carries. Longer secrets are replaced first, so a secret
    that contains another is hidden whole.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"  # never the secrets themselves

    def add(self, secret: str | None) -> Redactor:
        if secret:
            self._secrets.add(secret)
        return self

    def with_secrets(self, *secrets: str | None) -> Redactor:
        """A new redactor hiding these secrets as well as this one's."""
        return Redactor([*self._secrets, *secrets])

    def add_basic(self, user: str | None, password: str | None) -> Redactor:
        """Hide a URL's user info: the password (or a user name used as a token), and the
        ``Basic`` encodings of ``user:password``."""
        if password:
            self.add(password)
        elif user:
            self.add(user)  # a lone user name in a URL is usually a token
        if user or password:
            pair = f"{user or ''}:{password or ''}"
            self.add(pair)
            self.add(base64.b64encode(pair.encode()).decode("ascii"))
        return self

    @classmethod
    def for_url(cls, url: str) -> Redactor:
        """A redactor that hides the credentials of ``url`` (as typed and unquoted)."""
        redactor = cls()
        netloc = urlsplit(url).netloc
        if "@" in netloc:
            raw_user, _, raw_password = netloc.rpartition("@")[0].partition(":")
            redactor.add_basic(raw_user, raw_password)
            _, user, password = split_credentials(url)
            redactor.add_basic(user, password)
        return redactor

    def __call__(self, text: object) -> str:
        out = str(text)
        for secret in sorted(self._secrets, key=len, reverse=True):
            out = out.replace(secret, REDACTED)
        out = _AUTH_TOKEN.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
        return _URL_USERINFO.sub(rf"\1{REDACTED}@", out)
