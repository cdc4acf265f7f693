"""Writes: creating nodes (idempotent by name), starting and claiming,
finishing, data changes and reopening.

Part of :class:`~storylab.entities.sqlite.EntityGraph` (see
:mod:`storylab.entities.sqlite` for the design).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from storylab.entities._commits import again as _again
from storylab.entities._commits import running_loop as _running_loop
from storylab.entities.blobs import BlobStore
from storylab.entities.encoding import (
    dumps,
    dumps_log,
)
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import (
    DuplicateNameError,
    EntityGraphError,
    LeaseLostError,
    UnknownEntityError,
)
from storylab.entities.records import (
    LEASE_LIVE,
    EntityStatus,
    LeaseRecord,
    NodeRecord,
    new_id,
    node_record,
)
from storylab.entities.registry import check_new, revive, running_here
from storylab.entities.sqlite._shared import (
    _LEASE_COLUMNS_OF_L,
    _NODE_EXISTS,
    _REOPEN,
    GraphState,
)
from storylab.entities.store import DATA_CHANGES

if TYPE_CHECKING:
    from storylab.entities.entity import RunnableEntity
    from storylab.entities.store import EntityStore


class Writes(GraphState):
    """The writes of the store: nodes, starts, ends, data."""

    # --------------------------------------------------------------- entities

    def entity(self, id: str) -> RunnableEntity:
        """The entity with this id, revived as its registered class."""
        return self.revive(self.get_node(id))

    def revive(
        self, record: NodeRecord, expected: type[RunnableEntity] | None = None
    ) -> RunnableEntity:
        """The entity for ``record``: an instance of ``expected`` (which must be
        its type) or of its registered class."""
        return revive(cast("EntityStore", self), record, expected)

    _revive = revive  # the name tests and older tools use

    def create(self, cls: type[RunnableEntity], name: str, data: dict | None = None):
        """Create a root entity; :class:`DuplicateNameError` if the name is taken."""
        return self.revive(self.insert_node(cls, name, data, None), cls)

    def create_or_retrieve(self, cls: type[RunnableEntity], name: str, data: dict | None = None):
        """The root entity called ``name``; created with ``data`` if it does not
        exist yet. An existing one keeps its original data."""
        return self.revive(self.insert_or_get_node(cls, name, data, None), cls)

    # ---------------------------------------------------- write operations

    def _check_new(self, cls: type[RunnableEntity], name: str, data: Any) -> tuple[str, str]:
        return check_new(cls, name, data)

    def insert_node(
        self, cls, name: str, data, parent_id: str | None, call_path: str | None = None
    ) -> NodeRecord:
        """Create a Pending node. ``call_path`` is the child's key under its
        parent when it differs from ``name`` (inside a condition branch)."""
        type_name, data_json = self._check_new(cls, name, data)
        return self.insert_encoded(type_name, name, data, data_json, parent_id, call_path)

    def insert_encoded(
        self,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        parent_id: str | None,
        call_path: str | None,
    ) -> NodeRecord:
        """:meth:`insert_node` for arguments already checked and encoded."""
        key = call_path or name
        with self._lock:
            if self._in_txn:
                conn = self._conn
            elif self._may_defer(parent_id):
                # Another process holds the write lock: create the child
                # without it (see _may_defer) rather than block the loop.
                conn = self._conn
            elif self._root_taken_now(parent_id, key):
                # Another process holds the write lock, and the root exists:
                # refused (create_or_retrieve then reads it) without waiting.
                raise DuplicateNameError(
                    f"an entity named {name!r} already exists among root entities"
                )
            else:
                conn = self._begin()
            try:
                if parent_id is not None:
                    if self._in_txn:
                        self._fence(parent_id)  # a child is made only under a lease we hold
                    else:
                        self._deferred.add(parent_id)  # fenced at the commit that writes it
                # Inside our write transaction nobody else can insert, so
                # checking first and writing later decides races as surely as
                # the UNIQUE index (which still guards the write itself).
                if (parent_id, key) in self._new_keys or self._key_taken(conn, parent_id, key):
                    if parent_id is None:
                        where = "among root entities"
                    elif call_path and call_path != name:
                        where = f"under parent {parent_id} at call path {call_path!r}"
                    else:
                        where = f"under parent {parent_id}"
                    raise DuplicateNameError(f"an entity named {name!r} already exists {where}")
                if (
                    parent_id is not None
                    and parent_id not in self._parents
                    and parent_id not in self._new_rows
                ):
                    if conn.execute(_NODE_EXISTS, (parent_id,)).fetchone() is None:
                        raise UnknownEntityError(f"no entity with id {parent_id!r} in {self.path}")
                    self._parents.add(parent_id)
                node_id = new_id()
                now = time.time()
                self._new_rows[node_id] = [
                    node_id,
                    name,
                    type_name,
                    "Pending",
                    data_json,
                    parent_id,
                    now,
                    None,
                    None,
                    None,
                    None,
                    None if call_path == name else call_path,
                ]
                self._new_keys.add((parent_id, key))
            finally:
                self._schedule_commit()
        return node_record(
            node_id,
            name,
            type_name,
            "Pending",
            {} if data is None else data,
            parent_id,
            now,
            None,
            None,
            None,
            None,
            None if parent_id is None else key,
        )

    def _may_defer(self, parent_id: str | None) -> bool:
        """Whether a child of ``parent_id`` may be created outside a write
        transaction because another process holds the write lock right now
        (hold ``_lock``, no transaction open). True only on a running event
        loop, for a parent whose lease this graph holds: nobody else may
        create its children meanwhile, so a read (which in WAL mode never
        waits for a writer) decides whether the name is taken. The row is
        written by the next commit, which opens the transaction without
        blocking the loop and checks the parent's lease first. Otherwise
        (False) the transaction is opened here, and the caller may wait for
        the lock up to ``busy_timeout``: a write outside any run, or outside
        an event loop, where nothing else is kept waiting."""
        if parent_id is None or _running_loop() is None:
            return False
        if parent_id not in self._held:
            lost = self._lost.get(parent_id)
            if lost is not None:  # refused without waiting for the lock
                raise _again(lost)
            return False
        if self._gone is not None or self._commit_error is not None or self.read_only:
            return False  # _begin says why
        # False when the lock was free: the transaction is open now.
        return not self._try_begin()

    def _root_taken_now(self, parent_id: str | None, key: str) -> bool:
        """Whether a root called ``key`` exists, found without waiting for
        another process's write lock (hold ``_lock``, no transaction open).
        Only on a running event loop, and only while that lock is taken: a
        read (never kept waiting by a writer in WAL mode) finds a story that
        is already there, so finding it (the usual case on a resume) does not
        block the loop. False otherwise, after which the transaction is
        opened by the caller: at once if the lock was free (it is open now),
        else waiting up to ``busy_timeout``, since a new root must not be made
        without the lock (another process may be making it)."""
        if parent_id is not None or _running_loop() is None:
            return False
        if self._gone is not None or self._commit_error is not None or self.read_only:
            return False  # _begin says why
        if self._try_begin():
            return False
        return self._key_taken(self._conn, None, key)

    def insert_or_get_node(
        self, cls, name: str, data, parent_id: str | None, call_path: str | None = None
    ) -> NodeRecord:
        type_name, data_json = self._check_new(cls, name, data)
        return self.insert_or_get_encoded(type_name, name, data, data_json, parent_id, call_path)

    def insert_or_get_encoded(
        self,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        parent_id: str | None,
        call_path: str | None,
    ) -> NodeRecord:
        # Insert first: on a fresh run that is the common case, and the UNIQUE
        # index decides races between processes. On a resume the insert fails
        # and we read back the existing node.
        try:
            return self.insert_encoded(type_name, name, data, data_json, parent_id, call_path)
        except DuplicateNameError:
            record = self._by_name(name, parent_id, call_path)
            if record is None:  # pragma: no cover - a node is never deleted
                raise
            return record

    def child(
        self,
        parent_id: str | None,
        type_name: str,
        name: str,
        data: dict | None,
        data_json: str,
        call_path: str | None = None,
        *,
        exists_ok: bool = True,
    ) -> NodeRecord:
        """The node keyed ``call_path or name`` under ``parent_id``, created if
        missing (see :meth:`EntityStore.child <storylab.entities.store.EntityStore.child>`)."""
        if exists_ok:
            return self.insert_or_get_encoded(
                type_name, name, data, data_json, parent_id, call_path
            )
        return self.insert_encoded(type_name, name, data, data_json, parent_id, call_path)

    def update_data(
        self, id: str, change: str, value: Any, path: tuple[str, ...] = ()
    ) -> dict | None:
        """One data change, fenced (see :meth:`set_data`, :meth:`merge_data`,
        :meth:`set_data_path`)."""
        if change == "merge":
            return self.merge_data(id, value)
        if change == "path":
            return self.set_data_path(id, path, value)
        if change == "replace":
            self.set_data(id, value)
            return None
        allowed = ", ".join(repr(c) for c in DATA_CHANGES)
        raise ValueError(f"change must be one of {allowed}; got {change!r}")

    def put_blob(self, id: str, data: bytes, content_type: str) -> str:
        """Put ``data`` in :attr:`blobs` and return its key, once
        :meth:`check_lease` says the run writing it still holds ``id``."""
        self.check_lease(id)
        blobs = self.blobs
        if isinstance(blobs, BlobStore):
            # Checked again once the file's bytes are on disk, just before it
            # takes its name: a run stopped while writing (and taken over
            # meanwhile) leaves no file behind.
            return blobs.put(data, content_type, before_rename=lambda: self.check_lease(id))
        return blobs.put(data, content_type)

    def append_progress(self, env: Envelope) -> None:
        self._log(env)

    # A status change and its envelopes share one transaction, so the log
    # never shows an envelope whose status change was not committed with it;
    # so does the lease that goes with it.
    def start_if_pending(self, id: str, env: Envelope, parent_id: str | None = None) -> bool:
        """Mark a Pending node started, leased to us (and log ``env``); False
        if it was not Pending. Fenced by the parent's lease, if we hold it."""
        with self._lock:
            row = self._new_rows.get(id)
            if row is not None:  # created in this transaction, not written yet
                if row[3] != "Pending":
                    return False
                if parent_id is not None:
                    self._fence(parent_id)
                row[3], row[7] = "InProgress", env.at
                self._took(id, env.at)
                self._progress.append(env)
                self._schedule_commit()
                return True
            if parent_id is not None:
                self._begin()
                try:
                    self._fence(parent_id)
                finally:
                    self._schedule_commit()
            cur = self._apply(
                (
                    "UPDATE nodes SET status = 'InProgress', started_at = ? "
                    "WHERE id = ? AND status = 'Pending'",
                    (env.at, id),
                )
            )
            if cur.rowcount != 1:
                return False
            self._took(id, env.at)
            self._progress.append(env)
            return True

    def claim(
        self, id: str, env: Envelope, parent_id: str | None = None
    ) -> tuple[str, Any, LeaseRecord | None, Envelope]:
        """Start the node under our lease, or say why not (see
        :meth:`EntityStore.claim <storylab.entities.store.EntityStore.claim>`):
        a Pending node in one statement (the common case), any other through
        :meth:`_take`."""
        if self.start_if_pending(id, env, parent_id):
            return "Pending", None, None, env
        return self._take(id, env, parent_id)

    def _take(
        self, id: str, env: Envelope, parent_id: str | None = None
    ) -> tuple[str, Any, LeaseRecord | None, Envelope]:
        """Decide, in one write transaction, what starting a node that was not
        Pending does: ``("Completed", output, None, env)``; ``("busy", None,
        lease, env)`` while another owner's lease is live; otherwise the node
        is ours now (InProgress, leased, its result cleared, ``env`` logged)
        and the status it had is returned (``Failed``, ``InProgress`` when
        stale, ``Pending`` if it was reopened meanwhile), with the lease it
        was taken from."""
        with self._lock:
            conn = self._begin()
            try:
                if self._new_rows:
                    self._write_nodes()
                if self._new_leases:
                    self._write_leases()
                if parent_id is not None:
                    self._fence(parent_id)
                row = conn.execute(
                    f"SELECT n.status, n.output, {_LEASE_COLUMNS_OF_L} FROM nodes n "
                    "LEFT JOIN leases l ON l.node_id = n.id WHERE n.id = ?",
                    (id,),
                ).fetchone()
                if row is None:
                    raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
                status, output = row[0], row[1]
                if status == "Completed":
                    return status, self._stored(output, id, "output"), None, env
                lease = LeaseRecord(*row[2:]) if row[2] is not None else None
                if status == "InProgress" and lease is not None:
                    state = self.lease_state(lease)
                    if state == LEASE_LIVE:
                        return "busy", None, lease, env
                    env = dataclasses.replace(
                        env, message=f"taken over from {lease.owner} ({state})"
                    )
                conn.execute(
                    "UPDATE nodes SET status = 'InProgress', started_at = ?, finished_at = NULL, "
                    "error = NULL, output = NULL WHERE id = ?",
                    (env.at, id),
                )
                self._took(id, env.at)
                if lease is not None:
                    # Replace the old owner's row now: a lease dropped before
                    # the commit is otherwise never written, which would
                    # leave that row behind.
                    self._write_leases()
                self._progress.append(env)
                return status, None, lease, env
            finally:
                self._schedule_commit()

    def _rolled_back(self, id: str) -> UnknownEntityError:
        # Its creation went with a commit that failed: storing its end now
        # would report a result that is nowhere on disk.
        return UnknownEntityError(
            f"no entity with id {id!r} in {self.path} (a failed commit "
            "rolled back its creation); its result is not stored"
        )

    def _finish(self, id: str, status: str, column: str, value: str, at: float, envs) -> bool:
        """Store a run's end, if we still hold its lease (False, and nothing
        written, if another process took the node over)."""
        with self._lock:
            conn = self._conn if self._in_txn else self._begin()
            try:
                if self._lost and id in self._lost:
                    raise _again(self._lost[id])
                row = self._new_rows.get(id)
                if row is not None:  # not written yet: it will be, in this state
                    self._new_leases.pop(id, None)
                    row[3], row[8] = status, at
                    row[10 if column == "output" else 9] = value
                else:
                    if not self._drop_lease(conn, id):
                        if conn.execute("SELECT 1 FROM nodes WHERE id = ?", (id,)).fetchone():
                            # Another process holds it now: store nothing.
                            error = self._lease_lost_error(id)
                            self._mark_lost({id: error})
                            raise error
                        raise self._rolled_back(id)
                    cur = conn.execute(
                        f"UPDATE nodes SET status = ?, finished_at = ?, {column} = ? WHERE id = ?",
                        (status, at, value, id),
                    )
                    if cur.rowcount == 0:
                        raise self._rolled_back(id)
                self._held.pop(id, None)
                self._progress.extend(envs)
                self._settling.add(id)
                return True
            finally:
                self._schedule_commit(terminal=True)

    def finish(
        self, id: str, status: str, stored_json: str, envs: tuple[Envelope, Envelope]
    ) -> None:
        """Store a run's end (its output JSON when ``Completed``, its error JSON
        when ``Failed``) and log ``envs``, under the rule of :meth:`_finish`."""
        if status == "Completed":
            column = "output"
        elif status == "Failed":
            column = "error"
        else:
            raise ValueError(f"status must be 'Completed' or 'Failed'; got {status!r}")
        self._finish(id, status, column, stored_json, envs[-1].at, envs)

    def finish_completed(
        self, id: str, output_json: str, value_env: Envelope, done_env: Envelope
    ) -> bool:
        return self._finish(
            id, "Completed", "output", output_json, done_env.at, (value_env, done_env)
        )

    def finish_failed(
        self, id: str, error: dict, error_env: Envelope, failed_env: Envelope
    ) -> bool:
        return self._finish(
            id, "Failed", "error", dumps_log(error), failed_env.at, (error_env, failed_env)
        )

    def set_data(self, id: str, data_json: str) -> None:
        with self._lock:
            if id in self._held or id in self._lost:
                self._begin()
                try:
                    self._fence(id)
                finally:
                    self._schedule_commit()
            cur = self._apply(("UPDATE nodes SET data = ? WHERE id = ?", (data_json, id)))
        if cur.rowcount == 0:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")

    def merge_data(self, id: str, changes: dict) -> dict:
        with self._lock:
            # Read inside the write transaction, so no other process can slip
            # a change in between the read and the write.
            row = self._read_for_update(id)
            if row is None:
                self._schedule_commit()
                raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
            data = json.loads(row[0])
            data.update(changes)
            try:
                data_json = dumps(data, what="entity data")
            finally:
                self._schedule_commit()
            self._apply(("UPDATE nodes SET data = ? WHERE id = ?", (data_json, id)))
            return data

    def _read_for_update(self, id: str) -> tuple | None:
        """The node's data, read inside the write transaction (hold ``_lock``)."""
        conn = self._begin()
        if self._new_rows:
            self._write_nodes()
        try:
            self._fence(id)
        except LeaseLostError:
            self._schedule_commit()
            raise
        return conn.execute("SELECT data FROM nodes WHERE id = ?", (id,)).fetchone()

    def set_data_path(self, id: str, path: tuple[str, ...], value: Any) -> dict:
        with self._lock:
            # As in merge_data: read and write inside one write transaction.
            row = self._read_for_update(id)
            if row is None:
                self._schedule_commit()
                raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
            data = json.loads(row[0])
            node = data
            for depth, key in enumerate(path[:-1]):
                child = node.setdefault(key, {})
                if not isinstance(child, dict):
                    self._schedule_commit()
                    where = "/".join(path[: depth + 1])
                    raise TypeError(
                        f"cannot set {'/'.join(path)!r}: {where!r} holds a "
                        f"{type(child).__name__}, not a dict; nothing was changed"
                    )
                node = child
            node[path[-1]] = value
            self._apply(("UPDATE nodes SET data = ? WHERE id = ?", (dumps(data), id)))
            return data

    def reopen(self, id: str) -> NodeRecord:
        """Make a finished (Completed or Failed) node Pending again, so that its
        next start runs ``run_impl`` from the top.

        Its data and its children stay: a re-run finds the children by name,
        gets the stored result of the finished ones and runs the rest again.
        This is how a story that completed with failed pictures is retried.
        A Pending node is returned as it is; an InProgress one is refused.
        """
        record = self.get_node(id)
        if record.status == "Pending":
            return record
        if record.status == "InProgress":
            live = running_here(self._key, id)
            raise EntityGraphError(
                f"cannot reopen {record.type} ({record.name}): it is InProgress"
                + (" and running in this process" if live else " (start it to resume it)")
                + "; only Completed or Failed nodes can be reopened"
            )
        with self._lock:
            if self._may_defer_reopen():
                # Another process holds the write lock: the next transaction
                # reopens it (its first statement), reads say Pending meanwhile.
                self._reopens.add(id)
                self._schedule_commit()
                return node_record(
                    record.id, record.name, record.type, "Pending", record.data,
                    record.parent_id, record.created_at, None, None, None, None,
                    record.call_path,
                )  # fmt: skip
        # Only if it is still finished: another process may have reopened and
        # started it since we read it.
        cur = self._apply((_REOPEN, (id,)))
        if cur.rowcount != 1 and self.status_of(id) == "InProgress":
            raise EntityGraphError(
                f"cannot reopen {record.type} ({record.name}): another process started it "
                "meanwhile; only Completed or Failed nodes can be reopened"
            )
        return self.get_node(id)

    def _may_defer_reopen(self) -> bool:
        """Whether a reopening is left to the next transaction because another
        process holds the write lock right now (hold ``_lock``). Only on a
        running event loop, outside a transaction: there a synchronous wait
        for the lock would stop every other task. The node was read Completed
        or Failed; the transaction that applies it reopens it only if it
        still is (else another process reopened or started it meanwhile, and
        a run of it waits for that one)."""
        if self._in_txn or _running_loop() is None:
            return False
        if self._gone is not None or self._commit_error is not None or self.read_only:
            return False  # _apply says why
        # False when the lock was free: the transaction is open now.
        return not self._try_begin()

    def delete_tree(self, id: str) -> list[NodeRecord]:
        """Delete a root node and every node under it, with their progress logs
        and leases, in one transaction; return what was deleted (root first).

        For tools that forget a story (``storylab stories delete``). Refused
        with :class:`EntityGraphError`, nothing changed, for a node that is not
        a root, or a tree in which a node runs (InProgress under a live lease).
        Blobs are not touched: they are shared by content, so the caller
        decides which ones nothing refers to any more.
        """
        root = self.get_node(id)
        if root.parent_id is not None:
            raise EntityGraphError(
                f"{root.type} ({root.name}) is not a root entity: delete its root instead"
            )
        nodes = [root, *self.descendants(id)]
        now = time.time()
        for node in nodes:
            if node.status != "InProgress":
                continue
            lease = self.lease(node.id)
            if lease is not None and self.lease_state(lease, now) == LEASE_LIVE:
                raise EntityGraphError(
                    f"{node.type} ({node.name}) is running in {lease.owner}: let it finish "
                    "(or stop it) first; nothing was deleted"
                )
        ids = [n.id for n in nodes]
        marks = ", ".join("?" for _ in ids)
        with self._lock:
            self._apply(
                (f"DELETE FROM progress WHERE node_id IN ({marks})", tuple(ids)),
                (f"DELETE FROM leases WHERE node_id IN ({marks})", tuple(ids)),
                # Children first: each row's parent is still there when it goes.
                *((("DELETE FROM nodes WHERE id = ?", (i,))) for i in reversed(ids)),
            )
            self._parents.difference_update(ids)
            self.flush()
        return nodes

    def copy_to(self, path: str | os.PathLike[str]) -> Path:
        """Write a consistent copy of the graph, blobs included: the file to
        ``path`` (or ``path/graph.sqlite`` for a folder) through SQLite's
        online backup (a snapshot, even while others write), and the blob
        folder beside it (``<name>.blobs``). Return the new file's path.

        A graph is its file *and* its blob folder; this is how to move or copy
        it. Refused with :class:`EntityGraphError`, nothing written, if either
        target exists or the target folder does not.
        """
        import shutil

        if not isinstance(self._conn, sqlite3.Connection):
            raise EntityGraphError(
                f"{self.path} is not a SQLite graph: copy it with the database's own tools"
            )
        dest = Path(path)
        if dest.is_dir():
            dest = dest / "graph.sqlite"
        blobs = dest.with_suffix(".blobs")
        for target in (dest, blobs):
            if target.exists():
                raise EntityGraphError(f"{target} already exists: choose a new name")
        if not dest.parent.is_dir():
            raise EntityGraphError(f"the folder {dest.parent} does not exist")
        with self._lock:
            if not self.read_only:
                self.flush()
            copy = sqlite3.connect(dest)
            try:
                self._conn.backup(copy)
            except BaseException:
                copy.close()
                dest.unlink(missing_ok=True)
                raise
            copy.close()
        if self.blobs.root.is_dir():
            try:
                shutil.copytree(self.blobs.root, blobs)
            except BaseException:
                dest.unlink(missing_ok=True)
                shutil.rmtree(blobs, ignore_errors=True)
                raise
        else:
            blobs.mkdir()
        return dest

    def _set_status(self, id: str, status: EntityStatus | str) -> None:
        """Force a stored status (for tools and tests that simulate a crash)."""
        allowed = {s.value for s in EntityStatus}
        if status not in allowed:
            raise ValueError(f"status must be one of {sorted(allowed)}; got {status!r}")
        self._apply(("UPDATE nodes SET status = ? WHERE id = ?", (str(status), id)))
