"""The store interface: EntityGraph implements it, entity code calls nothing else,
and the entity modules do not import each other in a circle."""

from __future__ import annotations

import ast
import inspect
import sqlite3
from pathlib import Path

import pytest

import storylab.entities as entities_pkg
from storylab.entities import DuplicateNameError, EntityGraph, Return, RunnableEntity
from storylab.entities.store import EntityStore

PACKAGE = Path(entities_pkg.__file__).parent
# The modules that hold entities and runs: they may use the store only through
# the protocol.
ENTITY_CODE = ["entity.py", "run.py"]


def protocol_members() -> set[str]:
    names = set(EntityStore.__annotations__)
    for name, value in vars(EntityStore).items():
        if not name.startswith("_") and (callable(value) or isinstance(value, property)):
            names.add(name)
    return names


# One member per need of an entity (create-or-get a child by name, claim and
# lease, fenced writes, finish, read, progress, blobs), and no more.
NEEDS = {
    "naming the graph": {"key"},
    "read": {"read", "children"},
    "create-or-get a child by name": {"child"},
    "claim and lease": {"claim", "run_started", "run_ended", "abandon"},
    "fenced writes": {"write_waiter", "append_progress", "update_data", "reopen"},
    "finish": {"finish", "commit_waiter"},
    "another owner's progress": {"progress_since", "lease_of"},
    "blobs": {"put_blob", "blobs"},
}


def test_the_protocol_is_what_entities_need_and_nothing_more():
    members = protocol_members()
    assert members == set().union(*NEEDS.values())
    assert len(members) <= 20
    assert all(not m.startswith("_") for m in members)
    # The SQLite class's own details stay out of it.
    for detail in (
        "start_if_pending",
        "finish_completed",
        "insert_node",
        "check_file",
        "commit_peers",
        "is_gone",
        "lease_state",
        "path",
        "lease_ttl",
    ):
        assert detail not in members, detail


def test_an_entity_graph_is_an_entity_store(tmp_path):
    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        assert isinstance(graph, EntityStore)
        for name in protocol_members():
            assert hasattr(graph, name), name


def test_an_object_missing_an_operation_is_not_a_store():
    class Partial:
        path = Path("x")
        blobs = None

        def get_node(self, id):
            return None

    assert not isinstance(Partial(), EntityStore)


def runtime_imports(path: Path) -> set[str]:
    """The storylab.entities modules ``path`` imports when it runs (imports
    under ``if TYPE_CHECKING:`` are for annotations only and are skipped)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            skipped.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            mods = [node.module]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        for mod in mods:
            if mod.startswith("storylab.entities."):
                found.add(mod.removeprefix("storylab.entities.").split(".")[0])
    return found


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(mod: str) -> list[str] | None:
        state[mod] = 1
        path.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[mod] = 2
        path.pop()
        return None

    for mod in sorted(graph):
        if mod not in state and (cycle := visit(mod)):
            return cycle
    return None


def test_the_entity_modules_import_each_other_without_a_circle():
    graph = {p.stem: runtime_imports(p) for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert "graph" not in graph["entity"] | graph["run"]  # entities never need SQLite
    assert import_cycle(graph) is None, import_cycle(graph)


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": set()}) is None


def is_store(node: ast.expr) -> bool:
    """``graph``, ``store`` or ``<anything>._graph``: how entity code names its store."""
    if isinstance(node, ast.Name):
        return node.id in ("graph", "store")
    return isinstance(node, ast.Attribute) and node.attr == "_graph"


def private_store_calls(source: str) -> list[str]:
    """``graph._x`` / ``self._graph._x`` / ``store._x`` accesses in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and is_store(node.value):
            out.append(f"line {node.lineno}: {ast.unparse(node)}")
    return out


@pytest.mark.parametrize("module", ENTITY_CODE)
def test_entity_code_calls_the_store_through_the_protocol_only(module):
    source = (PACKAGE / module).read_text()
    assert private_store_calls(source) == []
    # Every store operation it calls is one the protocol declares.
    members = protocol_members()
    used = {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and is_store(node.value)
    }
    assert used  # the check looks at something
    assert used - members == set(), used - members


