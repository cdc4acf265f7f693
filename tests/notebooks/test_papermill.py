"""Execute every tutorial notebook headless and check what a reader would see.

Each notebook runs with papermill (``fast=True``) in a scratch copy of the
notebooks folder, several at once in worker processes, and its executed copy
is kept in ``build/executed/`` (git-ignored) for inspection. The expectations
below are per notebook, so they can be tuned as the notebooks evolve.

Under pytest-xdist each worker runs only the notebooks of its own tests.
STORYLAB_NB_WORKERS sets the number of concurrent notebooks (default: the
machine's CPU count, at least 2).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbcheck
import pytest
from nbcheck import Expect

FAST = {"fast": True}

EXPECT: dict[str, Expect] = {
    # the map: a diagram (SVG), tables, no story
    "00_start_here": Expect(min_figures=0, min_bars=0, min_story_images=0),
    # one story, images one at a time: progress, timeline, story
    "01_sequential_generation": Expect(min_figures=1),
    # entities + runner under a per-story limit: timeline and the entity tree
    "02_entities_and_parallel_calls": Expect(min_figures=2),
    # two, then five stories: capacity chart, distribution, fair vs FIFO
    "03_two_levels_of_capacity": Expect(min_figures=2),
    # a run interrupted half-way, then resumed: the first bar stops short
    "04_crash_and_resume": Expect(min_figures=2, bad_bars="allowed", unfinished_bars_ok=True),
    # one image fails (a bar ends warning/danger), then a retry completes it
    "05_failures": Expect(min_figures=1, bad_bars="required"),
    # the local HTTP image server: 429s under unbounded parallelism, retries
    "06_http_backend": Expect(min_figures=1, bad_bars="allowed"),
    # sweep of the two limits: makespan and utilisation charts (no story is run)
    "07_research_sweep": Expect(min_figures=2, min_bars=0, min_story_images=0,
                                story_at_end=False),
    # 5 stories on 4 Dask worker processes, then a worker killed: charts, two bars
    # the killed story's page follows the kill it survived, before the PostgreSQL section
    "08_beyond_one_process": Expect(min_figures=3, min_bars=2, story_at_end=False),
    # the capstone: a script killed half-way and resumed, judged from its graph
    "09_capstone": Expect(min_figures=0, min_bars=0, min_story_images=0),
}

PARAMETERS: dict[str, dict] = {name: dict(FAST) for name in EXPECT}


def test_the_series_is_complete():
    present = sorted(p.stem for p in nbcheck.NOTEBOOKS.glob("*.ipynb"))
    assert present, f"no notebooks found in {nbcheck.NOTEBOOKS.name}/"
    assert sorted(EXPECT) == sorted(nbcheck.SERIES)
    assert present == sorted(EXPECT), (
        f"notebooks without expectations here: {sorted(set(present) - set(EXPECT))}; "
        f"expected but missing: {sorted(set(EXPECT) - set(present))}"
    )


def _server_for_this_worker() -> bool:
    """Whether this process's notebook 8 runs its PostgreSQL section."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return bool(os.environ.get("STORYLAB_TEST_PG")) and worker == "gw0"


@pytest.fixture(scope="module")
def series(request, tmp_path_factory):
    under_xdist = "PYTEST_XDIST_WORKER" in os.environ
    here = Path(__file__)
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.path == here and "name" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    if not under_xdist:  # stale copies from an earlier run would mislead
        for old in nbcheck.BUILD_EXECUTED.glob("*.ipynb"):
            old.unlink()
    workers = int(os.environ.get("STORYLAB_NB_WORKERS") or max(2, os.cpu_count() or 2))
    # Notebook 8's last section runs on the PostgreSQL server of the store tests, if any
    # (through the environment: a parameter would be written into the executed copy).
    patch = pytest.MonkeyPatch()
    # Under xdist every worker runs its own copy of the series, and notebook 8 empties its
    # schema as it starts: only one worker's copy gets the server, so that two copies never
    # empty each other's graph mid-run.
    patch.delenv("STORYLAB_PG_URL", raising=False)
    if _server_for_this_worker():
        patch.setenv("STORYLAB_PG_URL", os.environ["STORYLAB_TEST_PG"])
    runner = nbcheck.SeriesRunner(
        notebooks=nbcheck.NOTEBOOKS,
        scratch=tmp_path_factory.mktemp("executed"),
        parameters=PARAMETERS,
        workers=workers,
        keep_in=nbcheck.BUILD_EXECUTED,
        # Start them all at once; xdist already spreads tests over processes.
        queue=[] if under_xdist else list(dict.fromkeys(selected)),
    )
    yield runner
    runner.close()
    patch.undo()


