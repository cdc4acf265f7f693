"""The exercises' solutions, kept out of the notebooks so that no run shows them.

A notebook's solution cell is a collapsed Markdown cell (never executed, by
Run All or papermill) that names a key here; ``show_solution("03-1")`` prints
the code and, in Jupyter, puts it into a new cell below for the learner to
run. The tests run every solution against its checker, and every checker
against a wrong answer.
"""

from __future__ import annotations

import textwrap

__all__ = ["EXPLAINED", "SOLUTIONS", "show_solution", "solution_code"]

SOLUTIONS: dict[str, str] = {
    "00-1": """
        # An async generator may not return a value (Python says SyntaxError), so the
        # result travels as one more yielded item, wrapped in Return: the last one.
        async def count_pictures(pictures):
            for picture in pictures:
                yield f"drawing {picture}"
            yield Return(len(pictures))


        check_return_form(count_pictures)
    """,
    "01-1": """
        # The lane whose bar is longest: the largest end - start (not the last to end).
        longest = max(lanes, key=lambda lane: lane.run[1] - lane.run[0])
        solution = (longest.label, longest.run[1] - longest.run[0])
        check_longest_picture(run.trace, solution)
    """,
    "02-1": """
        import hashlib


        def picture_name(prompt):
            # A digest of the text: the same in every process (hash() is not), short,
            # and different for prompts that only differ near the end.
            digest = hashlib.sha256(prompt["prompt"].encode()).hexdigest()
            return f"image-{digest[:16]}"


        check_prompt_names(picture_name)
    """,
    "02-2": """
        # Two slots: fox 0-12 and owl 0-6; the whale takes the owl's slot (6-15), the snail
        # the fox's (12-16), the moth the whale's (15-22).
        predicted = 22


        class LimitedSketchbook(RunnableEntity):
            async def run_impl(self):
                # A lazy source: each pull creates (or finds) one child, only once a unit is held.
                tasks = self.parallel_calls(Sketch, sketch_items(self.data["subjects"]))
                two = CapacitySource(2, name="two at a time")
                runner = HierarchicalTaskPoolRunner("limited", SourceFromIterable(tasks), two)
                finished = []
                async with runner.run_tasks() as results:
                    async for envelope in results:
                        if envelope.type is TaskEventType.FINAL:
                            finished.append(envelope.value)  # in the order they finish
                yield Return(finished)


        await check_limited_sketchbook(LimitedSketchbook, SUBJECTS, time_scale=time_scale,
                                       predicted=predicted)
    """,
    "03-1": """
        async def draw_picture(story, work):
            await story.acquire()  # one unit, from the story and the global source at once
            try:
                return await work()  # a failure still comes out, after the finally block
            finally:
                story.release()  # back at both levels, whether work() returned or raised


        # (async with story: return await work() does the same in one line)
        await check_draw_picture(draw_picture)
    """,
    "03-2": """
        # A takes 2 and B 1, so 3 of the 5 global units are out: the global level has 2 left
        # for C, one short of C's own limit of 3.
        predicted_c = 2


        def build_tree(global_limit, story_limits):
            global_source = CapacitySource(global_limit, name="global")
            # parent=global_source: each unit a story takes is taken from the global
            # source too, in the same step, and given back to both.
            stories = {name: CapacitySource(limit, parent=global_source, name=f"story {name}")
                       for name, limit in story_limits.items()}
            return global_source, stories


        check_capacity_tree(build_tree, predicted_c=predicted_c)
    """,
    "04-1": """
        def state_of(status, lease, now, alive):
            if status is None:
                return "not stored"
            if status != "InProgress":
                return status  # Completed (or Failed): what the graph stored
            # Running only while the holder exists and keeps its lease from running out.
            if lease is not None and alive(lease.pid) and lease.expires_at > now:
                return "running"
            return "stale"


        check_state_of(state_of, before, crash_leases)
    """,
    "05-1": """
        async def finish_story(graph, models, time_scale):
            topic, options = "a fox who counts the stars", {"image_quality": "low"}
            settings = simulated_settings(time_scale)
            used = 0
            for model in models:
                used += 1
                # The same request each time; from the second on, reopen a story that
                # still misses pictures, so that only those are drawn again.
                story = create_story(graph, topic, options, retry_failed=used > 1)
                with use_settings(settings, images=model):
                    result = await story.run()
                if result["stage"] == "completed":  # nothing missing: stop asking
                    break
            return used


        await check_finish_story(finish_story)
    """,
    "05-2": """
        class Flaky(RunnableEntity):
            async def run_impl(self):
                yield self.status("RUNNING", f"working on {self.data['value']}")
                if self.data["fail"]:
                    raise RuntimeError(f"value {self.data['value']} was refused on purpose")
                yield Return(self.data["value"])


        def why(graph, parent_id):
            # A failed child keeps its exception in its error record: type, message, traceback.
            failed = [c for c in graph.children(parent_id) if c.status == "Failed"]
            return {c.name: c.error["message"] for c in failed}


        await check_failing_entity(Flaky, why)
    """,
    "05-3": """
        class TooManyFailures(RuntimeError):
            pass


        async def collect(runner, max_errors):
            finished, failed = [], []
            async with runner.run_tasks() as results:
                async for envelope in results:
                    if envelope.type is TaskEventType.FINAL:
                        finished.append(envelope.value)
                    elif envelope.type is TaskEventType.ERROR:
                        failed.append(envelope.error)
                        if len(failed) > max_errors:
                            # Raising here leaves the `async with`, which closes the run:
                            # tasks still running are cancelled and give their units back.
                            raise TooManyFailures(f"{len(failed)} tasks failed, "
                                                  f"{max_errors} allowed")
            return finished, failed


        await check_give_up(collect)
    """,
    "06-1": """
        def split(global_limit, story_limit, stories):
            top = CapacitySource(global_limit, name="global")
            held = []
            for n in range(stories):
                story = CapacitySource(story_limit, parent=top, name=f"story {n}")
                taken = 0
                while story.try_acquire():  # False once the story or the global level is full
                    taken += 1
                held.append(taken)
            return held


        def even_limit(global_limit, stories):
            # Every limit from 1 to the global one, tried on a real tree: keep the largest
            # whose split is even. With more stories than units none is: 0.
            return max((limit for limit in range(1, global_limit + 1)
                        if len(set(split(global_limit, limit, stories))) == 1), default=0)


        check_split_and_even(split, even_limit)
    """,
    "06-3": """
        import asyncio

        gate = asyncio.Semaphore(4)  # one place per request the server serves at once


        async def ask(client, url, n):
            body = {"prompt": f"a whale singing to the moon, picture {n}", "quality": "low"}
            async with gate:  # wait here, in the client, instead of at the server's door
                response = await client.post(f"{url}/v1/images/generations", json=body)
            return response.status_code


        await check_polite_burst(ask)
    """,
    "07-3": """
        import math


        def lonely_round(G, M, p, g):
            # At the start each story, in turn, takes up to min(p, M) units: q stories
            # start in full, and r units are left for the next one.
            q, r = divmod(g, min(p, M))
            if q >= G:
                return False  # every story starts all it can: nobody is late
            # The worst-off story: the one given the remainder, or one given nothing.
            started = r if q + (r > 0) >= G else 0
            rounds = 1 + math.ceil((M - started) / p)  # the first round, then the rest
            return rounds > max(math.ceil(M / p), math.ceil(G * M / g))


        await check_lonely_round(lonely_round)
    """,
    "07-1": """
        import math


        def bound(G, M, d, p, g):
            story_rounds = math.ceil(M / p)  # one story, p pictures at a time
            pool_rounds = math.ceil(G * M / g)  # all G*M pictures, g at a time
            return d * max(story_rounds, pool_rounds)


        check_bound_function(bound, result)
    """,
    "07-2": """
        from storylab.sweep import simulate_stories


        async def fifo_losses(story_limit, global_limits):
            # The same stories under each global limit, once per wake-up policy: keep the
            # limits where arrival order ends later than the fair rule.
            lost = []
            for g in global_limits:
                fair = await simulate_stories(5, 5, story_limit, g)
                fifo = await simulate_stories(5, 5, story_limit, g, policy="fifo")
                if fifo.makespan > fair.makespan:
                    lost.append(g)
            return lost


        print("at 2 per story FIFO loses at", await fifo_losses(2, range(2, 26)))
        await check_fifo_losses(fifo_losses)
    """,
    "08-1": """
        def fair_targets(wants, limit):
            flat = sorted(w for ws in wants for w in ws)  # every story's want, smallest first
            if sum(flat) <= limit:
                return [sum(ws) for ws in wants]  # room for all: each gets what it wants
            left, level = limit, 0.0
            for i, w in enumerate(flat):
                if w * (len(flat) - i) <= left:  # wants no more than an equal split of the rest
                    left -= w
                    continue
                level = left / (len(flat) - i)  # the rest, equally, to it and those after it
                break
            return [sum(min(w, level) for w in ws) for ws in wants]


        check_fair_targets(fair_targets)
    """,
    "08-2": """
        def lapse_window(T, renew=10, check=4):
            # Renewed every T/renew: the last renewal was at most T/renew before the death, so
            # the lease ends between T - T/renew and T after it. The scheduler looks every
            # T/check, so it may take that much more to notice.
            return T - T / renew, T + T / check


        check_lapse_window(lapse_window, lease_timeout=lease_timeout, kill_scale=kill_scale,
                           killed=killed)
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


# The explore exercises' answers: prose, since there is no code to run.
EXPLAINED: dict[str, str] = {
    "05-4": """
        The retry reopens the moth's story and asks the model that still refuses for the
        failing picture once more. It is refused again, so the retry stores
        completed_with_errors with one picture missing: the first line prints
        completed_with_errors twice. The calls show two for that picture (one per run) and
        one for each of the four others. On the retry's timeline the only bar is vermillion
        and ends in ✗ after about half a picture (5 to 6 model s: each attempt has its own
        length), since the model gives up half-way; the axis rescales
        to that short run, so the bar still fills the width, next to the four diamonds handed
        back by the graph. Yes, you can retry once more: the story is again
        completed_with_errors, so another retry_failed=True reopens it, and each retry costs
        one call per picture still missing. Nothing else is ever drawn again.
    """,
    "06-2": """
        Hardly: about 30 model s both ways at the default speed, because the global limit
        binds. Ten pictures four at a time need three rounds of about ten model seconds,
        whatever the per-story limit. What changes is the
        sharing: with 2 per story neither story panel ever passes 2, so once the pool is full
        the split printed above the chart reads 2 and 2. With 3 per story one story starts
        with 3 units and the other with 1. The exact makespan wobbles from run to run: these
        are real HTTP requests, and fast=True lengthens it.
    """,
    "07-4": """
        With 3 pictures per story the fair policy misses the bound in 2 of the 54 cells: 1 per
        story under 4 in total, and 2 per story under 8 (each one round, 10 model s, above).
        The two miss for different reasons. At 2 per story under 8 it is a lonely round, the
        rule of exercise 3: the first four stories take 2 units each, all 8, at once; the fifth
        gets units only when they come back, needs 1 + ceil(3 / 2) = 3 rounds, and the bound
        counts 2. At 1 per story under 4 the start is no problem: the fifth story starts late
        but needs 1 + 3 = 4 rounds, and so does the bound (15 pictures, 4 at a time). The lost
        round comes later, from how the fair rule breaks ties by waiting time as units come
        back: that is one of the misses exercise 3's checker says no rule about the start can
        see. At 2 per story under 6 the first three stories take every unit too, but there the
        pool needs three rounds anyway (15 pictures, 6 at a time), so the extra round is
        already part of the bound.
    """,
    "09-4": """
        Question 3 fails first: with LIMIT = 100 the runner starts far more items than the
        service's 4 at once. The kill cannot land half-way either: with no limit nearly every
        item starts at once and they finish together, so the graph jumps from few stored items
        to most of them between two looks of the judge.
    """,
    "09-5": """
        Reopen the batch (graph.reopen(batch_id), as notebook 5 did for a story) and run it
        again: the runner asks for all 100 children, finds the 96 Completed ones and hands
        back their results, and runs only the Failed ones again. Here they would be refused
        again, because the service refuses by the item's number (n % 25 == 24), not by
        chance: a retry helps only when the cause has gone away.
    """,
    "09-6": """
        The checker of piece 1 catches it: another process gives other names. Had it run, the
        resumed process would have found none of the first run's children by name: the batch
        would hold the first run's children plus 100 new ones, and every item finished before
        the kill (about 50) would have been done twice.
    """,
    "00-2": """
        Notebook 4's row asks "what survives a crash?". The box at the bottom of the diagram
        answers it: the entity graph, one SQLite file. The pipeline and every picture are
        stored there under names made from the request, each with its status and its output.
        A restarted run asks for the same names, finds the pictures already Completed and
        takes their stored results instead of paying for them again. A plain loop keeps its
        results in memory, and they die with the process.
    """,
    "03-3": """
        Still 3, 3, 3, 1, 0: the rule has not changed, three stories fill their own 3, one gets
        the last unit and one gets none. What you cannot say in advance is which letter holds
        1 and which holds 0. With no stagger, the arrival order is decided by whichever
        story's runner reaches its first request first, a few thousandths of a second apart,
        so it can differ from run to run. A freed unit still goes to the waiting story that
        holds the fewest once the unit is back, and that count includes the story that freed
        it. If D, holding 1, frees the first unit, D and E both hold none, and the one that has
        waited longer gets it: D itself can. In the knobs, FIFO gives the same split only
        because every story asks at the same instant, so all the first requests are queued
        before anyone's fourth; staggered, as in the table above, A's fourth request heads
        the queue and FIFO's split is 3, 0, 0, 0, 0. The makespan grows (40.0 instead of
        30.0 model s) because each time A's next request reaches the head of the queue while
        A's own limit is full, everyone behind it waits: head-of-line blocking.
        With a global limit of 12, A, B, C and D take their own 3 each, which is all 12 units,
        and E still holds none: 3, 3, 3, 3, 0.
    """,
    "04-2": """
        With KILL_AFTER = 3 the kill lands later: once a third picture has finished. With a
        per-story limit of 2, the fifth picture takes the unit that third one frees, and
        wait_for_the_moment also waits until the fifth picture's node is stored, a few
        milliseconds later (without that wait, a kill in those milliseconds would lose its
        start). The other picture still running has already run more than half a picture by
        then, so the kill follows at once. So three pictures are Completed, two are stale
        (the one drawn alongside the third to finish, nearly done, and the fifth, just
        begun), and none is "not stored". In the figure of both runs, run 1's panel is longer
        and holds three finished bars, and run 2 draws only the two pictures that were cut
        off. The state that goes missing is "not stored": nothing was still waiting to start
        when the process died.
    """,
    "01-2": """
        Less real time, yes. Every simulated wait lasts its model seconds times the time
        scale, and the watched run goes at watch_scale, four times time_scale: 0.08 wall s
        per model second instead of 0.2, so its minute of model time takes about 5 wall
        seconds instead of 12.

        The timeline changes a little, and always the same way: it gets longer. The
        simulated model waits the same number of model seconds for a picture at any speed (a
        picture's length comes from its prompt, not from the clock). But each picture also
        costs real work that is not simulated: drawing its PNG and storing it in the graph.
        The notebook measured it: the line "drawing added ... model s per picture", printed
        a little after the staircase, is that cost at 0.2 wall s per model second. It takes
        the same wall time at any speed, and the trace turns every real duration into model
        seconds by dividing it by the run's time scale, so at 0.08 the same cost is worth
        2.5 times as many model seconds: whatever that line printed, expect about 2.5 times
        it (more on a busy machine). So each picture gains about 1.5 times the printed value
        (2.5 times it, minus the 1 time it already had), and five pictures in a row gain
        5 x 1.5 = 7.5 times it: a couple of model seconds when it printed a few tenths.
        The faster the clock runs, the larger the share of the machine's own time in the
        chart: quick runs show that things work, slower ones give numbers to read.
    """,
}


def solution_code(key: str) -> str:
    """The solution's source for exercise ``key`` (``"03-1"``: notebook 3, exercise 1)."""
    if key not in SOLUTIONS:
        known = ", ".join(sorted({*SOLUTIONS, *EXPLAINED}))
        raise ValueError(f"no solution {key!r}; known: {known}")
    return textwrap.dedent(SOLUTIONS[key]).strip() + "\n"


def show_solution(key: str, *, new_cell: bool = True) -> None:
    """Print the solution of exercise ``key``; in Jupyter also put it into a new cell
    below (``new_cell``), ready to read, change and run. An explore exercise's
    answer (:data:`EXPLAINED`) is prose: it is printed, and no cell is made."""
    if key in EXPLAINED:  # an explore exercise: its answer is prose, not code
        print(textwrap.dedent(EXPLAINED[key]).strip())
        return
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
