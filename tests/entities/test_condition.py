"""condition(label, key, branches): one branch runs, its children are keyed
under ``label/key``, and a re-run of the same branch finds them again."""

from __future__ import annotations

import collections

import pytest

from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceFromIterable
from storylab.entities import DuplicateNameError, Return, RunnableEntity, UnknownBranchError
from storylab.entities.reading import format_tree

CALLS: collections.Counter = collections.Counter()


class CondWriter(RunnableEntity):
    async def run_impl(self):
        CALLS[self.id] += 1
        yield self.status("RUNNING", "writing")
        yield Return(f"story about {self.data['topic']}")


class CondGate(RunnableEntity):
    """The tutorial's safety gate: a writer child on the safe path only."""

    async def run_impl(self):
        CALLS[self.id] += 1
        yield self.status("RUNNING", "checking")
        key = "safe" if self.data["safe"] else "rejected"
        story = yield self.condition(
            "safety-gate", key, {"safe": self.write, "rejected": self.refuse}
        )
        if self.data.get("fail_after_gate") and CALLS[self.id] == 1:
            raise RuntimeError("crashed after the gate")
        yield Return({"story": story})

    async def write(self):
        CALLS["safe-branch"] += 1
        yield self.status("RUNNING", "in the safe branch")
        writer = self.append_or_retrieve_call(CondWriter, "story-writer", {"topic": "owls"})
        text = yield self.delegate(writer)
        yield Return(text.upper())

    async def refuse(self):
        CALLS["rejected-branch"] += 1
        yield Return(None)


class CondTwoPaths(RunnableEntity):
    """The same child name outside and inside two branches."""

    async def run_impl(self):
        plain = self.append_or_retrieve_call(CondWriter, "story-writer", {"topic": "plain"})
        a = yield self.condition("g", "a", {"a": self.make, "b": self.make})
        b = yield self.condition("g", "b", {"a": self.make, "b": self.make})
        after = self.append_or_retrieve_call(CondWriter, "after", {"topic": "after"})
        yield Return([plain.call_path, a, b, after.call_path])

    async def make(self):
        child = self.append_or_retrieve_call(CondWriter, "story-writer", {"topic": "x"})
        yield Return(child.call_path)


class CondNested(RunnableEntity):
    async def run_impl(self):
        value = yield self.condition("outer", "x", {"x": self.outer})
        yield Return(value)

    async def outer(self):
        value = yield self.condition("inner", "y", {"y": self.inner})
        yield Return(value)

    async def inner(self):
        yield Return(self.append_call(CondWriter, "deep", {"topic": "deep"}).call_path)


class CondFailingBranch(RunnableEntity):
    async def run_impl(self):
        try:
            yield self.condition("gate", "bad", {"bad": self.bad})
        except ValueError as exc:
            caught = str(exc)
        child = self.append_call(CondWriter, "after", {"topic": "t"})
        yield Return([caught, child.call_path])

    async def bad(self):
        self.append_call(CondWriter, "inside", {"topic": "t"})
        yield self.status("RUNNING", "about to fail")
        raise ValueError("branch broke")


class CondPlainBranch(RunnableEntity):
    async def run_impl(self):
        value = yield self.condition("g", "k", {"k": self.plain})
        yield Return(value)

    async def plain(self):  # a coroutine, not a generator: allowed
        return self.append_call(CondWriter, "c", {"topic": "t"}).call_path


class CondParallel(RunnableEntity):
    async def run_impl(self):
        yield Return((yield self.condition("fan", "out", {"out": self.fan_out})))

    async def fan_out(self):
        items = [{"name": f"image-{i}", "data": {"topic": str(i)}} for i in range(4)]
        runner = HierarchicalTaskPoolRunner(
            "t", SourceFromIterable(self.parallel_calls(CondWriter, items)), CapacitySource(2)
        )
        done = [env.value async for env in runner.run_tasks() if env.type == "FINAL"]
        yield Return(sorted(done))


