"""make-exercises: solutions become stubs, hidden tests and outputs go, nothing else moves."""

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from bertlab.cli import main
from bertlab.course.authoring import (
    MarkerError,
    make_exercise,
    make_exercises,
    nbgrader_checksum,
    remove_hidden_tests,
    stale_exercises,
    stub_solutions,
)

ROOT = Path(__file__).resolve().parents[1]
TOY = Path(__file__).parent / "fixtures" / "grading" / "solutions"


def solution_cell(source: str, grade_id: str = "f", cell_id: str = "c1"):
    cell = new_code_cell(source, metadata={"nbgrader": {
        "solution": True, "grade": False, "locked": False, "grade_id": grade_id,
        "schema_version": 3}})
    cell.id = cell_id
    return cell


def test_stub_keeps_decorators_multiline_signature_and_docstring():
    source = '''@torch.no_grad()
def attend(
    q,
    k,
):
    """Scores of q against k."""
    ### BEGIN SOLUTION
    scores = q @ k.T
    return scores
    ### END SOLUTION'''
    assert stub_solutions(source, "nb") == '''@torch.no_grad()
def attend(
    q,
    k,
):
    """Scores of q against k."""
    raise NotImplementedError("implement attend")'''


def test_stub_in_nested_def_and_docstring_inside_the_region():
    source = '''def outer(x):
    """Outer."""
    def inner(y):
        ### BEGIN SOLUTION
        """Inner,
        on two lines."""
        return y + 1
        ### END SOLUTION
    ### BEGIN SOLUTION
    return inner(x) * 2
    ### END SOLUTION'''
    assert stub_solutions(source, "nb") == '''def outer(x):
    """Outer."""
    def inner(y):
        """Inner,
        on two lines."""
        raise NotImplementedError("implement inner")
    raise NotImplementedError("implement outer")'''


def test_stub_outside_a_function_and_code_around_the_region_stays():
    source = "import math\n### BEGIN SOLUTION\nx = 2\nprint(x)\n### END SOLUTION\nprint(answer)"
    assert stub_solutions(source, "nb") == (
        "import math\n# YOUR CODE HERE\nraise NotImplementedError()\nprint(answer)")
    namespace = {}
    with pytest.raises(NotImplementedError):
        exec(stub_solutions(source, "nb"), namespace)


def test_a_region_of_answers_becomes_ellipses_so_run_all_goes_on():
    source = "import math\n### BEGIN SOLUTION\nanswer = math.pi\nguess = answer / 2\n" \
             "### END SOLUTION\nprint(answer)"
    stubbed = stub_solutions(source, "nb")
    assert stubbed == ("import math\nanswer = ...  # YOUR ANSWER HERE\nguess = ...  # YOUR ANSWER "
                       "HERE\nprint(answer)")
    exec(stubbed, {})


def test_stubbed_function_raises_with_its_name_when_called():
    namespace = {}
    exec(stub_solutions("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION",
                        "nb"), namespace)
    with pytest.raises(NotImplementedError, match="implement f"):
        namespace["f"](1)


def test_hidden_tests_removed_with_their_markers():
    source = ("checks.f(f)\n### BEGIN HIDDEN TESTS\nassert f(1) == 2\n### END HIDDEN TESTS\n"
              "print('ok')\n### BEGIN HIDDEN TESTS\nassert f(2) == 3\n### END HIDDEN TESTS\n")
    assert remove_hidden_tests(source, "nb") == "checks.f(f)\nprint('ok')"


def toy_solution_notebook():
    setup = new_code_cell("import torch", metadata={"nbgrader": {"locked": True}})
    setup.id = "c0"
    setup.execution_count = 1
    setup.outputs = [new_output("stream", name="stdout", text="hello\n")]
    setup.metadata["execution"] = {"iopub.status.busy": "2026-11-22T06:00:00Z"}
    test = new_code_cell("checks.f(f)\n### BEGIN HIDDEN TESTS\nassert f(1) == 1\n"
                         "### END HIDDEN TESTS",
                         metadata={"nbgrader": {"grade": True, "points": 2, "grade_id": "f-test",
                                                "locked": True, "schema_version": 3}})
    test.id = "c2"
    text = new_markdown_cell("Write **f**.")
    text.id = "m0"
    solution = solution_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x\n"
                             "    ### END SOLUTION")
    return new_notebook(cells=[text, setup, solution, test], metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})


def test_exercise_clears_outputs_keeps_ids_metadata_and_other_cells():
    nb = toy_solution_notebook()
    exercise = make_exercise(nb, "toy.ipynb")
    assert [c.id for c in exercise.cells] == ["m0", "c0", "c1", "c2"]
    assert exercise.metadata == nb.metadata
    assert exercise.cells[0] == nb.cells[0]
    setup, solution, test = exercise.cells[1:]
    assert (setup.outputs, setup.execution_count, setup.source) == ([], None, "import torch")
    assert "execution" not in setup.metadata and setup.metadata["nbgrader"] == {"locked": True}
    assert solution.source == 'def f(x):\n    raise NotImplementedError("implement f")'
    assert released_metadata(solution) == nb.cells[2].metadata
    assert test.source == "checks.f(f)" and released_metadata(test) == nb.cells[3].metadata
    assert nb.cells[1].outputs, "the solution notebook itself is left alone"


