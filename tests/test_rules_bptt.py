"""BPTT equals finite differences of the whole network's smooth forward (reset kept), float64."""
import numpy as np
import pytest

import stopnp
import reference
from fdcheck import check_grad, rel_err
from nets import convnet, data, mlp3, randomize_bn


def learned_names(net):
    """Every parameter but BN running statistics: what BPTT with learn = "WTL" must return."""
    return {k for k in net.params if not k.endswith((".running_mean", ".running_var"))}


def _fd_check(net, x, y, reset, surrogate, bn_train=True, rtol=1e-6):
    got = stopnp.gradients(net, x, y, rule="bptt", smooth=True, detach_reset=False, alpha_reduce="sum",
                           bn_mode="train" if bn_train else "eval")
    st = reference.forward(net, net.params, x, reset=reset, surrogate=surrogate)
    for name, r in reference.spike_rates(net, st).items():
        assert 0 < r < 1, f"{name}: spike rate {r}"
    assert set(got) == learned_names(net), sorted(got)  # W, θ, α (and BN γ, β) of every layer
    worst = 0.0
    for name, g in got.items():
        arr = net.params[name]
        f = lambda: reference.loss_of(net, net.params, x, y, reset=reset, surrogate=surrogate,  # noqa
                                      smooth_spikes=True, bn_train=bn_train)
        ok, err = check_grad(f, arr, g, rtol=rtol)
        worst = max(worst, err)
        assert np.abs(g).max() > 0, f"{name}: zero gradient"
        assert ok, f"{name}: rel err {err:.2e}"
    return got, worst


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("surrogate", ["exp", "sigmoid", "atan"])
def test_bptt_mlp_finite_differences(reset, surrogate):
    net = mlp3(reset=reset, surrogate=surrogate)
    x, y = data(net, T=4, scale=1.2)
    _fd_check(net, x, y, reset, surrogate)


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("pool", ["avgpool", "maxpool"])
def test_bptt_convnet_bn_finite_differences(reset, pool):
    net = convnet(reset=reset, bn=True, pool=pool, theta_mode="channel")
    randomize_bn(net)
    x, y = data(net, T=3, B=3, scale=1.0)
    _fd_check(net, x, y, reset, "exp", bn_train=True)


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("kind", ["mlp", "conv-bn"])
def test_bptt_detached_reset_finite_differences(reset, kind):
    """The default BPTT (reset path detached) is the derivative of the smooth forward whose reset term
    uses the base run's spikes as constants (θ's own multiplier in the soft reset stays live)."""
    if kind == "mlp":
        net, bn_train = mlp3(reset=reset), False
        x, y = data(net, T=4, scale=1.2)
    else:
        net, bn_train = convnet(reset=reset, bn=True, theta_mode="channel"), True
        randomize_bn(net)
        x, y = data(net, T=3, B=3, scale=1.0)
    kw = dict(reset=reset, smooth_spikes=True, bn_train=bn_train)
    base = reference.forward(net, net.params, x, **kw)
    frozen = {layer.name: [s.copy() for s in base["s"][layer.name]] for layer in net.layers if layer.spiking}
    hard = reference.forward(net, net.params, x, reset=reset, bn_train=bn_train)
    for name, r in reference.spike_rates(net, hard).items():
        assert 0 < r < 1, f"{name}: spike rate {r}"
    got = stopnp.gradients(net, x, y, rule="bptt", smooth=True, detach_reset=True, alpha_reduce="sum",
                           bn_mode="train" if bn_train else "eval")
    assert set(got) == learned_names(net), sorted(got)
    f = lambda: reference.loss_of(net, net.params, x, y, reset_spikes=frozen, **kw)  # noqa: E731
    for name, g in got.items():
        ok, err = check_grad(f, net.params[name], g)
        assert np.abs(g).max() > 0 and ok, f"{name}: rel err {err:.2e}"
        assert not check_grad(f, net.params[name], g * 1.01)[0], f"{name}: a 1 % error passes"
    kept = stopnp.gradients(net, x, y, rule="bptt", smooth=True, detach_reset=False, alpha_reduce="sum",
                            bn_mode="train" if bn_train else "eval")
    assert rel_err(kept["fc1.weight" if kind == "mlp" else "conv1.weight"],
                   got["fc1.weight" if kind == "mlp" else "conv1.weight"]) > 1e-3  # the two differ


@pytest.mark.parametrize("readout", ["spiking", "membrane"])
@pytest.mark.parametrize("kind, reduce", [("ce_mse", "mean"), ("mse", "sum"), ("ce", "mean")])
def test_bptt_loss_options_finite_differences(readout, kind, reduce):
    """Every loss option (§2) and both readouts, at network level: BPTT = finite differences."""
    net = mlp3(readout=readout)
    x, y = data(net, T=4, scale=1.2)
    hard = reference.forward(net, net.params, x)
    for name, r in reference.spike_rates(net, hard).items():
        assert 0 < r < 1, f"{name}: spike rate {r}"
    got = stopnp.gradients(net, x, y, rule="bptt", smooth=True, detach_reset=False, alpha_reduce="sum",
                           loss=kind, mix=0.3, loss_reduce=reduce)
    assert set(got) == learned_names(net)
    f = lambda: reference.loss_of(net, net.params, x, y, reduce=reduce, kind=kind, mix=0.3,  # noqa: E731
                                  smooth_spikes=True)
    for name, g in got.items():
        ok, err = check_grad(f, net.params[name], g)
        assert np.abs(g).max() > 0 and ok, f"{name}: rel err {err:.2e}"
        assert not check_grad(f, net.params[name], g * 1.01)[0], f"{name}: a 1 % error passes"


def test_bptt_negative_control():
    net = mlp3()
    x, y = data(net, T=4, scale=1.2)
    got = stopnp.gradients(net, x, y, rule="bptt", smooth=True, detach_reset=False, alpha_reduce="sum")
    name = "fc1.weight"
    f = lambda: reference.loss_of(net, net.params, x, y, smooth_spikes=True)  # noqa: E731
    assert check_grad(f, net.params[name], got[name])[0]
    assert not check_grad(f, net.params[name], got[name] * 1.01)[0]


def test_bptt_blas_equals_loop_kernels():
    net = convnet(bn=True, pool="maxpool")
    randomize_bn(net)
    x, y = data(net, scale=1.0)
    a = stopnp.gradients(net, x, y, rule="bptt", kernels="blas")
    b = stopnp.gradients(net, x, y, rule="bptt", kernels="loop")
    assert set(a) == set(b) == learned_names(net), sorted(a)
    for k in a:
        assert np.abs(a[k]).max() > 0
        assert rel_err(a[k], b[k]) < 1e-12, k


def test_detached_bptt_differs_from_stop_in_deep_net():
    """Sanity: on 3 layers STOP (δ sent down) is not BPTT (e sent down); they differ below the top."""
    net = mlp3()
    x, y = data(net, scale=1.2)
    s = stopnp.gradients(net, x, y, rule="stop")
    b = stopnp.gradients(net, x, y, rule="bptt")
    assert rel_err(s["fc3.weight"], b["fc3.weight"]) < 1e-12
    assert rel_err(s["fc1.weight"], b["fc1.weight"]) > 1e-6
