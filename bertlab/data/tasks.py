"""Fine-tuning tasks built from the corpus: one for each kind of BERT head.

    genre      sequence classification  4 spoken lines -> comedy / history / tragedy
    next_line  multiple choice          a line, 4 candidates: which one comes next?
    names      token classification     tag the characters' names in 2 spoken lines (BIO, PER)
    who_said   extractive QA            a line and the scene fragment it is in: which speaker tag?

Every task is cut from the 37 plays with the same fixed split by work: no work gives examples to
two splits, and dev and test hold two comedies, two histories and two tragedies each (`SPLITS`).
Spoken lines are the speeches' lines: no speaker tags, no stage directions. The poems are left
out (they have no speakers, and no genre among the three).

    examples = load_task("genre", "train")               # plain dataclasses, text only
    data = encode_task("genre", examples, tokenizer, 64)  # token ids; data.collate batches them

`bertlab.finetune` binds each task to its model class, metrics and evaluation.

The examples do not depend on the tokenizer, so models with different vocabularies answer the
same questions. At max_seq_len 64 (for an 8k Shakespeare WordPiece or BERT's uncased vocabulary)
names and next_line are never cut, the longest 4% of genre's passages lose their last tokens, and
every who_said context fits whole.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
from tokenizers import Encoding, Tokenizer
from torch.utils.data import Dataset

from ..config import IGNORE_INDEX
from ..tokenization import unpadded
from .corpus import Document, Scene, load_corpus

# ----------------------------------------------------------------------------------------------
# The split: by work

TRAIN = ("The Tempest", "The Two Gentlemen of Verona", "The Merry Wives of Windsor",
         "Measure for Measure", "The Comedy of Errors", "Love's Labour's Lost",
         "The Merchant of Venice", "As You Like It", "The Taming of the Shrew",
         "All's Well That Ends Well", "Pericles",  # 11 comedies
         "King John", "Henry IV, Part 1", "Henry IV, Part 2", "Henry VI, Part 1",
         "Henry VI, Part 3", "Richard III",  # 6 histories
         "Troilus and Cressida", "Coriolanus", "Titus Andronicus", "Timon of Athens", "Hamlet",
         "King Lear", "Antony and Cleopatra", "Cymbeline")  # 8 tragedies
DEV = ("Much Ado About Nothing", "A Midsummer Night's Dream",
       "Henry VI, Part 2", "Henry VIII",
       "Romeo and Juliet", "Julius Caesar")
TEST = ("Twelfth Night", "The Winter's Tale",  # `bertlab pretrain` holds these out by default
        "Henry V", "Richard II",
        "Macbeth", "Othello")
SPLITS = {"train": TRAIN, "dev": DEV, "test": TEST}  # every play in exactly one
SPLIT_NAMES = tuple(SPLITS)
GENRE_LABELS = ("comedy", "history", "tragedy")
PASSAGE_LINES = 4  # genre: lines per passage
NEXT_LINE_STRIDE = 4  # next_line: one question every 4th line of a scene
NEXT_LINE_WINDOW = 50  # next_line: wrong candidates come from within 50 lines of the true one
NUM_CHOICES = 4
NAMES_LINES = 2  # names: lines per passage
CAPITALIZED_SHARE = 0.9  # names: a word is a proper noun if capitalized this often mid-sentence
FRAGMENT_WORDS = 28  # who_said: words in a fragment, speaker tags included
TAGS = ("O", "B-PER", "I-PER")
WORD = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks, as BERT splits text


@cache
def plays() -> tuple[Document, ...]:
    return tuple(d for d in load_corpus() if d.scenes)


def words(text: str) -> list[str]:
    return WORD.findall(text)


def spoken(scene: Scene) -> list[str]:
    """A scene's spoken lines, speech after speech."""
    return [line for speech in scene.speeches for line in speech.lines]


# ----------------------------------------------------------------------------------------------
# Examples: text only, one dataclass per kind of task


@dataclass(frozen=True)
class ClassificationExample:
    text: str
    label: int  # index in GENRE_LABELS (or, for your own data, in its label names)
    work: str  # where it comes from: a play's title, or FILE:ROW
    text_pair: str | None = None  # a second text, for classifying pairs


@dataclass(frozen=True)
class ChoiceExample:
    context: str  # a spoken line
    choices: tuple[str, ...]  # NUM_CHOICES candidates for the line after it
    label: int  # index of the true next line in choices
    work: str


