"""Shared pytest setup."""

# pytest runs with --nbval (pyproject.toml), which would collect every .ipynb it meets. Notebooks
# under tests/ are test data (e.g. submissions to grade), not chapters to check.
collect_ignore_glob = ["**/*.ipynb", "*.ipynb"]


def tiny_checkpoint(folder, texts, vocab_size: int, max_positions: int):
    """A 1-layer, 32-wide BertForPreTraining checkpoint with a WordPiece tokenizer trained on
    `texts`, saved in `folder`: a starting point for fine-tuning tests that trains in seconds."""
    import torch

    from bertlab import BertConfig, BertForPreTraining
    from bertlab.tokenization import save_tokenizer, train_wordpiece

    tokenizer = train_wordpiece(texts, vocab_size=vocab_size)
    save_tokenizer(tokenizer, folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=max_positions)
    BertForPreTraining(config).save_pretrained(folder)
    return folder


def small_corpus(folder, works: int, lines: int):
    """The first `works` works of the bundled corpus, `lines` spoken lines each, as .txt files
    named work_a, work_b, ...: a corpus folder that `bertlab pretrain` reads in a moment."""
    from bertlab.data.corpus import load_corpus
    from bertlab.pretrain import pretraining_text

    for name, work in zip("abcdefgh", load_corpus()[:works]):
        text = "\n".join(pretraining_text(work).splitlines()[:lines])
        (folder / f"work_{name}.txt").write_text(text, encoding="utf-8")
    return folder
