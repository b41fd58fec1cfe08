"""STOP equals the §4 identity (independent backward-in-time reference) to 1e-10, in float64."""
import numpy as np
import pytest

import stopnp
import reference
from fdcheck import rel_err
from nets import convnet, data, mlp3, randomize_bn, single

TOL = 1e-10


def _compare(got, ref, worst):
    assert set(got) == set(ref), (sorted(got), sorted(ref))
    for name in got:
        assert np.abs(ref[name]).max() > 0, f"{name}: reference gradient is zero (vacuous)"
        err = rel_err(got[name], ref[name])
        worst[0] = max(worst[0], err)
        assert err < TOL, f"{name}: rel err {err:.2e}"


def _rates_ok(net, st):
    rates = reference.spike_rates(net, st)
    for name, r in rates.items():
        assert 0 < r < 1, f"{name}: spike rate {r} (test would be vacuous)"


WORST = [0.0]


@pytest.mark.parametrize("kernels", ["blas", "loop"])
@pytest.mark.parametrize("theta_mode", ["neuron", "channel", "layer"])
def test_identity_mlp(theta_mode, kernels):
    net = mlp3(theta_mode=theta_mode)
    x, y = data(net, scale=1.2)
    ref, st = reference.stop_identity(net, net.params, x, y)
    _rates_ok(net, st)
    got = stopnp.gradients(net, x, y, rule="stop", kernels=kernels)
    _compare(got, ref, WORST)


@pytest.mark.parametrize("readout", ["membrane"])
def test_identity_mlp_membrane_readout(readout):
    net = mlp3(readout=readout)
    x, y = data(net, scale=1.2)
    ref, st = reference.stop_identity(net, net.params, x, y)
    _rates_ok(net, st)
    _compare(stopnp.gradients(net, x, y, rule="stop"), ref, WORST)


@pytest.mark.parametrize("pool", ["avgpool", "maxpool"])
@pytest.mark.parametrize("theta_mode", ["neuron", "channel", "layer"])
@pytest.mark.parametrize("surrogate", ["exp", "triangle"])
def test_identity_convnet(theta_mode, pool, surrogate):
    net = convnet(theta_mode=theta_mode, pool=pool, surrogate=surrogate)
    x, y = data(net, scale=1.0)
    ref, st = reference.stop_identity(net, net.params, x, y, surrogate=surrogate)
    _rates_ok(net, st)
    for kernels in ("blas", "loop"):
        _compare(stopnp.gradients(net, x, y, rule="stop", kernels=kernels), ref, WORST)


@pytest.mark.parametrize("net_fn", [mlp3, convnet])
def test_identity_frozen_bn(net_fn):
    net = net_fn(bn=True)
    randomize_bn(net)
    x, y = data(net, scale=1.0)
    ref, st = reference.stop_identity(net, net.params, x, y, bn_train=False)
    _rates_ok(net, st)
    got = stopnp.gradients(net, x, y, rule="stop", bn_mode="eval")
    # BN γ, β gradients are instantaneous (per step) by design; the identity is for W, θ, α
    got = {k: v for k, v in got.items() if ".bn." not in k}
    _compare(got, ref, WORST)


def test_alpha_sum_option_is_n_times_mean():
    net = mlp3()
    x, y = data(net, scale=1.2)
    mean = stopnp.gradients(net, x, y, rule="stop")
    total = stopnp.gradients(net, x, y, rule="stop", alpha_reduce="sum")
    for layer in net.layers:
        n = f"{layer.name}.alpha"
        assert abs(total[n][0] - mean[n][0] * layer.size) < 1e-12 * abs(total[n][0])


@pytest.mark.parametrize("surrogate", ["exp", "sigmoid", "atan", "rectangle", "triangle"])
def test_single_layer_stop_equals_bptt(surrogate):
    net = single(surrogate=surrogate)
    x, y = data(net, T=6, B=5, scale=1.5)
    ref, st = reference.stop_identity(net, net.params, x, y, surrogate=surrogate)
    _rates_ok(net, st)
    stop = stopnp.gradients(net, x, y, rule="stop")
    bptt = stopnp.gradients(net, x, y, rule="bptt")  # reset detached (default)
    _compare(stop, ref, WORST)  # against the independent reference: a surrogate wrong in both is caught
    _compare(bptt, ref, WORST)
    _compare(stop, bptt, WORST)


@pytest.mark.parametrize("learn", ["W", "WT", "WL", "WTL"])
def test_ablations_learn_only_their_parameters(learn):
    net = mlp3()
    x, y = data(net, scale=1.2)
    got = stopnp.gradients(net, x, y, rule="stop", learn=learn)
    full = stopnp.gradients(net, x, y, rule="stop", learn="WTL")
    assert any(k.endswith(".theta") for k in got) == ("T" in learn)
    assert any(k.endswith(".alpha") for k in got) == ("L" in learn)
    for k, v in got.items():
        assert np.array_equal(v, full[k])


def test_hard_reset_is_refused_for_stop():
    net = mlp3(reset="hard")
    x, y = data(net)
    with pytest.raises(stopnp.ConfigError, match="soft reset"):
        stopnp.gradients(net, x, y, rule="stop")