class CondBadKey(RunnableEntity):
    async def run_impl(self):
        yield Return((yield self.condition("safety-gate", "maybe", {"safe": self.run_impl})))


async def test_only_the_selected_branch_runs_and_its_value_comes_back(graph):
    safe = graph.create(CondGate, "safe-story", {"safe": True})
    assert await safe.run() == {"story": "STORY ABOUT OWLS"}
    assert (CALLS["safe-branch"], CALLS["rejected-branch"]) == (1, 0)
    rejected = graph.create(CondGate, "rejected-story", {"safe": False})
    assert await rejected.run() == {"story": None}
    assert (CALLS["safe-branch"], CALLS["rejected-branch"]) == (1, 1)
    assert graph.children(rejected.id) == []  # the safe branch never ran for it


async def test_a_child_made_in_a_branch_is_keyed_by_its_call_path_and_keeps_its_name(graph):
    p = graph.create(CondGate, "story", {"safe": True})
    await p.run()
    (writer,) = graph.children(p.id)
    assert writer.name == "story-writer"
    assert writer.call_path == "safety-gate/safe/story-writer"
    assert graph.entity(writer.id).call_path == "safety-gate/safe/story-writer"
    assert graph.get_node(writer.id).to_json()["call_path"] == "safety-gate/safe/story-writer"
    assert graph.get_node(p.id).call_path is None  # a root has no call path
    tree = format_tree(graph, p.id)
    assert "CondWriter (story-writer)" in tree and "safety-gate" not in tree


async def test_the_branch_stream_is_forwarded_in_order_and_logged(graph):
    p = graph.create(CondGate, "story", {"safe": True})
    envs = [env async for env in p.start()]
    shape = [(e.entity_name, e.type, e.status, e.message) for e in envs]
    assert shape == [
        ("story", "STATUS", "STARTED", None),
        ("story", "STATUS", "RUNNING", "checking"),
        ("story", "STATUS", "RUNNING", "in the safe branch"),
        ("story-writer", "STATUS", "STARTED", None),
        ("story-writer", "STATUS", "RUNNING", "writing"),
        ("story-writer", "VALUE", None, None),
        ("story-writer", "STATUS", "COMPLETED", None),
        ("story", "VALUE", None, None),
        ("story", "STATUS", "COMPLETED", None),
    ]
    logged = [(e.entity_name, e.type, e.status, e.message) for e in graph.progress(p.id)]
    assert logged == shape


async def test_the_same_name_in_different_frames_is_a_different_child(graph):
    p = graph.create(CondTwoPaths, "p")
    paths = await p.run()
    assert paths == ["story-writer", "g/a/story-writer", "g/b/story-writer", "after"]
    kids = graph.children(p.id)
    assert [k.name for k in kids] == ["story-writer", "story-writer", "story-writer", "after"]
    assert len({k.id for k in kids}) == 4


async def test_uniqueness_holds_per_call_path(graph):
    p = graph.create(CondTwoPaths, "p")
    await p.run()
    entity = graph.entity(p.id)
    entity._frames = ("g", "a")  # as inside branch "a" of condition "g"
    with pytest.raises(DuplicateNameError, match="at call path 'g/a/story-writer'"):
        entity.append_call(CondWriter, "story-writer")
    again = entity.append_or_retrieve_call(CondWriter, "story-writer", {"topic": "new"})
    assert again.data == {"topic": "x"}  # the existing branch child, data kept
    assert len(graph.children(p.id)) == 4


async def test_nested_conditions_stack_their_frames(graph):
    p = graph.create(CondNested, "p")
    assert await p.run() == "outer/x/inner/y/deep"
    assert [k.name for k in graph.children(p.id)] == ["deep"]


