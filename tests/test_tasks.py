"""The fine-tuning tasks: fixed splits by work, examples true to the source, encodings aligned
with the tokens, the collate feeding each head, and the metrics on hand-computed cases."""

import random
from collections import Counter

import pytest
import torch

from bertlab import BertConfig
from bertlab.data import load_corpus, tasks
from bertlab.data.tasks import (
    DEV,
    SPLITS,
    TEST,
    TRAIN,
    encode_task,
    load_task,
    name_phrases,
    subsample,
    tag_names,
    words,
)
from bertlab.finetune import TASKS, evaluate
from bertlab.metrics import best_span, entity_scores, entity_spans, exact_match, token_f1
from bertlab.model import IGNORE_INDEX, HeadOutput, SpanOutput
from bertlab.tokenization import train_wordpiece

PLAYS = {d.title: d for d in load_corpus() if d.scenes}
GENRE = {title: d.genre for title, d in PLAYS.items()}


@pytest.fixture(scope="module")
def tokenizer():
    """A small WordPiece: names and rare words split into several pieces."""
    return train_wordpiece((line for d in PLAYS.values() for s in d.scenes for sp in s.speeches
                            for line in sp.lines), vocab_size=1500)


def scene_lines(title: str) -> list[list[str]]:
    return [[line for sp in s.speeches for line in sp.lines] for s in PLAYS[title].scenes]


# ---------------------------------------------------------------------------------- splits


def test_the_split_is_fixed_and_covers_every_play_once():
    assert DEV == ("Much Ado About Nothing", "A Midsummer Night's Dream", "Henry VI, Part 2",
                   "Henry VIII", "Romeo and Juliet", "Julius Caesar")
    assert TEST == ("Twelfth Night", "The Winter's Tale", "Henry V", "Richard II", "Macbeth",
                    "Othello")
    assert len(TRAIN) == 25
    titles = [t for split in SPLITS.values() for t in split]
    assert sorted(titles) == sorted(PLAYS)  # every play, none twice, no poem


@pytest.mark.parametrize("split", ["dev", "test"])
def test_dev_and_test_hold_two_works_of_each_genre(split):
    assert Counter(GENRE[t] for t in SPLITS[split]) == {"comedy": 2, "history": 2, "tragedy": 2}


@pytest.mark.parametrize("name", list(TASKS))
def test_examples_come_from_their_split_only(name):
    for split in ("dev", "test"):
        assert {x.work for x in load_task(name, split)} == set(SPLITS[split])


def test_genre_test_and_dev_are_balanced_and_train_is_not():
    for split in ("dev", "test"):
        counts = Counter(x.label for x in load_task("genre", split))
        assert len(set(counts.values())) == 1 and len(counts) == 3
    train = load_task("genre", "train")
    assert {x.work for x in train} == set(TRAIN)
    assert all(tasks.GENRE_LABELS[x.label] == GENRE[x.work] for x in train)
    assert len(set(Counter(x.label for x in train).values())) == 3


def test_genre_passages_are_four_consecutive_spoken_lines():
    x = load_task("genre", "test")[0]
    lines = x.text.split("\n")
    assert len(lines) == 4
    assert any(scene[i:i + 4] == lines for scene in scene_lines(x.work)
               for i in range(len(scene)))


def test_unknown_task_or_split_is_an_error():
    with pytest.raises(ValueError, match="unknown task 'sentiment'"):
        load_task("sentiment", "train")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_task("genre", "validation")
    with pytest.raises(ValueError, match="cannot draw 10 examples from 3"):
        subsample([1, 2, 3], 10, seed=0)


# ---------------------------------------------------------------------------------- next_line


