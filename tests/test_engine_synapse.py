"""Synapse ops (stopnp/engine/synapse.py): each kernel choice's forward and backward against NumPy, the
static-input path, dropout, BN statistics, and the fast conv paths (bands, event-driven, Winograd) against
the loop references."""
import numpy as np
import pytest

import stopnp
from stopnp.engine.state import Workspace
from stopnp.engine.synapse import choose_kernels, flush_static, layer_current
from stopnp.rules import bptt, stop
from stopnp.rules.common import resolve_options
import reference
from fdcheck import check_grad, rel_err
from nets import checked_grads, convnet, data, learned, mlp3, randomize_bn


@pytest.mark.parametrize("rule", ["stop", "bptt"])
@pytest.mark.parametrize("net_fn", [mlp3, convnet])
def test_static_input_fast_path_equals_general_path(rule, net_fn):
    """x with time stride 0 (direct coding) takes the once-per-sequence path; same gradients."""
    net = net_fn()
    x, y = data(net, T=5, B=4, scale=1.2)
    x_static = np.broadcast_to(x[0], x.shape)
    assert x_static.strides[0] == 0
    fast = checked_grads(net, x_static, y, rule)
    slow = checked_grads(net, np.ascontiguousarray(x_static), y, rule)
    for k in slow:
        assert np.abs(fast[k] - slow[k]).max() <= 1e-12 * np.abs(slow[k]).max(), k

def _dropout_net():
    cfg = {"model": {"name": "custom", "input_shape": [1, 4, 4], "n_classes": 4,
                     "layers": [{"type": "flatten"}, {"type": "linear", "out": 12}, {"type": "dropout", "p": 0.3},
                                {"type": "linear", "out": 10}, {"type": "linear", "out": 4}]},
           "neuron": {"alpha_init": 0.6}, "run": {"seed": 0}}
    return stopnp.build(cfg).astype(np.float64)

@pytest.mark.parametrize("rule", ["bptt", "stop"])
def test_dropout_gradients_with_the_sequence_mask(rule):
    """Dropout between fc1 and fc2, mask m drawn once per sequence (read back from the workspace):
    BPTT (smooth forward, reset kept) equals finite differences of the reference loss with x2 = s1 ⊙ m
    at every step; STOP equals the reference §4 identity with the same m."""
    net = _dropout_net()
    x, y = data(net, T=4, scale=1.2)
    T, B = x.shape[:2]
    if rule == "bptt":
        opts = resolve_options(net, rule, {"smooth": True, "detach_reset": False, "alpha_reduce": "sum"})
        ws = bptt.workspace(net, B, np.float64, opts, T)
    else:
        opts = resolve_options(net, rule, {})
        ws = stop.workspace(net, B, np.float64, opts)
    got = (bptt if rule == "bptt" else stop).run(net, net.params, x, y, opts, ws=ws,
                                                 rng=np.random.default_rng(3)).grads
    masks = {n: {k: m.copy() for k, m in enumerate(op.mask) if m is not None} for n, op in ws.synapses.items()}
    (m,) = [m for ms in masks.values() for m in ms.values()]
    assert m.shape == (B, 12) and 0 < (m == 0).mean() < 1 and np.allclose(m[m > 0], 1 / 0.7)
    assert set(got) == learned(net), sorted(got)
    if rule == "stop":
        ref, st = reference.stop_identity(net, net.params, x, y, masks=masks)
        for name, rate in reference.spike_rates(net, st).items():
            assert 0 < rate < 1, f"{name}: spike rate {rate}"
        for k in got:
            assert np.abs(ref[k]).max() > 0, k
            assert rel_err(got[k], ref[k]) < 1e-10, (k, rel_err(got[k], ref[k]))
        return
    st = reference.forward(net, net.params, x, masks=masks)
    for name, rate in reference.spike_rates(net, st).items():
        assert 0 < rate < 1, f"{name}: spike rate {rate}"
    f = lambda: reference.loss_of(net, net.params, x, y, smooth_spikes=True, masks=masks)  # noqa: E731
    for k, g in got.items():
        assert np.abs(g).max() > 0, k
        ok, err = check_grad(f, net.params[k], g, rtol=1e-6)
        assert ok, f"{k}: rel err {err:.2e}"
    assert not check_grad(f, net.params["fc1.weight"], got["fc1.weight"] * 1.01)[0]  # the check bites

