"""bertlab's pretraining loop, this checkout against another commit's: tokens/s, interleaved.

    git worktree add /tmp/before COMMIT
    OMP_NUM_THREADS=1 python benchmarks/bench_before_after.py /tmp/before [--pairs 2]

Each side trains the `mini` preset through `bertlab.training.train` (128 tokens, batch 32, fp32,
dropout 0, fixed MLM positions and dynamic masks, as `bertlab pretrain`) in a fresh process of
its own: a warm-up block, then 5 blocks of 5 updates; tokens/s is the median block. The sides
alternate (before, after, before, ...) so that drifting load hits both; both read one WordPiece
tokenizer, trained once. Prints one JSON line per process and the ratio after / before.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BLOCK = """
import json, statistics, sys
checkout, tokenizer_dir = sys.argv[1:]
if checkout != "-":  # that checkout's bertlab, not the installed (editable) one
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, checkout)
import torch
torch.set_num_threads(1)
import bertlab
from bertlab.data.corpus import load_corpus
from bertlab.data.pretraining import pretraining_examples
from bertlab.pretrain import pretraining_text
from bertlab.tokenization import load_tokenizer
from bertlab.training import TrainConfig, train
assert checkout == "-" or bertlab.__file__.startswith(checkout), bertlab.__file__
texts = [pretraining_text(d) for d in load_corpus()[:12]]
tokenizer = load_tokenizer(tokenizer_dir)
data = pretraining_examples(texts, tokenizer, max_seq_len=128, dupe_factor=1,
                            dynamic_masking=True, fixed_positions=True)
config = bertlab.BertConfig.mini(vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=128,
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
torch.manual_seed(0)
model = bertlab.BertForPreTraining(config)
rates = [train(model, data, TrainConfig(steps=5, batch_size=32, lr=1e-4, warmup=0, seed=block,
                                        precision="fp32", device="cpu", log_every=5),
               collate=data.collate)[-1]["tokens_per_s"] for block in range(6)]
print(json.dumps({"blocks": [round(r) for r in rates[1:]], "median": statistics.median(rates[1:])}))
"""


def side(checkout: str, tokenizer_dir: str) -> dict:
    done = subprocess.run([sys.executable, "-c", BLOCK, checkout, tokenizer_dir],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", help="a checkout of the earlier commit (git worktree add)")
    parser.add_argument("--pairs", type=int, default=2, help="before/after pairs of processes")
    args = parser.parse_args()
    from bertlab.data.corpus import load_corpus
    from bertlab.pretrain import pretraining_text
    from bertlab.tokenization import save_tokenizer, train_wordpiece

    with tempfile.TemporaryDirectory() as tokenizer_dir:
        texts = [pretraining_text(d) for d in load_corpus()[:12]]
        save_tokenizer(train_wordpiece(texts, vocab_size=8000), tokenizer_dir)
        blocks = {"before": [], "after": []}
        for _ in range(args.pairs):
            for name, checkout in (("before", str(Path(args.before).resolve())), ("after", "-")):
                result = side(checkout, tokenizer_dir)
                blocks[name] += result["blocks"]
                print(json.dumps({name: result}))
    medians = {name: statistics.median(b) for name, b in blocks.items()}
    print(f"median tokens/s over all blocks: before {medians['before']:,.0f}, after "
          f"{medians['after']:,.0f}; after / before: {medians['after'] / medians['before']:.2f}")


if __name__ == "__main__":
    main()