def _run(series, name):
    if not (nbcheck.NOTEBOOKS / f"{name}.ipynb").exists():
        pytest.fail(f"notebooks/{name}.ipynb is missing", pytrace=False)
    return series.result(name)


@pytest.mark.parametrize("name", list(EXPECT))
def test_notebook_runs_without_error(series, name):
    run = _run(series, name)
    assert run.ok, run.describe()


@pytest.mark.parametrize("name", list(EXPECT))
def test_notebook_shows_figures_widgets_and_story(series, name):
    run = _run(series, name)
    if not run.output.exists():
        pytest.fail(f"papermill wrote no executed copy of {name}:\n{run.describe()}")
    problems = nbcheck.executed_problems(nbcheck.read(run.output), EXPECT[name])
    where = f"{name} (executed copy: build/executed/{name}.ipynb)"
    assert problems == [], where + ":\n" + "\n".join(problems)


# -- what each figure claims, from the numbers the executed notebook remembered --------
def _between(facts, key, low, high):
    value = facts[key]
    return [] if low <= value <= high else [f"{key} = {value:.1f}, expected {low}..{high}"]


def _claims_00(f):
    return []


def _claims_01(f):
    return (
        # the title's makespan and the bars share one time origin
        ([] if abs(f["title_makespan"] - f["bars_end"]) <= 0.5
         else [f"the title says {f['title_makespan']:.1f} model s but the bars end at "
               f"{f['bars_end']:.1f}"])
        + ([] if f["pictures"] == 5 else [f"{f['pictures']} pictures on the timeline, not 5"])
        + ([] if f["overlaps"] == 0 else ["sequential pictures overlap on the timeline"])
        + _between(f, "makespan", 50, 90)  # 4 x ~10 model s and one of ~20, plus drawing
        # the exercise's hard picture runs longest, yet another bar ends last
        + ([] if f["longest_picture"] == "image-{{IMAGE_2}}" != f["last_picture"]
           else [f"the longest bar is {f['longest_picture']} and {f['last_picture']} ends "
                 "last; the exercise needs the hard second picture longest, not last"])
        # the wait is the sum of the parts
        + ([] if 0.9 * f["makespan"] <= f["busy"] <= f["makespan"] + 0.5
           else [f"busy {f['busy']:.1f} is not the makespan {f['makespan']:.1f}"])
        # the prose: if the two totals differ, by a few tenths at most
        + ([] if f["makespan"] - f["busy"] <= 1.0
           else [f"the totals differ by {f['makespan'] - f['busy']:.1f} model s; the prose "
                 "says a few tenths at most"])
        # the prose: in this loop the first request is the first start
        + ([] if f["first_start"] <= 0.1
           else [f"the first bar starts at {f['first_start']:.1f} model s, not at the request"])
        # the simulated waits stored by each picture: about 10 each, 20 for the hard one,
        # and a bar is never shorter than its picture's simulated wait (drawing adds to it)
        + _between(f, "simulated_total", 50, 70)
        + ([] if f["least_drawing_extra"] >= -0.05
           else [f"a bar is {-f['least_drawing_extra']:.2f} model s shorter than its "
                 "simulated wait; the prose says drawing only adds"])
        # no capacity source in this run, and the chart's rows do not claim one
        + ([] if "capacity source" not in f["timeline_ylabel"]
           else [f"the timeline's rows say {f['timeline_ylabel']!r} in a run without a "
                 "capacity source"])
    )


