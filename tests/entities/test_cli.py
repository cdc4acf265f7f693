"""``storylab eg``: tree, node views, list, and clear errors."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import pytest

from storylab.cli import main as storylab_main
from storylab.entities import EntityGraph, Return, RunnableEntity


class CliPipeline(RunnableEntity):
    async def run_impl(self):
        yield self.status("RUNNING", "writing")
        writer = self.append_or_retrieve_call(CliWriter, "story-writer", {"topic": "owls"})
        yield Return({"story": (yield self.delegate(writer))})


class CliWriter(RunnableEntity):
    async def run_impl(self):
        yield Return("Once upon a time")


class CliImage(RunnableEntity):
    async def run_impl(self):
        if self.data.get("fail"):
            raise RuntimeError("backend said no\nsecond line of detail")
        yield Return({"object_key": "abc.png"})


@pytest.fixture
def story(tmp_path):
    """A finished pipeline with a writer, two images (one failed) and a pending one."""
    import asyncio

    path = tmp_path / "graph.sqlite"
    with EntityGraph.open(path) as g:
        root = g.create(CliPipeline, "story-pipeline-owls", {"topic": "owls"})
        asyncio.run(root.run())
        ok = root.append_call(CliImage, "image-{{IMAGE_1}}", {})
        bad = root.append_call(CliImage, "image-{{IMAGE_2}}", {"fail": True})
        root.append_call(CliImage, "image-{{IMAGE_3}}", {})
        asyncio.run(ok.run())
        with pytest.raises(RuntimeError):
            asyncio.run(bad.run())
        ids = {"root": root.id, "bad": bad.id}
    return path, ids


def eg(capsys, *argv) -> tuple[int, str, str]:
    code = storylab_main(["eg", *argv])
    out, err = capsys.readouterr()
    return code, out, err


_ID_COLUMN = re.compile(r"(?<=  )[0-9a-f]{8}[0-9a-f-]*  +(?=Status: )")


def _ids_column(out: str) -> tuple[list[str], list[str]]:
    """The tree's lines without their short-id column, and the short ids."""
    ids = [m.group(0).strip() for m in map(_ID_COLUMN.search, out.splitlines())]
    return [_ID_COLUMN.sub("", line) for line in out.splitlines()], ids


def test_tree_lists_children_in_creation_order_with_statuses(story, capsys):
    path, ids = story
    code, out, _ = eg(capsys, "tree", ids["root"], "--graph", str(path))
    assert code == 0
    lines, shown = _ids_column(out)
    assert lines == [
        "CliPipeline (story-pipeline-owls)   Status: Completed",
        "  ├── CliWriter (story-writer)      Status: Completed",
        "  ├── CliImage (image-{{IMAGE_1}})  Status: Completed",
        "  ├── CliImage (image-{{IMAGE_2}})  Status: Failed"
        "  (RuntimeError: backend said no second line of detail)",
        "  └── CliImage (image-{{IMAGE_3}})  Status: Pending",
    ]
    with EntityGraph.open(path, read_only=True) as g:
        nodes = [g.get_node(ids["root"]), *g.children(ids["root"])]
    # Each node's short id: the start of its own id, and of no other node's.
    for short, node in zip(shown, nodes, strict=True):
        assert node.id.startswith(short) and len(short) >= 8
        assert [n.id for n in nodes if n.id.startswith(short)] == [node.id]


def test_graph_option_is_accepted_before_the_subcommand(story, capsys):
    path, ids = story
    code, out, _ = eg(capsys, "--graph", str(path), "tree", ids["bad"])
    assert code == 0
    assert out.startswith(f"CliImage (image-{{{{IMAGE_2}}}})  {ids['bad'][:8]}")


