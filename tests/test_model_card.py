"""The fill-in-the-blank measure (chapter 7's and the model card's), on the course's checkpoint."""

import re

import pytest
import torch

import bertlab
from bertlab.model_card import blank_table, fill_blanks, hit_rates, make_blanks
from bertlab.tokenization import load_tokenizer

LINES = ["Shall I compare thee to a summer's day?", "Thou art more lovely and more temperate",
         "O", "Rough winds do shake the darling buds of May", "o'er and o'er and o'er and o'er"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    path = bertlab.course_model_path()
    return bertlab.BertForPreTraining.from_pretrained(path), load_tokenizer(path)


def test_blanks_hide_one_whole_word_of_a_line_that_fits(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    too_long = "and " * model.config.max_position_embeddings
    found = make_blanks(tokenizer, [*LINES, too_long], model.config.max_position_embeddings,
                        count=10, seed=1)
    # "O" has fewer than six words; the over-long line does not fit the model
    assert sorted(b.line for b in found) == sorted([LINES[0], LINES[1], LINES[3], LINES[4]])
    mask_id = tokenizer.token_to_id("[MASK]")
    for b in found:
        assert b.ids.count(mask_id) == 1 and b.ids[b.position] == mask_id
        assert len(b.word) >= 3 and b.word.isalpha()
        assert tokenizer.id_to_token(b.answer) == b.word.lower()
        assert b.masked.replace("[MASK]", b.word) == b.line
    again = make_blanks(tokenizer, [*LINES, too_long], model.config.max_position_embeddings,
                        count=10, seed=1)
    assert again == found  # seeded
    assert len(make_blanks(tokenizer, LINES, 64, count=2)) == 2


def test_fill_blanks_ranks_tokens_and_hit_rates_count_them(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    blanks = make_blanks(tokenizer, LINES, model.config.max_position_embeddings)
    probs, guesses = fill_blanks(model, blanks, tokenizer.token_to_id("[PAD]"), k=5)
    assert probs.shape == guesses.shape == (len(blanks), 5)
    assert (probs[:, :-1] >= probs[:, 1:]).all() and (probs.sum(1) <= 1 + 1e-4).all()
    # padding does not change a blank's answer: each alone gives the same guesses
    alone = fill_blanks(model, blanks[:1], tokenizer.token_to_id("[PAD]"), k=5)
    torch.testing.assert_close(alone[0][0], probs[0], rtol=1e-4, atol=1e-6)
    truth = torch.tensor([b.answer for b in blanks])
    right_first = torch.stack([truth, *guesses[:, 1:].T], 1)  # the truth put first
    assert hit_rates(blanks, right_first) == (1.0, 1.0)
    nowhere = torch.full_like(guesses, tokenizer.token_to_id("[PAD]"))
    assert hit_rates(blanks, nowhere) == (0.0, 0.0)


def test_the_card_states_the_hit_rates_and_shows_examples(model_and_tokenizer):
    table = blank_table(*model_and_tokenizer, LINES, shown=2)
    assert re.search(r"first guess\s+\*\*\d+\.\d%\*\*", table)
    assert re.search(r"among the five likeliest\s+\*\*\d+\.\d%\*\*", table)
    assert table.count("[MASK]") == 2
    assert blank_table(*model_and_tokenizer, ["O"]) == "No held-out lines to fill in."
