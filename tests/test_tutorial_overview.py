"""Notebook 00's exercise checker: what a learner's wrong answer is told must be true."""

from __future__ import annotations

import pytest

from storylab.tutorial import check_python_name


@pytest.mark.parametrize("answer", ["parallel_calls", "self.parallel_calls(Cls, items)",
                                    "  parallel_calls()  "])
def test_the_python_name_is_right_however_it_is_written(answer):
    assert check_python_name("parallelCalls", answer).ok


@pytest.mark.parametrize(("answer", "says"), [
    (None, "fill in your answer"),
    (3, "as a string"),
    ("parallelCalls", "the chapter's TypeScript spelling"),
    ("this.parallelCalls", "the chapter's TypeScript spelling"),
    ("ParallelCalls", "the right words, spelt differently"),
    ("parallel-calls", "the right words, spelt differently"),
    ("parallel_call", "close, but a name must match letter for letter"),
    ("append_or_retrieve_call", "the Python name of 'this.appendOrRetrieveCall"),
    ("run_all_the_things", "not the name storylab gives to parallelCalls"),
    ("fooBar", "not the name storylab gives to parallelCalls"),
])
def test_a_wrong_answer_is_told_what_is_wrong_with_it(answer, says):
    verdict = check_python_name("parallelCalls", answer)
    assert not verdict.ok
    assert says in verdict.message


@pytest.mark.parametrize("answer", ["parallel_call", "run_tasks", "parallelcalls"])
def test_a_snake_case_near_miss_is_not_told_to_use_snake_case(answer):
    # It already is snake_case: that advice would send the learner the wrong way.
    message = check_python_name("parallelCalls", answer).message
    assert "Python spells method names in snake_case" not in message
    assert "has no method" not in message  # run_tasks exists: never claim it does not
