"""Statistics of simulated N-MNIST recordings (stopnp.data.saccades) beside real N-MNIST recordings.

    python examples/nmnist_builtin_stats.py --real sample.bin    200 built-in test digits vs one real recording
    python examples/nmnist_builtin_stats.py --n 500 --real data/raw/nmnist/Test/4/00004.bin ...

Prints a Markdown table: per statistic, the simulated mean ± std over the first N digits of the built-in
test split, the same over its digits of one class (--digit, default 4: the class of the tonic sample), and
each real recording given with --real (files or N-MNIST folders, whose .bin files are all read).
"""
import argparse
import os

import numpy as np

from stopnp import data
from stopnp.data import events, saccades

ROWS = [("events", "events per sample", "{:.0f}"), ("on_fraction", "ON fraction", "{:.3f}"),
        ("duration_ms", "duration (ms, first to last event)", "{:.1f}"),
        ("x_min", "x min", "{:.1f}"), ("x_max", "x max", "{:.1f}"), ("y_min", "y min", "{:.1f}"),
        ("y_max", "y max", "{:.1f}"), ("x_p01", "x 1st percentile", "{:.1f}"),
        ("x_p99", "x 99th percentile", "{:.1f}"), ("y_p01", "y 1st percentile", "{:.1f}"),
        ("y_p99", "y 99th percentile", "{:.1f}"), ("active_pixels", "pixels with events", "{:.0f}"),
        ("saccade_1", "events in saccade 1 window", "{:.0f}"), ("saccade_2", "events in saccade 2 window", "{:.0f}"),
        ("saccade_3", "events in saccade 3 window", "{:.0f}")]


def real_files(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.endswith(".bin"))
        elif os.path.isfile(p):
            out.append(p)
        else:
            print(f"(skipped: {os.path.normpath(p)} not found)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="simulated digits (first N of the built-in test split)")
    ap.add_argument("--digit", type=int, default=4, help="the class of the extra simulated column")
    ap.add_argument("--seed", type=int, default=saccades.SEED)
    ap.add_argument("--real", nargs="+", required=True, help="real N-MNIST .bin files or folders")
    args = ap.parse_args()
    test = data.load("mnist-builtin", "test")
    sim = [saccades.event_stats(ev) for ev in saccades.simulate_saccades(test.x[:args.n], seed=args.seed)]
    ids = np.flatnonzero(test.y == args.digit)[:args.n]
    one = [saccades.event_stats(ev) for ev in saccades.simulate_saccades(test.x[ids], seed=args.seed, ids=ids)]
    cols = [(f"simulated, {len(sim)} digits", sim), (f"simulated, {len(one)} {args.digit}s", one)]
    files = real_files(args.real)
    if len(files) > 1:
        cols.append((f"real, {len(files)} recordings", [saccades.event_stats(events.read_nmnist(f)) for f in files]))
    elif files:
        cols.append((f"real: {os.path.basename(files[0])}", [saccades.event_stats(events.read_nmnist(files[0]))]))
    print("| statistic | " + " | ".join(name for name, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for key, label, fmt in ROWS:
        cells = []
        for _, stats in cols:
            v = np.array([s[key] for s in stats], float)
            cells.append(fmt.format(v.mean()) + (" ± " + fmt.format(v.std()) if len(v) > 1 else ""))
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
