"""Per-step loss kernel (stopnp/kernels/loss.py): ∂E[t]/∂o[t] against finite differences, E[t] against NumPy."""
import math

import numpy as np
import pytest

from stopnp.kernels import loss


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
        with pytest.raises(AssertionError):  # negative control: a 1 % error is caught
            np.testing.assert_allclose(go * 1.01, fd, rtol=1e-6, atol=1e-9)
    e = loss.step_loss(np.zeros_like(o), o, y, 1.0, 0.0)
    p = np.exp(o) / np.exp(o).sum(1, keepdims=True)
    assert abs(e - np.mean(-np.log(p[np.arange(4), y]))) < 1e-12
    assert math.isclose(loss.coefficients("ce_mse", 0.05, "sum", 4)[1], 0.05)
