"""Learning rules over the same network and kernels (docs/algorithms.md §3 table).

    stop     online: traces forward, spatial errors within each step; W, θ, α     O(1) memory in T
    bptt     stored history, exact reference (reset detached by default)          O(T)
    sltt     δ sent down, own gradients from δ[t] ⊗ x[t] only (trace decay 0)      O(1)
    sltt-k   as sltt, backward at K distinct steps drawn uniformly per batch       O(1)
    ottt     δ[t] ⊗ â[t], presynaptic trace â = λ·â + s (λ = rule.ottt_lambda)     O(1)
    bpsta    BPTT over the BPSTA neuron with its changed derivatives, voting readout  O(T)

sltt, sltt-k, ottt and bpsta learn weights only (rule.learn = "W").
"""
import numpy as np

from . import bpsta, bptt, stop


def sltt_k(net, params, x, y, opts, *, rng=None, **kw):
    """SLTT-K: K distinct steps drawn uniformly (from ``rng``) get a backward; the others are forward-only.

    Training passes its run rng (fresh steps every batch); ``rng=None`` uses ``default_rng(0)``, so
    repeated calls without an rng draw the same steps (reproducible ``stopnp.gradients``).
    """
    from ..config import ConfigError
    T = x.shape[0]
    K = opts["k"]
    if K > T:
        raise ConfigError(f"rule.k = {K} is larger than the number of time steps T = {T}")
    rng = rng if rng is not None else np.random.default_rng(0)
    steps = set(int(t) for t in rng.choice(T, size=K, replace=False)) if y is not None else None
    return stop.run(net, params, x, y, opts, rng=rng, backward_steps=steps, **kw)


RUNNERS = {"stop": stop.run, "bptt": bptt.run, "sltt": stop.run, "sltt-k": sltt_k, "ottt": stop.run,
           "bpsta": bpsta.run}


def forward_runner(name):
    """The forward pass used for evaluation: BPSTA has its own neuron; every other rule shares STOP's."""
    return RUNNERS["bpsta"] if name == "bpsta" else RUNNERS["stop"]


def runner(name):
    from ..config import ConfigError
    if name not in RUNNERS:
        raise ConfigError(f"rule {name!r} is not available; available: {', '.join(RUNNERS)}")
    return RUNNERS[name]
