"""Odd and non-square shapes against the slow reference, in float64: global average pooling of a
non-square map, and randomized small networks (conv with strides and padding, avg/max pooling with
floors, GAP, BN, residual blocks, MLP heads). Run with NUMBA_BOUNDSCHECK=1 by test_boundscheck.py:
an index past an array raises there instead of reading or corrupting memory."""
import numpy as np
import pytest

import stopnp
import reference
from fdcheck import check_grad, rel_err
from nets import randomize_bn
from stopnp.kernels import pool


def _net(layers, input_shape, n_classes=3, seed=0, **neuron):
    cfg = {"model": {"name": "custom", "input_shape": list(input_shape), "n_classes": n_classes,
                     "layers": layers},
           "neuron": {"alpha_init": 0.6, **neuron}, "run": {"seed": seed}}
    return stopnp.build(cfg).astype(np.float64)


def _x(net, T=3, B=3, seed=1, scale=1.5):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, scale, (T, B, *net.input_shape)), rng.integers(0, net.n_classes, B)


@pytest.mark.parametrize("hw", [(10, 6), (6, 10), (5, 5), (1, 7)])
def test_pool_kernels_with_a_rectangular_window(hw):
    """avgpool/maxpool with (kh, kw) = the whole map (GAP) and a 2x3 window, against NumPy."""
    rng = np.random.default_rng(0)
    H, W = hw
    x = rng.normal(size=(2, 3, H, W))
    for kh, kw in ((H, W), (min(2, H), min(3, W))):
        Ho, Wo = H // kh, W // kw
        r = x[:, :, :Ho * kh, :Wo * kw].reshape(2, 3, Ho, kh, Wo, kw)
        out = np.zeros((2, 3, Ho, Wo))
        pool.avgpool2d_forward(out, x, kh, kw)
        np.testing.assert_allclose(out, r.mean(axis=(3, 5)), rtol=1e-13)
        am = np.zeros(out.shape, np.int64)
        pool.maxpool2d_forward(out, am, x, kh, kw)
        np.testing.assert_array_equal(out, r.max(axis=(3, 5)))
        g = rng.normal(size=out.shape)
        gx = np.zeros_like(x)
        pool.avgpool2d_backward(gx, g, kh, kw)
        want = np.zeros_like(x)
        want[:, :, :Ho * kh, :Wo * kw] = np.repeat(np.repeat(g / (kh * kw), kh, axis=2), kw, axis=3)
        np.testing.assert_allclose(gx, want, rtol=1e-13)