@dataclass(frozen=True)
class TaggingExample:
    words: tuple[str, ...]
    tags: tuple[str, ...]  # one of TAGS per word
    work: str


@dataclass(frozen=True)
class SpanExample:
    question: str  # a spoken line, as it is in the context
    context: str  # "TAG. line\nline\nTAG. line": a scene fragment with its speaker tags
    answer: str  # the speaker tag of the question's line
    answer_start: int  # where that tag starts in context
    work: str


# ----------------------------------------------------------------------------------------------
# genre


def passages(document: Document, size: int) -> list[list[str]]:
    """Each scene's spoken lines in consecutive, non-overlapping groups of `size` (a scene's last
    lines, fewer than `size`, are left out)."""
    return [lines[i:i + size] for lines in map(spoken, document.scenes)
            for i in range(0, len(lines) - size + 1, size)]


def genre_examples(works: list[Document], balance: bool, rng: random.Random
                   ) -> list[ClassificationExample]:
    """4-line passages labelled with their work's genre; `balance` keeps the same number of each
    genre (a random subset of the larger ones, in their order) so that chance is 1/3."""
    by_genre = {genre: [ClassificationExample("\n".join(p), i, d.title)
                        for d in works if d.genre == genre for p in passages(d, PASSAGE_LINES)]
                for i, genre in enumerate(GENRE_LABELS)}
    if balance:
        n = min(map(len, by_genre.values()))
        by_genre = {g: [xs[i] for i in sorted(rng.sample(range(len(xs)), n))]
                    for g, xs in by_genre.items()}
    return [x for xs in by_genre.values() for x in xs]


# ----------------------------------------------------------------------------------------------
# next_line


def next_line_examples(document: Document, rng: random.Random) -> list[ChoiceExample]:
    """Every NEXT_LINE_STRIDE-th line of a scene (that has a next line in the scene) with the true
    next line and three wrong ones: distinct lines from within NEXT_LINE_WINDOW lines of it."""
    lines, starts = [], []  # the work's lines; where each scene starts among them
    for scene in document.scenes:
        starts.append(len(lines))
        lines += spoken(scene)
    examples = []
    for start, end in zip(starts, starts[1:] + [len(lines)]):
        for i in range(start, end - 1, NEXT_LINE_STRIDE):
            true = lines[i + 1]
            nearby = lines[max(0, i + 1 - NEXT_LINE_WINDOW):i + 2 + NEXT_LINE_WINDOW]
            wrong = [line for line in dict.fromkeys(nearby) if line not in (lines[i], true)]
            choices = rng.sample(wrong, NUM_CHOICES - 1)
            label = rng.randrange(NUM_CHOICES)
            choices.insert(label, true)
            examples.append(ChoiceExample(lines[i], tuple(choices), label, document.title))
    return examples


# ----------------------------------------------------------------------------------------------
# names


@cache
def proper_nouns() -> frozenset[str]:
    """Lowercased words that the plays capitalize at least CAPITALIZED_SHARE of the times they
    occur where a capital is not forced (not first in a line, not after . ! ?): "hamlet",
    "kent", "paris", but not "king" (33%), "lady" (12%) or "nurse" (1%)."""
    capitalized, lowercase = Counter(), Counter()
    for line in (line for d in plays() for scene in d.scenes for line in spoken(scene)):
        ws = words(line)
        for before, word in zip(ws, ws[1:]):
            if word[0].isalpha() and before not in (".", "!", "?"):
                (capitalized if word[0].isupper() else lowercase)[word.lower()] += 1
    return frozenset(w for w, n in capitalized.items()
                     if n >= CAPITALIZED_SHARE * (n + lowercase[w]))


