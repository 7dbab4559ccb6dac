"""nbgrader's autograde without its false alarm on test cells with hidden tests.

nbgrader stores a test cell's checksum before it clears the hidden tests, so every released test
cell that had hidden tests reads as "changed" at autograde, its own releases included
(jupyter/nbgrader#1961). This preprocessor restores the hidden tests of a cell that is exactly as
released before nbgrader compares checksums; a cell a student did change still gets nbgrader's
warning and its original source back. In `nbgrader_config.py`:

    from bertlab.course.nbgrader_autograde import SANITIZE
    c.Autograde.sanitize_preprocessors = SANITIZE

Imported only by nbgrader's configuration: bertlab itself does not need nbgrader.
"""

from __future__ import annotations

from nbformat import NotebookNode
from nbgrader.api import MissingEntry
from nbgrader.converters.autograde import Autograde
from nbgrader.preprocessors import ClearHiddenTests, OverwriteCells


def released(source: str) -> str:
    """A test cell's source as generate_assignment releases it: its hidden tests removed."""
    cell = NotebookNode(source=source)
    ClearHiddenTests()._remove_hidden_test_region(cell)
    return cell.source


class OverwriteCellsWithHiddenTests(OverwriteCells):
    """nbgrader's OverwriteCells, which takes a cell left as released for an unchanged one."""

    def preprocess_cell(self, cell, resources, cell_index):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None:
            try:
                stored = self.gradebook.find_source_cell(grade_id, self.notebook_id,
                                                         self.assignment_id)
            except MissingEntry:  # nbgrader's own preprocess_cell says so
                stored = None
            if stored is not None and stored.locked and cell.source == released(stored.source):
                cell.source = stored.source
        return super().preprocess_cell(cell, resources, cell_index)


SANITIZE = [OverwriteCellsWithHiddenTests if p is OverwriteCells else p
            for p in Autograde.sanitize_preprocessors.default()]
