#!/usr/bin/env python3
"""Accuracy at equal wall time, read off the runs of `stopnp compare` (one run folder per rule).

    python examples/results/equal_time.py runs/results/compare-s0 [--budget-rule stop]

For every rule: its epochs, training seconds and best test accuracy over the whole run, then the best test
accuracy among the epochs that ended within the budget rule's total training time (the wall time of the
budget rule's run). Each rule's learning-rate schedule is the one of its own full run, so a rule cut short
by the budget did not get the end of its schedule: this is the accuracy that rule had reached at that
moment, not what a run planned for that time would reach.
"""
import argparse
import json
import os


def curve(run_dir):
    rows = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "test_acc" in r and "seconds" in r:
                rows.append(r)
    t, out = 0.0, []
    for r in rows:
        t += r["seconds"]
        out.append((r["epoch"], t, r["test_acc"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("compare_dir", help="the --out folder of stopnp compare (one subfolder per rule)")
    ap.add_argument("--budget-rule", default="stop")
    a = ap.parse_args()
    rules = sorted(d for d in os.listdir(a.compare_dir)
                   if os.path.isfile(os.path.join(a.compare_dir, d, "metrics.jsonl")))
    if a.budget_rule not in rules:
        raise SystemExit(f"{a.compare_dir}: no run folder {a.budget_rule!r} with a metrics.jsonl; "
                         f"pass --budget-rule one of {', '.join(rules) or '(none found)'}")
    curves = {r: curve(os.path.join(a.compare_dir, r)) for r in rules}
    budget = curves[a.budget_rule][-1][1]
    print(f"| rule | epochs | train s | s/epoch | best acc (all epochs) | epochs within {budget:.0f} s "
          f"| best acc within {budget:.0f} s |")
    print("|---|---|---|---|---|---|---|")
    for r in rules:
        c = curves[r]
        within = [x for x in c if x[1] <= budget * 1.0001]
        best_in = f"{100 * max(x[2] for x in within):.2f} %" if within else "(no epoch ended)"
        print(f"| {r} | {len(c)} | {c[-1][1]:.0f} | {c[-1][1] / len(c):.1f} | "
              f"{100 * max(x[2] for x in c):.2f} % | {len(within)} | {best_in} |")


if __name__ == "__main__":
    main()
