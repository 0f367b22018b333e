#!/usr/bin/env python3
"""PyTorch CPU reference for `cargo bench -p shears-models --bench bert_forward`.

Same shape: MiniLM-L6 (6 layers, hidden 384, 12 heads, FFN 1536), random weights, batch 32 x
seq 64, no padding, eval mode, no grad, float32, default thread count. Prints tokens/s.

    ~/.cache/bertref-venv/bin/python models/benches/bert_forward_torch.py [iterations]
"""

import sys
import time

import torch
from transformers import BertConfig, BertModel

BATCH, SEQ = 32, 64


def main():
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        hidden_act="gelu",
    )
    model = BertModel(config).eval()
    ids = (torch.arange(BATCH * SEQ) * 7919 % (30522 - 1000) + 1000).reshape(BATCH, SEQ)
    types = torch.zeros_like(ids)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(3):
            model(input_ids=ids, token_type_ids=types, attention_mask=mask)
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            model(input_ids=ids, token_type_ids=types, attention_mask=mask)
            times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, attn "
        f"{model.config._attn_implementation}: median {median * 1e3:.1f} ms/forward, "
        f"{BATCH * SEQ / median:.0f} tokens/s (best {BATCH * SEQ / times[0]:.0f})"
    )


if __name__ == "__main__":
    main()