async def test_a_failing_branch_raises_at_the_yield_and_the_frame_is_left(graph):
    p = graph.create(CondFailingBranch, "p")
    assert await p.run() == ["branch broke", "after"]
    assert [(k.name, k.call_path) for k in graph.children(p.id)] == [
        ("inside", "gate/bad/inside"),
        ("after", "after"),
    ]


async def test_a_plain_coroutine_branch_is_allowed(graph):
    p = graph.create(CondPlainBranch, "p")
    assert await p.run() == "g/k/c"


async def test_parallel_calls_inside_a_branch_key_children_under_it(graph):
    p = graph.create(CondParallel, "p")
    assert await p.run() == [f"story about {i}" for i in range(4)]
    kids = graph.children(p.id)
    assert [k.call_path for k in kids] == [f"fan/out/image-{i}" for i in range(4)]
    assert [k.name for k in kids] == [f"image-{i}" for i in range(4)]


async def test_an_unknown_key_names_the_label_the_key_and_the_allowed_keys(graph):
    p = graph.create(CondGate, "p", {"safe": True})
    with pytest.raises(UnknownBranchError) as info:
        p.condition("safety-gate", "maybe", {"safe": p.write, "rejected": p.refuse})
    assert str(info.value) == (
        "condition 'safety-gate' has no branch for key 'maybe'; allowed keys: 'safe', 'rejected'"
    )
    assert isinstance(info.value, LookupError)
    bad = graph.create(CondBadKey, "bad")
    with pytest.raises(UnknownBranchError, match="allowed keys: 'safe'"):
        await bad.run()
    assert graph.get_node(bad.id).status == "Failed"
    assert graph.get_node(bad.id).error["type"] == "UnknownBranchError"
    assert graph.children(bad.id) == []


@pytest.mark.parametrize(
    ("label", "key", "branches", "error", "match"),
    [
        ("", "k", {"k": print}, ValueError, "label must be a non-empty string"),
        ("a/b", "k", {"k": print}, ValueError, "without '/'"),
        ("g", "k", {}, TypeError, "branches must be a non-empty dict"),
        ("g", "k", {"k": "not callable"}, TypeError, "branch 'k' must be an async generator"),
        ("g", "k", {"k/x": print}, ValueError, "branch keys must be non-empty strings"),
        ("g", 1, {"k": print}, UnknownBranchError, "no branch for key 1; allowed keys: 'k'"),
    ],
)
def test_bad_condition_arguments_are_refused(graph, label, key, branches, error, match):
    p = graph.create(CondGate, "p", {"safe": True})
    with pytest.raises(error, match=match):
        p.condition(label, key, branches)


async def test_a_rerun_takes_the_same_branch_and_retrieves_the_same_child(graph):
    p = graph.create(CondGate, "story", {"safe": True, "fail_after_gate": True})
    with pytest.raises(RuntimeError, match="crashed after the gate"):
        await p.run()
    (writer,) = graph.children(p.id)
    before = graph.get_node(writer.id)
    assert before.status == "Completed"
    assert await graph.entity(p.id).run() == {"story": "STORY ABOUT OWLS"}
    (again,) = graph.children(p.id)
    assert again.id == writer.id
    assert graph.get_node(writer.id) == before  # not run again: output and times unchanged
    assert CALLS[writer.id] == 1 and CALLS[p.id] == 2


async def test_a_stale_parent_takes_the_same_branch_and_finds_its_child(graph):
    # As after a crash in the middle of the parent: its node is InProgress,
    # its branch child is Completed; the next start resets and re-runs it.
    p = graph.create(CondGate, "story", {"safe": True})
    await p.run()
    (writer,) = graph.children(p.id)
    before = graph.get_node(writer.id)
    graph._set_status(p.id, "InProgress")
    assert await graph.entity(p.id).run() == {"story": "STORY ABOUT OWLS"}
    assert [k.id for k in graph.children(p.id)] == [writer.id]
    assert graph.get_node(writer.id) == before
    assert CALLS[writer.id] == 1 and CALLS[p.id] == 2
