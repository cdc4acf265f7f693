"""RunnableEntity: statuses, the envelope stream, re-runs, delegation, data."""

from __future__ import annotations

import asyncio
import collections
import logging

import pytest

from storylab.entities import (
    EntityGraph,
    EntityRunInterrupted,
    Envelope,
    Return,
    RunnableEntity,
)

CALLS: collections.Counter = collections.Counter()
RESETS: collections.Counter = collections.Counter()
SEEN_STATUS: dict[str, str] = {}


class EntEcho(RunnableEntity):
    async def reset(self):
        RESETS[self.id] += 1

    async def run_impl(self):
        CALLS[self.id] += 1
        SEEN_STATUS[self.id] = self.status
        yield self.status("RUNNING", "echoing")
        yield Return({"echo": self.data.get("text"), "n": CALLS[self.id]})


class EntFlaky(RunnableEntity):
    async def reset(self):
        RESETS[self.id] += 1

    async def run_impl(self):
        CALLS[self.id] += 1
        yield self.status("RUNNING", "trying")
        if CALLS[self.id] == 1:
            raise ValueError("no luck the first time")
        yield Return("second time lucky")


class EntParent(RunnableEntity):
    async def run_impl(self):
        yield self.status("RUNNING", "before child")
        child = self.append_or_retrieve_call(EntEcho, "echo", {"text": "hi"})
        value = yield self.delegate(child)
        yield self.status("RUNNING", "after child")
        yield Return({"child": value})


class EntManualParent(RunnableEntity):
    async def run_impl(self):
        run = self.append_or_retrieve_call(EntEcho, "echo", {"text": "manual"}).start()
        async for env in run:
            yield env
        yield Return(run.result)


class EntCatchingParent(RunnableEntity):
    async def run_impl(self):
        child = self.append_or_retrieve_call(EntFlaky, "flaky")
        try:
            yield self.delegate(child)
        except ValueError as exc:
            yield Return(f"caught: {exc}")


class EntGate(RunnableEntity):
    gates: dict[str, asyncio.Event] = {}

    async def run_impl(self):
        CALLS[self.id] += 1
        yield self.status("RUNNING", "waiting at the gate")
        await self.gates[self.id].wait()
        yield Return("through")


class EntPlain(RunnableEntity):
    async def run_impl(self):  # a coroutine, not a generator: allowed
        return self.data["x"] + 1


class EntBadYield(RunnableEntity):
    async def run_impl(self):
        yield 42


class EntUnserialisable(RunnableEntity):
    async def run_impl(self):
        yield Return(object())


class EntTyped(RunnableEntity):
    @classmethod
    def output_from_json(cls, value):
        return tuple(value)

    async def run_impl(self):
        yield Return((1, 2))


async def drain(run) -> list[Envelope]:
    return [env async for env in run]


async def test_status_goes_pending_in_progress_completed(graph):
    e = graph.create(EntEcho, "e", {"text": "x"})
    assert e.status == "Pending"
    await e.run()
    assert SEEN_STATUS[e.id] == "InProgress"
    assert e.status == "Completed"
    rec = graph.get_node(e.id)
    assert rec.created_at <= rec.started_at <= rec.finished_at


async def test_stream_starts_with_started_and_ends_with_value_then_completed(graph):
    e = graph.create(EntEcho, "e", {"text": "x"})
    run = e.start()
    envs = await drain(run)
    shape = [(x.type, x.status, x.sub_type) for x in envs]
    assert shape == [
        ("STATUS", "STARTED", "ENTITY"),
        ("STATUS", "RUNNING", "ENTITY"),
        ("VALUE", None, "return"),
        ("STATUS", "COMPLETED", "ENTITY"),
    ]
    assert envs[2].value == run.result == {"echo": "x", "n": 1}
    assert {(x.entity_id, x.entity_type, x.entity_name) for x in envs} == {(e.id, "EntEcho", "e")}
    assert envs[1].message == "echoing"


async def test_output_is_persisted_to_node_io(graph):
    e = graph.create(EntEcho, "e", {"text": "io"})
    result = await e.run()
    assert graph.io(e.id) == {"input": {"text": "io"}, "output": result}


async def test_completed_entity_is_not_run_again_and_yields_one_value(graph):
    e = graph.create(EntEcho, "e", {"text": "once"})
    first = await e.run()
    log_before = graph.progress(e.id)
    record_before = graph.get_node(e.id)
    again = graph.entity(e.id).start()
    envs = await drain(again)
    assert CALLS[e.id] == 1
    assert again.result == first
    assert [(x.type, x.sub_type, x.value) for x in envs] == [("VALUE", "return", first)]
    assert graph.progress(e.id) == log_before  # nothing appended
    assert graph.get_node(e.id) == record_before  # status and timestamps untouched


