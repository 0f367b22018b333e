#!/usr/bin/env python3
"""PyTorch reference of a shears training step, for `shears bench train --pytorch`.

`shears bench train RECIPE --pytorch benches/train_step_torch.py` times the recipe's step in
shears, exports the model it starts from (Hugging Face directory for BERT; torch-named
safetensors for ResNets) and writes a spec (`--spec FILE`, JSON; `ReferenceSpec` in
`src/train/bench.rs`): the model family and directory, the recipe's optimizer section,
clipping, label smoothing, the thread count, the warm-up step count and the main input's
shape of every micro-batch of every timed step. This script runs the same steps in PyTorch
on the same shapes and prints one JSON object:

    {"steps", "step_ms" (median), "examples_per_sec", "phases_ms": {forward, backward,
     clip, optimizer} (mean per step), "torch", "threads"}

What is the same as shears: the model and its weights, train mode (dropout on), batch
shapes step by step, the loss (cross-entropy with the recipe's label smoothing, MSE for
one-label regression), gradient accumulation over the step's micro-batches, global-norm
clipping, the optimizer (AdamW/Adam/SGD with the recipe's settings and no-decay groups) and
the threads. What differs: inputs are random token ids (all attended) or random images
built before the clock starts, so there is no data phase; M-FAC and question answering are
not covered.

By hand (after a `shears bench train ... --json` has printed a spec path, or with your own):

    python3 benches/train_step_torch.py --spec /tmp/shears-bench-train-*/reference.json

Needs `pip install torch` (CPU is enough), and `transformers` for BERT.
"""

import argparse
import json
import pathlib
import re
import statistics
import sys
import time

import torch
import torch.nn.functional as F

REPO = pathlib.Path(__file__).resolve().parents[1]


def cifar_or_torchvision_resnet(family, num_classes):
    """The ResNet named `family` (`resnet20`, `resnet20b`, `resnet18`, `resnet34`, `resnet50`)."""
    m = re.fullmatch(r"resnet(\d+)(b?)", family)
    if not m:
        sys.exit(f"unknown model family {family!r}")
    depth, option_b = int(m.group(1)), m.group(2) == "b"
    if depth in (18, 34, 50) and not option_b:
        if depth == 50:
            try:
                import torchvision
            except ImportError:
                sys.exit("resnet50 needs torchvision (pip install torchvision)")
            return torchvision.models.resnet50(num_classes=num_classes)
        tv = _fixture_models()
        return tv.TvResNet((2, 2, 2, 2) if depth == 18 else (3, 4, 6, 3), num_classes)
    return _fixture_models().CifarResNet(depth, num_classes, "B" if option_b else "A")


def _fixture_models():
    """The faithful ResNet re-implementations of the parity fixtures (one definition)."""
    sys.path.insert(0, str(REPO / "models" / "tests" / "fixtures" / "resnet"))
    import gen_resnet  # noqa: E402  (sets grad off at import, for its own use)

    torch.set_grad_enabled(True)
    return gen_resnet


def build(spec):
    """(model, make_inputs(shape) -> (kwargs or tensor, labels), loss(out, labels))."""
    family, model_dir = spec["family"], pathlib.Path(spec["model_dir"])
    smoothing = spec.get("label_smoothing", 0.0)
    if family == "bert":
        if spec["task"] in ("squad", "squad-v2"):
            sys.exit("question answering is not covered by this reference script")
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        n, vocab = model.config.num_labels, model.config.vocab_size

        def make(shape):
            ids = torch.randint(1000, vocab, shape)
            labels = torch.rand(shape[0]) if n == 1 else torch.randint(0, n, (shape[0],))
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels

        def loss(out, labels):
            logits = out.logits
            if n == 1:
                return F.mse_loss(logits.squeeze(-1), labels)
            return F.cross_entropy(logits, labels, label_smoothing=smoothing)

        return model, make, loss
    from safetensors.torch import load_file

    config = json.loads((model_dir / "config.json").read_text())
    n = config["num_classes"]
    model = cifar_or_torchvision_resnet(family, n)
    model.load_state_dict(load_file(model_dir / config["weights"]))

    def make(shape):
        return torch.randn(shape), torch.randint(0, n, (shape[0],))

    def loss(out, labels):
        return F.cross_entropy(out, labels, label_smoothing=smoothing)

    return model, make, loss


def optimizer(model, o):
    # shears' rule (`WeightDecay` in src/sparsity/enforce.rs): exact names, `re:` patterns
    # (full match) and `__1D__` (every parameter with at most one dimension).
    def exempt(name, p):
        for nd in o.get("no_decay", ["__1D__"]):
            if nd == "__1D__" and p.dim() <= 1:
                return True
            if nd.startswith("re:") and re.fullmatch(nd[3:], name):
                return True
            if nd == name:
                return True
        return False

    decay, plain = [], []
    for name, p in model.named_parameters():
        (plain if exempt(name, p) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": o["weight_decay"]},
        {"params": plain, "weight_decay": 0.0},
    ]
    name = o["name"]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])
    if name == "adam":
        return torch.optim.Adam(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"]
        )
    sys.exit(f"optimizer {name!r} is not covered by this reference script")


def call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", required=True, type=pathlib.Path)
    spec = json.loads(ap.parse_args().spec.read_text())
    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    model, make, loss_fn = build(spec)
    model.train()
    opt = optimizer(model, spec["optimizer"])
    clip = spec.get("max_grad_norm")
    steps = spec["batch_shapes"]
    warm = [steps[i % len(steps)] for i in range(spec["warmup"])]
    data = [[make(s) for s in micro] for micro in warm + steps]
    phases = {"forward": 0.0, "backward": 0.0, "clip": 0.0, "optimizer": 0.0}
    times, examples = [], 0
    for i, micro in enumerate(data):
        timed = i >= len(warm)
        total = sum(labels.shape[0] for _, labels in micro)
        t_step = time.perf_counter()
        for x, labels in micro:
            t0 = time.perf_counter()
            loss = loss_fn(call(model, x), labels) * (labels.shape[0] / total)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            if timed:
                phases["forward"] += t1 - t0
                phases["backward"] += t2 - t1
        t0 = time.perf_counter()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if timed:
            phases["clip"] += t1 - t0
            phases["optimizer"] += t2 - t1
            times.append(t2 - t_step)
            examples += total
    n = len(times)
    print(
        json.dumps(
            {
                "steps": n,
                "step_ms": statistics.median(times) * 1e3,
                "examples_per_sec": examples / sum(times),
                "phases_ms": {k: v * 1e3 / n for k, v in phases.items()},
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
