"""fixed/integer.py: the integer network tracks the float network, trains, and refuses what it cannot do."""
import numpy as np
import pytest

import stopnp
from stopnp.fixed import integer as fixed
from stopnp.fixed import formats as nm
from stopnp.config import ConfigError

from nets import convnet, data, mlp3


def _cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("make", [mlp3, convnet], ids=["mlp", "conv"])
def test_forward_matches_float_away_from_threshold(make):
    net = make()
    x, _ = data(net, T=6, B=8)
    q = fixed.quantize(net)
    rec = {}
    fixed.run(q, fixed.quantize_input(q, x), record=rec)
    ref = stopnp.simulate(net, x, record=("u", "s"), numerics="float")
    for layer in net.layers:
        if not layer.spiking:
            continue
        s_fx, s_fl = np.array(rec[f"{layer.name}.s"]), ref[f"{layer.name}.s"]
        assert 0 < s_fl.mean() < 1, layer.name
        if layer.index == 0:   # step 0 (no spike history yet): U within the weight-rounding error
            theta = fixed.expand_theta(q.layers[0], net.params[f"{layer.name}.theta"])
            u_fl = ref[f"{layer.name}.u"][0]
            u_fx = nm.dequantize(np.array(rec[f"{layer.name}.u"][0]), q.fmt.v_frac)
            np.testing.assert_allclose(u_fx, u_fl, atol=1e-2)
            far = np.abs(u_fl - theta) > 1e-2
            assert far.mean() > 0.9 and np.array_equal(s_fx[0][far], s_fl[0][far])
        assert (s_fx != s_fl).mean() < 0.05, layer.name


WIDE = nm.Formats(w_bits=32, w_frac=20, x_frac=16, v_frac=20, a_frac=20, p_frac=16, e_frac=22, g_frac=22)


@pytest.mark.parametrize("make", [mlp3, convnet], ids=["mlp", "conv"])
def test_stop_gradients_converge_to_float_stop(make):
    """With wide formats the integer STOP step is float STOP (docs/algorithms.md §4) up to the exp cubic and
    rounding: relative error < 1e-3 for every ΔW, Δθ, Δα. With the default (MCU) formats the directions
    still agree (cos > 0.95 for W and θ); α's scalar gradient is dominated by near-threshold flips."""
    net = make()
    x, y = data(net, T=6, B=8)
    ref = stopnp.gradients(net, x, y, numerics="float")
    for name in ref:
        assert np.abs(ref[name]).max() > 0, name
    rec = stopnp.simulate(net, x, record=("s",), numerics="float")
    for layer in net.layers:
        if layer.spiking:
            assert 0 < rec[f"{layer.name}.s"].mean() < 1, layer.name
    q = fixed.quantize(net, WIDE)
    _, g, loss = fixed.run(q, fixed.quantize_input(q, x), y)
    assert np.isfinite(loss) and loss > 0 and sorted(g) == sorted(ref)

    def rel(name, scale=1.0):
        got = scale * nm.dequantize(g[name], WIDE.g_frac)
        return np.linalg.norm(got - ref[name]) / np.linalg.norm(ref[name])
    for name in g:
        assert rel(name) < 1e-3, (name, rel(name))
    assert rel(next(iter(g)), 1.01) > 5e-3      # negative control: a 1% error is caught
    qd = fixed.quantize(net)
    _, gd, _ = fixed.run(qd, fixed.quantize_input(qd, x), y)
    for name, gq in gd.items():
        if not name.endswith(".alpha"):
            assert _cos(nm.dequantize(gq, qd.fmt.g_frac), ref[name]) > 0.95, name


def test_learn_last_only_touches_the_last_layers():
    net = mlp3()
    x, y = data(net)
    q = fixed.quantize(net)
    _, g, _ = fixed.run(q, fixed.quantize_input(q, x), y, learn_last=1)
    assert sorted(g) == ["fc3.alpha", "fc3.theta", "fc3.weight"]   # mlp3 has a spiking output layer


