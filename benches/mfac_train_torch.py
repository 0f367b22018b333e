#!/usr/bin/env python3
"""PyTorch reference run of the M-FAC optimizer against SGD on ResNet-20 / real CIFAR-10.

shears' `recipes/resnet20-cifar10-mfac.yaml` and `recipes/resnet20-cifar10-dense.yaml` run the
M-FAC optimizer and its SGD baseline; this script runs the same schedule in PyTorch so that a
gap between the two optimizers can be told apart from a defect of shears' implementation:
if M-FAC trails SGD here by as much as it does in shears, the gap is the method at this
budget, not the code.

Same as the recipes: ResNet-20 (option A shortcuts), CIFAR-10's 50,000 training images with
ImageNet mean/std normalisation, random crop (zero padding 4) and horizontal flip, batch 128,
a linear warm-up from lr/10 to lr over the first epoch and a cosine decay to lr/1000 over the
rest (updated every step), evaluation on the 10,000 test images after each epoch.
SGD: Nesterov momentum 0.9, weight decay 5e-4 on the weights of more than one dimension.
M-FAC: the reference optimizer's step (g <- grad + wd*theta on every parameter; push g into a
window of the last m gradients that starts as m zero rows; u <- F^-1 g with
F = damp*I + (1/m) sum_i g_i g_i^T; theta <- theta - lr*u), written here with the Woodbury
identity F^-1 x = (x - G^T (m*damp*I + G G^T)^-1 G x) / damp, the m x m system in float64 —
an independent formulation of what shears computes with the dynamic recursion.
What differs from shears: the initialisation (Kaiming normal, the reference repository's
choice), the data order and the augmentation's random draws, and M-FAC's weight decay, which
the reference (and this script) adds to every parameter while shears skips `no_decay`
(by default the one-dimensional ones: batch-norm scales and biases).

Usage (needs `pip install torch numpy`; the data from `scripts/fetch-assets.sh`):

    python3 benches/mfac_train_torch.py --optim mfac --epochs 2 --lr 1e-3 --num-grads 512 \
        --damp 1e-5 --weight-decay 3e-3
    python3 benches/mfac_train_torch.py --optim sgd --epochs 2 --lr 0.1

Prints one JSON object per epoch: {"epoch", "train_loss", "test_accuracy", "seconds"}.
"""

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = pathlib.Path(__file__).resolve().parents[1]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_cifar(files):
    """(images N×3×32×32 float in [0, 1], labels N) from CIFAR-10 binary batches."""
    raw = np.concatenate([np.fromfile(f, dtype=np.uint8).reshape(-1, 3073) for f in files])
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    images = torch.from_numpy(raw[:, 1:].astype(np.float32) / 255.0).view(-1, 3, 32, 32)
    return images, labels


def augment(x, gen):
    """Random crop from the zero-padded (4 px) normalised image, then a random flip."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    out = torch.empty_like(x)
    flip = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        img = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        out[i] = img.flip(-1) if flip[i] else img
    return out


def resnet20():
    sys.path.insert(0, str(REPO / "models" / "tests" / "fixtures" / "resnet"))
    import gen_resnet  # noqa: E402  (turns gradients off at import, for its own use)

    torch.set_grad_enabled(True)
    model = gen_resnet.CifarResNet(20, 10, "A")
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(mod.weight)
    return model


class MfacWoodbury:
    """The reference M-FAC step with F^-1 applied through the Woodbury identity."""

    def __init__(self, params, lr, num_grads, damp, weight_decay):
        self.params = list(params)
        self.lr, self.m, self.damp, self.wd = lr, num_grads, damp, weight_decay
        d = sum(p.numel() for p in self.params)
        self.window = torch.zeros(num_grads, d)
        self.gram = torch.zeros(num_grads, num_grads, dtype=torch.float64)
        self.next = 0

    @torch.no_grad()
    def step(self):
        g = torch.cat([(p.grad + self.wd * p).reshape(-1) for p in self.params])
        j = self.next
        self.window[j] = g
        row = (self.window @ g).double()
        self.gram[j, :] = row
        self.gram[:, j] = row
        self.next = (j + 1) % self.m
        system = self.gram + self.m * self.damp * torch.eye(self.m, dtype=torch.float64)
        coef = torch.linalg.solve(system, row)  # (m λ I + G Gᵀ)⁻¹ G g
        u = (g - coef.float() @ self.window) / self.damp
        offset = 0
        for p in self.params:
            n = p.numel()
            p.add_(u[offset : offset + n].view_as(p), alpha=-self.lr)
            offset += n

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def lr_at(epoch_fraction, lr, warmup, epochs):
    if epoch_fraction < warmup:
        return lr / 10 + (lr - lr / 10) * epoch_fraction / warmup
    t = (epoch_fraction - warmup) / max(epochs - warmup, 1e-9)
    return lr / 1000 + (lr - lr / 1000) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--optim", choices=["sgd", "mfac"], required=True)
    ap.add_argument("--data", default=str(REPO / "assets" / "data" / "cifar-10"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--num-grads", type=int, default=512)
    ap.add_argument("--damp", type=float, default=1e-5)
    ap.add_argument("--weight-decay", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data = pathlib.Path(args.data)
    train_x, train_y = load_cifar([data / f"data_batch_{i}.bin" for i in range(1, 6)])
    test_x, test_y = load_cifar([data / "test_batch.bin"])
    train_x, test_x = (train_x - MEAN) / STD, (test_x - MEAN) / STD

    model = resnet20()
    if args.optim == "sgd":
        wd = 5e-4 if args.weight_decay is None else args.weight_decay
        decay = [p for p in model.parameters() if p.dim() > 1]
        plain = [p for p in model.parameters() if p.dim() <= 1]
        opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": wd}, {"params": plain, "weight_decay": 0.0}],
            lr=args.lr,
            momentum=0.9,
            nesterov=True,
        )
    else:
        wd = 3e-3 if args.weight_decay is None else args.weight_decay
        opt = MfacWoodbury(model.parameters(), args.lr, args.num_grads, args.damp, wd)

    n = train_x.shape[0]
    steps_per_epoch = math.ceil(n / args.batch_size)
    for epoch in range(args.epochs):
        start = time.time()
        model.train()
        order = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for s in range(steps_per_epoch):
            idx = order[s * args.batch_size : (s + 1) * args.batch_size]
            lr = lr_at(epoch + s / steps_per_epoch, args.lr, args.warmup_epochs, args.epochs)
            if args.optim == "sgd":
                for group in opt.param_groups:
                    group["lr"] = lr
            else:
                opt.lr = lr
            x = augment(train_x[idx], gen)
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, test_x.shape[0], 500):
                correct += (model(test_x[i : i + 500]).argmax(1) == test_y[i : i + 500]).sum().item()
        print(
            json.dumps(
                {
                    "epoch": epoch + 1,
                    "train_loss": round(total / count, 4),
                    "test_accuracy": round(100.0 * correct / test_x.shape[0], 2),
                    "seconds": round(time.time() - start, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
