"""SLTT, SLTT-K and OTTT equal their definitions (docs/algorithms.md §3, §5), float64, to 1e-10."""
import os

import numpy as np
import pytest

import stopnp
import reference
from fdcheck import rel_err
from nets import convnet, data, mlp3

TOL = 1e-10


def spatial_deltas(net, P, x, y):
    """δ^l[t] with only δ sent down (the common spatial pass of STOP, SLTT and OTTT)."""
    st = reference.forward(net, P, x, bn_train=False)
    T, B = x.shape[:2]
    outs = reference.outputs(net, st)
    delta = {layer.name: [None] * T for layer in net.layers}
    for t in range(T):
        g = {layer.name: np.zeros((B, *layer.shape)) for layer in net.layers}
        g[net.output.name] = reference.ce_grad(outs[t], y)[1].reshape(B, *net.output.shape)
        for layer in reversed(net.layers):
            th = reference.expand_theta(P[f"{layer.name}.theta"], layer.shape, layer.theta_mode)
            d = g[layer.name] * reference.phi(st["U"][layer.name][t] - th, "exp")
            delta[layer.name][t] = d
            for syn in layer.synapses:
                if syn.src >= 0:
                    g[net.layers[syn.src].name] += reference.syn_backward_x(net, syn, P, d, st, t)
    return delta, st


def weight_grads(net, P, delta, st, trace_decay, steps):
    """ΔW = Σ_{t in steps} δ[t] ⊗ a[t], a[t] = λ·a[t-1] + x[t] (λ = 0: SLTT; λ: OTTT)."""
    grads = {}
    T = len(next(iter(delta.values())))
    for layer in net.layers:
        for syn in layer.synapses:
            a, gw = 0.0, 0.0
            for t in range(T):
                a = trace_decay * a + st["x"][syn.name][t]
                if t not in steps:
                    continue
                d = delta[layer.name][t]
                B = d.shape[0]
                if syn.op == "linear":
                    gw = gw + d.reshape(B, -1).T @ a.reshape(B, -1)
                else:
                    gw = gw + reference.conv_grad_w(d, a, P[f"{syn.name}.weight"].shape, syn.stride, syn.pad)
            grads[f"{syn.name}.weight"] = gw
    return grads


def _check(got, ref, st, net):
    for name, r in reference.spike_rates(net, st).items():
        assert 0 < r < 1, name
    assert set(got) == set(ref)
    for k in ref:
        assert np.abs(ref[k]).max() > 0, k
        assert rel_err(got[k], ref[k]) < TOL, (k, rel_err(got[k], ref[k]))


@pytest.mark.parametrize("net_fn", [mlp3, convnet])
def test_sltt_equals_definition(net_fn):
    net = net_fn()
    x, y = data(net, scale=1.2 if net_fn is mlp3 else 1.0)
    delta, st = spatial_deltas(net, net.params, x, y)
    ref = weight_grads(net, net.params, delta, st, 0.0, set(range(x.shape[0])))
    _check(stopnp.gradients(net, x, y, rule="sltt", learn="W"), ref, st, net)
    # SLTT is not STOP: the temporal term is missing
    stop_w = stopnp.gradients(net, x, y, rule="stop", learn="W")
    assert rel_err(stop_w["fc1.weight"] if "fc1.weight" in stop_w else stop_w["conv1.weight"],
                   ref["fc1.weight"] if "fc1.weight" in ref else ref["conv1.weight"]) > 1e-6


@pytest.mark.parametrize("lam", [0.5, 0.8])
def test_ottt_equals_definition(lam):
    net = mlp3()
    x, y = data(net, scale=1.2)
    delta, st = spatial_deltas(net, net.params, x, y)
    ref = weight_grads(net, net.params, delta, st, lam, set(range(x.shape[0])))
    _check(stopnp.gradients(net, x, y, rule="ottt", learn="W", ottt_lambda=lam), ref, st, net)


