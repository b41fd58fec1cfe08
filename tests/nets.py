"""Small networks for the proof tests, tuned so that every layer fires at a rate strictly in (0, 1)."""
import numpy as np

import stopnp


def mlp3(reset="soft", theta_mode="neuron", surrogate="exp", seed=0, readout="spiking", bn=False):
    cfg = {"model": {"name": "custom", "input_shape": [1, 4, 4], "n_classes": 4, "readout": readout,
                     "layers": [{"type": "flatten"}, {"type": "linear", "out": 12, "bn": bn},
                                {"type": "linear", "out": 10, "bn": bn}, {"type": "linear", "out": 4}]},
           "neuron": {"reset": reset, "theta_mode": theta_mode, "surrogate": surrogate,
                      "alpha_init": 0.6},
           "run": {"seed": seed}}
    return stopnp.build(cfg).astype(np.float64)


def convnet(reset="soft", theta_mode="neuron", surrogate="exp", seed=0, bn=False, pool="avgpool"):
    cfg = {"model": {"name": "custom", "input_shape": [2, 8, 8], "n_classes": 3,
                     "layers": [{"type": "conv", "out": 3, "k": 3, "pad": 1, "bn": bn},
                                {"type": pool, "k": 2},
                                {"type": "conv", "out": 4, "k": 3, "stride": 1, "pad": 0, "bn": bn},
                                {"type": "flatten"}, {"type": "linear", "out": 3}]},
           "neuron": {"reset": reset, "theta_mode": theta_mode, "surrogate": surrogate,
                      "alpha_init": 0.6},
           "run": {"seed": seed}}
    net = stopnp.build(cfg).astype(np.float64)
    return net


def single(reset="soft", theta_mode="neuron", surrogate="exp", seed=0):
    cfg = {"model": {"name": "custom", "input_shape": [6], "n_classes": 5,
                     "layers": [{"type": "linear", "out": 5}]},
           "neuron": {"reset": reset, "theta_mode": theta_mode, "surrogate": surrogate, "alpha_init": 0.6},
           "run": {"seed": seed}}
    return stopnp.build(cfg).astype(np.float64)


def data(net, T=5, B=4, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, scale, (T, B, *net.input_shape))
    y = rng.integers(0, net.n_classes, B)
    return x, y


def randomize_bn(net, seed=7):
    """Non-trivial BN parameters and running statistics (so a frozen BN is not the identity)."""
    rng = np.random.default_rng(seed)
    for name, arr in net.params.items():
        if name.endswith("bn.gamma"):
            arr[...] = rng.uniform(0.8, 1.5, arr.shape)
        elif name.endswith("bn.beta"):
            arr[...] = rng.uniform(0.0, 0.4, arr.shape)
        elif name.endswith("bn.running_mean"):
            arr[...] = rng.uniform(-0.3, 0.3, arr.shape)
        elif name.endswith("bn.running_var"):
            arr[...] = rng.uniform(0.5, 2.0, arr.shape)


def learned(net):
    """Every parameter but BN running statistics: what a rule with learn = "WTL" must return."""
    return {k for k in net.params if not k.endswith((".running_mean", ".running_var"))}


def checked_grads(net, x, y, rule, **options):
    """Gradients of one batch, checked non-vacuous: every learned parameter named, none all zero, and
    every spiking layer fired at a rate strictly in (0, 1)."""
    res = stopnp.run_batch(net, x, y, rule, **options)
    assert set(res.grads) == learned(net), sorted(res.grads)
    for k, g in res.grads.items():
        assert np.abs(g).max() > 0, f"{k}: zero gradient"
    T, B = x.shape[:2]
    for layer in net.layers:
        if layer.spiking:
            rate = res.spike_counts[layer.name] / (T * B * layer.size)
            assert 0 < rate < 1, f"{layer.name}: spike rate {rate}"
    return res.grads
