"""Winograd F(2×2, 3×3) convolutions equal the loop reference kernels (kernels/conv.py)."""
import numba
import numpy as np
import pytest

from stopnp.kernels import conv as kconv
from stopnp.kernels import winograd as kwino

SHAPES = [(3, 2, 3, 6, 6), (2, 3, 4, 5, 7), (4, 5, 2, 1, 3), (9, 16, 17, 8, 8)]  # B, Ci, Co, H, W


def _case(B, Ci, Co, H, W, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, Ci, H, W)).astype(dtype)
    w = rng.standard_normal((Co, Ci, 3, 3)).astype(dtype)
    g = rng.standard_normal((B, Co, H, W)).astype(dtype)
    return x, w, g


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_equal_the_loop_reference(shape, dtype, tol):
    B, Ci, Co, H, W = shape
    x, w, g = _case(*shape, dtype)
    scratch = kwino.make_scratch(B, Ci, Co, H, W, dtype)
    ref = np.zeros((B, Co, H, W), dtype)
    kconv.conv2d_forward(ref, x, w, 1, 1)
    out = np.full_like(ref, 7.0)  # overwritten
    kwino.conv3x3_forward(out, x, w, scratch)
    gx0, gw0 = np.full_like(x, 0.5), np.full_like(w, -0.25)  # gradients accumulate onto what is there
    gx_ref, gw_ref = gx0.copy(), gw0.copy()
    kconv.conv2d_backward_input(gx_ref, g, w, 1, 1)
    kconv.conv2d_backward_weight(gw_ref, g, x, 1, 1)
    gx, gw = gx0.copy(), gw0.copy()
    kwino.conv3x3_backward(gx, gw, g, w, x, scratch)
    for got, want in ((out, ref), (gx, gx_ref), (gw, gw_ref)):
        assert got.dtype == dtype
        assert np.abs(got - want).max() <= tol * np.abs(want).max()
    gx1 = gx0.copy()
    kwino.conv3x3_backward(gx1, None, g, w, None, scratch)  # input gradient alone
    gw1 = gw0.copy()
    kwino.conv3x3_backward(None, gw1, g, None, x, scratch)  # weight gradient alone
    assert np.array_equal(gx1, gx) and np.array_equal(gw1, gw)
    bad = gw.copy()
    bad[0, 0, 1, 1] *= 1.01  # the comparison would catch a 1 % error in one tap
    assert np.abs(bad - gw_ref).max() > tol * np.abs(gw_ref).max()


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_one_and_two_threads_bitwise_equal():
    B, Ci, Co, H, W = 11, 16, 16, 8, 6  # more samples than weight-gradient groups
    x, w, g = _case(B, Ci, Co, H, W, np.float32, seed=3)
    res = []
    for n in (1, 2):
        numba.set_num_threads(n)
        scratch = kwino.make_scratch(B, Ci, Co, H, W, np.float32)
        out, gx, gw = np.zeros_like(g), np.zeros_like(x), np.zeros_like(w)
        kwino.conv3x3_forward(out, x, w, scratch)
        kwino.conv3x3_backward(gx, gw, g, w, x, scratch)
        res.append((out, gx, gw))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*res):
        assert np.array_equal(a, b)


def test_eligibility_and_bad_scratch():
    assert kwino.eligible((64, 32, 32), 64, 3, 1, 1)
    assert not kwino.eligible((3, 32, 32), 64, 3, 1, 1)  # the first VGG layer: too few channels
    assert not kwino.eligible((64, 32, 32), 64, 3, 2, 1) and not kwino.eligible((64, 32, 32), 64, 5, 1, 2)
    x, w, _ = _case(2, 3, 4, 6, 6, np.float32)
    out = np.zeros((2, 4, 6, 6), np.float32)
    with pytest.raises(ValueError, match="make_scratch"):
        kwino.conv3x3_forward(out, x, w, kwino.make_scratch(2, 3, 4, 8, 8, np.float32))
    with pytest.raises(ValueError, match="make_scratch"):
        kwino.conv3x3_forward(out, x, w, kwino.make_scratch(2, 3, 4, 6, 6, np.float64))
