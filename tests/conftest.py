"""Shared test configuration.

``async def`` tests run on a fresh event loop each (``asyncio.run``), so no
asyncio plugin is needed and no loop state leaks between tests.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

# -- heavy tests, marked in one place --------------------------------------------------
# The quick target, `python -m pytest -m "not slow and not ui and not cluster"`,
# leaves these out (README, Developing). A file (or folder) listed here marks
# all its tests; a "file::test" entry marks that test (every parametrization).
HEAVY: dict[str, tuple[str, ...]] = {
    "ui": ("ui/", "story/test_page_in_browser.py"),
    "cluster": (
        "scheduling/test_distributed.py",
        "story/test_cluster.py",
        "story/test_cli_cluster.py",
        "entities/conformance/test_postgres_cluster.py",
    ),
    "slow": (
        "notebooks/",
        "test_packaging.py",
        "test_types.py",
        "viz/test_progress_notebook.py",
        "entities/test_crash_resume.py",
        "entities/test_durability.py",
        "story/test_cli_processes.py",
        "entities/test_fenced_leases.py",
        "entities/test_open_race.py",
        "entities/conformance/test_postgres.py",
        "entities/conformance/test_contract.py::test_an_owner_stopped_past_its_lease_is_taken_over_and_then_stores_nothing",
        "entities/conformance/test_contract.py::test_two_processes_creating_the_same_children_get_one_node_each",
        "scheduling/test_many_runners.py",
        "viz/test_knobs.py::test_every_knob_reaches_the_simulation",
        "story/test_cli_sharing.py",
        "story/test_cli_postgres.py",
        "story/test_contract.py",
        "story/test_cli_bad_inputs.py::test_output_closed_early_is_exit_141_without_a_traceback_every_time",
        "story/test_cli_bad_inputs.py::test_output_closed_at_the_end_has_no_traceback_either",
        "story/test_cli_bad_inputs.py::test_a_full_disk_for_the_graph_is_one_line",
        "story/test_cli_bad_inputs.py::test_429_answers_until_pictures_give_up_end_with_a_hint",
        "story/test_offline_content.py::test_each_subject_s_pictures_show_that_subject_and_only_its_own",
        "story/test_offline_content.py::test_every_figure_pose_setting_and_framing_can_be_drawn",
        "scheduling/test_cancellation.py::test_no_unit_leaks_and_nothing_deadlocks_whatever_stops_the_consumers",
        "scheduling/test_properties.py",
        "story/test_http_images.py::test_trickling_answer_ends_at_the_attempt_deadline_and_is_retried",
        "story/test_http_images.py::test_image_deadline_covers_every_attempt_and_wait",
        "story/test_pipeline_http.py::test_a_trickling_picture_fails_at_its_deadline_and_the_others_finish",
        "story/test_cli_http.py",
        "story/test_cli.py::test_serve_images_answers_over_http",
        "story/test_cli.py::test_ctrl_c_stops_a_run_with_exit_130_and_it_resumes",
        "story/test_cli_bad_inputs.py::test_a_node_whose_data_is_not_json_is_named_by_run_and_eg",
        "story/test_cli_bad_inputs.py::test_dev_null_as_the_graph_is_refused_and_nothing_is_created_beside_it",
        "story/test_cli_bad_inputs.py::test_an_impossible_status_is_refused",
        "story/test_cli_bad_inputs.py::test_a_typo_in_the_graph_folder_is_refused_instead_of_creating_folders",
        "story/test_cli_bad_inputs.py::test_a_corrupted_page_in_the_middle_is_refused_by_run_and_found_by_eg_check",
        "story/test_cli.py::test_a_reader_that_goes_away_stops_the_run_quietly_and_it_resumes",
        "entities/test_leases.py::test_the_heartbeat_keeps_a_long_run_leased",
        "test_storylab_command.py::test_the_exit_codes_are_the_documented_ones",
        # about a second or more each (lock holds of seconds, judged runs, big figures)
        "test_tutorial_exercises.py::test_the_give_up_checker_refuses_a_loop_that_never_gives_up_or_reraises",
        "viz/test_time_origin.py::test_several_timelines_share_one_time_axis",
        "viz/test_timeline.py::test_names_rename_groups_and_panels_for_the_reader",
        "viz/test_knobs.py::test_extra_moments_are_marked_and_follow_the_knobs",
        "entities/conformance/test_pg_row_locks.py::test_a_root_another_process_is_creating_is_waited_for_and_shared",
        "entities/conformance/test_contract.py::test_a_result_is_committed_before_anyone_sees_it",
        "entities/conformance/test_lock_wait.py::test_append_call_under_a_foreign_write_lock_keeps_the_loop_moving",
        "entities/conformance/test_loop_free.py::test_creating_a_root_under_a_foreign_lock_keeps_the_loop_moving",
        "entities/conformance/test_loop_free.py::test_generating_a_story_under_a_foreign_lock_keeps_the_loop_moving",
        "entities/conformance/test_pg_contention.py::test_a_lease_is_renewed_while_other_processes_hold_the_write_lock",
        "entities/test_reads_under_lock.py",
        "story/test_story_under_lock.py",
        "test_tutorial_exercises.py::test_the_capstone_judge_refuses_a_batch_that_drops_its_failures",
        "test_tutorial_exercises.py::test_the_capstone_judge_refuses_a_runner_that_never_reaches_its_limit",
        "test_tutorial_exercises.py::test_the_capstone_judge_refuses_names_that_do_not_survive_the_kill",
        "test_tutorial_exercises.py::test_the_capstone_passes_the_solution",
        "test_tutorial_exercises.py::test_the_fan_out_exercise_runs_the_learners_entity_and_judges_what_it_did",
        "test_tutorial_exercises.py::test_the_draw_picture_checker_wants_both_levels_once_and_a_release_in_finally",
        "test_tutorial_exercises.py::test_the_capstone_judge_refuses_stored_refusals_without_their_own_number",
        "test_tutorial_exercises.py::test_the_fifo_losses_checker_runs_the_learners_sweep_and_names_the_near_misses",
        "test_tutorial_exercises.py::test_the_polite_client_checker_refuses_the_unbounded_burst",
        "test_tutorial_exercises.py::test_the_polite_client_checker_wants_exactly_the_ceiling_in_flight",
        "test_tutorial_exercises.py::test_the_item_checker_refuses_items_that_never_fail_rush_or_return_the_wrong_value",
        "test_tutorial_exercises.py::test_the_longest_picture_is_not_the_last_to_end",
        "test_tutorial_exercises.py::test_the_run_items_checker_refuses_no_limit_no_error_branch_or_one_at_a_time",
        "viz/test_graph_plot.py::test_no_text_overlaps_in_trees_of_up_to_ten_children",
        "viz/test_replay.py::test_a_drawn_widget_hides_the_static_snapshot_in_any_front_end",
        "viz/test_replay.py::test_the_static_snapshot_is_plain_html_with_gauge_panel_and_cursor",
    ),
}
_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        where = item.path.resolve().relative_to(_TESTS).as_posix()
        test = f"{where}::{item.originalname if hasattr(item, 'originalname') else item.name}"
        for marker, entries in HEAVY.items():
            if any(test == e or (("::" not in e) and where.startswith(e)) for e in entries):
                item.add_marker(marker)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        # The test's own parameters (funcargs also holds autouse fixtures).
        params = inspect.signature(pyfuncitem.obj).parameters
        kwargs = {n: pyfuncitem.funcargs[n] for n in params if n in pyfuncitem.funcargs}
        asyncio.run(pyfuncitem.obj(**kwargs))
        return True
    return None


# -- read-only graphs, for real ------------------------------------------------------
# chmod does not stop root, so as root a file is made immutable (chattr +i,
# which binds root too) and a whole folder read-only with a read-only tmpfs
# mounted in a private mount namespace (gone when the command exits).


@pytest.fixture
def make_read_only():
    """``make_read_only(path)``: nobody, root included, may write ``path`` until the test ends."""
    import os
    import subprocess

    undo: list[tuple[str, ...]] = []

    def make(path) -> None:
        folder = os.path.isdir(path)
        path = str(path)
        if os.geteuid() != 0:
            os.chmod(path, 0o555 if folder else 0o444)
            undo.append(("chmod", "755" if folder else "644", path))
        else:
            done = subprocess.run(["chattr", "+i", path], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"chattr +i is not available here ({done.stderr.strip()})")
            undo.append(("chattr", "-i", path))
        try:
            with open(os.path.join(path, ".probe") if folder else path, "ab"):
                pass
        except PermissionError:
            return
        pytest.skip(f"could not make {path} read-only on this file system")

    yield make
    for cmd in reversed(undo):
        subprocess.run(cmd, check=True)


@pytest.fixture
def on_read_only_mount(tmp_path):
    """``on_read_only_mount(files, argv) -> CompletedProcess``: copy ``files`` onto a
    read-only mount and run ``argv`` there; ``{ro}`` in ``argv`` is the mount point."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a read-only mount needs root and unshare(1)")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here ({probe.stderr.strip()})")
    mount_point = tmp_path / "read-only-mount"
    mount_point.mkdir()

    def run(files, argv):
        script = (
            'ro="$1"; shift; n="$1"; shift; mount -t tmpfs storylab-test "$ro" || exit 97; '
            'while [ "$n" -gt 0 ]; do cp -a "$1" "$ro"/ || exit 98; shift; n=$((n-1)); done; '
            'mount -o remount,ro "$ro" || exit 99; exec "$@"'
        )
        files = [str(f) for f in files]
        argv = [a.replace("{ro}", str(mount_point)) for a in argv]
        done = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "sh", str(mount_point), str(len(files)),
             *files, *argv],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode in (97, 98, 99):
            pytest.skip(f"could not set up a read-only mount: {done.stderr.strip()}")
        return done

    return run


@pytest.fixture(params=["not-sqlite", "another-apps-database", "newer-schema"])
def unusable_graph(request, tmp_path):
    """``(path, message)``: a file no storylab command may use as its graph, and
    the words the refusal must contain."""
    import sqlite3

    from storylab.entities import EntityGraph, RunnableEntity
    from storylab.entities.graph import SCHEMA_VERSION

    if request.param == "not-sqlite":
        path = tmp_path / "notes.sqlite"
        path.write_text("these are my notes, not a database\n" * 40)
        return path, "is not a storylab entity graph (not an SQLite database"
    if request.param == "another-apps-database":
        path = tmp_path / "shop.sqlite"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE orders (id INTEGER)")
        conn.commit()
        conn.close()
        return path, "is an SQLite database but not a storylab entity graph"
    path = tmp_path / "newer.sqlite"
    with EntityGraph.open(path) as g:
        g.create(RunnableEntity, "a-root")
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    return path, f"uses entity-graph schema {SCHEMA_VERSION + 1}, newer than"
