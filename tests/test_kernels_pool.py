"""Pooling kernels (stopnp.kernels.pool): window = stride = k, no padding, floor.

* forward against explicit-loop NumPy references (values and argmax, ties -> first), float64 and
  float32, odd sizes (floored rows/columns), global average pooling (k = H = W);
* backward against central finite differences of L = Σ out·R (float64; maxpool on tie-free inputs),
  with a negative control (a 1%-perturbed gradient is rejected), floored cells get no gradient;
* backward accumulates (+=); bitwise-identical results for 1 and 2 numba threads.
"""
import numba
import numpy as np
import pytest

from fdcheck import check_grad, rel_err
from stopnp.kernels import pool


def ref_pool(x, k, kind):
    """Explicit loops: (out, argmax as flat h·W + w of the first maximum)."""
    B, C, H, W = x.shape
    Ho, Wo = H // k, W // k
    out = np.zeros((B, C, Ho, Wo))
    am = np.zeros((B, C, Ho, Wo), np.int64)
    for b in range(B):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    win = x[b, c, i * k:(i + 1) * k, j * k:(j + 1) * k].astype(np.float64)
                    if kind == "avg":
                        out[b, c, i, j] = win.sum() / (k * k)
                    else:
                        p, q = np.unravel_index(np.argmax(win), win.shape)  # argmax: first max
                        out[b, c, i, j] = win[p, q]
                        am[b, c, i, j] = (i * k + p) * W + j * k + q
    return out, am


def tie_free(shape, rng):
    """Distinct values, pairwise gaps >= 0.05: a ±1e-6 finite-difference step never flips a max."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.05 - n * 0.025).reshape(shape) + rng.uniform(0, 0.01)


def forward(kind, x, k, out=None, am=None):
    B, C, H, W = x.shape
    out = np.empty((B, C, H // k, W // k), x.dtype) if out is None else out
    if kind == "avg":
        pool.avgpool2d_forward(out, x, k, k)
    else:
        am = np.empty(out.shape, np.int64) if am is None else am
        pool.maxpool2d_forward(out, am, x, k, k)
    return out, am


def backward(kind, gx, gout, k, am):
    if kind == "avg":
        pool.avgpool2d_backward(gx, gout, k, k)
    else:
        pool.maxpool2d_backward(gx, gout, am)


SHAPES = [((2, 3, 6, 7), 2), ((1, 2, 7, 8), 3), ((2, 2, 5, 5), 5), ((2, 1, 4, 4), 1)]  # k=H=W: global


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("xs,k", SHAPES, ids=[f"{s}-k{k}" for s, k in SHAPES])
def test_forward_matches_reference(xs, k, kind, dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=xs).astype(dtype)
    out = np.full((xs[0], xs[1], xs[2] // k, xs[3] // k), np.nan, dtype)  # overwritten
    am = np.full(out.shape, -1, np.int64)
    forward(kind, x, k, out, am)
    ref, ref_am = ref_pool(x, k, kind)
    tol = 1e-15 if dtype == np.float64 else 1e-6
    assert out.dtype == dtype and rel_err(out, ref) < tol
    if kind == "max":
        assert np.array_equal(am, ref_am)
        # the argmax points at the value it reports
        H, W = xs[2], xs[3]
        flat = x.reshape(xs[0], xs[1], H * W)
        assert np.array_equal(np.take_along_axis(flat, am.reshape(xs[0], xs[1], -1), 2).reshape(out.shape),
                              out)


def test_maxpool_ties_pick_first():
    x = np.zeros((1, 1, 4, 6))
    x[0, 0, 0:2, 2:4] = 7.0                   # window (0,1): all four equal -> top-left
    x[0, 0, 2, 5] = x[0, 0, 3, 4] = 3.0       # window (1,2): tie at (2,5) and (3,4) -> (2,5)
    out, am = forward("max", x, 2)
    assert am[0, 0, 0, 0] == 0                 # window of zeros -> its first cell
    assert am[0, 0, 0, 1] == 0 * 6 + 2
    assert am[0, 0, 1, 2] == 2 * 6 + 5
    assert out[0, 0, 0, 1] == 7.0 and out[0, 0, 1, 2] == 3.0
    g = np.zeros_like(x)
    pool.maxpool2d_backward(g, np.ones_like(out), am)
    assert g.sum() == out.size and g[0, 0, 2, 5] == 1 and g[0, 0, 3, 4] == 0


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("xs,k", SHAPES, ids=[f"{s}-k{k}" for s, k in SHAPES])
def test_backward_finite_differences(xs, k, kind):
    rng = np.random.default_rng(2)
    x = tie_free(xs, rng)
    out, am = forward(kind, x, k)
    R = rng.normal(size=out.shape)
    gx = np.zeros_like(x)
    backward(kind, gx, R, k, am)
    loss = lambda: float((forward(kind, x, k)[0] * R).sum())  # noqa: E731
    ok, err = check_grad(loss, x, gx)
    assert ok, f"rel err {err}"
    H, W = xs[2], xs[3]
    assert np.all(gx[:, :, H // k * k:, :] == 0) and np.all(gx[:, :, :, W // k * k:] == 0)  # floored
    assert np.abs(gx).max() > 0


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_checker_rejects_perturbed_gradient(kind):
    rng = np.random.default_rng(3)
    x, k = tie_free((2, 2, 6, 7), rng), 2
    out, am = forward(kind, x, k)
    R = rng.normal(size=out.shape)
    gx = np.zeros_like(x)
    backward(kind, gx, R, k, am)
    loss = lambda: float((forward(kind, x, k)[0] * R).sum())  # noqa: E731
    assert check_grad(loss, x, gx)[0]
    ok, err = check_grad(loss, x, gx * 1.01)
    assert not ok and err > 1e-3


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_backward_accumulates(kind):
    rng = np.random.default_rng(4)
    x, k = tie_free((2, 3, 6, 6), rng), 3
    out, am = forward(kind, x, k)
    R = rng.normal(size=out.shape)
    g1 = np.zeros_like(x)
    backward(kind, g1, R, k, am)
    g2 = np.zeros_like(x)
    backward(kind, g2, R, k, am)
    backward(kind, g2, R, k, am)
    assert np.array_equal(g2, 2 * g1)
    g0 = rng.normal(size=x.shape)
    g3 = g0.copy()
    backward(kind, g3, R, k, am)
    assert np.array_equal(g3, g0 + g1)


def test_threads_bitwise_identical():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    rng = np.random.default_rng(5)
    prev = numba.get_num_threads()
    res = []
    try:
        for dtype in (np.float32, np.float64):
            x = rng.normal(size=(4, 3, 9, 8)).astype(dtype)
            R = rng.normal(size=(4, 3, 3, 2)).astype(dtype)
            per_n = []
            for n in (1, 2):
                numba.set_num_threads(n)
                outs = []
                for kind in ("avg", "max"):
                    out, am = forward(kind, x, 3)
                    gx = np.zeros_like(x)
                    backward(kind, gx, R, 3, am)
                    outs += [out, gx] + ([am] if am is not None else [])
                per_n.append(outs)
            res.append(per_n)
    finally:
        numba.set_num_threads(prev)
    for one, two in res:
        for a, b in zip(one, two):
            assert np.array_equal(a, b)
