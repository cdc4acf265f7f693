"""Real traced runs and tiny entities for the viz tests (no story import).

Imported by the tests and by the subprocess/notebook scripts they run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from storylab.entities import Return, RunnableEntity
from storylab.scheduling import (
    CapacitySource,
    EventKind,
    HierarchicalTaskPoolRunner,
    SourceBufferObj,
    TaskEventType,
    Trace,
    current_trace,
)


def in_virtual_time(run):
    """``run`` (a coroutine function) on an event loop of its own whose clock
    moves only when every task waits for a timer, as ``sweep`` simulates.

    A run of the pure-asyncio scheduler then has exact, repeatable timings, in
    a few milliseconds, whatever else the machine is doing: its readings can be
    checked to the model second. A trace made inside should read the loop's
    clock (``clock=asyncio.get_running_loop().time``). It runs in a thread, so
    the caller's loop is left alone.
    """
    from storylab.sweep import _run_virtual

    async def virtual(*args, **kwargs):
        return await asyncio.to_thread(_run_virtual, lambda: run(*args, **kwargs))

    return virtual


def _thunk(label: str, seconds: float, fail: bool):
    async def run() -> str:
        await asyncio.sleep(seconds)
        if fail:
            raise RuntimeError(f"{label} broke")
        return label

    run.label = label
    return run


async def run_stories(
    stories: dict[str, Sequence[float | tuple[float, bool]]],
    *,
    story_limit: int = 3,
    global_limit: int = 10,
    time_scale: float = 0.002,
    policy: str = "fair",
) -> tuple[Trace, dict[str, CapacitySource]]:
    """Run each story's tasks (model seconds, optionally ``(seconds, fails)``) in parallel.

    Each story gets a ``CapacitySource(story_limit, global)`` named ``story:<name>``
    and its own runner; all stories start together. Returns the trace (with
    ``time_scale`` and ``limits`` in its meta) and the capacity sources by name.
    """
    shared = CapacitySource(global_limit, name="global", policy=policy)
    caps = {"global": shared}
    limits = {"global": global_limit}
    # The loop's clock: on a virtual-time loop the trace reads virtual seconds.
    clock = asyncio.get_running_loop().time
    trace = Trace(meta={"time_scale": time_scale, "limits": limits}, clock=clock)

    async def story(name: str, tasks) -> None:
        cap = CapacitySource(story_limit, shared, name=f"story:{name}")
        caps[cap.name] = cap
        limits[cap.name] = story_limit
        thunks = []
        for i, spec in enumerate(tasks, start=1):
            seconds, fail = spec if isinstance(spec, tuple) else (spec, False)
            thunks.append(_thunk(f"{name}-image-{i}", seconds * time_scale, fail))
        runner = HierarchicalTaskPoolRunner(f"story-{name}", SourceBufferObj(thunks), cap)
        async for _ in runner.run_tasks():
            pass

    with trace:
        await asyncio.gather(*(story(n, t) for n, t in stories.items()))
    assert all(c.in_use == 0 for c in caps.values())
    return trace, caps


async def run_sequential(
    name: str, seconds: Sequence[float], *, time_scale: float = 0.002
) -> Trace:
    """Run tasks one after another, recording TASK_* events like a sequential pipeline."""
    trace = Trace(meta={"time_scale": time_scale}, clock=asyncio.get_running_loop().time)
    with trace:
        for i, s in enumerate(seconds, start=1):
            tr = current_trace()
            label = f"{name}-image-{i}"
            fields = dict(runner=f"sequential:{name}", task_id=i, label=label,
                          group=f"story:{name}")
            tr.record(EventKind.TASK_START, **fields)
            await asyncio.sleep(s * time_scale)
            tr.record(EventKind.TASK_END, **fields)
    return trace


# -- tiny entities: a "story" that fans out "images" under a capacity tree -------


class VizImage(RunnableEntity):
    """Sleeps ``seconds`` and returns its number, or fails when ``fail`` is set."""

    async def run_impl(self):
        yield self.status("RUNNING", "drawing")
        await asyncio.sleep(self.data["seconds"])
        if self.data.get("fail"):
            raise RuntimeError(f"no ink for {self.name}")
        yield Return({"n": self.data["n"]})


class VizStep(RunnableEntity):
    """A sequential step before the fan-out (like a writer)."""

    async def run_impl(self):
        yield Return("text")


class VizStory(RunnableEntity):
    """Writes, announces its images, then runs them in parallel under its limit."""

    shared: CapacitySource | None = None

    async def run_impl(self):
        yield self.delegate(self.append_or_retrieve_call(VizStep, "writer", {}))
        d = self.data
        items = [
            {"name": f"image-{i}",
             "data": {"n": i, "seconds": d["seconds"], "fail": i in d.get("fail", [])}}
            for i in range(1, d["images"] + 1)
        ]
        yield self.progress(
            {"stage": "images", "total": len(items), "items": [i["name"] for i in items]}
        )
        cap = CapacitySource(d.get("limit", 3), VizStory.shared, name=f"story:{self.name}")
        runner = HierarchicalTaskPoolRunner(self.name, self.parallel_calls(VizImage, items), cap)
        done = failed = 0
        async for env in runner.run_tasks():
            if env.type is TaskEventType.INTERMEDIATE:
                yield env.value  # forward the image's envelopes to whoever watches us
            elif env.type is TaskEventType.FINAL:
                done += 1
            else:
                failed += 1
        if d.get("explode"):
            raise ValueError("the story itself failed")
        yield Return({"done": done, "failed": failed})
