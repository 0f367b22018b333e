#!/usr/bin/env python3
"""PyTorch timing of M-FAC's sliding-window inverse Fisher, for `shears bench mfac --pytorch`.

The same recursion as `src/fisher/dynamic.rs` (methods.md §5.3, the dynamic algorithm of
Frantar, Kurtic & Alistarh 2021, as in IST-DASLab/M-FAC's `HInvFastSwap` without its CUDA
kernel): a ring buffer G (m × d) of the last m gradients, its Gram matrix K = G Gᵀ, and the
triangular factors D, c, B rebuilt after every window change.

    ihvp(x):   a = G x;  q = B a;  F⁻¹x = λ⁻¹ x − Gᵀ (Bᵀ (q ⊘ c))          O(d·m + m²)
    update(g): G[r] = g;  K[r,:] = K[:,r] = G g;  rebuild D, c, B          O(d·m + m³)

Usage (what `shears bench mfac --pytorch benches/mfac_torch.py` runs):

    python3 benches/mfac_torch.py --pairs 100000x32,1000000x128 --reps 5 --threads 2

prints a JSON list of {"d", "m", "ihvp_ms", "update_ms"} (medians after one warm-up).
Needs `pip install torch` (CPU is enough).
"""

import argparse
import json
import time

import torch


class DynamicInverse:
    def __init__(self, d, m, damp, grads):
        self.d, self.m = d, m
        self.lambda_inv = 1.0 / damp
        self.G = grads  # m × d
        self.K = self.G @ self.G.T
        self.next = 0
        self.rebuild()

    def rebuild(self):
        m, li = self.m, self.lambda_inv
        D = torch.zeros(m, m)
        c = torch.zeros(m)
        for i in range(m):
            row = li * self.K[i].clone()
            if i > 0:
                f = D[:i, i] / c[:i]
                row -= f @ D[:i]
            row[:i] = 0
            c[i] = m + row[i]
            D[i] = row
        B = torch.zeros(m, m)
        for k in range(m):
            row = torch.zeros(m)
            row[k] = li
            if k > 0:
                f = D[:k, k] / c[:k]
                row -= f @ B[:k]
            B[k] = row
        self.D, self.c, self.B = D, c, B

    def push(self, g):
        r = self.next
        self.G[r] = g
        kr = self.G @ g
        self.K[r] = kr
        self.K[:, r] = kr
        self.rebuild()
        self.next = (r + 1) % self.m

    def ihvp(self, x):
        a = self.G @ x
        q = self.B @ a
        w = self.B.T @ (q / self.c)
        return self.lambda_inv * x - self.G.T @ w


def median_ms(reps, f):
    times = []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        if r > 0:
            times.append(dt)
    times.sort()
    return times[len(times) // 2] * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", required=True, help="comma-separated DxM pairs")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    for pair in a.pairs.split(","):
        d, m = (int(v) for v in pair.split("x"))
        inv = DynamicInverse(d, m, 1e-5, torch.rand(m, d) - 0.5)
        x = torch.rand(d) - 0.5
        ihvp = median_ms(a.reps, lambda: inv.ihvp(x))
        grads = [torch.rand(d) - 0.5 for _ in range(a.reps + 1)]
        it = iter(grads)
        update = median_ms(a.reps, lambda: inv.push(next(it)))
        rows.append({"d": d, "m": m, "ihvp_ms": ihvp, "update_ms": update})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
