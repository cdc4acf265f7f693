"""Leases: taking, renewing (the heartbeat), fencing every write under one,
and telling a run that lost its lease.

Part of :class:`~storylab.entities.sqlite.EntityGraph` (see
:mod:`storylab.entities.sqlite` for the design).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Collection

from storylab.entities._commits import again as _again
from storylab.entities._commits import running_loop as _running_loop
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import (
    LeaseLostError,
    UnknownEntityError,
    taken_over,
)
from storylab.entities.records import (
    HOST,
    LEASE_EXPIRED,
    LEASE_LIVE,
    LEASE_OWNER_GONE,
    LeaseRecord,
    pid_alive,
)
from storylab.entities.registry import running_here
from storylab.entities.sqlite._shared import (
    _LEASE_COLUMNS,
    _LEASE_COLUMNS_OF_L,
    _RETRY_FIRST,
    GraphState,
    log,
)


class Leases(GraphState):
    """The lease half of the store: taking, renewing, fencing, losing."""

    # ----------------------------------------------------------------- leases

    def run_started(self, id: str, on_lost: Callable[[LeaseLostError], None]) -> None:
        """The run of ``id`` began executing in this process, under our lease:
        ``on_lost`` is called (on the event loop) if that lease is lost. The
        first run starts the heartbeat that renews our leases."""
        self._watchers[id] = on_lost
        self._live_runs += 1
        if self._live_runs == 1:
            self._ensure_heartbeat()

    def run_ended(self, id: str) -> None:
        """The run that :meth:`run_started` ended: with the last one the heartbeat
        stops and everything pending is committed (nothing of this graph runs)."""
        self._watchers.pop(id, None)
        self._live_runs -= 1
        if self._live_runs == 0:
            self._stop_heartbeat()
            self.flush()

    def _ensure_heartbeat(self) -> None:
        """Have a task on the running loop renew our leases while anything of
        this graph runs (called when the first run starts)."""
        task = self._heartbeat
        loop = _running_loop()
        if loop is None or (task is not None and not task.done() and task.get_loop() is loop):
            return
        self._heartbeat = loop.create_task(self._beat(), name=f"lease heartbeat {self.path.name}")

    def _stop_heartbeat(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None and not task.done() and task.get_loop() is _running_loop():
            task.cancel()

    async def _beat(self) -> None:
        """Renew our leases every ``lease_heartbeat`` seconds while anything runs.

        It never ends on an error: a renewal that finds the store locked, or
        fails (a disk I/O error), is tried again with a growing delay; one
        that cannot succeed before the oldest of our leases would expire
        stops every run holding one (:meth:`_give_up`), so that none of them
        goes on working under a lease another process may take."""
        try:
            while True:
                await asyncio.sleep(self._lease_heartbeat)
                if self._closed or self._live_runs == 0:
                    return
                await self._renew_leases()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not expected: say so, and stop the runs
            log.exception("entity graph %s: the lease heartbeat failed", self.path)
            self._give_up(repr(exc))

    async def _renew_leases(self) -> None:
        """Push back the expiry of every lease we hold, in a commit of its own,
        trying again while the store is locked or failing; the leases found
        taken over meanwhile are lost (their runs are told)."""
        delay = _RETRY_FIRST
        margin = self._lease_heartbeat / 2
        while True:
            if self._gone is not None:
                self._give_up(self._gone)
                return
            try:
                if self._try_renew():
                    return
                error = "another process holds the write lock"
            except sqlite3.Error as exc:  # "database is locked", "disk I/O error", ...
                error = f"{type(exc).__name__}: {exc}"
                log.debug(
                    "entity graph %s: lease renewal failed (%s); trying again", self.path, error
                )
            if not self._held:
                return
            left = min(self._held.values()) + self._lease_ttl - margin - time.time()
            if left <= 0:
                self._give_up(error)
                return
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, self._lease_heartbeat)

    def _try_renew(self) -> bool:
        """One attempt at renewing (False if another process holds the lock)."""
        with self._lock:
            if self._closed:
                return True
            if self._in_txn:
                self._commit()  # what runs wrote so far goes first, in its own commit
            if self._in_txn or not self._try_begin():
                return False
            conn = self._conn
            try:
                if self._new_leases:
                    self._write_leases()
                now = time.time()
                rows = conn.execute(
                    "UPDATE leases SET heartbeat_at = ?, expires_at = ? WHERE token = ? "
                    "RETURNING node_id",
                    (now, now + self._lease_ttl, self._token),
                ).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            finally:
                self._in_txn = False
                self._checked.clear()
            self._settle_renewal({r[0] for r in rows}, now)
            return True

    def _settle_renewal(self, renewed: Collection[str], now: float) -> None:
        """After a renewal (hold ``_lock``): the held leases in ``renewed`` are
        fresh as of ``now``; every other one was taken over, and its run is told."""
        held = self._held
        gone = []
        for node in held:
            if node in renewed:
                held[node] = now
            else:
                gone.append(node)
        if gone:
            self._mark_lost({node: self._lease_lost_error(node) for node in gone})

    def _give_up(self, why: str) -> None:
        """Our leases could not be renewed in time: stop every run holding one
        now, before another process may take its node over. A new token is
        used from now on, so the leases given up are never renewed again."""
        if not self._held:
            return
        now = time.time()
        errors = {}
        for node, renewed in self._held.items():
            errors[node] = LeaseLostError(
                f"{self._describe(node)}: this process could not renew its lease for "
                f"{now - renewed:.1f} s ({why}), so it stopped the run before the lease "
                f"({self._lease_ttl:g} s) could expire under it; nothing more of it is "
                "stored here, and another process may take it over",
                node_id=node,
            )
        log.warning("entity graph %s: leases not renewed (%s); stopping their runs", self.path, why)
        self._token = os.urandom(8).hex()
        self._mark_lost(errors)

    # ---------------------------------------------------------------- fencing

    def _fence(self, node: str | None) -> None:
        """Refuse a write made under ``node``'s lease unless that lease is
        still ours: raise :class:`LeaseLostError` if another process took it
        over. Nodes not leased here (a write outside any run) pass. Hold
        ``_lock``; the check is made inside the write transaction, so it
        holds until that transaction's commit."""
        if node is None or node in self._checked or node in self._new_leases:
            return
        if node not in self._held:
            lost = self._lost.get(node)
            if lost is not None:
                raise _again(lost)
            return
        if not self._conn.in_transaction:  # (a commit writing its rows is in one)
            self._begin()
            self._schedule_commit()
        row = self._conn.execute(
            "SELECT token, owner FROM leases WHERE node_id = ?", (node,)
        ).fetchone()
        if row is not None and row[0] == self._token:
            self._checked.add(node)
            return
        error = self._lease_lost_error(node, row[1] if row else None)
        self._mark_lost({node: error})
        raise error

    def check_lease(self, id: str) -> None:
        """Raise :class:`LeaseLostError` if this graph held the lease on ``id``
        and another process has taken it over (one read, no write lock): what
        a run checks before it writes outside the graph (a blob file)."""
        with self._lock:
            if id in self._held and id not in self._checked and id not in self._new_leases:
                row = self._conn.execute(
                    "SELECT token, owner FROM leases WHERE node_id = ?", (id,)
                ).fetchone()
                if row is not None and row[0] == self._token:
                    return
                error = self._lease_lost_error(id, row[1] if row else None)
                self._mark_lost({id: error})
                raise error
            lost = self._lost.get(id)
            if lost is not None and id not in self._held:
                raise _again(lost)

    def _mark_lost(self, errors: dict[str, LeaseLostError]) -> None:
        """Record leases as lost and tell their runs."""
        for node, error in errors.items():
            self._held.pop(node, None)
            self._lost[node] = error
        for node, error in errors.items():
            watcher = self._watchers.pop(node, None)
            if watcher is not None:
                try:
                    watcher(error)
                except Exception:  # pragma: no cover - a run's own callback
                    log.exception("telling the run of %s that its lease was lost failed", node)

    def _describe(self, node: str) -> str:
        try:
            row = self._conn.execute(
                "SELECT type, name FROM nodes WHERE id = ?", (node,)
            ).fetchone()
        except sqlite3.Error:
            row = None
        return f"{row[0]} {row[1]!r} (id {node})" if row else f"entity {node}"

    def _lease_lost_error(self, node: str, owner: str | None = None, *, read: bool = True):
        """The one true line for a lease found taken: by whom, and whether it
        had expired by our clock (our last renewal and ``lease_ttl``)."""
        if read and owner is None:
            try:
                row = self._conn.execute(
                    "SELECT owner FROM leases WHERE node_id = ?", (node,)
                ).fetchone()
            except sqlite3.Error:
                row = None
            owner = row[0] if row else None
        age = time.time() - self._held.get(node, time.time())
        status = None
        if owner is None:
            try:
                row = self._conn.execute(
                    "SELECT status FROM nodes WHERE id = ?", (node,)
                ).fetchone()
            except sqlite3.Error:
                row = None
            status = row[0] if row else None
        return taken_over(node, self._describe(node), owner, status, age, self._lease_ttl)

    def lease(self, id: str) -> LeaseRecord | None:
        """The lease on a node (``None`` if nobody holds one). See :meth:`lease_state`."""
        with self._lock:
            if id in self._new_leases:  # ours, not written yet
                now = time.time()
                at = self._new_leases[id]
                return LeaseRecord(
                    id, self._owner, HOST, self._pid, self._token, at, now, now + self._lease_ttl
                )
            rows = self._read(f"SELECT {_LEASE_COLUMNS} FROM leases WHERE node_id = ?", (id,))
        return LeaseRecord(*rows[0]) if rows else None

    def lease_state(self, lease: LeaseRecord, now: float | None = None) -> str:
        """``"live"``, ``"expired"`` (no heartbeat for ``lease_ttl`` seconds) or
        ``"owner gone"`` (its process, on this host, no longer exists, or it
        belongs to this process and nothing of it runs here)."""
        if lease.host == HOST:
            if lease.pid == self._pid:
                if not running_here(self._key, lease.node_id):
                    return LEASE_OWNER_GONE
            elif not pid_alive(lease.pid):
                return LEASE_OWNER_GONE
        if lease.expires_at <= (time.time() if now is None else now):
            return LEASE_EXPIRED
        return LEASE_LIVE

    def poll_lease(self, id: str) -> tuple[str, LeaseRecord | None]:
        """A node's status and lease, read in one snapshot (for a waiting run)."""
        rows = self._read(
            f"SELECT n.status, {_LEASE_COLUMNS_OF_L} FROM nodes n "
            "LEFT JOIN leases l ON l.node_id = n.id WHERE n.id = ?",
            (id,),
        )
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        status, *lease = rows[0]
        return status, (LeaseRecord(*lease) if lease[0] is not None else None)

    def lease_of(self, id: str) -> tuple[str, LeaseRecord | None, str | None]:
        """A node's status and lease (:meth:`poll_lease`) and that lease's
        state (:meth:`lease_state`; ``None`` without a lease)."""
        status, lease = self.poll_lease(id)
        return status, lease, (None if lease is None else self.lease_state(lease))

    def abandon(self, id: str, env: Envelope) -> None:
        """A run of ``id`` was cut short: log ``env`` and give its lease back.
        Nothing once the file is gone, or if the lease was taken over (found
        by a read here: once released, the lease no longer fences ``env``
        at its commit)."""
        if self._gone is not None:
            return
        if id in self._held:
            try:
                self.check_lease(id)
            except LeaseLostError:
                return  # taken over meanwhile: the new owner's log stands
        self.append_progress(env)
        self.release_lease(id)

    def _took(self, id: str, at: float) -> None:
        """We lease ``id`` from now on (written at the commit)."""
        self._new_leases[id] = at
        self._held[id] = at
        if self._lost:
            self._lost.pop(id, None)

    def _drop_lease(self, conn: sqlite3.Connection, id: str) -> bool:
        """Drop our lease on ``id`` (hold ``_lock``, in a transaction); False
        if it is not ours (any more)."""
        if self._new_leases.pop(id, None) is not None:
            return True  # taken in this transaction: nobody else could have it
        cur = conn.execute("DELETE FROM leases WHERE node_id = ? AND token = ?", (id, self._token))
        return cur.rowcount == 1

    def release_lease(self, id: str) -> None:
        """Give up the lease on a node that stays InProgress (its run was
        abandoned): anyone may take it over at once."""
        with self._lock:
            self._held.pop(id, None)
            if not self._in_txn and _running_loop() is not None and not self._try_begin():
                return  # another process holds the lock: the lease just expires
            conn = self._begin()
            try:
                self._drop_lease(conn, id)
            finally:
                self._schedule_commit()
