"""A graph is its file and its blob folder: copying, exporting, forgetting and redoing stories."""

from __future__ import annotations

import hashlib
import shutil
import stat
from pathlib import Path

import pytest

from storylab.cli import main
from storylab.entities import EntityGraph

PNG = b"\x89PNG\r\n\x1a\n"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _digest(p) for p in folder.rglob("*") if p.is_file()}


def _run(graph: Path, out: Path, *argv: str) -> int:
    return main(["run", "--graph", str(graph), "--out", str(out), "--time-scale", "0.001",
                 "--no-tree", *argv])  # fmt: skip


@pytest.fixture
def owl(tmp_path, capsys):
    graph = tmp_path / "graph.sqlite"
    assert _run(graph, tmp_path / "out", "an owl", "--images", "3") == 0
    assert _run(graph, tmp_path / "out", "a shy dragon", "--images", "2") == 0
    capsys.readouterr()
    return graph


def _pictures(graph: Path, topic: str) -> list:
    with EntityGraph.open(graph, read_only=True) as g:
        root = next(r for r in g.roots() if r.data["topic"] == topic)
        return [c for c in g.children(root.id) if c.type == "ImageGenerationEntity"]


def test_a_graph_copied_without_its_blobs_draws_the_missing_pictures_again(owl, tmp_path, capsys):
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(owl, alone / "graph.sqlite")  # the file only, as a user would
    before = _digest(owl), _tree_digest(owl.with_suffix(".blobs"))
    assert _run(alone / "graph.sqlite", alone / "out", "an owl", "--images", "3") == 0
    out = capsys.readouterr().out
    for n in (1, 2, 3):
        assert f"picture {n} started" in out and f"picture {n} done" in out
    (page,) = (alone / "out").glob("*.html")
    assert page.read_text().count("<img ") == 3
    assert all(p.status == "Completed" for p in _pictures(alone / "graph.sqlite", "an owl"))
    # Run again: nothing is drawn now, and the original graph was never touched.
    assert _run(alone / "graph.sqlite", alone / "out", "an owl", "--images", "3") == 0
    assert " started" not in capsys.readouterr().out
    assert (_digest(owl), _tree_digest(owl.with_suffix(".blobs"))) == before


