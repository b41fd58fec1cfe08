"""Elementwise kernels (dropout forward/backward, sums): equal their NumPy formulas exactly, bitwise on
1 and 2 threads; the dropout backward (mul_add) equals finite differences of the forward (mul_into).

    mul_into: out = a ⊙ m     mul_add: out += a ⊙ m     add_into: out += a     axpy: out += c·a
"""
import numba
import numpy as np
import pytest

from fdcheck import check_grad
from stopnp.kernels import elementwise as kel


def _setup(dtype, B=9, M=37, p=0.25, seed=0):
    rng = np.random.default_rng(seed)
    a, out0 = rng.normal(size=(B, M)).astype(dtype), rng.normal(size=(B, M)).astype(dtype)
    m = ((rng.random((B, M)) >= p) / (1 - p)).astype(dtype)  # a dropout mask, as the engine draws it
    assert 0 < (m == 0).mean() < 1
    return a, m, out0


def _all(a, m, out0, c):
    res = [out0.copy() for _ in range(4)]
    kel.mul_into(res[0], a, m)
    kel.mul_add(res[1], a, m)
    kel.add_into(res[2], a)
    kel.axpy(res[3], a, c)
    return res


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B,M", [(9, 37), (64, 1100)], ids=["serial", "parallel"])
def test_kernels_equal_formulas(dtype, B, M):
    assert (B * M < kel.SERIAL_BELOW) == (B == 9)  # both variants
    a, m, out0 = _setup(dtype, B, M)
    c = dtype(0.37)
    got = _all(a, m, out0, c)
    want = [a * m, out0 + a * m, out0 + a, out0 + c * a]
    for name, g, w in zip(("mul_into", "mul_add", "add_into", "axpy"), got, want):
        assert g.dtype == dtype and np.array_equal(g, w), name


def test_one_and_two_threads_bitwise():
    a, m, out0 = _setup(np.float32, B=64, M=1100)  # over SERIAL_BELOW: the parallel variant
    res = []
    for n in (1, 2):
        numba.set_num_threads(n)
        res.append(_all(a, m, out0, np.float32(-1.5)))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for x, y in zip(*res):
        assert np.array_equal(x, y)


def test_dropout_backward_matches_finite_differences():
    """E = Σ R ⊙ mul_into(a, m): ∂E/∂a = mul_add(0, R, m) = R ⊙ m; a 1% error is caught."""
    a, m, R = _setup(np.float64, B=4, M=6, seed=1)

    def loss():
        out = np.empty_like(a)
        kel.mul_into(out, a, m)
        return float((R * out).sum())

    g = np.zeros_like(a)
    kel.mul_add(g, R, m)
    assert np.abs(g).max() > 0
    ok, err = check_grad(loss, a, g, rtol=1e-8)
    assert ok, err
    assert not check_grad(loss, a, g * 1.01, rtol=1e-8)[0]


def test_count_nonzero_counts_spikes_per_sample():
    """Per-sample nonzero counts (the engine's spike counts: the sum of 0/1 spikes), 1 and 2 threads."""
    rng = np.random.default_rng(3)
    for B, M in ((7, 1001), (40, 1001)):  # serial, parallel
        s = (rng.random((B, M)) < 0.2).astype(np.float32)
        s[2] = 0  # a silent sample
        s[3, 5] = -0.0  # a negative zero is no spike
        assert 0 < s.mean() < 1
        got = []
        for n in (1, 2):
            numba.set_num_threads(n)
            out = np.full(B, -1, np.int64)
            assert kel.count_nonzero(out, s) == np.count_nonzero(s)
            got.append(out)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert np.array_equal(got[0], got[1]) and np.array_equal(got[0], s.sum(axis=1).astype(np.int64))
        assert got[0][2] == 0
