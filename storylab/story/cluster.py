"""Stories spread over the worker processes of a Dask cluster, under one global limit.

Why: one process shares its global image limit between its own stories. To
use more processes (or machines) without multiplying that limit, each story
runs as a Dask task on some worker process, and every worker takes its
global units from the same :class:`~storylab.scheduling.distributed.DistributedCapacityRoot`:
a share of the limit, allocated from the Dask scheduler so that the stories
of all workers get the same number of units. Per-story limits stay local.

All workers open the same SQLite graph file, so they must share its file
system (one machine, as with ``local:N``). The graph's leases make sure no
node runs twice: if a worker dies, Dask runs its story again on another
worker, which finds the finished pictures stored, takes over the nodes the
dead process was running (its pid is gone, so its leases are void at once)
and only draws what is left. The dead worker's share of the global limit
comes back after ``lease_timeout``; a worker that was stopped for that long
cancels its stories at once when it wakes (their requests may otherwise
overbook the service) and runs them again under a new share. The lease
timeout must be at least twice the image backend's per-attempt deadline
(see :func:`~storylab.scheduling.distributed.check_lease_rule`).

Each worker records a :class:`~storylab.scheduling.Trace` on the wall clock
and sends it back with the story's result; :func:`run_stories_on_cluster`
merges them into one timeline, whose ``global`` capacity line is the sum
over the processes. The trace of an attempt killed with its worker is lost
with it.

``distributed`` is an optional dependency (``pip install "storylab[dask]"``),
imported only here and only when a cluster is used.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from storylab.scheduling.trace import Trace, merge_traces
from storylab.story.settings import StorySettings

__all__ = [
    "ClusterRun",
    "StoryAttempt",
    "attempt_timeout_of",
    "check_cluster_lease",
    "cluster_lease_timeout",
    "gather_stories",
    "global_units_out",
    "lease_settings",
    "open_cluster",
    "parse_cluster",
    "run_stories_on_cluster",
    "submit_stories",
]

_LOCAL = re.compile(r"local:(\d+)")
_TCP = re.compile(r"tcp://[^\s/:]+:\d{1,5}")
CLUSTER_HELP = "local:N (N worker processes on this machine, N >= 1) or tcp://host:port"
DEFAULT_LEASE_TIMEOUT = 10.0
# Stories are async tasks: they wait on images, not on a thread, and Dask runs
# at most as many tasks per worker as it has threads. A local cluster's
# workers take this many stories at once (the threads are only started if
# something needs them).
STORIES_PER_WORKER = 64
# A story cancelled because its worker lost its share is run again at most
# this many times on that worker before the error is reported.
RESTARTS = 3


def parse_cluster(spec: Any) -> int | str:
    """``local:N`` as the int N, ``tcp://host:port`` as the address; else a ValueError."""
    if isinstance(spec, str):
        m = _LOCAL.fullmatch(spec.strip())
        if m and int(m.group(1)) >= 1:
            return int(m.group(1))
        if _TCP.fullmatch(spec.strip()):
            return spec.strip()
    raise ValueError(f"cluster must be {CLUSTER_HELP}; got {spec!r}")


def _check_lease_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"lease_timeout must be a number of seconds > 0; got {value!r}")
    return float(value)


