"""Tokenizer speed on the bundled corpus: train an 8k WordPiece, then encode every work.

    python benchmarks/bench_tokenizer.py
"""

import time

import bertlab
from bertlab.data import load_corpus
from bertlab.tokenization import load_bert_tokenizer, train_wordpiece


def timed(f, *args, **kwargs):
    """The result, and the seconds it took: wall clock, and CPU time of all threads."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = f(*args, **kwargs)
    return result, f"{time.perf_counter() - wall:.2f} s (CPU {time.process_time() - cpu:.2f} s)"


def main():
    texts = [doc.text for doc in load_corpus()]
    print(f"corpus: {len(texts)} works, {sum(map(len, texts)):,} characters, "
          f"{sum(len(t.split()) for t in texts):,} words")
    ours, seconds = timed(train_wordpiece, texts, vocab_size=8000)
    print(f"train WordPiece, vocab 8000: {seconds}")
    tokenizers = {"trained, vocab 8000": ours,
                  "bert-base-uncased, vocab 30522": load_bert_tokenizer(
                      bertlab.minilm_path() / "vocab.txt")}
    for name, tokenizer in tokenizers.items():
        encodings, seconds = timed(tokenizer.encode_batch, texts, add_special_tokens=False)
        tokens = sum(len(e.ids) for e in encodings)
        unknown = sum(e.ids.count(tokenizer.token_to_id("[UNK]")) for e in encodings)
        print(f"encode the corpus, {name}: {seconds}, {tokens:,} tokens, "
              f"{unknown:,} [UNK]")


if __name__ == "__main__":
    main()
