"""bertlab grade: a hostile submission costs only what it breaks, and the grader always finishes.

One grading run covers every hostile submission of the toy assignment (tests/fixtures/grading);
another grades the course's real solutions (full marks) and their exercises (zero).
"""

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from bertlab.course.authoring import make_exercises
from bertlab.course.grading import Limits, grade
from bertlab.course.grading.intake import (
    bound_names,
    find_submissions,
    load_assignments,
    student_cells,
)
from bertlab.course.grading.verdicts import unchecked

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "grading"
spec = importlib.util.spec_from_file_location("hostile", FIXTURES / "hostile.py")
hostile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hostile)

# student: points for double (of 1), softmax (of 2), answer (of 1), and what the notes must say
EXPECTED = {
    "perfect": (1, 2, 1, ""),
    "untouched": (0, 0, 0, ""),
    "syntax_error": (1, 0, 1, "your cell 'softmax': SyntaxError"),
    "exception": (0, 2, 1, ""),
    "infinite_loop": (1, 0, 1, "the test of 'softmax': still running after the time limit of 10 s"),
    "stubborn_loop": (1, 2, 0, "your cell 'answer': still running after the time limit of 10 s; "
                               "reran the notebook without it"),
    "sys_exit": (0, 2, 1, "your cell 'double': SystemExit"),
    "os_exit": (1, 0, 1, "the test of 'softmax': the kernel died (exit code 1); reran the "
                         "notebook without it"),
    "fork_bomb": (1, 2, 0, "your cell 'answer': PermissionError: [Errno 1] Operation not "
                           "permitted"),
    "memory_hog": (0, 2, 1, "your cell 'double': MemoryError"),
    "huge_output": (1, 2, 1, ""),
    "scratch_files": (1, 2, 1, ""),
    "escape": (1, 2, 1, ""),
    "malformed": (0, 0, 0, "not a readable notebook"),
    "truncated": (0, 0, 0, "not a readable notebook"),
    "empty": (0, 0, 0, "the file is empty"),
    "wrong_assignment": (0, 0, 0, "none of the exercise cells of toy (its cells are setup, triple, "
                                  "triple-test): wrong notebook?"),
    "missing_cell": (1, 0, 1, "cells missing: softmax (graded as not done)"),
    "edited_tests": (0, 0, 0, ""),
    "fake_output": (0, 0, 0, ""),
    "rebind_names": (0, 2, 1, ""),
    "tamper_modules": (0, 0, 0, "tampering found after your cell 'double': "
                                "builtins.AssertionError replaced; torch.equal replaced; "
                                "torch.testing.assert_close replaced"),
    "tamper_in_call": (0, 0, 0, "tampering found after the test of 'softmax': torch.allclose "
                                "replaced; torch.testing.assert_close replaced"),
    "tamper_kernel": (0, 0, 0, "tampering found after your cell 'answer': the IPython "
                               "shell.run_cell_async added"),
    "tamper_guard": (0, 0, 0, "the kernel answered for the grader's check without running it"),
}