def test_ottt_equals_stop_weights_only_when_lambda_is_alpha():
    net = convnet()
    x, y = data(net)
    a = float(net.params["conv1.alpha"][0])
    ottt = stopnp.gradients(net, x, y, rule="ottt", learn="W", ottt_lambda=a)
    stop = stopnp.gradients(net, x, y, rule="stop", learn="W")
    for k in stop:
        assert np.abs(stop[k]).max() > 0 and rel_err(ottt[k], stop[k]) < TOL, k


def test_sltt_k_with_k_equal_T_is_sltt_and_subset_follows_definition():
    net = mlp3()
    x, y = data(net, T=6, scale=1.2)
    T = x.shape[0]
    sltt = stopnp.gradients(net, x, y, rule="sltt", learn="W")
    full = stopnp.gradients(net, x, y, rule="sltt-k", learn="W", k=T)
    for k in sltt:
        assert rel_err(full[k], sltt[k]) < TOL
    from stopnp.api import run_batch
    res = run_batch(net, x, y, rule="sltt-k", rng=np.random.default_rng(11), learn="W", k=2)
    steps = set(int(t) for t in np.random.default_rng(11).choice(T, size=2, replace=False))
    delta, st = spatial_deltas(net, net.params, x, y)
    _check(res.grads, weight_grads(net, net.params, delta, st, 0.0, steps), st, net)


def test_weights_only_rules_refuse_theta_alpha_learning():
    net = mlp3()
    x, y = data(net)
    for rule in ("sltt", "sltt-k", "ottt"):
        with pytest.raises(stopnp.ConfigError, match="learns weights only"):
            stopnp.gradients(net, x, y, rule=rule, learn="WTL")


# --- BPSTA ------------------------------------------------------------------------------------------
def bpsta_reference(net, P, x, y, lam=0.9, beta=0.2):
    """Forward and BPTT with BPSTA's two derivatives, written out with plain NumPy (no BN)."""
    T, B = x.shape[:2]
    L = net.layers
    G = net.config["model"]["vote"]
    C = net.n_classes
    st = {k: {layer.name: [] for layer in L} for k in ("x", "I", "v", "s")}
    m = {layer.name: np.zeros((B, *layer.shape)) for layer in L}
    for t in range(T):
        for layer in L:
            syn = layer.synapses[0]
            a = x[t] if syn.src < 0 else st["s"][L[syn.src].name][t]
            a = a.reshape(B, -1)
            I = np.maximum(a @ P[f"{syn.name}.weight"].T, 0.0)
            th = P[f"{layer.name}.theta"]
            v = m[layer.name] + I
            s = (v >= th).astype(float)
            m[layer.name] = lam * v * (1 - s)
            for k, val in (("x", a), ("I", I), ("v", v), ("s", s)):
                st[k][layer.name].append(val)
    sL = np.stack(st["s"][L[-1].name])                       # (T, B, C·G)
    o = sL.reshape(T, B, C, G).mean(axis=(0, 3))
    onehot = np.eye(C)[y]
    go = np.repeat(2 * (o - onehot) / (B * C * T * G), G, axis=1)
    grads = {f"{layer.synapses[0].name}.weight": 0.0 for layer in L}
    e = {layer.name: np.zeros((B, *layer.shape)) for layer in L}   # ev[t+1]
    for t in range(T - 1, -1, -1):
        g = {layer.name: np.zeros((B, *layer.shape)) for layer in L}
        g[L[-1].name] = go.copy()
        for layer in reversed(L):
            n = layer.name
            v, s, I = st["v"][n][t], st["s"][n][t], st["I"][n][t]
            th = P[f"{n}.theta"]
            em = e[n]
            gs = g[n] + lam * beta * em                          # BPTA: ∂m/∂s = λβ
            dsdv = np.divide(1.0, v, out=np.zeros_like(v), where=v >= th)   # BPSA: H(v-θ)/v
            ev = gs * dsdv + lam * (1 - s) * em
            e[n] = ev
            eI = ev * (I > 0)
            syn = layer.synapses[0]
            grads[f"{syn.name}.weight"] = grads[f"{syn.name}.weight"] + eI.T @ st["x"][syn.name][t]
            if syn.src >= 0:
                g[L[syn.src].name] += eI @ P[f"{syn.name}.weight"]
    rates = {layer.name: float(np.mean(st["s"][layer.name])) for layer in L}
    return grads, rates


