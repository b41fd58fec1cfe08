"""SLTT and SLTT-K (Meng et al. ICCV 2023): the spatial errors of STOP's online loop, no temporal term.

At every step t, on the loop of stop.py (docs/algorithms.md §3, §5):

    δ^l[t] = (backward of W^{l+1}, BN^{l+1}, pooling)(δ^{l+1}[t]) ⊙ φ(U^l[t] - θ^l)   sent down
    ΔW^l  += δ^l[t] ⊗ x^l[t]            the weight trace with decay 0: w~[t] = x[t]

Weights only (rule.learn = "W"). SLTT-K runs the backward at K distinct steps drawn uniformly per batch
(rule.k) and only the forward at the others. Memory is independent of T.
"""
import numpy as np

from ..config import ConfigError
from . import stop
from .common import Rule


def trace_decay(opts, alpha, dtype):
    """λ = 0: the weight trace is the step's own input, w~[t] = x[t]."""
    return dtype.type(0)


def run(net, params, x, y, opts, **kw):
    return stop.run(net, params, x, y, opts, trace_decay=trace_decay, **kw)


def run_k(net, params, x, y, opts, *, rng=None, **kw):
    """SLTT-K: K distinct steps drawn uniformly (from ``rng``) get a backward; the others are forward-only.

    Training passes its run rng (fresh steps every batch); ``rng=None`` uses ``default_rng(0)``, so
    repeated calls without an rng draw the same steps (reproducible ``stopnp.gradients``).
    """
    T = x.shape[0]
    K = opts["k"]
    if K > T:
        raise ConfigError(f"rule.k = {K} is larger than the number of time steps T = {T}")
    rng = rng if rng is not None else np.random.default_rng(0)
    steps = set(int(t) for t in rng.choice(T, size=K, replace=False)) if y is not None else None
    return stop.run(net, params, x, y, opts, rng=rng, backward_steps=steps, trace_decay=trace_decay, **kw)


RULE = Rule("sltt", run, stored=False, weights_only=True)
RULE_K = Rule("sltt-k", run_k, stored=False, weights_only=True)