def test_node_views_print_json(story, capsys):
    path, ids = story
    g = ["--graph", str(path)]
    code, out, _ = eg(capsys, "node", ids["root"], *g)
    node = json.loads(out)
    assert code == 0 and node["id"] == ids["root"] and node["status"] == "Completed"
    assert node["output"] == {"story": "Once upon a time"}
    _, out_get, _ = eg(capsys, "node", "get", ids["root"], *g)
    assert json.loads(out_get) == node
    _, out, _ = eg(capsys, "node", "io", ids["root"], *g)
    assert json.loads(out) == {"input": {"topic": "owls"}, "output": {"story": "Once upon a time"}}
    _, out, _ = eg(capsys, "node", "progress", ids["root"], *g)
    log = json.loads(out)
    assert [(e["entity_name"], e["status"]) for e in log[:3]] == [
        ("story-pipeline-owls", "STARTED"),
        ("story-pipeline-owls", "RUNNING"),
        ("story-writer", "STARTED"),
    ]
    assert "image-{{IMAGE_2}}" in {e["entity_name"] for e in log}  # children percolate
    _, out, _ = eg(capsys, "node", "edges", ids["root"], *g)
    edges = json.loads(out)
    assert [e["position"] for e in edges] == [0, 1, 2, 3]
    assert {e["edge_type"] for e in edges} == {"Calls"}


def test_list_shows_recent_roots(story, capsys):
    path, ids = story
    code, out, _ = eg(capsys, "list", "--graph", str(path))
    assert code == 0
    (line,) = out.splitlines()
    short = line.split()[0]
    assert ids["root"].startswith(short) and "CliPipeline (story-pipeline-owls)" in line


@pytest.mark.parametrize("command", [["tree"], ["node"], ["node", "io"], ["node", "edges"]])
def test_unknown_id_exits_non_zero_with_a_clear_message(story, capsys, command):
    path, _ = story
    code, out, err = eg(capsys, *command, "no-such-id", "--graph", str(path))
    assert code == 1 and out == ""
    assert "no entity with id, name or topic 'no-such-id'" in err


def test_bad_node_view_and_missing_graph_are_clear_errors(story, capsys, tmp_path):
    path, ids = story
    code, _, err = eg(capsys, "node", "outputs", ids["root"], "--graph", str(path))
    assert code == 2 and "VIEW one of get, io, progress, edges" in err  # bad usage
    missing = tmp_path / "nowhere.sqlite"
    code, _, err = eg(capsys, "list", "--graph", str(missing))
    assert code == 1 and "no entity graph at" in err
    assert not missing.exists()  # reading never creates a graph