@pytest.mark.parametrize("rule", ["stop", "bptt"])
@pytest.mark.parametrize("net_fn", [mlp3, convnet])
def test_bn_stats_are_step_means_of_batch_statistics(rule, net_fn):
    """Result.bn_stats["<syn>.bn"] = (1/T Σ_t mean[t], 1/T Σ_t var[t]): this step's batch mean and biased
    variance of z = W ⊛ x per channel (over batch and positions), recomputed here with NumPy."""
    net = net_fn(bn=True)
    randomize_bn(net)
    x, y = data(net, T=4, B=4, scale=1.2)
    res = stopnp.run_batch(net, x, y, rule)
    st = reference.forward(net, net.params, x, bn_train=True)
    for name, rate in reference.spike_rates(net, st).items():
        assert 0 < rate < 1, f"{name}: spike rate {rate}"
    bn_syns = [syn for layer in net.layers for syn in layer.synapses if syn.bn]
    assert bn_syns and set(res.bn_stats) == {f"{syn.name}.bn" for syn in bn_syns}
    for syn in bn_syns:
        W = net.params[f"{syn.name}.weight"]
        zs = [a @ W.T if syn.op == "linear" else reference.conv(a, W, syn.stride, syn.pad)
              for a in st["x"][syn.name]]
        z3 = [z.reshape(z.shape[0], z.shape[1], -1) for z in zs]
        mean = np.mean([z.mean(axis=(0, 2)) for z in z3], axis=0)
        var = np.mean([z.var(axis=(0, 2)) for z in z3], axis=0)
        got_mean, got_var = res.bn_stats[f"{syn.name}.bn"]
        assert rel_err(got_mean, mean) < 1e-12, syn.name
        assert rel_err(got_var, var) < 1e-10, syn.name
        assert np.abs(mean).min() > 0 and np.abs(var).min() > 0
    assert stopnp.run_batch(net, x, y, rule, bn_mode="eval").bn_stats == {}  # eval: nothing recorded

@pytest.mark.parametrize("rule", ["stop", "bptt"])
@pytest.mark.parametrize("bn", [False, True])
def test_conv_bands_of_one_row_give_the_same_gradients(rule, bn, monkeypatch):
    """The fast conv path lowers each sample in bands of output rows sized by TILE_BYTES; a 1-byte
    budget forces one row per GEMM, which must give the same gradients (float64, up to rounding)."""
    from stopnp.kernels import conv as kconv
    net = convnet(bn=bn)
    x, y = data(net, T=4, B=5, scale=1.2)
    whole = checked_grads(net, x, y, rule)
    assert kconv.band_rows((5, *net.input_shape), 3, 3, 1, 1) == net.input_shape[1]  # default: one band
    monkeypatch.setattr(kconv, "TILE_BYTES", 1)
    assert kconv.band_rows((5, *net.input_shape), 3, 3, 1, 1) == 1
    banded = checked_grads(net, x, y, rule)
    for k in whole:
        np.testing.assert_allclose(banded[k], whole[k], rtol=1e-9, atol=1e-12 * np.abs(whole[k]).max(),
                                   err_msg=k)

@pytest.mark.parametrize("rule", ["stop", "bptt"])
def test_event_driven_conv_forward_gives_the_same_gradients(rule, monkeypatch):
    """conv → conv: the second conv's input is the first one's spikes. Every sample by the event-driven
    sum (EVENT_DENSITY = 1) or every one by the GEMM (-1): the same gradients as the loop kernels."""
    from stopnp.kernels import conv as kconv
    cfg = {"model": {"name": "custom", "input_shape": [2, 8, 8], "n_classes": 3,
                     "layers": [{"type": "conv", "out": 4, "k": 3, "pad": 1},
                                {"type": "conv", "out": 4, "k": 3, "pad": 1},
                                {"type": "flatten"}, {"type": "linear", "out": 3}]},
           "neuron": {"alpha_init": 0.6}, "run": {"seed": 0}}
    net = stopnp.build(cfg).astype(np.float64)
    x, y = data(net, T=4, B=5, scale=1.2)
    rec = stop.run(net, net.params, x, None, resolve_options(net, "stop", {}), record=("s",)).records
    rate = rec[f"{net.layers[0].name}.s"].mean()
    assert 0 < rate < 1, rate  # spikes happened: the event path has events to sum
    loop = checked_grads(net, x, y, rule, kernels="loop")
    for density in (1.0, -1.0):
        monkeypatch.setattr(kconv, "EVENT_DENSITY", density)
        fast = checked_grads(net, x, y, rule, kernels="blas")
        for k in loop:
            np.testing.assert_allclose(fast[k], loop[k], rtol=1e-9, atol=1e-12 * np.abs(loop[k]).max(),
                                       err_msg=f"{k} at EVENT_DENSITY={density}")

