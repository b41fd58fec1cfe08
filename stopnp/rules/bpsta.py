"""BPSTA (Shen, Zhao, Zeng, Patterns 2022): BPTT over its own neuron with two changed derivatives.

Neuron and derivatives: kernels/bpsta.py (ReLU input current, hard reset, β path, 1/v spatial gain).
Readout: the output layer has n_classes·G neurons (G = model.vote, 10 in the recipe); the vote of class c
is the mean spike of its group, averaged over T:

    o[b, c] = (1/T) Σ_t (1/G) Σ_k s^L[t, b, c·G + k],    E = MSE(o, onehot(y))  (mean over B and classes)
    ∂E/∂s^L[t, b, c·G + k] = 2 (o[b, c] - onehot) / (B·C·T·G)

θ = neuron.theta_init (0.5), λ = rule.bpsta_lambda (0.9), β = rule.bpsta_beta (0.2); none is learned.
The neuron always resets hard and ∂s/∂v is BPSA's H(v - θ)/v: neuron.reset, neuron.surrogate and
neuron.alpha_init do not apply to it (the recipe sets reset = "hard" to say so).
Option ``bpsta_plain=True``: the same forward with the plain BPTT derivatives instead (∂s/∂v = φ(v - θ)
with neuron.surrogate, no β path, reset path kept only with rule.detach_reset = false): the reference
the two BPSTA adjustments change, used for compare's cosine.
Memory grows with T like BPTT. ANN warm-up (option ``ann=True``, the first rule.warmup_epochs epochs of
training): the spiking nodes are bypassed, a^l = ReLU(BN(W ⊛ a^{l-1})), one step, same voting MSE loss.
"""
import numpy as np

from ..config import ConfigError
from ..kernels import bpsta as kb
from ..engine.state import Workspace
from ..engine.synapse import flat, flush_static
from .common import FinalGrads, Result, Rule, begin, check_buffers, forward, zero_grads


def check_config(cfg):
    """Training settings BPSTA would otherwise ignore: its neuron always resets hard and its loss is the
    voting MSE averaged over T, so a config saying otherwise is refused, not silently overridden."""
    want = {("neuron", "reset"): "hard", ("loss", "kind"): "mse", ("loss", "reduce"): "mean"}
    for (sec, key), value in want.items():
        if cfg[sec][key] != value:
            raise ConfigError(f"{sec}.{key} = {cfg[sec][key]!r}: rule 'bpsta' always uses {value!r} (its own "
                              f"neuron and voting MSE loss); set {sec}.{key} = {value!r} as "
                              f"the recipe rule-bpsta does")


def workspace(net, B, dtype, opts, T):
    return Workspace(net, B, dtype, T_store=T, backend=opts["kernels"], keep_vprev=True)


def run(net, params, x, y, opts, *, grads=None, ws=None, rng=None, record=(), on_step=None,
        on_grads_final=None, backward_steps=None) -> Result:
    """One batch: forward over all T steps, stored, then backward in time. ``on_grads_final(names)``: called
    in the backward of t = 1 (the last) with each layer's gradient names once they are final
    (``FinalGrads``)."""
    if not net.output.spiking:
        raise ConfigError("rule 'bpsta' reads out votes of spiking output neurons; set model.readout = 'spiking'")
    ann = opts.get("ann", False)
    if ann:
        x = x[:1]  # a ReLU network needs one step (static input)
    T, B = x.shape[:2]
    dtype = x.dtype
    G = net.config["model"]["vote"]
    C = net.n_classes
    lam, beta = dtype.type(opts["bpsta_lambda"]), dtype.type(opts["bpsta_beta"])
    bn_train = opts["bn_mode"] == "train"
    check_buffers(net, params, x, ws, grads if y is not None else None, opts["learn"])
    if ws is None or ws.T_store < T:
        ws = workspace(net, B, dtype, opts, T)
    begin(net, params, ws, rng, y is not None and bn_train)
    static = x.strides[0] == 0
    st, sc = ws.state, ws.scratch
    L = net.output.index

    def fire(layer, t, slot):
        """I = ReLU(I), kept for the backward; then BPSTA's neuron (or, as an ANN, the ReLU current itself)."""
        li, i_in = layer.index, st.i_in[layer.index]
        kb.relu_(flat(i_in))
        np.copyto(st.v_prev[li][slot], i_in)  # I[t] after the ReLU (its mask is needed backward)
        if ann:
            np.copyto(st.s[li][slot], i_in)  # the node is bypassed: its output is the ReLU current
        else:
            kb.bpsta_forward(flat(st.u[li][slot]), flat(st.s[li][slot]), flat(st.v[li]), flat(i_in), lam,
                             st.theta[li])
        return float(st.s[li][slot].sum())

    counts = forward(net, params, ws, x, bn_train, fire, stored=True, static=static)
    votes = st.s[L][:T].reshape(T, B, C, G).mean(axis=3)          # (T, B, C)
    o = votes.mean(axis=0)
    out_sum = votes.sum(axis=0)
    if y is None:
        return Result(0.0, out_sum, {}, counts, {}, ws.sums.bn_stats() if bn_train else {})
    onehot = np.zeros((B, C), dtype)
    onehot[np.arange(B), y] = 1
    loss = float(((o - onehot) ** 2).mean())
    go = np.repeat(2.0 * (o - onehot) / (B * C * T * G), G, axis=1).astype(dtype)   # (B, C·G), same every t
    if grads is None:
        grads = zero_grads(net, params, opts["learn"], dtype)
    plain, keep_reset = opts.get("bpsta_plain", False), not opts["detach_reset"]
    final = FinalGrads(net, grads, ws.sums, opts, on_grads_final, static)
    for e in sc.delta:  # the error carried backward in time inside each layer (kernels/bpsta.py)
        e.fill(0)
    for t in range(T - 1, -1, -1):
        for g in sc.g:
            g.fill(0)
        flat(sc.g[L])[...] = go
        for layer in reversed(net.layers):
            li = layer.index
            g, e = flat(sc.g[li]), flat(sc.delta[li])
            if ann:
                kb.relu_backward_(g, flat(st.v_prev[li][t]))
            elif plain:
                kb.bpsta_bptt_backward(e, g, flat(st.u[li][t]), flat(st.s[li][t]), flat(st.v_prev[li][t]), lam,
                                       st.theta[li], opts["surr"], keep_reset)
            else:
                kb.bpsta_backward(e, g, flat(st.u[li][t]), flat(st.s[li][t]), flat(st.v_prev[li][t]), lam, beta,
                                  st.theta[li])
            for syn in layer.synapses:  # sc.g[li] now holds the error on the current I[t]
                op = ws.synapses[syn.name]
                if static and syn.src < 0:
                    op.backward(params, grads, sc.g[li], None, t, False, bn_train, static_coef=1.0)
                else:
                    op.backward(params, grads, sc.g[li], op.input(x[t], t), t, syn.src >= 0, bn_train)
            if t == 0:
                final.layer_done(layer)
    if static:
        flush_static(ws, grads, x[0])
    final.finish()
    return Result(loss, out_sum, grads, counts, {}, ws.sums.bn_stats() if bn_train else {})


RULE = Rule("bpsta", run, stored=True, weights_only=True, forward="bpsta")
