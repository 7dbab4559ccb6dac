"""What `bertlab grade` writes, as each notebook finishes: OUT/gradebook.csv (one row per file
handed in), OUT/feedback/STUDENT.md, and OUT/logs/STUDENT/ (each executed notebook, its kernel's
stdout and stderr, its feedback section). Every file is replaced atomically, so a grader killed
half-way leaves every finished row; rows of an earlier run are kept unless graded again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

FIXED = ("student", "assignment", "file")
TRAILING = ("total", "max", "notes", "checksum")


@dataclass
class Result:
    student: str
    assignment: str  # "" if it could not be told
    path: Path
    exercises: dict[str, float]  # exercise -> points possible
    scores: dict[str, float] = field(default_factory=dict)  # exercise -> points earned
    messages: dict[str, list[str]] = field(default_factory=dict)  # exercise -> what went wrong
    notes: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # exercise -> how its verdict was reached
    cases: dict[str, tuple[int, int]] = field(default_factory=dict)  # exercise -> (passed, of)
    checksum: str = ""  # of the file and solution graded; "" if it could not be graded
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    @property
    def max(self) -> float:
        return sum(self.exercises.values())

    @property
    def error(self) -> bool:
        """It could not be graded (unreadable, unmatched, or the sandbox failed)."""
        return not self.checksum


def points(x: float) -> str:
    """Points as the gradebook writes them: 2, 1.5, 0.67 (two decimals at most)."""
    return f"{round(x, 2):g}"


def safe_name(name: str) -> str:
    """A file name for `name`, different for different names ("x y" and "x_y" included)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".") or "_"
    if safe == name:
        return safe
    return f"{safe}~{hashlib.sha256(name.encode()).hexdigest()[:8]}"  # "~" is never kept as is


def atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class Reports:
    """The output folder; `add` records one result and rewrites what it changes."""

    def __init__(self, out: Path, exercises: list[str]):
        self.out = Path(out)
        self.gradebook = self.out / "gradebook.csv"
        (self.out / "feedback").mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.exercises = list(exercises)
        self.rows: dict[tuple[str, str, str], dict[str, str]] = {}
        self.lock = threading.Lock()
        if self.gradebook.exists():
            self.read()

    def read(self) -> None:
        with open(self.gradebook, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not set(FIXED + TRAILING) <= set(reader.fieldnames or ()):
                raise ValueError(f"{self.gradebook} is not a gradebook of bertlab grade: give "
                                 "another --out")
            columns = [c for c in reader.fieldnames if c not in FIXED + TRAILING]
            self.exercises += [c for c in columns if c not in self.exercises]
            for row in reader:
                self.rows[row["student"], row["assignment"], row["file"]] = row

    def logs(self, student: str) -> Path:
        """OUT/logs/STUDENT: the executed notebooks, kernel logs and feedback of one student."""
        folder = self.out / "logs" / safe_name(student)
        folder.mkdir(exist_ok=True)
        return folder

    def graded(self, key: tuple[str, str, str], checksum: str) -> bool:
        """Has this file been graded, against these solutions, in this folder already?"""
        row = self.rows.get(key)
        return row is not None and row["checksum"] == checksum != ""

    def add(self, result: Result, label: str) -> None:
        row = {"student": result.student, "assignment": result.assignment,
               "file": str(result.path), "total": points(result.total), "max": points(result.max),
               "notes": "; ".join(result.notes), "checksum": result.checksum}
        row |= {e: points(result.scores[e]) for e in result.exercises}
        with self.lock:
            self.exercises += [e for e in result.exercises if e not in self.exercises]
            self.rows[result.student, result.assignment, str(result.path)] = row
            atomic_write(self.logs(result.student) / f"{label}.md",
                         feedback(result).encode("utf-8"))
            self.write_feedback(result.student)
            self.write_gradebook()

    def write_gradebook(self) -> None:
        """One row per file; one column per exercise (blank where not part of its assignment)."""
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, [*FIXED, *self.exercises, *TRAILING], restval="")
        writer.writeheader()
        for key in sorted(self.rows):
            writer.writerow({k: v for k, v in self.rows[key].items() if k in writer.fieldnames})
        atomic_write(self.gradebook, text.getvalue().encode("utf-8"))

    def write_feedback(self, student: str) -> None:
        """OUT/feedback/STUDENT.md: every section of the student's, from this run and before."""
        sections = sorted(self.logs(student).glob("*.md"))
        text = "\n".join([f"# Feedback for {student}", "", *(p.read_text(encoding="utf-8")
                                                              for p in sections)])
        atomic_write(self.out / "feedback" / f"{safe_name(student)}.md", text.encode("utf-8"))


def feedback(r: Result) -> str:
    """One assignment's section: the score, the notes, and what failed and why."""
    lines = [f"## {r.assignment or r.path.name}: {points(r.total)} / {points(r.max)}", ""]
    lines += [f"- {note}" for note in r.notes] + ([""] if r.notes else [])
    for exercise, possible in r.exercises.items():
        score = r.scores[exercise]
        verdict = "passed" if score == possible else "partly passed" if score else "failed"
        if r.kinds.get(exercise) == "awaiting manual grading":
            lines.append(f"- **{exercise}**: awaiting manual grading (of {points(possible)})")
            continue
        if exercise in r.cases and 0 < score < possible:
            verdict += " ({} of {} cases)".format(*r.cases[exercise])
        kind = f" ({r.kinds[exercise]})" if exercise in r.kinds else ""
        lines.append(f"- **{exercise}**: {points(score)} / {points(possible)}, {verdict}{kind}")
        lines += [f"    - {m}" for m in r.messages.get(exercise, [])]
    return "\n".join(lines) + "\n"