def _two_convs(input_shape):
    """conv 3×3 pad 1 → conv 3×3 pad 1 → linear: both convs Winograd-eligible once MIN_CHANNELS is 1."""
    return {"model": {"name": "custom", "input_shape": input_shape, "n_classes": 3,
                      "layers": [{"type": "conv", "out": 4, "k": 3, "pad": 1},
                                 {"type": "conv", "out": 3, "k": 3, "pad": 1},
                                 {"type": "flatten"}, {"type": "linear", "out": 3}]},
            "neuron": {"alpha_init": 0.6}, "run": {"seed": 0}}

@pytest.mark.parametrize("rule", ["stop", "bptt"])
def test_winograd_convs_give_the_same_gradients(rule, monkeypatch):
    """conv → conv, both 3×3 pad 1: with the Winograd threshold lowered, both run by Winograd in the
    forward, the input gradient and the weight gradient, and the network's gradients equal the loop
    kernels' (float64), odd image size included."""
    from stopnp.kernels import winograd as kwino
    from stopnp.engine.state import Workspace
    monkeypatch.setattr(kwino, "MIN_CHANNELS", 1)
    net = stopnp.build(_two_convs([2, 7, 9])).astype(np.float64)
    ws = Workspace(net, 5, np.dtype(np.float64), backend="blas")
    assert {n for n, op in ws.synapses.items() if op.kernels == "winograd"} == {"conv1", "conv2"}
    x, y = data(net, T=4, B=5, scale=1.2)
    loop = checked_grads(net, x, y, rule, kernels="loop")
    fast = checked_grads(net, x, y, rule, kernels="blas")
    for k in loop:
        np.testing.assert_allclose(fast[k], loop[k], rtol=1e-9, atol=1e-12 * np.abs(loop[k]).max(), err_msg=k)

