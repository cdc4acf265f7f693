"""The command line on a graph kept by a PostgreSQL server (``--graph postgresql://...``).

``run``, ``eg list|tree|node|export-pictures`` and ``stories delete|redo`` work
as on a SQLite file; ``eg check`` and ``eg export``, which read and copy a
SQLite file, refuse in one line that says what to use instead. Needs
``$STORYLAB_TEST_PG`` (see the fixture ``pg_graph_url``).
"""

from __future__ import annotations

import json
import re

import pytest

from storylab.cli import main
from storylab.entities import EntityGraph


def _run(url: str, tmp_path, *argv: str) -> int:
    base = ["--graph", url, "--out", str(tmp_path / "out"), "--time-scale", "0.001", "--no-tree"]
    return main(["run", *base, *argv])


def _eg(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    code = main(["eg", "--graph", url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _blob_rows(url: str) -> set[str]:
    """The keys in the graph's blob table, read on a connection of its own."""
    import psycopg

    base, _, schema = url.rpartition("schema=")
    with psycopg.connect(base.rstrip("?&"), autocommit=True) as conn:
        rows = conn.execute(f'SELECT key FROM "{schema}".blobs').fetchall()
    return {key for (key,) in rows}


def _keys(url: str, topic: str) -> set[str]:
    """The blob keys the nodes of the story on ``topic`` name."""
    keys = set()
    with EntityGraph.open(url, read_only=True) as g:
        (root,) = [r for r in g.roots() if r.data["topic"] == topic]
        for node in [root, *g.descendants(root.id)]:
            for value in (node.output, node.data):
                if isinstance(value, dict):
                    keys |= {value[f] for f in ("object_key", "html_key") if f in value}
    return keys


def _nodes(url: str) -> list:
    with EntityGraph.open(url, read_only=True) as g:
        return [
            (n.id, n.name, n.status, n.data, n.output)
            for r in g.roots()
            for n in [r, *g.descendants(r.id)]
        ]


@pytest.fixture
def owl_and_fox(pg_graph_url, tmp_path, capsys):
    assert _run(pg_graph_url, tmp_path, "an owl", "--images", "3", "--fail", "IMAGE_2") == 1
    assert _run(pg_graph_url, tmp_path, "a fox", "--images", "1", "--seed", "4") == 0
    capsys.readouterr()
    with EntityGraph.open(pg_graph_url, read_only=True) as g:
        roots = {r.data["topic"]: r for r in g.roots()}
    return pg_graph_url, roots


def test_eg_list_tree_and_node_read_a_postgresql_graph(owl_and_fox, capsys):
    url, roots = owl_and_fox
    before = _nodes(url)
    code, listed, err = _eg(capsys, url, "list")
    assert code == 0 and err == ""
    owl = next(ln for ln in listed.splitlines() if "“an owl”" in ln)
    assert "completed with errors" in owl and "pictures: 2 done, 1 failed, 0 reused" in owl
    fox = next(ln for ln in listed.splitlines() if "“a fox”" in ln)
    assert "  completed  " in fox and "pictures: 1 done, 0 failed, 0 reused" in fox

    trees = set()
    for ref in (roots["an owl"].name, "an owl", roots["an owl"].id[:20]):
        code, tree, err = _eg(capsys, url, "tree", ref)
        assert code == 0 and err == "", (ref, err)
        trees.add(tree)
    (tree,) = trees
    lines = tree.splitlines()
    assert [re.sub(r"\s+\S+\s+Status:.*", "", ln) for ln in lines[1:]] == [
        "  ├── safety check", "  ├── story writer",
        "  ├── picture 1", "  ├── picture 2", "  └── picture 3",
    ]  # fmt: skip
    shorts = re.findall(r"\b[0-9a-f]{8}-[0-9a-f-]*\b", tree)
    assert len(shorts) == 6 and len({len(s) for s in shorts}) == 1  # one length
    code, node, err = _eg(capsys, url, "node", "io", shorts[4])  # picture 2, by its short id
    assert code == 0 and err == ""
    assert json.loads(node)["input"]["placeholder"] == "{{IMAGE_2}}"
    code, out, err = _eg(capsys, url, "tree", "a unicorn")
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert "no entity with id, name or topic 'a unicorn'" in err
    assert _nodes(url) == before  # eg only reads


def test_eg_export_pictures_copies_them_out_of_the_server(owl_and_fox, tmp_path, capsys):
    url, roots = owl_and_fox
    code, out, err = _eg(capsys, url, "export-pictures", str(tmp_path / "pics"), "a fox")
    assert code == 0 and err == ""
    folder = tmp_path / "pics" / roots["a fox"].name
    assert sorted(p.name for p in folder.iterdir()) == ["page.html", "picture-1.png"]
    assert (folder / "picture-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img " in (folder / "page.html").read_text(encoding="utf-8")


def test_eg_check_and_export_refuse_a_postgresql_graph_in_one_line(owl_and_fox, tmp_path, capsys):
    url, _ = owl_and_fox
    before = _nodes(url)
    code, out, err = _eg(capsys, url, "check")
    assert code == 1 and out == ""  # no "ok": nothing was read page by page
    (line,) = err.splitlines()
    assert line.startswith("storylab eg: error: eg check reads a SQLite graph file")
    assert "is a PostgreSQL graph" in line and "pg_amcheck" in line
    code, out, err = _eg(capsys, url, "export", str(tmp_path / "copy.sqlite"))
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    schema = url.rsplit("schema=", 1)[1]
    assert "is a PostgreSQL graph" in line and f"pg_dump --schema={schema}" in line
    assert not any(tmp_path.glob("copy*"))  # nothing written
    assert _nodes(url) == before
    for text in (line, err):
        assert "Traceback" not in text and "password" not in text.lower()


def test_stories_delete_and_redo_on_a_postgresql_graph(owl_and_fox, tmp_path, capsys):
    url, roots = owl_and_fox
    owl_keys, fox_keys = _keys(url, "an owl"), _keys(url, "a fox")
    assert len(owl_keys) == 3 and len(fox_keys) == 2  # pictures and a page each
    assert _blob_rows(url) == owl_keys | fox_keys
    argv = ["--graph", url, "--out", str(tmp_path / "out")]
    assert main(["stories", "delete", "an owl", *argv]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deleted story “an owl”") and ": 6 entities, 3 stored blob row(s)" in out
    with EntityGraph.open(url, read_only=True) as g:
        assert [r.data["topic"] for r in g.roots()] == ["a fox"]
        assert not any(g.blobs.exists(key) for key in owl_keys)
    assert _blob_rows(url) == fox_keys  # the owl's rows are gone, the fox's kept

    # redo: the same request from the start, with the seed it was made with.
    fox = roots["a fox"]
    assert main(["stories", "redo", "a fox", *argv, "--time-scale", "0.001", "--no-tree"]) == 0
    out = capsys.readouterr().out
    assert "deleted story “a fox”" in out and ": 4 entities, 2 stored blob row(s)" in out
    assert "completed: 1 picture" in out
    with EntityGraph.open(url, read_only=True) as g:
        (new,) = g.roots()
        (picture,) = [c for c in g.children(new.id) if c.name.startswith("image-")]
        drawn = g.blobs.get(picture.output["object_key"])
    assert new.id != fox.id and new.name == fox.name and new.data["seed"] == 4
    assert drawn[:8] == b"\x89PNG\r\n\x1a\n"  # drawn again, stored again
    assert _blob_rows(url) == _keys(url, "a fox")
    # A different seed for the story that now exists is refused, as on a file.
    assert _run(url, tmp_path, "a fox", "--images", "1", "--seed", "5") == 2
    assert "made with --seed 4" in capsys.readouterr().err
    assert picture.status == "Completed"
    code, _, err = _eg(capsys, url, "tree", "an owl")
    assert code == 1 and "no entity with id, name or topic 'an owl'" in err
