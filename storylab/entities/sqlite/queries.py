"""Reads: nodes, children, progress logs, edges and roots.

Part of :class:`~storylab.entities.sqlite.EntityGraph` (see
:mod:`storylab.entities.sqlite` for the design).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from storylab.entities._commits import running_loop as _running_loop
from storylab.entities._reads import STATUSES as _STATUSES
from storylab.entities._reads import StoreReads
from storylab.entities.encoding import envelopes_from_rows, progress_rows
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import (
    UnknownEntityError,
)
from storylab.entities.records import NodeRecord
from storylab.entities.sqlite._shared import (
    _CHILD_TAKEN,
    _NODE_COLUMNS,
    _ROOT_TAKEN,
    GraphState,
)
from storylab.entities.store import READ_FIELDS

# Reads while writes wait for another process's write lock (see
# Queries._read_with_pending): the rows not written yet, the nodes whose
# reopening is not written yet, and the stored nodes with both laid over them.
_PENDING_COLUMNS = (
    "id, name, type, status, data, parent_id, created_at, started_at, finished_at, error, "
    "output, call_path"
)
_PROGRESS_COLUMNS = "node_id, type, status, message, sub_type, value, error, at, more"
_PENDING_TABLES = (
    f"CREATE TEMP TABLE IF NOT EXISTS pending_nodes (seq INTEGER, {_PENDING_COLUMNS})",
    "CREATE TEMP TABLE IF NOT EXISTS pending_reopens (id TEXT PRIMARY KEY)",
    f"CREATE TEMP TABLE IF NOT EXISTS pending_progress (seq INTEGER, {_PROGRESS_COLUMNS})",
)
_PENDING_PROGRESS_INSERT = f"INSERT INTO temp.pending_progress VALUES (?, {', '.join('?' * 9)})"
_PROGRESS_WITH_PENDING = (
    f"(SELECT seq, {_PROGRESS_COLUMNS} FROM main.progress "
    f"UNION ALL SELECT seq, {_PROGRESS_COLUMNS} FROM temp.pending_progress)"
)
_PROGRESS_READ = re.compile(r"\b(FROM|JOIN)\s+progress\b")
_PENDING_INSERT = f"INSERT INTO temp.pending_nodes VALUES (?, {', '.join('?' * 12)})"
_REOPENED = "(id IN (SELECT id FROM temp.pending_reopens) AND status IN ('Completed', 'Failed'))"
_STORED_REOPENED = ", ".join(
    f"CASE WHEN {_REOPENED} THEN {value} ELSE {column} END AS {column}"
    if value
    else column
    for column, value in (
        ("id", None), ("name", None), ("type", None), ("status", "'Pending'"), ("data", None),
        ("parent_id", None), ("created_at", None), ("started_at", "NULL"),
        ("finished_at", "NULL"), ("error", "NULL"), ("output", "NULL"), ("call_path", None),
    )
)  # fmt: skip
_WITH_PENDING = (
    "(SELECT rowid AS rowid, {stored} FROM main.nodes "
    f"UNION ALL SELECT seq, {_PENDING_COLUMNS} FROM temp.pending_nodes)"
)
_NODES_READ = re.compile(r"\b(FROM|JOIN)\s+nodes\b")


class Queries(StoreReads, GraphState):
    """The reads of the store (most of them :class:`StoreReads`')."""

    _DAMAGE_ADVICE = "; restore the file from a copy, or move it away to start a new graph"

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            if (self._new_rows or self._reopens) and not self._write_pending():
                return self._read_with_pending(sql, params)
            return self._conn.execute(sql, params).fetchall()

    def _read_with_pending(self, sql: str, params: tuple) -> list[tuple]:
        """``sql`` answered as if what waits for another process's write lock
        were written (hold ``_lock``, outside a transaction): the rows created
        meanwhile, and the reopening of nodes.

        They cannot be written without that lock, and a read on the event
        loop must not wait for it. So they are copied into tables of this
        connection's own temporary database (which needs no lock of the
        file), the new rows numbered after the stored ones in creation order
        as the commit will number them; and every ``nodes`` the query reads
        from is the stored rows (reopened ones Pending, their run's fields
        cleared) and the new ones together. In WAL mode the read itself
        never waits for a writer."""
        conn = self._conn
        for create in _PENDING_TABLES:
            conn.execute(create)
        envs = self._progress
        if envs:
            top = conn.execute("SELECT coalesce(max(seq), 0) FROM main.progress").fetchone()[0]
            conn.executemany(
                _PENDING_PROGRESS_INSERT,
                [(top + i, *row) for i, row in enumerate(progress_rows(envs), 1)],
            )
            sql = _PROGRESS_READ.sub(lambda m: f"{m[1]} {_PROGRESS_WITH_PENDING}", sql)
        rows = self._new_rows
        if rows:
            top = conn.execute("SELECT coalesce(max(rowid), 0) FROM main.nodes").fetchone()[0]
            conn.executemany(
                _PENDING_INSERT, [(top + i, *row) for i, row in enumerate(rows.values(), 1)]
            )
        if self._reopens:
            conn.executemany(
                "INSERT INTO temp.pending_reopens VALUES (?)", [(id,) for id in self._reopens]
            )
        stored = _STORED_REOPENED if self._reopens else _PENDING_COLUMNS
        nodes = _WITH_PENDING.format(stored=stored)
        try:
            return conn.execute(
                _NODES_READ.sub(lambda m: f"{m[1]} {nodes}", sql), params
            ).fetchall()
        finally:
            for table in ("pending_nodes", "pending_reopens", "pending_progress"):
                conn.execute(f"DELETE FROM temp.{table}")

    # ------------------------------------------------------------- read API

    def get_node(self, id: str) -> NodeRecord:
        rows = self._read(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?", (id,))
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        return self._record(rows[0])

    def progress(self, id: str) -> list[Envelope]:
        """The node's progress log, including every descendant's envelopes,
        in the order they were written (those not stored yet included: they
        are committed first, or, on an event loop while another process
        holds the write lock, read with the stored ones without waiting)."""
        self._require(id)
        with self._lock:
            if self._progress:
                if self._in_txn:
                    self._write_progress()
                elif _running_loop() is None or self._try_begin():
                    self._commit(block=True)
                else:
                    # Another process holds the write lock: read the buffered
                    # envelopes with the stored ones rather than wait for it.
                    return envelopes_from_rows(self._read_with_pending(*self._progress_query(id)))
        return self._progress_rows(id)

    def has_node(self, id: str) -> bool:
        """Whether the graph holds a node with this id."""
        return bool(self._read("SELECT 1 FROM nodes WHERE id = ?", (id,)))

    def integrity_problems(self, full: bool = False) -> list[str]:
        """What is wrong with the file, one line each (``[]``: nothing found).

        SQLite's ``quick_check`` (with ``full=True`` its slower
        ``integrity_check``, which also compares every index with its table),
        then storylab's own rules: every node's status is one of the four, and
        (``full``) its stored data, error and output are JSON. Only reads.
        """
        problems: list[str] = []
        if not isinstance(self._conn, sqlite3.Connection):
            return problems  # another store (PostgreSQL) checks its own pages
        try:
            rows = self._read("PRAGMA integrity_check" if full else "PRAGMA quick_check")
            problems += [
                " ".join(line for line in r[0].splitlines() if not line.startswith("***"))
                for r in rows
                if r[0] != "ok"
            ]
            marks = ", ".join("?" for _ in _STATUSES)
            for id, status in self._read(
                f"SELECT id, status FROM nodes WHERE status NOT IN ({marks})", _STATUSES
            ):
                problems.append(f"node {id} has the impossible status {status!r}")
            if full:
                for (id,) in self._read(
                    "SELECT id FROM nodes WHERE NOT json_valid(data) "
                    "OR (error IS NOT NULL AND NOT json_valid(error)) "
                    "OR (output IS NOT NULL AND NOT json_valid(output))"
                ):
                    problems.append(f"node {id} holds stored data that is not JSON")
        except sqlite3.DatabaseError as exc:
            problems.append(f"SQLite cannot read it: {exc}")
        return problems

    def _key_taken(self, conn: sqlite3.Connection, parent_id: str | None, key: str) -> bool:
        if parent_id is None:
            return conn.execute(_ROOT_TAKEN, (key,)).fetchone() is not None
        return conn.execute(_CHILD_TAKEN, (parent_id, key)).fetchone() is not None

    def _by_name(
        self, name: str, parent_id: str | None, call_path: str | None = None
    ) -> NodeRecord | None:
        if parent_id is None:
            return self.find_root(name)
        key = call_path or name
        if self._new_rows and not self._in_txn:
            # Rows created while another process holds the lock: answer
            # without writing them (which would wait for that lock).
            for row in self._new_rows.values():
                if row[5] == parent_id and (row[11] or row[1]) == key:
                    return self._record((*row[:11], key))
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT {_NODE_COLUMNS} FROM nodes "
                    "WHERE parent_id = ? AND coalesce(call_path, name) = ?",
                    (parent_id, key),
                ).fetchall()
            return self._record(rows[0]) if rows else None
        rows = self._read(
            f"SELECT {_NODE_COLUMNS} FROM nodes "
            "WHERE parent_id = ? AND coalesce(call_path, name) = ?",
            (parent_id, call_path or name),
        )
        return self._record(rows[0]) if rows else None

    def _status_output(self, id: str) -> tuple[str, Any]:
        rows = self._read("SELECT status, output FROM nodes WHERE id = ?", (id,))
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        return rows[0][0], self._stored(rows[0][1], id, "output")

    def read(self, id: str, field: str | None = None) -> Any:
        """The node (a :class:`NodeRecord`), or one of its fields alone:
        ``"status"``, ``"data"`` (a fresh dict) or ``"output"``."""
        row = self._new_rows.get(id) if not self._in_txn else None
        if row is not None:
            # Created while another process holds the lock, not written yet:
            # answered from its row rather than by waiting to write it.
            record = self._record((*row[:11], None if row[5] is None else row[11] or row[1]))
            return record if field is None else self._field(record, field)
        if field is None:
            return self.get_node(id)
        if field == "status":
            return self._status_output(id)[0]
        if field == "data":
            return self.data_of(id)
        if field == "output":
            return self._status_output(id)[1]
        allowed = ", ".join(repr(f) for f in READ_FIELDS)
        raise ValueError(f"field must be None or one of {allowed}; got {field!r}")

    @staticmethod
    def _field(record: NodeRecord, field: str) -> Any:
        if field not in READ_FIELDS:
            allowed = ", ".join(repr(f) for f in READ_FIELDS)
            raise ValueError(f"field must be None or one of {allowed}; got {field!r}")
        return getattr(record, field)

    def progress_since(self, id: str, seq: int | None) -> tuple[list[Envelope], int]:
        """What a run waiting on another owner passes on: the envelopes of
        ``id``'s subtree after row ``seq`` (:meth:`progress_after`), or with
        ``None`` the row just before the node's latest start
        (:meth:`progress_mark`). Checks first that the file is still there."""
        if seq is None:
            return [], self.progress_mark(id)
        self.check_file()
        return self.progress_after(id, seq)

    def status_of(self, id: str) -> str:
        return self._status_output(id)[0]

    def data_of(self, id: str) -> dict:
        rows = self._read("SELECT data FROM nodes WHERE id = ?", (id,))
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        return self._stored(rows[0][0], id, "data")
