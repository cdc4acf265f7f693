"""A story's page is part of its result: never Completed without it, written
to ``out/`` whole or not at all. (The full-disk case, with a real small
tmpfs, is in test_cli_processes.py.)"""

from __future__ import annotations

import json
import sqlite3

from storylab.cli import main
from storylab.entities import EntityGraph


def _run(tmp_path, *argv: str) -> int:
    base = ["--graph", str(tmp_path / "graph.sqlite"), "--out", str(tmp_path / "out")]
    return main(["run", "an owl", "--images", "2", *base, "--time-scale", "0.001", *argv])


def _story(tmp_path):
    with EntityGraph.open(tmp_path / "graph.sqlite", create=False) as g:
        (root,) = g.roots()
        return root, {k.name: k for k in g.children(root.id)}


def test_a_story_stored_completed_without_its_page_is_finished_by_the_next_run(tmp_path, capsys):
    assert _run(tmp_path) == 0
    root, before = _story(tmp_path)
    # As an older storylab left a story whose page could not be written.
    conn = sqlite3.connect(tmp_path / "graph.sqlite", isolation_level=None)
    output = dict(root.output, html_key=None)
    conn.execute("UPDATE nodes SET output = ? WHERE id = ?", (json.dumps(output), root.id))
    conn.close()
    for page in (tmp_path / "out").glob("*.html"):
        page.unlink()
    capsys.readouterr()

    assert _run(tmp_path) == 0
    out = capsys.readouterr().out
    assert "already finished" not in out and " started" not in out  # no picture redrawn
    root, after = _story(tmp_path)
    assert root.status == "Completed" and root.output["html_key"]
    for name, kid in before.items():
        assert after[name].finished_at == kid.finished_at, name
    (page,) = (tmp_path / "out").glob("*.html")
    assert page.read_text(encoding="utf-8").count("<img ") == 2


def test_a_page_in_out_is_replaced_whole_not_rewritten_in_place(tmp_path, capsys):
    assert _run(tmp_path) == 0
    (page,) = (tmp_path / "out").glob("*.html")
    first = page.stat().st_ino
    text = page.read_text(encoding="utf-8")
    assert _run(tmp_path) == 0  # the stored story: the page is written again
    assert "already finished" in capsys.readouterr().out
    (again,) = (tmp_path / "out").glob("*.html")
    assert again.stat().st_ino != first  # a new file renamed over the old one
    assert again.read_text(encoding="utf-8") == text
    assert [p.name for p in (tmp_path / "out").iterdir()] == [page.name]  # no temporary left