def test_the_private_call_check_finds_one():
    assert private_store_calls("graph._claim(1)\nself._graph._status(2)\n") == [
        "line 1: graph._claim",
        "line 2: self._graph._status",
    ]


def test_every_protocol_operation_is_documented():
    for name in protocol_members() - set(EntityStore.__annotations__):
        member = inspect.getattr_static(EntityStore, name)
        doc = (member.fget if isinstance(member, property) else member).__doc__
        assert doc and doc.strip(), name


class Plain(RunnableEntity, type_name="StoreInterfacePlain"):
    async def run_impl(self):
        yield Return(None)


def test_bad_choices_in_the_interface_are_refused_naming_the_allowed_values(tmp_path):
    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        node = graph.create(Plain, "plain")
        before = graph.get_node(node.id)
        with pytest.raises(ValueError, match=r"field must be None or one of 'status', 'data'"):
            graph.read(node.id, "colour")
        with pytest.raises(ValueError, match=r"change must be one of 'replace', 'merge', 'path'"):
            graph.update_data(node.id, "append", {"x": 1})
        with pytest.raises(ValueError, match=r"status must be 'Completed' or 'Failed'"):
            graph.finish(node.id, "Done", "null", ())
        assert graph.get_node(node.id) == before  # nothing stored


def test_the_interface_reads_and_writes_what_it_says(tmp_path):
    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        root = graph.child(None, Plain.type_name, "root", {"a": 1}, '{"a": 1}')
        assert graph.child(None, Plain.type_name, "root", {}, "{}").id == root.id
        with pytest.raises(DuplicateNameError):
            graph.child(None, Plain.type_name, "root", {}, "{}", exists_ok=False)
        kid = graph.child(root.id, Plain.type_name, "kid", None, "{}", "branch/yes/kid")
        assert [c.id for c in graph.children(root.id)] == [kid.id]
        assert graph.read(kid.id).call_path == "branch/yes/kid"
        assert graph.update_data(root.id, "merge", {"b": 2}) == {"a": 1, "b": 2}
        assert graph.update_data(root.id, "path", 3, ("c", "d")) == {"a": 1, "b": 2, "c": {"d": 3}}
        assert graph.update_data(root.id, "replace", '{"z": 0}') is None
        assert graph.read(root.id, "data") == {"z": 0}
        assert graph.read(root.id, "status") == "Pending"
        assert graph.lease_of(root.id) == ("Pending", None, None)
        envs, mark = graph.progress_since(root.id, None)
        assert envs == [] and mark == 0


def test_the_read_api_for_people_needs_no_sql(tmp_path):
    """What `storylab eg` resolves a reference with: ids, a prefix, roots' data."""
    path = tmp_path / "g.sqlite"
    with EntityGraph.open(path) as graph:
        a = graph.create(Plain, "a", {"topic": "owls"})
        b = graph.create(Plain, "b", {"topic": "foxes"})
        kid = graph.child(a.id, Plain.type_name, "kid", None, "{}")
        assert graph.node_ids() == [a.id, b.id, kid.id]
        assert graph.node_ids(a.id[:-1].upper()) == [a.id]  # (v7 ids share their start)
        assert set(graph.node_ids(a.id[:8])) >= {a.id}
        assert graph.node_ids(limit=2) == [a.id, b.id]
        assert graph.node_ids("%") == [] and graph.node_ids("_") == []  # no wildcards
        with pytest.raises(ValueError, match="limit must be None or a positive int"):
            graph.node_ids(limit=0)
        assert graph.has_node(kid.id) and not graph.has_node("nope")
        assert graph.root_data() == [(a.id, {"topic": "owls"}), (b.id, {"topic": "foxes"})]
    conn = sqlite3.connect(path)
    conn.execute("UPDATE nodes SET data = 'not json' WHERE id = ?", (b.id,))
    conn.commit()
    conn.close()
    with EntityGraph.open(path) as graph:
        assert graph.root_data() == [(a.id, {"topic": "owls"}), (b.id, None)]
