"""Per-layer, per-step dumps of the STOP learning quantities, and a STOP-vs-BPTT comparison.

For one batch: δ^l[t], u^l[t], s^l[t], the traces w~, th~, al~, and the per-step gradient
contributions ΔW^l[t] = δ^l[t] ⊗ w~^l[t], Δθ^l[t], Δα^l[t] (their sum over t is the batch gradient),
plus a per-layer table: spike rate, gradient norms, cosine of the STOP gradient to the BPTT one.
"""
import numpy as np
import h5py

from ..config import ConfigError
from ..engine.network import check_input
from ..rules import runner
from ..rules.common import resolve_options

RECORD = ("u", "s", "delta", "w_trace", "th_trace", "al_trace")


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def check_inspectable(net, where="network"):
    """STOP's traces and per-step gradients exist for LIF neurons with the soft reset only."""
    bpsta = net.config["rule"]["name"] == "bpsta"
    if net.neuron["reset"] == "hard" or bpsta:
        raise ConfigError(f"{where}: inspect shows STOP's traces and per-step gradients, which are defined for "
                          f"LIF neurons with the soft reset; this network {'is BPSTA' if bpsta else 'resets hard'}"
                          f" (stopnp plot still shows its curves and thresholds)")


def inspect_batch(net, x, y, *, reference="bptt", per_step=True):
    """Returns (records, per_step_grads, grads, ref_grads, table)."""
    check_input(net, x, y)
    check_inspectable(net)
    opts = resolve_options(net, "stop", {"bn_mode": "eval"})
    steps = {}

    def keep(t, grads):
        for k, g in grads.items():
            steps.setdefault(k, np.zeros((x.shape[0], *g.shape), g.dtype))[t] = g
            g.fill(0)

    res = runner("stop")(net, net.params, x, y, opts, record=RECORD, on_step=keep if per_step else None)
    grads = {k: v.sum(axis=0) for k, v in steps.items()} if per_step else res.grads
    ref_opts = resolve_options(net, reference, {"bn_mode": "eval"})
    ref = runner(reference)(net, net.params, x, y, ref_opts).grads
    T, B = x.shape[:2]
    table = []
    for layer in net.layers:
        row = {"layer": layer.name,
               "spike_rate": res.spike_counts.get(layer.name, float("nan")) / (T * B * layer.size)}
        for suffix in ("weight", "theta", "alpha"):
            names = [f"{layer.name}.{suffix}"] if suffix != "weight" else [
                f"{s.name}.weight" for s in layer.synapses if s.op != "identity"]
            names = [n for n in names if n in grads]
            if not names:
                continue
            g = np.concatenate([grads[n].ravel() for n in names])
            r = np.concatenate([ref[n].ravel() for n in names])
            row[f"|d{suffix}|"] = float(np.linalg.norm(g))
            row[f"cos_{suffix}"] = cosine(g, r)
        table.append(row)
    return res.records, steps, grads, ref, table


def write_h5(path, records, steps, grads, ref, table, attrs=None, inputs=None):
    """records/<layer>.<what> (T,B,...), per_step/<param> (T,...), grads/, bptt/, inputs/ (x, y), table as
    attrs."""
    with h5py.File(path, "w") as f:
        for group, d in (("records", records), ("per_step", steps), ("grads", grads), ("bptt", ref),
                         ("inputs", inputs or {})):
            g = f.create_group(group)
            for k, v in d.items():
                g.create_dataset(k, data=v, compression="gzip")
        import json
        f.attrs["table"] = json.dumps(table)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


def format_table(table) -> str:
    cols = ["layer", "spike_rate", "|dweight|", "cos_weight", "|dtheta|", "cos_theta", "|dalpha|", "cos_alpha"]
    lines = ["  ".join(f"{c:>12}" for c in cols)]
    for row in table:
        cells = []
        for c in cols:
            v = row.get(c, "")
            if c == "spike_rate" and isinstance(v, float) and v != v:
                v = "(readout)"  # a non-spiking membrane readout has no spikes
            cells.append(f"{v:>12.4g}" if isinstance(v, float) else f"{str(v):>12}")
        lines.append("  ".join(cells))
    return "\n".join(lines)
