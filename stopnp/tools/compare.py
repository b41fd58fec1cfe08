"""``stopnp compare``: every rule trained on equal terms, one table and two figures.

Each rule trains LeNet-5 on the built-in MNIST subset with the packaged base recipe mnist-lenet5 plus
its own recipe rule-<rule> (leak, threshold, surrogate, loss, readout; ``stopnp recipes show NAME``),
with the same seed, epoch budget and batch size, in its own subprocess (so its peak RSS is its own).
Reported: best test accuracy, training time (the epochs' training passes, summed) and wall time (the whole
training call: compile, evaluation, checkpoints), peak RSS, and the mean over layers of the cosine between
the rule's weight gradient and BPTT's on one test batch at the trained parameters (BPSTA: plain BPTT
of its own neuron, see ``gradient_cosine``). Memory vs T comes from the benchmark's mlp workload at
T = 4..64.
"""
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np



def rule_config(rule, epochs, seed, out_dir, extra=()):
    from .. import config as C
    from ..recipes import path
    base = C.read(path("mnist-lenet5"))
    recipe = C.read(path(f"rule-{rule}"))
    cfg = C.resolve(base)
    for sec, body in recipe.items():
        cfg[sec].update(body)
    return C.resolve(cfg, [f"run.epochs={epochs}", f"run.seed={seed}", f'run.out_dir="{out_dir}"',
                           "run.quiet=true", *extra])


def gradient_cosine(net, x, y, rule, learn):
    """Mean over layers of cos(ΔW_rule, ΔW_bptt) on one batch (weights only, reset detached).

    BPSTA has its own neuron, so its reference is plain BPTT of *that* network (surrogate ∂s/∂v, no β
    path: ``bpsta_plain``), not BPTT of the LIF network.
    """
    from ..api import gradients
    from .inspect import cosine
    g = gradients(net, x, y, rule=rule, learn=learn, bn_mode="eval")
    if rule == "bpsta":
        ref = gradients(net, x, y, rule="bpsta", learn=learn, bn_mode="eval", bpsta_plain=True)
    else:
        ref = gradients(net, x, y, rule="bptt", learn=learn, bn_mode="eval")
    per_layer = {k: cosine(g[k], ref[k]) for k in g if k.endswith(".weight")}
    vals = [v for v in per_layer.values() if np.isfinite(v)]  # a silent layer has no gradient direction
    return (float(np.mean(vals)) if vals else float("nan")), per_layer


class CompareError(RuntimeError):
    """A comparison that cannot start or whose rule failed (one line)."""


def check(rules, epochs, seed, out_dir, plots_dir, extra=(), overwrite=False):
    """Everything that can be checked before the first rule trains: overrides, folders, earlier runs."""
    from ..config import ConfigError
    fixed = [o for o in extra if o.split("=", 1)[0].strip().startswith("rule.")]
    if fixed:
        raise ConfigError(f"compare --set {fixed[0]}: each rule keeps its own recipe's [rule] section "
                          f"(the packaged recipe rule-<rule>); choose rules with --rules")
    if seed < 0:
        raise ConfigError(f"compare --seed {seed}: expected an integer >= 0")
    for rule in rules:
        rule_config(rule, epochs, seed, os.path.join(out_dir, rule), extra)  # every override, validated
    for path in (out_dir, plots_dir):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"{path}: is a file; compare writes folders there (choose another --out/--plots)")
    from ..run.folder import held_run
    held = [r for r in rules if held_run(os.path.join(out_dir, r))]
    if held and not overwrite:
        raise ConfigError(f"{out_dir} already holds runs of {', '.join(held)}; choose another --out or replace "
                          f"them with --force")


