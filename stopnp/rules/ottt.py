"""OTTT (Xiao et al. NeurIPS 2022): STOP's online loop with a presynaptic trace of fixed decay, weights only.

At every step t, on the loop of stop.py (docs/algorithms.md §3, §5):

    â^l[t] = λ·â^l[t-1] + x^l[t]        the weight trace w~ with a fixed λ = rule.ottt_lambda
    δ^l[t] as in SLTT (spatial only, sent down)
    ΔW^l  += δ^l[t] ⊗ â^l[t]

OTTT_A accumulates over the sequence (rule.online = false); OTTT_O applies every step (rule.online = true).
"""
from . import stop
from .common import Rule


def trace_decay(opts, alpha, dtype):
    """λ = rule.ottt_lambda, whatever the layer's leak: â belongs to the input spikes (a non-spiking readout,
    which has no α, keeps it too)."""
    return dtype.type(opts["ottt_lambda"])


def run(net, params, x, y, opts, **kw):
    return stop.run(net, params, x, y, opts, trace_decay=trace_decay, **kw)


RULE = Rule("ottt", run, stored=False, weights_only=True)
