"""Plot helpers: each takes an ``ax`` (or a list of axes), draws, and returns the artists.

    raster(ax, s)                       spikes (T, B, ...) of one sample: neuron index vs step
    membrane(ax, u, theta, neurons)     U[t] of chosen neurons with their thresholds θ and spike marks
    traces(axes, w_trace, th_trace, al_trace, neurons)   the three STOP traces over time
    distributions(ax, values_by_epoch)  θ (or α) across epochs as box plots
    curves(ax, metrics, keys)           per-epoch metrics (loss, accuracy)
    spike_rates(ax, rates)              bar chart: layer -> rate
    memory_vs_T(ax, rows)               benchmark rows {rule, T, rss_growth_mib}: one line per rule
    accuracy_vs_epoch(ax, runs)         rule -> list of test accuracies
    save(fig, path)                     PNG, creating folders; closes the figure

Headless: the Agg backend is selected unless the user already chose one.
"""
import os

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo") and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _sample(a, sample):
    a = np.asarray(a)
    return a[:, sample].reshape(a.shape[0], -1)  # (T, N)


def raster(ax, s, sample=0, max_neurons=200, **kw):
    sp = _sample(s, sample)[:, :max_neurons]
    t, n = np.nonzero(sp > 0)
    art = ax.scatter(t, n, s=kw.pop("s", 6), marker="|", color=kw.pop("color", "k"), **kw)
    ax.set_xlabel("time step t")
    ax.set_ylabel("neuron")
    ax.set_xlim(-0.5, sp.shape[0] - 0.5)
    ax.set_ylim(-0.5, sp.shape[1] - 0.5)
    return [art]


def membrane(ax, u, theta, neurons, sample=0, s=None):
    uu = _sample(u, sample)
    th = np.broadcast_to(np.asarray(theta, dtype=float).reshape(-1) if np.size(theta) > 1
                         else np.full(uu.shape[1], float(np.asarray(theta).reshape(-1)[0])), (uu.shape[1],))
    t = np.arange(uu.shape[0])
    arts = []
    for j in neurons:
        line, = ax.plot(t, uu[:, j], marker=".", label=f"U[{j}]")
        arts.append(line)
        arts.append(ax.axhline(th[j], color=line.get_color(), ls="--", lw=0.8))
        fired = uu[:, j] >= th[j] if s is None else _sample(s, sample)[:, j] > 0
        if fired.any():
            arts.append(ax.scatter(t[fired], uu[fired, j], marker="^", color=line.get_color(), zorder=3))
    ax.set_xlabel("time step t")
    ax.set_ylabel("membrane U (dashed: θ)")
    ax.legend(fontsize="small")
    return arts


def traces(axes, w_trace, th_trace, al_trace, neurons, sample=0):
    if not isinstance(axes, (list, tuple, np.ndarray)):
        axes = [axes] * 3
    arts = []
    for ax, arr, name in zip(axes, (w_trace, th_trace, al_trace), ("w~ (input)", "th~", "al~")):
        a = _sample(arr, sample)
        for j in neurons:
            if j < a.shape[1]:
                arts += ax.plot(np.arange(a.shape[0]), a[:, j], label=f"{name}[{j}]")
        ax.set_xlabel("time step t")
        ax.set_ylabel(name)
        ax.legend(fontsize="small")
    return arts


def distributions(ax, values_by_epoch, label="θ"):
    epochs = sorted(values_by_epoch)
    data = [np.ravel(values_by_epoch[e]) for e in epochs]
    art = ax.boxplot(data, positions=range(len(epochs)), showfliers=False)
    ax.set_xticks(range(len(epochs)))
    ax.set_xticklabels([str(e) for e in epochs])
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    return [a for v in art.values() for a in v]


def curves(ax, metrics, keys=("train_loss", "test_acc")):
    arts = []
    ep = [m["epoch"] for m in metrics]
    for k in keys:
        vals = [m.get(k, np.nan) for m in metrics]
        arts += ax.plot(ep, vals, marker="o", label=k)
    ax.set_xlabel("epoch")
    ax.legend()
    return arts


def spike_rates(ax, rates):
    names = list(rates)
    art = ax.bar(range(len(names)), [rates[n] for n in names])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("spike rate")
    return list(art)


def memory_vs_T(ax, rows):
    arts = []
    for rule in sorted({r["rule"] for r in rows}):
        pts = sorted((r["T"], r["rss_growth_mib"]) for r in rows if r["rule"] == rule)
        arts += ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=rule)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("peak RSS growth (MiB)")
    ax.legend()
    return arts


def accuracy_vs_epoch(ax, runs):
    arts = []
    for rule, accs in runs.items():
        arts += ax.plot(range(1, len(accs) + 1), [100 * a for a in accs], marker="o", label=rule)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    return arts


def save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