def test_next_line_true_choice_is_the_next_line_and_the_others_are_nearby():
    examples = load_task("next_line", "test")
    for x in examples[::20]:
        assert len(x.choices) == 4 and len(set(x.choices)) == 4
        assert x.context not in x.choices
        lines = [line for scene in scene_lines(x.work) for line in scene]
        follows = [i for i, scene in enumerate(scene_lines(x.work))
                   for j in range(len(scene) - 1)
                   if scene[j] == x.context and scene[j + 1] == x.choices[x.label]]
        assert follows, f"{x.choices[x.label]!r} does not follow {x.context!r} in {x.work}"
        true_at = [i for i, line in enumerate(lines) if line == x.choices[x.label]]
        for wrong in (c for k, c in enumerate(x.choices) if k != x.label):
            assert any(abs(i - t) <= 50 for i, line in enumerate(lines) if line == wrong
                       for t in true_at)
    positions = Counter(x.label for x in examples)
    assert all(0.22 < positions[k] / len(examples) < 0.28 for k in range(4))


def test_tasks_are_deterministic_given_the_seed():
    first = load_task("next_line", "dev", seed=3)
    tasks.build.cache_clear()
    assert load_task("next_line", "dev", seed=3) == first
    assert load_task("next_line", "dev", seed=4) != first
    assert subsample(first, 50, seed=1) == subsample(first, 50, seed=1)
    assert subsample(first, 50, seed=1) != subsample(first, 50, seed=2)


# ---------------------------------------------------------------------------------- names


def tagged(line: str, title: str) -> list[str]:
    """The words of `line` that the names task marks, entity by entity."""
    ws = words(line)
    return [" ".join(ws[a:b]) for a, b, _ in sorted(entity_spans(tag_names(ws,
                                                                         name_phrases(PLAYS[title]))))]


def test_names_marks_persons_and_leaves_titles_roles_and_places():
    assert tagged("By my troth, Sir Toby, you must come in earlier o' nights", "Twelfth Night") \
        == ["Toby"]
    assert tagged("Lady Macbeth and Macduff will wait upon the king.", "Macbeth") \
        == ["Macbeth", "Macduff"]  # "Lady" is a title; "will" is no Will
    assert tagged("Good Sir Thomas Erpingham, and Gloucester too.", "Henry V") \
        == ["Thomas Erpingham", "Gloucester"]  # a multiword name is one entity
    assert tagged("Antipholus of Ephesus, and the Duke", "The Comedy of Errors") \
        == ["Antipholus"]  # Ephesus is a place, the Duke a title
    assert tagged("The French king and an English doctor; HAMLET's ghost", "Macbeth") == []


def test_names_phrases_come_from_persons_and_speaker_tags():
    henry_v = name_phrases(PLAYS["Henry V"])
    assert {("exeter",), ("thomas", "erpingham"), ("henry",)} <= henry_v  # EXETER is a tag
    assert not {("king",), ("french",), ("of",), ("v",)} & henry_v
    names = load_task("names", "test")
    marked = Counter(" ".join(x.words[a:b]) for x in names for a, b, _ in entity_spans(x.tags))
    assert {"Cassio", "Iago", "Macbeth", "Malvolio", "Bolingbroke"} <= set(marked)
    assert all(w[0].isupper() for name in marked for w in name.split())


def test_names_tags_realign_to_the_first_piece_of_each_word(tokenizer):
    x = tasks.TaggingExample(("Sweet", "Sir", "Andrew", "Aguecheek", "!"),
                             ("O", "O", "B-PER", "I-PER", "O"), "Twelfth Night")
    row = encode_task("names", [x], tokenizer, 64)[0]
    pieces = [tokenizer.id_to_token(i) for i in row["input_ids"]]
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert sum(p.startswith("##") for p in pieces) >= 2  # some words are split
    labelled = [(p, label) for p, label in zip(pieces, row["labels"]) if label != IGNORE_INDEX]
    assert [label for _, label in labelled] == [0, 0, 1, 2, 0]  # one per word, in order
    assert all(not p.startswith("##") for p, _ in labelled)
    assert [label for p, label in zip(pieces, row["labels"]) if p.startswith("##")] \
        == [IGNORE_INDEX] * sum(p.startswith("##") for p in pieces)


