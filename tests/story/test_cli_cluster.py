"""``storylab run --cluster``: the command on a real LocalCluster, and its refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from storylab.story.settings import StorySettings

ROOT = Path(__file__).resolve().parents[2]


def storylab(*argv: str, timeout: float = 240, env=None) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "-m", "storylab.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(300)
def test_run_on_a_local_cluster_writes_every_page_and_names_the_workers(tmp_path):
    pytest.importorskip("distributed")
    graph, out = tmp_path / "graph.sqlite", tmp_path / "out"
    topics = ["a fox who finds a friend", "an owl who counts the stars", "a crab who sings"]
    proc = storylab(
        "run", *topics, "--images", "3", "--cluster", "local:2", "--graph", str(graph),
        "--out", str(out), "--time-scale", "0.01", "--global-limit", "4", "--lease-timeout", "3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cluster: tcp://127.0.0.1:" in proc.stdout and "(2 workers)" in proc.stdout
    done = [line for line in proc.stdout.splitlines() if "completed: 3 pictures" in line]
    assert len(done) == 3 and all("(worker pid " in line for line in done)
    pages = sorted(out.glob("*.html"))
    assert len(pages) == 3
    assert all(p.read_text(encoding="utf-8").count("<img ") == 3 for p in pages)
    assert len(re.findall(r"── picture \d", proc.stdout)) >= 9  # the trees, one per story

    # Again: every story is found finished in the graph, nothing is drawn again.
    again = storylab(
        "run", *topics, "--images", "3", "--cluster", "local:1", "--graph", str(graph),
        "--out", str(out), "--no-tree",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("completed: 3 pictures") == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cluster", "local:0"], "argument --cluster: must be local:N"),
        (["--cluster", "http://h:1"], "argument --cluster: must be local:N"),
        (["--cluster", "local:2", "--lease-timeout", "0"], "argument --lease-timeout: must be"),
    ],
)
def test_a_bad_cluster_option_is_refused_in_one_line_and_stores_nothing(tmp_path, argv, message):
    graph = tmp_path / "graph.sqlite"
    proc = storylab("run", "a fox", "--graph", str(graph), *argv, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not graph.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--attempt-timeout", "5", "--lease-timeout", "6"],
            "--lease-timeout (6 s) must be at least twice --attempt-timeout (5 s)",
        ),
        # Not given: the HTTP backend's default deadline (180 s) sets the
        # default lease timeout, but one given too short is refused.
        (["--lease-timeout", "10"], "--lease-timeout (10 s) must be at least twice"),
        (["--lease-timeout", "0.5"], "--lease-timeout must be at least 1 s"),
    ],
)
def test_a_lease_timeout_shorter_than_a_request_can_run_is_refused_at_start(
    tmp_path, argv, message
):
    pytest.importorskip("distributed")
    graph = tmp_path / "graph.sqlite"
    proc = storylab(
        "run", "a fox", "--graph", str(graph), "--cluster", "local:2",
        "--backend", "http", "--images-url", "http://127.0.0.1:9", *argv, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "cluster:" not in proc.stdout  # refused before a cluster was started
    assert not graph.exists()


def test_the_default_lease_timeout_outlasts_the_attempt_deadline():
    from storylab.story.backends.http_images import HttpImageBackend
    from storylab.story.cluster import cluster_lease_timeout

    http = StorySettings(images=HttpImageBackend("http://127.0.0.1:9", attempt_timeout=30))
    assert cluster_lease_timeout(None, http) == 60.0
    assert cluster_lease_timeout(None, StorySettings()) == 10.0
    assert cluster_lease_timeout(4, StorySettings()) == 4.0


@pytest.mark.timeout(120)
def test_a_scheduler_that_cannot_be_reached_is_one_line_and_leaves_the_graph_alone(tmp_path):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    graph = tmp_path / "graph.sqlite"
    env = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    proc = storylab(
        "run", "a fox", "--graph", str(graph), "--cluster", f"tcp://127.0.0.1:{port}", env=env
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"--cluster tcp://127.0.0.1:{port}: cannot reach the scheduler" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not graph.exists()


@pytest.mark.timeout(300)
def test_run_on_a_running_scheduler_given_by_its_tcp_address(tmp_path):
    """A scheduler and two workers started as `dask scheduler` / `dask worker` would be."""
    pytest.importorskip("distributed")
    import json
    import signal
    import time

    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    info = tmp_path / "scheduler.json"
    cli = [sys.executable, "-m"]
    # SIGINT at its default action (a suite started in the background by a shell
    # without job control would pass "ignored" on), so the stop below is heard.
    quiet = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "env": env,
        "preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    }
    scheduler = subprocess.Popen(
        [*cli, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(info)], **quiet,
    )  # fmt: skip
    workers = None
    try:
        # Until the scheduler has written its whole file (a half-written
        # one does not parse yet).
        address, deadline = None, time.monotonic() + 60
        while address is None:
            try:
                address = json.loads(info.read_text())["address"]
            except (OSError, ValueError, KeyError):
                assert time.monotonic() < deadline, "the scheduler never wrote its address"
                time.sleep(0.1)
        workers = subprocess.Popen(
            [*cli, "distributed.cli.dask_worker", address, "--nworkers", "2", "--nthreads", "4",
             "--host", "127.0.0.1", "--no-dashboard"], **quiet,
        )  # fmt: skip
        graph, out = tmp_path / "graph.sqlite", tmp_path / "out"
        proc = storylab(
            "run", "a fox who finds a friend", "an owl who counts the stars", "--images", "3",
            "--cluster", address, "--graph", str(graph), "--out", str(out),
            "--time-scale", "0.01", "--no-tree",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"cluster: {address} (" in proc.stdout
        assert proc.stdout.count("completed: 3 pictures") == 2
        assert len(list(out.glob("*.html"))) == 2
    finally:
        for p in (workers, scheduler):
            if p is not None:
                p.send_signal(signal.SIGINT)
        for p in (workers, scheduler):
            if p is not None:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def stored_seeds(graph: Path) -> dict[str, object]:
    """Each story's topic and the seed kept with it."""
    from storylab.entities import EntityGraph

    with EntityGraph.open(graph, create=False, read_only=True) as g:
        return {r.data["topic"]: (r.data or {}).get("seed") for r in g.roots()}


