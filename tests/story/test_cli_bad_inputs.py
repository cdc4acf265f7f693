"""Bad inputs and broken environments: one clear line each, nothing stored changed.

Each case runs the real command (in this process, or as a child process where
a pipe, a mount or exit codes matter) and checks the graph file's bytes, the
page folder and the files beside the graph afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storylab.cli import main
from storylab.entities import EntityGraph

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _child(*argv: str, cwd=None, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "storylab.cli", *argv]
    return subprocess.run(
        cmd, env=_env(), cwd=cwd, capture_output=True, text=True, timeout=120, **kw
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _one_line(err: str, prefix: str) -> str:
    assert "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith(prefix), line
    return line


@pytest.fixture
def stored(tmp_path, capsys):
    """A graph with one finished story of three pictures, and its page."""
    graph = tmp_path / "graph.sqlite"
    argv = ["--graph", str(graph), "--out", str(tmp_path / "out"), "--time-scale", "0.001"]
    assert main(["run", "an owl", "--images", "3", "--no-tree", *argv]) == 0
    capsys.readouterr()
    return graph


def test_dev_null_as_the_graph_is_refused_and_nothing_is_created_beside_it(tmp_path):
    journal = Path("/dev/null-journal")
    existed = journal.exists()
    for argv in (
        ["run", "--graph", "/dev/null", "--out", str(tmp_path / "out")],
        ["eg", "--graph", "/dev/null", "list"],
    ):
        done = _child(*argv)
        assert done.returncode == 2
        line = _one_line(done.stderr, f"storylab {argv[0]}")
        assert "--graph" in line and "'/dev/null'" in line and "not a device" in line
    assert journal.exists() == existed
    assert not (tmp_path / "out").exists()


def test_a_typo_in_the_graph_folder_is_refused_instead_of_creating_folders(tmp_path, capsys):
    wrong = tmp_path / "stroe" / "graphs" / "graph.sqlite"
    code = main(["run", "--graph", str(wrong), "--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert code == 2
    line = _one_line(err, "storylab run: error: argument --graph: the folder ")
    assert f"mkdir -p {wrong.parent}" in line
    assert _files(tmp_path) == set()
    # The default location (no --graph) is still made on first use.
    done = _child("run", "--images", "1", "--no-tree", "--time-scale", "0.001", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".storylab" / "graph.sqlite").is_file()


def test_a_limit_beyond_any_integer_is_one_line(stored, capsys):
    before = _digest(stored)
    code = main(["eg", "--graph", str(stored), "list", "--limit", "99999999999999999999"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    line = _one_line(err, "storylab eg list: error: argument --limit: ")
    assert "from 1 to 1000000" in line and "99999999999999999999" in line
    assert _digest(stored) == before


def test_a_node_whose_data_is_not_json_is_named_by_run_and_eg(stored, tmp_path):
    with sqlite3.connect(stored) as conn:
        (bad_id,) = conn.execute("SELECT id FROM nodes WHERE name = 'image-{{IMAGE_2}}'").fetchone()
        conn.execute("UPDATE nodes SET data = '{not json' WHERE id = ?", (bad_id,))
    conn.close()
    before = _digest(stored)
    graph = ["--graph", str(stored)]
    for argv in (
        ["run", "an owl", "--images", "3", *graph, "--out", str(tmp_path / "out2")],
        ["eg", *graph, "tree", "an owl"],
        ["eg", *graph, "node", bad_id[:20]],
    ):
        done = _child(*argv)
        assert done.returncode == 1, done.stderr
        line = _one_line(done.stderr, f"storylab {argv[0]}: error: ")
        assert str(stored) in line and bad_id in line and "is not JSON" in line
    assert _digest(stored) == before


def _corrupt_middle_page(path: Path) -> None:
    """Overwrite one whole b-tree page in the middle of the file (an index's
    root, so only an integrity check reads it)."""
    with sqlite3.connect(path) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_leases_1'"
        ).fetchone()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    assert 1 < root < pages  # in the middle of the file
    with open(path, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xde\xad\xbe\xef" * (size // 4))


def test_a_corrupted_page_in_the_middle_is_refused_by_run_and_found_by_eg_check(stored, tmp_path):
    _corrupt_middle_page(stored)
    before = _digest(stored)
    done = _child("run", "an owl", "--images", "3", "--graph", str(stored),
                  "--out", str(tmp_path / "out2"))  # fmt: skip
    assert done.returncode == 1
    line = _one_line(done.stderr, "storylab run: error: the entity graph ")
    assert "is damaged" in line and "nothing was written" in line and "eg check" in line
    assert not (tmp_path / "out2").exists()
    check = _child("eg", "--graph", str(stored), "check")
    assert check.returncode == 1 and check.stdout.strip()
    _one_line(check.stderr, "storylab eg: error: the entity graph ")
    assert _digest(stored) == before


def test_eg_check_passes_a_sound_graph(stored):
    done = _child("eg", "--graph", str(stored), "check")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith(f"ok: {stored} (")


def test_an_impossible_status_is_refused(stored, tmp_path):
    with sqlite3.connect(stored) as conn:
        conn.execute("PRAGMA ignore_check_constraints = 1")
        conn.execute("UPDATE nodes SET status = 'Weird' WHERE name = 'story-writer'")
    conn.close()
    before = _digest(stored)
    for argv, prefix in (
        (["eg", "--graph", str(stored), "tree", "an owl"], "storylab eg: error: "),
        (["eg", "--graph", str(stored), "check"], "storylab eg: error: "),
        (["run", "an owl", "--images", "3", "--graph", str(stored),
          "--out", str(tmp_path / "o")], "storylab run: error: "),
    ):  # fmt: skip
        done = _child(*argv)
        assert done.returncode == 1
        if argv[-1] != "check":
            assert "impossible status 'Weird'" in _one_line(done.stderr, prefix) or (
                "CHECK constraint failed" in _one_line(done.stderr, prefix)
            )
    assert _digest(stored) == before


def _closed_early(tmp_path: Path, i: int, lines: int, time_scale: str) -> tuple[str, str]:
    script = (
        f"{sys.executable} -m storylab.cli run 'topic {i}' --images 10 --time-scale "
        f"{time_scale} --graph {tmp_path}/g.sqlite --out {tmp_path}/out 2>{tmp_path}/err{i} "
        f"| head -{lines} >/dev/null; echo ${{PIPESTATUS[0]}}"
    )
    done = subprocess.run(
        ["bash", "-c", script], env=_env(), capture_output=True, text=True, timeout=120
    )
    return done.stdout.strip(), (tmp_path / f"err{i}").read_text()


def test_output_closed_early_is_exit_141_without_a_traceback_every_time(tmp_path):
    # The reader leaves at line 1 to 10, while ten pictures of 0.1 s each are
    # still being drawn: the next line written finds the pipe closed.
    for i in range(10):
        code, err = _closed_early(tmp_path, i, 1 + i, "0.01")
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert code == "141", (i, err)


def test_output_closed_at_the_end_has_no_traceback_either(tmp_path):
    # Leaving in the tree at the end: the last lines may all fit in the pipe
    # before the reader leaves (exit 0) or not (141); never a traceback.
    for i in range(6):
        code, err = _closed_early(tmp_path, i, 30 + 4 * i, "0.001")
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert code in ("0", "141") and err == "", (code, err)


def _full_disk(tmp_path: Path, size: str, *argv: str) -> subprocess.CompletedProcess:
    """Run storylab with ``{mnt}`` a fresh tmpfs of ``size`` (needs root and unshare)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a small filesystem needs root and unshare(1)")
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    script = 'm="$1"; s="$2"; shift 2; mount -t tmpfs -o size="$s" full "$m" || exit 97; exec "$@"'
    cmd = [sys.executable, "-m", "storylab.cli", *(a.replace("{mnt}", str(mnt)) for a in argv)]
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(mnt), size, *cmd],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode == 97:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return done


