"""``storylab run`` in several real processes on one graph, and under faults:
a full disk when the page is stored, a graph file deleted while a run holds it.

Counts come from the graph, not from anyone's printout: every execution of an
image's ``run_impl`` logs one ``STARTED`` (when its node is taken) and one
``Generating image for ...`` status (from ``run_impl`` itself) in that node's
own progress log."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers.cli import IMAGES, storylab_run

from storylab.entities import EntityGraph


def finish(proc, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def own_log(graph: EntityGraph, node_id: str) -> list:
    return [e for e in graph.progress(node_id) if e.entity_id == node_id]


def executions(graph: EntityGraph, node_id: str) -> tuple[int, int]:
    """(times the node was started, times its run_impl began drawing)."""
    log = own_log(graph, node_id)
    started = sum(1 for e in log if e.type == "STATUS" and e.status == "STARTED")
    drawn = sum(
        1
        for e in log
        if e.type == "STATUS" and e.status == "RUNNING" and e.message.startswith("Generating image")
    )
    return started, drawn


def the_story(graph: EntityGraph):
    (root,) = graph.roots()
    kids = {k.name: k for k in graph.children(root.id)}
    images = {n: k for n, k in kids.items() if k.type == "ImageGenerationEntity"}
    return root, kids, images


def page_files(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*.html")) if out.exists() else []


@pytest.mark.timeout(240)
@pytest.mark.parametrize("processes", [2, 4])
@pytest.mark.parametrize("start", ["together", "staggered"])
def test_processes_on_one_story_draw_each_picture_once_and_all_write_the_page(
    tmp_path, processes, start
):
    graph, out = tmp_path / "graph.sqlite", tmp_path / "out"
    procs = []
    for _ in range(processes):
        procs.append(storylab_run(graph, out))
        if start == "staggered":
            time.sleep(0.4)
    results = [finish(p) for p in procs]
    for code, stdout, stderr in results:
        assert code == 0, stdout + stderr
        assert "completed: 4 pictures" in stdout

    with EntityGraph.open(graph, create=False) as g:
        root, kids, images = the_story(g)
        assert root.status == "Completed" and root.output["stage"] == "completed"
        assert root.output["image_count"] == IMAGES and not root.output.get("failed_images")
        assert sorted(images) == [f"image-{{{{IMAGE_{i}}}}}" for i in range(1, IMAGES + 1)]
        assert len(kids) == IMAGES + 2  # safety check, writer, pictures: none twice
        for name, image in images.items():
            assert image.status == "Completed", name
            assert executions(g, image.id) == (1, 1), name
        root_log = own_log(g, root.id)
        assert [e.status for e in root_log].count("STARTED") == 1  # the pipeline ran once
        assert all(g.lease(n.id) is None for n in (root, *kids.values()))
        page = g.blobs.get(root.output["html_key"]).decode("utf-8")
    (written,) = page_files(out)
    assert written.read_text(encoding="utf-8") == page
    assert page.count("<img ") == IMAGES and "{{IMAGE_" not in page
    assert not list(out.glob(".*"))  # no temporary file left behind
    waited = [stdout for _, stdout, _ in results if "which is running it" in stdout]
    finished = [stdout for _, stdout, _ in results if "already finished" in stdout]
    assert len(waited) + len(finished) == processes - 1  # everyone but one ran nothing


# ------------------------------------------------------------------ disk full


@pytest.fixture
def small_disk(tmp_path):
    """A folder on its own tmpfs of a given size (root only); unmounted after."""
    mounted: list[Path] = []

    def mount(folder: Path, size: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (root is needed): {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def blob_sizes(tmp_path: Path) -> tuple[list[int], int]:
    """The same story drawn on a roomy disk: its pictures' and its page's sizes."""
    dry = tmp_path / "dry"
    dry.mkdir()
    code, stdout, stderr = finish(
        storylab_run(dry / "graph.sqlite", dry / "out", time_scale="0.001")
    )
    assert code == 0, stdout + stderr
    with EntityGraph.open(dry / "graph.sqlite", create=False) as g:
        root, _, images = the_story(g)
        pictures = [
            g.blobs.path_for(i.output["object_key"]).stat().st_size for i in images.values()
        ]
        page = g.blobs.path_for(root.output["html_key"]).stat().st_size
    return pictures, page


@pytest.mark.timeout(240)
def test_a_page_that_cannot_be_stored_fails_the_run_and_the_next_run_writes_it(
    tmp_path, small_disk
):
    pictures, page = blob_sizes(tmp_path)
    pages = sum(-(-size // 4096) * 4096 for size in pictures)  # tmpfs counts whole pages
    room = 64 * 1024
    assert page > room  # the pictures fit, the page does not
    graph, out = tmp_path / "graph.sqlite", tmp_path / "out"
    blobs = small_disk(graph.with_suffix(".blobs"), pages + room)

    code, stdout, stderr = finish(storylab_run(graph, out, time_scale="0.001"))
    assert code != 0
    assert "completed" not in stdout
    (line,) = [ln for ln in stderr.splitlines() if ln.strip()]  # one clear line, no traceback
    assert "the story page could not be stored" in line and "No space left on device" in line
    assert "run the story again" in line
    assert page_files(out) == []
    with EntityGraph.open(graph, create=False) as g:
        root, _, images = the_story(g)
        assert root.status == "Failed"  # not Completed without its page
        assert "could not be stored" in root.error["message"]
        assert all(i.status == "Completed" for i in images.values())
        drawn_at = {n: i.finished_at for n, i in images.items()}
    assert not [p for p in blobs.rglob(".*.tmp")]  # the half-written page was removed

    subprocess.run(["mount", "-o", "remount,size=16m", str(blobs)], check=True)
    code, stdout, stderr = finish(storylab_run(graph, out, time_scale="0.001"))
    assert code == 0, stdout + stderr
    assert "completed: 4 pictures" in stdout and " started" not in stdout  # nothing redrawn
    with EntityGraph.open(graph, create=False) as g:
        root, _, images = the_story(g)
        assert root.status == "Completed"
        for name, image in images.items():
            assert image.finished_at == drawn_at[name] and executions(g, image.id) == (1, 1)
        stored = g.blobs.get(root.output["html_key"]).decode("utf-8")
    (written,) = page_files(out)
    assert written.read_text(encoding="utf-8") == stored and stored.count("<img ") == IMAGES


# ------------------------------------------------------- the graph goes away


def wait_until_a_picture_is_done(graph: Path, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, finish(proc)
        if graph.exists():
            with EntityGraph.open(graph, create=False) as g:
                roots = g.roots()
                if roots and any(
                    k.status == "Completed" and k.type == "ImageGenerationEntity"
                    for k in g.children(roots[0].id)
                ):
                    return
        time.sleep(0.05)
    raise AssertionError("no picture was finished in time")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["deleted", "replaced by another file"])
def test_a_graph_file_that_goes_away_during_a_run_fails_it_clearly(tmp_path, how):
    graph, out = tmp_path / "graph.sqlite", tmp_path / "out"
    proc = storylab_run(graph, out, "--story-limit", "1", time_scale="0.05")
    wait_until_a_picture_is_done(graph, proc)
    if how != "deleted":
        other = tmp_path / "other.sqlite"
        EntityGraph.open(other).close()
        os.replace(other, graph)
    # The old write-ahead log goes too: SQLite would apply it to whatever
    # file is found at the path.
    for suffix in ("", "-wal", "-shm")[1 if how != "deleted" else 0 :]:
        Path(f"{graph}{suffix}").unlink(missing_ok=True)
    code, stdout, stderr = finish(proc)
    assert code != 0
    assert "completed:" not in stdout
    assert f"the entity graph file {graph} was {how} while this process had it open" in stderr
    assert "Traceback" not in stderr
    assert page_files(out) == []
    if how != "deleted":  # nothing was written into the file now at the path
        with EntityGraph.open(graph, create=False) as g:
            assert g.roots() == []
    else:
        assert not graph.exists()


@pytest.mark.timeout(120)
def test_a_full_out_folder_fails_the_run_leaves_no_half_page_and_the_rerun_writes_it(
    tmp_path, small_disk
):
    graph = tmp_path / "graph.sqlite"
    out = small_disk(tmp_path / "out", 16 * 1024)  # far less than one page
    code, stdout, stderr = finish(storylab_run(graph, out, time_scale="0.001"))
    assert code != 0
    (line,) = [ln for ln in stderr.splitlines() if ln.strip()]
    assert f"could not write the page to {out}" in line and "No space left on device" in line
    assert list(out.iterdir()) == []  # neither a half page nor a temporary file
    with EntityGraph.open(graph, create=False) as g:
        root, _, _ = the_story(g)
        assert root.status == "Completed"  # the story itself is stored, page included
        stored = g.blobs.get(root.output["html_key"]).decode("utf-8")

    subprocess.run(["mount", "-o", "remount,size=16m", str(out)], check=True)
    code, stdout, stderr = finish(storylab_run(graph, out, time_scale="0.001"))
    assert code == 0, stdout + stderr
    assert "already finished" in stdout
    (written,) = page_files(out)
    assert written.read_text(encoding="utf-8") == stored
