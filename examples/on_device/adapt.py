"""On-device adaptation: a LeNet-5 trained in float meets a domain shift on a microcontroller and
learns from a labelled stream with STOP, one sample at a time, in fixed point.

    python examples/on_device/adapt.py                          # writes build/on_device/
    python examples/on_device/adapt.py --shift rotate --stream 300 --epochs 2

1. The base network: LeNet-5 trained in float on the built-in digits for --epochs (or --ckpt).
2. The shift: the device sees inverted contrast (--shift invert: white background, dark strokes) or
   digits rotated by 45° (--shift rotate). The stream is --stream shifted training digits with their
   labels; the test set is the first --test shifted test digits.
3. For each way of learning (none, the last layer, the last two layers, all layers: W, θ and α):
   the Python integer model (stopnp.fixed.integer) learns from the stream (batch 1, the update applied after
   every step: export --learn stop --online) and is evaluated every --every samples; the exported C
   does the same on a Cortex-M3 (QEMU mps2-an385, -icount), linked into the memory of a real part
   (256 KiB flash / 64 KiB RAM; all layers 1 MiB / 256 KiB). The accuracies at every evaluation and a
   checksum of the learned parameters must be equal, else the script exits 1.
4. results.json, a table (accuracy before and after, instructions per learning step, RAM and flash
   of the linked program) and adaptation.png (accuracy against samples seen).

Needs the packages gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (Debian names).
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "examples", "mcu"))
import cortexm as cm  # noqa: E402

import stopnp  # noqa: E402
from stopnp import data
from stopnp.fixed import integer as fixed
from stopnp.export import c as cexp

MODES = [   # name, --learn-last (None: no learning), flash, RAM
    ("no learning", None, "256K", "64K"),
    ("last layer", 1, "256K", "64K"),
    ("last two layers", 2, "256K", "64K"),
    ("all layers", 0, "1M", "256K"),
]


def shifted(src, idx, shift):
    """Float frames (N, 1, 28, 28) in [0, 1] of samples ``idx``, shifted."""
    x = src.x[idx].astype(np.float32) / np.float32(255.0)
    if shift == "invert":
        return np.float32(1.0) - x
    from scipy import ndimage
    return np.stack([ndimage.rotate(im, 45.0, axes=(-2, -1), reshape=False, order=1) for im in x]).astype(np.float32)


def base_network(args):
    if args.ckpt:
        return stopnp.load(args.ckpt)
    path = os.path.join(args.out, "base", "best.h5")
    if not os.path.exists(path):
        from stopnp.run.train import train
        print(f"training the base LeNet-5 in float for {args.epochs} epochs -> {path}", flush=True)
        train({"model": {"name": "lenet5", "readout": "membrane"},        # `stopnp train`'s recipe, fewer epochs
               "optim": {"lr": 0.05}, "data": {"name": "mnist-builtin", "T": 4, "batch_size": 32, "augment": "shift"},
               "run": {"epochs": args.epochs, "out_dir": os.path.dirname(path), "quiet": True}}, overwrite=True)
    return stopnp.load(path)


def accuracy(q, xq, y):
    out, _, _ = fixed.run(q, xq)
    return int((out.argmax(axis=1) == y).sum())


def checksum(q, learn_from):
    """adapt.c's checksum of the learned parameters (weights in (out, in) order)."""
    s = 0
    for ql in q.layers[learn_from:]:
        for key in ("weight", "theta"):
            if f"{ql.name}.{key}" in q.params:
                v = q.params[f"{ql.name}.{key}"].ravel().astype(np.int64)
                s += int(np.sum((v % (1 << 32)) * (np.arange(v.size) % 251 + 1) % (1 << 32)))
        if f"{ql.name}.alpha" in q.params:
            s += int(q.params[f"{ql.name}.alpha"][0])
    return s % (1 << 32) & 0x7FFFFFFF


def python_run(net, xs, ys, xt, yt, last, lrq, every):
    """The integer model: accuracy (correct count) at 0 and every ``every`` samples, and the checksum."""
    q = fixed.quantize(net)
    curve = [(0, accuracy(q, xt, yt))]
    if last is None:
        return curve, 0
    for i in range(len(ys)):
        fixed.run(q, xs[:, i:i + 1], ys[i:i + 1], learn_last=last, lrq=lrq)
        if (i + 1) % every == 0 or i + 1 == len(ys):
            curve.append((i + 1, accuracy(q, xt, yt)))
    learn_from = fixed.learned_layers(q, last)[0]
    return curve, checksum(q, learn_from)


def write_stream(path, xs, ys, xt, yt, every, lrq):
    """stream.bin for adapt.c: header, then the stream and test samples (label, one frame)."""
    T, n_in = xs.shape[0], int(np.prod(xs.shape[2:]))
    with open(path, "wb") as f:
        f.write(struct.pack("<10i", 0x44414E53, 1, T, n_in, len(ys), len(yt), every, *lrq))
        for x, y in ((xs, ys), (xt, yt)):
            for i in range(len(y)):
                f.write(struct.pack("<i", int(y[i])))
                f.write(x[0, i].astype("<i4").tobytes())


