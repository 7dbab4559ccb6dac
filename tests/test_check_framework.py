"""The checks' framework: forbidden calls, value answers, messages that say enough, reports that
never stop a student's Run All (tests/test_checks.py covers each chapter's exercises)."""

import pytest
import torch
import torch.nn.functional as F

from bertlab.course.checks import framework
from bertlab.course.checks.framework import (
    Answer,
    Case,
    CheckFailed,
    Exercise,
    Mistake,
    difference,
)

softmax = Exercise("softmax_without", lambda x: torch.softmax(x, -1),
                   lambda: [Case("a row", (torch.randn(4),)), Case("rows", (torch.randn(2, 3),))],
                   forbidden=("torch.softmax", "torch.nn.functional.softmax"))
layer_norm = Exercise("layer_norm_without", lambda x: F.layer_norm(x, x.shape[-1:]),
                      lambda: [Case("rows", (torch.randn(2, 5),))],
                      forbidden=("torch.nn.functional.layer_norm",))


def by_hand(x):
    e = (x - x.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def failure(check, value) -> str:
    with pytest.raises(CheckFailed) as info:
        check(value)
    return str(info.value)


@pytest.mark.parametrize("answer", [lambda x: torch.softmax(x, -1), lambda x: x.softmax(-1),
                                    lambda x: F.softmax(x, -1), lambda x: torch.nn.Softmax(-1)(x)])
def test_a_forbidden_call_fails_every_case_it_makes(answer):
    message = failure(softmax, answer)
    assert message.startswith("✗ softmax_without: 0/2 cases passed")
    assert "this calls `torch." in message
    assert "which this exercise asks you to do without" in message


def test_forbidden_layer_norm_is_caught_under_its_other_names():
    for answer in (lambda x: F.layer_norm(x, (5,)),
                   lambda x: torch.nn.functional.layer_norm(x, (5,)),
                   lambda x: torch.nn.LayerNorm(5)(x)):
        assert "this calls `torch.nn.functional.layer_norm`" in failure(layer_norm, answer)


def test_an_answer_written_by_hand_passes_and_the_reference_may_call_anything(capsys):
    softmax(by_hand)
    softmax(softmax.reference)
    assert capsys.readouterr().out.count("✓ softmax_without: 2/2 cases passed") == 2


def test_an_unknown_forbidden_name_is_a_clear_error():
    with pytest.raises(ValueError, match="'torch.no_such_thing' names nothing"):
        Exercise("x", abs, lambda: [Case("one", (1,))], forbidden=("torch.no_such_thing",))


budget = Answer("budget", lambda: 110_000_000, tolerance=5e6, hint="count the embeddings too",
                wrong=[Mistake("that is BERT-large", lambda: 340_000_000)])
words = Answer("words", lambda: ["the", "cat"])


def test_a_value_answer_passes_within_its_tolerance(capsys):
    budget(112_000_000)
    budget(torch.tensor(108e6))
    words(["the", "cat"])
    assert capsys.readouterr().out == "✓ budget: right\n✓ budget: right\n✓ words: right\n"


def test_a_wrong_value_gets_the_mistakes_hint_without_the_answer():
    message = failure(budget, 339_000_000)
    assert message == ("✗ budget: expected the answer within 5e+06 of it, got 339000000, which "
                       "is not it\n  hint: that is BERT-large")
    assert "110" not in message
    assert "hint: count the embeddings too" in failure(budget, 1)
    assert failure(budget, "many") == ("✗ budget: your answer should be a number, got 'many' "
                                       "(str)\n  hint: count the embeddings too")
    assert "not answered yet" in failure(budget, ...)
    assert "your answer should be a list of 2 items, got a list of 3 items" in failure(
        words, ["the", "cat", "sat"])
    assert "['the', 'dog']" in failure(words, ["the", "dog"]) and "cat" not in failure(
        words, ["the", "dog"])


def test_close_floats_are_shown_with_enough_digits_to_differ():
    expected = torch.full((4, 6), 1.1360)
    got = expected + 2e-4
    message = difference(got, expected, "output")
    assert message == "output[0, 0]: expected 1.136, got 1.1362 (24 of 24 values differ)"
    assert difference(1.1362, 1.136, "x") == "x: expected 1.136, got 1.1362"


def test_in_a_students_notebook_a_failure_is_printed_not_raised(monkeypatch, capsys):
    monkeypatch.setattr(framework, "strict", lambda: False)
    softmax(lambda x: x.softmax(-1))
    budget(...)
    out = capsys.readouterr().out
    assert out.startswith("✗ softmax_without: 0/2 cases passed") and "✗ budget: not answered" in out
    assert framework.state("softmax_without").startswith("✗ softmax_without: 0/2")
    assert framework.state("never_run") == "· never_run: not run"


def test_outside_a_kernel_or_with_hidden_tests_a_failure_raises(monkeypatch):
    assert framework.strict()  # pytest: no kernel
    monkeypatch.setenv("BERTLAB_CHECKS", "raise")
    assert framework.strict()


def test_the_visible_check_says_when_an_answer_calls_bertlabs_own():
    import bertlab.attention

    check = Exercise("padding_mask", bertlab.attention.padding_mask,
                     lambda: [Case("a row", (torch.tensor([[1, 0]]),))])

    def padding_mask(m):
        return bertlab.attention.padding_mask(m)

    assert failure(check, padding_mask) == ("✗ padding_mask: this calls bertlab's own "
                                            "`bertlab.attention.padding_mask`: write it yourself")


def test_bertlab_check_runs_a_students_notebook_to_the_end_and_says_what_would_score(
        tmp_path, capsys):
    """In a kernel a ✗ is printed (Run All goes on); a cell that still holds hidden tests (as
    nbgrader's autograde runs it) raises, so that it scores 0 there too."""
    import json
    import sys
    from pathlib import Path

    import nbformat

    from bertlab.cli import main

    sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
    import partial
    from hostile import notebook

    exercise = json.loads(nbformat.writes(partial.exercise()))
    hidden = partial.cell("checks.softmax(softmax)\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS",
                          "softmax-graded", grade=True, points=1)
    exercise["cells"].append(json.loads(nbformat.writes(nbformat.v4.new_notebook(
        cells=[hidden])))["cells"][0])
    path = tmp_path / "partial.ipynb"
    path.write_bytes(notebook(exercise, softmax=partial.FIRST_AXIS, budget="budget = 108e6"))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("✗ softmax-test (3 points): ✗ softmax: 1/3 cases passed")
    assert out[1] == "✓ budget-test (1 point): ✓ budget: right"
    assert out[2] == ("✗ padding-mask-test (1 point): ✗ padding_mask: not implemented yet — "
                      "replace the `raise NotImplementedError` line with your code")
    assert out[3].startswith("✗ softmax-graded (1 point): the cell raised CheckFailed: ✗ softmax")
    assert out[4] == "1 of 4 graded cells would score: 1 of 6 points"


def test_the_summary_lists_every_check_of_the_chapter_with_its_state(monkeypatch, capsys):
    from bertlab.course import checks

    monkeypatch.setattr(framework, "STATES", {})
    names = checks.chapter_checks(checks.CHAPTERS[2])
    first = next(name for name in names if name in checks.EXERCISES)
    checks.EXERCISES[first](checks.EXERCISES[first].reference)
    capsys.readouterr()
    checks.summary()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"1 of {len(names)} exercises pass their checks"
    assert lines[1:] == [f"  ✓ {name}: " + framework.STATES[name].split(": ", 1)[1]
                         if name == first else f"  · {name}: not run" for name in names]
