"""Chapter 1: tokens: the checks of exercises/01."""

from __future__ import annotations

from .framework import Answer, Case, Exercise, Mistake

# Built so that greedy longest-first goes wrong: it splits "unaffable" into 3 pieces where 2 do,
# and gives up on "abcd" ("abc", then no "##d") where "ab ##cd" spells it.
VOCAB = {"[UNK]", "un", "una", "##ffa", "##ble", "##affable", "##able", "abc", "ab", "##cd",
         "play", "pla", "##ing", "##ying", "##y", "the", "them", "##m", "a", "##a", "mist",
         "mis", "##rus", "##t", "##trust"}
INFINITE = float("inf")


def fewest(word, vocab, unk="[UNK]", prefix="##", first_prefix="", longest=True, optimal=True):
    """The split of `word` into the fewest pieces of `vocab` (ties: the longest first piece,
    then the longest second, ...), [unk] if there is none; the keywords plant the mistakes."""
    def piece(start, end):
        return (prefix if start else first_prefix) + word[start:end]

    best = [INFINITE] * len(word) + [0]  # best[i]: the fewest pieces that spell word[i:]
    for start in range(len(word) - 1, -1, -1):
        best[start] = min((1 + best[end] for end in range(start + 1, len(word) + 1)
                           if piece(start, end) in vocab), default=INFINITE)
    if best[0] == INFINITE:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
        end = next(end for end in ends if piece(start, end) in vocab
                   and (best[end] == best[start] - 1 if optimal else best[end] < INFINITE))
        pieces.append(piece(start, end))
        start = end
    return pieces


def reference_fewest_pieces(word, vocab, unk="[UNK]"):
    return fewest(word, vocab, unk)


def greedy_wordpiece(word, vocab, unk="[UNK]"):
    """The chapter's greedy longest-match-first WordPiece."""
    pieces, start = [], 0
    while start < len(word):
        mark = "##" if start else ""
        end = next((end for end in range(len(word), start, -1)
                    if mark + word[start:end] in vocab), None)
        if end is None:
            return [unk]
        pieces.append(mark + word[start:end])
        start = end
    return pieces


def fewest_pieces_cases():
    return [Case("unaffable: greedy takes 3 pieces, 2 do", ("unaffable", VOCAB)),
            Case("abcd: greedy gets stuck after 'abc'", ("abcd", VOCAB)),
            Case("playing: two 2-piece splits, the longer first piece wins", ("playing", VOCAB)),
            Case("mistrust", ("mistrust", VOCAB)),
            Case("them: one piece", ("them", VOCAB)),
            Case("a one-letter word", ("a", VOCAB)),
            Case("xyz: no split at all", ("xyz", VOCAB)),
            Case("no split, unk='<unk>'", ("qq", VOCAB), dict(unk="<unk>"))]


fewest_pieces = Exercise(
    "fewest_pieces", reference_fewest_pieces, fewest_pieces_cases,
    [Mistake("this is greedy longest-first, the chapter's WordPiece: it can take more pieces than "
             "needed (una ##ffa ##ble) or get stuck ([UNK]) where another split exists; compute "
             "best[i], the fewest pieces for word[i:], for every i from the end first",
             greedy_wordpiece),
     Mistake("rebuilding the split, take at each position the longest piece whose end j has "
             "best[j] == best[i] - 1 (it keeps the count minimal), not just one after which the "
             "rest can be spelled somehow", lambda w, v, unk="[UNK]": fewest(w, v, unk,
                                                                            optimal=False)),
     Mistake("ties: among the splits with the fewest pieces take the one with the *longest* first "
             "piece (play ##ing, not pla ##ying)", lambda w, v, unk="[UNK]": fewest(
                 w, v, unk, longest=False)),
     Mistake("pieces after the first are looked up, and returned, with the '##' prefix",
             lambda w, v, unk="[UNK]": fewest(w, v, unk, prefix="")),
     Mistake("the first piece has no '##': only the pieces after it continue a word",
             lambda w, v, unk="[UNK]": fewest(w, v, unk, first_prefix="##")),
     Mistake("when no split exists, return a list holding the unknown token, [unk]",
             lambda w, v, unk="[UNK]": [] if fewest(w, v, unk) == [unk] else fewest(w, v, unk))],
    hint="best[len(word)] = 0 and, from the end backwards, best[i] = 1 + the smallest best[j] "
         "over the ends j for which word[i:j] ('##' + it unless i == 0) is in vocab; if best[0] "
         "is infinite return [unk]; else rebuild from 0, taking each time the longest piece "
         "with best[j] == best[i] - 1", exact=True,
    forbidden=("bertlab.tokenization.encode", "tokenizers.Tokenizer.encode",
               "tokenizers.Tokenizer.encode_batch"))


def reference_build_inputs(tokens_a, tokens_b=None):
    tokens = ["[CLS]", *tokens_a, "[SEP]"]
    segments = [0] * len(tokens)
    if tokens_b is not None:
        tokens += [*tokens_b, "[SEP]"]
        segments += [1] * (len(tokens_b) + 1)
    return tokens, segments


def build_inputs_cases():
    return [Case("a pair", (["the", "cat"], ["it", "sat", "down"])),
            Case("one sentence", (["hello", "world"],)),
            Case("a pair of one-token sentences", (["yes"], ["no"]))]


