"""bertlab.course.checks: every check passes the reference and fails, with a message that helps and
without crashing, on a stub, on each typical mistake, and on garbage."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

import bertlab.checkpoint
from bertlab import BertConfig, BertModel, metrics, tokenization
from bertlab.course import checks
from bertlab.encoder import BertLayer

EXERCISES = list(checks.EXERCISES.values())
MISTAKES = [(e, m) for e in EXERCISES for m in e.mistakes]
ANSWERS = list(checks.ANSWERS.values())
WRONG = [(a, m) for a in ANSWERS for m in a.wrong]


def stub(*args, **kwargs):
    raise NotImplementedError("write your code here")


GARBAGE = {
    "None": lambda *args, **kwargs: None,
    "a string": lambda *args, **kwargs: "42",
    "a wrong shape": lambda *args, **kwargs: torch.zeros(3, 5, 7),
    "its first input": lambda *args, **kwargs: args[0],
}


def failure(check, fn) -> str:
    with pytest.raises(checks.CheckFailed) as info:
        check(fn)
    return str(info.value)


def test_one_check_per_exercise_of_the_ten_notebooks():
    assert len(EXERCISES) >= 30
    for exercise in EXERCISES:
        assert getattr(checks, exercise.name) is exercise
        assert len(exercise.cases()) >= 2 and exercise.mistakes and exercise.hint
    solutions = sorted((Path(__file__).parents[1] / "solutions").glob("*.ipynb"))
    assert len(solutions) == 10
    called = []
    for path in solutions:
        tests = [cell.source for cell in nbformat.read(path, as_version=4).cells
                 if cell.metadata.get("nbgrader", {}).get("grade") and cell.cell_type == "code"]
        assert len(tests) >= 3, path.name
        called += [re.match(r"checks\.(\w+)\(", source).group(1) for source in tests]
    assert sorted(called) == sorted([*checks.EXERCISES, *checks.ANSWERS])


def test_every_written_question_has_a_model_answer():
    for path in sorted((Path(__file__).parents[1] / "solutions").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        for before, cell in zip(cells, cells[1:]):
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "markdown" and meta.get("grade"):
                assert meta["solution"] and meta["points"] > 0 and not meta["locked"], path.name
                assert before.cell_type == "markdown", f"{path.name}: the question comes first"
                lines = cell.source.strip().splitlines()
                assert lines[0] == "### BEGIN SOLUTION" and lines[-1] == "### END SOLUTION"
                assert len(lines) > 2, f"{path.name}: {meta['grade_id']} has no model answer"


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: a.name)
def test_the_expected_answer_is_right(answer, capsys):
    answer(answer.answer())
    assert capsys.readouterr().out == f"✓ {answer.name}: right\n"
    assert answer.hint


@pytest.mark.parametrize("answer, mistake", WRONG,
                         ids=[f"{a.name}-{i}" for a in ANSWERS for i in range(len(a.wrong))])
def test_a_typical_wrong_answer_fails_with_its_own_hint(answer, mistake):
    message = failure(answer, mistake.fn())
    first, hint = message.splitlines()
    assert first.startswith(f"✗ {answer.name}: ")
    assert str(answer.answer()) not in first or str(mistake.fn()) in first
    assert hint == f"  hint: {mistake.hint}"


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: a.name)
def test_an_unanswered_answer_says_so(answer):
    assert "not answered yet" in failure(answer, ...)


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_the_reference_passes(exercise, capsys):
    exercise(exercise.reference)
    n = len(exercise.cases())
    assert capsys.readouterr().out == f"✓ {exercise.name}: {n}/{n} cases passed\n"


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_a_stub_is_not_implemented_yet(exercise):
    assert failure(exercise, stub) == (f"✗ {exercise.name}: not implemented yet — replace the "
                                       "`raise NotImplementedError` line with your code")


@pytest.mark.parametrize("exercise, mistake", MISTAKES,
                         ids=[f"{e.name}-{i}" for e in EXERCISES for i in range(len(e.mistakes))])
def test_a_typical_mistake_fails_with_its_own_hint(exercise, mistake):
    """(Some mistakes are built on bertlab's own functions, which an answer may not call.)"""
    message = failure(dataclasses.replace(exercise, forbidden=()), mistake.fn)
    first, case, hint = message.splitlines()
    assert first.startswith(f"✗ {exercise.name}: ") and first.endswith(" cases passed")
    assert case.startswith("  case '")
    assert hint == f"  hint: {mistake.hint}"


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_garbage_fails_cleanly(exercise, garbage):
    message = failure(exercise, garbage)
    assert message.startswith(f"✗ {exercise.name}: 0/")
    assert f"\n  hint: {exercise.hint}" in message or any(
        f"\n  hint: {m.hint}" in message for m in exercise.mistakes)


def test_a_failure_names_the_case_and_the_first_differing_value():
    def unscaled(q, k, v, bias, mask=None):
        return checks.ch03_attention.reference_relative_attention(q, k, v, bias, mask,
                                                                  scale=False)
    message = failure(checks.relative_attention, unscaled)
    assert "case 'one sequence (T=4, d=8), R=1, no mask': output[0, 0]: expected " in message
    assert "hint: scale the scores q·k by 1/sqrt(d)" in message


def test_a_fully_masked_row_is_uniform_and_minus_infinity_is_named():
    def minus_inf(q, k, v, bias, mask=None):
        out, weights = checks.ch03_attention.reference_relative_attention(q, k, v, bias)
        if mask is None:
            return out, weights
        return checks.ch03_attention.reference_relative_attention(q, k, v, bias, mask,
                                                                  fill=float("-inf"))
    message = failure(checks.relative_attention, minus_inf)
    assert "case 'a fully masked row (query 0 sees no key)'" in message
    assert "torch.finfo(scores.dtype).min" in message


def test_forbidden_softmax_is_reported():
    message = failure(checks.softmax, lambda x: x.softmax(-1))
    assert "this calls `torch.softmax`, which this exercise asks you to do without" in message
    message = failure(checks.rms_norm, lambda x, w, eps=1e-6: torch.nn.functional.rms_norm(
        x, x.shape[-1:], w, eps))
    assert "this calls `torch.nn.functional.rms_norm`" in message


@pytest.mark.parametrize("check, answer, said", [
    ("parallel_layer", lambda x, layer, mask=None: BertLayer.forward(layer, x, mask)[0],
     "bertlab's own `bertlab.encoder.BertLayer.forward`: write it yourself"),
    ("bio_to_bioes", lambda tags: [metrics.entity_spans(tags),
                                   checks.ch09_pairs_tokens_spans.bioes(tags)][1],
     "bertlab's own `bertlab.metrics.entity_spans`: write it yourself"),
    ("answer_or_null", lambda s, e, t, max_tokens=30, null_threshold=0.0: metrics.best_span(
        s, e, 0, len(s) - 1, max_tokens),
     "bertlab's own `bertlab.metrics.best_span`: write it yourself"),
    ("fewest_pieces", lambda word, vocab, unk="[UNK]": tokenization.load_tokenizer(
        bertlab.checkpoint.minilm_path() / "tokenizer.json").encode(
            word, add_special_tokens=False).tokens,
     "`tokenizers.Tokenizer.encode`, which this exercise asks you to do without")],
    ids=["a layer's own forward", "entity_spans", "best_span", "a tokenizer"])
def test_bertlabs_own_version_of_an_exercise_fails_the_check(check, answer, said):
    """An answer that hands the work to bertlab's (or the tokenizer library's) version fails,
    whatever that version is called."""
    message = failure(getattr(checks, check), answer)
    assert f"this calls {said}" in message, message


@pytest.mark.parametrize("check, answer", [
    ("macro_f1", lambda x, y: torch.tensor(checks.ch08_classification.reference_macro_f1(x, y))),
    ("cosine_lr_at", lambda s, lr, w, t: __import__("torch").tensor(
        checks.ch07_pretraining.reference_cosine_lr_at(s, lr, w, t))),
    ("answer_or_null", lambda s, e, t, max_tokens=30, null_threshold=0.0: tuple(map(
        torch.tensor, checks.ch09_pairs_tokens_spans.reference_answer_or_null(
            s, e, t, max_tokens, null_threshold)))),
    ("overlap_f1", lambda g, p: list(checks.ch09_pairs_tokens_spans.lenient(g, p))),
    ("overlap_f1", lambda g, p: checks.ch09_pairs_tokens_spans.lenient(g, p, typed=False))],
    ids=["0-d tensor for a float", "tensor for a float", "tensors for ints",
         "lists for tuples", "entity type ignored"])
def test_answers_of_the_wrong_kind_fail_the_visible_check(check, answer):
    assert failure(getattr(checks, check), answer).startswith(f"✗ {check}: ")


def test_wrong_shape_and_dtype_are_named():
    assert "output has shape (2, 3, 20), expected (2, 5, 12)" in failure(
        checks.prune_heads, lambda heads, output, keep: heads.flatten(2))
    assert "has dtype torch.int64, expected torch.bool" in failure(
        checks.prefix_lm_mask,
        lambda m, s: checks.ch03_attention.reference_prefix_lm_mask(m, s).long())
    assert "output has shape (2, 1, 7), expected (2, 7, 7)" in failure(
        checks.prefix_lm_mask, lambda m, s: m.bool()[:, None, :])


def test_an_exception_is_reported_with_the_line_that_raised():
    def relative_attention(q, k, v, bias, mask=None):
        scores = q @ k  # forgot the transpose
        return scores, scores
    message = failure(checks.relative_attention, relative_attention)
    assert "your function raised RuntimeError: " in message
    assert "(line " in message and ": scores = q @ k  # forgot the transpose)" in message


def test_changing_an_input_in_place_is_reported():
    def sop_pairs(segments_a, segments_b, generator):
        swapped = (torch.rand(len(segments_a), generator=generator) < 0.5).tolist()
        for i, swap in enumerate(swapped):
            if swap:  # swaps the caller's own lists
                segments_a[i], segments_b[i] = segments_b[i], segments_a[i]
        return segments_a, segments_b, torch.tensor(swapped, dtype=torch.long)
    message = failure(checks.sop_pairs, sop_pairs)
    assert "your function changed its input `segments_a` in place" in message


def test_jupyter_shows_only_the_message():
    error = checks.CheckFailed("✗ x: 0/1 cases passed\n  case 'a': wrong\n  hint: h")
    assert error._render_traceback_() == ["✗ x: 0/1 cases passed", "  case 'a': wrong",
                                          "  hint: h"]


def test_not_a_function():
    assert "pass your function itself, got 5 (int)" in failure(checks.softmax, 5)


def test_a_check_leaves_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    checks.qkv_heads(checks.ch04_multi_head_attention.reference_qkv_heads)
    torch.testing.assert_close(torch.rand(3), expected)


def test_the_multiply_add_formula_counts_like_torchs_flop_counter():
    """The reference of count_multiply_adds against torch's FlopCounterMode on a real BertModel
    (2 FLOPs per multiply-add). With output_attentions=True bertlab runs the written-out
    attention, whose products the counter sees (its fused kernel on CPU it does not)."""
    from torch.utils.flop_counter import FlopCounterMode

    for config, T in ((BertConfig.tiny(vocab_size=300), 9),
                      (BertConfig(vocab_size=50, hidden_size=12, num_hidden_layers=3,
                                  num_attention_heads=3, intermediate_size=20,
                                  max_position_embeddings=16), 1)):
        model = BertModel(config).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randint(0, 50, (1, T)), output_attentions=True)
        assert counter.get_total_flops() // 2 == checks.ch05_encoder.multiply_adds(config, T)
    assert checks.ch05_encoder.multiply_adds(BertConfig.base(), 512) == 48_318_971_904


def test_checks_add_nothing_to_bertlab_classes():
    """`bertlab grade` reports any attribute added to a bertlab class as tampering; run in a fresh
    interpreter, so that nothing else has touched the classes before."""
    script = """
import sys
from bertlab.course import checks
classes = [v for name, m in list(sys.modules.items()) if name.startswith("bertlab")
           for v in vars(m).values() if isinstance(v, type) and v.__module__.startswith("bertlab")]
before = {c: set(vars(c)) for c in classes}
for exercise in checks.EXERCISES.values():
    exercise(exercise.reference)
print(sorted(f"{c.__name__}.{k}" for c in classes for k in set(vars(c)) - before[c]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[]"
