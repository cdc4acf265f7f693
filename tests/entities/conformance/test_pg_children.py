"""The PostgreSQL store names a leased parent's children without asking the
server (only the lease's holder makes them), and fences them at the commit:
a child made after another process took its parent over is never stored,
and the run that made it is stopped."""

from __future__ import annotations

import asyncio

import pytest

from storylab.entities import LeaseLostError, Return, RunnableEntity

GO: dict[str, asyncio.Event] = {}


class Leaf(RunnableEntity, type_name="ConformanceFencedLeaf"):
    async def run_impl(self):
        yield Return(self.data["n"])


class Maker(RunnableEntity, type_name="ConformanceFencedMaker"):
    async def run_impl(self):
        first = self.append_or_retrieve_call(Leaf, "first", {"n": 1})
        value = yield self.delegate(first)
        await GO[self.id].wait()  # the test takes the lease away meanwhile
        self.append_call(Leaf, "second", {"n": 2})
        await asyncio.sleep(30)  # stopped before this ends, by the lost lease
        yield Return(value)


def _steal(target, node_id: str) -> None:
    import psycopg

    with psycopg.connect(target.base, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{target.schema}"')
        stolen = conn.execute(
            "UPDATE leases SET token = 'feedfeedfeedfeed', owner = 'thief:1', host = 'thief', "
            "pid = 1 WHERE node_id = %s RETURNING 1",
            (node_id,),
        ).fetchall()
        assert stolen == [(1,)]


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_child_made_after_its_parent_was_taken_over_is_not_stored(pg_target):
    graph = pg_target.open(lease_ttl=30.0)
    maker = graph.create(Maker, "maker")
    graph.flush()
    GO[maker.id] = asyncio.Event()
    run = asyncio.create_task(maker.run())
    for _ in range(500):  # until the first child is stored as finished
        rows = pg_target.rows(
            "SELECT status FROM nodes WHERE parent_id = ? AND name = 'first'", (maker.id,)
        )
        if rows == [("Completed",)]:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the first child never finished")
    _steal(pg_target, maker.id)
    GO[maker.id].set()
    with pytest.raises(LeaseLostError, match="thief:1"):
        await asyncio.wait_for(run, timeout=30)
    names = pg_target.rows("SELECT name FROM nodes WHERE parent_id = ?", (maker.id,))
    assert names == [("first",)]  # "second" was never stored
    assert pg_target.rows("SELECT owner FROM leases WHERE node_id = ?", (maker.id,)) == [
        ("thief:1",)
    ]
