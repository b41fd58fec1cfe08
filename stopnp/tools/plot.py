"""Plot helpers: each takes an ``ax`` (or a list of axes), draws, and returns the artists drawn.

    raster(ax, s)                       spikes (T, B, ...) of one sample: neuron index vs step
    membrane(ax, u, theta, neurons)     U[t] of chosen neurons with their thresholds θ and spike marks
    traces(ax | [3 axes], w_trace, th_trace, al_trace, neurons)   the three STOP traces over time
    percentiles(ax, {epoch: values}, label)                       median and 1st-99th band per epoch
    distributions(ax, values_by_epoch)  θ (or α) across epochs: box plots, or a line when scalar
    curves(ax, metrics, keys)           per-epoch metrics (loss, accuracy) from the metrics list
    spike_rates(ax, rates)              bar chart: layer -> rate
    memory_vs_T(ax, rows)               benchmark rows {rule, T, rss_growth_mib}: one line per rule
    accuracy_vs_epoch(ax, runs)         rule -> list of test accuracies (fractions or percent)
    save(fig, path)                     PNG (dpi 120), creating folders; closes the figure

Arrays over time are (T, B, ...): time first, then batch; the neuron axes after B are flattened,
so ``neurons`` are flat indices. Nothing here calls ``plt.show``: figures go to files.

Headless: the Agg backend is selected unless a backend was already chosen (rcParams, MPLBACKEND,
or a notebook), so the helpers work on servers and in CI without a display.
"""
import os

import matplotlib


def _backend_chosen():
    try:
        return matplotlib.get_backend(auto_select=False) is not None  # matplotlib >= 3.10
    except TypeError:
        get = getattr(matplotlib.rcParams, "_get_backend_or_none", None)  # older: private but stable
        return get() is not None if get else bool(os.environ.get("MPLBACKEND"))


if not _backend_chosen():
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, ScalarFormatter  # noqa: E402

_TRACE_NAMES = (r"$\tilde{w}$", r"$\tilde{\theta}$", r"$\tilde{\alpha}$")  # mathtext: fonts lack combining ~
_TRACE_STYLES = ("-", "--", ":")


def _sample(a, sample):
    """One sample of a (T, B, ...) array as (T, N) with the neuron axes flattened."""
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"expected an array (T, B, ...), got shape {a.shape}")
    if not -a.shape[1] <= sample < a.shape[1]:
        raise IndexError(f"sample {sample} out of range for batch size {a.shape[1]}")
    return a[:, sample].reshape(a.shape[0], -1)


def _check_neurons(neurons, n, what):
    neurons = [int(j) for j in np.atleast_1d(neurons)]
    bad = [j for j in neurons if not 0 <= j < n]
    if bad:
        raise IndexError(f"{what}: neuron indices {bad} out of range (the layer has {n} neurons)")
    return neurons


def raster(ax, s, sample=0, max_neurons=200, spread=False, **kw):
    """Spike raster of one sample: a dot at (t, neuron) for every spike of the first ``max_neurons``
    neurons, or (``spread``) of ``max_neurons`` spread evenly over the layer (the y axis then gives
    their indices: the first few hundred of a conv layer are one channel's border rows)."""
    sp = _sample(s, sample)
    if spread and sp.shape[1] > max_neurons:
        idx = np.linspace(0, sp.shape[1] - 1, max_neurons).astype(int)
        sp = sp[:, idx]
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: str(idx[int(v)]) if 0 <= v < len(idx) else ""))
    else:
        sp = sp[:, :max_neurons]
    t, n = np.nonzero(sp > 0)
    art = ax.scatter(t, n, s=kw.pop("s", 6), marker=kw.pop("marker", "|"), color=kw.pop("color", "k"), **kw)
    ax.set_xlabel("time step t")
    ax.set_ylabel("neuron")
    ax.set_xlim(-0.5, sp.shape[0] - 0.5)
    ax.set_ylim(-0.5, sp.shape[1] - 0.5)
    return [art]