def name_phrases(document: Document) -> set[tuple[str, ...]]:
    """The lowercased word sequences that name a person of the play.

    Each entry of its list of persons and each speaker tag designates one person or more
    ("Grey, Scroop", "Mar. and Ber"). Up to an "of" (what follows is a place: "Antipholus of
    Ephesus", "Duke of Gloucester"; a lord called by his title has a speaker tag that says so,
    like EXETER), its name is the run of proper nouns that ends it, as a noun phrase ends in its
    head: "Sir Toby Belch" -> "toby belch", "Lady Macbeth" -> "macbeth", "King Henry V" ->
    "henry", but "French King" and "An English Doctor" -> none. Each word of a name is a name on
    its own, too ("toby", "belch").
    """
    phrases = set()
    labels = document.persons + tuple(speech.speaker for scene in document.scenes
                                      for speech in scene.speeches)
    for label in set(labels):
        before_of = re.split(r"\bof\b", label, flags=re.IGNORECASE)[0]
        for designation in re.split(r",|\band\b", before_of):
            ws = [w for w in words(designation) if not re.fullmatch(r"[IVXivx]+", w)]
            name = []
            while ws and ws[-1].isalpha() and ws[-1].lower() in proper_nouns():
                name.insert(0, ws.pop().lower())
            if name:
                phrases |= {tuple(name)} | {(w,) for w in name}
    return phrases


def tag_names(ws: Sequence[str], phrases: set[tuple[str, ...]]) -> list[str]:
    """BIO tags for `ws`: the longest name phrase starting at each word, matched whole-word and
    case-insensitively but only where every word is capitalized ("Hamlet", "HAMLET", not
    "will")."""
    longest = max(map(len, phrases), default=0)
    first_words = {phrase[0] for phrase in phrases}
    tags = ["O"] * len(ws)
    i = 0
    while i < len(ws):
        n = 0  # the length of the name starting at word i
        if ws[i][0].isupper() and ws[i].lower() in first_words:
            n = next((n for n in range(min(longest, len(ws) - i), 0, -1)
                      if all(w[0].isupper() for w in ws[i:i + n])
                      and tuple(w.lower() for w in ws[i:i + n]) in phrases), 0)
        tags[i:i + n] = ["B-PER"] + ["I-PER"] * (n - 1) if n else []
        i += max(n, 1)
    return tags


def names_examples(document: Document) -> list[TaggingExample]:
    """The play's 2-line passages, words tagged with the play's names."""
    phrases = name_phrases(document)
    examples = []
    for passage in passages(document, NAMES_LINES):
        ws = words(" ".join(passage))
        examples.append(TaggingExample(tuple(ws), tuple(tag_names(ws, phrases)), document.title))
    return examples


# ----------------------------------------------------------------------------------------------
# who_said


def turn_cost(fragment: list[tuple[str, str]], speaker: str, line: str) -> int:
    """The words `line` adds to `fragment`: its own, and its speaker's tag if it starts a turn."""
    new_turn = not fragment or fragment[-1][0] != speaker
    return len(words(line)) + (len(words(speaker)) + 1 if new_turn else 0)


def fragments(document: Document) -> list[list[tuple[str, str]]]:
    """Each scene cut into consecutive fragments of (speaker, line) of at most FRAGMENT_WORDS
    words, speaker tags included; kept if at least two speakers speak in it. A line too long
    for any fragment belongs to none."""
    out = []
    for scene in document.scenes:
        fragment, size = [], 0
        for speaker, line in ((s.speaker, line) for s in scene.speeches for line in s.lines):
            if fragment and size + turn_cost(fragment, speaker, line) > FRAGMENT_WORDS:
                out.append(fragment)
                fragment, size = [], 0
            if turn_cost(fragment, speaker, line) <= FRAGMENT_WORDS:
                size += turn_cost(fragment, speaker, line)
                fragment.append((speaker, line))
        out.append(fragment)
    return [f for f in out if len({speaker for speaker, _ in f}) >= 2]


def who_said_example(fragment: list[tuple[str, str]], title: str,
                     rng: random.Random) -> SpanExample:
    """The fragment as text with its speaker tags; a random line in it (one that occurs once)
    is the question, the tag of the turn it is in the answer."""
    context, tag_starts = "", []  # tag_starts[i]: where the tag of line i's turn begins
    for i, (speaker, line) in enumerate(fragment):
        if i == 0 or fragment[i - 1][0] != speaker:
            context += ("\n" if context else "")
            tag_starts.append(len(context))
            context += f"{speaker}. {line}"
        else:
            tag_starts.append(tag_starts[-1])
            context += f"\n{line}"
    counts = Counter(line for _, line in fragment)
    i = rng.choice([i for i, (_, line) in enumerate(fragment) if counts[line] == 1])
    speaker, line = fragment[i]
    return SpanExample(line, context, speaker, tag_starts[i], title)


def who_said_examples(document: Document, rng: random.Random) -> list[SpanExample]:
    return [who_said_example(f, document.title, rng) for f in fragments(document)
            if 1 in Counter(line for _, line in f).values()]


