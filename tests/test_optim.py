"""Optimizers against plain NumPy formulas; clamps; decay on weights only; cosine schedule; losses."""
import math

import numpy as np
import pytest

from stopnp import config as C, loss, optim


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


def test_step_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    o, y = rng.normal(size=(4, 5)), np.array([0, 3, 4, 1])
    for kind, mix in (("ce", 0.0), ("ce_mse", 0.05), ("mse", 0.0)):
        c_ce, c_mse = loss.coefficients(kind, mix, "mean", 3)
        go = np.zeros_like(o)
        loss.step_loss(go, o, y, c_ce, c_mse)
        fd = np.zeros_like(o)
        for i in np.ndindex(o.shape):
            for sgn in (1, -1):
                oo = o.copy()
                oo[i] += sgn * 1e-6
                fd[i] += sgn * loss.step_loss(np.zeros_like(o), oo, y, c_ce, c_mse) / 2e-6
        np.testing.assert_allclose(go, fd, rtol=1e-6, atol=1e-9)
    e = loss.step_loss(np.zeros_like(o), o, y, 1.0, 0.0)
    p = np.exp(o) / np.exp(o).sum(1, keepdims=True)
    assert abs(e - np.mean(-np.log(p[np.arange(4), y]))) < 1e-12
    assert math.isclose(loss.coefficients("ce_mse", 0.05, "sum", 4)[1], 0.05)
