"""Learning rules over the same network and kernels (docs/algorithms.md §3 table), and their one registry.

    stop     online: traces forward, spatial errors within each step; W, θ, α     O(1) memory in T
    bptt     stored history, exact reference (reset detached by default)          O(T)
    sltt     δ sent down, own gradients from δ[t] ⊗ x[t] only (trace decay 0)      O(1)
    sltt-k   as sltt, backward at K distinct steps drawn uniformly per batch       O(1)
    ottt     δ[t] ⊗ â[t], presynaptic trace â = λ·â + s (λ = rule.ottt_lambda)     O(1)
    bpsta    BPTT over the BPSTA neuron with its changed derivatives, voting readout  O(T)

sltt, sltt-k, ottt and bpsta learn weights only (rule.learn = "W"). ``RULES`` (name -> ``common.Rule``)
is the one list of rules: config's choices, the CLI's, and every "is it stored / weights only" question
read it.
"""
from ..config import ConfigError
from . import bpsta, bptt, ottt, sltt, stop
from .common import Rule

RULES = {r.name: r for r in (stop.RULE, bptt.RULE, sltt.RULE, sltt.RULE_K, ottt.RULE, bpsta.RULE)}


def rule(name) -> Rule:
    """The registry's record of rule ``name``; a ConfigError naming the valid ones otherwise."""
    if name not in RULES:
        raise ConfigError(f"rule {name!r} is not available; available: {', '.join(RULES)}")
    return RULES[name]


def runner(name):
    """The function that runs one batch with rule ``name`` (``Rule.run``)."""
    return rule(name).run
