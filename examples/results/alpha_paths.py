#!/usr/bin/env python3
"""Per-layer leak gradient Δα of a trained checkpoint under STOP, BPTT with the reset detached and BPTT with
the reset kept (the loss's own gradient), on one batch of test samples; and how far α moved in training.

    python examples/results/alpha_paths.py runs/default/last.h5 [--batch 64]

STOP drops two paths of BPTT: the error a layer receives back in time from the layer above (detached BPTT
keeps it) and the reset path (kept BPTT keeps it). Sums over neurons; STOP's default is the mean (÷ n_l).
"""
import argparse

import numpy as np

import stopnp
from stopnp import data
from stopnp.run.resume import load_network


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    net, _ = load_network(a.checkpoint)
    cfg = net.config
    src = data.load(cfg["data"]["name"], "test")
    x, y = next(iter(data.batches(src, a.batch, cfg["data"]["T"], shuffle=False)))
    x = np.ascontiguousarray(x)
    g = {"STOP": stopnp.gradients(net, x, y, rule="stop", alpha_reduce="sum", bn_mode="eval"),
         "BPTT detached": stopnp.gradients(net, x, y, rule="bptt", alpha_reduce="sum", bn_mode="eval"),
         "BPTT kept": stopnp.gradients(net, x, y, rule="bptt", alpha_reduce="sum", bn_mode="eval",
                                       detach_reset=False)}
    print(f"| layer | α | n_l | " + " | ".join(f"Δα {k} (sum)" for k in g) + " |")
    print("|---|---|---|" + "---|" * len(g))
    for layer in net.layers:
        if not layer.spiking:
            continue
        k = f"{layer.name}.alpha"
        print(f"| {layer.name} | {net.params[k][0]:.3f} | {layer.size} | "
              + " | ".join(f"{v[k][0]:+.3e}" for v in g.values()) + " |")


if __name__ == "__main__":
    main()
