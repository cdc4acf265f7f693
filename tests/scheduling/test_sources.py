"""Task sources pull on demand and never advance on peek."""

from __future__ import annotations

import asyncio

import pytest

from storylab.scheduling import EXHAUSTED, BufferMode, SourceBufferObj, SourceFromIterable


async def test_buffer_fifo_drains_in_order_and_ends():
    src = SourceBufferObj([1, 2, 3])
    assert src.peek() == 1 and src.peek() == 1  # peeking consumes nothing
    assert [x async for x in src] == [1, 2, 3]
    assert src.done and await src.pull() is EXHAUSTED


async def test_buffer_lifo_takes_from_the_back():
    src = SourceBufferObj([1, 2, 3], mode=BufferMode.LIFO)
    assert src.peek() == 3
    assert [x async for x in src] == [3, 2, 1]


def test_buffer_mode_must_be_a_buffer_mode():
    with pytest.raises(ValueError, match="BufferMode.FIFO or BufferMode.LIFO"):
        SourceBufferObj([], mode="fifo")


async def test_open_buffer_waits_for_pushes_until_closed():
    src = SourceBufferObj([], one_shot=False)
    assert not src.sync
    pulled = asyncio.ensure_future(src.pull())
    await asyncio.sleep(0.01)
    assert not pulled.done()  # empty but not closed: wait for more
    src.push("a")
    assert await pulled == "a"
    src.push("b")
    src.close()
    assert await src.pull() == "b"
    assert await src.pull() is EXHAUSTED
    with pytest.raises(RuntimeError, match="closed"):
        src.push("c")


async def test_from_async_iterable_advances_one_step_per_pull():
    steps = 0

    async def gen():
        nonlocal steps
        for i in range(3):
            steps += 1
            yield i

    src = SourceFromIterable(gen())
    assert steps == 0
    assert src.peek() is None and steps == 0  # peek never creates anything
    assert await src.pull() == 0 and steps == 1
    assert src.peek() is None and steps == 1
    assert await src.pull() == 1 and steps == 2
    assert await src.pull() == 2 and steps == 3
    assert await src.pull() is EXHAUSTED and src.done
    assert await src.pull() is EXHAUSTED


async def test_from_sync_iterable_is_pulled_without_waiting():
    produced = []

    def gen():
        for i in range(2):
            produced.append(i)
            yield i

    src = SourceFromIterable(gen())
    assert src.sync and produced == []
    assert src.pull_nowait() == 0 and produced == [0]
    assert await src.pull() == 1
    assert src.pull_nowait() is EXHAUSTED and src.done


def test_from_iterable_rejects_non_iterables():
    with pytest.raises(TypeError, match="needs an iterable or async iterable, got int"):
        SourceFromIterable(42)


async def test_aclose_runs_the_generator_cleanup():
    closed = []

    async def gen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    src = SourceFromIterable(gen())
    assert await src.pull() == 1
    await src.aclose()
    assert closed == [True] and await src.pull() is EXHAUSTED