def read_gradebook(path: Path) -> dict[tuple[str, str], dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_key = {(row["student"], row["assignment"]): row for row in rows}
    assert len(by_key) == len(rows), "one file per student and assignment here"
    return by_key


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """Grade every hostile submission at once, two kernels at a time, with short time limits,
    against a copy of the solutions that `escape` tries to overwrite (with a sentinel file and
    another student's notebook)."""
    root = tmp_path_factory.mktemp("grading")
    shutil.copytree(FIXTURES / "solutions", root / "solutions")
    (root / "sentinel.txt").write_text("untouched")
    submissions = root / "submissions"
    hostile.write(submissions)
    victims = (root / "solutions" / "toy.ipynb", root / "sentinel.txt",
               submissions / "perfect" / "toy.ipynb")
    (submissions / "escape").mkdir()
    (submissions / "escape" / "toy.ipynb").write_bytes(hostile.escape(*victims))
    other = hostile.notebook(hostile.exercise("other"), **hostile.solved("other"))
    (submissions / "perfect" / "other.ipynb").write_bytes(other)
    (submissions / "stray").mkdir()
    (submissions / "stray" / "homework.ipynb").write_bytes(hostile.PERFECT)
    grade([submissions], root / "solutions", root / "grades", jobs=2,
          limits=Limits(cell_seconds=10, notebook_seconds=60, memory_mb=3000))
    return root / "grades"


def test_gradebook_has_a_column_per_exercise_and_a_row_per_submission(hostile_run):
    with open(hostile_run / "gradebook.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == ["student", "assignment", "file", "triple", "double", "softmax", "answer",
                      "total", "max", "notes", "checksum"]
    rows = read_gradebook(hostile_run / "gradebook.csv")
    assert set(rows) == {(s, "toy") for s in EXPECTED} | {("perfect", "other"), ("stray", "")}


@pytest.mark.parametrize("student", EXPECTED)
def test_each_hostile_submission_scores_exactly_what_it_earned(hostile_run, student):
    double, softmax, answer, note = EXPECTED[student]
    row = read_gradebook(hostile_run / "gradebook.csv")[student, "toy"]
    assert (row["double"], row["softmax"], row["answer"], row["triple"]) == (
        str(double), str(softmax), str(answer), "")
    assert (row["total"], row["max"]) == (str(double + softmax + answer), "4")
    assert note in row["notes"] if note else row["notes"] == ""


def test_kernels_cannot_write_outside_their_folder(hostile_run):
    root = hostile_run.parent
    solution = root / "solutions" / "toy.ipynb"
    assert solution.read_bytes() == (FIXTURES / "solutions" / "toy.ipynb").read_bytes()
    assert (root / "sentinel.txt").read_text() == "untouched"
    assert (root / "submissions" / "perfect" / "toy.ipynb").read_bytes() == hostile.PERFECT


def test_second_assignment_and_unmatched_file(hostile_run):
    rows = read_gradebook(hostile_run / "gradebook.csv")
    assert (rows["perfect", "other"]["triple"], rows["perfect", "other"]["max"]) == ("1", "1")
    assert rows["perfect", "other"]["double"] == ""
    assert rows["stray", ""]["total"] == "0"
    assert "cannot tell which assignment homework.ipynb is" in rows["stray", ""]["notes"]


def test_feedback_says_what_passed_failed_and_why(hostile_run):
    perfect = (hostile_run / "feedback" / "perfect.md").read_text()
    assert "## toy: 4 / 4" in perfect and "## other: 1 / 1" in perfect
    exception = (hostile_run / "feedback" / "exception.md").read_text()
    assert "- **double**: 0 / 1, failed" in exception
    assert "the test of 'double': ValueError: not today" in exception
    assert "- **softmax**: 2 / 2, passed" in exception
    broken = (hostile_run / "feedback" / "syntax_error.md").read_text()
    assert "your cell 'softmax': SyntaxError" in broken
    assert "the test of 'softmax': NameError: name 'softmax' is not defined" in broken


def test_student_cells_refuse_what_is_not_a_notebook():
    for data, problem in ((b"", "empty"), (b"[1, 2]", "no list of cells"), (b"\xff{", "not UTF-8")):
        with pytest.raises(ValueError, match=problem):
            student_cells(data)
    assert student_cells(hostile.PERFECT)["answer"] == hostile.SOLVED["answer"]


def test_bound_names_are_what_a_cell_defines_at_top_level():
    source = ("import torch.nn as nn, math\nfrom torch import tensor as t\nx, (y, z) = 1, (2, 3)\n"
              "def f(a):\n    b = a\n    return b\nclass C:\n    k = 1\nfor i in range(2):\n"
              "    w = [j for j in range(i)]\n%time v = 1")
    assert bound_names(source) == {"nn", "math", "t", "x", "y", "z", "f", "C", "i", "w"}


def test_two_files_of_one_student_get_a_row_each_with_a_note(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder / "alice").mkdir(parents=True)
        (tmp_path / folder / "alice" / "toy.ipynb").write_bytes(hostile.PERFECT)
    found = find_submissions([tmp_path], load_assignments(FIXTURES / "solutions"))
    assert [s.key[:2] for s in found] == [("alice", "toy")] * 2
    assert all(s.note.startswith("2 files of 'alice' for toy: ") for s in found)


def test_real_solutions_score_full_marks_and_their_exercises_zero(tmp_path):
    """Full marks for every cell graded automatically; the written answers await their scores."""
    make_exercises(ROOT / "solutions", tmp_path / "exercises")
    grade([ROOT / "solutions", tmp_path / "exercises"], ROOT / "solutions", tmp_path / "grades",
          jobs=2)
    rows = read_gradebook(tmp_path / "grades" / "gradebook.csv")
    by_hand = {a.name: a.manual for a in load_assignments(ROOT / "solutions").values()}
    assert sorted(a for s, a in rows if s == "solutions") == sorted(by_hand)
    for (student, assignment), row in rows.items():
        awaiting = ", ".join(f"{g} ({p:g} points)" for g, p in by_hand[assignment].items())
        assert row["notes"] == (f"awaiting manual grading: {awaiting}" if awaiting else "")
        if student == "solutions":
            automatic = float(row["max"]) - sum(by_hand[assignment].values())
            assert float(row["total"]) == automatic, assignment
        else:
            assert (student, row["total"]) == ("exercises", "0"), assignment
    recordings = sorted((tmp_path / "grades" / "logs").glob("solution-*.cases.json"))
    assert len(recordings) == len(by_hand)
    for recording in recordings:  # a ✓ means full marks: hidden tests vary values, not kinds
        tests = json.loads(recording.read_text())
        assert any(tests.values()), recording.name  # (an Answer's test calls no function)
        for test, kinds in tests.items():
            assert unchecked(kinds) == [], (recording.name, test)


def test_a_failed_assert_without_a_message_says_which_case_what_it_expected_and_what_came():
    from bertlab.course.grading.grader import Outcome, explained

    class Kernel:  # answers the grader's question about the left-hand side
        def evaluate(self, expression, seconds):
            assert expression == "repr(squares(3))[:200]"
            return Outcome("ok"), "[1, 2, 3]"

    source = ("assert squares(1) == [1]\n### BEGIN HIDDEN TESTS\nassert len(squares(2)) > 1\n"
              "assert squares(3) == [1, 4, 9]\n### END HIDDEN TESTS")
    failed = Outcome("error", "AssertionError in `assert squares(3) == [1, 4, 9]`")
    assert explained(source, failed, Kernel()) == (
        "case 3 of the hidden tests: expected `squares(3)` to be `[1, 4, 9]`, got [1, 2, 3]")
    failed = Outcome("error", "AssertionError in `assert len(squares(2)) > 1`")
    assert explained(source, failed, Kernel()) == (
        "case 2 of the hidden tests: expected `len(squares(2)) > 1` to be true, and it is not")
    assert explained(source, Outcome("error", "ValueError: no"), Kernel()) == "ValueError: no"