def test_bpsta_equals_bptt_with_its_two_derivatives():
    import stopnp as S
    net = S.build({"model": {"name": "custom", "input_shape": [12], "n_classes": 3, "vote": 4,
                             "layers": [{"type": "linear", "out": 16}, {"type": "linear", "out": 14},
                                        {"type": "linear", "out": 12}]},
                   "neuron": {"theta_init": 0.5, "reset": "hard"}, "rule": {"name": "bpsta", "learn": "W"}})
    net = net.astype(np.float64)
    x, y = data(net, T=5, B=6, scale=1.0)
    ref, rates = bpsta_reference(net, net.params, x, y)
    for name, r in rates.items():
        assert 0 < r < 1, (name, r)
    got = S.gradients(net, x, y, rule="bpsta")
    assert set(got) == set(ref)
    for k in ref:
        assert np.abs(ref[k]).max() > 0, k
        assert rel_err(got[k], ref[k]) < TOL, (k, rel_err(got[k], ref[k]))
    # the changed derivatives matter: without BPTA (β = 0) the gradient differs
    no_bpta = S.gradients(net, x, y, rule="bpsta", bpsta_beta=0.0)
    assert rel_err(no_bpta["fc1.weight"], ref["fc1.weight"]) > 1e-6
    static = np.broadcast_to(x[0], x.shape)
    fast = S.gradients(net, static, y, rule="bpsta")
    slow = S.gradients(net, np.ascontiguousarray(static), y, rule="bpsta")
    for k in slow:
        assert rel_err(fast[k], slow[k]) < 1e-12


def test_bpsta_ann_warmup_gradient_matches_finite_differences():
    """Warm-up mode (nodes bypassed: a ReLU network, one step) is plain backprop: FD-exact."""
    import stopnp as S
    from fdcheck import check_grad
    from stopnp.api import run_batch
    net = S.build({"model": {"name": "custom", "input_shape": [12], "n_classes": 3, "vote": 4,
                             "layers": [{"type": "linear", "out": 16}, {"type": "linear", "out": 12}]},
                   "neuron": {"theta_init": 0.5, "reset": "hard"}, "rule": {"name": "bpsta", "learn": "W"}})
    net = net.astype(np.float64)
    rng = np.random.default_rng(0)
    x = np.broadcast_to(rng.uniform(0, 1, (5, 12)), (3, 5, 12))
    y = np.array([0, 1, 2, 0, 1])
    res = run_batch(net, x, y, rule="bpsta", ann=True)
    for k, g in res.grads.items():
        f = lambda: run_batch(net, x, y, rule="bpsta", ann=True).loss  # noqa: E731
        ok, err = check_grad(f, net.params[k], g, rtol=1e-6)
        assert ok and np.abs(g).max() > 0, (k, err)
        assert not check_grad(f, net.params[k], g * 1.01, rtol=1e-6)[0]


# --- the peers with their own recipe settings: surrogate, reset, readout, loss, BN ----------------------
def _net(kind, *, readout="spiking", reset="soft", surrogate="exp", bn=False, alpha=0.6, vote=1):
    if kind == "mlp":
        layers = [{"type": "flatten"}, {"type": "linear", "out": 12, "bn": bn},
                  {"type": "linear", "out": 10, "bn": bn}, {"type": "linear", "out": 4 * vote}]
        shape, C = [1, 4, 4], 4
    else:
        layers = [{"type": "conv", "out": 3, "k": 3, "pad": 1, "bn": bn}, {"type": "avgpool", "k": 2},
                  {"type": "conv", "out": 4, "k": 3, "pad": 0, "bn": bn}, {"type": "flatten"},
                  {"type": "linear", "out": 3 * vote}]
        shape, C = [2, 8, 8], 3
    cfg = {"model": {"name": "custom", "input_shape": shape, "n_classes": C, "readout": readout, "vote": vote,
                     "layers": layers},
           "neuron": {"reset": reset, "surrogate": surrogate, "alpha_init": alpha}, "run": {"seed": 0}}
    return stopnp.build(cfg).astype(np.float64)


