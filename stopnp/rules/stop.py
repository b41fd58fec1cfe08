"""STOP: online learning with forward traces and per-step spatial errors (docs/algorithms.md §4).

At every step t, for every layer l (traces first, from V[t-1] and s[t-1]):

    w~^l[t]  = α^l · w~^l[t-1] + x^l[t]                 [Eq. 20]
    th~^l[t] = α^l · (th~^l[t-1] - s^l[t-1])             [Eq. 26]
    al~^l[t] = α^l · al~^l[t-1] + V^l[t-1]               [Eq. 30]

then the forward step (charge, fire, soft reset), the loss E[t], and the spatial errors of step t only:

    δ^L[t] = ∂E[t]/∂s^L[t] ⊙ φ(U^L[t] - θ^L)
    δ^l[t] = (backward of W^{l+1}, BN^{l+1}, pooling, dropout)(δ^{l+1}[t]) ⊙ φ(U^l[t] - θ^l)
    ΔW^l  += δ^l[t] ⊗ w~^l[t]                             [Eq. 17]
    Δθ^l  += δ^l[t] ⊙ (th~^l[t] - 1)                      [Eq. 24]
    Δα^l  += mean_j( δ^l_j[t] · al~^l_j[t] )              [Eq. 27]

Nothing of step t survives step t+1 except V, s and the traces: memory is independent of T.
The same loop runs SLTT (sltt.py: trace decay 0, w~ = x, no θ/α traces) and OTTT (ottt.py: w~ decays
with a fixed λ, weights only): each passes its ``trace_decay``.

ΔW's path: ``run`` (the time loop, rules/common.forward) -> ``backward_step`` (δ per layer) ->
``SynapseOp.backward`` (engine/synapse.py: BN's backward, then its kernel) -> the kernel bound when the
workspace was built (kernels/linear.py, conv.py, winograd.py), with δ, δ̂ and w~ named delta, delta_hat
and w_trace all the way down.
"""
import numpy as np

from ..config import ConfigError
from ..kernels import lif as klif
from ..engine.state import Workspace
from ..engine.synapse import flat, flush_static
from .common import (FinalGrads, Readout, Result, Rule, alpha_of, begin, check_buffers, forward, spike_count,
                     zero_grads)

RECORDABLE = ("u", "s", "v", "i", "delta", "g", "w_trace", "th_trace", "al_trace")


def workspace(net, B, dtype, opts):
    return Workspace(net, B, dtype, T_store=1, backend=opts["kernels"], traces=True)


def check(opts):
    """The learning step's limits (a forward-only pass, e.g. evaluating a BPTT-trained hard-reset
    network, runs any neuron)."""
    if opts["hard"] and opts["rule"] == "stop":
        raise ConfigError(f"rule {opts['rule']!r} is defined with the soft reset (its weight trace is per "
                          f"input neuron only because every neuron decays by the same α); use "
                          f"neuron.reset = 'soft', or rule 'bptt' for the hard reset")
    if not opts["detach_reset"]:
        raise ConfigError(f"rule {opts['rule']!r} sends only the same step's error down, so the reset path is "
                          f"always detached; rule.detach_reset = false applies to 'bptt' and 'bpsta' only: set "
                          f"rule.detach_reset = true")


def trace_decay(opts, alpha, dtype):
    """λ of STOP's weight trace: the layer's leak α.

    ``alpha`` is None for a non-spiking readout (o[t] = I[t], no membrane): STOP's exact own-layer error
    is then δ itself (decay 0).
    """
    return dtype.type(0) if alpha is None else alpha


def _leaks(net, params, opts, dtype, trace_decay):
    """Per layer: α (None for a non-spiking readout) and the weight trace's decay λ."""
    alphas = [alpha_of(params, layer, dtype) if layer.spiking else None for layer in net.layers]
    return alphas, [trace_decay(opts, a, dtype) for a in alphas]


