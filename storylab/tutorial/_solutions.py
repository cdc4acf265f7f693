"""The exercises' solutions, kept out of the notebooks so that no run shows them.

A notebook's solution cell is a collapsed Markdown cell (never executed, by
Run All or papermill) that names a key here; ``show_solution("03-1")`` prints
the code and, in Jupyter, puts it into a new cell below for the learner to
run. The tests run every solution against its checker, and every checker
against a wrong answer.
"""

from __future__ import annotations

import textwrap

__all__ = ["SOLUTIONS", "show_solution", "solution_code"]

SOLUTIONS: dict[str, str] = {
    "00-1": """
        # The table's row for parallelCalls: a method of the entity, in snake_case.
        solution = "parallel_calls"
        check_python_name("parallelCalls", solution)
    """,
    "01-1": """
        # The lane whose bar is longest: the largest end - start.
        solution = max(lanes, key=lambda lane: lane.run[1] - lane.run[0]).label
        check_longest_picture(run.trace, solution)
    """,
    "02-1": """
        # fox 0-12 and owl 0-6; the whale takes the owl's unit (6-15), the snail the
        # fox's (12-16), the moth the whale's (15-22).
        solution = 22
        check_makespan_with_limit(SUBJECTS.values(), 2, solution)
    """,
    "02-2": """
        def picture_name(prompt):
            # Only what the request itself holds: the same prompt, the same name.
            return f"image-{prompt['placeholder']}"


        check_stable_names(picture_name)
    """,
    "03-1": """
        # A, B, C and D take their own 3 each, which is all 12: E still holds none.
        solution = [3, 3, 3, 3, 0]
        check_first_split(solution, stories=5, story_limit=3, global_limit=12)
    """,
    "03-2": """
        def build_tree():
            global_source = CapacitySource(4, name="global")
            story_a = CapacitySource(3, global_source, name="story A")
            story_b = CapacitySource(3, global_source, name="story B")
            return global_source, story_a, story_b


        check_two_level_tree(build_tree)
    """,
    "04-1": """
        # Everything that was not Completed: stale ones are reset, missing ones created.
        solution = {p.name for p in another_crash if p.state != "Completed"}
        check_redrawn(another_crash, solution)
    """,
    "05-1": """
        # Only the two failed pictures are opened again; the three others come
        # back from the graph without a model call.
        solution = 2
        check_retry_calls(solution, pictures=5, failed=2)
    """,
    "05-2": """
        class Flaky(RunnableEntity):
            async def run_impl(self):
                yield self.status("RUNNING", f"working on {self.data['value']}")
                if self.data["fail"]:
                    raise RuntimeError(f"value {self.data['value']} was refused on purpose")
                yield Return(self.data["value"])


        await check_failing_entity(Flaky)
    """,
    "05-3": """
        async def collect(runner):
            finished, failed = [], []
            async with runner.run_tasks() as results:
                async for envelope in results:
                    if envelope.type is TaskEventType.FINAL:
                        finished.append(envelope.value)
                    elif envelope.type is TaskEventType.ERROR:
                        failed.append(envelope.error)  # keep it, and go on
            return finished, failed


        await check_error_branch(collect)
    """,
    "06-1": """
        # Two each: then neither story can hold more than half of the four units.
        solution = 4 // 2
        check_even_split(solution, global_limit=4, stories=2)
    """,
    "07-1": """
        import math

        # One story needs ceil(5/2) = 3 rounds, the pool ceil(25/6) = 5: the larger wins.
        solution = 10 * max(math.ceil(5 / 2), math.ceil(5 * 5 / 6))
        check_bound(solution, stories=5, images=5, story_limit=2, global_limit=6)
    """,
    "08-1": """
        # The stories together allow 3 x stories, the global limit global_limit: the smaller.
        solution = min(global_limit, 3 * stories)
        check_most_at_once(solution, stories=stories, story_limit=3, global_limit=global_limit)
    """,
    "09-1": """
        def item_name(n):
            # Made from the item alone: the same name in every run and every process.
            return f"item-{n:03d}"


        check_item_name(item_name)
    """,
    "09-2": """
        import asyncio


        class Item(RunnableEntity):
            async def run_impl(self):
                await asyncio.sleep(self.data["seconds"])  # the slow part of the work
                if self.data["fail"]:
                    raise RuntimeError(f"item {self.data['n']} was refused by the service")
                yield Return(self.data["n"] ** 2)


        await check_item(Item)
    """,
    "09-3": """
        async def run_items(batch, kind, items):
            source = SourceFromIterable(batch.parallel_calls(kind, items))
            runner = HierarchicalTaskPoolRunner("items", source, CapacitySource(LIMIT))
            done, failed = [], []
            async with runner.run_tasks() as results:
                async for envelope in results:
                    if envelope.type is TaskEventType.FINAL:
                        done.append(envelope.value)
                    elif envelope.type is TaskEventType.ERROR:
                        failed.append(envelope.error)  # keep it, and go on
            return done, failed


        await check_run_items(run_items)
    """,
}


def solution_code(key: str) -> str:
    """The solution's source for exercise ``key`` (``"03-1"``: notebook 3, exercise 1)."""
    if key not in SOLUTIONS:
        raise ValueError(f"no solution {key!r}; known: {', '.join(sorted(SOLUTIONS))}")
    return textwrap.dedent(SOLUTIONS[key]).strip() + "\n"


def show_solution(key: str, *, new_cell: bool = True) -> None:
    """Print the solution of exercise ``key``; in Jupyter also put it into a new cell
    below (``new_cell``), ready to read, change and run."""
    code = solution_code(key)
    print(code)
    if new_cell:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython ships with the notebooks
            return
        shell = get_ipython()
        if shell is not None and hasattr(shell, "set_next_input"):
            shell.set_next_input(code, replace=False)
