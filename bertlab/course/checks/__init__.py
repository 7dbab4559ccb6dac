"""Instant feedback for the exercise notebooks.

`checks.attention(my_attention)` runs your function on a few small cases, compares it with the
reference, and prints either "✓ attention: 5/5 cases passed" or a ✗ saying which case failed, how
(shape, dtype or first differing value), and what the mistake probably is.
`checks.base_parameters(base_parameters)` checks a value you predicted or measured.
`checks.summary()` lists every exercise of the chapter: ✓, ✗ with its first problem, or not run.

The framework (`Exercise`, `Answer`, `Case`, `Mistake`) is in `framework`; each chapter's
exercises are in a module of their own, `ch01_tokens` to `ch10_inside_bert`. Every exercise is
also an attribute of this package: `from bertlab.course import checks; checks.wordpiece(f)`.
"""

from . import (
    ch01_tokens,
    ch02_embeddings,
    ch03_attention,
    ch04_multi_head_attention,
    ch05_encoder,
    ch06_pretraining_data,
    ch07_pretraining,
    ch08_classification,
    ch09_pairs_tokens_spans,
    ch10_inside_bert,
    framework,
)
from .framework import Answer, Case, CheckFailed, Exercise, Mistake, state

CHAPTERS = (ch01_tokens, ch02_embeddings, ch03_attention, ch04_multi_head_attention, ch05_encoder,
            ch06_pretraining_data, ch07_pretraining, ch08_classification, ch09_pairs_tokens_spans,
            ch10_inside_bert)
EXERCISES = {e.name: e for chapter in CHAPTERS for e in vars(chapter).values()
             if isinstance(e, Exercise)}
ANSWERS = {a.name: a for chapter in CHAPTERS for a in vars(chapter).values()
           if isinstance(a, Answer)}
globals().update(EXERCISES)
globals().update(ANSWERS)


def chapter_checks(chapter) -> list[str]:
    """The names of a chapter's checks (Exercises and Answers), in the order it defines them."""
    return [c.name for c in vars(chapter).values() if isinstance(c, (Exercise, Answer))]


def summary(chapter: int | None = None) -> None:
    """Print the state of every check of `chapter` (1-10; by default the chapters whose checks
    ran in this notebook): ✓, ✗ with its first problem, or not run."""
    if chapter is not None:
        chapters = [CHAPTERS[chapter - 1]]
    else:
        ran = set(framework.STATES)
        chapters = [c for c in CHAPTERS if ran & set(chapter_checks(c))]
    names = [name for c in chapters for name in chapter_checks(c)]
    names += [name for name in framework.STATES if name not in names]
    if not names:
        print("no checks have run yet: run the notebook's cells from the top (Run All)")
        return
    done = sum(framework.STATES.get(name, "").startswith("✓") for name in names)
    print(f"{done} of {len(names)} exercises pass their checks")
    for name in names:
        print(f"  {state(name)}")


__all__ = ["Answer", "Case", "CheckFailed", "Exercise", "Mistake", "CHAPTERS", "EXERCISES",
           "ANSWERS", "summary", *EXERCISES, *ANSWERS]