def loss_grad(o, y, kind, mix, reduce, T):
    """∂E[t]/∂o[t] of docs/algorithms.md §2, written out: c_ce·CE + c_mse·MSE (batch means, MSE also over C)."""
    B, C = o.shape
    c_ce, c_mse = {"ce": (1.0, 0.0), "ce_mse": (1.0 - mix, mix), "mse": (0.0, 1.0)}[kind]
    if reduce == "mean":
        c_ce, c_mse = c_ce / T, c_mse / T
    p = np.exp(o - o.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    hot = np.eye(C)[y]
    return c_ce * (p - hot) / B + c_mse * 2.0 * (o - hot) / (B * C)


def peer_reference(net, P, x, y, *, decay, steps, surrogate, reset, loss, bn_train):
    """SLTT (decay 0), SLTT-K (decay 0, backward at ``steps``), OTTT (decay λ) by their definition.

    Per step t: δ^l[t] = g^l[t] ⊙ φ(U - θ) (g for a non-spiking readout); through BN at step t:
    δ̂ = BN_t'(δ) (γ, β get δ ⊙ x̂ and δ summed); sent down: (W)ᵀ-backward of δ̂ only;
    ΔW = Σ_{t ∈ steps} δ̂[t] ⊗ a[t] with a[t] = decay·a[t-1] + x[t] (a advances at every step).
    """
    st = reference.forward(net, P, x, reset=reset, surrogate=surrogate, bn_train=bn_train)
    T, B = x.shape[:2]
    outs = reference.outputs(net, st)
    L = net.layers
    grads = {n: np.zeros_like(P[n]) for n in net.trainable("W")}
    trace = {syn.name: 0.0 for layer in L for syn in layer.synapses}
    for t in range(T):
        for layer in L:
            for syn in layer.synapses:
                trace[syn.name] = decay * trace[syn.name] + st["x"][syn.name][t]
        if t not in steps:
            continue
        g = {layer.name: np.zeros((B, *layer.shape)) for layer in L}
        g[net.output.name] = loss_grad(outs[t], y, *loss, T).reshape(B, *net.output.shape)
        for layer in reversed(L):
            d = g[layer.name]
            if layer.spiking:
                th = reference.expand_theta(P[f"{layer.name}.theta"], layer.shape, layer.theta_mode)
                d = d * reference.phi(st["U"][layer.name][t] - th, surrogate)
            for syn in layer.synapses:
                reference.syn_backward(net, syn, P, d, trace[syn.name], st, t, grads, g, bn_train)
    return grads, st


SLTT_LOSS = ("ce_mse", 0.05, "mean")
CASES = {  # rule, net, options: each rule with its recipe's surrogate, readout and loss, and with BN/hard reset
    "sltt-recipe-mlp": ("sltt", dict(kind="mlp", readout="membrane", surrogate="triangle", alpha=1 - 1 / 1.1),
                        dict(loss=SLTT_LOSS, bn_mode="eval"), 1.6),
    "sltt-hard-conv-bn-train": ("sltt", dict(kind="conv", reset="hard", surrogate="triangle", bn=True),
                                dict(loss=SLTT_LOSS, bn_mode="train"), 1.0),
    "sltt-k-conv-bn-train": ("sltt-k", dict(kind="conv", surrogate="triangle", bn=True, readout="membrane"),
                             dict(loss=SLTT_LOSS, bn_mode="train"), 1.0),
    "ottt-recipe-mlp": ("ottt", dict(kind="mlp", readout="membrane", surrogate="sigmoid", alpha=0.5),
                        dict(loss=SLTT_LOSS, bn_mode="eval"), 1.2),
    "ottt-hard-conv-bn-eval": ("ottt", dict(kind="conv", reset="hard", surrogate="sigmoid", bn=True),
                               dict(loss=("ce", 0.0, "sum"), bn_mode="eval"), 1.0),
    "ottt-conv-bn-train": ("ottt", dict(kind="conv", surrogate="sigmoid", bn=True, readout="membrane"),
                           dict(loss=SLTT_LOSS, bn_mode="train"), 1.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_peer_rules_with_recipe_settings_equal_definition(case):
    from stopnp.api import run_batch
    from nets import randomize_bn
    rule, net_kw, opt, scale = CASES[case]
    net = _net(**net_kw)
    randomize_bn(net)
    x, y = data(net, T=6, scale=scale)
    T = x.shape[0]
    kind, mix, reduce = opt["loss"]
    surrogate, reset = net_kw.get("surrogate", "exp"), net_kw.get("reset", "soft")
    options = dict(learn="W", loss=kind, mix=mix, loss_reduce=reduce, bn_mode=opt["bn_mode"],
                   surrogate=surrogate, reset=reset)
    steps = set(range(T))
    if rule == "sltt-k":
        options["k"] = 3
        steps = set(int(t) for t in np.random.default_rng(5).choice(T, size=3, replace=False))
    lam = 0.5 if rule == "ottt" else 0.0
    if rule == "ottt":
        options["ottt_lambda"] = lam
    got = run_batch(net, x, y, rule, rng=np.random.default_rng(5), **options).grads
    ref, st = peer_reference(net, net.params, x, y, decay=lam, steps=steps, surrogate=surrogate, reset=reset,
                             loss=opt["loss"], bn_train=opt["bn_mode"] == "train")
    _check(got, ref, st, net)
    # negative control: the surrogate matters (the same rule with the exp surrogate differs)
    other = run_batch(net, x, y, rule, rng=np.random.default_rng(5), **dict(options, surrogate="exp")).grads
    first = next(iter(ref))
    assert rel_err(other[first], ref[first]) > 1e-6


def _online_opts(net, rule, **kw):
    from stopnp.rules.common import resolve_options
    return resolve_options(net, rule, dict(learn="W", **kw))


@pytest.mark.parametrize("rule", ["ottt", "sltt-k"])
def test_online_update_hands_each_steps_gradient(rule):
    """OTTT_O (rule.online): on_step(t, grads) receives δ[t] ⊗ â[t] alone at every step with a backward;
    their sum is the accumulated OTTT_A gradient (parameters held fixed here)."""
    from stopnp.rules import runner
    net = _net("mlp", surrogate="sigmoid", alpha=0.5)
    x, y = data(net, T=5, scale=1.2)
    T = x.shape[0]
    opts = _online_opts(net, rule, ottt_lambda=0.5, k=2)
    seen = {}

    def on_step(t, grads):
        seen[t] = {k: v.copy() for k, v in grads.items()}
        for v in grads.values():
            v.fill(0)

    runner(rule)(net, net.params, x, y, opts, rng=np.random.default_rng(3), on_step=on_step)
    steps = (set(range(T)) if rule == "ottt"
             else set(int(t) for t in np.random.default_rng(3).choice(T, size=2, replace=False)))
    assert set(seen) == steps
    decay = 0.5 if rule == "ottt" else 0.0
    for t in steps:
        ref, st = peer_reference(net, net.params, x, y, decay=decay, steps={t}, surrogate="sigmoid", reset="soft",
                                 loss=("ce", 0.0, "sum"), bn_train=False)
        _check(seen[t], ref, st, net)
    acc = runner(rule)(net, net.params, x, y, opts, rng=np.random.default_rng(3)).grads
    for k in acc:
        assert rel_err(sum(seen[t][k] for t in steps), acc[k]) < TOL


def test_sltt_k_steps_come_from_the_rng_and_k_is_checked():
    from stopnp.api import run_batch
    net = mlp3()
    x, y = data(net, T=6, scale=1.2)
    a = run_batch(net, x, y, "sltt-k", rng=np.random.default_rng(1), learn="W", k=2).grads
    b = run_batch(net, x, y, "sltt-k", rng=np.random.default_rng(1), learn="W", k=2).grads
    steps = [set(int(t) for t in np.random.default_rng(s).choice(6, size=2, replace=False)) for s in (1, 2)]
    assert steps[0] != steps[1]
    c = run_batch(net, x, y, "sltt-k", rng=np.random.default_rng(2), learn="W", k=2).grads
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert any(rel_err(a[k], c[k]) > 1e-6 for k in a)
    with pytest.raises(stopnp.ConfigError, match="larger than the number of time steps"):
        run_batch(net, x, y, "sltt-k", learn="W", k=7)


# --- BPSTA on conv / pool / BN (train and frozen) -----------------------------------------------------
def bpsta_reference_general(net, P, x, y, *, bn_train, lam=0.9, beta=0.2, plain=None):
    """BPSTA forward and its modified BPTT over any layer stack of the reference ops (conv, pool, BN).

    ``plain=(surrogate, keep_reset)``: plain BPTT of the same forward instead: ∂s/∂v = φ(v - θ),
    ∂m/∂s = -λv if the reset is kept else 0, no β path.
    """
    T, B = x.shape[:2]
    L = net.layers
    G = net.config["model"]["vote"]
    C = net.n_classes
    st = {"x": {}, "pre": {}, "bn": {}, "I": {}, "v": {}, "s": {}}
    for layer in L:
        for k in ("I", "v", "s"):
            st[k][layer.name] = []
        for syn in layer.synapses:
            for k in ("x", "pre", "bn"):
                st[k][syn.name] = []
    m = {layer.name: np.zeros((B, *layer.shape)) for layer in L}
    for t in range(T):
        for layer in L:
            I = np.zeros((B, *layer.shape))
            for syn in layer.synapses:
                a = x[t] if syn.src < 0 else st["s"][L[syn.src].name][t]
                masks = []
                for op in syn.pre:
                    a, mk = reference.pool_fwd(op, a)
                    masks.append(mk)
                st["pre"][syn.name].append(masks)
                st["x"][syn.name].append(a)
                if syn.op == "linear":
                    z = a.reshape(B, -1) @ P[f"{syn.name}.weight"].T
                else:
                    z = reference.conv(a, P[f"{syn.name}.weight"], syn.stride, syn.pad)
                if syn.bn:
                    q = f"{syn.name}.bn"
                    z, cache = reference.bn_fwd(z, P[f"{q}.gamma"], P[f"{q}.beta"], P[f"{q}.running_mean"],
                                                P[f"{q}.running_var"], bn_train)
                    st["bn"][syn.name].append(cache)
                I = I + z.reshape(B, *layer.shape)
            I = np.maximum(I, 0.0)
            th = reference.expand_theta(P[f"{layer.name}.theta"], layer.shape, layer.theta_mode)
            v = m[layer.name] + I
            s = (v >= th).astype(float)
            m[layer.name] = lam * v * (1 - s)
            st["I"][layer.name].append(I)
            st["v"][layer.name].append(v)
            st["s"][layer.name].append(s)
    sL = np.stack(st["s"][L[-1].name]).reshape(T, B, C, G)
    o = sL.mean(axis=(0, 3))
    go = np.repeat(2 * (o - np.eye(C)[y]) / (B * C * T * G), G, axis=1)
    grads = {n: np.zeros_like(P[n]) for n in net.trainable("W")}
    e = {layer.name: np.zeros((B, *layer.shape)) for layer in L}
    for t in range(T - 1, -1, -1):
        g = {layer.name: np.zeros((B, *layer.shape)) for layer in L}
        g[L[-1].name] = go.reshape(B, *L[-1].shape)
        for layer in reversed(L):
            n = layer.name
            v, s, I = st["v"][n][t], st["s"][n][t], st["I"][n][t]
            th = reference.expand_theta(P[f"{n}.theta"], layer.shape, layer.theta_mode)
            em = e[n]
            if plain is None:
                gs = g[n] + lam * beta * em                                      # BPTA
                dsdv = np.divide(1.0, v, out=np.zeros_like(v), where=v >= th)    # BPSA
            else:
                gs = g[n] - (lam * v * em if plain[1] else 0.0)
                dsdv = reference.phi(v - th, plain[0])
            e[n] = gs * dsdv + lam * (1 - s) * em
            eI = e[n] * (I > 0)
            for syn in layer.synapses:
                reference.syn_backward(net, syn, P, eI, st["x"][syn.name][t], st, t, grads, g, bn_train)
    return grads, {layer.name: float(np.mean(st["s"][layer.name])) for layer in L}


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_bpsta_conv_pool_bn_equals_reference(bn_mode):
    from nets import randomize_bn
    net = _net("conv", bn=True, reset="hard", vote=2)
    for layer in net.layers:
        net.params[f"{layer.name}.theta"][...] = 0.5
    randomize_bn(net)
    x, y = data(net, T=5, B=4)
    ref, rates = bpsta_reference_general(net, net.params, x, y, bn_train=bn_mode == "train")
    for name, r in rates.items():
        assert 0 < r < 1, (name, r)
    got = stopnp.gradients(net, x, y, rule="bpsta", learn="W", bn_mode=bn_mode)
    assert set(got) == set(ref)
    for k in ref:
        assert np.abs(ref[k]).max() > 0, k
        assert rel_err(got[k], ref[k]) < TOL, (k, rel_err(got[k], ref[k]))
    # negative control: BPTA matters (β = 0 removes the λβ path through the spike)
    no_bpta = stopnp.gradients(net, x, y, rule="bpsta", learn="W", bn_mode=bn_mode, bpsta_beta=0.0)
    assert rel_err(no_bpta["conv1.weight"], ref["conv1.weight"]) > 1e-6


@pytest.mark.parametrize("rule", ["bptt", "bpsta"])
def test_online_update_is_refused_for_rules_that_run_backward_in_time(rule):
    net = mlp3()
    x, y = data(net)
    with pytest.raises(stopnp.ConfigError, match="rule.online = true"):
        stopnp.gradients(net, x, y, rule=rule, learn="W", online=True)


def test_ottt_o_trains_with_an_update_every_step(tmp_path):
    """OTTT_O end to end: rule.online = true applies T updates a batch (Adam's step count shows it)."""
    pytest.importorskip("stopnp.data")
    from stopnp import config as C
    from stopnp.run.train import train
    base = ["model.name=mlp", "model.hidden=[32]", "data.limit_train=128", "data.limit_test=64",
            "data.batch_size=64", "data.T=3", "run.epochs=1", "run.quiet=true", "rule.name=ottt", "rule.learn=W",
            "optim.kind=adam", "optim.lr=0.001"]
    runs = {}
    for online in (False, True):
        cfg = C.resolve({}, base + [f"rule.online={str(online).lower()}", f'run.out_dir="{tmp_path / str(online)}"'])
        runs[online] = train(cfg)
    before = stopnp.build(C.resolve({}, base)).params
    for online, res in runs.items():
        assert all(np.isfinite(v).all() for v in res.net.params.values())
        assert not np.array_equal(res.net.params["fc1.weight"], before["fc1.weight"])
    assert not np.array_equal(runs[True].net.params["fc1.weight"], runs[False].net.params["fc1.weight"])
    from stopnp.run import checkpoint
    steps = {o: int(checkpoint.load(str(tmp_path / str(o) / "last.h5")).opt_state["step"]) for o in runs}
    assert steps == {False: 2, True: 2 * 3}   # 128 samples / batch 64 = 2 batches; T = 3 updates each online


@pytest.mark.parametrize("surrogate,keep_reset", [("exp", False), ("sigmoid", True)])
def test_bpsta_plain_bptt_reference_equals_definition(surrogate, keep_reset):
    """compare's reference for BPSTA: plain BPTT of the BPSTA network (its cosine needs a same-model reference)."""
    from nets import randomize_bn
    net = _net("conv", bn=True, reset="hard", vote=2, surrogate=surrogate)
    for layer in net.layers:
        net.params[f"{layer.name}.theta"][...] = 0.5
    randomize_bn(net)
    x, y = data(net, T=5, B=4)
    ref, rates = bpsta_reference_general(net, net.params, x, y, bn_train=True, plain=(surrogate, keep_reset))
    for name, r in rates.items():
        assert 0 < r < 1, (name, r)
    got = stopnp.gradients(net, x, y, rule="bpsta", learn="W", bpsta_plain=True, surrogate=surrogate,
                           detach_reset=not keep_reset)
    assert set(got) == set(ref)
    for k in ref:
        assert np.abs(ref[k]).max() > 0, k
        assert rel_err(got[k], ref[k]) < TOL, (k, rel_err(got[k], ref[k]))
    bpsta = stopnp.gradients(net, x, y, rule="bpsta", learn="W")
    assert rel_err(bpsta["conv1.weight"], ref["conv1.weight"]) > 1e-6


def test_compare_cosine_for_bpsta_uses_its_own_plain_bptt():
    from stopnp.tools.compare import gradient_cosine
    net = _net("mlp", reset="hard", vote=2)
    for layer in net.layers:
        net.params[f"{layer.name}.theta"][...] = 0.5
    x, y = data(net, T=5, B=6, scale=1.0)
    cos, per_layer = gradient_cosine(net, x, y, "bpsta", "W")
    assert np.isfinite(cos) and -1 <= cos <= 1 and set(per_layer) == {"fc1.weight", "fc2.weight", "fc3.weight"}


def test_bpsta_kernels_are_thread_count_independent():
    import numba
    from stopnp.kernels import bpsta as kb
    rng = np.random.default_rng(4)
    B, N = 7, 33
    v = rng.uniform(-0.5, 1.5, (B, N))
    s = (v >= 0.5).astype(float)
    i_in = np.maximum(rng.normal(0, 1, (B, N)), 0)
    theta = np.full(N, 0.5)
    e0, g0, m0 = rng.normal(0, 1, (B, N)), rng.normal(0, 1, (B, N)), rng.uniform(0, 0.4, (B, N))
    outs = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            e1, g1, e2, g2, m = e0.copy(), g0.copy(), e0.copy(), g0.copy(), m0.copy()
            kb.bpsta_backward(e1, g1, v, s, i_in, 0.9, 0.2, theta)
            kb.bpsta_bptt_backward(e2, g2, v, s, i_in, 0.9, theta, 2, True)
            vv, ss = np.empty((B, N)), np.empty((B, N))
            kb.bpsta_forward(vv, ss, m, i_in, 0.9, theta)
            outs.append((e1, g1, e2, g2, vv, ss, m))
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
    assert not np.array_equal(outs[0][0], outs[0][2])  # BPSTA's and plain BPTT's errors differ


@pytest.mark.parametrize("rule", ["stop", "bptt", "sltt"])
def test_voting_readout_is_refused_outside_bpsta(rule):
    """model.vote > 1 widens the output to n_classes·vote neurons; only BPSTA reads them as votes (a CE
    over all of them, or an argmax past the classes, would be silently wrong)."""
    net = _net("mlp", vote=3)
    x, y = data(net)
    with pytest.raises(stopnp.ConfigError, match="model.vote = 3"):
        stopnp.gradients(net, x, y, rule=rule, learn="W")
    with pytest.raises(stopnp.ConfigError, match="model.vote"):
        stopnp.predict(net, x)
    assert stopnp.gradients(net, x, y, rule="bpsta", learn="W")


def test_bpsta_training_refuses_the_settings_it_would_ignore(tmp_path):
    """BPSTA's neuron resets hard and its loss is the voting MSE averaged over T: train refuses a config
    that says otherwise (the recipe states them), instead of silently overriding it."""
    from stopnp import config as C
    from stopnp.rules import bpsta
    from stopnp.run.train import train
    from stopnp.recipes import path as recipe_path
    path = recipe_path("rule-bpsta")
    bpsta.check_config(C.resolve(C.read(path)))
    for override, field in (("loss.kind=ce", "loss.kind"), ('loss.reduce="sum"', "loss.reduce"),
                            ('neuron.reset="soft"', "neuron.reset")):
        cfg = C.resolve(C.read(path),
                        [override, "model.name=mlp", f'run.out_dir="{tmp_path}"', "run.quiet=true"])
        with pytest.raises(stopnp.ConfigError, match=field):
            train(cfg)