def test_float_roundtrip_is_exact_and_training_lowers_the_loss():
    net = stopnp.build(mlp3(readout="membrane").config)   # float32 parameters, as training keeps them
    q = fixed.quantize(net)
    fixed.to_float(q, net)
    again = fixed.quantize(net)
    for k in q.params:
        assert np.array_equal(q.params[k], again.params[k]), k
    assert [ql.w_frac for ql in q.layers] == [ql.w_frac for ql in again.layers]
    x, y = data(net, B=16, seed=3)
    xq = fixed.quantize_input(q, x)
    losses = []
    for _ in range(20):
        _, g, loss = fixed.run(q, xq, y)
        fixed.apply(q, g, 0.3)
        losses.append(loss)
        assert all(not v.any() for v in g.values())   # apply zeroes the accumulators
    assert np.mean(losses[-5:]) < 0.75 * losses[0]
    lo, hi = q.fmt.w_range
    for k, v in q.params.items():
        if k.endswith(".weight"):
            assert v.min() >= lo and v.max() <= hi
        if k.endswith(".theta"):
            assert v.min() >= q.theta_min
        if k.endswith(".alpha"):
            assert 0 <= v.min() and v.max() <= 1 << q.fmt.a_frac


def test_per_layer_weight_formats():
    w = np.array([[11.4, -0.5]])
    assert nm.weight_frac(nm.Formats(w_bits=8, w_headroom=0), w) == 3          # 11.4·2^3 = 91 <= 127
    assert nm.weight_frac(nm.Formats(w_bits=8), w) == 2                        # one spare bit
    assert nm.weight_frac(nm.Formats(w_bits=16, w_headroom=0), w) == 11
    assert nm.weight_frac(nm.Formats(w_scale="global", w_frac=9), w) == 9
    assert nm.weight_frac(nm.Formats(w_bits=8, w_headroom=0), w * 0) == 7
    net = convnet()
    q = fixed.quantize(net, nm.Formats(w_bits=8, w_headroom=0))
    for ql in q.layers:
        wq = q.params[f"{ql.name}.weight"]
        assert np.abs(wq).max() <= 127 and np.abs(wq).max() > 63   # the range is used, nothing saturates


def test_api_predict_and_simulate_fixed():
    net = convnet()
    x, _ = data(net, B=3)
    p = stopnp.predict(net, x, numerics="fixed")
    assert np.array_equal(p, fixed.predict(fixed.quantize(net), x))
    rec = stopnp.simulate(net, x, numerics="fixed")
    assert {"conv1.u", "conv1.s", "conv1.v", "fc1.s"} <= set(rec)
    assert rec["conv1.s"].shape == (x.shape[0], 3, 3, 8, 8)


@pytest.mark.parametrize("change, match", [
    (dict(model__layers=None, model__name="resnet18", model__input_shape=[3, 32, 32]), "shortcuts"),
    (dict(rule__name="bpsta"), "BPSTA"),
])
def test_refuses_unsupported_networks(change, match):
    cfg = mlp3().config
    over = {k: v for k, v in change.items()}
    with pytest.raises(ConfigError, match=match):
        fixed.quantize(stopnp.build(cfg, **over))


@pytest.mark.parametrize("surrogate", ["sigmoid", "atan"])
def test_float_only_surrogates_run_inference_and_refuse_learning(surrogate):
    """The surrogate plays no part in inference: a sigmoid or atan network quantizes and predicts; only
    the integer STOP step refuses it, naming the setting."""
    net = stopnp.build(mlp3(surrogate=surrogate).config)
    x, y = data(net, B=3)
    q = fixed.quantize(net)
    assert fixed.predict(q, x).shape == (3,)
    with pytest.raises(ConfigError, match=f"learning with neuron.surrogate = '{surrogate}'"):
        fixed.check_supported(net, learn=True)