# ----------------------------------------------------------------------------------------------
# Loading a task's split


@cache
def build(name: str, split: str, seed: int) -> tuple:
    works = [d for d in plays() if d.title in SPLITS[split]]
    rng = lambda d: random.Random(f"{seed}/{name}/{d.title}")  # one stream per work
    if name == "genre":
        return tuple(genre_examples(works, balance=split != "train",
                                    rng=random.Random(f"{seed}/genre/{split}")))
    if name == "next_line":
        return tuple(x for d in works for x in next_line_examples(d, rng(d)))
    if name == "names":
        return tuple(x for d in works for x in names_examples(d))
    return tuple(x for d in works for x in who_said_examples(d, rng(d)))


def load_task(name: str, split: str, seed: int = 0) -> list:
    """The examples of task `name` in `split` ("train", "dev" or "test"), in corpus order.

    `seed` draws what is drawn: next_line's wrong candidates and answer positions, who_said's
    questions, the balancing of genre's dev and test. The course's numbers use seed 0.
    """
    check_task(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLIT_NAMES}")
    return list(build(name, split, seed))


def subsample(examples: Sequence, size: int | None, seed: int) -> list:
    """`size` examples drawn at random without replacement (all of them for None), in order."""
    if size is None:
        return list(examples)
    if not 0 < size <= len(examples):
        raise ValueError(f"cannot draw {size} examples from {len(examples)}: choose a size "
                         f"from 1 to {len(examples)}")
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), size))]


# ----------------------------------------------------------------------------------------------
# Encoding: examples -> token ids and labels, and batches of them

MAX_ANSWER_TOKENS = 30  # who_said: the longest span the decoder considers, as SQuAD's
MIN_QUESTION_TOKENS = 8  # who_said: a question may be cut to fit, but not shorter than this
INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")


