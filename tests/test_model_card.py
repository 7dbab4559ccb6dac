"""The model card's fill-in-the-blank helpers, on the course's checkpoint."""

import pytest

import bertlab
from bertlab.model_card import blanks, fill_mask
from bertlab.tokenization import load_tokenizer


@pytest.fixture(scope="module")
def model_and_tokenizer():
    path = bertlab.course_model_path()
    return bertlab.BertForPreTraining.from_pretrained(path), load_tokenizer(path)


def test_fill_mask_ranks_tokens_by_probability(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    guesses = fill_mask(model, tokenizer, "to be, or not to [MASK]: that is the question", k=5)
    probabilities = [p for _, p in guesses]
    assert len(guesses) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-3
    assert all(tokenizer.token_to_id(token) is not None for token, _ in guesses)


@pytest.mark.parametrize("text", ["no mask here", "[MASK] and [MASK]"])
def test_fill_mask_wants_exactly_one_mask(model_and_tokenizer, text):
    with pytest.raises(ValueError, match="exactly one \\[MASK\\]"):
        fill_mask(*model_and_tokenizer, text)


def test_blanks_mask_one_known_word_of_a_real_line(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    too_long = "and " * model.config.max_position_embeddings
    lines = ["Shall I compare thee to a summer's day?", "Thou art more lovely and more temperate",
             "O", too_long, "Rough winds do shake the darling buds of May"]
    found = blanks(model, tokenizer, lines, count=4, seed=1)
    assert len(found) == 3  # "O" has no word of three letters to hide; one line does not fit
    for blank in found:
        assert blank.line.count("[MASK]") == 1 and len(blank.guesses) == 5
        restored = blank.line.replace("[MASK]", blank.answer)
        assert restored.lower() in [line.lower() for line in lines]
        assert tokenizer.token_to_id(blank.answer) is not None
    assert blanks(model, tokenizer, lines, count=4, seed=1) == found  # seeded
