"""The asynchronous half of the PostgreSQL store: psycopg's ``AsyncConnection``
on an event loop of the store's own.

Every statement of a server graph is a coroutine on one event loop per
process, run by a daemon thread (:func:`store_loop`), whatever loop (or
none) the caller runs: a graph used from a notebook's loop, a Dask worker's
loop, a thread with no loop at all and ``asyncio.run`` in a test all reach
the server the same way. :class:`Connections` is the small pool one graph
holds there:

* ``writer``: the graph's write transaction (its batches) and its reads, so
  a read sees what this graph wrote but has not committed yet;
* ``beat``: lease renewals, each a transaction of its own, so a heartbeat
  never waits behind a batch;
* ``blobs``: blob rows, each committed on its own before its key is handed
  out (opened on first use).

The store's operations (:mod:`storylab.entities.postgres.store`) are
coroutines run here; its synchronous entry points (what the entity code and
the command line call) hand them over with :meth:`Connections.call` and
wait for the answer, and its awaited ones (the heartbeat) await them
without blocking their own loop.

psycopg is imported here, and this module only when a server graph is opened.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
from psycopg import errors as pg_errors

from storylab.entities.errors import (
    EntityGraphError,
    GraphAccessError,
    GraphNotFoundError,
    GraphUnreachableError,
)
from storylab.entities.postgres.url import ServerURL

__all__ = [
    "CONNECTION_DEFAULTS",
    "Connections",
    "ServerError",
    "aconnect",
    "one_line",
    "store_loop",
]

T = TypeVar("T")

# What a connection uses unless the URL says otherwise. A server that stops
# answering (a host or a network gone, no connection closed) must not hold
# an operation for TCP's own minutes: unanswered data fails the connection
# after tcp_user_timeout, an idle connection is probed by keepalives.
CONNECTION_DEFAULTS: dict[str, str | int] = {
    "connect_timeout": 10,
    "application_name": "storylab",
    "tcp_user_timeout": 15_000,  # milliseconds
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class ServerError(EntityGraphError):
    """A statement the server refused or could not run (one line, no password)."""


class LockBusy(ServerError):
    """A row or name lock held by another process was not free in time."""


# ------------------------------------------------------------------ the loop

_LOOP: tuple[int, asyncio.AbstractEventLoop] | None = None
_LOOP_LOCK = threading.Lock()


def store_loop() -> asyncio.AbstractEventLoop:
    """The event loop every server graph of this process talks to its server
    on, started on first use by a daemon thread (again in a forked child,
    where the parent's thread does not exist)."""
    global _LOOP
    current = _LOOP
    if current is not None and current[0] == os.getpid():
        return current[1]
    with _LOOP_LOCK:
        if _LOOP is not None and _LOOP[0] == os.getpid():
            return _LOOP[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        threading.Thread(target=run, name="storylab-postgres", daemon=True).start()
        ready.wait()
        _LOOP = (os.getpid(), loop)
        return loop


def on_store_loop() -> bool:
    current = _LOOP
    if current is None or current[0] != os.getpid():
        return False
    try:
        return asyncio.get_running_loop() is current[1]
    except RuntimeError:
        return False


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the store's loop and wait for its answer (from any
    thread but the store loop's own)."""
    if on_store_loop():  # pragma: no cover - a bug, not a user error
        coro.close()
        raise RuntimeError("a server graph's synchronous call was made on its own loop")
    return asyncio.run_coroutine_threadsafe(coro, store_loop()).result()


def submit(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` on the store's loop; a future of the caller's running loop
    for its answer (to await without blocking that loop)."""
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, store_loop()))


# ------------------------------------------------------------------ errors


def one_line(exc: BaseException, url: ServerURL) -> str:
    """The first line of a driver's message, without libpq's prefixes and
    without any secret of ``url``."""
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else type(exc).__name__
    for prefix in ("connection failed: ", "FATAL:  ", "ERROR:  "):
        first = first.removeprefix(prefix)
    return url.scrub(first)


def wrap(exc: psycopg.Error, url: ServerURL) -> ServerError:
    cls = LockBusy if isinstance(exc, pg_errors.LockNotAvailable) else ServerError
    return cls(f"{one_line(exc, url)} ({type(exc).__name__} from the database server)")


def _open_error(exc: psycopg.OperationalError, url: ServerURL) -> EntityGraphError:
    text = one_line(exc, url)
    low = str(exc).lower()
    where = url.shown
    if (
        getattr(exc, "sqlstate", None) in ("28P01", "28000")
        or "password authentication failed" in low
        or "no password supplied" in low
        or "authentication failed" in low
        or "pg_hba.conf" in low
    ):
        who = f"user {url.user!r}" if url.user else "this user"
        hint = "" if url.secrets else " (the URL has no password: set $PGPASSWORD or ~/.pgpass)"
        return GraphAccessError(
            f"the PostgreSQL server at {url.host} refused the credentials of {who} for the "
            f"entity graph {where} ({_reason(text)}){hint}; nothing was changed"
        )
    if "does not exist" in low and "database" in low:
        return GraphNotFoundError(
            f"no database for the entity graph {where} ({_reason(text)}): create it first "
            "(createdb NAME); nothing was changed"
        )
    return GraphUnreachableError(
        f"cannot reach the PostgreSQL server at {url.host} for the entity graph {where} "
        f"({_reason(text)}): is the server running and listening there? nothing was changed"
    )


def _reason(text: str) -> str:
    """The part of libpq's message that says why (after its 'at ... failed: ')."""
    return text.rpartition(" failed: ")[2] or text


def conninfo_of(url: ServerURL) -> str:
    """The URL to connect with: the graph's, plus the defaults it does not set."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url.conninfo)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"not a valid graph URL {url.shown!r}: {one_line(exc, url)}") from None
    defaults = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
    return psycopg.conninfo.make_conninfo(url.conninfo, **defaults)


async def aconnect(url: ServerURL, *, read_only: bool = False) -> psycopg.AsyncConnection:
    """An autocommit async connection to the graph's server, its ``search_path``
    the graph's schema; one-line errors for a server that cannot be reached,
    refuses the credentials, or has no such database."""
    conninfo = conninfo_of(url)
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        raise _open_error(exc, url) from None
    try:
        await conn.execute(f'SET search_path = "{url.schema}"')
        if read_only:
            await conn.execute("SET default_transaction_read_only = on")
    except psycopg.Error as exc:
        await conn.close()
        raise EntityGraphError(
            f"cannot use the entity graph {url.shown}: {one_line(exc, url)}"
        ) from None
    return conn


# ------------------------------------------------------------------ the pool


class Connections:
    """One graph's connections to its server, all used on the store's loop."""

    def __init__(self, url: ServerURL, read_only: bool) -> None:
        self.url = url
        self.read_only = read_only
        self.writer: psycopg.AsyncConnection | None = None
        self._beat: psycopg.AsyncConnection | None = None
        self._blobs: psycopg.AsyncConnection | None = None
        self._blob_lock: asyncio.Lock | None = None

    async def open(self, *, create: bool) -> None:
        from storylab.entities.postgres.schema import prepare

        url = self.url
        self.writer = await aconnect(url, read_only=self.read_only)
        try:
            await prepare(
                self.writer, url.shown, url.schema, create=create, read_only=self.read_only
            )
        except psycopg.Error as exc:
            await self.aclose()
            raise EntityGraphError(
                f"cannot open the entity graph {url.shown}: {one_line(exc, url)}"
            ) from None
        except BaseException:
            await self.aclose()
            raise

    async def beat(self) -> psycopg.AsyncConnection:
        if self._beat is None or self._beat.closed:
            self._beat = await aconnect(self.url)
        return self._beat

    async def blob(self, sql: str, params: tuple) -> tuple | None:
        """One statement on the blob connection, committed when it returns;
        its first row."""
        if self._blob_lock is None:
            self._blob_lock = asyncio.Lock()
        async with self._blob_lock:
            try:
                if self._blobs is None or self._blobs.closed:
                    self._blobs = await aconnect(self.url, read_only=self.read_only)
                cur = await self._blobs.execute(sql, params)
                return await cur.fetchone() if cur.description else None
            except psycopg.Error as exc:
                raise EntityGraphError(
                    f"the blobs of the entity graph {self.url.shown} cannot be used: "
                    f"{one_line(exc, self.url)}"
                ) from None

    async def aclose(self) -> None:
        for conn in (self.writer, self._beat, self._blobs):
            if conn is not None and not conn.closed:
                try:
                    await conn.close()
                except Exception:  # pragma: no cover - closing a broken connection
                    pass
        self.writer = self._beat = self._blobs = None

    async def close_blobs(self) -> None:
        conn, self._blobs = self._blobs, None
        if conn is not None and not conn.closed:
            await conn.close()