def _claims_02(f):
    found = []
    if f["lazy_before_first_finish"] != 3:
        found.append(f"{f['lazy_before_first_finish']} children existed before the first sketch "
                     "finished with SourceFromIterable; the chart claims 3")
    if f["eager_before_first_finish"] != 5 or f["buffered_children"] != 5:
        found.append("SourceBufferObj did not create all 5 children up front")
    if f["lazy_final"] != 5:
        found.append("the lazy source did not create every child in the end")
    request, finish = f["request_order"], f["finish_order"]
    if sorted(request) != sorted(finish) or request == finish or finish[0] != "an owl":
        found.append(f"finish order {finish} should differ from request order {request}, "
                     "the 6-second owl first")
    found += _between(f, "toy_makespan", 15, 24)  # the longest chain, 16, not the sum, 38
    if not (f["retrieved_same"] and f["append_refused"] and f["one_child_children"] == 2):
        found.append("append_or_retrieve_call / append_call side by side went wrong")
    if (f["stable_after_resume"], f["random_after_resume"]) != (5, 10):
        found.append("stable names should keep 5 children on resume, random names make 10")
    found += _between(f, "sequential_makespan", 40, 80)
    found += _between(f, "parallel_makespan", 15, 35)
    if f["sequential_makespan"] < 1.7 * f["parallel_makespan"]:
        found.append("the parallel run is not clearly faster than the sequential one")
    if not f["replay_at_image_4"].endswith("A ●●●"):
        found.append(f"the replay opens at image-4's start showing {f['replay_at_image_4']!r}; "
                     "the prose says the story holds 3 of 3 again")
    if f["reused_new_requests"] != 0:
        found.append(f"asking for the finished story again made {f['reused_new_requests']} new "
                     "image requests; the prose says none")
    # the sum is in the visible In words line, not only in the figure's text/plain
    if not f["tree_summary"].rstrip(".").endswith(f["tree_words_sum"].rstrip(".")) \
            or " model s) = " not in f["tree_words_sum"]:
        found.append(f"the In words line under the tree carries {f['tree_words_sum']!r}, not "
                     f"the figure's sum ({f['tree_summary']!r})")
    # the line under the entity tree adds up, and its pictures' span is the replay's makespan
    if " model s) = " not in f["tree_summary"]:
        return [*found, f"the tree's line says no sum: {f['tree_summary']}"]
    whole, parts = f["tree_summary"].split(" model s) = ")
    terms = [float(part.split()[-1] if part[-1].isdigit() else part.split()[0])
             for part in parts.rstrip(".").split(" + ")]
    if abs(sum(terms) - float(whole.rsplit("(", 1)[1])) > 0.05:
        found.append(f"the tree's sum does not add up: {f['tree_summary']}")
    pictures = [float(p.split()[-1]) for p in parts.rstrip(".").split(" + ")
                if "side by side" in p]
    if len(pictures) != 1 or abs(pictures[0] - f["replay_makespan"]) > 0.3:
        found.append(f"the tree's pictures span {pictures}, the replay's run "
                     f"{f['replay_makespan']:.1f} model s")
    return found


