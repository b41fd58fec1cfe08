#!/usr/bin/env python3
"""Peer run (optional, not part of stopnp): snntorch 1.0 LeNet-5 on Fashion-MNIST, BPTT, for the accuracy
table of docs/results-accuracy.md. Needs torch and snntorch in a virtualenv of their own (the project never
imports torch), e.g.

    python3 -m venv /tmp/peervenv
    /tmp/peervenv/bin/pip install torch==2.13.0 numpy
    /tmp/peervenv/bin/pip install --no-deps snntorch==1.0.0
    /tmp/peervenv/bin/python examples/results/peers/snntorch_lenet5_fashion.py /path/to/fashion-mnist

The folder holds the four IDX files (train-images-idx3-ubyte.gz, ...). Network and training as in the
issue's peer figure: conv5x5(pad 2) 6 -> LIF -> avgpool 2 -> conv5x5 16 -> LIF -> avgpool 2 -> fc 120 -> LIF
-> fc 84 -> LIF -> fc 10 -> LIF; every LIF with a learnable leak β (init 0.5) and threshold (init 1), one
each per layer, subtract reset, arctan surrogate; the image fed at each of T = 4 steps; readout = the output
layer's membrane averaged over T -> cross-entropy; BPTT; Adam lr 1e-3, batch 64, no augmentation.
Prints the test accuracy after every epoch.
"""
import argparse
import gzip
import os
import time

import numpy as np


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch
    from torch import nn
    import snntorch as snn
    from snntorch import surrogate
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    load = lambda name: idx(os.path.join(a.folder, name))  # noqa: E731
    xtr = torch.tensor(load("train-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    ytr = torch.tensor(load("train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.tensor(load("t10k-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    yte = torch.tensor(load("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    sg = surrogate.atan(alpha=2.0)

    def lif():
        return snn.Leaky(beta=torch.tensor(0.5), threshold=torch.tensor(1.0), spike_grad=sg, learn_beta=True,
                         learn_threshold=True, reset_mechanism="subtract")

    layers = nn.ModuleList([nn.Conv2d(1, 6, 5, padding=2), lif(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), lif(),
                            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), lif(), nn.Linear(120, 84), lif(),
                            nn.Linear(84, 10), lif()])

    def forward(x):
        for m in layers:
            if isinstance(m, snn.Leaky):
                m.reset_mem()
        mems = []
        for _ in range(a.T):
            h = x
            for m in layers:
                if isinstance(m, snn.Leaky):
                    h, mem = m(h)
                else:
                    h = m(h)
            mems.append(mem)
        return torch.stack(mems).mean(0)

    opt = torch.optim.Adam(layers.parameters(), lr=a.lr)
    g = torch.Generator().manual_seed(a.seed)
    best = 0.0
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        layers.train()
        order = torch.randperm(len(ytr), generator=g)
        for s in range(0, len(ytr), a.batch):
            idx_b = order[s:s + a.batch]
            loss = nn.functional.cross_entropy(forward(xtr[idx_b]), ytr[idx_b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        layers.eval()
        with torch.no_grad():
            correct = sum(int((forward(xte[s:s + 1000]).argmax(1) == yte[s:s + 1000]).sum())
                          for s in range(0, len(yte), 1000))
        acc = correct / len(yte)
        best = max(best, acc)
        print(f"epoch {epoch + 1}: test acc {100 * acc:.2f}% (best {100 * best:.2f}%) "
              f"{time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