def test_winograd_filters_follow_online_updates(monkeypatch):
    """The transformed filters are reused within a sequence; an online update changes W between steps,
    so the next step must transform again: Winograd and loop kernels end with the same parameters."""
    from stopnp.kernels import winograd as kwino
    from stopnp.rules import runner
    monkeypatch.setattr(kwino, "MIN_CHANNELS", 1)
    cfg = _two_convs([2, 6, 6])
    x, y = None, None
    final = {}
    for kernels in ("loop", "blas"):
        net = stopnp.build(cfg).astype(np.float64)
        if x is None:
            x, y = data(net, T=4, B=3, scale=1.2)

        def on_step(t, grads, P=net.params):
            for k, g in grads.items():
                P[k] -= 0.5 * g
                g.fill(0)

        res = runner("stop")(net, net.params, x, y, resolve_options(net, "stop", {"kernels": kernels}),
                             record=("s",), on_step=on_step)
        assert 0 < res.records["conv2.s"].mean() < 1
        final[kernels] = net.params
    for k in final["loop"]:
        np.testing.assert_allclose(final["blas"][k], final["loop"][k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert not np.allclose(final["blas"]["conv2.weight"], stopnp.build(cfg).params["conv2.weight"])


def _one_synapse_net(kind):
    """conv1 (3×3 pad 1, from the input) -> avgpool -> fc1 (from conv1's spikes), or for "mlp_big" a
    linear layer large enough (B·in·out >= 4M) to have run on NumPy's BLAS once (now in numba's pool too)."""
    if kind == "mlp_big":
        layers, shape = [{"type": "linear", "out": 100}, {"type": "linear", "out": 5}], [784]
    else:
        layers, shape = [{"type": "conv", "out": 3, "k": 3, "pad": 1}, {"type": "avgpool", "k": 2},
                         {"type": "linear", "out": 5}], [2, 8, 8]
    return stopnp.build({"model": {"name": "custom", "input_shape": shape, "n_classes": 5, "layers": layers},
                         "run": {"seed": 1}}).astype(np.float64)


@pytest.mark.parametrize("kind, backend, expect", [
    ("conv", "loop", {"conv1": "conv-loop", "fc1": "linear-loop"}),
    ("conv", "blas", {"conv1": "conv-gemm", "fc1": "linear-pool"}),
    ("mlp_big", "blas", {"fc1": "linear-pool", "fc2": "linear-pool"}),
])
def test_each_kernel_choice_computes_the_synapse_equations(kind, backend, expect):
    """One step of each synapse, against NumPy: z = W ⊛ pre(x); backward with a given δ and w~:
    ΔW = Σ_b δ ⊗ w~ and g^src = pre-backward(Wᵀ δ). The negative control: ΔW against x instead of w~
    differs, so the check tells the trace from the input."""
    net = _one_synapse_net(kind)
    B = 64 if kind == "mlp_big" else 3
    ws = Workspace(net, B, np.float64, backend=backend, traces=True)
    assert {n: op.kernels for n, op in ws.synapses.items()} == expect
    rng = np.random.default_rng(2)
    P = net.params
    first, second = net.layers
    x = rng.uniform(0, 1, (B, *net.input_shape))
    ws.reset_sequence(net, P)
    ws.sums.zero()
    # forward: the input synapse reads x, the second one the first layer's spikes through its pre-ops
    z1 = layer_current(ws, P, first, x, 0, bn_train=False)
    W1 = P[f"{first.name}.weight"]
    want1 = reference.conv(x, W1, 1, 1) if kind == "conv" else x @ W1.T
    assert np.allclose(z1, want1, rtol=1e-12, atol=1e-12) and np.abs(want1).max() > 0
    s1 = (rng.uniform(0, 1, (B, *first.shape)) < 0.3).astype(np.float64)
    ws.state.s[first.index][0][...] = s1
    syn = second.synapses[0]
    pooled = reference.pool_fwd(syn.pre[0], s1)[0].reshape(B, -1) if syn.pre else s1
    W2 = P[f"{second.name}.weight"]
    assert np.allclose(layer_current(ws, P, second, x, 0, bn_train=False), pooled @ W2.T, rtol=1e-12, atol=1e-12)
    # backward of the second synapse: ΔW against the trace, the error into g^src through the pre-ops
    delta = rng.normal(size=(B, *second.shape))
    w_trace = rng.uniform(0, 2, (B, *syn.in_shape))
    grads = {f"{second.name}.weight": np.zeros_like(W2), f"{first.name}.weight": np.zeros_like(W1)}
    ws.scratch.g[first.index].fill(0)
    ws.synapses[syn.name].backward(P, grads, delta, w_trace, 0, True, False)
    assert np.allclose(grads[f"{second.name}.weight"], delta.T @ w_trace, rtol=1e-12, atol=1e-12)
    assert not np.allclose(grads[f"{second.name}.weight"], delta.T @ pooled, rtol=1e-3)  # the check bites
    g_src = delta @ W2
    if syn.pre:
        g_src = reference.pool_bwd(syn.pre[0], g_src.reshape(B, *syn.pre[0].out_shape), first.shape, None)
    assert np.allclose(ws.scratch.g[first.index], g_src.reshape(B, *first.shape), rtol=1e-12, atol=1e-12)
    # the input synapse of a static input sums c·δ over the steps, then correlates with x once
    d1 = rng.normal(size=(B, *first.shape))
    op1 = ws.synapses[first.synapses[0].name]
    for c in (1.0, 1.5):
        op1.backward(P, grads, d1, None, 0, False, False, static_coef=c)
    assert not grads[f"{first.name}.weight"].any()  # nothing until the flush
    flush_static(ws, grads, x)
    want = reference.conv_grad_w(2.5 * d1, x, W1.shape, 1, 1) if kind == "conv" else (2.5 * d1).T @ x
    assert np.allclose(grads[f"{first.name}.weight"], want, rtol=1e-12, atol=1e-12)


def test_choose_kernels():
    net = stopnp.build("vgg11", model__input_shape=[3, 32, 32], model__width=0.25)
    convs = [s for s in net.synapses() if s.op == "conv"]
    # Winograd for the 3×3 convs with at least 16 channels in and out; the first (3 channels in) lowers to a GEMM
    assert [choose_kernels(s, "blas") for s in convs[:2]] == ["conv-gemm", "winograd"]
    assert {choose_kernels(s, "loop") for s in net.synapses()} == {"conv-loop", "linear-loop"}
    assert choose_kernels(net.layers[-1].synapses[0], "blas") == "linear-pool"
