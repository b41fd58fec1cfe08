"""What every rule shares: its registry record, the options resolved once from the network's config plus
call overrides, and the result of one batch."""
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import ConfigError, validate_field
from ..kernels import elementwise as kel
from ..kernels import lif as klif


@dataclass(frozen=True)
class Rule:
    """One learning rule of the registry (``rules.RULES``)."""
    name: str
    run: Callable          # one batch: run(net, params, x, y, opts, *, grads, ws, rng, record, on_step) -> Result
    stored: bool           # keeps every step, then runs backward in time: memory grows with T, no online update
    weights_only: bool     # learns W only (rule.learn = "W")
    forward: str = "stop"  # the rule whose forward pass evaluates and predicts (BPSTA has its own neuron)

    def workspace(self, net, B, dtype, opts, T):
        """Buffers for batches of B samples (and T steps: the stored rules keep them all)."""
        from . import bptt, stop
        return bptt.workspace(net, B, dtype, opts, T) if self.stored else stop.workspace(net, B, dtype, opts)


@dataclass
class Result:
    """What one batch produced: summed loss, Σ_t o[t] per sample, spike counts, gradients, records."""
    loss: float
    out_sum: np.ndarray                 # (B, n_classes): Σ_t o[t]; prediction = argmax
    grads: dict
    spike_counts: dict = field(default_factory=dict)   # layer -> Σ_{t,b,j} s
    records: dict = field(default_factory=dict)        # "<layer>.<what>" -> (T, B, ...)
    bn_stats: dict = field(default_factory=dict)       # "<syn>.bn" -> (mean, var) averaged over steps


OPTION_DEFAULTS = {
    # name: (config section, key) or a literal default
    "learn": ("rule", "learn"), "alpha_reduce": ("rule", "alpha_reduce"),
    "detach_reset": ("rule", "detach_reset"), "online": ("rule", "online"), "k": ("rule", "k"),
    "ottt_lambda": ("rule", "ottt_lambda"), "bpsta_lambda": ("rule", "bpsta_lambda"),
    "bpsta_beta": ("rule", "bpsta_beta"),
    "loss": ("loss", "kind"), "loss_reduce": ("loss", "reduce"), "mix": ("loss", "mix"),
    "kernels": ("run", "kernels"),
    "reset": ("neuron", "reset"), "surrogate": ("neuron", "surrogate"),
    "bn_mode": "train", "smooth": False, "ann": False, "bpsta_plain": False,
}


def resolve_options(net, rule, options) -> dict:
    from . import RULES  # the registry (rules/__init__.py)
    if rule not in RULES:
        raise ConfigError(f"rule {rule!r}: valid rules are {', '.join(RULES)}")
    unknown = set(options) - set(OPTION_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}; valid: "
                          f"{', '.join(OPTION_DEFAULTS)}")
    opts = {"rule": rule}
    for name, src in OPTION_DEFAULTS.items():
        value = options.get(name, net.config[src[0]][src[1]] if isinstance(src, tuple) else src)
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(src, tuple):  # an option for a config field is checked as that field
            value = validate_field(*src, value, name=f"option {name} ({'.'.join(src)})" if name in options else None)
        elif isinstance(src, bool) and not isinstance(value, bool):
            raise ConfigError(f"option {name} = {value!r}: expected True or False")
        opts[name] = value
    if opts["bn_mode"] not in ("train", "eval"):
        raise ConfigError(f"option bn_mode = {opts['bn_mode']!r}: valid choices are train, eval")
    if RULES[rule].weights_only and opts["learn"] != "W":
        raise ConfigError(f"rule {rule!r} learns weights only; set rule.learn = 'W' (--set rule.learn=W, or "
                          f"start from the recipe rule-{rule}); learn={opts['learn']!r} asks for "
                          f"thresholds/leaks too, which only 'stop' and 'bptt' learn")
    if opts["online"] and RULES[rule].stored:
        raise ConfigError(f"rule.online = true (apply the gradients after every step) needs an online rule "
                          f"(stop, sltt, sltt-k, ottt); {rule!r} computes its gradients backward in time after "
                          f"the whole sequence, so set rule.online = false")
    vote = net.config["model"]["vote"]
    if vote > 1 and rule != "bpsta":
        raise ConfigError(f"model.vote = {vote}: the voting readout (n_classes·vote output neurons) is BPSTA's; "
                          f"rule {rule!r} reads one output per class, so set model.vote = 1")
    opts["surr"] = klif.SURROGATES[opts["surrogate"]]
    opts["hard"] = opts["reset"] == "hard"
    return opts


def zero_grads(net, params, learn, dtype) -> dict:
    return {n: np.zeros(params[n].shape, dtype) for n in net.trainable(learn)}


def alpha_of(params, layer, dtype):
    return dtype.type(params[f"{layer.name}.alpha"].reshape(-1)[0])


def output_view(ws, net, slot):
    """o[t] as (B, C): the output layer's spikes, or its U = I for a non-spiking readout."""
    out = net.output
    arr = ws.state.s[out.index][slot] if out.spiking else ws.state.u[out.index][slot]
    return arr.reshape(arr.shape[0], -1)


def spike_count(ws, s, binary=True) -> float:
    """Σ s over a (B, N) view: a count of the nonzeros for 0/1 spikes (vectorized, exact), else the sum
    (the smooth spikes of finite-difference checks, BPSTA's ANN mode)."""
    if not binary:
        return float(s.sum())
    return float(kel.count_nonzero(ws.scratch.nspk, s))