def run(net, params, x, y, opts, *, grads=None, ws=None, rng=None, record=(), on_step=None,
        on_grads_final=None, backward_steps=None, trace_decay=trace_decay) -> Result:
    """One sequence batch. ``y=None``: forward only. ``backward_steps``: steps with a backward (SLTT-K).

    ``on_step(t, grads)`` (online update): called after every step's gradients, which are reduced to
    the named arrays first; the callee applies and zeroes them. ``on_grads_final(names)``: called in
    the last step's backward with each layer's gradient names once they are final (``FinalGrads``; not
    with ``on_step``). ``trace_decay(opts, α, dtype)``: λ of the weight trace (STOP: α; SLTT and OTTT
    pass their own).
    """
    T, B = x.shape[:2]
    dtype = x.dtype
    learning = y is not None
    if learning:
        check(opts)
    learn = opts["learn"]
    bn_train = opts["bn_mode"] == "train"
    smooth, surr = opts["smooth"], opts["surr"]
    check_buffers(net, params, x, ws, grads if learning else None, learn)
    if ws is None:
        ws = workspace(net, B, dtype, opts)
    begin(net, params, ws, rng, learning and bn_train)
    if learning and grads is None:
        grads = zero_grads(net, params, learn, dtype)
    if on_grads_final is not None and on_step is not None:
        raise ValueError("on_grads_final: an online update (on_step) has every step's gradients final at once")
    rec = _alloc_records(net, ws, T, record, learning)
    readout = Readout(net, opts, T, B, dtype)
    go = np.zeros((B, net.output.size), dtype)
    alphas, decays = _leaks(net, params, opts, dtype, trace_decay)
    traced = learning and opts["rule"] == "stop"  # STOP's θ~ and α~ traces (SLTT, OTTT: W only)
    theta_learn = "T" in learn or "L" in learn
    # static input (time stride 0, e.g. direct-coded images): W ⊛ x once per sequence, and the
    # input layer's ΔW as (Σ_t c_t·δ̂[t]) ⊗ x with c_t = λ·c_{t-1} + 1 (w~[t] = c_t·x)
    static = x.strides[0] == 0 and on_step is None  # an online update changes W within the sequence
    static_grad = static and learning and "w_trace" not in record
    coef = [0.0] * len(net.layers)
    final = FinalGrads(net, grads, ws.sums, opts, on_grads_final if learning else None, static_grad)
    last = T - 1 if backward_steps is None else max(backward_steps, default=-1)  # the last step with a backward
    fused = opts["kernels"] != "loop" and not smooth  # the fast LIF step (the loop kernels: reference)
    theta = ws.state.theta

    def fire(layer, t, slot):
        """The weight traces (learning), then the LIF step: with STOP's θ~, α~ traces from V[t-1], s[t-1]."""
        li = layer.index
        coef[li] = float(decays[li]) * coef[li] + 1.0
        if learning:
            for syn in layer.synapses:
                op = ws.synapses[syn.name]
                if syn.op != "identity" and not (static_grad and syn.src < 0):
                    klif.trace_update(flat(op.w_trace), flat(op.input(x[t], 0)), decays[li])
        v = ws.views[li]
        if not layer.spiking:
            np.copyto(v.u, v.i_in)
            return None
        if traced and fused:  # fires and counts in one pass
            return klif.lif_stop_forward(v.u, v.s, v.v, v.th_trace, v.al_trace, v.i_in, alphas[li], theta[li],
                                         smooth, surr, ws.scratch.nspk)
        if traced:
            klif.lif_stop_forward_loop(v.u, v.s, v.v, v.th_trace, v.al_trace, v.i_in, alphas[li], theta[li], smooth,
                                       surr)
        else:
            klif.lif_forward(v.u, v.s, v.v, v.i_in, alphas[li], theta[li], opts["hard"], smooth, surr)
        return spike_count(ws, v.s, not smooth)

    def step_done(t, slot):
        """o[t] and E[t]; the spatial errors of step t and their gradients; an online update."""
        nonlocal alphas, decays
        readout.step(ws, slot, y if learning else None, go)
        if learning and (backward_steps is None or t in backward_steps):
            backward_step(net, params, ws, grads, go, opts, bn_train, theta_learn and opts["rule"] == "stop",
                          coef if static_grad else None, layer_done=final.layer_done if t == last else None)
            if on_step is not None:
                ws.sums.add_layer_grads(net, grads, learn, opts["alpha_reduce"])
                ws.sums.zero_layer_sums()
                on_step(t, grads)
                # the next step runs with the updated θ and α (W is read from params directly)
                ws.refresh_theta(net, params)
                ws.weights_changed()
                alphas, decays = _leaks(net, params, opts, dtype, trace_decay)
        _record_step(net, ws, rec, t)

    counts = forward(net, params, ws, x, bn_train, fire, step_done, stored=False, static=static)
    if static_grad:
        flush_static(ws, grads, x[0])
    if learning and on_step is None:
        final.finish()
    return Result(readout.loss, readout.out_sum, grads if learning else {}, counts, rec,
                  ws.sums.bn_stats() if bn_train else {})


