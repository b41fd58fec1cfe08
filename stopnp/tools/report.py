"""Figures of a run directory (``stopnp plot RUN_DIR``).

Reads config.toml / last.h5 / metrics.jsonl / history.h5 from the run, runs one small test batch
through the trained network with recording, and writes PNGs: loss and accuracy curves, spike raster
per layer, membrane potentials with thresholds, the three STOP traces, θ and α across epochs, spike
rate per layer, and memory vs T when a benchmark result (bench.jsonl) is present.
"""
import json
import os
import sys

import numpy as np

from .. import data
from ..run import history
from . import plot
from ..api import simulate
from ..run.progress import read_metrics


def plot_run(run_dir, out_dir=None, n_samples=8):
    from ..run.resume import load_network
    if not os.path.isdir(run_dir):
        what = "is a file, not a run directory" if os.path.exists(run_dir) else "no such run directory"
        raise FileNotFoundError(f"{run_dir}: {what} (give the folder stopnp train wrote, e.g. runs/default)")
    missing = [f for f in ("metrics.jsonl", "last.h5") if not os.path.exists(os.path.join(run_dir, f))]
    if missing:
        raise FileNotFoundError(f"{run_dir}: no {' or '.join(missing)}; is it a run directory of stopnp train?")
    out_dir = out_dir or os.path.join(run_dir, "plots")
    paths = []
    plt = plot.plt
    metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    net, _ = load_network(os.path.join(run_dir, "last.h5"))
    spiking = [layer for layer in net.layers if layer.spiking]
    hist = _read_history(run_dir, spiking)  # every input read and checked before the first figure
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    plot.curves(axes[0], metrics, ("train_loss",))
    plot.curves(axes[1], [dict(m, train_acc=100 * m["train_acc"], test_acc=100 * m["test_acc"])
                          for m in metrics], ("train_acc", "test_acc"))
    axes[1].set_ylabel("accuracy (%)")
    paths.append(plot.save(fig, os.path.join(out_dir, "curves.png")))

    d = net.config["data"]
    src = data.load(d["name"], "test")
    x, y = next(iter(data.batches(src, n_samples, d["T"], shuffle=False)))
    x = np.ascontiguousarray(x)
    who = f"last.h5, test sample 0 (label {int(y[0])})"
    if net.config["rule"]["name"] == "bpsta":  # its own neuron (ReLU current, λ leak): not simulated here
        _note("raster, membrane, traces and spike-rate plots skipped: a BPSTA network's neuron is not the "
              "LIF neuron stopnp.simulate runs")
        return paths + _theta_alpha(hist, out_dir, spiking, plt)
    # the forward alone (any reset, fixed point simulated in float): spikes and membranes
    rec = simulate(net, x, record=("u", "s"), numerics="float", bn_mode="eval")
    fig, axes = plt.subplots(1, len(spiking), figsize=(3.3 * len(spiking), 3.3), squeeze=False,
                             layout="constrained")
    for ax, layer in zip(axes[0], spiking):
        plot.raster(ax, rec[f"{layer.name}.s"], spread=True)
        ax.set_title(layer.name + (f" (200 of {layer.size} neurons, evenly spread)" if layer.size > 200 else ""),
                     fontsize="small")
    fig.suptitle(f"spike rasters, {who}")
    paths.append(plot.save(fig, os.path.join(out_dir, "raster.png")))

    fig, axes = plt.subplots(1, len(spiking), figsize=(3.6 * len(spiking), 3.3), squeeze=False,
                             layout="constrained")
    for ax, layer in zip(axes[0], spiking):
        neurons = _active(rec[f"{layer.name}.s"], 3)
        plot.membrane(ax, rec[f"{layer.name}.u"], net.params[f"{layer.name}.theta"], neurons,
                      s=rec[f"{layer.name}.s"])
        ax.set_title(layer.name)
    fig.suptitle(f"membrane U of neurons firing about half the steps, {who}")
    paths.append(plot.save(fig, os.path.join(out_dir, "membrane.png")))

    if net.neuron["reset"] == "hard":  # STOP's traces are defined with the soft reset only
        _note("traces.png skipped: STOP's traces are defined for the soft reset; this network resets hard")
    else:
        tr = simulate(net, x, record=("w_trace", "th_trace", "al_trace"), y=y, numerics="float", bn_mode="eval")
        paths.append(_traces(tr, rec, spiking, out_dir, who, plt))

    rates = {layer.name: float(rec[f"{layer.name}.s"].mean()) for layer in spiking}
    fig, ax = plt.subplots(figsize=(5, 3))
    plot.spike_rates(ax, rates)
    ax.set_title(f"mean over {len(y)} test samples and {d['T']} steps", fontsize="small")
    paths.append(plot.save(fig, os.path.join(out_dir, "spike_rates.png")))

    paths += _theta_alpha(hist, out_dir, spiking, plt)

    bench = os.path.join(run_dir, "bench.jsonl")
    if os.path.isfile(bench):
        with open(bench) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [r for r in rows if "rss_growth_mib" in r]
        if rows:
            fig, ax = plt.subplots(figsize=(5, 3.5))
            plot.memory_vs_T(ax, rows)
            paths.append(plot.save(fig, os.path.join(out_dir, "memory_vs_T.png")))
    return paths