def _claims_03(f):
    found = []
    if not f["demo_blocked"] or f["demo_after_release"] != [1, 1, 2]:
        found.append(f"the tree by hand: B blocked {f['demo_blocked']}, after one release "
                     f"A, B, global hold {f['demo_after_release']}, expected 1, 1, 2")
    if f["snapshot"] != [3, 3, 3, 1, 0] or f["snapshot_global"] != 10:
        found.append(f"snapshot A-E {f['snapshot']} (global {f['snapshot_global']}), "
                     "expected 3, 3, 3, 1, 0 of 10")
    if not f["t_all_asked"] < f["first_release"]:
        found.append("the snapshot is taken after a unit came back, not while all five wait")
    # each hand-off in words says why the fair rule chose its taker: the fewest held, or
    # a tie broken by the longest wait (the prose explains both)
    words = f["handoff_words"]
    takers = [m.group(1) for w in words if (m := re.search(r"went to story (\w)", w))]
    chosen = [m.group(1) for w in words
              if (m := re.search(r"fair rule: .*?(\w) (?:holds the fewest|has waited longest)", w))]
    if len(takers) != 2 or takers != chosen:
        found.append(f"the hand-offs in words do not say why each taker was chosen: {words}")
    if f["first_handoffs"][0][1] != 4:
        found.append(f"first freed unit (story index from, to) {f['first_handoffs'][0]}; "
                     "the prose says it goes to E, the story holding none")
    for name, peak in f["peaks"].items():
        if peak > f["limits"][name]:
            found.append(f"{name} peaked at {peak} above its limit {f['limits'][name]}")
    if f["peaks"]["global"] != 10:
        found.append("the global limit never bound")
    if f["replay_split"] != [3, 3, 3, 1, 0] or f["replay_global"] != 10:
        found.append(f"the replay at the split shows {f['replay_split']} of "
                     f"{f['replay_global']}, expected 3, 3, 3, 1, 0 of 10")
    if "E" not in f["replay_waits_global"]:
        found.append(f"at the split the replay has {f['replay_waits_global']} waiting on the "
                     "global limit; E must be among them")
    if not f["handoff_text"].endswith("→ E") or f["replay_after_handoff"][4] < 1:
        found.append(f"the replay's hand-off is {f['handoff_text']!r} and then shows "
                     f"{f['replay_after_handoff']}: the freed unit should be at E")
    if not f["t_fifo_all_asked"] < f["fifo_moves"]:
        found.append(f"the FIFO queue moved at {f['fifo_moves']:.1f}, before every story had "
                     f"asked ({f['t_fifo_all_asked']:.1f}): nothing was blocked")
    if f["fifo_snapshot"] != [3, 0, 0, 0, 0] or f["fifo_snapshot_global"] != 3:
        found.append(f"FIFO once every story asked: {f['fifo_snapshot']}; the chart claims "
                     "only A draws (head-of-line blocking)")
    # the knobs: the same split as the real run, three rounds of exactly 10 s; the real
    # run differs by what the simulation leaves out (spread lengths, staggered arrivals)
    if f["knob_makespan"] != 30.0 or f["knob_split"] != "split 3,3,3,1,0":
        found.append(f"knobs: {f['knob_split']}, makespan {f['knob_makespan']}; the prose "
                     "says split 3,3,3,1,0 in three rounds of 10 model s (30.0)")
    low, high = f["picture_lengths"]
    if not (high - low >= 1.0 and f["e_asked_after_a"] >= 1.0):
        found.append(f"the prose says real pictures vary ({low:.1f}..{high:.1f}) and E asks "
                     f"later than A ({f['e_asked_after_a']:.1f})")
    # cell 29: E asks a tenth or so off 4 x 1.5 = 6.0 model s after A (the stagger)
    if abs(f["e_asked_after_a"] - 6.0) > 0.5:
        found.append(f"E asked {f['e_asked_after_a']:.1f} model s after A; the prose says "
                     "about 4 x 1.5 = 6.0")
    # the FIFO block lasts until one of A's first pictures ends: about ten model s
    if not 7.5 <= f["fifo_moves"] <= 14.0:
        found.append(f"FIFO's queue first moved at {f['fifo_moves']:.1f} model s; the prose "
                     "says about ten after A's first pictures started")
    if f["two_peaks"]["global"] != 6:
        found.append(f"two stories peaked at {f['two_peaks']['global']} globally, not 3 + 3")
    # the words under the capacity chart are its panels' peaks (a hand-off blip is no peak)
    drawn = f["drawn_peaks"]
    if drawn["global"] != 10 or any(drawn[k] > f["limits"][k] for k in drawn):
        found.append(f"the capacity chart draws peaks {drawn}; limits {f['limits']}")
    if not f["two_makespan"] < f["fair_makespan"]:
        found.append(f"two stories took {f['two_makespan']:.1f} model s, five "
                     f"{f['fair_makespan']:.1f}: the runs are not at one speed")
    # the summary's fair-versus-FIFO numbers come from the simulation, not from this machine
    if f["sim_makespans"] != [30.0, 40.0]:
        found.append(f"simulated makespans fair, FIFO {f['sim_makespans']}; the summary says "
                     "30.0 and 40.0")
    if not (f["fifo_moves"] < f["fifo_second_move"] and f["fifo_stall"] < 10):
        found.append(f"the second FIFO stall is marked at {f['fifo_second_move']:.1f} with "
                     f"{f['fifo_stall']} in use; the prose says below 10")
    return found