@pytest.mark.timeout(300)
def test_a_story_keeps_its_seed_on_a_cluster_and_another_seed_is_refused(tmp_path):
    pytest.importorskip("distributed")
    graph, out = tmp_path / "graph.sqlite", tmp_path / "out"
    made = storylab(
        "run", "a fox who finds a friend", "--images", "2", "--graph", str(graph),
        "--out", str(out), "--time-scale", "0.001", "--seed", "7", "--no-tree",
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    before = graph.read_bytes()

    # Another seed for that story on a cluster: refused in one line, before a
    # cluster is started, with the way to get it; nothing stored changes.
    other = storylab(
        "run", "a fox who finds a friend", "--images", "2", "--graph", str(graph),
        "--out", str(out), "--cluster", "local:1", "--seed", "8", timeout=120,
    )  # fmt: skip
    assert other.returncode == 2, other.stdout + other.stderr
    assert "--seed 8: the story 'a fox who finds a friend'" in other.stderr
    assert "made with --seed 7" in other.stderr and "stories redo" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    assert "cluster:" not in other.stdout
    assert graph.read_bytes() == before

    # A new story begun on a cluster keeps the seed it was given: a later
    # local run with another seed is refused too.
    new = storylab(
        "run", "an owl who counts the stars", "--images", "2", "--graph", str(graph),
        "--out", str(out), "--cluster", "local:1", "--seed", "5", "--time-scale", "0.001",
        "--no-tree",
    )  # fmt: skip
    assert new.returncode == 0, new.stdout + new.stderr
    assert stored_seeds(graph) == {"a fox who finds a friend": 7, "an owl who counts the stars": 5}
    again = storylab(
        "run", "an owl who counts the stars", "--images", "2", "--graph", str(graph),
        "--out", str(out), "--seed", "6", "--no-tree", timeout=120,
    )  # fmt: skip
    assert again.returncode == 2 and "made with --seed 5" in again.stderr, again.stderr
