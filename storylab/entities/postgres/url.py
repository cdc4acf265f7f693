"""Graph URLs for a server database, and keeping their passwords out of sight.

A graph on PostgreSQL is named by a libpq URL,
``postgresql://user[:password]@host[:port]/database[?schema=NAME&...]``.
``schema`` is storylab's own parameter (the PostgreSQL schema holding the
graph's tables, ``public`` by default); every other parameter goes to the
server unchanged. The password is needed to connect and nowhere else: the
URL a graph shows (its ``path``, its ``key``, every message) has none, and
:func:`scrub` takes it out of any text that might echo it (a driver's
error message). The usual libpq ways to keep it out of the URL altogether
work too: ``$PGPASSWORD`` and ``~/.pgpass``.

Nothing here imports the driver: :func:`is_server_url` is what
``EntityGraph.open`` asks of every path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["SCHEMES", "ServerURL", "is_server_url", "parse", "scrub"]

SCHEMES = ("postgresql", "postgres")
REDACTED = "***"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Query parameters that carry a secret (never shown).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def is_server_url(path: object) -> bool:
    """Whether ``path`` names a graph on a database server (a ``postgresql://`` URL)."""
    if not isinstance(path, str):
        return False
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


@dataclass(frozen=True)
class ServerURL:
    """A parsed graph URL: what to connect with, and what may be shown."""

    conninfo: str
    """The URL handed to the driver (with the password, without ``schema``)."""
    shown: str
    """The URL without any password: what messages, keys and traces carry."""
    schema: str
    """The PostgreSQL schema holding the graph's tables."""
    secrets: tuple[str, ...]
    """The secrets in the URL, for :func:`scrub`."""
    user: str | None
    host: str

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)


def parse(url: str) -> ServerURL:
    """Split a graph URL; ``ValueError`` (naming the part, never the password)
    if it cannot be one."""
    if not is_server_url(url):
        raise ValueError(
            f"a server graph URL starts with {' or '.join(s + '://' for s in SCHEMES)}; "
            f"got {_shown_anyway(url)!r}"
        )
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid graph URL ({exc}): {_shown_anyway(url)!r}") from None
    secrets: list[str] = []
    netloc = parts.netloc
    user = None
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        raw_user, sep, raw_password = userinfo.partition(":")
        user = unquote(raw_user) or None
        if sep and raw_password:
            secrets += [raw_password, unquote(raw_password)]
        netloc = f"{quote(user or '', safe='')}@{hostport}" if user else hostport
    schema = "public"
    kept, shown_query = [], []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            if not _SCHEMA_NAME.match(value):
                raise ValueError(
                    "the schema parameter of a graph URL must be a lower-case SQL name "
                    f"(letters, digits, _; at most 63); got {value!r}"
                )
            schema = value
            continue
        kept.append((key, value))
        if key in _SECRET_PARAMS:
            if value:
                secrets.append(value)
            continue
        shown_query.append((key, value))
    conninfo = urlunsplit(parts._replace(query=urlencode(kept)))
    shown = urlunsplit(parts._replace(netloc=netloc, query=urlencode(shown_query)))
    if schema != "public":
        shown += ("&" if shown_query else "?") + f"schema={schema}"
    host = hostname or "localhost"
    if port:
        host = f"{host}:{port}"
    # Longest first, so a secret containing another is replaced whole.
    ordered = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
    return ServerURL(conninfo, shown, schema, ordered, user, host)


def scrub(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def _shown_anyway(url: object) -> str:
    """An unparseable URL as it may be shown: anything that looks like user
    info is hidden."""
    return re.sub(r"(://)[^/\s@]*@", rf"\1{REDACTED}@", str(url))
