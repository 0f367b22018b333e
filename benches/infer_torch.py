#!/usr/bin/env python3
"""PyTorch reference of `shears bench infer`: the BERT encoder forward on the same shapes.

`shears bench infer --model DIR --pytorch benches/infer_torch.py` runs this script with the
model directory, batch sizes, tokens per sentence, repetitions and shears' thread count; it
loads the same checkpoint with `transformers.AutoModel` (dense: PyTorch has no sparse path
here), feeds random token ids (all attended) under `torch.inference_mode()`, and prints one
JSON object:

    {"torch": version, "threads": n, "rows": [{"batch": b, "ms": median ms per forward}]}

By hand: python3 benches/infer_torch.py --model assets/models/all-MiniLM-L6-v2 --batch 1,32

Needs `pip install torch transformers` (CPU is enough).
"""

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModel


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = AutoModel.from_pretrained(a.model).eval()
    vocab = model.config.vocab_size
    rows = []
    g = torch.Generator().manual_seed(0)
    for b in [int(x) for x in a.batch.split(",")]:
        ids = torch.randint(min(1000, vocab - 1), vocab, (b, a.seq), generator=g)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            for _ in range(2):
                model(input_ids=ids, attention_mask=mask)
            times = []
            for _ in range(a.reps):
                t = time.perf_counter()
                model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
                times.append((time.perf_counter() - t) * 1e3)
        rows.append({"batch": b, "ms": statistics.median(times)})
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
