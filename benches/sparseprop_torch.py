#!/usr/bin/env python3
"""PyTorch's dense linear and conv2d, forward and backward, on the shapes of `shears bench sparseprop`.

`shears bench sparseprop --pytorch benches/sparseprop_torch.py` runs this script in the same run,
after its own measurements, with the shapes it measured (`--shapes`, JSON: the `BenchShape`
serialisation in `models/src/sparseprop/bench.rs`), its repetition count and its thread count, and
prints a PyTorch column beside every row. By hand, to keep the figures for `--against FILE`:

    python3 benches/sparseprop_torch.py --reps 7 --threads 2 > torch-sparseprop.json
    shears bench sparseprop --against torch-sparseprop.json

(without `--shapes` the script measures the standard shapes, the default of `shears bench
sparseprop`). It prints one JSON list, one object per shape:

    {"layer", "shape" (the same text as shears' `shape` column), "fwd_ms", "bwd_ms", "torch", "threads"}

Measured as shears measures its dense and sparse paths: inputs N(0, 1), weights N(0, 0.05) built
before the clock; one warm-up, then `reps` timed repetitions, medians. `fwd_ms` is one
`F.linear` / `F.conv2d` call under `torch.no_grad()`; `bwd_ms` is only the `backward()` of the
output's sum (dX and dW; the graph is built outside the timer, as in shears). The weights are
dense: this is what a PyTorch user runs, whatever the sparsity, since PyTorch has no sparse
kernel that is faster on CPU at these shapes.

Needs `pip install torch` (CPU is enough).
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

# The default shapes of `shears bench sparseprop` (`standard_shapes` in bench.rs).
STANDARD = [
    {"layer": "linear", "batch": 128, "d_in": 512, "d_out": 256},
    {"layer": "linear", "batch": 64, "d_in": 768, "d_out": 3072},
    {"layer": "conv2d", "batch": 64, "c_in": 128, "c_out": 128, "size": 32, "kernel": 3, "stride": 1, "padding": 0},
] + [
    {"layer": "conv2d", "batch": 128, "c_in": c, "c_out": c, "size": s, "kernel": 3, "stride": 1, "padding": 1}
    for c, s in [(16, 32), (32, 16), (64, 8)]
]


def describe(s):
    """The text of shears' `BenchShape::describe`."""
    if s["layer"] == "linear":
        return f"B={s['batch']} {s['d_in']}->{s['d_out']}"
    return (f"B={s['batch']} {s['c_in']}->{s['c_out']} {s['size']}x{s['size']} "
            f"k{s['kernel']} s{s['stride']} p{s['padding']}")


def timed_ms(f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1e3


def measure(s, reps):
    g = torch.Generator().manual_seed(7)
    if s["layer"] == "linear":
        x = torch.randn(s["batch"], s["d_in"], generator=g)
        w = torch.randn(s["d_out"], s["d_in"], generator=g) * 0.05
        op = lambda x, w: F.linear(x, w)
    else:
        k = s["kernel"]
        x = torch.randn(s["batch"], s["c_in"], s["size"], s["size"], generator=g)
        w = torch.randn(s["c_out"], s["c_in"], k, k, generator=g) * 0.05
        op = lambda x, w: F.conv2d(x, w, stride=s["stride"], padding=s["padding"])

    def fwd():
        with torch.no_grad():
            op(x, w)

    def bwd():
        xa = x.clone().requires_grad_()
        wa = w.clone().requires_grad_()
        y = op(xa, wa).sum()
        return timed_ms(y.backward)

    fwd_t, bwd_t = [], []
    for r in range(reps + 1):
        tf = timed_ms(fwd)
        tb = bwd()
        if r > 0:
            fwd_t.append(tf)
            bwd_t.append(tb)
    return statistics.median(fwd_t), statistics.median(bwd_t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", help="JSON list of shapes (default: shears' standard shapes)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shapes = json.loads(a.shapes) if a.shapes else STANDARD
    rows = []
    for s in shapes:
        f, b = measure(s, a.reps)
        rows.append({"layer": s["layer"], "shape": describe(s), "fwd_ms": f, "bwd_ms": b,
                     "torch": torch.__version__, "threads": a.threads})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