def test_online_learning_updates_every_step():
    """rule online in fixed point: with T = 1 it is the batch update exactly; with T > 1 every step
    updates the parameters the next step uses, and the updates differ from one batch update."""
    net = stopnp.build(convnet().config)
    x, y = data(net, T=1, B=3)
    lrq = [3277] * 3
    qa, qb = fixed.quantize(net), fixed.quantize(net)
    _, g, _ = fixed.run(qa, fixed.quantize_input(qa, x), y)
    fixed.apply_q(qa, g, lrq)
    out, g_online, _ = fixed.run(qb, fixed.quantize_input(qb, x), y, lrq=lrq)
    assert g_online is None
    for k in qa.params:
        assert np.array_equal(qa.params[k], qb.params[k]), k
    q0 = fixed.quantize(net)
    assert any(not np.array_equal(q0.params[k], qb.params[k]) for k in q0.params if k.endswith(".weight"))
    x, y = data(net, T=4, B=3)
    qa, qb = fixed.quantize(net), fixed.quantize(net)
    _, g, _ = fixed.run(qa, fixed.quantize_input(qa, x), y)
    fixed.apply_q(qa, g, lrq)
    rec = {}
    fixed.run(qb, fixed.quantize_input(qb, x), y, lrq=lrq, record=rec)
    assert any(not np.array_equal(qa.params[k], qb.params[k]) for k in qa.params if k.endswith(".weight"))
    assert len(rec["conv1.delta"]) == 4


def test_refuses_unsupported_training():
    with pytest.raises(ConfigError, match="soft reset"):
        fixed.check_supported(mlp3(reset="hard"), learn=True)
    with pytest.raises(ConfigError, match="BN"):
        fixed.check_supported(mlp3(bn=True), learn=True)
    cfg = stopnp.config.resolve({"numerics": {"kind": "fixed"}})
    with pytest.raises(ConfigError, match="momentum"):
        fixed.check_training(cfg)
    with pytest.raises(ConfigError, match="numerics.kind"):
        stopnp.config.resolve({"numerics": {"kind": "int8"}})


def test_train_in_fixed_point(tmp_path):
    from stopnp.run.train import train
    cfg = {"model": {"name": "mlp", "hidden": [32], "readout": "membrane"},
           "numerics": {"kind": "fixed"},
           "optim": {"momentum": 0.0, "weight_decay": 0.0, "lr": 0.2},
           "data": {"T": 2, "batch_size": 32, "limit_train": 512, "limit_test": 200},
           "run": {"epochs": 1, "out_dir": str(tmp_path), "quiet": True}}
    res = train(cfg)
    assert res.best_acc > 0.5
    net = stopnp.load(tmp_path / "last.h5")
    q = fixed.quantize(net)   # the checkpoint holds the integer parameters exactly
    for ql in q.layers:
        w = net.params[f"{ql.name}.weight"].astype(np.float64)
        assert np.array_equal(nm.dequantize(q.params[f"{ql.name}.weight"], ql.w_frac), w)


def test_blas_path_equals_integer_path(monkeypatch):
    """imatmul's float64 BLAS path (taken when no sum can reach 2^53) gives the int64 results exactly."""
    net = stopnp.build(convnet().config)
    x, y = data(net, B=4)
    q = fixed.quantize(net)
    xq = fixed.quantize_input(q, x)
    out, g, _ = fixed.run(q, xq, y)
    monkeypatch.setattr(fixed, "EXACT", 0.0)      # force the int64 loop
    out2, g2, _ = fixed.run(q, xq, y)
    assert np.array_equal(out, out2) and all(np.array_equal(g[k], g2[k]) for k in g)
    a = np.array([[2 ** 40, 3]], np.int64)
    assert fixed.imatmul(a, np.array([[2 ** 20], [1]], np.int64))[0, 0] == 2 ** 60 + 3   # beyond 2^53: int64