def run_rule(rule, epochs, seed, out_dir, extra=(), overwrite=False):
    """Train one rule in this process; returns its row."""
    from .. import data
    from ..run.train import train
    cfg = rule_config(rule, epochs, seed, os.path.join(out_dir, rule), extra)
    t0 = time.perf_counter()
    res = train(cfg, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    src = data.load(cfg["data"]["name"], "test")
    x, y = next(iter(data.batches(src, 32, cfg["data"]["T"], shuffle=False)))
    cos, per_layer = gradient_cosine(res.net, np.ascontiguousarray(x), y, rule, cfg["rule"]["learn"])
    return {"rule": rule, "test_acc": res.best_acc, "final_acc": res.metrics[-1]["test_acc"],
            "accs": [m["test_acc"] for m in res.metrics],
            "epoch_seconds": [m["seconds"] for m in res.metrics],
            "train_seconds": sum(m["seconds"] for m in res.metrics), "wall_seconds": seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cos_to_bptt": cos, "cos_per_layer": per_layer, "epochs": epochs}


def compare(rules=None, epochs=3, seed=0, out_dir="runs/compare", plots_dir="plots", memory=True,
            extra=(), stream=sys.stdout, overwrite=False):
    """Train each rule in its own subprocess and tabulate (``rules``: default every rule); ``overwrite``
    replaces earlier runs in out_dir."""
    from ..rules import RULES
    rules = tuple(RULES) if rules is None else rules
    from . import plot
    from .bench import SWEEP_T, run_all
    check(rules, epochs, seed, out_dir, plots_dir, extra, overwrite)
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for rule in rules:
        cmd = [sys.executable, "-m", "stopnp.tools.compare", rule, str(epochs), str(seed), out_dir,
               "1" if overwrite else "0", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise CompareError(f"rule {rule} failed: {last}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{rule:<7} test acc {100 * row['test_acc']:.2f}%  training {_secs(row['train_seconds'])} s  "
              f"wall {_secs(row['wall_seconds'])} s  "
              f"peak {row['peak_rss_mib']:.0f} MiB  cos to BPTT {row['cos_to_bptt']:.3f}", file=stream, flush=True)
    mem = []
    if memory:
        with open(os.devnull, "w") as quiet:
            mem = run_all(("mlp",), rules, sweep=True, quick=True, stream=quiet, as_json=True)
        mem = [r for r in mem if "error" not in r]
        for r in mem:
            r["T"] = int(r["T"])
    table = markdown(rows, mem, SWEEP_T)
    os.makedirs(plots_dir, exist_ok=True)
    with open(os.path.join(plots_dir, "compare.md"), "w") as f:
        f.write(table)
    with open(os.path.join(plots_dir, "compare.json"), "w") as f:
        json.dump({"rows": rows, "memory": mem}, f, indent=1)
    fig, ax = plot.plt.subplots(figsize=(5, 3.5))
    plot.accuracy_vs_epoch(ax, {r["rule"]: r["accs"] for r in rows})
    plot.save(fig, os.path.join(plots_dir, "compare_accuracy.png"))
    if mem:
        fig, ax = plot.plt.subplots(figsize=(5, 3.5))
        plot.memory_vs_T(ax, mem)
        plot.save(fig, os.path.join(plots_dir, "compare_memory_vs_T.png"))
    print(table, file=stream)
    return rows, mem


def _secs(s):
    """Seconds for the table: whole seconds, or one decimal below 10 (a short run is not '0 s')."""
    return f"{s:.1f}" if s < 10 else f"{s:.0f}"


def markdown(rows, mem, Ts):
    lines = ["| rule | test acc (%) | training time (s) | wall time (s) | peak RSS (MiB) | mean cos to BPTT |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        cos = "n/a" if r["cos_to_bptt"] != r["cos_to_bptt"] else f"{r['cos_to_bptt']:.3f}"
        lines.append(f"| {r['rule']} | {100 * r['test_acc']:.2f} | {_secs(r['train_seconds'])} | "
                     f"{_secs(r['wall_seconds'])} | "
                     f"{r['peak_rss_mib']:.0f} | {cos} |")
    if mem:
        lines += ["", "Peak RSS growth (MiB) on the mlp workload (784-800-10, B = 64) vs T:", "",
                  "| rule | " + " | ".join(f"T={t}" for t in Ts) + " |", "|---|" + "---|" * len(Ts)]
        for rule in dict.fromkeys(r["rule"] for r in mem):
            by_t = {r["T"]: r["rss_growth_mib"] for r in mem if r["rule"] == rule}
            lines.append(f"| {rule} | " + " | ".join(f"{by_t.get(t, float('nan')):.1f}" for t in Ts) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    rule, epochs, seed, out_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    print(json.dumps(run_rule(rule, epochs, seed, out_dir, sys.argv[6:], overwrite=sys.argv[5] == "1")))