def test_train_mode_bn_follows_definition():
    """BN in training mode: ΔW = Σ_t BN-backward_t(δ[t]) ⊗ w~[t] (per-step Jacobian, §4)."""
    net = convnet(bn=True)
    randomize_bn(net)
    x, y = data(net, scale=1.0)
    P = net.params
    st = reference.forward(net, P, x, bn_train=True)
    _rates_ok(net, st)
    T, B = x.shape[:2]
    # δ per step from the identity reference's spatial pass, recomputed here with train-mode BN
    rec = stopnp.simulate(net, x, record=("delta", "w_trace"), y=y)
    got = stopnp.gradients(net, x, y, rule="stop")
    for layer in net.layers:
        syn = layer.synapses[0]
        gw = 0.0
        for t in range(T):
            d = rec[f"{layer.name}.delta"][t]
            if syn.bn:
                d = reference.bn_bwd(d, st["bn"][syn.name][t], P[f"{syn.name}.bn.gamma"], True)[0]
            tr = rec[f"{syn.name}.w_trace"][t]
            if syn.op == "linear":
                gw = gw + d.reshape(B, -1).T @ tr.reshape(B, -1)
            else:
                gw = gw + reference.conv_grad_w(d, tr, P[f"{syn.name}.weight"].shape, syn.stride, syn.pad)
        assert np.abs(gw).max() > 0
        assert rel_err(got[f"{syn.name}.weight"], gw) < TOL


def test_recorded_traces_match_definition():
    net = mlp3()
    x, y = data(net, scale=1.2)
    rec = stopnp.simulate(net, x, record=("u", "s", "v", "th_trace", "al_trace", "w_trace", "delta"), y=y)
    st = reference.forward(net, net.params, x)
    T = x.shape[0]
    for layer in net.layers:
        n = layer.name
        a = net.params[f"{n}.alpha"][0]
        th = np.zeros_like(rec[f"{n}.th_trace"][0])
        al = np.zeros_like(th)
        for t in range(T):
            np.testing.assert_allclose(rec[f"{n}.u"][t], st["U"][n][t], atol=1e-12)
            np.testing.assert_array_equal(rec[f"{n}.s"][t], st["s"][n][t])
            s_prev = st["s"][n][t - 1] if t else 0.0
            th = a * (th - s_prev)
            al = a * al + st["V"][n][t]
            np.testing.assert_allclose(rec[f"{n}.th_trace"][t], th, atol=1e-12)
            np.testing.assert_allclose(rec[f"{n}.al_trace"][t], al, atol=1e-12)


def _sgd_every_step(params, lr):
    """An online update: θ and α clamped as optim.step does."""
    def on_step(t, grads):
        for k, g in grads.items():
            params[k] -= lr * g
            if k.endswith(".alpha"):
                np.clip(params[k], 0.0, 1.0, out=params[k])
            elif k.endswith(".theta"):
                np.maximum(params[k], 1e-3, out=params[k])
            g.fill(0)
    return on_step


@pytest.mark.parametrize("rule,learn", [("stop", "WTL"), ("ottt", "W")])
def test_online_update_runs_the_same_for_static_and_copied_input(rule, learn):
    """With an update every step, step t+1 runs with the updated W, θ, α whatever the input's memory
    layout: a stride-0 (direct-coded) input must not reuse W ⊛ x from step 0."""
    from stopnp.rules import runner
    from stopnp.rules.common import resolve_options
    net0 = convnet(theta_mode="channel")
    x, y = data(net0, T=5, scale=1.2)
    static = np.broadcast_to(x[:1], x.shape)
    runs = []
    for xs in (static, np.ascontiguousarray(static)):
        net = convnet(theta_mode="channel")
        opts = resolve_options(net, rule, {"learn": learn})
        res = runner(rule)(net, net.params, xs, y, opts, record=("u", "s"), on_step=_sgd_every_step(net.params, 0.5))
        runs.append((res, net.params))
    (r0, p0), (r1, p1) = runs
    for name, rec in r0.records.items():
        assert np.array_equal(rec, r1.records[name]), name
    for k in p0:
        assert np.array_equal(p0[k], p1[k]), k
    assert not np.array_equal(p0["conv1.weight"], net0.params["conv1.weight"])
    rates = [float(r0.records[f"{layer.name}.s"].mean()) for layer in net0.layers if layer.spiking]
    assert all(0 < r < 1 for r in rates), rates