def last_sep_in_segment_0(tokens_a, tokens_b=None):
    tokens, segments = reference_build_inputs(tokens_a, tokens_b)
    return tokens, segments[:-1] + [0]


def first_sep_in_segment_1(tokens_a, tokens_b=None):
    tokens, segments = reference_build_inputs(tokens_a, tokens_b)
    if tokens_b is not None:
        segments[len(tokens_a) + 1] = 1
    return tokens, segments


build_inputs = Exercise(
    "build_inputs", reference_build_inputs, build_inputs_cases,
    [Mistake("the final [SEP] belongs to sentence B: its segment id is 1", last_sep_in_segment_0),
     Mistake("the [SEP] after A closes A: its segment id is 0", first_sep_in_segment_1),
     Mistake("every sentence ends with [SEP], the last one too",
             lambda a, b=None: tuple(x[:-1] for x in reference_build_inputs(a, b)))],
    hint="[CLS] A [SEP] get segment 0, B [SEP] get segment 1; one sentence is [CLS] A [SEP]",
    returns=("tokens", "segment_ids"), exact=True,
    forbidden=("bertlab.tokenization.encode", "tokenizers.Tokenizer.encode",
               "tokenizers.Tokenizer.encode_batch", "tokenizers.Tokenizer.post_process"))


def bucket(lengths, max_tokens, order="ascending", cost="padded", within=True, keep_long=True,
           padded_to="batch", indices=True):
    """Length-bucketed batches and their padding; the keywords plant the mistakes."""
    if order == "given":
        order = list(range(len(lengths)))
    else:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i],
                       reverse=order == "descending")
    batches = []
    for i in order:
        if not keep_long and lengths[i] > max_tokens:
            continue
        if batches:
            members = [*batches[-1], i]
            size = (len(members) * max(lengths[j] for j in members) if cost == "padded"
                    else sum(lengths[j] for j in members))
            if size <= max_tokens if within else size < max_tokens:
                batches[-1].append(i)
                continue
        batches.append([i])
    longest = max(lengths, default=0)
    padding = sum((longest if padded_to == "all" else max(lengths[i] for i in batch)) - lengths[i]
                  for batch in batches for i in batch)
    if not indices:
        batches = [[lengths[i] for i in batch] for batch in batches]
    return batches, padding


def reference_batches_by_length(lengths, max_tokens):
    return bucket(lengths, max_tokens)


def wrong_bucket(**change):
    return lambda lengths, max_tokens: bucket(lengths, max_tokens, **change)


batches_by_length = Exercise(
    "batches_by_length", reference_batches_by_length,
    lambda: [Case("seven lengths, budget 24", ([5, 12, 3, 7, 4, 11, 6], 24)),
             Case("equal lengths keep their order", ([4, 2, 4, 2, 4], 8)),
             Case("a batch exactly at the budget", ([3, 3, 3, 3], 9)),
             Case("one sequence longer than the budget", ([2, 30, 3, 2], 12)),
             Case("everything fits in one batch", ([6, 1, 5], 100)),
             Case("one sequence", ([7], 16)),
             Case("no sequences", ([], 16))],
    [Mistake("sort the sequences by length first, shortest first: batching them in the order "
             "given mixes long and short ones", wrong_bucket(order="given")),
     Mistake("shortest first: sort the lengths in increasing order",
             wrong_bucket(order="descending")),
     Mistake("the budget is for the padded batch: (number of sequences) × (longest length), "
             "padding included, not the sum of the lengths", wrong_bucket(cost="real")),
     Mistake("a batch whose padded size is exactly max_tokens is allowed: at most (<=), not "
             "less than", wrong_bucket(within=False)),
     Mistake("a sequence longer than max_tokens is not dropped: it gets a batch of its own",
             wrong_bucket(keep_long=False)),
     Mistake("each batch is padded to its own longest sequence, not to the longest of all",
             wrong_bucket(padded_to="all")),
     Mistake("return the indices of the sequences (positions in `lengths`), not their lengths",
             wrong_bucket(indices=False))],
    hint="order = the indices sorted by length (stable); for each, join the last batch if "
         "(len(batch) + 1) × its length <= max_tokens, else start a new batch; padding = the sum "
         "over batches of len(batch) × longest − the lengths; return (batches, padding)",
    returns=("batches", "padding"), exact=True)


def batch_numbers(specials=3, multiple_of=8):
    lengths = [a + b + specials for a, b in ((5, 3), (2, 2), (9, 6))]
    T = -(-max(lengths) // multiple_of) * multiple_of
    return [len(lengths), T, sum(T - n for n in lengths)]


padded_batch_numbers = Answer(
    "padded_batch_numbers", lambda: batch_numbers(),
    hint="each pair is [CLS] A [SEP] B [SEP]: len(A) + len(B) + 3 tokens; T is the longest, "
         "rounded up to a multiple of 8; the padding is T minus each length, summed",
    wrong=[Mistake("each pair also has [CLS] and two [SEP]: 3 tokens more than A and B",
                   lambda: batch_numbers(specials=0)),
           Mistake("with multiple_of=8 the length is rounded up to a multiple of 8",
                   lambda: batch_numbers(multiple_of=1)),
           Mistake("a pair has one [CLS] and two [SEP]: 3 special tokens, not 2",
                   lambda: batch_numbers(specials=2))])
