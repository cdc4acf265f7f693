"""The read API both stores share, written once against ``self._read``.

:class:`StoreReads` is a mixin: a store gives it ``_read(sql, params)``
(rows of a query written with ``?`` placeholders; the PostgreSQL store turns
them into its own), ``has_node``, ``path`` and the two class attributes below,
and gets children, descendants, progress logs, edges, roots and node ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from storylab.entities.encoding import envelopes_from_rows, loads
from storylab.entities.envelopes import Envelope
from storylab.entities.errors import NotAStorylabGraphError, UnknownEntityError
from storylab.entities.records import EntityStatus, NodeRecord, edge, node_record

# The columns of a node as a record is made of (the last one: its key under
# its parent, None for a root).
NODE_COLUMNS = (
    "id, name, type, status, data, parent_id, created_at, started_at, finished_at, error, output, "
    "CASE WHEN parent_id IS NULL THEN NULL ELSE coalesce(call_path, name) END"
)
STATUSES = tuple(s.value for s in EntityStatus)

_PROGRESS_COLUMNS = (
    "p.node_id, n.type, n.name, p.type, p.status, p.message, p.value, p.sub_type, p.error, "
    "p.at, p.more"
)


class StoreReads:
    """Reads of a store's nodes and progress log, the same SQL on either store."""

    # The placeholder of a node id that starts a recursive subtree query.
    _ID_PARAM = "?"
    # What a message about a damaged graph adds (how to recover, if anything).
    _DAMAGE_ADVICE = ""

    path: Any

    if TYPE_CHECKING:  # given by the store

        def _read(self, sql: str, params: tuple = ()) -> list[tuple]: ...
        def has_node(self, id: str) -> bool: ...
        def get_node(self, id: str) -> NodeRecord: ...

    def _subtree(self) -> str:
        return (
            f"WITH RECURSIVE sub(id) AS (SELECT {self._ID_PARAM} UNION ALL "
            "SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id) "
        )

    def _record(self, row: tuple) -> NodeRecord:
        if row[3] not in STATUSES:
            raise NotAStorylabGraphError(
                f"the entity graph {self.path} is damaged: node {row[0]} has the impossible "
                f"status {row[3]!r} (a node is {', '.join(STATUSES)}){self._DAMAGE_ADVICE}"
            )
        return node_record(
            row[0], row[1], row[2], row[3], self._stored(row[4], row[0], "data"), row[5],
            row[6], row[7], row[8], self._stored(row[9], row[0], "error"),
            self._stored(row[10], row[0], "output"), row[11],
        )  # fmt: skip

    def _stored(self, text: str | None, id: str, column: str) -> Any:
        """A stored JSON column; a damaged one is a :class:`NotAStorylabGraphError`
        naming the graph, the node and the column (nothing is changed)."""
        try:
            return loads(text)
        except (ValueError, TypeError) as exc:
            raise NotAStorylabGraphError(
                f"the entity graph {self.path} is damaged: the stored {column} of node {id} "
                f"is not JSON ({exc}){self._DAMAGE_ADVICE}"
            ) from None

    def _require(self, id: str) -> None:
        if not self.has_node(id):
            raise UnknownEntityError(f"no entity with id {id!r} in {self.path}")

    def children(self, id: str) -> list[NodeRecord]:
        """Direct children over ``Calls`` edges, in creation order."""
        self._require(id)
        rows = self._read(
            f"SELECT {NODE_COLUMNS} FROM nodes WHERE parent_id = ? ORDER BY rowid", (id,)
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

    def _progress_query(self, id: str) -> tuple[str, tuple]:
        """The query (and its parameters) of :meth:`_progress_rows`."""
        sql = (
            self._subtree() + f"SELECT {_PROGRESS_COLUMNS} FROM progress p "
            "JOIN nodes n ON n.id = p.node_id "
            "WHERE p.node_id IN (SELECT id FROM sub) ORDER BY p.seq"
        )
        return sql, (id,)

    def _progress_rows(self, id: str) -> list[Envelope]:
        """The envelopes of ``id``'s subtree as stored, in the order written."""
        return envelopes_from_rows(self._read(*self._progress_query(id)))

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
            self._subtree() + f"SELECT {_PROGRESS_COLUMNS}, p.seq FROM progress p "
            "JOIN nodes n ON n.id = p.node_id "
            "WHERE p.seq > ? AND p.node_id IN (SELECT id FROM sub) ORDER BY p.seq",
            (id, seq),
        )
        return envelopes_from_rows(rows), (rows[-1][11] if rows else seq)

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
            f"SELECT {NODE_COLUMNS} FROM nodes WHERE parent_id IS NULL "
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
            f"SELECT {NODE_COLUMNS} FROM nodes WHERE parent_id IS NULL AND name = ?", (name,)
        )
        return self._record(rows[0]) if rows else None
