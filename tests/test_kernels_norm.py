"""BatchNorm kernels (stopnp.kernels.norm) over (B, C, S) views.

* train / eval forward against NumPy references (mean, biased variance, invstd outputs too),
  float64 and float32, S > 1 (conv) and S = 1 (dense);
* exact backward (train: through the batch statistics; eval: running stats constant) against
  central finite differences of L = Σ y·R for x, γ and β (float64), with a negative control;
* all three gradient outputs accumulate (+=); bitwise-identical results for 1 and 2 threads;
* folding: conv with the folded weight + bias equals BN_eval(conv(x)) (and the same for dense).
"""
import numba
import numpy as np
import pytest

from fdcheck import check_grad, rel_err
from stopnp.kernels import conv, norm

EPS = 1e-5


def ref_train(x, gamma, beta, eps=EPS):
    x = x.astype(np.float64)
    mean = x.mean(axis=(0, 2))
    var = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    return gamma[None, :, None] * xhat + beta[None, :, None], xhat, mean, invstd


def ref_eval(x, gamma, beta, rm, rv, eps=EPS):
    return (gamma[None, :, None] * (x - rm[None, :, None]) / np.sqrt(rv[None, :, None] + eps)
            + beta[None, :, None])


def setup(shape, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (rng.normal(size=shape) * 2 + 1).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
    beta = rng.normal(size=C).astype(dtype)
    rm = rng.normal(size=C).astype(dtype)
    rv = rng.uniform(0.5, 2.0, C).astype(dtype)
    R = rng.normal(size=shape).astype(dtype)
    return x, gamma, beta, rm, rv, R


def train_fwd(x, gamma, beta):
    C = x.shape[1]
    y, xhat = np.empty_like(x), np.empty_like(x)
    mean, invstd = np.empty(C, x.dtype), np.empty(C, x.dtype)
    norm.bn_forward_train(y, xhat, mean, invstd, x, gamma, beta, EPS)
    return y, xhat, mean, invstd


def eval_fwd(x, gamma, beta, rm, rv):
    y = np.empty_like(x)
    norm.bn_forward_eval(y, x, gamma, beta, rm, rv, EPS)
    return y


SHAPES = [(4, 3, 5), (6, 4, 1)]  # conv-like (S = H·W) and dense (S = 1)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=["S5", "S1"])
def test_forward_matches_reference(shape, dtype, tol):
    x, gamma, beta, rm, rv, _ = setup(shape, 1, dtype)
    y, xhat, mean, invstd = (np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype),
                             np.full(shape[1], np.nan, dtype), np.full(shape[1], np.nan, dtype))
    norm.bn_forward_train(y, xhat, mean, invstd, x, gamma, beta, EPS)
    ry, rxhat, rmean, rinv = ref_train(x, gamma, beta)
    for a, b in ((y, ry), (xhat, rxhat), (mean, rmean), (invstd, rinv)):
        assert a.dtype == dtype and rel_err(a, b) < tol
    ye = np.full(shape, np.nan, dtype)
    norm.bn_forward_eval(ye, x, gamma, beta, rm, rv, EPS)
    assert ye.dtype == dtype and rel_err(ye, ref_eval(x, gamma, beta, rm, rv)) < tol


def _grads(train, x, gamma, beta, rm, rv, R, gx=None, gg=None, gb=None):
    gx = np.zeros_like(x) if gx is None else gx
    gg = np.zeros_like(gamma) if gg is None else gg
    gb = np.zeros_like(beta) if gb is None else gb
    if train:
        _, xhat, _, invstd = train_fwd(x, gamma, beta)
        norm.bn_backward_train(gx, gg, gb, R, xhat, gamma, invstd)
    else:
        norm.bn_backward_eval(gx, gg, gb, R, x, gamma, rm, rv, EPS)
    return gx, gg, gb


def _loss(train, x, gamma, beta, rm, rv, R):
    if train:
        return lambda: float((train_fwd(x, gamma, beta)[0] * R).sum())
    return lambda: float((eval_fwd(x, gamma, beta, rm, rv) * R).sum())