# ---------------------------------------------------------------------------------- who_said


def test_who_said_answer_is_the_tag_of_the_speech_with_the_quoted_line():
    examples = load_task("who_said", "dev")
    for x in examples:
        tag_end = x.answer_start + len(x.answer)
        assert x.context[x.answer_start:tag_end] == x.answer
        assert x.answer_start == 0 or x.context[x.answer_start - 1] == "\n"  # a tag starts a line
        assert x.context[tag_end:tag_end + 2] == ". "
        speeches = [sp for scene in PLAYS[x.work].scenes for sp in scene.speeches]
        assert x.question in [line for sp in speeches if sp.speaker == x.answer
                              for line in sp.lines]  # the tag's speaker says the line
        between = x.context[x.answer_start:].split(x.question)[0].split("\n")[1:]
        other_tags = {f"{sp.speaker}. " for sp in speeches} - {f"{x.answer}. "}
        assert not [line for line in between if line.startswith(tuple(other_tags))]
        assert len({line.split(". ")[0] for line in x.context.split("\n")}) >= 2
    assert len(examples) > 1500 and len({x.answer for x in examples}) > 50


def test_who_said_gold_tokens_decode_to_the_answer(tokenizer):
    examples = load_task("who_said", "test")[:300]
    data = encode_task("who_said", examples, tokenizer, 128)
    for x, row in zip(examples, data.rows):
        start, end = row["start_positions"], row["end_positions"]
        first, last = row["context_tokens"]
        assert first <= start <= end <= last
        assert x.context[row["offsets"][start][0]:row["offsets"][end][1]] == x.answer
        start_logits, end_logits = torch.zeros(2, len(row["input_ids"]))
        start_logits[start], end_logits[end] = 1.0, 1.0
        assert best_span(start_logits, end_logits, first, last) == (start, end)


def test_who_said_never_cuts_a_context(tokenizer):
    examples = load_task("who_said", "dev")
    with pytest.raises(ValueError, match="do not fit in max_seq_len 24"):
        encode_task("who_said", examples, tokenizer, 24)


# ---------------------------------------------------------------------------------- batches


def small_model(name: str, tokenizer):
    task = TASKS[name]
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, num_labels=task.num_labels or 2)
    torch.manual_seed(0)
    return task.model_class(config)


@pytest.mark.parametrize("name,label_keys,shape", [
    ("genre", ("labels",), 2), ("next_line", ("labels",), 3), ("names", ("labels",), 2),
    ("who_said", ("start_positions", "end_positions"), 2)])
def test_collate_gives_exactly_the_heads_arguments(tokenizer, name, label_keys, shape):
    data = encode_task(name, load_task(name, "test")[:6], tokenizer, 128)
    batch = data.collate(data.rows[:5])
    assert tuple(batch) == ("input_ids", "token_type_ids", "attention_mask", *label_keys)
    assert batch["input_ids"].dim() == shape and batch["input_ids"].shape[0] == 5
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()  # [PAD] is 0
    output = small_model(name, tokenizer)(**batch)
    assert torch.isfinite(output.loss)


@pytest.mark.parametrize("name", ["genre", "next_line", "names", "who_said"])
def test_a_fixed_width_pads_every_batch_to_it_and_changes_no_loss(tokenizer, name):
    """What `bertlab finetune --compile` trains on: one shape, whatever the rows' lengths."""
    data = encode_task(name, load_task(name, "test")[:6], tokenizer, 128)
    longest = data.collate(data.rows[:5])
    data.width = 128
    fixed = data.collate(data.rows[:5])
    assert fixed["input_ids"].shape[-1] == 128 > longest["input_ids"].shape[-1]
    assert all(v.shape[:-1] == longest[k].shape[:-1] for k, v in fixed.items() if v.dim() > 1)
    model = small_model(name, tokenizer).eval()
    torch.testing.assert_close(model(**fixed).loss, model(**longest).loss)