def c_run(net, folder, last, flash, ram, stream):
    """Export, link adapt.c for the memory map, run on the Cortex-M3; (curve, checksum, figures)."""
    kw = dict(learn="stop", learn_last=last, online=True) if last is not None else {}
    info = cexp.export(net, folder, harness=False, **kw)
    elf = cm.build(os.path.join(folder, "adapt.elf"), [os.path.join(folder, "stopnp.c"), os.path.join(HERE, "adapt.c")],
                   cpu="cortex-m3", flash=flash, ram=ram, stack="1K")
    t0 = time.time()
    rc, out = cm.run(elf, "cortex-m3", args=[os.path.abspath(stream)], icount=True, timeout=6 * 3600)
    if rc:
        raise SystemExit(f"adapt.c failed (exit {rc}):\n{out}")
    curve = [(int(a), int(b)) for a, b in
             (line.split()[1:4:2] for line in out.splitlines() if line.startswith("seen "))]
    fig = {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.splitlines()
                                  if line.startswith(("instructions", "checksum")))}
    size = cm.sizes(elf)
    fig.update(flash=size["text"] + size["data"], ram=size["data"] + size["bss"],   # bss: with the 1 KiB stack
               engine_ram=info["footprint"]["ram"], qemu_seconds=round(time.time() - t0, 1))
    return curve, fig.pop("checksum"), fig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "build", "on_device"), help="output folder")
    p.add_argument("--ckpt", help="a trained LeNet-5 checkpoint instead of training one")
    p.add_argument("--epochs", type=int, default=3, help="float training epochs of the base network (default 3)")
    p.add_argument("--shift", choices=["invert", "rotate"], default="invert", help="the domain shift (default invert)")
    p.add_argument("--stream", type=int, default=600, help="labelled samples the device learns from (default 600)")
    p.add_argument("--test", type=int, default=300, help="shifted test digits (default 300)")
    p.add_argument("--every", type=int, default=100, help="evaluate every N samples (default 100)")
    p.add_argument("--lr", type=float, default=0.02, help="learning rate (default 0.02)")
    p.add_argument("--seed", type=int, default=0, help="order of the stream (default 0)")
    args = p.parse_args(argv)
    missing = cm.missing_tools()
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)} (gcc-arm-none-eabi, libnewlib-arm-none-eabi, "
                         f"qemu-system-arm)")
    os.makedirs(args.out, exist_ok=True)
    net = base_network(args)
    T = net.config["data"]["T"]
    train_src, test_src = data.load("mnist-builtin", "train"), data.load("mnist-builtin", "test")
    order = np.random.default_rng(args.seed).permutation(len(train_src.y))[:args.stream]
    q0 = fixed.quantize(net)

    def frames(src, idx, shift):
        x = shifted(src, idx, shift) if shift else src.x[idx].astype(np.float32) / np.float32(255.0)
        return fixed.quantize_input(q0, np.broadcast_to(x[None], (T,) + x.shape))

    xs, ys = frames(train_src, order, args.shift), train_src.y[order]
    test_idx = np.arange(args.test)
    xt, yt = frames(test_src, test_idx, args.shift), test_src.y[test_idx]
    clean = accuracy(q0, frames(test_src, test_idx, None), yt) / len(yt)
    o = net.config["optim"]
    lrq = fixed.learning_rates(q0, args.lr, o["theta_lr_scale"], o["alpha_lr_scale"])
    stream = os.path.join(args.out, "stream.bin")
    write_stream(stream, xs, ys, xt, yt, args.every, lrq)
    print(f"base LeNet-5 (fixed point): {100 * clean:.1f} % on {len(yt)} clean test digits; shift: {args.shift}; "
          f"stream {len(ys)} samples, lr {args.lr}", flush=True)
    results = {"shift": args.shift, "stream": len(ys), "test": len(yt), "lr": args.lr, "lr_q": lrq,
               "clean_accuracy": clean, "T": T, "modes": {}}
    ok = True
    for name, last, flash, ram in MODES:
        t0 = time.time()
        py_curve, py_sum = python_run(net, xs, ys, xt, yt, last, lrq, args.every)
        t_py = time.time() - t0
        c_curve, c_sum, fig = c_run(net, os.path.join(args.out, name.replace(" ", "_")), last, flash, ram, stream)
        same = c_curve == py_curve and (last is None or c_sum == py_sum)
        ok &= same
        results["modes"][name] = {"learn_last": last, "flash_map": flash, "ram_map": ram, "curve": c_curve,
                                  "python_curve": py_curve, "checksum_c": c_sum, "checksum_python": py_sum,
                                  "bit_exact": same, "python_seconds": round(t_py, 1), **fig}
        print(f"{name:16s} accuracy {100 * c_curve[0][1] / len(yt):5.1f} % -> {100 * c_curve[-1][1] / len(yt):5.1f} % "
              f"| {fig.get('instructions per learning step', 0):>10,} instructions per learning step "
              f"| RAM {fig['ram']:,} B of {ram}, flash {fig['flash']:,} B of {flash} "
              f"| C == Python: {'yes' if same else 'NO'}", flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(args.out, "adaptation.png"))
    print(f"wrote {os.path.join(args.out, 'results.json')} and adaptation.png")
    return 0 if ok else 1


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    n = results["test"]
    for name, r in results["modes"].items():
        seen, correct = zip(*r["curve"])
        if r["learn_last"] is None:
            seen, correct = (0, results["stream"]), (correct[0], correct[0])
        ax.plot(seen, [100.0 * c / n for c in correct], marker="o", label=name)
    ax.axhline(100.0 * results["clean_accuracy"], color="grey", ls=":", label="before the shift")
    ax.set_xlabel("labelled samples seen on the device")
    ax.set_ylabel(f"accuracy on {n} shifted test digits (%)")
    ax.set_title(f"LeNet-5 on a Cortex-M3, STOP online, shift: {results['shift']}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