def _claims_04(f):
    before = f["before"]
    found = []
    not_stored = [name for name, state in before.items() if state == "not stored"]
    if f["tree_missing"] != not_stored:
        found.append(f"tree shows {f['tree_missing']} as not stored, states say {not_stored}")
    if "stale" not in before.values():
        found.append(f"the kill was to land mid-picture, but no picture is stale: {before}")
    unfinished = [name for name, state in before.items() if state != "Completed"]
    if f["unfinished_before"] != unfinished or not unfinished:
        found.append("the unfinished pictures do not match the states before the resume")
    if sorted(f"image-{p}" for p in f["generated"]) != sorted(unfinished):
        found.append(f"the resumed run drew {f['generated']}, not exactly {unfinished}")
    if {n: s == "Completed" for n, s in before.items()} != f["kept_finish_time"]:
        found.append("a finished picture lost its finish time (or an unfinished one kept it)")
    if f["completed_after"] != 5 or f["text_calls"] != 0:
        found.append("the resumed run did not finish every picture without the text model")
    # the figure of both runs: the kill drawn where the notebook noted it, after every
    # picture that finished in run 1 and every start that was cut off, before the resume
    if len(f["kill_line_x"]) != 1 or abs(f["kill_line_x"][0] - f["kill_model_s"]) > 1e-6:
        found.append(f"the kill is drawn at {f['kill_line_x']}, noted at {f['kill_model_s']:.2f}")
    if not (f["kill_after_finished"] and f["kill_after_stale_started"]
            and f["resumed_after_kill"]):
        found.append("the stored times and the kill disagree: a finish or start after the kill")
    # the proof prints "redrawn == unfinished before: True"; the stale bars are not slivers:
    # the kill waits until a late picture has run about half of its 10 model s
    if f.get("redrawn_equals_unfinished") is not True:
        found.append("the printed comparison of redrawn and unfinished pictures is not True")
    if not f["stale_run_model_s"] or min(f["stale_run_model_s"]) < 2.5:
        found.append(f"a stale picture had run only {f['stale_run_model_s']} model s at the "
                     "kill; the prose says about half a picture")
    return found


def _claims_05(f):
    found = []
    if f["first_gaps"] != ["{{IMAGE_3}}"] or f["first_image_count"] != 4:
        found.append(f"first page gaps {f['first_gaps']}, expected only {{{{IMAGE_3}}}}")
    if f["final_gaps"] != [] or f["final_images"] != 5:
        found.append("the retried page still has a gap")
    if f["retry_calls"] != {"{{IMAGE_3}}": 1}:
        found.append(f"the retry called the model {f['retry_calls']}, not once for IMAGE_3")
    expected = {name: name != "image-{{IMAGE_3}}" for name in f["retry_kept"]}
    if f["retry_kept"] != expected:
        found.append("a child other than the failed picture was redone by the retry")
    if (f["all_failed_status"], f["all_failed_stage"], f["all_failed_redrawn"]) != (
            "Failed", "completed", 5):
        found.append(f"the all-failed story was stored {f['all_failed_status']} and asked again "
                     f"ended {f['all_failed_stage']} after {f['all_failed_redrawn']} drawings; "
                     "the prose says Failed, then all 5 drawn")
    if f.get("stop_arrived") != 2:
        found.append(f"stop_on_error let {f.get('stop_arrived')} results through, the toy's "
                     "timing gives 2 before picture 3 fails")
    if f.get("empty_final_missing") != [3]:
        found.append(f"the toy counted empty FINALs {f.get('empty_final_missing')}; the prose "
                     "says task 3")
    return found


def _claims_06(f):
    found = []
    if f["tree_refused"] or f["tree_retries"]:
        found.append(f"the capacity tree got {f['tree_refused']} 429s, {f['tree_retries']} retries")
    for name, peak in f["tree_peaks"].items():
        if peak > f["tree_limits"][name]:
            found.append(f"{name} peaked at {peak} above {f['tree_limits'][name]}")
    if f["tree_start_split"] != [3, 1]:
        found.append(f"the prose says one story holds 3 and the other 1; got "
                     f"{f['tree_start_split']}")
    if not f["impatient_refused"]:
        found.append("the unbounded client was never refused")
    # the table's witnesses (trace marks, graphs, server) must agree: 429s = retries + lost
    if f.get("table_adds_up") and not all(f["table_adds_up"].values()):
        found.append(f"429s are not retries plus lost pictures: {f['table_adds_up']}")
    return found


