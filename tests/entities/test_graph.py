"""EntityGraph: the SQLite store, child creation, lazy parallel calls, bad input."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import sqlite3

import pytest

from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceFromIterable
from storylab.entities import (
    DuplicateNameError,
    EntityGraph,
    EntityTypeMismatchError,
    GraphAccessError,
    GraphNotFoundError,
    NotAStorylabGraphError,
    Return,
    RunnableEntity,
    SchemaVersionError,
    UnknownEntityError,
    UnregisteredTypeError,
)
from storylab.entities.graph import APPLICATION_ID, SCHEMA_VERSION

CALLS: collections.Counter = collections.Counter()


class GrChild(RunnableEntity):
    async def run_impl(self):
        CALLS[self.id] += 1
        await asyncio.sleep(0)
        yield Return(self.data.get("n"))


class GrOther(RunnableEntity):
    async def run_impl(self):
        yield Return(None)


class GrParent(RunnableEntity):
    async def run_impl(self):
        yield Return(None)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------- the file


def test_open_creates_a_wal_database_marked_as_a_storylab_graph(tmp_path):
    with EntityGraph.open(tmp_path / "sub" / "g.sqlite") as g:
        g.create(GrParent, "root")
        assert g.path == tmp_path / "sub" / "g.sqlite"
    conn = sqlite3.connect(tmp_path / "sub" / "g.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_default_path_uses_storylab_home_or_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STORYLAB_HOME", raising=False)
    with EntityGraph.open() as g:
        assert g.path.resolve() == (tmp_path / ".storylab" / "graph.sqlite").resolve()
    monkeypatch.setenv("STORYLAB_HOME", str(tmp_path / "home"))
    with EntityGraph.open() as g:
        assert g.path == tmp_path / "home" / "graph.sqlite"
    with EntityGraph.open(tmp_path / "home") as g:  # a directory means graph.sqlite inside
        assert g.path == tmp_path / "home" / "graph.sqlite"


def test_reopening_keeps_everything(tmp_path):
    with EntityGraph.open(tmp_path / "g.sqlite") as g:
        root = g.create(GrParent, "root", {"k": 1})
        child = root.append_call(GrChild, "c", {"n": 2})
    with EntityGraph.open(tmp_path / "g.sqlite") as g:
        assert g.get_node(root.id).data == {"k": 1}
        assert [c.id for c in g.children(root.id)] == [child.id]
        assert isinstance(g.entity(child.id), GrChild)


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("just some notes, not a database\n" * 50)
    before = digest(p)
    with pytest.raises(NotAStorylabGraphError, match="not a storylab entity graph"):
        EntityGraph.open(p)
    assert digest(p) == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["notes.txt"]


def test_another_sqlite_database_is_refused_and_left_alone(tmp_path):
    p = tmp_path / "other.sqlite"
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    before = digest(p)
    with pytest.raises(NotAStorylabGraphError, match="SQLite database but not a storylab"):
        EntityGraph.open(p)
    assert digest(p) == before
    conn = sqlite3.connect(p)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL


def test_a_newer_schema_is_refused_and_left_alone(tmp_path):
    p = tmp_path / "g.sqlite"
    with EntityGraph.open(p) as g:
        g.create(GrParent, "root")
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    before = digest(p)
    with pytest.raises(SchemaVersionError, match=f"schema {SCHEMA_VERSION + 1}, newer"):
        EntityGraph.open(p)
    assert digest(p) == before


def test_open_without_create_needs_an_existing_file(tmp_path):
    with pytest.raises(GraphNotFoundError, match="no entity graph at"):
        EntityGraph.open(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(
        ValueError,
        match="commit must be one of 'batched', 'interval', 'operation'; got 'sometimes'",
    ):
        EntityGraph.open(tmp_path / "g.sqlite", commit="sometimes")


def _finished_graph(path) -> str:
    with EntityGraph.open(path) as g:
        root = g.create(GrParent, "root", {"k": 1})
        root.append_call(GrChild, "c", {"n": 2})
        return root.id


def test_a_read_only_file_is_refused_for_writing_up_front_and_left_alone(
    tmp_path, make_read_only
):
    p = tmp_path / "g.sqlite"
    _finished_graph(p)
    before = digest(p)
    make_read_only(p)
    with pytest.raises(GraphAccessError, match=r"g\.sqlite is read-only .*nothing was changed"):
        EntityGraph.open(p)
    assert digest(p) == before


def test_read_only_opening_reads_a_read_only_file_and_writes_nothing(tmp_path, make_read_only):
    p = tmp_path / "g.sqlite"
    root_id = _finished_graph(p)
    before = digest(p)
    make_read_only(p)
    with EntityGraph.open(p, read_only=True) as g:
        assert g.get_node(root_id).data == {"k": 1}
        assert [c.name for c in g.children(root_id)] == ["c"]
        with pytest.raises(GraphAccessError, match="was opened read-only; nothing was changed"):
            g.create(GrParent, "another root")
        assert [r.id for r in g.roots()] == [root_id]
    assert digest(p) == before


def test_a_graph_another_connection_is_writing_opens_without_being_refused(tmp_path):
    p = tmp_path / "g.sqlite"
    root_id = _finished_graph(p)
    writer = sqlite3.connect(p, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a running story does
    try:
        with EntityGraph.open(p) as g:
            assert g.get_node(root_id).data == {"k": 1}
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_read_only_opening_never_creates_converts_or_upgrades(tmp_path):
    with pytest.raises(GraphNotFoundError, match="no entity graph at"):
        EntityGraph.open(tmp_path / "missing.sqlite", read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(NotAStorylabGraphError, match="is empty: not an entity graph yet"):
        EntityGraph.open(empty, read_only=True)
    assert empty.read_bytes() == b""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 50)
    with pytest.raises(NotAStorylabGraphError, match="not an SQLite database"):
        EntityGraph.open(notes, read_only=True)


def test_a_folder_nobody_may_write_to_gives_an_access_error_for_a_new_graph(
    tmp_path, make_read_only
):
    folder = tmp_path / "locked"
    folder.mkdir()
    make_read_only(folder)
    with pytest.raises(GraphAccessError, match="cannot open the entity graph .*new.sqlite"):
        EntityGraph.open(folder / "new.sqlite")
    assert list(folder.iterdir()) == []


def test_unknown_ids_raise_lookup_errors_everywhere(graph):
    for call in (
        graph.get_node,
        graph.children,
        graph.descendants,
        graph.io,
        graph.progress,
        graph.edges,
        graph.entity,
    ):
        with pytest.raises(UnknownEntityError, match="no entity with id 'nope'"):
            call("nope")
    assert issubclass(UnknownEntityError, LookupError)


def test_a_node_of_an_unregistered_type_cannot_be_revived(graph):
    root = graph.create(GrParent, "root")
    graph.flush()
    conn = sqlite3.connect(graph.path)
    conn.execute("UPDATE nodes SET type = 'VanishedEntity' WHERE id = ?", (root.id,))
    conn.commit()
    with pytest.raises(UnregisteredTypeError, match="'VanishedEntity' is not registered"):
        graph.entity(root.id)
    assert graph.get_node(root.id).type == "VanishedEntity"  # still readable as a record


def test_bad_creation_input_is_refused_before_anything_is_written(graph):
    with pytest.raises(TypeError, match="RunnableEntity subclass"):
        graph.create(dict, "x")
    with pytest.raises(ValueError, match="non-empty string"):
        graph.create(GrParent, "  ")
    with pytest.raises(TypeError, match="data must be a dict"):
        graph.create(GrParent, "x", ["not", "a", "dict"])
    with pytest.raises(TypeError, match="data of entity 'x' must be JSON serializable"):
        graph.create(GrParent, "x", {"when": object()})
    with pytest.raises(TypeError, match="put them in graph.blobs"):
        graph.create(GrParent, "x", {"png": b"\x89PNG"})
    assert graph.roots() == []


# ------------------------------------------------------------ root entities


def test_create_refuses_a_taken_root_name_and_create_or_retrieve_returns_it(graph):
    a = graph.create(GrParent, "story", {"v": 1})
    with pytest.raises(DuplicateNameError, match="'story' already exists among root entities"):
        graph.create(GrParent, "story", {"v": 2})
    b = graph.create_or_retrieve(GrParent, "story", {"v": 3})
    assert b.id == a.id and b.data == {"v": 1}
    assert len(graph.roots()) == 1


def test_roots_lists_most_recent_first_with_a_limit(graph):
    ids = [graph.create(GrParent, f"r{i}").id for i in range(4)]
    assert [r.id for r in graph.roots()] == ids[::-1]
    assert [r.id for r in graph.roots(limit=2)] == ids[:1:-1]
    with pytest.raises(ValueError, match="limit must be a positive int"):
        graph.roots(limit=0)


# ------------------------------------------------------------------ children


def test_append_call_creates_the_child_and_a_calls_edge(graph):
    p = graph.create(GrParent, "p")
    c = p.append_call(GrChild, "c", {"n": 1})
    assert isinstance(c, GrChild) and c.parent_id == p.id
    assert graph.get_node(c.id).data == {"n": 1}
    assert graph.get_node(c.id).status == "Pending"
    (edge,) = graph.edges(p.id)
    assert edge["source"] == p.id and edge["target"] == c.id
    assert edge["edge_type"] == "Calls" and edge["position"] == 0
    assert graph.edges(c.id) == [edge]  # the child sees its incoming edge


def test_append_call_with_a_taken_name_raises_and_changes_nothing(graph):
    p = graph.create(GrParent, "p")
    p.append_call(GrChild, "c", {"n": 1})
    with pytest.raises(DuplicateNameError, match="'c' already exists under parent"):
        p.append_call(GrChild, "c", {"n": 2})
    assert [c.data for c in graph.children(p.id)] == [{"n": 1}]
    assert len(graph.edges(p.id)) == 1


def test_append_or_retrieve_call_returns_the_existing_child_with_its_data(graph):
    p = graph.create(GrParent, "p")
    first = p.append_or_retrieve_call(GrChild, "c", {"n": 1})
    again = p.append_or_retrieve_call(GrChild, "c", {"n": 999})
    assert again.id == first.id and again.data == {"n": 1}
    assert len(graph.edges(p.id)) == 1


def test_retrieving_a_child_as_another_type_is_an_error(graph):
    p = graph.create(GrParent, "p")
    p.append_call(GrChild, "c")
    with pytest.raises(EntityTypeMismatchError, match="type 'GrChild', not 'GrOther'"):
        p.append_or_retrieve_call(GrOther, "c")


def test_child_names_are_unique_per_parent_only(graph):
    a, b = graph.create(GrParent, "a"), graph.create(GrParent, "b")
    ca = a.append_or_retrieve_call(GrChild, "safety-check")
    cb = b.append_or_retrieve_call(GrChild, "safety-check")
    assert ca.id != cb.id


def test_children_and_descendants_come_in_creation_order(graph):
    p = graph.create(GrParent, "p")
    c1 = p.append_call(GrParent, "one")
    c2 = p.append_call(GrChild, "two")
    g1 = c1.append_call(GrChild, "one-a")
    g2 = c1.append_call(GrChild, "one-b")
    assert [c.id for c in graph.children(p.id)] == [c1.id, c2.id]
    assert [d.id for d in graph.descendants(p.id)] == [c1.id, g1.id, g2.id, c2.id]
    assert [e["position"] for e in graph.edges(c1.id) if e["source"] == c1.id] == [0, 1]


def test_a_revived_node_has_its_own_class(graph):
    p = graph.create(GrParent, "p")
    c = p.append_call(GrChild, "c")
    assert type(graph.entity(c.id)) is GrChild
    assert type(graph.entity(p.id)) is GrParent


def test_commit_interval_zero_commits_after_one_event_loop_turn(tmp_path):
    graph = EntityGraph.open(tmp_path / "g.sqlite", commit_interval=0)

    async def main():
        p = graph.create(GrParent, "p")
        reader = sqlite3.connect(graph.path)
        count = "SELECT count(*) FROM nodes"
        assert reader.execute(count).fetchone()[0] == 0  # still in this turn's transaction
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert reader.execute(count).fetchone()[0] == 1
        p.append_call(GrChild, "c")
        graph.flush()
        assert reader.execute(count).fetchone()[0] == 2

    with graph:
        asyncio.run(main())


def test_batched_writes_are_committed_soon_and_when_the_last_run_ends(graph):
    async def main():
        reader = sqlite3.connect(graph.path)
        status = "SELECT status FROM nodes WHERE name = ?"
        p = graph.create(GrChild, "p", {"n": 1})
        await asyncio.sleep(0.1)  # several commit intervals
        assert reader.execute(status, ("p",)).fetchone() == ("Pending",)
        await p.run()  # the last running entity finished: committed at once
        assert reader.execute(status, ("p",)).fetchone() == ("Completed",)
        with EntityGraph.open(graph.path) as other:  # its own connection: committed data only
            assert [e.status for e in other.progress(p.id)] == ["STARTED", None, "COMPLETED"]

    asyncio.run(main())


class GrSlow(RunnableEntity):
    async def run_impl(self):
        await self.data_event.wait()
        yield Return("slow done")


class GrFanOut(RunnableEntity):
    """Fans out children; records what an outside reader saw at each FINAL."""

    seen: dict[str, list] = {}

    async def run_impl(self):
        reader = sqlite3.connect(self.graph.path)
        items = [{"name": f"c{i}", "data": {"n": i}} for i in range(6)]
        runner = HierarchicalTaskPoolRunner(
            "t", SourceFromIterable(self.parallel_calls(GrChild, items)), CapacitySource(3)
        )
        seen = self.seen.setdefault(self.id, [])
        async for env in runner.run_tasks():
            if env.type == "FINAL":
                row = reader.execute(
                    "SELECT status, output FROM nodes WHERE parent_id = ? AND name = ?",
                    (self.id, f"c{env.value}"),
                ).fetchone()
                seen.append(row)
        reader.close()
        yield Return(len(seen))


def test_a_finished_child_is_committed_before_the_runner_hands_its_result_on(tmp_path):
    # The promise "nothing finished is done twice": by the time anyone outside
    # the finishing step can act on a result, the Completed state is on disk.
    with EntityGraph.open(tmp_path / "g.sqlite", commit_interval=1.0) as g:
        p = g.create(GrFanOut, "p")
        assert asyncio.run(p.run()) == 6
    seen = GrFanOut.seen[p.id]
    assert [status for status, _ in seen] == ["Completed"] * 6
    assert sorted(int(output) for _, output in seen) == list(range(6))


def test_a_run_that_spans_a_commit_shows_in_progress_to_other_readers(tmp_path):
    with EntityGraph.open(tmp_path / "g.sqlite", commit_interval=0) as g:
        reader = sqlite3.connect(g.path)
        status = "SELECT status, started_at, finished_at FROM nodes WHERE name = ?"

        async def main():
            p = g.create(GrParent, "p")
            slow = p.append_call(GrSlow, "slow")
            slow.data_event = asyncio.Event()
            run = asyncio.ensure_future(slow.run())
            for _ in range(3):
                await asyncio.sleep(0)  # the run starts, the turn's commit happens
            state, started, finished = reader.execute(status, ("slow",)).fetchone()
            assert (state, finished) == ("InProgress", None) and started is not None
            slow.data_event.set()
            assert await run == "slow done"
            return started

        started = asyncio.run(main())
        state, started_after, finished = reader.execute(status, ("slow",)).fetchone()
        assert (state, started_after) == ("Completed", started) and finished >= started


async def test_a_child_started_and_finished_in_one_transaction_has_both_timestamps(graph):
    p = graph.create(GrParent, "p")
    c = p.append_call(GrChild, "c", {"n": 5})
    assert await c.run() == 5
    rec = graph.get_node(c.id)
    assert rec.status == "Completed" and rec.created_at <= rec.started_at <= rec.finished_at
    log = [(e.type, e.status) for e in graph.progress(c.id)]
    assert log == [("STATUS", "STARTED"), ("VALUE", None), ("STATUS", "COMPLETED")]


def test_bad_commit_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="commit_interval must be a number of seconds"):
        EntityGraph.open(tmp_path / "g.sqlite", commit_interval=-1)
    assert not (tmp_path / "g.sqlite").exists()


def test_two_graphs_on_one_file_in_one_process_do_not_block_each_other(tmp_path):
    async def main():
        (tmp_path / "sub").mkdir()
        other_spelling = tmp_path / "sub" / ".." / "graph.sqlite"
        with EntityGraph.open(tmp_path) as a, EntityGraph.open(other_spelling) as b:
            pa = a.create(GrParent, "pa")  # a holds a pending transaction
            pb = b.create(GrParent, "pb")  # b must not wait for a's lock
            assert {r.name for r in b.roots()} == {"pa", "pb"}
            return pa, pb

    asyncio.run(asyncio.wait_for(main(), 10))


# ------------------------------------------------------------ parallel_calls


async def test_parallel_calls_creates_children_only_when_pulled_in_item_order(graph):
    p = graph.create(GrParent, "p")
    items = [{"name": f"image-{i}", "data": {"n": i}} for i in range(3)]
    source = p.parallel_calls(GrChild, items)
    assert graph.children(p.id) == []
    first = await anext(source)
    assert [c.name for c in graph.children(p.id)] == ["image-0"]
    assert first.label == "image-0" and first.entity_id == graph.children(p.id)[0].id
    second = await anext(source)
    assert second.label == "image-1"
    assert [c.name for c in graph.children(p.id)] == ["image-0", "image-1"]


async def test_parallel_calls_under_a_runner_creates_no_more_children_than_capacity(graph):
    p = graph.create(GrParent, "p")
    items = [{"name": f"image-{i}", "data": {"n": i}} for i in range(5)]
    created_when_first_finished = None
    runner = HierarchicalTaskPoolRunner(
        "t", SourceFromIterable(p.parallel_calls(GrChild, items)), CapacitySource(2)
    )
    finals = []
    async for env in runner.run_tasks():
        if env.type == "FINAL":
            if created_when_first_finished is None:
                created_when_first_finished = len(graph.children(p.id))
            finals.append(env.value)
    assert created_when_first_finished == 2
    assert sorted(finals) == [0, 1, 2, 3, 4]


async def test_parallel_calls_thunk_of_a_completed_child_returns_the_stored_value(graph):
    p = graph.create(GrParent, "p")
    items = [{"name": "a", "data": {"n": 1}}, {"name": "b", "data": {"n": 2}}]
    async for thunk in p.parallel_calls(GrChild, items):
        run = thunk()
        async for _ in run:
            pass
    ids = [c.id for c in graph.children(p.id)]
    values = []
    async for thunk in p.parallel_calls(GrChild, items):  # as after a restart
        run = thunk()
        envs = [e async for e in run]
        assert [e.sub_type for e in envs] == ["return"]
        values.append(run.result)
    assert values == [1, 2]
    assert [CALLS[i] for i in ids] == [1, 1]
    assert len(graph.children(p.id)) == 2


@pytest.mark.parametrize(
    ("items", "error", "match"),
    [
        ([{"data": {}}], ValueError, r"items\[0\]\['name'\] must be a non-empty string"),
        ([{"name": "a"}, "b"], TypeError, r"items\[1\] must be a dict"),
        ([{"name": "a", "data": [1]}], TypeError, r"items\[0\]\['data'\] must be a dict"),
        ([{"name": "a"}, {"name": "a"}], ValueError, r"items\[1\]\['name'\] 'a' repeats items"),
        (
            [{"name": "a"}, {"name": "b", "data": {"x": object()}}],
            TypeError,
            r"items\[1\]\['data'\] must be JSON serializable",
        ),
    ],
)
def test_parallel_calls_checks_items_before_creating_anything(graph, items, error, match):
    p = graph.create(GrParent, "p")
    with pytest.raises(error, match=match):
        p.parallel_calls(GrChild, items)
    assert graph.children(p.id) == []


# ------------------------------------------------------------ older schemas

# The schema storylab wrote before call paths (version 1), as it was.
SCHEMA_1 = """
CREATE TABLE nodes (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('Pending', 'InProgress', 'Completed', 'Failed')),
    data TEXT NOT NULL, parent_id TEXT REFERENCES nodes(id), created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, error TEXT, output TEXT
);
CREATE UNIQUE INDEX nodes_child_name ON nodes(parent_id, name) WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX nodes_root_name ON nodes(name) WHERE parent_id IS NULL;
CREATE INDEX nodes_roots_recent ON nodes(created_at) WHERE parent_id IS NULL;
CREATE TABLE progress (
    seq INTEGER PRIMARY KEY, node_id TEXT NOT NULL, type TEXT NOT NULL, status TEXT,
    message TEXT, sub_type TEXT, value TEXT, error TEXT, at REAL NOT NULL
);
CREATE INDEX progress_node ON progress(node_id, seq);
"""


def write_schema_1_graph(path, *, drop_index: bool = False) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA_1)
    rows = [
        ("p", "root", "GrParent", "Completed", "{}", None, 1.0, 2.0, 3.0, None, "null"),
        ("c", "kid", "GrChild", "Completed", '{"n": 7}', "p", 1.5, 2.0, 2.5, None, "7"),
    ]
    conn.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute(
        "INSERT INTO progress (node_id, type, status, sub_type, at) "
        "VALUES ('c', 'STATUS', 'COMPLETED', 'ENTITY', 2.5)"
    )
    if drop_index:  # a damaged file: the upgrade cannot run
        conn.execute("DROP INDEX nodes_child_name")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=1")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def test_a_schema_1_graph_is_upgraded_in_place_and_keeps_everything(tmp_path):
    p = tmp_path / "old.sqlite"
    write_schema_1_graph(p)
    with EntityGraph.open(p, create=False) as g:
        kid = g.get_node("c")
        assert (kid.name, kid.call_path, kid.data, kid.output) == ("kid", "kid", {"n": 7}, 7)
        assert [e.status for e in g.progress("p")] == ["COMPLETED"]
        parent = g.entity("p")
        again = parent.append_or_retrieve_call(GrChild, "kid", {"n": 0})  # unique as before
        assert again.id == "c" and again.data == {"n": 7}
        parent._frames = ("gate", "safe")
        scoped = parent.append_call(GrChild, "kid")  # same name in a branch: a new child
        assert scoped.call_path == "gate/safe/kid"
        assert [k.id for k in g.children("p")] == ["c", scoped.id]
    conn = sqlite3.connect(p)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_schema_1_graph_that_cannot_be_upgraded_is_refused_and_left_alone(tmp_path):
    p = tmp_path / "damaged.sqlite"
    write_schema_1_graph(p, drop_index=True)
    before = digest(p)
    with pytest.raises(SchemaVersionError, match="schema 1; upgrading it to 4 failed"):
        EntityGraph.open(p)
    assert digest(p) == before
    conn = sqlite3.connect(p)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 2


def test_a_schema_version_no_storylab_wrote_is_refused(tmp_path):
    p = tmp_path / "g.sqlite"
    EntityGraph.open(p).close()
    conn = sqlite3.connect(p)
    conn.execute("PRAGMA user_version=0")
    conn.close()
    with pytest.raises(SchemaVersionError, match="schema 0, which no storylab ever wrote"):
        EntityGraph.open(p)


class GrChatty(RunnableEntity):
    """Logs many envelopes in one step, one of them with a value JSON cannot hold."""

    async def run_impl(self):
        for i in range(150):
            yield self.progress({"i": i}, message=f"step {i}")
        loop = []
        loop.append(loop)
        yield self.progress(loop, message="circular")
        yield self.status("RUNNING", "after")
        yield Return("chatty done")


async def test_the_progress_log_reads_back_exactly_as_streamed(graph):
    e = graph.create(GrChatty, "chatty")
    streamed = [env async for env in e.start()]
    logged = graph.progress(e.id)
    assert len(logged) == len(streamed) == 155
    plain = [(x.type, x.status, x.message, x.sub_type, x.at) for x in logged]
    assert plain == [(x.type, x.status, x.message, x.sub_type, x.at) for x in streamed]
    assert [x.value for x in logged[1:151]] == [{"i": i} for i in range(150)]
    assert logged[151].message == "circular" and logged[151].value == "<not loggable: " + (
        "maximum recursion depth exceeded while encoding a JSON object>"
    )
    assert logged[-2].value == "chatty done"
    assert (logged[0].entity_id, logged[0].entity_type, logged[0].entity_name) == (
        e.id,
        "GrChatty",
        "chatty",
    )
    graph.flush()
    rows = sqlite3.connect(graph.path).execute("SELECT count(*) FROM progress").fetchone()[0]
    assert rows < len(logged)  # consecutive envelopes of one node share rows


async def test_names_stay_unique_within_one_uncommitted_transaction(graph):
    # On a running loop, creations share a transaction and are written at its
    # end; a taken name must be refused (or retrieved) before that as well.
    p = graph.create(GrParent, "p")
    first = p.append_call(GrChild, "c", {"n": 1})
    with pytest.raises(DuplicateNameError, match="'c' already exists under parent"):
        p.append_call(GrChild, "c", {"n": 2})
    assert p.append_or_retrieve_call(GrChild, "c", {"n": 3}).id == first.id
    root_again = graph.create_or_retrieve(GrParent, "p")
    assert root_again.id == p.id
    graph.flush()
    reader = sqlite3.connect(graph.path)
    assert reader.execute("SELECT count(*) FROM nodes").fetchone()[0] == 2


async def test_a_child_of_an_unknown_parent_is_refused_before_anything_is_written(graph):
    from storylab.entities.graph import NodeRecord

    ghost = graph._revive(
        NodeRecord("no-such-id", "ghost", "GrParent", "Pending", {}, None, 0.0, None, None, None,
                   None),
        GrParent,
    )  # fmt: skip
    with pytest.raises(UnknownEntityError, match="no entity with id 'no-such-id'"):
        ghost.append_call(GrChild, "c")
    graph.flush()
    assert sqlite3.connect(graph.path).execute("SELECT count(*) FROM nodes").fetchone()[0] == 0


def test_a_failed_commit_is_raised_not_just_logged(tmp_path, monkeypatch):
    import sqlite3

    from storylab.entities import EntityGraph, EntityGraphError, Return, RunnableEntity

    class Noop(RunnableEntity):
        async def run_impl(self):
            yield Return(None)

    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        kept = graph.create(Noop, "kept")
        graph.flush()

        def disk_full():
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(graph, "_write_progress", disk_full)
        lost = graph.create(Noop, "lost")
        with pytest.raises(EntityGraphError, match="commit .* failed .*disk is full"):
            graph.flush()
        monkeypatch.undo()
        assert [r.name for r in graph.roots()] == ["kept"]  # the rolled-back node is gone
        with pytest.raises(UnknownEntityError):
            graph.get_node(lost.id)
        graph.create(Noop, "after")  # the graph works again once the error was raised
        graph.flush()
        assert {r.name for r in graph.roots()} == {"kept", "after"}
        assert graph.get_node(kept.id).status == "Pending"