class TaskData(Dataset):
    """Encoded examples, one dict per example, and `collate`, which batches them into exactly
    the keyword arguments of the task's model (inputs, then its labels). `width`: pad every
    batch to this many tokens (one shape for torch.compile); None pads to the longest row."""

    def __init__(self, rows: list[dict], pad_id: int, label_keys: tuple[str, ...]):
        self.rows, self.width = rows, None
        self.fill = {"input_ids": pad_id, "token_type_ids": 0, "attention_mask": 0,
                     "labels": IGNORE_INDEX}
        self.keys = INPUT_KEYS + label_keys

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def collate(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        return {key: stack([row[key] for row in rows], self.fill.get(key, 0), self.width)
                for key in self.keys}


def stack(values: list, fill: int, width: int | None = None) -> torch.Tensor:
    """Numbers -> (B,); lists -> (B, T); lists of lists -> (B, K, T), the lists padded with
    `fill` to the longest, or to `width` if that is longer."""
    if not isinstance(values[0], list):
        return torch.tensor(values)
    nested = isinstance(values[0][0], list)
    rows = [row for value in values for row in (value if nested else [value])]
    width = max(width or 0, *map(len, rows))
    padded = torch.tensor([row + [fill] * (width - len(row)) for row in rows])  # (B*K, T)
    return padded.view(len(values), -1, width) if nested else padded


def inputs(encoding: Encoding) -> dict[str, list[int]]:
    return {"input_ids": encoding.ids, "token_type_ids": encoding.type_ids,
            "attention_mask": encoding.attention_mask}


def encode_classification(examples: list[ClassificationExample], tokenizer: Tokenizer,
                          max_seq_len: int) -> list[dict]:
    """[CLS] text [SEP], or [CLS] text [SEP] text_pair [SEP] for pairs."""
    texts = [x.text if x.text_pair is None else (x.text, x.text_pair) for x in examples]
    encodings = unpadded(tokenizer, max_seq_len).encode_batch(texts)
    return [inputs(e) | {"labels": x.label} for x, e in zip(examples, encodings)]


def encode_choices(examples: list[ChoiceExample], tokenizer: Tokenizer,
                   max_seq_len: int) -> list[dict]:
    """Each (line, candidate) pair as [CLS] line [SEP] candidate [SEP]: K sequences a row."""
    pairs = [(x.context, choice) for x in examples for choice in x.choices]
    encodings = unpadded(tokenizer, max_seq_len).encode_batch(pairs)
    rows = []
    for n, x in enumerate(examples):
        group = [inputs(e) for e in encodings[n * NUM_CHOICES:(n + 1) * NUM_CHOICES]]
        rows.append({key: [g[key] for g in group] for key in INPUT_KEYS} | {"labels": x.label})
    return rows


def encode_tagging(examples: list[TaggingExample], tokenizer: Tokenizer,
                   max_seq_len: int) -> list[dict]:
    """Word tags onto WordPiece tokens: a word's first piece gets its tag, the other pieces and
    the special tokens get IGNORE_INDEX (no loss, no score)."""
    encodings = unpadded(tokenizer, max_seq_len).encode_batch([list(x.words) for x in examples],
                                                           is_pretokenized=True)
    rows = []
    for x, e in zip(examples, encodings):
        labels = [IGNORE_INDEX if word is None or word == before else TAGS.index(x.tags[word])
                  for before, word in zip([None, *e.word_ids], e.word_ids)]
        rows.append(inputs(e) | {"labels": labels})
    return rows


def encode_spans(examples: list[SpanExample], tokenizer: Tokenizer, max_seq_len: int
                 ) -> list[dict]:
    """[CLS] question [SEP] context [SEP], and the tokens where the answer starts and ends (from
    the tokenizer's character offsets). The context is never cut: if it does not fit with at
    least MIN_QUESTION_TOKENS of the question, that is an error; a question too long for the rest
    loses its end (rare: Latin and French lines). Rows keep what decoding needs: the context's
    tokens, offsets and text."""
    contexts = unpadded(tokenizer).encode_batch([x.context for x in examples],
                                                   add_special_tokens=False)
    too_long = [len(c) for c in contexts if len(c) + 3 + MIN_QUESTION_TOKENS > max_seq_len]
    if too_long:
        raise ValueError(f"{len(too_long)} of {len(examples)} who_said contexts do not fit in "
                         f"max_seq_len {max_seq_len} with a question (the longest has "
                         f"{max(too_long)} tokens): raise max_seq_len")
    encodings = unpadded(tokenizer, max_seq_len, "only_first").encode_batch(
        [(x.question, x.context) for x in examples])
    rows = []
    for x, e in zip(examples, encodings):
        context = [t for t, s in enumerate(e.sequence_ids) if s == 1]
        end_char = x.answer_start + len(x.answer)
        start = next(t for t in context if e.offsets[t][1] > x.answer_start)
        end = max(t for t in context if e.offsets[t][0] < end_char)
        if end - start >= MAX_ANSWER_TOKENS:
            raise ValueError(f"the answer {x.answer!r} is {end - start + 1} tokens, more than "
                             f"the decoder's {MAX_ANSWER_TOKENS}: use a larger vocabulary")
        rows.append(inputs(e) | {"start_positions": start, "end_positions": end,
                                 "context_tokens": (context[0], context[-1]),
                                 "offsets": e.offsets, "context": x.context, "answer": x.answer})
    return rows


ENCODERS = {  # task -> (encode(examples, tokenizer, max_seq_len) -> rows, the label keys)
    "genre": (encode_classification, ("labels",)),
    "next_line": (encode_choices, ("labels",)),
    "names": (encode_tagging, ("labels",)),
    "who_said": (encode_spans, ("start_positions", "end_positions")),
    "classify": (encode_classification, ("labels",)),  # your own files (bertlab.data.files)
}
TASK_NAMES = ("genre", "next_line", "names", "who_said")  # the course's tasks


def check_task(name: str, names=TASK_NAMES) -> None:
    if name not in names:
        raise ValueError(f"unknown task {name!r}; choose one of {names}")


def encode_task(name: str, examples: Sequence, tokenizer: Tokenizer,
                max_seq_len: int = 64) -> TaskData:
    """Tokenize a task's examples for its model; `TaskData.collate` batches them."""
    check_task(name, tuple(ENCODERS))
    if not examples:
        raise ValueError(f"no {name} examples to encode")
    if tokenizer.token_to_id("[PAD]") is None:
        raise ValueError("the tokenizer has no [PAD] token: a BERT tokenizer is needed")
    if max_seq_len < 8:
        raise ValueError(f"max_seq_len must be at least 8 tokens, got {max_seq_len}")
    encode, label_keys = ENCODERS[name]
    return TaskData(encode(list(examples), tokenizer, max_seq_len),
                    tokenizer.token_to_id("[PAD]"), label_keys)