def _claims_07(f):
    found = []
    if f["line_panels"] != 6 or len(f["line_legend"]) != 3:
        found.append(f"plot_sweep_lines: {f['line_panels']} panels, legend {f['line_legend']}")
    if not f["fifo_off_bound"] > f["fair_off_bound"]:
        found.append("FIFO should miss the bound in more cells than fair")
    if f["cells"] != 54:
        found.append(f"the sweep has {f['cells']} cells, not 6 x 9")
    if f["fifo_widest_off"] != 0:
        found.append(f"at 5 and 6 per story FIFO misses the bound in {f['fifo_widest_off']} "
                     "cells; the prose says none")
    if [list(c) for c in f.get("fifo_both_off", [[4, 16]])] != [[4, 16]]:
        found.append(f"the fair policy misses {f['fifo_both_off']} with FIFO; the prose names "
                     "4 per story under 16 as the one such cell")
    if not all(-1 < gap < 50 for gap in f["real_gaps"]):
        found.append(f"real against simulated: {f['real_gaps']} %, the prose says slightly longer")
    if (f["knobs_makespan"], f["knobs_bound"]) != (30, 20):
        found.append(f"the knobs cell shows {f['knobs_makespan']} s against a bound of "
                     f"{f['knobs_bound']}, the prose says 30 against 20 (one round more)")
    if not str(f.get("knobs_last_round")).startswith("last round: 1 picture, 15 of 16"):
        found.append(f"the knobs mark {f.get('knobs_last_round')!r}; the prose says one picture "
                     "runs alone in the last round")
    if "lonely_wall" in f and not f["lonely_wall"] >= f["lonely_bound"] + 5:
        found.append(f"the real clock ran 4 / 16 in {f['lonely_wall']} model s, the prose says it "
                     f"loses the lonely round, a round above the bound of {f['lonely_bound']}")
    if not f.get("heatmap_jumps"):
        found.append("the prose says utilisation rises again along some rows; it never does")
    return found


def _claims_08(f):
    found = []
    limit = f["global_limit"]
    if not 3 < f["first_peak"] <= limit:
        found.append(f"global peak {f['first_peak']} over {f['processes']} processes: the "
                     f"chart claims several stories at once and never above {limit}")
    if f["processes"] < 2:
        found.append("the stories ran in one process: nothing shows the limit held across many")
    found += [f"{k} peaked at {v} above its 3" for k, v in f["story_peaks"].items() if v > 3]
    if not f["stored_draws"] or any(n != 1 for n in f["stored_draws"]):
        found.append(f"pictures stored before the kill were drawn {f['stored_draws']} times")
    if f["resumed_stages"] != ["completed"]:
        found.append(f"after the kill the stories ended {f['resumed_stages']}")
    if f["units_out"] != 0 or f["units_free"] != limit:
        found.append(f"after the run the scheduler still counts {f['units_out']} units held "
                     f"({f['units_free']} of {limit} free): the dead worker's share is still out")
    if f["survivor_peak"] > limit:
        found.append(f"the survivors peaked at {f['survivor_peak']} above {limit}")
    # The sentences under the kill chart are read from the run: check them against it.
    if "runners_words" in f:
        pids = {str(p) for p in f["runner_pids"]}
        odd = [r for r in f["runners_words"] if r.rpartition("@")[2] not in pids]
        if odd or len(f["runners_words"]) < f["processes"]:
            found.append(f"the printed runner names {f['runners_words']} do not match the "
                         f"worker pids {sorted(pids)}")
    if "back_at" in f:
        full = [t for t, v in f["series_after_kill"] if v >= limit]
        if f["back_at"] != (full[0] if full else None):
            found.append(f"the kill chart's line says the limit came back at {f['back_at']}, "
                         f"the series first reaches it at {full[:1]}")
        killed, lapse_from, lapse_by = f["lapse_window"]
        said = f["climbs_words"]
        where = (None if f["back_at"] is None else "before" if f["back_at"] < lapse_from
                 else "inside" if f["back_at"] <= lapse_by else "after")
        if (where is None) != ("never" in said) or (
                where is not None and where.split()[0] not in said.replace("only after", "after")):
            found.append(f"the kill chart's line says {said!r}, but the limit came back "
                         f"{where or 'never'} the window")
    # How the pictures got their units: every picture counted once, the short waits within.
    came = f["unit_sources"]
    waits = came["share"] + came["story"]
    if came["at once"] + waits != came["pictures"] or not 0 <= came["unseen"] <= waits:
        found.append(f"the count of how pictures got their units does not add up: {came}")
    if f["gap"] is not None and not f["gap"]["until"] > f["gap"]["t"]:
        found.append(f"the widest gap is said to last until {f['gap']['until']}, not after "
                     f"it began at {f['gap']['t']}")
    # The gap to the bound is measured, and the late start printed is part of the run.
    first, last, gap_to_bound, end, ideal = f["stagger"]
    if not (0 <= first <= last <= end) or abs(gap_to_bound - (end - ideal)) > 1e-6:
        found.append(f"the late start ({first} to {last}) or the gap to the bound "
                     f"({gap_to_bound}, run {end}, bound {ideal}) does not match the run")
    # The same animal has the same letter in both runs.
    one, two = f["letters_both_runs"]
    if one != two:
        found.append(f"story letters change between the runs: {one} then {two}")
    if f["split_held"] is not None and not 0 < f["split_held"] <= limit:
        found.append(f"at the split the stories held {f['split_held']} of {limit} units")
    pg = f["pg"]
    if _server_for_this_worker() != pg["ran"]:
        found.append(f"the PostgreSQL section ran: {pg['ran']}, though it was "
                     f"{'given' if _server_for_this_worker() else 'not given'} a server")
    elif pg["ran"]:
        if (pg["completed"], pg["pictures"], pg["drawn"]) != (5, 25, 25):
            found.append(f"on PostgreSQL: {pg['completed']} stories completed, {pg['pictures']} "
                         f"pictures stored, drawn {pg['drawn']} times; expected 5, 25, 25 (the "
                         "second request drew nothing)")
        if pg["pictures_on_page"] != 25 or pg["new_files"] != 0 or pg["again"] != 5:
            found.append(f"pictures read back from the server {pg['pictures_on_page']}, files "
                         f"written {pg['new_files']}: the pictures should live in the database")
        if not 3 < pg["peak"] <= limit:
            found.append(f"on PostgreSQL the global peak was {pg['peak']} (limit {limit})")
    return found


