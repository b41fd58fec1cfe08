"""Dense kernels: BLAS paths (NumPy's, and the row parts in numba's pool) equal the loop references
(float64 tight, float32 close) and NumPy's formulas, the numba kernels are bitwise equal on 1 and 2
threads, backward equals finite differences.

    out[b, o] = Σ_i W[o, i]·x[b, i];   gx[b, i] += Σ_o gout[b, o]·W[o, i];   gW[o, i] += Σ_b gout[b, o]·a[b, i]
"""
import numba
import numpy as np
import pytest

from fdcheck import check_grad, rel_err
from stopnp.kernels import linear as klin


def _setup(dtype, B=7, I=300, O=130, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((B, I)) < 0.3).astype(dtype)          # spikes as the input
    w, gout = rng.normal(size=(O, I)).astype(dtype), rng.normal(size=(B, O)).astype(dtype)
    gx0, gw0 = rng.normal(size=(B, I)).astype(dtype), rng.normal(size=(O, I)).astype(dtype)
    assert 0 < x.mean() < 1
    return x, w, gout, gx0, gw0


def _all(kind, x, w, gout, gx0, gw0):
    """(out, gx0 + gout·W, gw0 + goutᵀ·x) by the loop or the BLAS kernels; accumulators start non-zero."""
    out, gx, gw = np.zeros((x.shape[0], w.shape[0]), x.dtype), gx0.copy(), gw0.copy()
    if kind == "loop":
        klin.linear_forward_loop(out, x, w)
        klin.linear_backward_input_loop(gx, gout, w)
        klin.linear_backward_weight_loop(gw, gout, x)
    elif kind == "blas":
        klin.linear_forward_blas(out, x, w)
        klin.linear_backward_input_blas(gx, gout, w, np.empty_like(gx))
        klin.linear_backward_weight_blas(gw, gout, x, np.empty_like(gw))
    else:  # "pool": the same GEMMs in row parts inside numba's pool (NaN scratch: it is overwritten)
        klin.linear_forward_pool(out, x, w)
        klin.linear_backward_input_pool(gx, gout, w, np.full_like(gx, np.nan))
        klin.linear_backward_weight_pool(gw, gout, x, np.full_like(gw, np.nan),
                                         np.full((w.shape[0], x.shape[0]), np.nan, x.dtype))
    return out, gx, gw


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 2e-6)])
@pytest.mark.parametrize("kind", ["blas", "pool"])
@pytest.mark.parametrize("B", [7, 37], ids=["one-part", "two-parts"])
def test_blas_equals_loop_and_formula(kind, dtype, tol, B):
    args = _setup(dtype, B=B, O=130 if B == 7 else 41)  # 41 rows of gW: two uneven parts
    assert klin.parts_for(B) == (1 if B == 7 else 2) and klin.parts_for(41) == 2
    x, w, gout, gx0, gw0 = (a.astype(np.float64) for a in args)
    formula = (x @ w.T, gx0 + gout @ w, gw0 + gout.T @ x)
    loop, blas = _all("loop", *args), _all(kind, *args)
    for name, lo, bl, ref in zip(("forward", "input grad", "weight grad"), loop, blas, formula):
        assert lo.dtype == bl.dtype == dtype, name
        assert rel_err(bl, lo) < tol, (name, rel_err(bl, lo))
        assert rel_err(lo, ref) < tol, (name, rel_err(lo, ref))


@pytest.mark.parametrize("kind", ["loop", "pool"])
def test_numba_kernels_one_and_two_threads_bitwise(kind):
    args = _setup(np.float32, B=9 if kind == "loop" else 40, O=33)  # pool: 2 row parts of x and of gW
    res = []
    for n in (1, 2):
        numba.set_num_threads(n)
        res.append(_all(kind, *args))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*res):
        assert np.abs(a).max() > 0 and np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["loop", "blas", "pool"])
def test_backward_matches_finite_differences(kind):
    """E = Σ R ⊙ (x Wᵀ): ∂E/∂x and ∂E/∂W from the backward kernels with gout = R; a 1% error is caught."""
    x, w, R, _, _ = _setup(np.float64, B=3, I=6, O=4, seed=1)
    x = x + np.random.default_rng(2).normal(size=x.shape)  # smooth point: any real x

    def loss():
        out = np.zeros((x.shape[0], w.shape[0]))
        {"loop": klin.linear_forward_loop, "blas": klin.linear_forward_blas,
         "pool": klin.linear_forward_pool}[kind](out, x, w)
        return float((R * out).sum())

    _, gx, gw = _all(kind, x, w, R, np.zeros_like(x), np.zeros_like(w))
    for arr, g in ((x, gx), (w, gw)):
        ok, err = check_grad(loss, arr, g, rtol=1e-8)
        assert ok, err
        assert not check_grad(loss, arr, g * 1.01, rtol=1e-8)[0]