@pytest.mark.parametrize("theta_mode", ["neuron", "channel", "layer"])
def test_online_update_of_theta_and_alpha_takes_effect_at_the_next_step(theta_mode):
    """θ raised to 100 after step 1 silences every layer from step 2 on; α set to 0 after step 1 makes
    U[t] = I[t] from step 2 on (and not without the change: the check is not vacuous)."""
    from stopnp.rules import runner
    from stopnp.rules.common import resolve_options
    for change in (None, "theta", "alpha"):
        net = convnet(theta_mode=theta_mode)
        x, y = data(net, T=5, scale=1.2)
        opts = resolve_options(net, "stop", {"learn": "WTL"})

        def on_step(t, grads):
            for g in grads.values():
                g.fill(0)
            for layer in net.layers:
                if layer.spiking and change is not None and t == 1:
                    net.params[f"{layer.name}.{change}"][...] = 100.0 if change == "theta" else 0.0

        res = runner("stop")(net, net.params, x, y, opts, record=("u", "i", "s"), on_step=on_step)
        for layer in net.layers:
            if not layer.spiking:
                continue
            s, u, i = (res.records[f"{layer.name}.{w}"] for w in ("s", "u", "i"))
            assert 0 < s[:2].mean() < 1, layer.name
            if change == "theta":
                assert not s[2:].any(), layer.name
            elif change == "alpha":
                assert np.array_equal(u[2:], i[2:]), layer.name
            else:
                assert s[2:].any() and not np.allclose(u[2:], i[2:]), layer.name


@pytest.mark.parametrize("rule", ["stop", "sltt", "ottt"])
def test_kept_reset_path_is_refused_for_same_step_rules(rule):
    """rule.detach_reset = false changes BPTT's temporal error; the same-step rules have none to change,
    so the option is refused rather than silently ignored."""
    net = mlp3()
    x, y = data(net)
    with pytest.raises(stopnp.ConfigError, match="detach_reset"):
        stopnp.gradients(net, x, y, rule=rule, learn="W", detach_reset=False)


def test_forward_only_runs_a_hard_reset_network():
    """A BPTT-trained hard-reset network is evaluated through the shared forward pass: predict works and
    its membrane follows V = U·(1 - s)."""
    net = mlp3(reset="hard")
    x, y = data(net, scale=1.2)
    pred = stopnp.predict(net, x)
    assert pred.shape == y.shape
    rec = stopnp.simulate(net, x, record=("u", "v", "s"))
    u, v, s = (rec[f"fc1.{w}"] for w in ("u", "v", "s"))
    assert 0 < s.mean() < 1
    np.testing.assert_array_equal(v, u * (1 - s))


def _resnet():
    cfg = {"model": {"name": "custom", "input_shape": [2, 6, 6], "n_classes": 3,
                     "layers": [{"type": "conv", "out": 3, "k": 3, "pad": 1, "bn": True},
                                {"type": "resblock", "out": 3, "stride": 1},
                                {"type": "resblock", "out": 4, "stride": 2},
                                {"type": "gap"}, {"type": "flatten"}, {"type": "linear", "out": 3}]},
           "neuron": {"alpha_init": 0.6}, "run": {"seed": 0}}
    net = stopnp.build(cfg).astype(np.float64)
    randomize_bn(net)
    return net


def test_identity_resnet_shortcuts_and_global_pooling():
    """Two synapses into one layer (identity and 1×1 strided shortcuts) and global average pooling:
    STOP equals the §4 identity (frozen BN), and BPTT equals finite differences (train-mode BN)."""
    from fdcheck import check_grad
    net = _resnet()
    x, y = data(net, T=4, B=4, scale=1.5)
    ref, st = reference.stop_identity(net, net.params, x, y, bn_train=False)
    _rates_ok(net, st)
    assert any(len(layer.synapses) == 2 for layer in net.layers)
    got = stopnp.gradients(net, x, y, rule="stop", bn_mode="eval")
    assert all(".bn." in k for k in set(got) - set(ref))  # the reference does not learn frozen BN's γ, β
    _compare({k: got[k] for k in ref}, ref, [0.0])
    g = stopnp.gradients(net, x, y, rule="bptt", smooth=True, detach_reset=False, alpha_reduce="sum",
                         bn_mode="train")
    shortcut = [k for k in g if "shortcut" in k and k.endswith(".weight")]
    assert shortcut
    f = lambda: reference.loss_of(net, net.params, x, y, smooth_spikes=True, bn_train=True)  # noqa: E731
    for name in shortcut + ["conv1.weight", "block1.conv2.alpha", "block2.conv1.theta"]:
        ok, err = check_grad(f, net.params[name], g[name])
        assert ok, f"{name}: rel err {err:.2e}"
        assert not check_grad(f, net.params[name], g[name] * 1.01)[0]


def test_loop_kernels_option_runs_the_reference_lif_kernels(monkeypatch):
    """kernels = "loop" is the C-portable reference throughout: the fused fast LIF kernels are not used."""
    from stopnp.kernels import lif

    def fail(*a, **k):
        raise AssertionError("fast kernel called")

    net = mlp3()
    x, y = data(net, scale=1.2)
    ref = stopnp.gradients(net, x, y, rule="stop", kernels="loop")
    monkeypatch.setattr(lif, "lif_stop_forward", fail)
    monkeypatch.setattr(lif, "stop_delta_grads", fail)
    got = stopnp.gradients(net, x, y, rule="stop", kernels="loop")
    for k in ref:
        assert np.array_equal(ref[k], got[k])
    with pytest.raises(AssertionError, match="fast kernel"):
        stopnp.gradients(net, x, y, rule="stop", kernels="blas")