async def test_run_returns_what_draining_start_gives(graph):
    a = graph.create(EntEcho, "a", {"text": "same"})
    b = graph.create(EntEcho, "b", {"text": "same"})
    run = a.start()
    await drain(run)
    assert await b.run() == run.result


async def test_failure_records_error_emits_error_then_failed_and_raises(graph):
    e = graph.create(EntFlaky, "f")
    run = e.start()
    seen = []
    with pytest.raises(ValueError, match="no luck"):
        async for env in run:
            seen.append(env)
    assert [(x.type, x.status) for x in seen[-2:]] == [("ERROR", None), ("STATUS", "FAILED")]
    err = seen[-2]
    assert (err.entity_id, err.entity_type, err.entity_name) == (e.id, "EntFlaky", "f")
    assert err.error["type"] == "ValueError" and err.error["message"] == "no luck the first time"
    rec = graph.get_node(e.id)
    assert rec.status == "Failed"
    assert rec.error["type"] == "ValueError"
    assert "no luck the first time" in rec.error["traceback"]
    with pytest.raises(ValueError):
        _ = run.result


async def test_failed_entity_is_reset_and_run_again(graph):
    e = graph.create(EntFlaky, "f")
    with pytest.raises(ValueError):
        await e.run()
    assert await e.run() == "second time lucky"
    assert RESETS[e.id] == 1 and CALLS[e.id] == 2
    rec = graph.get_node(e.id)
    assert rec.status == "Completed" and rec.error is None


async def test_stale_in_progress_entity_is_reset_and_run_again(graph):
    e = graph.create(EntEcho, "e", {"text": "stale"})
    graph._set_status(e.id, "InProgress")  # as a process that died mid-run leaves it
    assert (await e.run())["n"] == 1
    assert RESETS[e.id] == 1 and CALLS[e.id] == 1
    assert e.status == "Completed"


async def test_second_start_of_a_live_run_attaches_instead_of_running_twice(graph):
    e = graph.create(EntGate, "gate")
    EntGate.gates[e.id] = asyncio.Event()
    first = e.start()
    it = aiter(first)
    started = await anext(it)
    assert started.status == "STARTED"
    assert (await anext(it)).status == "RUNNING"
    second = graph.entity(e.id).start()
    second_task = asyncio.ensure_future(drain(second))
    await asyncio.sleep(0)
    EntGate.gates[e.id].set()
    rest = [env async for env in it]
    attached = await second_task
    assert CALLS[e.id] == 1
    assert first.result == second.result == "through"
    assert [x.status for x in attached] == [x.status for x in rest] == [None, "COMPLETED"]


async def test_abandoned_run_logs_cancelled_and_is_rerun_next_time(graph):
    e = graph.create(EntGate, "gate")
    EntGate.gates[e.id] = asyncio.Event()
    run = e.start()
    async for env in run:
        if env.status == "RUNNING":
            break
    await run.aclose()
    assert e.status == "InProgress"
    assert graph.progress(e.id)[-1].status == "CANCELLED"
    assert isinstance(run.error, EntityRunInterrupted)
    EntGate.gates[e.id].set()
    assert await e.run() == "through"
    assert CALLS[e.id] == 2


async def test_cancelled_task_running_an_entity_leaves_it_resumable(graph):
    e = graph.create(EntGate, "gate")
    EntGate.gates[e.id] = asyncio.Event()
    task = asyncio.ensure_future(e.run())
    while CALLS[e.id] == 0:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert graph.progress(e.id)[-1].status == "CANCELLED"
    EntGate.gates[e.id].set()
    assert await e.run() == "through"


async def test_status_envelope_carries_entity_context(graph):
    e = graph.create(EntEcho, "ctx")
    env = e.status("RUNNING", "x")
    assert (env.type, env.status, env.message, env.sub_type) == ("STATUS", "RUNNING", "x", "ENTITY")
    assert (env.entity_id, env.entity_type, env.entity_name) == (e.id, "EntEcho", "ctx")
    with pytest.raises(ValueError, match="STARTED, RUNNING, COMPLETED, FAILED, CANCELLED"):
        e.status("DONE", "x")
    prog = e.progress({"stage": "images", "total": 2, "items": ["a", "b"]})
    assert (prog.type, prog.sub_type, prog.value["total"]) == ("VALUE", "progress", 2)


