"""Scores given by hand: the cells nbgrader marks as graded by hand (written answers, code read
by the instructor) are listed as awaiting manual grading until a CSV gives their points.

The CSV has a header and one row per cell graded: `student,assignment,grade_id,points[,comment]`,
the student and assignment as the gradebook names them. Every row is checked before anything is
graded: an unknown student, assignment or cell, points that are not a number, negative or above
the cell's maximum, or a cell given twice stop the run with an error naming the row.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .intake import Assignment, Submission
from .reports import Result

COLUMNS = ("student", "assignment", "grade_id", "points")


def read_manual_scores(path: Path, assignments: dict[str, Assignment],
                       submissions: list[Submission]) -> dict[tuple[str, str], dict]:
    """(student, assignment) -> {grade_id: (points, comment)}; ValueError naming a bad row."""
    by_name = {a.name: a for a in assignments.values()}
    students = {s.key[:2] for s in submissions}
    scores: dict[tuple[str, str], dict] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)}: the header must be "
                             "student,assignment,grade_id,points[,comment]")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            key, grade_id = (row["student"], row["assignment"]), row["grade_id"]
            points = checked_points(row, by_name, students, where)
            if grade_id in scores.setdefault(key, {}):
                raise ValueError(f"{where}: {grade_id} of {key[0]} ({key[1]}) is given twice")
            scores[key][grade_id] = (points, (row.get("comment") or "").strip())
    return scores


def checked_points(row: dict, assignments: dict[str, Assignment], students: set, where: str):
    """The row's points, if the row names a cell graded by hand of a submission being graded."""
    student, name, grade_id = row["student"], row["assignment"], row["grade_id"]
    if name not in assignments:
        raise ValueError(f"{where}: no assignment {name!r} (there are "
                         f"{', '.join(sorted(assignments))})")
    if (student, name) not in students:
        raise ValueError(f"{where}: no submission of {name} by {student!r}")
    manual = assignments[name].manual
    if grade_id not in manual:
        known = ", ".join(manual) or "none"
        raise ValueError(f"{where}: {grade_id!r} is not a cell of {name} graded by hand "
                         f"(those are: {known})")
    try:
        points = float(row["points"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: points {row['points']!r} is not a number") from None
    if not math.isfinite(points) or not 0 <= points <= manual[grade_id]:
        raise ValueError(f"{where}: {points:g} points for {grade_id}, whose maximum is "
                         f"{manual[grade_id]:g}")
    return points


def apply_manual_scores(result: Result, manual: dict[str, float], given: dict) -> None:
    """Put the hand-given points into `result`; note the cells still awaiting them."""
    awaiting = []
    for grade_id, possible in manual.items():
        if grade_id in given:
            points, comment = given[grade_id]
            result.scores[grade_id] = points
            result.kinds[grade_id] = "graded by hand" + (f": {comment}" if comment else "")
        else:
            result.kinds[grade_id] = "awaiting manual grading"
            awaiting.append(f"{grade_id} ({possible:g} points)")
    if awaiting:
        result.notes.append(f"awaiting manual grading: {', '.join(awaiting)}")
