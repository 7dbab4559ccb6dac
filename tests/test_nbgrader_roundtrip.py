"""bertlab and nbgrader read the same notebooks the same way: an assignment like nbgrader's own
documentation example (ps1/problem1.ipynb: autograded tests, a written answer and a code cell
graded by hand) gets the same maximum and the same scores from `bertlab make-exercises` +
`bertlab grade` as from nbgrader's generate_assignment + autograde, and the notebooks
`make-exercises` writes are ones nbgrader's autograde accepts as its own releases.
"""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bertlab.cli import main

nbgrader_api = pytest.importorskip("nbgrader.api")
pytestmark = pytest.mark.skipif(sys.platform != "linux" or not Path("/usr/bin/bwrap").exists(),
                                reason="bertlab grade's sandbox needs Linux and bubblewrap")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SQUARES = '''def squares(n):
    """Compute the squares of numbers from 1 to n: [1, 4, 9, ..., n**2]."""
    ### BEGIN SOLUTION
    if n < 1:
        raise ValueError("n must be greater than or equal to 1")
    return [i ** 2 for i in range(1, n + 1)]
    ### END SOLUTION'''
SUM_OF_SQUARES = '''def sum_of_squares(n):
    """Compute the sum of the squares of numbers from 1 to n."""
    ### BEGIN SOLUTION
    return sum(squares(n))
    ### END SOLUTION'''
TABLE = '''### BEGIN SOLUTION
table = {n: sum_of_squares(n) for n in range(1, 6)}
### END SOLUTION
print(table)'''


def cell(kind: str, source: str, grade_id: str, **nbgrader) -> nbformat.NotebookNode:
    new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    made = new(source)
    made.id = grade_id
    made.metadata["nbgrader"] = {"grade": False, "solution": False, "locked": False,
                                 "grade_id": grade_id, "schema_version": 3, **nbgrader}
    return made


def problem1() -> nbformat.NotebookNode:
    """Like nbgrader's docs/source/user_guide/source/ps1/problem1.ipynb: 6 points, 2 by hand."""
    test = {"grade": True, "locked": True}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        cell("markdown", "For this problem set, we'll be using the Jupyter notebook.", "intro",
             locked=True),
        cell("code", SQUARES, "squares", solution=True),
        cell("code", 'assert squares(1) == [1], "squares(1)"\nassert squares(2) == [1, 4]\n'
             "assert squares(10) == [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]\n"
             "### BEGIN HIDDEN TESTS\nassert squares(11)[-1] == 121\n### END HIDDEN TESTS",
             "correct_squares", points=1, **test),
        cell("code", "try:\n    squares(0)\nexcept ValueError:\n    pass\nelse:\n"
             '    raise AssertionError("did not raise")', "squares_invalid_input", points=1,
             **test),
        cell("code", SUM_OF_SQUARES, "sum_of_squares", solution=True),
        cell("code", "assert sum_of_squares(1) == 1\nassert sum_of_squares(10) == 385",
             "correct_sum_of_squares", points=0.5, **test),
        cell("code", "_squares = squares\ndel squares\ntry:\n    sum_of_squares(3)\n"
             "except NameError:\n    pass\nelse:\n"
             '    raise AssertionError("sum_of_squares does not use squares")\n'
             "finally:\n    squares = _squares", "sum_of_squares_uses_squares", points=0.5,
             **test),
        cell("markdown", "Write the sum of squares with LaTeX:\n### BEGIN SOLUTION\n"
             "$\\sum_{i=1}^n i^2$\n### END SOLUTION", "sum_of_squares_equation",
             solution=True, grade=True, points=1),
        cell("code", TABLE, "sum_of_squares_table", solution=True, grade=True, points=2),
    ]
    return nb


def stripped(source: str) -> str:
    """A solution cell's solved source, the markers removed."""
    return "\n".join(line for line in source.split("\n") if "### " not in line)


