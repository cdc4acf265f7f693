"""``storylab run --graph postgresql://... --cluster local:3``: stories drawn by
Dask worker processes that share nothing but the server (no graph file, no
blob folder), and ``storylab eg`` reading the result."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from .conftest import ROOT_ENV


def storylab(*argv: str, env: dict, cwd, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storylab.cli", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_storylab_run_on_a_local_cluster_with_a_server_graph(pg_target, tmp_path):
    pytest.importorskip("distributed")
    # The password travels as libpq's $PGPASSWORD, as on a real cluster's hosts:
    # the URL on the command line has none.
    parts = urlsplit(pg_target.url)
    password = parts.password or ""
    user, host = parts.username, parts.netloc.rpartition("@")[2]
    url = urlunsplit(parts._replace(netloc=f"{user}@{host}"))
    env = dict(ROOT_ENV, PGPASSWORD=password, STORYLAB_HOME=str(tmp_path / "home"))
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    topics = ["a fox who finds a friend", "an owl who counts the stars", "a crab who sings"]
    proc = storylab(
        "run", *topics, "--images", "3", "--cluster", "local:3", "--graph", url,
        "--out", str(out), "--time-scale", "0.01", "--global-limit", "4", "--lease-timeout", "3",
        "--no-tree", env=env, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"graph: {url}\n" in proc.stdout  # the URL the workers opened, no password
    done = [line for line in proc.stdout.splitlines() if "completed: 3 pictures" in line]
    assert len(done) == 3, proc.stdout
    pages = sorted(out.glob("*.html"))
    assert len(pages) == 3 and all(p.read_text().count("<img ") == 3 for p in pages)
    # Nothing was written beside the processes: no graph file, no blob folder.
    assert list(work.iterdir()) == [] and not (tmp_path / "home").exists()
    if password:
        assert password not in proc.stdout + proc.stderr
    # Each picture drawn once, and stored on the server.
    images = pg_target.rows(
        "SELECT count(*), count(DISTINCT parent_id) FROM nodes WHERE type = 'ImageGenerationEntity'"
    )
    assert images == [(9, 3)]
    assert pg_target.rows("SELECT count(*) FROM blobs")[0][0] >= 9
    listing = storylab("eg", "--graph", url, "list", env=env, cwd=work, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.lower().count("completed") >= 3  # eg list says a story's state
    again = storylab(
        "run", *topics, "--images", "3", "--cluster", "local:1", "--graph", url,
        "--out", str(out), "--no-tree", env=env, cwd=work,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("completed: 3 pictures") == 3
    runs = pg_target.rows(
        "SELECT count(*) FROM progress p JOIN nodes n ON n.id = p.node_id "
        "WHERE n.type = 'ImageGenerationEntity' AND p.status = 'STARTED'"
    )
    assert runs == [(9,)], json.dumps(runs)  # nothing drawn again


@pytest.mark.timeout(120)
def test_storylab_run_in_one_process_on_a_server_graph(pg_target, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    env = dict(ROOT_ENV, STORYLAB_HOME=str(tmp_path / "home"))
    proc = storylab(
        "run", "a fox who finds a friend", "--images", "2", "--graph", pg_target.url,
        "--out", str(out), "--time-scale", "0.01", "--no-tree", env=env, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed: 2 pictures" in proc.stdout
    (page,) = out.glob("*.html")
    assert page.read_text().count("<img ") == 2
    assert list(work.iterdir()) == [] and not (tmp_path / "home").exists()
    password = urlsplit(pg_target.url).password
    if password:
        assert password not in proc.stdout + proc.stderr
