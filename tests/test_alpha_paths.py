"""Where STOP's leak gradient Δα and BPTT's part ways, on a small conv net in float64.

The three estimators differ only by the paths they keep (docs/algorithms.md §4: STOP's dropped paths):

    STOP            spatial error δ^l[t] from layer l+1 at the same t; α's trace carries layer l's own past
    BPTT, detached  + the error layer l+1 sends back in time (s^l[t] -> U^{l+1}[t' > t] through its leak)
    BPTT, kept      + the reset path (V = U - θ s): the derivative of the loss (= finite differences)

A sign of STOP's Δα opposite to detached BPTT's (seen in ``stopnp inspect`` for conv2) is therefore no
defect when STOP equals the δ-only reference and BPTT equals finite differences: it is the inter-layer
temporal path that STOP drops, and on this net the full gradient (reset kept) has STOP's sign.
The mean over neurons (our default, [R-3p]'s reading of the paper) differs from the sum by the positive
factor n_l: it rescales the step, it cannot change a sign.
"""
import numpy as np

import stopnp
import reference
from fdcheck import check_grad, rel_err
from nets import convnet, data


def _net():
    net = convnet(seed=3)
    x, y = data(net, T=6, B=8, seed=4, scale=1.2)
    return net, x, y


def test_stop_alpha_sign_differs_from_detached_bptt_by_the_dropped_temporal_path():
    net, x, y = _net()
    g = {name: stopnp.gradients(net, x, y, rule=rule, alpha_reduce="sum", **kw)
         for name, rule, kw in (("stop", "stop", {}), ("detached", "bptt", {}),
                                ("kept", "bptt", {"detach_reset": False}))}
    ref, st = reference.stop_identity(net, net.params, x, y, alpha_reduce="sum")
    for name, r in reference.spike_rates(net, st).items():
        assert 0 < r < 1, (name, r)
    a = {k: v["conv2.alpha"][0] for k, v in g.items()}
    # 1. no defect: STOP's Δα is the δ-only backward-in-time reference's (an independent implementation)
    assert rel_err(g["stop"]["conv2.alpha"], ref["conv2.alpha"]) < 1e-10
    assert rel_err(g["stop"]["conv1.alpha"], ref["conv1.alpha"]) < 1e-10
    # 2. the sign: STOP and detached BPTT disagree on conv2; the full gradient (reset kept) sides with STOP
    assert np.sign(a["stop"]) != np.sign(a["detached"]) and np.sign(a["kept"]) == np.sign(a["stop"]), a
    # each dropped path is a real, non-negligible term
    temporal, reset = a["detached"] - a["stop"], a["kept"] - a["detached"]
    assert abs(temporal) > abs(a["stop"]) and abs(reset) > 0.1 * abs(a["detached"]), (temporal, reset)
    # 3. the reduction: mean = sum / n_l (the same sign)
    mean = stopnp.gradients(net, x, y, rule="stop")["conv2.alpha"][0]
    n = net.layers[1].size
    assert abs(mean * n - a["stop"]) < 1e-12 * abs(a["stop"]) and np.sign(mean) == np.sign(a["stop"])


def test_bptt_alpha_with_reset_kept_is_the_finite_difference_of_the_loss():
    """The reference the sign is judged by: BPTT's Δα (reset kept) = finite differences of the whole
    network's loss (smooth forward, so that the loss is differentiable), and a 1 % error is caught."""
    net, x, y = _net()
    got = stopnp.gradients(net, x, y, rule="bptt", smooth=True, detach_reset=False, alpha_reduce="sum")
    f = lambda: reference.loss_of(net, net.params, x, y, smooth_spikes=True)  # noqa: E731
    for name in ("conv1.alpha", "conv2.alpha"):
        ok, err = check_grad(f, net.params[name], got[name], rtol=1e-6)
        assert ok, (name, err)
        assert not check_grad(f, net.params[name], got[name] * 1.01, rtol=1e-6)[0]  # negative control
