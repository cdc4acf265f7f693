"""The story's root entity handled synchronously from a coroutine while
another process holds the graph's write lock: :func:`create_story` finding
a story that already exists (and reopening it, with ``retry_failed``), and
closing the graph. None of them waits on the event loop for the lock; what
they change is stored once it is free.

On both stores (``target``): a real process holds the lock for a few
seconds and then lets it go by itself (on SQLite the file's write lock, on
PostgreSQL an open transaction that writes the story's node and holds the
lock of the story's name, as a second ``storylab run`` of the same story
deciding it does); a ticker task notes the time of
each of its turns. Judged: the calls returned while the lock was still held,
and the loop never stood still for a good part of the hold.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest

from storylab.story.entities import create_story
from tests.entities.conformance.conftest import store_target
from tests.entities.conformance.test_loop_free import Ticker
from tests.entities.test_reads_under_lock import HOLD, Held


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path):
    """Each store in turn (as the conformance suite's ``target``)."""
    yield from store_target(request.param, tmp_path)


TOPIC = "a lighthouse keeper's cat"


def stored_status(target, node_id: str) -> str:
    return target.rows("SELECT status FROM nodes WHERE id = ?", (node_id,))[0][0]


def write_outside(target, sql: str, params: tuple) -> None:
    """One statement committed on a connection of its own (``?`` parameters)."""
    if target.kind == "sqlite":
        conn = sqlite3.connect(target.url, timeout=30)
        try:
            with conn:
                conn.execute(sql, params)
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(target.base, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{target.schema}"')
        conn.execute(sql.replace("?", "%s"), params)


def finished_with_errors(target) -> tuple[str, str]:
    """A story stored as finished with a failed picture (what ``retry_failed``
    reopens): its id and name."""
    g = target.open()
    story = create_story(g, TOPIC)
    page = g.blobs.put(b"<html></html>", "text/html")
    output = {"stage": "completed_with_errors", "html_key": page}
    g.merge_data(story.id, {"stage": "completed_with_errors"})
    g.close()
    write_outside(
        target,
        "UPDATE nodes SET status = 'Completed', finished_at = 1, output = ? WHERE id = ?",
        (json.dumps(output), story.id),
    )
    return story.id, story.name


@pytest.mark.timeout(120)
async def test_create_story_reopen_and_close_under_a_foreign_lock_keep_the_loop_moving(target):
    story_id, name = finished_with_errors(target)
    graph = target.open()  # the default busy timeout: 30 s, longer than the hold
    ticker = Ticker()
    await ticker.started()
    held = Held(target, rows=(story_id,), names=((None, name),))
    try:
        await held.locked()
        release = asyncio.create_task(held.released_at())
        begun = time.monotonic()
        found = create_story(graph, TOPIC)  # exists: nothing to write
        status_found = found.status
        reopened = create_story(graph, TOPIC, retry_failed=True)  # reopened
        status_reopened = reopened.status
        graph.close()  # the reopening is stored once the lock is free
        done = time.monotonic()
        await asyncio.sleep(0)
        still_held = held.proc.poll() is None
        stored_meanwhile = stored_status(target, story_id)
        freed = await release
    finally:
        ticker.stop()
        held.kill()
        graph.close()
    assert found.id == reopened.id == story_id
    assert (status_found, status_reopened) == ("Completed", "Pending")
    # The calls were done while the other process still held the lock...
    assert still_held and done < freed, f"the calls waited {done - begun:.2f} s for the lock"
    assert stored_meanwhile == "Completed"
    # ...and the loop kept turning meanwhile.
    gap = ticker.largest_gap(begun, freed)
    assert gap < (freed - held.locked_at) / 2, f"the loop stood still {gap:.2f} s of {HOLD} s"
    # Once the lock is free the reopening is stored, and the story runs again.
    deadline = time.monotonic() + 30
    while stored_status(target, story_id) != "Pending":
        assert time.monotonic() < deadline, "the reopening was never stored"
        await asyncio.sleep(0.05)
    with target.open() as g:
        node = g.get_node(story_id)
        assert (node.status, node.output, node.finished_at) == ("Pending", None, None)
        assert node.data["stage"] == "completed_with_errors"
        assert len(g.roots()) == 1
