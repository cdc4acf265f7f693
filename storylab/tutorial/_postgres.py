"""A PostgreSQL server for a notebook's last section, if one is reachable.

:func:`server_graph` takes the URL a learner gave (the notebook's parameter,
else ``$STORYLAB_PG_URL``), gives the graph a schema of the notebook's own,
moves a password written in the URL to ``$PGPASSWORD`` (so that worker
processes started afterwards can connect: storylab hands them the URL
without it) and opens the graph once to see whether the server answers.
Nothing here ever shows the password.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["ServerGraph", "server_graph"]

START_HINT = (
    "start one (Debian: `sudo pg_ctlcluster 15 main start`; the README section \"Past one "
    "machine\" creates the role and the database) and set STORYLAB_PG_URL"
)


@dataclass(frozen=True)
class ServerGraph:
    """Where the notebook's server graph is, and whether it can be used."""

    url: str | None
    """The URL to hand to storylab (``graph=``, ``--graph``); never a password in it."""
    shown: str
    """The URL as it may be printed (no password)."""
    schema: str
    reachable: bool
    reason: str
    """Why not, in one sentence, when it is not reachable."""

    def describe(self) -> str:
        if self.reachable:
            return f"PostgreSQL graph at {self.shown} (schema {self.schema}): the server answers"
        return self.reason


def _mask(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


def _split(url: str, schema: str) -> tuple[str, str | None]:
    """``url`` with ``schema=`` set to ours and without its password; the password."""
    parts = urlsplit(url)
    netloc, password = parts.netloc, None
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, raw = userinfo.partition(":")
        if sep and raw:
            password = unquote(raw)
        netloc = f"{user}@{hostport}" if user else hostport
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("schema", "password")]
    password = password or dict(parse_qsl(parts.query)).get("password")
    query.append(("schema", schema))
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query))), password


def _drop_schema(url: str, schema: str) -> None:
    """Start from an empty graph: drop the notebook's own schema (and only it)."""
    import psycopg

    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "schema"])
    with psycopg.connect(urlunsplit(parts._replace(query=query)), connect_timeout=5,
                         autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def server_graph(url: str | None = None, *, schema: str, fresh: bool = True) -> ServerGraph:
    """The server graph named by ``url`` (else ``$STORYLAB_PG_URL``), in ``schema``.

    With ``fresh`` the schema is dropped first, so every run of the notebook
    starts from an empty graph (only this schema: nothing else on the server
    is touched). Never raises for a server that is missing or down: the
    answer says why, and how to start one.
    """
    if not (isinstance(schema, str) and schema.isidentifier() and schema.islower()):
        raise ValueError(f"schema must be a lower-case SQL name, got {schema!r}")
    url = (url or os.environ.get("STORYLAB_PG_URL") or "").strip()
    if not url:
        return ServerGraph(None, "", schema, False,
                           "No PostgreSQL server named (parameter pg_url, or STORYLAB_PG_URL), "
                           f"so this section is skipped; {START_HINT}.")
    if not url.startswith(("postgresql://", "postgres://")):
        return ServerGraph(None, "", schema, False,
                           "pg_url must start with postgresql:// (got something else), so "
                           "this section is skipped.")
    try:
        clean, password = _split(url, schema)
    except ValueError as exc:
        return ServerGraph(None, "", schema, False,
                           f"pg_url is not a valid URL ({exc}), so this section is skipped.")
    if importlib.util.find_spec("psycopg") is None:
        return ServerGraph(None, "", schema, False,
                           "The PostgreSQL driver is not installed, so this section is "
                           "skipped: pip install \"storylab[postgres]\".")
    if password:
        # Worker processes get the URL without it and read $PGPASSWORD, as libpq does.
        os.environ["PGPASSWORD"] = password
    from storylab.entities import EntityGraph

    try:
        if fresh:
            _drop_schema(clean, schema)
        with EntityGraph.open(clean) as graph:
            shown = str(graph.key)
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return ServerGraph(None, _mask(clean, password), schema, False,
                           f"The PostgreSQL server at {_mask(clean, password)} cannot be used "
                           f"({_mask(first, password)[:160]}), so this section is skipped; "
                           f"{START_HINT}.")
    return ServerGraph(clean, _mask(shown, password), schema, True, "")