def backward_step(net, params, ws, grads, go, opts, bn_train, theta_learn, coef=None, layer_done=None):
    """The spatial errors of one step, output layer first, and what they add to the gradients:

        δ^l  = g^l ⊙ φ(U^l - θ^l)
        Δθ^l += δ^l ⊙ (th~^l - 1),  Δα^l += δ^l ⊙ al~^l      per neuron (``theta_learn``: STOP)
        each synapse: ΔW += δ̂ ⊗ w~, g^src += pre-backward(Wᵀ δ̂)   (SynapseOp.backward)

    ``go`` = ∂E[t]/∂o[t]; ``coef`` (static input): c_t of the input synapses (their ΔW is summed, then
    correlated with x once: ``flush_static``). ``layer_done(layer)``: called after each layer's backward
    (the batch's last: ``FinalGrads.layer_done``).
    """
    out = net.output.index
    for li, g in enumerate(ws.scratch.g):
        if li != out:
            g.fill(0)
    ws.views[out].g[...] = go
    delta_grads = klif.stop_delta_grads_loop if opts["kernels"] == "loop" else klif.stop_delta_grads
    sums, theta = ws.sums, ws.state.theta
    for layer in reversed(net.layers):
        li = layer.index
        v = ws.views[li]
        if layer.spiking and theta_learn:
            delta_grads(v.delta, sums.dtheta[li], sums.dalpha[li], v.g, v.u, theta[li], v.th_trace, v.al_trace,
                        opts["surr"])
        elif layer.spiking:
            klif.spatial_delta(v.delta, v.g, v.u, theta[li], opts["surr"])
        else:
            np.copyto(v.delta, v.g)
        delta = ws.scratch.delta[li]
        for syn in layer.synapses:
            op = ws.synapses[syn.name]
            c = coef[li] if coef is not None and syn.src < 0 else None
            op.backward(params, grads, delta, op.w_trace, 0, syn.src >= 0, bn_train, static_coef=c)
        if layer_done is not None:
            layer_done(layer)


def _alloc_records(net, ws, T, record, learning):
    rec = {}
    for what in record:
        if what not in RECORDABLE:
            raise ConfigError(f"record {what!r}: valid: {', '.join(RECORDABLE)}")
        if what in ("delta", "g", "w_trace", "th_trace", "al_trace") and not learning:
            raise ConfigError(f"record {what!r} needs labels y (it is part of the learning step)")
        for layer in net.layers:
            if what == "w_trace":
                for syn in layer.synapses:
                    if syn.op != "identity":
                        rec[f"{syn.name}.w_trace"] = np.zeros((T, ws.B, *syn.in_shape), ws.dtype)
            elif layer.spiking or what in ("u", "i", "delta", "g"):
                rec[f"{layer.name}.{what}"] = np.zeros((T, ws.B, *layer.shape), ws.dtype)
    return rec


def _record_step(net, ws, rec, t):
    if not rec:
        return
    st, tr, sc = ws.state, ws.traces, ws.scratch
    src = {"u": lambda i: st.u[i][0], "s": lambda i: st.s[i][0], "v": lambda i: st.v[i],
           "i": lambda i: st.i_in[i], "delta": lambda i: sc.delta[i], "g": lambda i: sc.g[i],
           "th_trace": lambda i: tr.th_trace[i], "al_trace": lambda i: tr.al_trace[i]}
    for layer in net.layers:
        for syn in layer.synapses:
            key = f"{syn.name}.w_trace"
            if key in rec:
                rec[key][t] = tr.w_trace[syn.name]
        for what, get in src.items():
            key = f"{layer.name}.{what}"
            if key in rec:
                rec[key][t] = get(layer.index)


RULE = Rule("stop", run, stored=False, weights_only=False)
