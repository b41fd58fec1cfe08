"""SLTT, SLTT-K and OTTT equal their definitions (ALGORITHMS.md §3, §5), float64, to 1e-10."""
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
