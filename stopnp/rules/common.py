"""What every rule shares: its registry record, the options resolved once from the network's config plus
call overrides, the forward loop, the readout and loss, and the result of one batch.

The forward loop (docs/algorithms.md §1), for t = 1..T and every layer l in order:

    I^l[t] = Σ_synapses BN( W ⊛ pre(s^src[t]) )       engine.synapse.layer_current
    the rule's neuron on I^l[t]                         LIF (BPTT), LIF with STOP's traces, BPSTA's neuron

then, per step, the readout and loss (kernels/loss.py):

    o[t] = s^L[t] (spiking output) or I^L[t] (membrane readout);   out_sum = Σ_t o[t]
    E[t] = c_ce·CE(softmax(o[t]), y) + c_mse·MSE(o[t], onehot(y)),  and ∂E[t]/∂o[t]
"""
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import ConfigError, validate_field
from ..engine.synapse import layer_current
from ..kernels import elementwise as kel
from ..kernels import lif as klif
from ..kernels import loss as kloss


@dataclass(frozen=True)
class Rule:
    """One learning rule of the registry (``rules.RULES``)."""
    name: str
    run: Callable          # one batch: run(net, params, x, y, opts, *, grads, ws, rng, record, on_step,
    #                        on_grads_final) -> Result
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


class FinalGrads:
    """The end of a batch's gradients, layer by layer: each spiking layer's Δθ, Δα sums into the named
    gradients (``GradSums.add_layer_grads``) and, with ``on_final`` (a data-parallel run's overlap of the
    gradient sum with the backward pass, run/distributed.py), the names of each layer's gradient arrays
    as soon as nothing in the batch writes them again, top layer first.

    The rule calls ``layer_done(layer)`` in its last backward pass over the layers, once the layer's own
    gradients are complete (ΔW and BN γ, β of its synapses, its Δθ, Δα sums), and ``finish()`` after the
    time loop and ``flush_static``. A layer with a static-input synapse (``static``: its ΔW is added by
    ``flush_static``) is named in ``finish``. Without ``on_final``, ``finish`` adds every layer's Δθ, Δα;
    with it, each layer's are added in ``layer_done`` instead: the same additions on the same values, so
    the gradients are bitwise the same.
    """

    def __init__(self, net, grads, sums, opts, on_final=None, static=False):
        self.net, self.grads, self.sums, self.on_final, self.static = net, grads, sums, on_final, static
        self.learn, self.alpha_reduce = opts["learn"], opts["alpha_reduce"]
        self.added = set()  # indices of the layers whose Δθ, Δα are in
        self.held = []      # layers named in finish (a static-input synapse)

    def names(self, layer) -> list:
        """The names of ``layer``'s gradient arrays: its synapses' W and BN γ, β, its θ and α."""
        own = [f"{syn.name}.{p}" for syn in layer.synapses for p in ("weight", "bn.gamma", "bn.beta")]
        return [n for n in own + [f"{layer.name}.theta", f"{layer.name}.alpha"] if n in self.grads]

    def layer_done(self, layer):
        """``layer``'s gradients are complete (the last backward pass has left it)."""
        if self.on_final is None:
            return
        self.sums.add_layer_grads(self.net, self.grads, self.learn, self.alpha_reduce, layers=(layer,))
        self.added.add(layer.index)
        if self.static and any(syn.src < 0 for syn in layer.synapses):
            self.held.append(layer)
        elif names := self.names(layer):
            self.on_final(names)

    def finish(self):
        """After the time loop and ``flush_static``: the Δθ, Δα not added yet; the layers held back named."""
        rest = [layer for layer in self.net.layers if layer.index not in self.added]
        self.sums.add_layer_grads(self.net, self.grads, self.learn, self.alpha_reduce, layers=rest)
        if self.on_final is not None:
            for layer in self.held:
                if names := self.names(layer):
                    self.on_final(names)


def check_buffers(net, params, x, ws=None, grads=None, learn="W"):
    """A caller's workspace and gradient arrays fit the batch x (T, B, ...): the kernels index them without
    bounds checks, so a workspace of another batch size or dtype, or a gradient of another shape, dtype or
    layout, would read or write past them. ``grads``: every array the rule writes (``net.trainable(learn)``)."""
    B, dtype = x.shape[1], x.dtype
    if ws is not None and (ws.B != B or ws.dtype != dtype):
        raise ValueError(f"workspace for batches of {ws.B} in {ws.dtype}, but x holds {B} samples in {dtype}; "
                         f"build it for this batch (Rule.workspace)")
    if grads is None:
        return
    for name in net.trainable(learn):
        g = grads.get(name)
        if (not isinstance(g, np.ndarray) or g.shape != params[name].shape or g.dtype != dtype
                or not g.flags.c_contiguous or not g.flags.writeable):
            got = f"{g.shape} {g.dtype}" if isinstance(g, np.ndarray) else type(g).__name__
            raise ValueError(f"grads[{name!r}] is {got}; the rule needs a writable C-contiguous "
                             f"{params[name].shape} {dtype} array (zero_grads)")


def zero_grads(net, params, learn, dtype) -> dict:
    return {n: np.zeros(params[n].shape, dtype) for n in net.trainable(learn)}


def alpha_of(params, layer, dtype):
    return dtype.type(params[f"{layer.name}.alpha"].reshape(-1)[0])


def begin(net, params, ws, rng, train):
    """A new sequence: state, traces and sums zeroed, θ per neuron, dropout masks (``train``: from ``rng``)."""
    ws.reset_sequence(net, params, rng, train=train)
    ws.sums.zero()


def forward(net, params, ws, x, bn_train, fire, step_done=None, *, stored, static):
    """The forward loop every rule shares (the module docstring): for each step t, each layer's current
    I^l[t] into slot t (``stored``) or 0, then ``fire(layer, t, slot)``, the rule's neuron, which returns
    the layer's spike count (None for a non-spiking readout); after every step BN's step count and
    ``step_done(t, slot)`` (the readout, the loss, an online backward). ``static``: x is the same at
    every step (time stride 0), so the input synapses' W ⊛ x is computed once.

    Returns the spike count Σ_{t,b,j} s of every spiking layer.
    """
    counts = {layer.name: 0.0 for layer in net.layers if layer.spiking}
    for t in range(x.shape[0]):
        slot = t if stored else 0
        for layer in net.layers:
            layer_current(ws, params, layer, x[t], slot, bn_train, static, t == 0)
            n = fire(layer, t, slot)
            if n is not None:
                counts[layer.name] += n
        if bn_train:
            ws.sums.bn_steps += 1
        if step_done is not None:
            step_done(t, slot)
    return counts


class Readout:
    """Σ_t o[t] and the summed per-step loss E = Σ_t E[t] of one sequence (the module docstring)."""

    def __init__(self, net, opts, T, B, dtype):
        self.net = net
        self.coef = kloss.coefficients(opts["loss"], opts["mix"], opts["loss_reduce"], T)
        self.out_sum = np.zeros((B, net.output.size), dtype)
        self.loss = 0.0

    def step(self, ws, slot, y, go):
        """o[t] from slot ``slot`` into Σ_t o[t]; with labels ``y``, E[t] into the loss and ∂E[t]/∂o[t]
        into ``go`` (B, C)."""
        o = output_view(ws, self.net, slot)
        self.out_sum += o
        if y is not None:
            self.loss += kloss.step_loss(go, o, y, *self.coef)


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