async def test_delegation_forwards_child_stream_contiguously_and_returns_value(graph):
    p = graph.create(EntParent, "p")
    run = p.start()
    envs = await drain(run)
    names = [(x.entity_name, x.type, x.status) for x in envs]
    assert names == [
        ("p", "STATUS", "STARTED"),
        ("p", "STATUS", "RUNNING"),
        ("echo", "STATUS", "STARTED"),
        ("echo", "STATUS", "RUNNING"),
        ("echo", "VALUE", None),
        ("echo", "STATUS", "COMPLETED"),
        ("p", "STATUS", "RUNNING"),
        ("p", "VALUE", None),
        ("p", "STATUS", "COMPLETED"),
    ]
    assert run.result == {"child": {"echo": "hi", "n": 1}}


async def test_manual_delegation_idiom_gives_the_child_result(graph):
    p = graph.create(EntManualParent, "m")
    assert await p.run() == {"echo": "manual", "n": 1}


async def test_child_failure_is_raised_inside_the_parent_which_may_catch_it(graph):
    p = graph.create(EntCatchingParent, "c")
    assert await p.run() == "caught: no luck the first time"
    (child,) = graph.children(p.id)
    assert child.status == "Failed"


async def test_child_progress_percolates_into_the_parent_log(graph):
    p = graph.create(EntParent, "p")
    streamed = await drain(p.start())
    parent_log = graph.progress(p.id)
    assert [(x.entity_name, x.type, x.status) for x in parent_log] == [
        (x.entity_name, x.type, x.status) for x in streamed
    ]
    (child,) = graph.children(p.id)
    assert {x.entity_name for x in graph.progress(child.id)} == {"echo"}


async def test_update_entity_data_merges_shallowly(graph):
    e = graph.create(EntEcho, "d", {"a": 1, "nested": {"x": 1, "y": 2}})
    await e.update_entity_data(b=2, nested={"x": 9})
    assert e.data == {"a": 1, "b": 2, "nested": {"x": 9}}
    assert graph.get_node(e.id).data == e.data


async def test_update_entity_data_logs_storage_errors_instead_of_raising(tmp_path, caplog):
    g = EntityGraph.open(tmp_path / "g.sqlite")
    e = g.create(EntEcho, "d", {"a": 1})
    g.close()  # every later write fails for real
    with caplog.at_level(logging.WARNING, logger="storylab.entities"):
        await e.update_entity_data(b=2)
    assert "failed to update entity data" in caplog.text
    with EntityGraph.open(tmp_path / "g.sqlite") as again:
        assert again.get_node(e.id).data == {"a": 1}


async def test_update_data_replaces_the_whole_object(graph):
    e = graph.create(EntEcho, "d", {"a": 1, "b": 2})
    await e.update_data({"x": 1})
    assert e.data == {"x": 1}
    with pytest.raises(TypeError, match="must be a dict"):
        await e.update_data(["x"])
    assert e.data == {"x": 1}


async def test_plain_coroutine_run_impl_is_allowed(graph):
    e = graph.create(EntPlain, "p", {"x": 41})
    envs = await drain(e.start())
    assert [x.status for x in envs] == ["STARTED", None, "COMPLETED"]
    assert envs[1].value == 42


async def test_yielding_something_that_is_not_an_envelope_fails_clearly(graph):
    e = graph.create(EntBadYield, "bad")
    with pytest.raises(TypeError, match="yielded 42"):
        await e.run()
    assert e.status == "Failed"


async def test_output_that_is_not_json_fails_the_entity(graph):
    e = graph.create(EntUnserialisable, "u")
    with pytest.raises(TypeError, match="output of EntUnserialisable 'u' must be JSON"):
        await e.run()
    assert graph.get_node(e.id).status == "Failed"


async def test_output_from_json_rebuilds_a_stored_result(graph):
    e = graph.create(EntTyped, "t")
    assert await e.run() == (1, 2)
    assert await graph.entity(e.id).run() == (1, 2)  # from the store, through the hook


async def test_result_before_the_end_is_an_error(graph):
    run = graph.create(EntEcho, "r").start()
    with pytest.raises(RuntimeError, match="has not finished"):
        _ = run.result


async def test_update_data_replacement_survives_a_reopen(tmp_path):
    with EntityGraph.open(tmp_path / "g.sqlite") as g:
        e = g.create(EntEcho, "d", {"a": 1, "nested": {"k": 1}})
        await e.update_data({"x": 1})
    with EntityGraph.open(tmp_path / "g.sqlite") as g:
        assert g.get_node(e.id).data == {"x": 1}