def released_metadata(cell) -> dict:
    """A released cell's metadata without what nbgrader's generate_assignment adds."""
    meta = {k: v for k, v in cell.metadata.items() if k not in ("deletable", "editable")}
    return {**meta, "nbgrader": {k: v for k, v in meta["nbgrader"].items()
                                 if k not in ("checksum", "cell_type")}}


def test_released_cells_carry_nbgraders_checksums_and_locks():
    exercise = make_exercise(toy_solution_notebook(), "toy.ipynb")
    setup, solution, test = exercise.cells[1:]
    assert (solution.metadata["deletable"], "editable" in solution.metadata) == (False, False)
    assert (test.metadata["deletable"], test.metadata["editable"]) == (False, False)
    for cell in (setup, solution, test):
        assert cell.metadata["nbgrader"].get("checksum") == (
            nbgrader_checksum(cell) if "grade_id" in cell.metadata["nbgrader"] else None)
    nbgrader_utils = pytest.importorskip("nbgrader.utils")
    assert nbgrader_checksum(test) == nbgrader_utils.compute_checksum(test)
    assert nbgrader_checksum(solution) == nbgrader_utils.compute_checksum(solution)


def test_exercises_are_deterministic_and_idempotent(tmp_path):
    (tmp_path / "solutions").mkdir()
    nbformat.write(toy_solution_notebook(), tmp_path / "solutions" / "toy.ipynb")
    first = make_exercises(tmp_path / "solutions", tmp_path / "a")
    second = make_exercises(tmp_path / "solutions" / "toy.ipynb", tmp_path / "b")
    assert first[0].read_bytes() == second[0].read_bytes()
    again = make_exercises(tmp_path / "a", tmp_path / "c")  # an exercise is its own exercise
    assert again[0].read_bytes() == first[0].read_bytes()
    assert first[0].read_bytes().endswith(b"}\n")
    assert nbformat.reads(first[0].read_text(), as_version=4).nbformat_minor == 5


@pytest.mark.parametrize("source, line, problem", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1", 2, "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION", 3, "without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION", 2, "inside another"),
    ("x = 1\n# BEGIN SOLUTION\nx = 2", 2, "malformed marker"),
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n### BEGIN HIDDEN TESTS\nassert x", 4,
     "never closed"),
])
def test_bad_markers_are_refused_naming_notebook_cell_and_line(tmp_path, source, line, problem):
    nb = toy_solution_notebook()
    nb.cells[2] = solution_cell(source, cell_id="broken")
    with pytest.raises(MarkerError, match=problem) as error:
        make_exercise(nb, "03_attention.ipynb")
    assert f"03_attention.ipynb, cell 2 (id broken), line {line}" in str(error.value)


def test_solution_cell_without_markers_is_refused():
    nb = toy_solution_notebook()
    nb.cells[2] = solution_cell("def f(x):\n    return x")
    with pytest.raises(MarkerError, match="solution cell without"):
        make_exercise(nb, "toy.ipynb")


def test_stale_exercises_names_missing_extra_and_changed_notebooks(tmp_path):
    exercises = tmp_path / "exercises"
    make_exercises(TOY, exercises)
    assert stale_exercises(TOY, exercises) == []
    (exercises / "other.ipynb").unlink()
    (exercises / "extra.ipynb").write_text("{}")
    with open(exercises / "toy.ipynb", "a") as f:
        f.write(" ")
    assert stale_exercises(TOY, exercises) == [
        "other.ipynb: missing", "extra.ipynb: has no solution notebook",
        "toy.ipynb: differs from its solution notebook"]
    assert main(["make-exercises", str(TOY), str(exercises), "--check"]) == 1
    assert main(["make-exercises", str(TOY), str(exercises)]) == 0
    (exercises / "extra.ipynb").unlink()
    assert main(["make-exercises", str(TOY), str(exercises), "--check"]) == 0


def test_committed_exercises_are_what_the_solutions_generate():
    """exercises/ is generated: regenerate with `bertlab make-exercises solutions/ exercises/`."""
    assert stale_exercises(ROOT / "solutions", ROOT / "exercises") == []


def test_a_written_answer_keeps_its_question_and_loses_its_answer():
    answer = nbformat.v4.new_markdown_cell("Why scale?\n### BEGIN SOLUTION\nThe softmax saturates."
                                           "\n### END SOLUTION")
    answer.metadata["nbgrader"] = {"grade": True, "solution": True, "grade_id": "why",
                                   "points": 2, "locked": False, "schema_version": 3}
    whole = nbformat.v4.new_markdown_cell("All of it is the answer.")
    whole.metadata["nbgrader"] = {**answer.metadata["nbgrader"], "grade_id": "whole"}
    nb = nbformat.v4.new_notebook(cells=[answer, whole])
    released = make_exercise(nb, "nb")
    assert [c.source for c in released.cells] == ["Why scale?\nYOUR ANSWER HERE",
                                                  "YOUR ANSWER HERE"]
    assert released_metadata(released.cells[0]) == answer.metadata
