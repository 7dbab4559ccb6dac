"""bertlab grade's verdicts on the course's own tests are decided outside the student's kernel:
whatever a submission does to its interpreter, it scores only what its outputs earn, and the
hidden tests' source never reaches it (tests/fixtures/grading/forgeries.py)."""

import csv
import json
import sys
from pathlib import Path

import pytest

from bertlab.course.grading import Limits, grade

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
sys.path.insert(0, str(FIXTURES))
import forgeries  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux" or not Path("/usr/bin/bwrap").exists(),
                                reason="the sandbox needs Linux and bubblewrap")
EXPECTED = {"honest": 2, "untouched": 0, "swallow_exceptions": 0, "blank_requests": 0,
            "forge_answers": 0, "echo_outputs": 0,
            "call_references": 0, "read_hidden_tests": 0}


@pytest.fixture(scope="module")
def forgery_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdicts")
    for student, data in forgeries.submissions().items():
        (root / "submissions" / student).mkdir(parents=True)
        (root / "submissions" / student / "course.ipynb").write_bytes(data)
    grade([root / "submissions"], forgeries.SOLUTION, root / "grades", jobs=2,
          limits=Limits(cell_seconds=30, notebook_seconds=90, memory_mb=3000))
    with open(root / "grades" / "gradebook.csv", newline="", encoding="utf-8") as f:
        return root / "grades", {row["student"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("student", EXPECTED)
def test_a_forged_verdict_scores_nothing(forgery_run, student):
    _, rows = forgery_run
    assert rows[student]["softmax"] == str(EXPECTED[student]), rows[student]["notes"]


def test_feedback_says_the_verdict_was_reached_outside_the_kernel(forgery_run):
    out, _ = forgery_run
    feedback = (out / "feedback" / "honest.md").read_text()
    assert ("- **softmax**: 2 / 2, passed (your outputs compared with the solution's, outside "
            "your kernel)") in feedback
    wrong = (out / "feedback" / "swallow_exceptions.md").read_text()
    assert "the test of 'softmax': call 1 of " in wrong and ": output[0]: expected " in wrong


def test_the_hidden_tests_never_reach_the_students_kernel(forgery_run):
    out, _ = forgery_run
    for feedback in (out / "feedback").glob("*.md"):
        assert forgeries.CANARY not in feedback.read_text(), feedback
    for executed in (out / "logs").glob("*/*.ipynb"):
        outputs = [c.get("outputs", []) for c in json.loads(executed.read_text())["cells"]]
        assert forgeries.CANARY not in json.dumps(outputs), executed
    for log in (out / "logs").glob("*/*.log"):
        assert forgeries.CANARY not in log.read_text(), log


def test_plain_data_round_trips_and_a_students_answer_holds_nothing_else():
    import torch

    from bertlab.course.grading import plain

    value = {"ids": torch.arange(6).reshape(2, 3), "pair": (1.5, float("nan")), "tags": {"B"},
             "empty": torch.zeros(0, 4), 7: [None, True, "x", 2**80]}
    back = plain.decode(json.loads(json.dumps(plain.encode(value))))
    assert torch.equal(back["ids"], value["ids"]) and back["tags"] == {"B"} and back[7] == value[7]
    layer = torch.nn.Linear(3, 2)
    data = plain.encode(layer, objects=True)
    with pytest.raises(plain.NotPlain):
        plain.decode(data)  # what a student's kernel answers is never turned into objects
    assert torch.equal(plain.decode(data, objects=True)(torch.ones(3)), layer(torch.ones(3)))
    with pytest.raises(plain.NotPlain, match="without its data"):
        plain.decode({"$tensor": ["float32", [10**6, 10**6], ""]})


def test_a_hidden_call_of_a_kind_the_visible_check_never_runs_is_named():
    """A ✓ must mean full marks: hidden tests may change values, not the kinds of the inputs."""
    import torch

    from bertlab.course.grading import plain
    from bertlab.course.grading.verdicts import cases, unchecked

    def call(*args, visible, **kwargs):
        return {"name": "f", "visible": visible,
                "inputs": plain.encode([list(args), kwargs], objects=True)}

    seen = [call(torch.ones(2, 3), [1, 2], (0, 1), visible=True),
            call(torch.ones(1, 1), [], (0, 1), visible=True)]
    values = [call(torch.zeros(5, 7), [3], (4, 2, 0), visible=False),
              call(torch.ones(9, 1), [], (1, 1), visible=False)]
    assert unchecked(cases(seen + values)) == []
    kinds = [call(torch.ones(2, 3, 4), [1], (0,), visible=False),  # a rank never run
             call(torch.ones(2, 3, dtype=torch.bool), [1], (0,), visible=False),
             call(torch.ones(2, 3), [1.5], (0,), visible=False),
             call(torch.ones(2, 3), [1], (0,), visible=False, unk="[UNK]"),
             call(torch.ones(2, 3), None, (0,), visible=False)]
    assert unchecked(cases(seen + kinds)) == [
        "f(tensor(bool, 2d), list[int], tuple[int])",
        "f(tensor(float32, 2d), None, tuple[int])",
        "f(tensor(float32, 2d), list[float], tuple[int])",
        "f(tensor(float32, 2d), list[int], tuple[int], unk=str)",
        "f(tensor(float32, 3d), list[int], tuple[int])"]
    assert plain.kind(plain.encode({"ids": torch.arange(3), "span": (1, 2, "PER")})) == (
        "dict(str=tensor(int64, 1d), str=tuple(int, int, str))")


def test_a_reply_too_big_for_a_students_kernel_is_measured_before_grading():
    import torch

    from bertlab.course.grading import plain
    from bertlab.course.grading.grader import MAX_REPLY_BYTES, reply_bytes

    small = {"output": plain.encode(torch.ones(8)), "after": [[None], {"$dict": []}]}
    big = {"output": plain.encode(torch.ones(1 << 20)), "after": [[None], {"$dict": []}]}
    assert reply_bytes([small] * 3) < 1000 < MAX_REPLY_BYTES < reply_bytes([big, small])


def test_forbidden_calls_answers_and_partial_credit_score_as_the_checks_say(tmp_path):
    """Each recorded call is a case (2 of 3 right earns 2/3 of the points); a call of a callable
    the exercise forbids fails its case; an Answer's value is graded with its tolerance; bertlab's
    own version of an exercise's function is not there to call."""
    import partial

    (tmp_path / "partial.ipynb").write_text(partial.solution(), encoding="utf-8")
    for student, (data, _) in partial.submissions().items():
        (tmp_path / "submissions" / student).mkdir(parents=True)
        (tmp_path / "submissions" / student / "partial.ipynb").write_bytes(data)
    results = grade([tmp_path / "submissions"], tmp_path / "partial.ipynb", tmp_path / "grades",
                    jobs=2, limits=Limits(cell_seconds=30, notebook_seconds=90, memory_mb=3000))
    scores = {r.student: (r.scores["softmax"], r.scores["budget"], r.scores["padding-mask"])
              for r in results}
    assert scores == {s: expected for s, (_, expected) in partial.submissions().items()}
    by_student = {r.student: r for r in results}
    assert ("call 1 of 3 of softmax: this calls `torch.softmax`, which this exercise asks you to "
            "do without") in by_student["forbidden"].messages["softmax"][0]
    assert ("call 1 of 3 of softmax: this calls bertlab's own "
            "`bertlab.attention.scaled_dot_product_attention`: write it yourself"
            ) in by_student["via_package"].messages["softmax"][0]
    assert "value: expected 1.1e+08 ± 5e+06, got 3.4e+08" in by_student["forbidden"].messages[
        "budget"][0]
    assert "(1 of 3 cases passed)" in by_student["first_axis"].messages["softmax"][0]
    assert "not answered yet" in by_student["first_axis"].messages["budget"][0]
    assert ("bertlab.attention.padding_mask is not available while grading"
            in by_student["first_axis"].messages["padding-mask"][0])
    feedback = (tmp_path / "grades" / "feedback" / "first_axis.md").read_text()
    assert "- **softmax**: 1 / 3, partly passed (1 of 3 cases)" in feedback
    assert {s: r.cases["softmax"] for s, r in by_student.items()} == visible_softmax_cases(partial)


def visible_softmax_cases(partial) -> dict[str, tuple[int, int]]:
    """(passed, of) of the visible check, run here on each student's softmax."""
    import re

    from bertlab.course.checks.framework import CheckFailed

    namespace = {}
    exec(partial.SETUP, namespace)
    found = {}
    for student, source in (("honest", partial.RIGHT), ("forbidden", partial.FORBIDDEN),
                            ("first_axis", partial.FIRST_AXIS),
                            ("via_package", partial.VIA_PACKAGE)):
        exec(source, namespace)
        try:
            namespace["checks"].softmax(namespace["softmax"])
            found[student] = (3, 3)
        except CheckFailed as e:
            found[student] = tuple(map(int, re.search(r"(\d+)/(\d+) cases", str(e)).groups()))
    return found