@pytest.mark.parametrize("shape", [(2, 10, 6), (2, 6, 10)])
def test_gap_on_a_non_square_map_matches_finite_differences(shape):
    """conv -> gap -> linear: the average covers the whole H x W map (W > H and H > W), and BPTT's
    gradients match central differences of the reference loss; STOP matches its slow reference."""
    net = _net([{"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "gap"}, {"type": "linear", "out": 3}],
               shape)
    (gap,) = [op for syn in net.synapses() for op in syn.pre if op.kind == "gap"]
    assert gap.window == shape[1:]
    x, y = _x(net, scale=2.5)
    st = reference.forward(net, net.params, x)
    rates = reference.spike_rates(net, st)
    assert all(0 < r < 1 for r in rates.values()), rates
    got = stopnp.gradients(net, x, y, "bptt", smooth=True, detach_reset=False, alpha_reduce="sum")
    f = lambda: reference.loss_of(net, net.params, x, y, smooth_spikes=True)  # noqa: E731
    for k in ("conv1.weight", "fc1.weight", "conv1.theta"):
        ok, err = check_grad(f, net.params[k], got[k], rtol=1e-6)
        assert ok, f"{k}: rel err {err:.2e}"
    assert not check_grad(f, net.params["conv1.weight"], got["conv1.weight"] * 1.01)[0]  # the check bites
    ref, _ = reference.stop_identity(net, net.params, x, y)
    stop = stopnp.gradients(net, x, y, "stop")
    for k in stop:
        assert rel_err(stop[k], ref[k]) < 1e-10, (k, rel_err(stop[k], ref[k]))


def test_a_layer_list_that_breaks_a_shape_is_refused():
    """Hand-made layers whose pre-op window does not fit never reach a kernel."""
    import dataclasses
    from stopnp.engine.network import Network, ShapeError
    net = _net([{"type": "conv", "out": 2, "k": 3, "pad": 1}, {"type": "gap"}, {"type": "linear", "out": 3}],
               (1, 6, 4))
    fc = net.layers[1]
    syn = fc.synapses[0]
    gap = syn.pre[0]
    for bad in (dataclasses.replace(gap, kw=0),  # the old square GAP window on a 6 x 4 map
                dataclasses.replace(gap, out_shape=(2, 2, 1))):
        layers = (net.layers[0], dataclasses.replace(fc, synapses=(dataclasses.replace(
            syn, pre=(bad,) + syn.pre[1:]),)))
        with pytest.raises(ShapeError, match="synapse 'fc1'"):
            Network(layers, net.params, net.config)


FIRST = ("conv", "resblock", "avgpool", "maxpool")  # seed i starts with FIRST[i % 4]: every kind is covered


def _random_layers(rng, first):
    """A small random network: its layer list and input shape (odd and non-square maps)."""
    C, H, W = int(rng.integers(1, 3)), int(rng.integers(5, 10)), int(rng.integers(5, 10))
    layers, shape = [], (C, H, W)
    for i in range(int(rng.integers(2, 4))):
        kind = first if i == 0 else rng.choice(["conv", "conv", "resblock", "avgpool", "maxpool"])
        if kind == "conv":
            k = int(rng.integers(1, 4))
            stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 2))
            if (shape[1] + 2 * pad - k) // stride + 1 < 2 or (shape[2] + 2 * pad - k) // stride + 1 < 2:
                continue
            out = int(rng.integers(2, 5))
            layers.append({"type": "conv", "out": out, "k": k, "stride": stride, "pad": pad,
                           "bn": bool(rng.integers(0, 2))})
            shape = (out, (shape[1] + 2 * pad - k) // stride + 1, (shape[2] + 2 * pad - k) // stride + 1)
        elif kind == "resblock":
            stride = int(rng.integers(1, 3))
            out = int(rng.choice([shape[0], shape[0] + 1]))
            layers.append({"type": "resblock", "out": out, "stride": stride, "bn": bool(rng.integers(0, 2))})
            shape = (out, (shape[1] - 1) // stride + 1, (shape[2] - 1) // stride + 1)
        elif min(shape[1:]) >= 2:
            k = int(rng.integers(2, min(3, *shape[1:]) + 1))
            layers.append({"type": str(kind), "k": k})
            shape = (shape[0], shape[1] // k, shape[2] // k)
    if not layers:
        layers.append({"type": "conv", "out": 2, "k": 3, "pad": 1})
    if rng.integers(0, 2):
        layers.append({"type": "gap"})
    if rng.integers(0, 2):
        layers.append({"type": "linear", "out": int(rng.integers(3, 8))})
    layers.append({"type": "linear", "out": 3})
    return layers, (C, H, W)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kernels", ["blas", "loop"])
def test_random_small_networks_match_the_slow_reference(seed, kernels):
    rng = np.random.default_rng(100 + seed)
    for _ in range(5):  # a draw whose layers never fire proves nothing: draw again
        layers, shape = _random_layers(rng, FIRST[seed % 4])
        theta_mode = str(rng.choice(["neuron", "channel", "layer"]))
        net = _net(layers, shape, seed=seed, theta_mode=theta_mode, theta_init=0.4)
        x, y = _x(net, T=3, B=int(rng.integers(1, 4)), seed=seed, scale=2.0)
        randomize_bn(net, seed=seed)
        ref, st = reference.stop_identity(net, net.params, x, y, bn_train=False)  # frozen BN (eval mode)
        rates = reference.spike_rates(net, st)
        if sum(r > 0 for r in rates.values()) >= min(2, len(rates)):
            break
    assert sum(r > 0 for r in rates.values()) >= min(2, len(rates)), (layers, rates)  # spikes happened
    got = stopnp.gradients(net, x, y, "stop", kernels=kernels, bn_mode="eval")
    got = {k: v for k, v in got.items() if ".bn." not in k}  # the reference does not learn frozen BN's γ, β
    assert set(got) == set(ref), (sorted(got), sorted(ref))
    assert any(np.abs(g).max() > 0 for g in got.values())
    for k in got:
        assert rel_err(got[k], ref[k]) < 1e-9, (layers, k, rel_err(got[k], ref[k]))


def test_winograd_on_an_odd_non_square_map_matches_the_slow_reference():
    """3x3 pad-1 convolutions with 16 channels (the Winograd kernels) on a 5 x 7 map: odd tiles."""
    from stopnp.kernels import winograd
    net = _net([{"type": "conv", "out": 16, "k": 3, "pad": 1}, {"type": "resblock", "out": 16, "bn": False},
                {"type": "gap"}, {"type": "linear", "out": 3}], (16, 5, 7), theta_init=0.4)
    assert winograd.eligible((16, 5, 7), 16, 3, 1, 1)
    x, y = _x(net, T=2, B=2, scale=1.0)
    ref, st = reference.stop_identity(net, net.params, x, y)
    assert all(r > 0 for r in reference.spike_rates(net, st).values())
    got = stopnp.gradients(net, x, y, "stop")
    for k in got:
        assert rel_err(got[k], ref[k]) < 1e-9, (k, rel_err(got[k], ref[k]))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rule", ["bptt", "sltt", "ottt", "bpsta"])
def test_random_small_networks_other_rules_blas_equals_loop(seed, rule):
    """The other rules' kernels on the same random shapes: the BLAS kernels equal the loop references."""
    rng = np.random.default_rng(200 + seed)
    learn = "WTL" if rule == "bptt" else "W"
    for _ in range(5):  # a draw with no gradient at all proves nothing: draw again
        layers, shape = _random_layers(rng, FIRST[seed % 4])
        net = _net(layers, shape, seed=seed, theta_init=0.4, **({"reset": "hard"} if rule == "bpsta" else {}))
        x, y = _x(net, T=3, B=2, seed=seed, scale=2.0)
        got = {kern: stopnp.gradients(net, x, y, rule, kernels=kern, learn=learn) for kern in ("blas", "loop")}
        if any(np.abs(g).max() > 0 for g in got["blas"].values()):
            break
    assert any(np.abs(g).max() > 0 for g in got["blas"].values()), layers
    for k in got["loop"]:
        assert np.isfinite(got["blas"][k]).all()
        assert rel_err(got["blas"][k], got["loop"][k]) < 1e-9, (layers, k)
