"""Reads: nodes, children, progress logs, edges and roots.

Part of :class:`~storylab.entities.sqlite.EntityGraph` (see
:mod:`storylab.entities.sqlite` for the design).
"""

from __future__ import annotations

import sqlite3
from typing import Any, cast

from storylab.entities.encoding import (
    envelopes_from_rows,
    loads,
)
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import (
    NotAStorylabGraphError,
    UnknownEntityError,
)
from storylab.entities.records import (
    EntityStatus,
    NodeRecord,
    edge,
    node_record,
)
from storylab.entities.sqlite._shared import (
    _CHILD_TAKEN,
    _NODE_COLUMNS,
    _ROOT_TAKEN,
    GraphState,
)
from storylab.entities.store import READ_FIELDS

_STATUSES = tuple(s.value for s in EntityStatus)


class Queries(GraphState):
    """The reads of the store."""

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            if self._new_rows:
                self._write_pending()
            return self._conn.execute(sql, params).fetchall()

    # ------------------------------------------------------------- read API

    def _record(self, row: tuple) -> NodeRecord:
        if row[3] not in _STATUSES:
            raise NotAStorylabGraphError(
                f"the entity graph {self.path} is damaged: node {row[0]} has the impossible "
                f"status {row[3]!r} (a node is {', '.join(_STATUSES)}); restore the file from "
                "a copy, or move it away to start a new graph"
            )
        return node_record(
            row[0],
            row[1],
            row[2],
            row[3],
            self._stored(row[4], row[0], "data"),
            row[5],
            row[6],
            row[7],
            row[8],
            self._stored(row[9], row[0], "error"),
            self._stored(row[10], row[0], "output"),
            row[11],
        )

    def _stored(self, text: str | None, id: str, column: str) -> Any:
        """A stored JSON column; a damaged one is a :class:`NotAStorylabGraphError`
        naming the file, the node and the column (nothing is changed)."""
        try:
            return loads(text)
        except (ValueError, TypeError) as exc:
            raise NotAStorylabGraphError(
                f"the entity graph {self.path} is damaged: the stored {column} of node {id} "
                f"is not JSON ({exc}); restore the file from a copy, or move it away to "
                "start a new graph"
            ) from None

    def get_node(self, id: str) -> NodeRecord:
        rows = self._read(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?", (id,))
        if not rows:
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")
        return self._record(rows[0])

    def _require(self, id: str) -> None:
        if not self._read("SELECT 1 FROM nodes WHERE id = ?", (id,)):
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")

    def children(self, id: str) -> list[NodeRecord]:
        """Direct children over ``Calls`` edges, in creation order."""
        self._require(id)
        rows = self._read(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent_id = ? ORDER BY rowid", (id,)
        )
        return [self._record(r) for r in rows]

    def descendants(self, id: str) -> list[NodeRecord]:
        """All descendants, depth first, each level in creation order."""
        out: list[NodeRecord] = []
        stack = list(reversed(self.children(id)))
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(self.children(node.id)))
        return out

    def io(self, id: str) -> dict[str, Any]:
        node = self.get_node(id)
        return {"input": node.data, "output": node.output}

    def progress(self, id: str) -> list[Envelope]:
        """The node's progress log, including every descendant's envelopes,
        in the order they were written."""
        self._require(id)
        with self._lock:
            if self._progress:
                if self._in_txn:
                    self._write_progress()
                else:
                    self._commit(block=True)
        rows = self._read(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL "
            "SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id) "
            "SELECT p.node_id, n.type, n.name, p.type, p.status, p.message, p.value, "
            "p.sub_type, p.error, p.at, p.more FROM progress p JOIN nodes n ON n.id = p.node_id "
            "WHERE p.node_id IN (SELECT id FROM sub) ORDER BY p.seq",
            (id,),
        )
        return envelopes_from_rows(rows)

    def progress_mark(self, id: str) -> int:
        """The progress row just before the node's latest start: a run that
        waits on another process passes on that run's log from its beginning."""
        rows = self._read(
            "SELECT max(seq) FROM progress WHERE node_id = ? AND type = 'STATUS' "
            "AND status = 'STARTED'",
            (id,),
        )
        if rows[0][0] is not None:
            return rows[0][0] - 1
        return self._read("SELECT coalesce(max(seq), 0) FROM progress")[0][0]

    def progress_after(self, id: str, seq: int) -> tuple[list[Envelope], int]:
        """The envelopes of ``id``'s subtree logged after row ``seq``, and the
        last row read: what a run waiting on another process passes on."""
        rows = self._read(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL "
            "SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id) "
            "SELECT p.node_id, n.type, n.name, p.type, p.status, p.message, p.value, "
            "p.sub_type, p.error, p.at, p.more, p.seq FROM progress p "
            "JOIN nodes n ON n.id = p.node_id "
            "WHERE p.seq > ? AND p.node_id IN (SELECT id FROM sub) ORDER BY p.seq",
            (id, seq),
        )
        envs = envelopes_from_rows(rows)
        return envs, (rows[-1][11] if rows else seq)

    def edges(self, id: str) -> list[dict[str, Any]]:
        """``Calls`` edges from the node (by position), then the one into it."""
        self._require(id)
        out = [
            edge(id, child, pos)
            for pos, (child,) in enumerate(
                self._read("SELECT id FROM nodes WHERE parent_id = ? ORDER BY rowid", (id,))
            )
        ]
        rows = self._read(
            "SELECT parent_id, (SELECT count(*) FROM nodes s WHERE s.parent_id = n.parent_id "
            "AND s.rowid < n.rowid) FROM nodes n WHERE id = ? AND parent_id IS NOT NULL",
            (id,),
        )
        out.extend(edge(parent, id, pos) for parent, pos in rows)
        return out

    def roots(self, limit: int = 20) -> list[NodeRecord]:
        """The most recently created root entities first."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be a positive int; got {limit!r}")
        rows = self._read(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent_id IS NULL "
            "ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (limit,),
        )
        return [self._record(r) for r in rows]

    def node_ids(self, prefix: str = "", limit: int | None = None) -> list[str]:
        """The ids of the graph's nodes, in creation order: all of them, or
        those starting with ``prefix`` (any case), at most ``limit``."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string; got {prefix!r}")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise ValueError(f"limit must be None or a positive int; got {limit!r}")
        sql, params = "SELECT id FROM nodes", cast(tuple[object, ...], ())
        if prefix:
            # (ids are lower-case; LIKE's wildcards cannot be in a valid prefix,
            # but are escaped all the same)
            escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            sql, params = sql + " WHERE id LIKE ? ESCAPE '\\'", (escaped + "%",)
        sql += " ORDER BY rowid"
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        return [row[0] for row in self._read(sql, params)]

    def has_node(self, id: str) -> bool:
        """Whether the graph holds a node with this id."""
        return bool(self._read("SELECT 1 FROM nodes WHERE id = ?", (id,)))

    def root_data(self) -> list[tuple[str, Any]]:
        """Every root's id and data, in creation order: what a person's
        reference to a root by its topic is matched against, without reading
        every root's output. A root whose stored data is damaged comes back
        with ``None`` (reading it whole says what is wrong)."""
        rows = self._read("SELECT id, data FROM nodes WHERE parent_id IS NULL ORDER BY rowid")
        out = []
        for id, text in rows:
            try:
                out.append((id, self._stored(text, id, "data")))
            except NotAStorylabGraphError:
                out.append((id, None))
        return out

    def find_root(self, name: str) -> NodeRecord | None:
        rows = self._read(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent_id IS NULL AND name = ?", (name,)
        )
        return self._record(rows[0]) if rows else None

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
