"""The public functions: gradients of one batch, and a recording forward pass.

    gradients(net, x, y, rule="stop", **options) -> {name: ∂E/∂param}
    simulate(net, x, record=("u", "s"), y=None)   -> {"<layer>.<what>": (T, B, ...)}
    predict(net, x)                               -> (B,) argmax of Σ_t o[t]
"""
import numpy as np

from .network import check_input, check_params
from .rules import runner
from .rules.common import resolve_options


def _params_as(net, dtype):
    return {k: (v if v.dtype == dtype else v.astype(dtype)) for k, v in net.params.items()}


def run_batch(net, x, y=None, rule="stop", *, rng=None, record=(), **options):
    """Validate once, then run one batch with ``rule``; returns the rule's ``Result``."""
    check_input(net, x, y)
    check_params(net)
    opts = resolve_options(net, rule, options)
    params = _params_as(net, x.dtype)
    return runner(rule)(net, params, x, y, opts, rng=rng, record=record)


def gradients(net, x, y, rule="stop", **options) -> dict:
    """Gradients of one batch without updating anything. float64 ``x`` gives float64 arithmetic.

    Options (defaults from ``net.config``): learn ("W", "WT", "WL", "WTL"), alpha_reduce, detach_reset,
    loss, loss_reduce, mix, kernels ("blas" | "loop"), reset, surrogate, bn_mode ("train" | "eval"),
    smooth (finite-difference checks only).
    """
    if y is None:
        raise ValueError("gradients: labels y are required")
    return run_batch(net, x, y, rule, **options).grads


def simulate(net, x, record=("u", "s"), y=None, rule="stop", **options) -> dict:
    """Forward pass recording per layer and step: u, s, v, i; with labels y also delta, g, w_trace,
    th_trace, al_trace (the STOP learning quantities; nothing is updated)."""
    if rule != "stop":
        raise ValueError("simulate records the online (stop) pass; use rule='stop'")
    res = run_batch(net, x, y, rule, record=tuple(record), **options)
    return res.records


def predict(net, x, **options) -> np.ndarray:
    """argmax over classes of Σ_t o[t] (BN in eval mode), with the network's own neuron model."""
    rule = "bpsta" if net.config["rule"]["name"] == "bpsta" else "stop"
    res = run_batch(net, x, None, rule, bn_mode="eval", **{"learn": "W", **options})
    return res.out_sum.argmax(axis=1)