def test_the_installed_command_reports_an_unknown_id(story):
    path, _ = story
    exe = shutil.which("storylab")
    cmd = [exe] if exe else [sys.executable, "-m", "storylab.cli"]
    proc = subprocess.run(
        [*cmd, "eg", "tree", "missing-id", "--graph", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "no entity with id, name or topic 'missing-id'" in proc.stderr


def test_tree_draws_grandchildren_under_their_parent(tmp_path, capsys):
    with EntityGraph.open(tmp_path / "g.sqlite") as g:
        root = g.create(CliPipeline, "root")
        a = root.append_call(CliWriter, "a")
        a.append_call(CliImage, "a1")
        root.append_call(CliWriter, "b").append_call(CliImage, "b1")
        root_id = root.id
    code, out, _ = eg(capsys, "tree", root_id, "--graph", str(tmp_path / "g.sqlite"))
    assert code == 0
    assert [line.split("Status:")[0].rstrip() for line in _ids_column(out)[0]] == [
        "CliPipeline (root)",
        "  ├── CliWriter (a)",
        "  │   └── CliImage (a1)",
        "  └── CliWriter (b)",
        "      └── CliImage (b1)",
    ]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_clear_line(err: str, prefix: str = "storylab eg: error: ") -> str:
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith(prefix)
    return line


@pytest.mark.parametrize("command", [["list"], ["tree", "some-id"], ["node", "io", "some-id"]])
def test_a_file_that_is_no_usable_graph_is_one_line_and_exit_1_and_left_alone(
    capsys, unusable_graph, command
):
    path, message = unusable_graph
    before = _digest(path)
    code, out, err = eg(capsys, *command, "--graph", str(path))
    assert code == 1 and out == ""
    assert message in _one_clear_line(err)
    assert _digest(path) == before


def test_a_read_only_graph_file_can_still_be_looked_at(story, capsys, make_read_only):
    path, ids = story
    before = _digest(path)
    make_read_only(path)
    code, out, err = eg(capsys, "tree", ids["root"], "--graph", str(path))
    assert code == 0 and err == ""
    assert _ids_column(out)[0][0] == "CliPipeline (story-pipeline-owls)   Status: Completed"
    code, out, _ = eg(capsys, "list", "--graph", str(path))
    assert code == 0 and ids["root"].startswith(out.split()[0])
    assert _digest(path) == before


def test_a_graph_on_a_read_only_disk_can_still_be_looked_at(story, on_read_only_mount):
    path, ids = story
    exe = [sys.executable, "-m", "storylab.cli"]
    argv = [*exe, "eg", "tree", ids["root"], "--graph", "{ro}/graph.sqlite"]
    done = on_read_only_mount([path], argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("CliPipeline (story-pipeline-owls)  ") and done.stderr == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--limit", "0"], "argument --limit: must be a whole number from 1 to 1000000"),
        (["list", "--limit", "many"], "argument --limit: must be a whole number from 1 to 1000000"),
        (
            ["walk"],
            "invalid choice: 'walk' (choose from 'list', 'tree', 'node', 'check', 'export', "
            "'export-pictures')",
        ),
        ([], "choose a command: list, tree, node, check, export or export-pictures"),
    ],
)
def test_a_bad_command_line_is_exit_2_with_one_line(story, capsys, argv, message):
    path, _ = story
    code, out, err = eg(capsys, "--graph", str(path), *argv)
    assert code == 2 and out == ""
    assert message in _one_clear_line(err, "storylab eg")


def test_tree_shows_who_runs_an_in_progress_node_and_when_it_is_stale(tmp_path, capsys):
    import re
    import sqlite3
    import time

    from storylab.entities.graph import HOST

    path = tmp_path / "g.sqlite"
    with EntityGraph.open(path) as g:
        root = g.create(CliPipeline, "root")
        kids = {n: root.append_call(CliImage, n).id for n in ("live", "expired", "gone", "none")}
        root_id = root.id
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = time.time()
    leases = {  # name: (host, pid, taken this long ago, expires in)
        "live": ("elsewhere", 4242, 12.0, 8.0),
        "expired": ("elsewhere", 4343, 30.0, -5.0),
        "gone": (HOST, gone.pid, 3.0, 60.0),
    }
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE nodes SET status = 'InProgress' WHERE parent_id IS NOT NULL")
    for name, (host, pid, age, left) in leases.items():
        conn.execute(
            "INSERT INTO leases VALUES (?, ?, ?, ?, 'tok', ?, ?, ?)",
            (kids[name], f"{host}:{pid}", host, pid, now - age, now - 2.0, now + left),
        )
    conn.close()
    code, out, _ = eg(capsys, "tree", root_id, "--graph", str(path))
    assert code == 0
    lines = {line.split("(")[1].split(")")[0]: line for line in out.splitlines()}
    assert re.search(
        r"Status: InProgress  \(running in elsewhere:4242, for 12\.\ds, heartbeat 2\.\ds ago\)$",
        lines["live"],
    )
    assert re.search(
        r"\(stale: elsewhere:4343 took it 30\.\ds ago, lease expired 5\.\ds ago; "
        r"the next run takes it over\)$",
        lines["expired"],
    )
    assert f"(stale: {HOST}:{gone.pid} took it 3." in lines["gone"]
    assert "its process is gone" in lines["gone"]
    assert lines["none"].endswith("(stale: nobody holds it; the next run takes it over)")
    assert lines["root"].endswith("Status: Pending")


def test_a_long_root_name_does_not_widen_its_childrens_lines(tmp_path, capsys):
    path = tmp_path / "g.sqlite"
    with EntityGraph.open(path) as g:
        root = g.create(CliPipeline, "story-pipeline-" + "a-very-long-topic-" * 5, {})
        root.append_call(CliImage, "image-1", {})
        root_id = root.id
    code, out, _ = eg(capsys, "tree", root_id, "--graph", str(path))
    assert code == 0
    first, child = out.splitlines()
    assert child.index("Status:") < first.index("Status:")  # padded to its own width
    assert child.startswith("  └── ") and "image-1)  " in child
