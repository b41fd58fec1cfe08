"""BPTT: the exact reference. Store every step, then run backward in time (docs/algorithms.md §3, §5).

Forward for t = 1..T stores U[t], s[t], V[t-1], every synapse input x[t] and BN cache. Backward for
t = T..1, layers L..1, with the layer's full error eU carried from t+1 (kernels/lif.py):

    g^l[t]   = (backward of W^{l+1}, BN^{l+1}, pooling)( eU^{l+1}[t] )     full error sent down
    eU^l[t]  = gs·φ + eV·(1 | 1-s),  eV = α·eU^l[t+1]
    ΔW^l    += eU^l[t] ⊗ x^l[t];   Δθ^l, Δα^l as in lif_bptt_backward

``detach_reset`` (default True) treats s in the reset as a constant; False keeps the reset path
(∂U[t+1]/∂U[t] = α(1 - θφ) soft, α(1 - s - Uφ) hard), which is what finite differences of the smooth
forward (``smooth=True``) measure. Memory grows linearly with T.
"""
import numpy as np

from ..kernels import lif as klif
from ..engine.state import Workspace
from ..engine.synapse import flat, flush_static
from .common import (FinalGrads, Readout, Result, Rule, alpha_of, begin, check_buffers, forward, spike_count,
                     zero_grads)


def workspace(net, B, dtype, opts, T):
    return Workspace(net, B, dtype, T_store=T, backend=opts["kernels"], keep_vprev=True)


def run(net, params, x, y, opts, *, grads=None, ws=None, rng=None, record=(), on_step=None,
        on_grads_final=None, backward_steps=None) -> Result:
    """One batch: forward over all T steps, stored, then backward in time. ``on_grads_final(names)``: called
    in the backward of t = 1 (the last) with each layer's gradient names once they are final
    (``FinalGrads``)."""
    T, B = x.shape[:2]
    dtype = x.dtype
    learn = opts["learn"]
    bn_train = opts["bn_mode"] == "train"
    smooth, surr, hard = opts["smooth"], opts["surr"], opts["hard"]
    check_buffers(net, params, x, ws, grads if y is not None else None, learn)
    if ws is None or ws.T_store < T:
        ws = workspace(net, B, dtype, opts, T)
    begin(net, params, ws, rng, y is not None and bn_train)
    alphas = [alpha_of(params, layer, dtype) if layer.spiking else None for layer in net.layers]
    readout = Readout(net, opts, T, B, dtype)
    go = np.zeros((T, B, net.output.size), dtype)
    static = x.strides[0] == 0  # same input every step: input-layer W ⊛ x once, ΔW = (Σ_t δ̂[t]) ⊗ x
    st = ws.state

    def fire(layer, t, slot):
        """The LIF step into slot t, V[t-1] kept for the backward."""
        li = layer.index
        u, s, i_in = flat(st.u[li][slot]), flat(st.s[li][slot]), flat(st.i_in[li])
        if not layer.spiking:
            np.copyto(u, i_in)
            return None
        np.copyto(st.v_prev[li][slot], st.v[li])
        klif.lif_forward(u, s, flat(st.v[li]), i_in, alphas[li], st.theta[li], hard, smooth, surr)
        return spike_count(ws, s, not smooth)

    def step_done(t, slot):
        readout.step(ws, slot, y, go[t])

    counts = forward(net, params, ws, x, bn_train, fire, step_done, stored=True, static=static)
    total, out_sum = readout.loss, readout.out_sum
    if y is None:
        return Result(0.0, out_sum, {}, counts, {}, ws.sums.bn_stats() if bn_train else {})
    if grads is None:
        grads = zero_grads(net, params, learn, dtype)
    keep_reset = not opts["detach_reset"]
    final = FinalGrads(net, grads, ws.sums, opts, on_grads_final, static)
    sc, sums = ws.scratch, ws.sums
    for e_u in sc.delta:  # the full error eU^l, carried backward in time from t+1 (zero at T+1)
        e_u.fill(0)
    for t in range(T - 1, -1, -1):
        for g in sc.g:
            g.fill(0)
        flat(sc.g[net.output.index])[...] = go[t]
        for layer in reversed(net.layers):
            li = layer.index
            e_u = sc.delta[li]
            if layer.spiking:
                klif.lif_bptt_backward(flat(e_u), sums.dtheta[li], sums.dalpha[li], flat(sc.g[li]), flat(st.u[li][t]),
                                       flat(st.s[li][t]), flat(st.v_prev[li][t]), alphas[li], st.theta[li], hard,
                                       keep_reset, surr)
            else:
                np.copyto(e_u, sc.g[li])
            for syn in layer.synapses:
                op = ws.synapses[syn.name]
                if static and syn.src < 0:
                    op.backward(params, grads, e_u, None, t, False, bn_train, static_coef=1.0)
                else:
                    op.backward(params, grads, e_u, op.input(x[t], t), t, syn.src >= 0, bn_train)
            if t == 0:
                final.layer_done(layer)
    if static:
        flush_static(ws, grads, x[0])
    final.finish()
    return Result(total, out_sum, grads, counts, {}, sums.bn_stats() if bn_train else {})


RULE = Rule("bptt", run, stored=True, weights_only=False)