def _claims_09(f):
    found = []
    # As shipped the pieces are unfinished: the judge names the first one and starts no process.
    if "piece 1, item_name is not right yet" not in f["judge_said"]:
        found.append(f"the judge said {f['judge_said']!r} of the unfinished pieces")
    if f["script_written"]:
        found.append("the judge wrote capstone.py although a piece was not right yet")
    return found


CLAIMS = {
    "00_start_here": _claims_00,
    "01_sequential_generation": _claims_01,
    "02_entities_and_parallel_calls": _claims_02,
    "03_two_levels_of_capacity": _claims_03,
    "04_crash_and_resume": _claims_04,
    "05_failures": _claims_05,
    "06_http_backend": _claims_06,
    "07_research_sweep": _claims_07,
    "08_beyond_one_process": _claims_08,
    "09_capstone": _claims_09,
}


def _executed(series, name):
    run = _run(series, name)
    if not run.output.exists():
        pytest.fail(f"papermill wrote no executed copy of {name}:\n{run.describe()}")
    return nbcheck.read(run.output)


@pytest.mark.parametrize("name", list(EXPECT))
def test_the_numbers_behind_each_figure_hold(series, name):
    facts = nbcheck.facts(_executed(series, name))
    try:
        problems = CLAIMS[name](facts)
    except KeyError as missing:
        problems = [f"the notebook did not remember {missing}"]
    assert problems == [], f"{name} ({facts}):\n" + "\n".join(problems)


@pytest.mark.parametrize("name", list(EXPECT))
def test_exercise_checkers_answer_in_the_executed_notebook(series, name):
    problems = nbcheck.verdict_problems(_executed(series, name))
    assert problems == [], f"{name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", list(EXPECT))
def test_every_figure_is_followed_by_its_text_summary(series, name):
    problems = nbcheck.summary_problems(_executed(series, name))
    assert problems == [], f"{name}:\n" + "\n".join(problems)


# nbconvert warns that it cannot draw the invisible facts outputs; that is the point of them.
@pytest.mark.filterwarnings("ignore:Your element with mimetype")
@pytest.mark.parametrize("name", ["02_entities_and_parallel_calls", "05_failures"])
def test_an_exported_page_shows_the_finished_progress_without_widgets(series, name):
    nbconvert = pytest.importorskip("nbconvert")
    run = _run(series, name)
    page, _ = nbconvert.HTMLExporter().from_filename(str(run.output))
    page = page.replace("'", '"')
    blocks = page.split('class="storylab-progress-snapshot"')[1:]
    assert blocks, "no static progress snapshot in the exported page"
    final = [b for b in blocks if "5/5 done" in b[:3000]]
    assert final, "no snapshot shows a pipeline with 5/5 pictures done"
    assert 'class="bar" style="width:100%' in final[0][:3000]