def attempt_timeout_of(settings: StorySettings | None) -> float | None:
    """The image backend's per-attempt deadline (None for in-process backends)."""
    images = getattr(settings, "images", None)
    value = getattr(images, "attempt_timeout", None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def cluster_lease_timeout(lease_timeout: float | None, settings: StorySettings | None) -> float:
    """``storylab run --cluster``'s lease timeout: ``--lease-timeout`` checked
    against ``--attempt-timeout``, or when not given the default (10 s, or
    twice the per-attempt deadline if that is longer)."""
    if lease_timeout is None:
        attempt = attempt_timeout_of(settings)
        lease_timeout = max(DEFAULT_LEASE_TIMEOUT, 2 * attempt if attempt else 0.0)
    return check_cluster_lease(
        lease_timeout, settings, names=("--lease-timeout", "--attempt-timeout")
    )


def check_cluster_lease(
    lease_timeout: Any,
    settings: StorySettings | None,
    names: tuple[str, str] = ("lease_timeout", "the image backend's attempt_timeout"),
) -> float:
    """``lease_timeout`` if it keeps the timing rule with the settings' image
    backend, else a ValueError naming both (see ``check_lease_rule``)."""
    from storylab.scheduling.distributed import check_lease_rule

    _check_lease_timeout(lease_timeout)
    return check_lease_rule(lease_timeout, attempt_timeout_of(settings), names=names)


def lease_settings(lease_timeout: float) -> dict[str, str]:
    """The Dask settings for a lease timeout, for ``dask.config.set(...)`` around
    a cluster's creation (the scheduler checks the leases four times per timeout)."""
    lease_timeout = _check_lease_timeout(lease_timeout)
    return {
        "distributed.scheduler.locks.lease-timeout": f"{lease_timeout}s",
        "distributed.scheduler.locks.lease-validation-interval": f"{lease_timeout / 4}s",
    }


@contextmanager
def open_cluster(
    cluster: Any = "local:2", *, lease_timeout: float = DEFAULT_LEASE_TIMEOUT
) -> Iterator[Any]:
    """A ``distributed.Client`` on ``cluster`` (``local:N`` starts a
    ``LocalCluster`` of N worker processes, closed on exit; ``tcp://...``
    connects to a running scheduler). An existing ``Client`` is used as is."""
    lease_timeout = _check_lease_timeout(lease_timeout)
    try:
        import dask
        from distributed import Client, LocalCluster
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        raise ModuleNotFoundError(
            'running on a cluster needs Dask distributed: pip install "storylab[dask]"'
        ) from exc
    if isinstance(cluster, Client):
        yield cluster
        return
    target = parse_cluster(cluster)
    with dask.config.set(lease_settings(lease_timeout)):
        if isinstance(target, int):
            # Stories are async tasks: they wait on images, not on the CPU, so
            # each worker process may run several at once.
            with (
                LocalCluster(
                    n_workers=target,
                    threads_per_worker=STORIES_PER_WORKER,
                    processes=True,
                    dashboard_address="127.0.0.1:0",
                    host="127.0.0.1",
                ) as local,
                Client(local) as client,
            ):
                yield client
        else:
            with Client(target) as client:
                yield client


@dataclass(frozen=True)
class StoryAttempt:
    """What a worker sends back for one story: the result and its trace."""

    topic: str
    pipeline: str
    pipeline_id: str
    result: dict[str, Any]
    pid: int
    worker: str
    trace: Trace
    # Times the story was cancelled and run again on its worker because the
    # worker lost its share of the global limit (it stood still too long).
    restarts: int = 0


@dataclass
class ClusterRun:
    """The stories of one cluster run, in the order of the topics (duplicates
    once), and the traces of all workers merged into one timeline."""

    stories: list[StoryAttempt]
    trace: Trace
    graph_path: str
    pids: list[int] = field(default_factory=list)

    @property
    def results(self) -> list[dict[str, Any]]:
        return [s.result for s in self.stories]


# One root per worker process and event loop, so the stories of one worker
# share its local share of the global limit (and the fair order within it).
_ROOTS: dict[tuple[Any, ...], Any] = {}


def _worker_root(name: str, limit: int, lease_timeout: float, attempt_timeout: float | None) -> Any:
    from storylab.scheduling.distributed import DistributedCapacityRoot

    key = (name, limit, lease_timeout, attempt_timeout, id(asyncio.get_running_loop()))
    root = _ROOTS.get(key)
    if root is None:
        root = _ROOTS[key] = DistributedCapacityRoot(
            limit, name=name, lease_timeout=lease_timeout, attempt_timeout=attempt_timeout
        )
    return root


async def _story_task(
    graph_path: str,
    topic: str,
    customization: Any,
    settings: StorySettings,
    root_name: str,
    lease_timeout: float,
    retry_failed: bool,
    meta: dict[str, Any],
) -> StoryAttempt:
    """Run on a worker: one story with the shared global root (a Dask task)."""
    # A task of its own: its context (trace, settings) is not shared with
    # another story running on the same worker loop.
    return await asyncio.create_task(
        _attempt(
            graph_path, topic, customization, settings, root_name, lease_timeout, retry_failed, meta
        )
    )


async def _attempt(
    graph_path, topic, customization, settings, root_name, lease_timeout, retry_failed, meta
) -> StoryAttempt:
    import dask
    from distributed import get_worker

    from storylab.entities import EntityGraph
    from storylab.scheduling.distributed import SharedLimitLost
    from storylab.story.entities import acreate_story
    from storylab.story.settings import use_settings

    # Set in the worker itself (a worker on another machine has its own config).
    dask.config.set(lease_settings(lease_timeout))
    root = _worker_root(
        root_name, settings.global_limit, lease_timeout, attempt_timeout_of(settings)
    )
    restarts = 0
    while True:
        graph = EntityGraph.open(graph_path, create=False)
        try:
            # Other stories share this worker's loop: a wait for another
            # process's write lock is awaited, never made on the loop.
            pipeline = await acreate_story(graph, topic, customization, retry_failed=retry_failed)
            with (
                Trace(meta=dict(meta, restarts=restarts), clock=time.time) as trace,
                use_settings(replace(settings, global_source=root)),
            ):
                async with root.guard():
                    result = await pipeline.run()
            await graph.settle()  # stored before it is reported
        except SharedLimitLost:
            # Cancelled at once, before anything more was sent under the old
            # share; what was stored stays, and the story resumes from it.
            restarts += 1
            if restarts > RESTARTS:
                raise
            continue
        finally:
            await graph.aclose()
        break
    # The trace saw this process's share; the line stands for the whole limit.
    trace.meta.setdefault("limits", {})[root_name] = settings.global_limit
    # Its units are leased from the scheduler: a replay tells a wait for them apart.
    trace.meta["shared_roots"] = [root_name]
    await root.drain()
    return StoryAttempt(
        topic=topic,
        pipeline=pipeline.name,
        pipeline_id=pipeline.id,
        result=result,
        pid=os.getpid(),
        worker=get_worker().address,
        trace=trace,
        restarts=restarts,
    )


def global_units_out(client: Any, name: str) -> int:
    """Units of the shared limit ``name`` that the scheduler counts as held
    right now, by every worker together (``client`` a ``distributed.Client``;
    the limit of ``storylab run --cluster`` is named ``storylab-global-N``)."""
    from storylab.scheduling.distributed import shared_limit_statistics

    stats = client.sync(shared_limit_statistics, client.scheduler, name)
    return 0 if stats.get("free") is None else stats["capacity"] - stats["free"]


def _check_requests(
    topics: list[str], customization: Any, settings: StorySettings | None
) -> StorySettings:
    """Refuse bad requests before a cluster is started or anything is stored."""
    from storylab.story.models import validate_story_request

    if isinstance(topics, str) or not topics:
        raise ValueError("topics must be a list naming at least one story")
    for t in topics:
        validate_story_request(t, customization)
    settings = settings if settings is not None else StorySettings()
    if not isinstance(settings, StorySettings):
        raise TypeError(f"settings must be a StorySettings, got {type(settings).__name__}")
    if settings.global_source is not None:
        raise ValueError(
            "settings.global_source must be None on a cluster: the global limit is "
            "settings.global_limit, shared through the scheduler"
        )
    return settings


def submit_stories(
    client: Any,
    topics: Sequence[str],
    customization: Any = None,
    *,
    graph: str | os.PathLike[str] | None = None,
    settings: StorySettings | None = None,
    retry_failed: bool = True,
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    root_name: str | None = None,
) -> tuple[list[Any], str]:
    """Check every request, create the stories in the graph, and submit one
    Dask task per story. Returns the futures (one per distinct story) and the
    graph's absolute path. Nothing is submitted if a request is refused."""
    from storylab.entities import EntityGraph
    from storylab.story.entities import create_story

    topics = list(topics)
    settings = _check_requests(topics, customization, settings)
    lease_timeout = check_cluster_lease(lease_timeout, settings)
    with EntityGraph.open(graph) as g:
        path = g.key  # what every worker opens: an absolute path, or a URL (no password)
        pipelines = [create_story(g, t, customization, retry_failed=retry_failed) for t in topics]
    time_scale = getattr(settings.images, "time_scale", None)
    meta = {"time_scale": time_scale} if time_scale else {}
    name = root_name or f"storylab-global-{settings.global_limit}"
    futures = []
    seen: set[str] = set()
    for topic, pipeline in zip(topics, pipelines, strict=True):
        if pipeline.id in seen:
            continue
        seen.add(pipeline.id)
        futures.append(
            client.submit(
                _story_task,
                path,
                topic,
                customization,
                settings,
                name,
                lease_timeout,
                retry_failed,
                meta,
                key=f"story-{pipeline.name}-{uuid.uuid4().hex[:8]}",
                pure=False,
            )
        )
    return futures, path


def gather_stories(
    client: Any,
    futures: Sequence[Any],
    graph_path: str,
    *,
    on_story: Callable[[StoryAttempt], None] | None = None,
) -> ClusterRun:
    """Wait for the stories (``on_story`` is called as each one finishes) and
    merge their traces."""
    from distributed import as_completed

    done: dict[Any, StoryAttempt] = {}
    for future in as_completed(list(futures)):
        attempt = future.result()
        done[future.key] = attempt
        if on_story is not None:
            on_story(attempt)
    stories = [done[f.key] for f in futures]
    trace = merge_traces((f"{s.pid}", s.trace) for s in stories)
    return ClusterRun(
        stories=stories,
        trace=trace,
        graph_path=graph_path,
        pids=sorted({s.pid for s in stories}),
    )


def run_stories_on_cluster(
    topics: Sequence[str],
    customization: Any = None,
    *,
    cluster: Any = "local:2",
    graph: str | os.PathLike[str] | None = None,
    settings: StorySettings | None = None,
    retry_failed: bool = True,
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    on_story: Callable[[StoryAttempt], None] | None = None,
) -> ClusterRun:
    """Run the stories of ``topics`` on a Dask cluster under one global limit.

    ``cluster`` is ``"local:N"``, ``"tcp://host:port"`` or a
    ``distributed.Client``; ``graph`` the graph every worker opens, a file or a
    ``postgresql://`` URL (the
    default graph file if None); ``settings`` the backends and limits (their
    ``global_limit`` holds across all workers). Running it again resumes, as
    a local run does.
    """
    if not isinstance(cluster, str):
        # A client of the caller's: check it is one before anything is stored.
        from distributed import Client

        if not isinstance(cluster, Client):
            raise ValueError(f"cluster must be {CLUSTER_HELP} or a distributed.Client")
    else:
        parse_cluster(cluster)
    _check_lease_timeout(lease_timeout)
    if isinstance(topics, str):
        raise ValueError("topics must be a list naming at least one story, not one string")
    check_cluster_lease(lease_timeout, _check_requests(list(topics), customization, settings))
    with open_cluster(cluster, lease_timeout=lease_timeout) as client:
        futures, path = submit_stories(
            client,
            topics,
            customization,
            graph=graph,
            settings=settings,
            retry_failed=retry_failed,
            lease_timeout=lease_timeout,
        )
        return gather_stories(client, futures, path, on_story=on_story)