class Oracle(torch.nn.Module):
    """A 'model' that reads the answers from the batch: every score should be perfect."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, token_type_ids, attention_mask, labels=None,
                start_positions=None, end_positions=None):
        if self.name == "who_said":
            onehot = lambda i: torch.nn.functional.one_hot(i, input_ids.shape[-1]).float()
            return SpanOutput(onehot(start_positions), onehot(end_positions))
        return HeadOutput(torch.nn.functional.one_hot(labels.clamp(min=0), 4).float())


@pytest.mark.parametrize("name,perfect", [("genre", {"accuracy": 1.0}),
                                          ("next_line", {"accuracy": 1.0}),
                                          ("names", {"precision": 1.0, "recall": 1.0, "f1": 1.0}),
                                          ("who_said", {"exact_match": 1.0, "f1": 1.0})])
def test_evaluate_scores_the_right_answers_as_perfect(tokenizer, name, perfect):
    examples = load_task(name, "test")
    examples = [x for x in examples if name != "names" or "B-PER" in x.tags][:40]
    data = encode_task(name, examples, tokenizer, 128)
    assert evaluate(TASKS[name], Oracle(name), data, batch_size=16) == perfect
    assert TASKS[name].metric in perfect


# ---------------------------------------------------------------------------------- metrics


def test_entity_spans_read_bio_as_seqeval():
    assert entity_spans(["B-PER", "I-PER", "O", "B-PER"]) == {(0, 2, "PER"), (3, 4, "PER")}
    assert entity_spans(["I-PER", "I-PER", "O"]) == {(0, 2, "PER")}  # I after O begins one
    assert entity_spans(["B-PER", "B-PER"]) == {(0, 1, "PER"), (1, 2, "PER")}
    assert entity_spans(["O", "O"]) == set()


def test_entity_f1_counts_only_exact_spans():
    gold = [["B-PER", "I-PER", "O", "B-PER"], ["O", "B-PER"]]
    found = [["B-PER", "O", "O", "B-PER"], ["O", "O"]]  # one of three right, one half-found
    scores = entity_scores(gold, found)
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert entity_scores([["O"]], [["O"]])["f1"] == 0.0


def test_squad_exact_match_and_f1():
    assert exact_match("the HAMLET.", "Hamlet") == 1.0
    assert exact_match("Lady Capulet", "Capulet") == 0.0
    assert token_f1("Lady Capulet", "Capulet") == pytest.approx(2 / 3)  # P 1/2, R 1
    assert token_f1("First Witch", "Second Witch") == pytest.approx(1 / 2)
    assert token_f1("Romeo", "Juliet") == 0.0
    assert token_f1("the", "a") == 1.0  # both empty once normalized


def test_best_span_keeps_start_before_end_within_context_and_length():
    start = torch.tensor([9.0, 0.0, 1.0, 0.0, 5.0, 0.0])
    end = torch.tensor([9.0, 3.0, 0.0, 0.0, 0.0, 2.0])
    assert best_span(start, end, 1, 5) == (4, 5)  # position 0 ([CLS]) is not in the context
    assert best_span(start, end, 1, 5, max_tokens=1) == (4, 4)
    start, end = torch.tensor([0.0, 0.0, 4.0, 0.0]), torch.tensor([0.0, 5.0, 0.0, 2.0])
    assert best_span(start, end, 1, 3) == (2, 3)  # not (2, 1): an end never precedes its start
    rng = random.Random(0)
    s, e = (torch.tensor([rng.random() for _ in range(12)]) for _ in range(2))
    brute = max(((i, j) for i in range(2, 10) for j in range(i, min(i + 4, 10))),
                key=lambda ij: s[ij[0]] + e[ij[1]])
    assert best_span(s, e, 2, 9, max_tokens=4) == brute