def _theta_per_neuron(theta, neuron_shape):
    """θ (scalar, per channel (C,1,1), or per neuron) broadcast to the flat neuron axis."""
    th = np.asarray(theta, dtype=float)
    if th.size == 1:
        th = th.reshape(())  # a shape-(1,) θ is one shared threshold, whatever the layer shape
    elif th.ndim < len(neuron_shape) and th.shape == tuple(neuron_shape[:th.ndim]):
        # per channel, e.g. (C,) for neurons (C, H, W): align with the leading axes, not the trailing
        th = th.reshape(th.shape + (1,) * (len(neuron_shape) - th.ndim))
    try:
        return np.broadcast_to(th, neuron_shape).reshape(-1)
    except ValueError:
        raise ValueError(f"theta of shape {np.shape(theta)} does not broadcast to the neuron shape "
                         f"{tuple(neuron_shape)}") from None


def membrane(ax, u, theta, neurons, sample=0, s=None):
    """U over time for the chosen flat neuron indices, each with its threshold θ (dashed) and a
    marker at every spike: where U ≥ θ, or where ``s`` (same shape as ``u``) says it fired
    (the exact record, e.g. when a reset or surrogate makes U ≥ θ an approximation)."""
    u = np.asarray(u)
    uu = _sample(u, sample)
    th = _theta_per_neuron(theta, u.shape[2:])
    neurons = _check_neurons(neurons, uu.shape[1], "membrane")
    fired_all = uu >= th if s is None else _sample(s, sample) > 0
    t = np.arange(uu.shape[0])
    arts = []
    for j in neurons:
        line, = ax.plot(t, uu[:, j], marker=".", label=f"U[{j}]")
        color = line.get_color()
        arts += [line, ax.axhline(th[j], color=color, ls="--", lw=0.8)]
        fired = fired_all[:, j]
        if fired.any():
            arts.append(ax.scatter(t[fired], uu[fired, j], marker="^", color=color, zorder=3))
    if any(fired_all[:, j].any() for j in neurons):
        ax.scatter([], [], marker="^", color="gray", label="spike")  # legend entry for the markers
    ax.set_xlabel("time step t")
    ax.set_ylabel("membrane U (dashed: θ)")
    ax.legend(fontsize="small")
    return arts


def traces(axes, w_trace, th_trace, al_trace, neurons, sample=0, inputs=None):
    """The three STOP traces of the chosen neurons over time.

    ``axes``: one ax (three line styles: solid w~, dashed θ~, dotted α~; one color per neuron) or a
    list of three axes (one trace each). w̃ belongs to the layer's *inputs*, not its neurons: ``inputs``
    picks its flat input indices (default ``neurons``; indices beyond its size are skipped).
    """
    single = not isinstance(axes, (list, tuple, np.ndarray))
    axes = [axes] * 3 if single else list(np.ravel(axes))
    if len(axes) != 3:
        raise ValueError(f"traces: give one ax or three, got {len(axes)}")
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    arts = []
    picks = (neurons if inputs is None else inputs, neurons, neurons)
    for ax, arr, name, ls, pick in zip(axes, (w_trace, th_trace, al_trace), _TRACE_NAMES, _TRACE_STYLES, picks):
        a = _sample(arr, sample)
        for i, j in enumerate(int(j) for j in pick):
            if 0 <= j < a.shape[1]:
                arts += ax.plot(np.arange(a.shape[0]), a[:, j], ls=ls, color=colors[i % len(colors)],
                                label=f"{name}[{j}]")
        ax.set_xlabel("time step t")
        if not single:
            ax.set_ylabel(name)
    axes[0].set_ylabel("STOP traces" if single else _TRACE_NAMES[0])
    for ax in dict.fromkeys(axes):  # each distinct ax once
        ax.legend(fontsize="small", ncol=3 if single else 1)
    return arts


