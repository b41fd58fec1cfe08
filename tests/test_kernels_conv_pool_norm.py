"""Conv, pooling and BN kernels: forward against NumPy references, backward against finite
differences (float64) with a 1% negative control, fast (im2col + GEMM) path equal to the loops,
accumulation with +=, bitwise equality for 1 and 2 threads, BN folding."""
import numba
import numpy as np
import pytest

import reference
from fdcheck import check_grad, rel_err
from stopnp.kernels import conv, norm, pool

rng = np.random.default_rng(0)


def _conv_out(x, w, s, p):
    B = x.shape[0]
    Ho, Wo = conv.out_size(x.shape[2], w.shape[2], s, p), conv.out_size(x.shape[3], w.shape[2], s, p)
    return np.zeros((B, w.shape[0], Ho, Wo))


@pytest.mark.parametrize("s,p", [(1, 0), (1, 1), (2, 1), (2, 2)])
def test_conv_forward_backward(s, p):
    x = rng.normal(size=(2, 3, 7, 6))
    w = rng.normal(size=(4, 3, 3, 3))
    out = _conv_out(x, w, s, p)
    conv.conv2d_forward(out, x, w, s, p)
    np.testing.assert_allclose(out, reference.conv(x, w, s, p), atol=1e-12)
    R = rng.normal(size=out.shape)
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    conv.conv2d_backward_input(gx, R, w, s, p)
    conv.conv2d_backward_weight(gw, R, x, s, p)

    def loss():
        o = _conv_out(x, w, s, p)
        conv.conv2d_forward(o, x, w, s, p)
        return float((o * R).sum())

    assert check_grad(loss, x, gx)[0] and check_grad(loss, w, gw)[0]
    assert not check_grad(loss, w, gw * 1.01)[0]            # the checker sees a 1% error
    # fast path equals the loop reference; gradients accumulate
    cols = np.zeros(conv.fast_scratch_shapes(x.shape, w.shape[0], 3, 3, s, p, 8)[0])
    out2, gx2, gw2 = np.zeros_like(out), np.zeros_like(x), np.zeros_like(w)
    conv.conv2d_forward_fast(out2, x, w, s, p, cols)
    conv.conv2d_backward_input_fast(gx2, R, w, s, p, cols)
    conv.conv2d_backward_weight_fast(gw2, R, x, s, p, cols)
    conv.conv2d_backward_weight_fast(gw2, R, x, s, p, cols)
    assert rel_err(out2, out) < 1e-13 and rel_err(gx2, gx) < 1e-13 and rel_err(gw2, 2 * gw) < 1e-13


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_pool_forward_backward(kind):
    x = rng.normal(size=(2, 3, 6, 7))  # odd width: floor
    k = 2
    out = np.zeros((2, 3, 3, 3))
    am = np.zeros(out.shape, np.int64)
    fwd = (lambda o, a: pool.avgpool2d_forward(o, a, k, k)) if kind == "avg" else \
        (lambda o, a: pool.maxpool2d_forward(o, am, a, k, k))
    fwd(out, x)
    r = x[:, :, :6, :6].reshape(2, 3, 3, 2, 3, 2)
    np.testing.assert_allclose(out, r.mean(axis=(3, 5)) if kind == "avg" else r.max(axis=(3, 5)))
    R = rng.normal(size=out.shape)
    gx = np.zeros_like(x)
    if kind == "avg":
        pool.avgpool2d_backward(gx, R, k, k)
    else:
        pool.maxpool2d_backward(gx, R, am)

    def loss():
        o = np.zeros_like(out)
        fwd(o, x)
        return float((o * R).sum())

    ok, err = check_grad(loss, x, gx)
    assert ok, err
    assert not check_grad(loss, x, gx * 1.01)[0]
    assert gx[:, :, :, 6].max() == 0  # the floored column gets no gradient


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_forward_backward(train):
    B, C, S = 4, 3, 5
    x = rng.normal(size=(B, C, S)) * 2 + 1
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.normal(size=C)
    rm, rv = rng.normal(size=C), rng.uniform(0.5, 2, C)
    eps = 1e-5
    R = rng.normal(size=x.shape)

    def fwd(xx, gg, bb):
        y = np.zeros_like(xx)
        if train:
            norm.bn_forward_train(y, np.zeros_like(xx), np.zeros(C), np.zeros(C), xx, gg, bb, eps)
        else:
            norm.bn_forward_eval(y, xx, gg, bb, rm, rv, eps)
        return y

    y = fwd(x, gamma, beta)
    ref_y, _ = reference.bn_fwd(x, gamma, beta, rm, rv, train)
    np.testing.assert_allclose(y, ref_y, atol=1e-12)
    gx, gg, gb = np.zeros_like(x), np.zeros(C), np.zeros(C)
    if train:
        xhat, mean, inv = np.zeros_like(x), np.zeros(C), np.zeros(C)
        norm.bn_forward_train(np.zeros_like(x), xhat, mean, inv, x, gamma, beta, eps)
        norm.bn_backward_train(gx, gg, gb, R, xhat, gamma, inv)
    else:
        norm.bn_backward_eval(gx, gg, gb, R, x, gamma, rm, rv, eps)
    loss = lambda: float((fwd(x, gamma, beta) * R).sum())  # noqa: E731
    for arr, g in ((x, gx), (gamma, gg), (beta, gb)):
        ok, err = check_grad(loss, arr, g)
        assert ok, err
    assert not check_grad(loss, x, gx * 1.01)[0]


def test_bn_fold_equals_eval_bn_after_conv():
    x = rng.normal(size=(2, 3, 6, 6))
    w = rng.normal(size=(4, 3, 3, 3))
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.normal(size=4)
    rm, rv = rng.normal(size=4), rng.uniform(0.5, 2, 4)
    z = _conv_out(x, w, 1, 1)
    conv.conv2d_forward(z, x, w, 1, 1)
    y = np.zeros((2, 4, 36))
    norm.bn_forward_eval(y, z.reshape(2, 4, 36), gamma, beta, rm, rv, 1e-5)
    wf, b = norm.bn_fold(w, gamma, beta, rm, rv, 1e-5)
    zf = _conv_out(x, w, 1, 1)
    conv.conv2d_forward(zf, x, wf, 1, 1)
    np.testing.assert_allclose(zf + b[None, :, None, None], y.reshape(zf.shape), atol=1e-12)


def test_conv_threads_bitwise():
    x = rng.normal(size=(8, 4, 12, 12)).astype(np.float32)
    w = rng.normal(size=(6, 4, 3, 3)).astype(np.float32)
    R = rng.normal(size=(8, 6, 12, 12)).astype(np.float32)
    res = []
    for n in (1, 2):
        numba.set_num_threads(n)
        out, gx, gw = np.zeros_like(R), np.zeros_like(x), np.zeros_like(w)
        conv.conv2d_forward(out, x, w, 1, 1)
        conv.conv2d_backward_input(gx, R, w, 1, 1)
        conv.conv2d_backward_weight(gw, R, x, 1, 1)
        res.append((out, gx, gw))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*res):
        assert np.array_equal(a, b)
