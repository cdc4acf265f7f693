"""Transactions and batching: opening the write transaction (awaited when
another process holds the lock), group commits, the buffers written once per
commit, and what a failed or impossible commit does.

Part of :class:`~storylab.entities.sqlite.EntityGraph` (see
:mod:`storylab.entities.sqlite` for the design).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from typing import Any

from storylab.entities._commits import again as _again
from storylab.entities._commits import running_loop as _running_loop
from storylab.entities._commits import settle as _settle
from storylab.entities.encoding import (
    progress_rows,
)
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import (
    EntityGraphError,
    GraphAccessError,
    GraphFileGoneError,
    LeaseLostError,
)
from storylab.entities.records import (
    HOST,
)
from storylab.entities.sqlite._shared import (
    _INSERT_NODE,
    _LEASE_UPSERT,
    _OPEN,
    _PROGRESS_INSERT,
    _REOPEN,
    _RETRY_FIRST,
    _RETRY_MAX,
    GraphState,
    _is_busy,
    log,
)


class Transactions(GraphState):
    """The write transaction and its group commits."""

    def check_file(self) -> None:
        """Raise :class:`GraphFileGoneError` if the file was deleted or replaced
        since it was opened (and refuse every later operation)."""
        gone = self._gone or self._file_gone()
        if gone is not None:
            self._gone = gone
            raise GraphFileGoneError(gone)

    # ------------------------------------------------------------ transactions

    def _commit_failure(self, error: sqlite3.Error) -> EntityGraphError:
        exc = EntityGraphError(
            f"a commit to {self.path} failed ({error}); the work done since the "
            "previous commit was rolled back and will be redone on resume"
        )
        exc.__cause__, exc.__suppress_context__ = error, True  # as `raise ... from error`
        return exc

    def _raise_commit_error(self) -> None:
        error, self._commit_error = self._commit_error, None
        if error is not None:
            raise self._commit_failure(error)

    def commit_waiter(self, id: str | None = None) -> asyncio.Future | None:
        """A future that the commit of the open transaction resolves (or sets
        to the :class:`EntityGraphError` of a failed commit); ``None`` when
        there is nothing to wait for: no transaction is open or, given ``id``,
        the node did not finish in it.

        A run awaits it between storing its end and handing the result on, so
        nobody sees a result that a crash could still take back; every run
        that finished in one transaction waits for the same commit."""
        with self._lock:
            if self._commit_error is not None:  # "operation" mode: the commit just failed
                self._raise_commit_error()
            if not self._in_txn or (id is not None and id not in self._settling):
                return None
            loop = _running_loop()
            if loop is None or loop is not self._commit_loop:
                # No commit is queued on this loop: commit now rather than wait
                # for one that may never come.
                self._commit()
                if self._commit_error is not None:
                    self._raise_commit_error()
                return None
            waiter = loop.create_future()
            self._waiters.append(waiter)
            return waiter

    def _raise_if_gone(self) -> None:
        if self._gone is not None:
            raise GraphFileGoneError(self._gone)

    def _file_gone(self) -> str | None:
        """Why the file we opened is no longer at our path (None if it is)."""
        try:
            st = os.stat(self._key)
        except FileNotFoundError:
            what = "deleted"
        else:
            if (st.st_dev, st.st_ino) == self._file_id:
                return None
            what = "replaced by another file"
        return (
            f"the entity graph file {self.path} was {what} while this process had it open; "
            "nothing more is stored (the work since the last commit is lost)"
        )

    def _check_can_write(self) -> None:
        """Raise if nothing may be written: the file is gone, a commit failed,
        or the graph was opened read-only."""
        if self._gone is not None:
            self._raise_if_gone()
        if self._commit_error is not None:
            self._raise_commit_error()
        if self.read_only:
            raise GraphAccessError(
                f"the entity graph {self.path} was opened read-only; nothing was changed"
            )

    def _begin(self) -> sqlite3.Connection:
        """Join this turn's transaction, opening it if needed (hold ``_lock``)."""
        self._check_can_write()
        if not self._in_txn:
            self.commit_peers()
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_txn = True
            if self._reopens:
                self._apply_reopens()
        return self._conn

    def _try_begin(self) -> bool:
        """Open the write transaction if no other process holds the write lock
        now; False (at once, without waiting) if one does. Hold ``_lock``,
        outside a transaction."""
        self.commit_peers()
        conn = self._conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return False
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        self._in_txn = True
        if self._reopens:
            self._apply_reopens()
        return True

    def _apply_reopens(self) -> None:
        """Reopen, first thing in the transaction just opened, the nodes whose
        reopening waited for another process's write lock (hold ``_lock``)."""
        ids, self._reopens = self._reopens, set()
        self._conn.executemany(_REOPEN, [(id,) for id in sorted(ids)])

    def _has_pending(self) -> bool:
        """Whether anything waits to be written outside a transaction."""
        return bool(self._progress or self._new_rows or self._reopens)

    def write_waiter(self) -> Any:
        """``None`` if a write can be made now without waiting (the write
        transaction is open, or was just opened); else an awaitable that
        returns once it can, looking again with a growing delay (never
        blocking the event loop) while another process holds the lock.

        A run awaits it before the writes of each step; the writes that
        follow in the same step then find the transaction open."""
        if self._in_txn:
            return None
        with self._lock:
            if self._in_txn or self._gone or self._closed or self.read_only:
                return None  # nothing to wait for (the write itself raises)
            if self._commit_error is None and self._try_begin():
                self._opened()
                return None
            if self._commit_error is not None:
                return None
        return self._wait_writable()

    async def writable(self) -> None:
        """Return once this event-loop turn's write transaction is open, having
        awaited (never blocked the loop on) another process's write lock: the
        synchronous writes made right after it, with no ``await`` between,
        then never wait. For writes from a coroutine outside a run's steps
        (creating or reopening a root entity). It returns at once when there
        is nothing to wait for, or when writes are refused (they say why)."""
        waiter = self.write_waiter()
        if waiter is not None:
            await waiter

    async def settle(self) -> None:
        """:meth:`flush` from a coroutine: what is pending is committed once
        no other process holds the write lock, awaited rather than waited for
        on the event loop; then raises as :meth:`flush` does."""
        with self._lock:
            pending = not self._in_txn and self._has_pending()
        if pending:
            await self.writable()
        self.flush()

    async def aclose(self) -> None:
        """:meth:`close` from a coroutine: what is pending is committed after
        an awaited (not blocking) wait for another process's write lock."""
        with self._lock:
            pending = not self._closed and not self._in_txn and self._has_pending()
        try:
            if pending:
                await self.writable()
        finally:
            self.close()  # closed even if the wait is cancelled

    def _opened(self) -> None:
        """A transaction was opened ahead of the writes that follow: see that
        it is committed even if none does (in ``operation`` mode each write
        commits it; the callback then finds nothing to do)."""
        if self._commit_mode == "operation":
            asyncio.get_running_loop().call_soon(self._commit)
        else:
            self._schedule_commit()

    async def _wait_writable(self) -> None:
        delay = _RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
            with self._lock:
                if self._in_txn or self._gone or self._closed or self._commit_error is not None:
                    return
                if self._try_begin():
                    self._opened()
                    return

    def _apply(self, *steps: tuple[str, tuple]) -> sqlite3.Cursor:
        """Run ``steps`` (SQL, params) as one atomic operation.

        Several steps run inside a SAVEPOINT, so a failure in the middle
        leaves none of them behind. Nothing here awaits: an operation never
        spans an ``await``, only the commit is deferred (see the module
        docstring)."""
        with self._lock:
            conn = self._begin()
            if self._new_rows:
                self._write_nodes()
            try:
                if len(steps) == 1:
                    return conn.execute(*steps[0])
                conn.execute("SAVEPOINT op")
                try:
                    for sql, params in steps:
                        cur = conn.execute(sql, params)
                except BaseException:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    raise
                conn.execute("RELEASE op")
                return cur
            finally:
                self._schedule_commit()

    def commit_peers(self) -> None:
        """Commit what other graphs of this process hold pending on our file,
        so that we neither wait for their write lock nor read behind them."""
        if self._in_txn:  # we hold the write lock, so no peer holds a transaction
            return
        peers = _OPEN.get(self._key)
        if peers is None or len(peers) < 2:
            return
        for peer in list(peers):
            if peer is not self and peer._in_txn:
                peer._commit()

    def _schedule_commit(self, terminal: bool = False) -> None:
        """Make sure the open transaction gets committed: at the end of this
        event-loop iteration for a ``terminal`` operation (an entity finished
        or failed) in ``"batched"`` mode, else ``commit_interval`` later."""
        loop = self._commit_loop
        mode = self._commit_mode
        if mode == "operation":
            self._commit()
            return
        if loop is not None and (self._commit_soon or not terminal) and loop is _running_loop():
            return  # called for every operation: the common case first
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._commit()
            return
        pending = self._commit_loop
        soon = (terminal and mode == "batched") or not self._commit_interval
        if pending is None:
            self._commit_loop = loop
            self._commit_soon = soon
            if soon:
                self._commit_handle = loop.call_soon(self._commit)
            else:
                self._commit_handle = loop.call_later(self._commit_interval, self._commit)
        elif pending is not loop:
            # A commit is pending on another loop (another thread, or a loop
            # that has ended): do not leave our write waiting on it.
            self._commit()
        elif soon and not self._commit_soon:
            if self._commit_handle is not None:
                self._commit_handle.cancel()
            self._commit_soon = True
            self._commit_handle = loop.call_soon(self._commit)

    def _commit(self, block: bool = False, *, final: bool = False) -> None:
        """Commit the open transaction, or write what was left outside one
        (progress, rows and reopenings made while another process held the
        lock). On a running event loop (unless ``block``) a write lock held by
        another process is never waited for here: the commit is tried again
        a little later, by a loop callback. ``final``: the last commit of a
        graph being closed (see ``close``)."""
        with self._lock:
            handle, self._commit_handle = self._commit_handle, None
            loop = _running_loop()
            if handle is not None and self._commit_loop is loop:
                handle.cancel()  # when called early (flush, last run ended)
            self._commit_loop = None
            if not self._in_txn:
                if not self._has_pending() or (self._closed and not final):
                    return
                if self._gone is not None or self._commit_error is not None or self.read_only:
                    self._progress.clear()  # refused (the operations raise it)
                    self._drop_deferred()
                    return
                try:
                    if loop is None or block:
                        self._begin()
                        began = True
                    else:
                        began = self._try_begin()
                except sqlite3.OperationalError as exc:  # locked past busy_timeout, a lost server
                    log.warning(
                        "entity graph %s: %d progress envelope(s), %d new node(s) and %d "
                        "reopening(s) not stored (%s)",
                        self.path,
                        len(self._progress),
                        len(self._new_rows),
                        len(self._reopens),
                        exc,
                    )
                    self._progress.clear()
                    self._drop_deferred()
                    return
                if not began and loop is not None:
                    # Another process holds the write lock: look again later.
                    self._commit_loop = loop
                    self._commit_soon = False
                    self._commit_handle = loop.call_later(self._retry_delay, self._commit)
                    self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
                    return
            self._retry_delay = _RETRY_FIRST
            self._in_txn = False
            self._checked.clear()
            waiters, self._waiters = self._waiters, []
            self._settling.clear()
            gone = self._gone or self._file_gone()
            if gone is not None:
                # Committing into a deleted (or swapped-out) file would only
                # pretend to store: roll back, and refuse from now on. The runs
                # waiting for this commit get the reason, not their result.
                self._gone = gone
                self._discard_buffers()
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if waiters:
                    _settle(waiters, functools.partial(GraphFileGoneError, gone))
                return
            try:
                if self._deferred:
                    self._fence_deferred()
                if self._new_rows:
                    self._write_nodes()
                if self._new_leases:
                    self._write_leases()
                self._write_progress()  # (its lease checks end with this transaction)
                self._conn.execute("COMMIT")
                self._checked.clear()
            except sqlite3.Error as exc:
                log.exception("entity graph %s: commit failed; rolling back", self.path)
                self._discard_buffers()
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                # The commit may have run in a loop callback where nobody can
                # catch it: the runs waiting for it get the error, and so does
                # the next operation on this graph, so a run never goes on as
                # if its last results were stored.
                self._commit_error = exc
                if waiters:
                    _settle(waiters, functools.partial(self._commit_failure, exc))
                return
            if waiters:
                _settle(waiters, None)

    def _fence_deferred(self) -> None:
        """Check, in the transaction about to commit, the leases of the parents
        of rows created while another process held the lock: the rows made
        under a lease lost meanwhile are dropped, and their runs are told
        (by ``_fence``), as for progress envelopes."""
        parents, self._deferred = self._deferred, set()
        lost = {}
        for parent in parents:
            try:
                self._fence(parent)
            except LeaseLostError as exc:
                lost[parent] = exc
        if lost:
            self._drop_rows_under(lost)

    def _drop_rows_under(self, lost: dict[str, LeaseLostError]) -> None:
        """Forget the unwritten rows created under the parents whose leases
        were ``lost`` (and the rows under those); a run of one of them is
        told, with its parent's error."""
        rows = self._new_rows
        stopped = {}
        for node_id in list(rows):
            row = rows[node_id]
            error = lost.get(row[5])
            if error is not None:
                lost[node_id] = error
                del rows[node_id]
                self._new_keys.discard((row[5], row[11] or row[1]))
                self._new_leases.pop(node_id, None)
                if node_id in self._held:
                    stopped[node_id] = LeaseLostError(
                        f"{row[2]} {row[1]!r} (id {node_id}) was not stored: {error}",
                        node_id=node_id,
                    )
        if stopped:
            self._mark_lost(stopped)

    def _drop_deferred(self) -> None:
        """Nothing can be stored any more: forget the rows created outside a
        transaction (outside one, no other row is pending)."""
        if not self._in_txn:
            self._new_rows.clear()
            self._new_keys.clear()
            self._reopens.clear()
        self._deferred.clear()

    def _discard_buffers(self) -> None:
        self._deferred.clear()
        self._reopens.clear()
        self._checked.clear()
        self._new_rows.clear()
        self._new_keys.clear()
        self._progress.clear()
        self._new_leases.clear()
        self._parents.clear()  # may name nodes that were just rolled back

    def _write_pending(self) -> bool:
        """Write the unwritten rows before a read (hold ``_lock``); True once
        they are written. Outside a transaction these are rows created while
        another process held the write lock. On a running event loop they are
        written only if the lock is free now: False (at once) if it is still
        taken, and the read is answered with them laid over the stored rows
        instead (``Queries._read_with_pending``). Outside a loop the
        transaction is opened for them, waiting for the lock as a synchronous
        write does."""
        if self._in_txn:
            self._write_nodes()
            return True
        if _running_loop() is not None:
            self._check_can_write()
            if not self._try_begin():
                return False
        else:
            self._begin()
        try:
            self._write_nodes()
        finally:
            self._schedule_commit()
        return True

    def _write_nodes(self) -> None:
        """Insert the nodes created in this transaction, in creation order
        (hold ``_lock``, in a transaction), each in its current state."""
        if self._deferred:
            self._fence_deferred()
        rows, self._new_rows = self._new_rows, {}
        self._new_keys.clear()
        self._conn.executemany(_INSERT_NODE, rows.values())

    def _write_leases(self) -> None:
        """Write the leases taken in this transaction (hold ``_lock``, in a
        transaction), their heartbeat as of now."""
        taken, self._new_leases = self._new_leases, {}
        now = time.time()
        owner, host, pid, token = self._owner, HOST, self._pid, self._token
        expires = now + self._lease_ttl
        self._conn.executemany(
            _LEASE_UPSERT,
            [(id, owner, host, pid, token, at, now, expires) for id, at in taken.items()],
        )

    def _write_progress(self) -> None:
        """Insert the buffered progress rows into the open transaction, but
        none of a node whose lease we lost (fenced here, at the write)."""
        if self._progress:
            envs, self._progress = self._progress, []
            if self._held or self._lost:
                envs = self._fenced_progress(envs)
            self._conn.executemany(_PROGRESS_INSERT, progress_rows(envs))

    def _fenced_progress(self, envs: list[Envelope]) -> list[Envelope]:
        kept = []
        lost, held = self._lost, self._held
        for env in envs:
            node = env.entity_id
            if node in held:
                try:
                    self._fence(node)
                except LeaseLostError:
                    continue
            elif node in lost:
                continue
            kept.append(env)
        return kept

    def _log(self, *envs: Envelope) -> None:
        """Append envelopes to the progress log.

        Rows are buffered and inserted with one ``executemany`` at the next
        commit (or before anything on this connection reads the log): the log
        is append-only, so batching changes nothing but the cost. Logging
        takes no lock, so it never waits for another process: the commit does
        (without blocking the event loop), and checks then that the leases of
        the nodes logging are still ours."""
        with self._lock:
            self._check_can_write()
            lost = self._lost
            if lost:
                for env in envs:
                    if env.entity_id in lost:
                        raise _again(lost[env.entity_id])
            self._progress.extend(envs)
            self._schedule_commit()

    def flush(self) -> None:
        """Commit pending operations now (they are otherwise committed at the
        end of the current event-loop turn, or within ``commit_interval``).
        Raises :class:`EntityGraphError` if this or an earlier commit failed,
        :class:`GraphFileGoneError` if the file was deleted or replaced."""
        self._commit()
        self._raise_if_gone()
        if self._commit_error is not None:
            self._raise_commit_error()