def distributions(ax, values_by_epoch, label="θ"):
    """Values (θ, α) across epochs: a box per epoch, or a line when every epoch holds one value
    (a scalar α; a box of one value would be invisible)."""
    epochs = sorted(values_by_epoch)
    if not epochs:
        raise ValueError("distributions: no epochs to plot")
    data = [np.ravel(np.asarray(values_by_epoch[e], dtype=float)) for e in epochs]
    if all(d.size == 1 for d in data):
        arts = ax.plot(epochs, [d[0] for d in data], marker="o", label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        art = ax.boxplot(data, positions=range(len(epochs)), showfliers=False)
        ax.set_xticks(range(len(epochs)))
        ax.set_xticklabels([str(e) for e in epochs])
        arts = [a for v in art.values() for a in v]
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    return arts


def _ordinal(n):
    n = int(n)
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def percentiles(ax, values_by_epoch, label, q=(1, 50, 99)):
    """One line per epoch axis: the median of the values with the band between the q[0]-th and q[-1]-th
    percentiles (θ of one layer across epochs: where the thresholds are, not only where most are)."""
    epochs = sorted(values_by_epoch)
    if not epochs:
        raise ValueError("percentiles: no epochs to plot")
    p = np.array([np.percentile(np.ravel(values_by_epoch[e]), q) for e in epochs])
    line, = ax.plot(epochs, p[:, len(q) // 2], marker=".", label=f"{label} (median)")
    band = ax.fill_between(epochs, p[:, 0], p[:, -1], alpha=0.2, color=line.get_color(),
                           label=f"{label} ({_ordinal(q[0])}-{_ordinal(q[-1])} pct)")
    epoch_axis(ax)
    return [line, band]


def epoch_axis(ax):
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 2.5" ticks


def curves(ax, metrics, keys=("train_loss", "test_acc")):
    """One line per key of the per-epoch metrics rows (x: their "epoch", else 1, 2, ...).
    Missing values are gaps; a key no row has is left out (no empty legend entry). Put losses and
    accuracies on separate axes: their scales differ."""
    ep = [m.get("epoch", i + 1) for i, m in enumerate(metrics)]
    arts = []
    for k in keys:
        vals = [m.get(k) for m in metrics]
        if all(v is None for v in vals):
            continue
        arts += ax.plot(ep, [np.nan if v is None else v for v in vals], marker="o", label=k)
    epoch_axis(ax)
    if arts:
        ax.legend()
    return arts


def spike_rates(ax, rates):
    """Bar chart of the mean spike rate per layer (dict layer -> rate, in order)."""
    names = list(rates)
    art = ax.bar(range(len(names)), [float(rates[n]) for n in names])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("spikes per neuron per step")
    return list(art)


def memory_vs_T(ax, rows):
    """Peak memory growth against T, one line per rule. Rows without a measurement (None, a run
    that failed or was skipped) are left out."""
    rows = [r for r in rows if r.get("rss_growth_mib") is not None]
    arts = []
    for rule in sorted({r["rule"] for r in rows}):
        pts = sorted((r["T"], r["rss_growth_mib"]) for r in rows if r["rule"] == rule)
        arts += ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=rule)
    ax.set_xscale("log", base=2)  # T is swept in powers of two
    ax.xaxis.set_major_formatter(ScalarFormatter())  # 4, 8, 16 rather than 2^2, 2^3, 2^4
    ax.set_xlabel("time steps T")
    ax.set_ylabel("peak RSS growth (MiB)")
    if arts:
        ax.legend()
    return arts


def accuracy_vs_epoch(ax, runs):
    """Test accuracy per epoch, one line per rule. Fractions (all ≤ 1) are shown as percent."""
    arts = []
    for rule, accs in runs.items():
        accs = np.asarray(accs, dtype=float)
        scale = 100.0 if accs.size and np.nanmax(accs) <= 1.0 else 1.0
        arts += ax.plot(np.arange(1, accs.size + 1), scale * accs, marker="o", label=rule)
    epoch_axis(ax)
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    return arts


def save(fig, path, dpi=120):
    """Write ``fig`` as PNG to ``path`` (folders created), close it, return ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    try:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)  # never leak figures, even when saving fails
    return path
