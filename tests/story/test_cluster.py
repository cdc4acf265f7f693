"""Stories on a real Dask LocalCluster of worker processes, one graph, one global limit.

Counts come from the shared graph (each execution of an image's ``run_impl``
logs one ``STARTED`` and one ``Generating image`` status in its node's own
log) and from the workers' merged traces; the worker is killed with a real
SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("distributed")

from storylab.entities import EntityGraph  # noqa: E402
from storylab.scheduling import EventKind, Trace  # noqa: E402
from storylab.story.backends import SimulatedImageBackend, SimulatedTextBackend  # noqa: E402
from storylab.story.cluster import (  # noqa: E402
    gather_stories,
    global_units_out,
    open_cluster,
    parse_cluster,
    run_stories_on_cluster,
    submit_stories,
)
from storylab.story.settings import StorySettings  # noqa: E402

TOPICS = [
    "a fox who finds a friend",
    "an owl who counts the stars",
    "a turtle who races the rain",
    "a bear who shares his honey",
]


def settings(time_scale: float, global_limit: int) -> StorySettings:
    return StorySettings(
        images=SimulatedImageBackend(time_scale=time_scale),
        text=SimulatedTextBackend(time_scale=time_scale / 10),
        story_limit=3,
        global_limit=global_limit,
    )


def executions(graph: EntityGraph, node_id: str) -> tuple[int, int]:
    """(times the node was started, times its run_impl began drawing)."""
    log = [e for e in graph.progress(node_id) if e.entity_id == node_id]
    started = sum(1 for e in log if e.type == "STATUS" and e.status == "STARTED")
    drawn = sum(
        1
        for e in log
        if e.type == "STATUS" and e.status == "RUNNING" and e.message.startswith("Generating image")
    )
    return started, drawn


def peak(trace: Trace, name: str) -> int:
    return max(v for _, v in trace.in_use_series().get(name, [(0.0, 0)]))


def peak_running(trace: Trace) -> int:
    level = top = 0
    for e in trace.events:
        if e.kind is EventKind.TASK_START and e.group and e.group.startswith("story:"):
            level += 1
            top = max(top, level)
        elif e.kind in (EventKind.TASK_END, EventKind.TASK_ERROR, EventKind.TASK_CANCEL):
            if e.group and e.group.startswith("story:"):
                level -= 1
    return top


def images_of(graph: EntityGraph) -> dict[str, list]:
    """Image nodes by pipeline name."""
    return {
        root.name: [k for k in graph.children(root.id) if k.type == "ImageGenerationEntity"]
        for root in graph.roots()
    }


def shared_members(client, name: str) -> set[str]:
    """The processes (allocator member ids) holding a share of the limit ``name``."""
    from storylab.scheduling.distributed import shared_limit_statistics

    return set(client.sync(shared_limit_statistics, client.scheduler, name)["members"])


def member_of(client, address: str, name: str) -> str:
    """The allocator member id under which the worker at ``address`` holds its
    share of ``name`` now (asked of the worker itself)."""

    def members() -> list[str]:
        from storylab.story import cluster

        return [r._member for r in cluster._ROOTS.values() if r.name == name]

    (member,) = client.run(members, workers=[address])[address]
    return member


@pytest.mark.timeout(300)
def test_stories_on_two_processes_share_one_global_limit_and_draw_each_image_once(tmp_path):
    path = tmp_path / "graph.sqlite"
    run = run_stories_on_cluster(
        TOPICS,
        {"illustration_count": 4},
        cluster="local:2",
        graph=path,
        settings=settings(0.01, global_limit=4),
        # Nothing here is about leases: one long enough that a worker slowed
        # by a busy machine never loses its share (and draws a picture twice).
        lease_timeout=30,
    )
    assert [s.topic for s in run.stories] == TOPICS
    assert all(r["stage"] == "completed" and r["image_count"] == 4 for r in run.results)
    assert len(run.pids) == 2  # the stories were spread over both processes
    name = "storylab-global-4"
    # The merged trace: the global line adds up the processes, and it reached
    # the limit without passing it; so did the images actually running.
    assert run.trace.meta["limits"][name] == 4
    assert peak(run.trace, name) == 4
    assert peak_running(run.trace) == 4
    for story in run.stories:
        assert peak(run.trace, f"story:{story.pipeline}") <= 3
    with EntityGraph.open(path, create=False) as g:
        per_story = images_of(g)
        assert sorted(per_story) == sorted(s.pipeline for s in run.stories)
        for images in per_story.values():
            assert len(images) == 4
            for image in images:
                assert image.status == "Completed"
                assert executions(g, image.id) == (1, 1), image.name
        for story in run.stories:
            assert g.blobs.get(story.result["html_key"]).count(b"<img ") == 4


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_run_has_its_stories_finished_by_the_others_with_nothing_redone(
    tmp_path,
):
    path = tmp_path / "graph.sqlite"
    # A lease of 10 s: the dead worker's share comes back after it, and the
    # living ones keep theirs through the stalls of a busy machine.
    with open_cluster("local:3", lease_timeout=10) as client:
        futures, graph_path = submit_stories(
            client,
            TOPICS,
            {"illustration_count": 5},
            graph=path,
            # Pictures of 2 s each: a story stays half-way long enough to be
            # caught there even when a busy machine makes each look slow.
            settings=settings(0.2, global_limit=4),
            lease_timeout=10,
        )
        pids = client.run(os.getpid)
        # Wait until a worker is running a story that has some pictures stored
        # and some not, then kill that worker.
        victim = done_before = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.05)
            with EntityGraph.open(path, create=False, read_only=True) as g:
                done = {
                    name: {i.id for i in images if i.status == "Completed"}
                    for name, images in images_of(g).items()
                }
            for address, keys in client.processing().items():
                for key in keys:
                    name = str(key)[len("story-") : -9]
                    if 1 <= len(done.get(name, ())) < 5:
                        victim, killed_story, done_before = address, name, done
        assert victim is not None, "no story was caught half-way"
        os.kill(pids[victim], signal.SIGKILL)
        run = gather_stories(client, futures, graph_path)

        def taken() -> int:
            return global_units_out(client, "storylab-global-4")

        deadline = time.monotonic() + 60
        while taken() and time.monotonic() < deadline:
            time.sleep(0.2)
        leases_left = taken()

    assert all(r["stage"] == "completed" and r["image_count"] == 5 for r in run.results)
    assert pids[victim] not in run.pids  # the killed story was finished elsewhere
    killed = next(s for s in run.stories if s.pipeline == killed_story)
    assert killed.pid != pids[victim]
    # The dead process's share came back to the scheduler, and the others
    # gave theirs back once idle.
    assert leases_left == 0
    assert peak(run.trace, "storylab-global-4") <= 4
    with EntityGraph.open(path, create=False) as g:
        redrawn = 0
        for name, images in images_of(g).items():
            assert len(images) == 5
            for image in images:
                assert image.status == "Completed"
                started, drawn = executions(g, image.id)
                if image.id in done_before.get(name, ()):
                    # Stored before the kill: never drawn again.
                    assert (started, drawn) == (1, 1), image.name
                else:
                    # Taken (and maybe begun) by the dead process, then once more.
                    assert 1 <= drawn <= started <= 2, image.name
                    redrawn += drawn - 1
        # Only pictures the dead process was drawing are drawn a second time,
        # and it could not draw more than the global limit at once.
        assert redrawn <= 4
        (root,) = [r for r in g.roots() if r.name == killed_story]
        starts = [e for e in g.progress(root.id) if e.entity_id == root.id]
        assert [e.status for e in starts].count("STARTED") == 2  # resumed once
        assert all(g.lease(r.id) is None for r in g.roots())


@pytest.mark.parametrize("bad", ["local:0", "local:", "local:x", "tcp://", "http://h:1", 3, None])
def test_a_cluster_spec_must_be_local_n_or_a_tcp_address(bad):
    with pytest.raises(ValueError, match=r"cluster must be local:N .* or tcp://host:port"):
        parse_cluster(bad)


def test_a_refused_request_submits_nothing_and_stores_nothing(tmp_path):
    path = tmp_path / "graph.sqlite"
    with pytest.raises(ValueError, match="cluster must be"):
        run_stories_on_cluster(TOPICS, cluster="local:zero", graph=path)
    assert not path.exists()


def test_a_lease_timeout_must_be_a_positive_number(tmp_path):
    with pytest.raises(ValueError, match="lease_timeout must be a number of seconds > 0"):
        run_stories_on_cluster(TOPICS, cluster="local:1", graph=tmp_path / "g", lease_timeout=0)
    assert not (tmp_path / "g").exists()


def test_a_refused_topic_starts_no_cluster_and_stores_nothing(tmp_path):
    from storylab.story.models import StoryValidationError

    path = tmp_path / "graph.sqlite"
    with pytest.raises(StoryValidationError, match="Topic is required") as refused:
        run_stories_on_cluster(["a fox", "   "], cluster="local:2", graph=path)
    assert refused.value.field == "topic"
    assert not path.exists()


@pytest.mark.timeout(300)
def test_a_worker_stopped_past_its_lease_runs_its_stories_again_and_finishes_them(tmp_path):
    path = tmp_path / "graph.sqlite"
    lease = 4  # the running worker keeps its share through the stalls of a busy machine
    with open_cluster("local:2", lease_timeout=lease) as client:
        futures, graph_path = submit_stories(
            client,
            TOPICS[:2],
            {"illustration_count": 6},
            graph=path,
            # Pictures of 3 s each: a story still holds units when its worker
            # is stopped, even on a loaded machine (at 1 s a slow first look
            # could find the victim's story already past its drawing).
            settings=settings(0.3, global_limit=4),
            lease_timeout=lease,
        )
        pids = client.run(os.getpid)
        # Wait until every story is drawing (so whichever worker is stopped holds
        # units: a story still starting up has nothing to lose), then stop one
        # worker for longer than the lease.
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.05)
            with EntityGraph.open(path, create=False, read_only=True) as g:
                drawing = images_of(g)
                started = len(drawing) == 2 and all(
                    any(i.status == "InProgress" for i in v) for v in drawing.values()
                )
            if started:
                victim = next(a for a, keys in client.processing().items() if keys)
        assert victim is not None
        name = "storylab-global-4"
        member = member_of(client, victim, name)
        assert member in shared_members(client, name)
        # Stopped for longer than the lease (on the stopped process's own
        # clock, which goes on while it stands still) AND until the scheduler
        # has taken its share back: on a slow machine the scheduler's expiry
        # may come well after the lease timeout, so real time alone proves nothing.
        os.kill(pids[victim], signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            deadline = stopped + 120
            while time.monotonic() - stopped < lease or member in shared_members(client, name):
                assert time.monotonic() < deadline, "the scheduler never took the share back"
                time.sleep(0.1)
        finally:
            os.kill(pids[victim], signal.SIGCONT)
        run = gather_stories(client, futures, graph_path)
    assert all(r["stage"] == "completed" and r["image_count"] == 6 for r in run.results)
    stopped = [s for s in run.stories if s.pid == pids[victim]]
    # The stopped worker's stories were cancelled when it woke and run again there.
    assert stopped and all(s.restarts >= 1 for s in stopped)
    assert peak(run.trace, "storylab-global-4") <= 4
    with EntityGraph.open(path, create=False) as g:
        for images in images_of(g).values():
            assert len(images) == 6 and all(i.status == "Completed" for i in images)


@pytest.mark.timeout(300)
def test_stories_on_a_cluster_over_http_keep_the_image_servers_load_within_the_global_limit(
    tmp_path,
):
    # The HTTP image backend on the workers: under the shared limit's guard
    # its requests go through the fenced transport, and a server that takes
    # no more than the global limit at once (it answers 429 past it) serves
    # every picture.
    import asyncio
    import threading

    from storylab.story.backends.http_images import HttpImageBackend
    from storylab.story.backends.server import ImageServer

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ImageServer(SimulatedImageBackend(time_scale=0.01), max_concurrent=4)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    try:
        http = StorySettings(
            images=HttpImageBackend(server.url, max_attempts=1, attempt_timeout=10),
            text=SimulatedTextBackend(time_scale=0.001),
            story_limit=3,
            global_limit=4,
        )
        run = run_stories_on_cluster(
            TOPICS[:3],
            {"illustration_count": 3},
            cluster="local:2",
            graph=tmp_path / "graph.sqlite",
            settings=http,
            lease_timeout=30,
        )
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
    assert all(r["stage"] == "completed" and r["image_count"] == 3 for r in run.results)
    stats = server.statistics()
    assert stats.served == 9 and stats.rejected == 0
    assert stats.peak_in_flight <= 4
