import asyncio

from storylab import CapacitySource, HierarchicalTaskPoolRunner, SourceBufferObj


async def test_runner_yields_results_in_completion_order():
    cap = CapacitySource(3)
    delays = [0.03, 0.01, 0.02]
    tasks = [lambda d=d: asyncio.sleep(d, result=d) for d in delays]
    runner = HierarchicalTaskPoolRunner("t", SourceBufferObj(tasks), cap)
    order = [env.task_id async for env in runner.run_tasks()]
    assert order == [2, 3, 1]
    assert cap.in_use == 0