async def test_update_data_path_sets_one_nested_key_and_keeps_the_rest(graph):
    e = graph.create(EntEcho, "d", {"a": 1, "story": {"title": "Owls", "pages": 3}})
    await e.update_data_path(["story", "title"], "Bats")
    assert e.data == {"a": 1, "story": {"title": "Bats", "pages": 3}}
    await e.update_data_path(("stage",), "images")
    await e.update_data_path(["meta", "sizes", "cover"], [512, 512])  # intermediates created
    assert e.data == {
        "a": 1,
        "story": {"title": "Bats", "pages": 3},
        "stage": "images",
        "meta": {"sizes": {"cover": [512, 512]}},
    }
    assert graph.get_node(e.id).data == e.data


@pytest.mark.parametrize(
    ("path", "value", "error", "match"),
    [
        (["a", "b"], 1, TypeError, r"cannot set 'a/b': 'a' holds a int, not a dict"),
        ([], 1, ValueError, r"path must name at least one key"),
        ("story.title", 1, TypeError, r"path must be a list of keys"),
        (["story", 3], 1, TypeError, r"path\[1\] must be a non-empty string; got 3"),
        (["story", "title"], object(), TypeError, r"value at 'story/title' must be JSON"),
    ],
)
async def test_update_data_path_refuses_bad_input_and_changes_nothing(
    graph, path, value, error, match
):
    e = graph.create(EntEcho, "d", {"a": 1, "story": {"title": "Owls"}})
    with pytest.raises(error, match=match):
        await e.update_data_path(path, value)
    assert graph.get_node(e.id).data == {"a": 1, "story": {"title": "Owls"}}


async def test_reopen_reruns_a_finished_parent_and_only_its_unfinished_children(tmp_path):
    from storylab.entities import EntityGraph, EntityGraphError, Return, RunnableEntity

    calls: dict[str, int] = {}
    failing = {"b"}

    class Leaf(RunnableEntity):
        async def run_impl(self):
            calls[self.name] = calls.get(self.name, 0) + 1
            if self.name in failing:
                raise RuntimeError(f"{self.name} broke")
            yield Return(self.name.upper())

    class Parent(RunnableEntity):
        async def run_impl(self):
            got = []
            for name in ("a", "b", "c"):
                try:
                    got.append((yield self.delegate(self.append_or_retrieve_call(Leaf, name))))
                except RuntimeError:
                    got.append(None)
            yield Return(got)

    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        parent = graph.create(Parent, "p")
        assert await parent.run() == ["A", None, "C"]
        assert graph.get_node(parent.id).status == "Completed"
        assert await parent.run() == ["A", None, "C"]  # completed: nothing runs
        assert calls == {"a": 1, "b": 1, "c": 1}

        failing.clear()
        record = graph.reopen(parent.id)
        assert record.status == "Pending" and record.output is None
        assert await parent.run() == ["A", "B", "C"]
        assert calls == {"a": 1, "b": 2, "c": 1}  # only the failed child ran again
        assert [c.status for c in graph.children(parent.id)] == ["Completed"] * 3

        graph._set_status(parent.id, "InProgress")
        with pytest.raises(
            EntityGraphError, match="cannot reopen Parent \\(p\\): it is InProgress"
        ):
            graph.reopen(parent.id)


async def test_a_cancelled_error_from_inside_run_impl_is_a_failure(tmp_path):
    import asyncio

    from storylab.entities import EntityGraph, RunnableEntity

    class Leaky(RunnableEntity):
        async def run_impl(self):
            future = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(future.cancel)  # a library's own future
            await future
            yield  # pragma: no cover

    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        entity = graph.create(Leaky, "leaky")
        with pytest.raises(asyncio.CancelledError):
            await entity.run()
        node = graph.get_node(entity.id)
        assert node.status == "Failed" and node.error["type"] == "CancelledError"


async def test_cancelling_the_running_task_abandons_the_run_instead(tmp_path):
    import asyncio

    from storylab.entities import EntityGraph, Return, RunnableEntity

    class Slow(RunnableEntity):
        async def run_impl(self):
            await asyncio.sleep(10)
            yield Return(1)

    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        entity = graph.create(Slow, "slow")
        task = asyncio.ensure_future(entity.run())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert graph.get_node(entity.id).status == "InProgress"  # stale, resumable
