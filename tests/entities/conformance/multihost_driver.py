"""The client side of the multi-host test, run inside the server's namespace:

    python multihost_driver.py SCHEDULER GRAPH_URL TOPICS_JSON

Submits one story per topic to the Dask scheduler (whose workers are on other
hosts), waits until a worker is half-way through a story (some of its
pictures stored, some not), kills that worker's process with SIGKILL, waits
for every story, and prints one JSON line: the results, the worker pids, the
killed one, the pictures stored before the kill, the peak of the global
limit in the merged traces, and the leases left on the scheduler.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from distributed import Client, Semaphore

from storylab.entities import EntityGraph
from storylab.story.backends import SimulatedImageBackend, SimulatedTextBackend
from storylab.story.cluster import gather_stories, submit_stories
from storylab.story.settings import StorySettings

GLOBAL_LIMIT = 3
IMAGES = 5


def images_of(graph: EntityGraph) -> dict[str, list]:
    return {
        root.name: [k for k in graph.children(root.id) if k.type == "ImageGenerationEntity"]
        for root in graph.roots()
    }


def main(scheduler: str, url: str, topics: list[str]) -> int:
    settings = StorySettings(
        images=SimulatedImageBackend(time_scale=0.05),
        text=SimulatedTextBackend(time_scale=0.005),
        story_limit=2,
        global_limit=GLOBAL_LIMIT,
    )
    with Client(scheduler) as client:
        futures, path = submit_stories(
            client,
            topics,
            {"illustration_count": IMAGES},
            graph=url,
            settings=settings,
            lease_timeout=2,
        )
        pids = client.run(os.getpid)
        victim = victim_story = None
        done_before: dict[str, list[str]] = {}
        deadline = time.monotonic() + 180
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.05)
            with EntityGraph.open(path, create=False, read_only=True) as g:
                done = {
                    name: sorted(i.id for i in images if i.status == "Completed")
                    for name, images in images_of(g).items()
                }
            for address, keys in client.processing().items():
                for key in keys:
                    name = str(key)[len("story-") : -9]
                    if 1 <= len(done.get(name, ())) < IMAGES:
                        victim, victim_story, done_before = address, name, done
        if victim is None:
            print(json.dumps({"error": "no story was caught half-way"}), flush=True)
            return 2
        os.kill(pids[victim], signal.SIGKILL)
        run = gather_stories(client, futures, path)
        sem = Semaphore(max_leases=GLOBAL_LIMIT, name=f"storylab-global-{GLOBAL_LIMIT}")
        deadline = time.monotonic() + 30
        while sem.get_value() and time.monotonic() < deadline:
            time.sleep(0.2)
        name = f"storylab-global-{GLOBAL_LIMIT}"
        series = run.trace.in_use_series().get(name, [(0.0, 0)])
        print(
            json.dumps(
                {
                    "results": run.results,
                    "story_pids": {s.pipeline: s.pid for s in run.stories},
                    "worker_pids": sorted(pids.values()),
                    "victim_pid": pids[victim],
                    "victim_story": victim_story,
                    "done_before": done_before,
                    "peak": max(v for _, v in series),
                    "leases_left": sem.get_value(),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
