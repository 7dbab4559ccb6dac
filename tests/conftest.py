"""Shared pytest setup."""

# pytest runs with --nbval (pyproject.toml), which would collect every .ipynb it meets. Notebooks
# under tests/ are test data (e.g. submissions to grade), not chapters to check.
collect_ignore_glob = ["**/*.ipynb", "*.ipynb"]