def _note(text):
    print(f"note: {text}", file=sys.stderr)


def _traces(tr, rec, spiking, out_dir, who, plt):
    """traces.png: STOP's three traces of the second spiking layer (w~ per input, θ~ and α~ per neuron)."""
    layer = spiking[min(1, len(spiking) - 1)]
    syn = layer.synapses[0]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained")
    neurons = _active(rec[f"{layer.name}.s"], 3)
    w_trace = tr[f"{syn.name}.w_trace"]  # follows the layer's inputs: pick inputs that were active
    w0 = w_trace.reshape(w_trace.shape[0], w_trace.shape[1], -1)[:, 0]
    inputs = [int(j) for j in np.argsort(-w0.max(axis=0), kind="stable")[:3]]
    plot.traces(list(axes), w_trace, tr[f"{layer.name}.th_trace"], tr[f"{layer.name}.al_trace"], neurons,
                inputs=inputs)
    axes[0].set_title("per input (most active)", fontsize="small")
    axes[1].set_title("per neuron", fontsize="small")
    axes[2].set_title("per neuron", fontsize="small")
    fig.suptitle(f"STOP traces, layer {layer.name}, {who}")
    return plot.save(fig, os.path.join(out_dir, "traces.png"))


def _read_history(run_dir, spiking):
    path = os.path.join(run_dir, history.NAME)
    if not os.path.isfile(path):
        return None
    return history.read(path, [f"{layer.name}.{p}" for layer in spiking for p in ("theta", "alpha")])


def _theta_alpha(hist, out_dir, spiking, plt):
    """theta_alpha.png from history.h5: per layer θ's median and 1st-99th percentile band, and α."""
    if not hist:
        return []
    epochs = sorted(hist)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for layer in spiking:  # per layer: a pooled box would be conv1's, the largest layer
        plot.percentiles(axes[0], {e: hist[e][f"{layer.name}.theta"] for e in epochs}, layer.name)
    axes[0].set_ylabel("θ")
    axes[0].set_title("thresholds: median and 1st-99th percentile", fontsize="small")
    axes[0].legend(fontsize="x-small", ncol=2 if len(spiking) <= 8 else 3)
    axes[1].set_title("leak α", fontsize="small")
    for layer in spiking:
        axes[1].plot(epochs, [float(hist[e][f"{layer.name}.alpha"].ravel()[0]) for e in epochs], marker="o",
                     label=layer.name)
    plot.epoch_axis(axes[1])
    axes[1].set_ylabel("α")
    axes[1].legend(fontsize="small")
    return [plot.save(fig, os.path.join(out_dir, "theta_alpha.png"))]


def _active(s, k):
    """k neurons of sample 0 whose spike rate is closest to 1/2 (the informative ones to look at)."""
    rate = s.reshape(s.shape[0], s.shape[1], -1)[:, 0].mean(axis=0)
    order = np.argsort(np.abs(rate - 0.5), kind="stable")
    return [int(j) for j in order[:k]]