@pytest.mark.parametrize("size", ["60k", "200k"])
def test_a_full_disk_for_the_graph_is_one_line(tmp_path, size):
    done = _full_disk(
        tmp_path, size, "run", "an owl", "--images", "5", "--graph", "{mnt}/g.sqlite",
        "--out", str(tmp_path / "out"), "--no-tree", "--time-scale", "0.001",
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "no running event loop" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert "disk is full" in line
    assert not (tmp_path / "out").exists()


def test_a_full_disk_for_the_page_only_blames_the_page(tmp_path):
    done = _full_disk(
        tmp_path, "64k", "run", "an owl", "--images", "3", "--graph",
        str(tmp_path / "g.sqlite"), "--out", "{mnt}/out", "--no-tree", "--time-scale", "0.001",
    )  # fmt: skip
    # A page needs more than 64 KiB: the pictures are in it.
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "no running event loop" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert "could not write the page" in line and "No space left on device" in line
    assert "[Errno" not in line and "commit" not in line
    with EntityGraph.open(tmp_path / "g.sqlite", read_only=True) as graph:
        (root,) = graph.roots()
        assert root.status == "Completed"  # the story is stored; only its page is missing


def test_non_latin_topics_get_readable_page_names(tmp_path, capsys):
    argv = ["--graph", str(tmp_path / "g.sqlite"), "--out", str(tmp_path / "out")]
    code = main(["run", "猫の冒険", "Дракон и луна", "--images", "1", "--no-tree",
                 "--time-scale", "0.001", *argv])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "out").glob("*.html"))
    assert names[0].startswith("story-pipeline-дракон-и-луна-")
    assert names[1].startswith("story-pipeline-猫の冒険-")
    with EntityGraph.open(tmp_path / "g.sqlite", read_only=True) as graph:
        stored = sorted(r.name for r in graph.roots())
    assert stored[0].startswith("story-pipeline---")  # the stored names are unchanged


@pytest.mark.timeout(120)
def test_429_answers_until_pictures_give_up_end_with_a_hint(tmp_path):
    server = subprocess.Popen(
        [sys.executable, "-m", "storylab.cli", "serve-images", "--port", "0",
         "--max-concurrent", "1", "--time-scale", "1"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split(" on ", 1)[1].split(" ", 1)[0]
        done = _child(
            "run", "an owl", "--images", "3", "--backend", "http", "--images-url", url,
            "--image-timeout", "1", "--graph", str(tmp_path / "g.sqlite"),
            "--out", str(tmp_path / "out"), "--no-tree", "--time-scale", "0.001",
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (hint,) = [ln for ln in done.stderr.splitlines() if ln.startswith("hint:")]
    assert "429" in hint and "--global-limit (now 10)" in hint