# what each student writes in the solution cells (the rest of the notebook is the release)
WORK = {
    "bitdiddle": {"squares": stripped(SQUARES), "sum_of_squares": stripped(SUM_OF_SQUARES),
                  "sum_of_squares_table": stripped(TABLE)},
    "hacker": {"squares": "def squares(n):\n    return list(range(1, n + 1))",
               "sum_of_squares": stripped(SUM_OF_SQUARES),
               "sum_of_squares_table": "table = None\nprint(table)"},
    "lazy": {},
    "tamperer": {"correct_squares": "assert True"},  # a locked test cell changed
}
MANUAL = {("bitdiddle", "sum_of_squares_equation"): 1, ("bitdiddle", "sum_of_squares_table"): 1.5,
          ("hacker", "sum_of_squares_equation"): 0.5}


def submission(release: nbformat.NotebookNode, sources: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(json.loads(nbformat.writes(release)))
    for c in nb.cells:
        grade_id = c.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in sources:
            c.source = sources[grade_id]
        elif grade_id == "sum_of_squares_equation" and sources:
            c.source = "$\\sum i^2$"
    return nb


def nbgrader(course: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def nbgrader_course(root: Path, assignment: str, notebooks: dict[str, nbformat.NotebookNode]):
    course = root / "course"
    (course / "source" / assignment).mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(  # as solutions/README.md tells instructors
        f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\n"
        "from bertlab.course.nbgrader_autograde import SANITIZE\n"
        "c.Autograde.sanitize_preprocessors = SANITIZE\n")
    for name, nb in notebooks.items():
        nbformat.write(nb, course / "source" / assignment / f"{name}.ipynb")
    return course


def nbgrader_scores(course: Path, assignment: str, notebook: str) -> dict[str, dict]:
    """student -> grade_id -> (score, max score) in nbgrader's gradebook."""
    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {s.id: {g.name: (g.score, g.max_score) for g in
                       gb.find_submission_notebook(notebook, assignment, s.id).grades}
                for s in gb.students}


def warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if "| WARNING]" in line]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """problem1 graded by nbgrader (our released notebooks submitted) and by bertlab."""
    root = tmp_path_factory.mktemp("roundtrip")
    source = problem1()
    course = nbgrader_course(root, "ps1", {"problem1": source})
    log = nbgrader(course, "generate_assignment", "ps1", "--force")
    nbformat.write(source, root / "problem1.ipynb")
    assert main(["make-exercises", str(root / "problem1.ipynb"), str(root / "exercises")]) == 0
    ours = nbformat.read(root / "exercises" / "problem1.ipynb", as_version=4)
    for student, sources in WORK.items():
        for folder in (course / "submitted" / student / "ps1", root / "submissions" / student):
            folder.mkdir(parents=True)
            nbformat.write(submission(ours, sources), folder / "problem1.ipynb")
    log += nbgrader(course, "autograde", "ps1", "--force")
    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for (student, grade_id), points in MANUAL.items():
            grade = gb.find_grade(grade_id, "problem1", "ps1", student)
            grade.manual_score = points
        gb.db.commit()
    with open(root / "manual.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "assignment", "grade_id", "points", "comment"])
        writer.writerows([s, "problem1", g, p, "read by hand"] for (s, g), p in MANUAL.items())
    assert main(["grade", str(root / "submissions"), "--solutions", str(root / "problem1.ipynb"),
                 "--out", str(root / "grades"), "--manual-scores", str(root / "manual.csv")]) == 0
    with open(root / "grades" / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    return nbgrader_scores(course, "ps1", "problem1"), rows, log, (course, ours)


def test_the_same_maximum_and_the_same_score_for_every_cell(both):
    theirs, rows, _, _ = both
    for student, grades in theirs.items():
        assert float(rows[student]["max"]) == sum(m for _, m in grades.values()) == 6
        for grade_id, (score, _) in grades.items():
            assert float(rows[student][grade_id]) == (score or 0), (student, grade_id)
        assert float(rows[student]["total"]) == sum(s or 0 for s, _ in grades.values())
    assert [rows[s]["total"] for s in ("bitdiddle", "hacker", "lazy")] == ["5.5", "1", "0"]


def test_cells_graded_by_hand_await_their_scores(tmp_path):
    nbformat.write(problem1(), tmp_path / "problem1.ipynb")
    assert main(["make-exercises", str(tmp_path / "problem1.ipynb"), str(tmp_path / "ex")]) == 0
    released = nbformat.read(tmp_path / "ex" / "problem1.ipynb", as_version=4)
    sources = {c.metadata["nbgrader"]["grade_id"]: c.source for c in released.cells}
    assert sources["sum_of_squares_equation"] == (
        "Write the sum of squares with LaTeX:\nYOUR ANSWER HERE")
    assert sources["sum_of_squares_table"] == "table = ...  # YOUR ANSWER HERE\nprint(table)"
    bad = tmp_path / "bad.csv"
    for row, problem in ((["lazy", "problem1", "sum_of_squares_table", "3"],
                          "line 2: 3 points for sum_of_squares_table, whose maximum is 2"),
                         (["nobody", "problem1", "sum_of_squares_table", "1"],
                          "line 2: no submission of problem1 by 'nobody'"),
                         (["lazy", "problem1", "correct_squares", "1"],
                          "line 2: 'correct_squares' is not a cell of problem1 graded by hand")):
        bad.write_text("student,assignment,grade_id,points\n" + ",".join(row) + "\n")
        (tmp_path / "lazy").mkdir(exist_ok=True)
        nbformat.write(released, tmp_path / "lazy" / "problem1.ipynb")
        with pytest.raises(ValueError, match=re.escape(f"{bad}, {problem}")):
            from bertlab.course.grading import grade

            grade([tmp_path / "lazy"], tmp_path / "problem1.ipynb", tmp_path / "out",
                  manual_scores=bad)


def test_feedback_lists_the_cells_awaiting_manual_grading(both):
    _, rows, _, _ = both
    assert "awaiting manual grading: sum_of_squares_table (2 points)" in rows["hacker"]["notes"]
    assert "awaiting manual grading" not in rows["bitdiddle"]["notes"]


def test_nbgrader_takes_our_released_notebooks_for_its_own(both):
    _, _, log, (course, ours) = both
    release = nbformat.read(course / "release" / "ps1" / "problem1.ipynb", as_version=4)
    def comparable(c):  # a solution cell's checksum is of its stub, which differs
        solution = c.metadata["nbgrader"]["solution"]
        return {**c.metadata, "nbgrader": {k: v for k, v in c.metadata["nbgrader"].items()
                                           if not (solution and k == "checksum")}}

    assert [comparable(c) for c in ours.cells] == [comparable(c) for c in release.cells]
    assert [c.source for c in ours.cells if c.cell_type == "markdown"] == [
        c.source for c in release.cells if c.cell_type == "markdown"]
    # with bertlab's OverwriteCells, the one warning is of the cell a student changed
    assert [w.split("] ", 1)[1].split(" (")[0] for w in warnings(log)] == [
        "Attribute 'checksum' for cell correct_squares has changed!"]


def test_a_course_solution_goes_through_nbgrader(tmp_path):
    """One of our solutions/ as an nbgrader source: its release autogrades at full marks, with no
    warning (bertlab's OverwriteCells keeps jupyter/nbgrader#1961 from calling every test cell
    with hidden tests changed)."""
    solution = ROOT / "solutions" / "03_attention.ipynb"
    nb = nbformat.read(solution, as_version=4)
    course = nbgrader_course(tmp_path, "ch03", {"03_attention": nb})
    log = nbgrader(course, "generate_assignment", "ch03", "--force")
    nbformat.write(nb, tmp_path / solution.name)
    assert main(["make-exercises", str(tmp_path / solution.name), str(tmp_path / "ex")]) == 0
    ours = nbformat.read(tmp_path / "ex" / solution.name, as_version=4)
    solved = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
              if c.metadata.get("nbgrader", {}).get("solution")}
    (course / "submitted" / "solver" / "ch03").mkdir(parents=True)
    nbformat.write(submission(ours, solved), course / "submitted" / "solver" / "ch03" /
                   solution.name)
    log += nbgrader(course, "autograde", "ch03", "--force")
    assert any("### BEGIN HIDDEN TESTS" in c.source for c in nb.cells)
    assert warnings(log) == []
    grades = nbgrader_scores(course, "ch03", "03_attention")["solver"]
    by_hand = {c.metadata["nbgrader"]["grade_id"] for c in nb.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    auto = {g: score for g, score in grades.items() if g not in by_hand}
    assert auto and all(score == possible for score, possible in auto.values()), grades