@pytest.mark.parametrize("shape", SHAPES, ids=["S5", "S1"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_backward_finite_differences(train, shape):
    x, gamma, beta, rm, rv, R = setup(shape, 2)
    gx, gg, gb = _grads(train, x, gamma, beta, rm, rv, R)
    loss = _loss(train, x, gamma, beta, rm, rv, R)
    for name, arr, g in (("x", x, gx), ("gamma", gamma, gg), ("beta", beta, gb)):
        ok, err = check_grad(loss, arr, g)
        assert ok, f"{name}: rel err {err}"
    if train:  # batch statistics: gx sums to 0 per channel (mean-invariance)
        assert np.abs(gx.sum(axis=(0, 2))).max() < 1e-12 * np.abs(gx).sum()


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_checker_rejects_perturbed_gradient(train):
    x, gamma, beta, rm, rv, R = setup((4, 3, 5), 3)
    gx, gg, gb = _grads(train, x, gamma, beta, rm, rv, R)
    loss = _loss(train, x, gamma, beta, rm, rv, R)
    for arr, g in ((x, gx), (gamma, gg), (beta, gb)):
        assert check_grad(loss, arr, g)[0]
        ok, err = check_grad(loss, arr, g * 1.01)
        assert not ok and err > 1e-3


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_backward_accumulates(train):
    x, gamma, beta, rm, rv, R = setup((4, 3, 5), 4)
    g1 = _grads(train, x, gamma, beta, rm, rv, R)
    g2 = _grads(train, x, gamma, beta, rm, rv, R)
    g2 = _grads(train, x, gamma, beta, rm, rv, R, *g2)
    for a, b in zip(g1, g2):
        assert np.array_equal(b, 2 * a)
    rng = np.random.default_rng(5)
    g0 = (rng.normal(size=x.shape), rng.normal(size=gamma.shape), rng.normal(size=beta.shape))
    g3 = _grads(train, x, gamma, beta, rm, rv, R, *(a.copy() for a in g0))
    for a, b, c in zip(g1, g3, g0):
        assert np.array_equal(b, c + a)


def test_threads_bitwise_identical():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    prev = numba.get_num_threads()
    res = []
    try:
        for dtype in (np.float32, np.float64):
            x, gamma, beta, rm, rv, R = setup((8, 5, 12), 6, dtype)
            per_n = []
            for n in (1, 2):
                numba.set_num_threads(n)
                outs = list(train_fwd(x, gamma, beta)) + [eval_fwd(x, gamma, beta, rm, rv)]
                outs += _grads(True, x, gamma, beta, rm, rv, R) + _grads(False, x, gamma, beta, rm, rv, R)
                per_n.append(outs)
            res.append(per_n)
    finally:
        numba.set_num_threads(prev)
    for one, two in res:
        for a, b in zip(one, two):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("s,p", [(1, 1), (2, 0)])
def test_fold_conv_equals_eval_bn_after_conv(s, p):
    rng = np.random.default_rng(7)
    x, w = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(4, 3, 3, 2))
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.normal(size=4)
    rm, rv = rng.normal(size=4), rng.uniform(0.5, 2.0, 4)
    Ho, Wo = conv.out_size(7, 3, s, p), conv.out_size(6, 2, s, p)
    z = np.empty((2, 4, Ho, Wo))
    conv.conv2d_forward(z, x, w, s, p)
    y = eval_fwd(z.reshape(2, 4, Ho * Wo), gamma, beta, rm, rv).reshape(z.shape)
    wf, b = norm.bn_fold(w, gamma, beta, rm, rv, EPS)
    assert wf.shape == w.shape and b.shape == (4,) and wf.dtype == b.dtype == w.dtype
    zf = np.empty_like(z)
    conv.conv2d_forward(zf, x, wf, s, p)
    assert rel_err(zf + b[None, :, None, None], y) < 1e-12
    assert not np.shares_memory(wf, w)


def test_fold_dense_and_float32():
    rng = np.random.default_rng(8)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        x, w = rng.normal(size=(5, 6)).astype(dtype), rng.normal(size=(4, 6)).astype(dtype)
        gamma, beta = rng.uniform(0.5, 1.5, 4).astype(dtype), rng.normal(size=4).astype(dtype)
        rm, rv = rng.normal(size=4).astype(dtype), rng.uniform(0.5, 2.0, 4).astype(dtype)
        z = x @ w.T
        y = eval_fwd(np.ascontiguousarray(z[:, :, None]), gamma, beta, rm, rv)[:, :, 0]
        wf, b = norm.bn_fold(w, gamma, beta, rm, rv, EPS)
        assert wf.dtype == b.dtype == dtype
        assert rel_err(x @ wf.T + b, y) < tol
