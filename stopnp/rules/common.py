"""Options shared by every rule, resolved once from the network's config plus call overrides."""
from dataclasses import dataclass, field

import numpy as np

from ..config import ConfigError, RULES, validate_field
from ..kernels import lif as klif


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


WEIGHTS_ONLY = ("sltt", "sltt-k", "ottt", "bpsta")
STORED = ("bptt", "bpsta")          # backward in time after the sequence: no per-step (online) update


def resolve_options(net, rule, options) -> dict:
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
    if rule in WEIGHTS_ONLY and opts["learn"] != "W":
        raise ConfigError(f"rule {rule!r} learns weights only; set rule.learn = 'W' (--set rule.learn=W, or "
                          f"start from the recipe rule-{rule}); learn={opts['learn']!r} asks for "
                          f"thresholds/leaks too, which only 'stop' and 'bptt' learn")
    if opts["online"] and rule in STORED:
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


def output_view(ws, net, ti):
    out = net.output
    arr = ws.s[out.index][ti] if out.spiking else ws.u[out.index][ti]
    return arr.reshape(arr.shape[0], -1)


def bn_stats(ws):
    steps = max(ws.bn_steps, 1)
    return {f"{n}.bn": (ws.bn_mean_sum[n] / steps, ws.bn_var_sum[n] / steps) for n in ws.bn_mean_sum}