def test_eg_export_copies_the_graph_with_its_blobs(owl, tmp_path, capsys):
    before = _digest(owl), _tree_digest(owl.with_suffix(".blobs"))
    copy = tmp_path / "moved" / "story.sqlite"
    copy.parent.mkdir()
    assert main(["eg", "--graph", str(owl), "export", str(copy)]) == 0
    assert capsys.readouterr().out.startswith(f"copied {owl} to {copy} with its blobs in ")
    assert _tree_digest(copy.with_suffix(".blobs")) == before[1]
    with EntityGraph.open(copy, read_only=True) as g:
        assert sorted(r.data["topic"] for r in g.roots()) == ["a shy dragon", "an owl"]
    # The copy is whole: running a story there draws nothing again.
    assert _run(copy, tmp_path / "out2", "an owl", "--images", "3") == 0
    assert " started" not in capsys.readouterr().out
    # Exporting onto something that exists is refused and changes nothing.
    assert main(["eg", "--graph", str(owl), "export", str(copy)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (_digest(owl), _tree_digest(owl.with_suffix(".blobs"))) == before


def test_eg_export_pictures_writes_plain_png_files(owl, tmp_path, capsys):
    before = _digest(owl)
    dest = tmp_path / "pictures"
    assert main(["eg", "--graph", str(owl), "export-pictures", str(dest), "an owl"]) == 0
    assert capsys.readouterr().out == f"copied 4 file(s) to {dest}\n"
    (folder,) = dest.iterdir()
    assert folder.name.startswith("story-pipeline-an-owl-")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["page.html", "picture-1.png", "picture-2.png", "picture-3.png"]
    for name in names[1:]:
        assert (folder / name).read_bytes().startswith(PNG)
    assert main(["eg", "--graph", str(owl), "export-pictures", str(tmp_path / "all")]) == 0
    assert len(list((tmp_path / "all").iterdir())) == 2
    assert _digest(owl) == before


def test_stories_delete_forgets_one_story_and_keeps_the_other(owl, tmp_path, capsys):
    owl_keys = {p.output["object_key"] for p in _pictures(owl, "an owl")}
    dragon_keys = {p.output["object_key"] for p in _pictures(owl, "a shy dragon")}
    blobs = owl.with_suffix(".blobs")
    pages = sorted((tmp_path / "out").glob("*.html"))
    assert main(["stories", "delete", "an owl", "--graph", str(owl),
                 "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert said.startswith("deleted story “an owl” (story-pipeline-an-owl-")
    assert ": 6 entities, 4 stored file(s); " in said
    with EntityGraph.open(owl, read_only=True) as g:
        assert [r.data["topic"] for r in g.roots()] == ["a shy dragon"]
    for key in owl_keys - dragon_keys:
        assert not (blobs / key[:2] / key).exists()
    for key in dragon_keys:
        assert (blobs / key[:2] / key).exists()
    assert [p.exists() for p in pages] == [not p.name.startswith("story-pipeline-an-owl")
                                           for p in pages]  # fmt: skip
    assert main(["eg", "--graph", str(owl), "tree", "a shy dragon"]) == 0
    # Deleting it again, or something that is no story, is one line and changes nothing.
    capsys.readouterr()
    before = _digest(owl)
    assert main(["stories", "delete", "an owl", "--graph", str(owl)]) == 1
    assert "no entity with id, name or topic 'an owl'" in capsys.readouterr().err
    (writer,) = [p.id for p in _children(owl, "a shy dragon") if p.name == "story-writer"]
    assert main(["stories", "delete", writer, "--graph", str(owl)]) == 1
    err = capsys.readouterr().err
    assert "is story writer, not a story" in err and len(err.splitlines()) == 1
    assert _digest(owl) == before


def _children(graph: Path, topic: str) -> list:
    with EntityGraph.open(graph, read_only=True) as g:
        root = next(r for r in g.roots() if r.data["topic"] == topic)
        return g.children(root.id)


def test_stories_redo_makes_the_story_again_from_the_start(owl, tmp_path, capsys):
    (old,) = [r for r in _roots(owl) if r.data["topic"] == "an owl"]
    old_pictures = {p.output["object_key"] for p in _pictures(owl, "an owl")}
    code = main(["stories", "redo", "an owl", "--graph", str(owl), "--out", str(tmp_path / "out"),
                 "--seed", "7", "--time-scale", "0.001", "--no-tree"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "deleted story “an owl”" in out and "picture 3 started" in out
    (new,) = [r for r in _roots(owl) if r.data["topic"] == "an owl"]
    assert new.id != old.id and new.name == old.name  # same request, a new story
    assert new.data["customization"] == old.data["customization"] == {"illustration_count": 3}
    assert {p.output["object_key"] for p in _pictures(owl, "an owl")} != old_pictures


def _roots(graph: Path) -> list:
    with EntityGraph.open(graph, read_only=True) as g:
        return g.roots()


def test_run_open_hands_the_page_to_the_browser(tmp_path, capsys, monkeypatch):
    record = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {record}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER", str(browser))
    monkeypatch.delenv("DISPLAY", raising=False)
    assert _run(tmp_path / "g.sqlite", tmp_path / "out", "an owl", "--images", "1",
                "--open") == 0  # fmt: skip
    (page,) = (tmp_path / "out").glob("*.html")
    # webbrowser waits for a $BROWSER command without "&" to end.
    assert record.read_text().split() == [page.resolve().as_uri()]


def test_the_readme_says_a_graph_is_a_file_and_a_folder():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "storylab eg export" in readme and "graph.blobs/" in readme
