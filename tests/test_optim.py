"""Optimizers (stopnp/optim.py) against plain NumPy formulas; clamps; decay on weights only; cosine schedule."""
import math

import numpy as np
import pytest

from stopnp import config as C, optim


def _setup():
    rng = np.random.default_rng(0)
    params = {"fc1.weight": rng.normal(size=(5, 4)), "fc1.theta": rng.uniform(0, 0.01, 5),
              "fc1.alpha": np.array([0.95])}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(3)]
    return params, grads


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_update_rules_match_formulas(kind):
    cfg = C.resolve({}, [f"optim.kind={kind!r}".replace("'", '"'), "optim.weight_decay=0.01",
                         "optim.theta_lr_scale=0.5", "optim.alpha_lr_scale=2.0"])["optim"]
    params, grads = _setup()
    ref = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v2 = {k: np.zeros_like(v) for k, v in ref.items()}
    state = optim.init_state(cfg, params, list(params))
    lr = 0.1
    for t, g in enumerate(grads, 1):
        optim.step(params, {k: x.copy() for k, x in g.items()}, state, cfg, lr, theta_min=1e-3)
        for k in ref:
            gg = g[k] + (0.01 * ref[k] if k.endswith(".weight") else 0.0)
            eta = lr * {"theta": 0.5, "alpha": 2.0}.get(k.split(".")[-1], 1.0)
            if kind == "sgd":
                m[k] = 0.9 * m[k] + gg
                ref[k] = ref[k] - eta * m[k]
            else:
                m[k] = 0.9 * m[k] + 0.1 * gg
                v2[k] = 0.999 * v2[k] + 0.001 * gg * gg
                ref[k] = ref[k] - eta * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v2[k] / (1 - 0.999 ** t)) + 1e-8)
            if k.endswith(".alpha"):
                ref[k] = np.clip(ref[k], 0, 1)
            if k.endswith(".theta"):
                ref[k] = np.maximum(ref[k], 1e-3)
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-12, atol=1e-14)
    assert (params["fc1.theta"] >= 1e-3).all() and 0 <= params["fc1.alpha"][0] <= 1


def test_cosine_schedule():
    cfg = C.resolve()["optim"]
    assert optim.lr_at(cfg, 0, 100) == cfg["lr"]
    assert abs(optim.lr_at(cfg, 50, 100) - cfg["lr"] / 2) < 1e-12
    assert optim.lr_at(cfg, 100, 100) < 1e-12


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_clamps_hit_both_bounds_exactly(kind):
    """α pushed below 0 lands on 0.0 exactly, α pushed above 1 on 1.0, θ pushed below θ_min on θ_min."""
    cfg = C.resolve({}, [f'optim.kind="{kind}"', "optim.weight_decay=0.0"])["optim"]
    params = {"a.alpha": np.array([0.05]), "b.alpha": np.array([0.95]), "a.theta": np.array([0.002, 0.5])}
    grads = {"a.alpha": np.array([10.0]), "b.alpha": np.array([-10.0]), "a.theta": np.array([10.0, 0.0])}
    optim.step(params, grads, optim.init_state(cfg, params, list(params)), cfg, lr=1.0, theta_min=1e-3)
    assert params["a.alpha"][0] == 0.0 and params["b.alpha"][0] == 1.0
    assert params["a.theta"][0] == 1e-3 and params["a.theta"][1] == 0.5


def test_nesterov_matches_formula():
    """m <- μm + g';  w <- w - η(g' + μm)  (g' = g + λ_wd·w for weights)."""
    cfg = C.resolve({}, ['optim.kind="sgd"', "optim.nesterov=true", "optim.momentum=0.8",
                         "optim.weight_decay=0.01"])["optim"]
    params, grads = _setup()
    params["fc1.alpha"][0] = 0.5
    ref = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    state = optim.init_state(cfg, params, list(params))
    for g in grads:
        optim.step(params, {k: x.copy() for k, x in g.items()}, state, cfg, 0.01, theta_min=-10.0)
        for k in ref:
            gg = g[k] + (0.01 * ref[k] if k.endswith(".weight") else 0.0)
            m[k] = 0.8 * m[k] + gg
            ref[k] = ref[k] - 0.01 * (gg + 0.8 * m[k])
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-13, atol=1e-15)


def test_clip_grads_scales_to_max_norm():
    rng = np.random.default_rng(2)
    g0 = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=5)}
    norm = math.sqrt(sum((v ** 2).sum() for v in g0.values()))
    g = {k: v.copy() for k, v in g0.items()}
    assert abs(optim.clip_grads(g, norm / 3) - norm) < 1e-12 * norm
    for k in g:
        np.testing.assert_allclose(g[k], g0[k] / 3, rtol=1e-13, atol=0)
    assert abs(math.sqrt(sum((v ** 2).sum() for v in g.values())) - norm / 3) < 1e-12 * norm
    g = {k: v.copy() for k, v in g0.items()}
    optim.clip_grads(g, 2 * norm)  # under the bound: untouched
    optim.clip_grads(g, 0.0)       # 0 = off
    for k in g:
        assert np.array_equal(g[k], g0[k])


@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_update_bn_running_formula(momentum):
    """running <- (1-m)·running + m·batch statistic, mean and var alike."""
    rng = np.random.default_rng(3)
    params = {"c.bn.running_mean": rng.normal(size=4), "c.bn.running_var": rng.uniform(0.5, 2, 4)}
    mean, var = rng.normal(size=4), rng.uniform(0.1, 3, 4)
    ref_m = (1 - momentum) * params["c.bn.running_mean"] + momentum * mean
    ref_v = (1 - momentum) * params["c.bn.running_var"] + momentum * var
    optim.update_bn_running(params, {"c.bn": (mean, var)}, momentum)
    np.testing.assert_allclose(params["c.bn.running_mean"], ref_m, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(params["c.bn.running_var"], ref_v, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clamps_keep_nan_and_round_like_numpy(dtype):
    """The clamps run inside the update kernels: a NaN stays NaN (never hidden on a bound), and a θ just
    below θ_min lands on θ_min as stored in the parameter's dtype (what np.maximum gave)."""
    cfg = C.resolve({}, ['optim.kind="sgd"', "optim.weight_decay=0.0", "optim.momentum=0.0"])["optim"]
    below = np.nextafter(dtype(1e-3), dtype(0))
    params = {"a.theta": np.array([0.5, 0.5, below], dtype), "a.alpha": np.array([0.5], dtype)}
    grads = {"a.theta": np.array([np.nan, 0.0, 0.0], dtype), "a.alpha": np.array([np.nan], dtype)}
    optim.step(params, grads, optim.init_state(cfg, params, list(params)), cfg, lr=1.0, theta_min=1e-3)
    assert np.isnan(params["a.theta"][0]) and np.isnan(params["a.alpha"][0]) and params["a.theta"][1] == 0.5
    assert params["a.theta"][2] == np.maximum(np.array([below], dtype), 1e-3)[0] == dtype(1e-3)
