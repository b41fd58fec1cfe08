"""Conv kernels (stopnp.kernels.conv).

* forward against an independent NumPy reference (padding + per-tap einsum), float64 and float32,
  square and non-square kernels, stride 1/2/3, pad 0/1/2; forward output is overwritten;
* both backward kernels against central finite differences of L = Σ out·R (float64), with a
  negative control (the same checker rejects a 1%-perturbed gradient);
* gradients accumulate (+=): twice the call, twice the gradient; a non-zero start is kept;
* the im2col + GEMM fast path equals the loop reference (1e-12 float64, 1e-5 float32) on random
  shapes, for whole-image bands and for bands of one output row, more samples than weight-gradient
  groups included; the fused backward is bitwise the same as the two separate calls; im2col and
  col2im_add are adjoint; ``band_rows`` keeps the lowered band within its byte budget;
* the event-driven forward (sparse input: spikes) is bitwise the loop reference, each sample taking its
  own path by its density; the GEMM alone (max_density=-1) stays within tolerance;
* bitwise-identical results for 1 and 2 numba threads (loop references and the fast path).
"""
import numba
import numpy as np
import pytest

from fdcheck import check_grad, rel_err
from stopnp.kernels import conv


def ref_conv(x, w, s, p):
    """Slow independent reference: out = Σ_{u,v} W[:,:,u,v] · (padded x shifted by (u,v), strided)."""
    B, Ci, H, W = x.shape
    Co, _, KH, KW = w.shape
    Ho, Wo = (H + 2 * p - KH) // s + 1, (W + 2 * p - KW) // s + 1
    xp = np.zeros((B, Ci, H + 2 * p, W + 2 * p), np.float64)
    xp[:, :, p:p + H, p:p + W] = x
    out = np.zeros((B, Co, Ho, Wo))
    for u in range(KH):
        for v in range(KW):
            patch = xp[:, :, u:u + s * (Ho - 1) + 1:s, v:v + s * (Wo - 1) + 1:s]
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, u, v].astype(np.float64))
    return out


def out_shape(x_shape, w_shape, s, p):
    return (x_shape[0], w_shape[0], conv.out_size(x_shape[2], w_shape[2], s, p),
            conv.out_size(x_shape[3], w_shape[3], s, p))


# (x shape, w shape, stride, pad): square / non-square kernels, stride 1-3, pad 0-2, odd sizes
CASES = [
    ((2, 3, 6, 5), (4, 3, 3, 3), 1, 0),
    ((2, 3, 6, 5), (4, 3, 3, 3), 1, 1),
    ((2, 2, 7, 6), (3, 2, 3, 2), 2, 1),
    ((1, 3, 5, 7), (2, 3, 2, 3), 2, 2),
    ((2, 2, 8, 7), (3, 2, 3, 3), 3, 2),
    ((3, 1, 4, 4), (2, 1, 1, 1), 2, 0),
]
IDS = [f"x{c[0]}-w{c[1]}-s{c[2]}-p{c[3]}" for c in CASES]


def fwd(x, w, s, p):
    out = np.empty(out_shape(x.shape, w.shape, s, p), x.dtype)
    conv.conv2d_forward(out, x, w, s, p)
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("xs,ws,s,p", CASES, ids=IDS)
def test_forward_matches_reference(xs, ws, s, p, dtype):
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=xs).astype(dtype), rng.normal(size=ws).astype(dtype)
    out = np.full(out_shape(xs, ws, s, p), np.nan, dtype)  # garbage in: forward overwrites
    conv.conv2d_forward(out, x, w, s, p)
    assert out.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert rel_err(out, ref_conv(x, w, s, p)) < tol


@pytest.mark.parametrize("xs,ws,s,p", CASES, ids=IDS)
def test_backward_finite_differences(xs, ws, s, p):
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=xs), rng.normal(size=ws)
    R = rng.normal(size=out_shape(xs, ws, s, p))
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    conv.conv2d_backward_input(gx, R, w, s, p)
    conv.conv2d_backward_weight(gw, R, x, s, p)
    loss = lambda: float((fwd(x, w, s, p) * R).sum())  # noqa: E731
    ok, err = check_grad(loss, x, gx)
    assert ok, f"input gradient rel err {err}"
    ok, err = check_grad(loss, w, gw)
    assert ok, f"weight gradient rel err {err}"
    assert np.abs(gx).max() > 0 and np.abs(gw).max() > 0  # non-vacuous


def test_checker_rejects_perturbed_gradient():
    """Negative control: the same checker must fail on a gradient that is off by 1%."""
    rng = np.random.default_rng(3)
    xs, ws, s, p = CASES[2]
    x, w = rng.normal(size=xs), rng.normal(size=ws)
    R = rng.normal(size=out_shape(xs, ws, s, p))
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    conv.conv2d_backward_input(gx, R, w, s, p)
    conv.conv2d_backward_weight(gw, R, x, s, p)
    loss = lambda: float((fwd(x, w, s, p) * R).sum())  # noqa: E731
    assert check_grad(loss, x, gx)[0] and check_grad(loss, w, gw)[0]
    ok, err = check_grad(loss, x, gx * 1.01)
    assert not ok and err > 1e-3
    ok, err = check_grad(loss, w, gw * 1.01)
    assert not ok and err > 1e-3


@pytest.mark.parametrize("fast", [False, True], ids=["loop", "fast"])
def test_backward_accumulates(fast):
    rng = np.random.default_rng(4)
    xs, ws, s, p = CASES[3]
    x, w = rng.normal(size=xs), rng.normal(size=ws)
    R = rng.normal(size=out_shape(xs, ws, s, p))
    cols = _cols(xs, ws, s, p, np.float64)

    def bwd(gx, gw):
        if fast:
            conv.conv2d_backward_input_fast(gx, R, w, s, p, cols)
            conv.conv2d_backward_weight_fast(gw, R, x, s, p, cols)
        else:
            conv.conv2d_backward_input(gx, R, w, s, p)
            conv.conv2d_backward_weight(gw, R, x, s, p)

    gx1, gw1 = np.zeros_like(x), np.zeros_like(w)
    bwd(gx1, gw1)
    gx2, gw2 = np.zeros_like(x), np.zeros_like(w)
    bwd(gx2, gw2)
    bwd(gx2, gw2)
    assert rel_err(gx2, 2 * gx1) < 1e-14 and rel_err(gw2, 2 * gw1) < 1e-14
    gx0, gw0 = rng.normal(size=xs), rng.normal(size=ws)  # a non-zero start is kept
    gx3, gw3 = gx0.copy(), gw0.copy()
    bwd(gx3, gw3)
    assert rel_err(gx3, gx0 + gx1) < 1e-14 and rel_err(gw3, gw0 + gw1) < 1e-14


def _cols(xs, ws, s, p, dtype):
    return np.empty(conv.fast_scratch_shapes(xs, ws[0], ws[2], ws[3], s, p, np.dtype(dtype).itemsize)[0], dtype)


def _random_cases(n, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        B, Ci, Co = rng.integers(1, 4), rng.integers(1, 5), rng.integers(1, 5)
        KH, KW = rng.integers(1, 4), rng.integers(1, 4)
        s, p = int(rng.integers(1, 3)), int(rng.integers(0, 3))
        H, W = rng.integers(3, 10), rng.integers(3, 10)
        if H + 2 * p < KH or W + 2 * p < KW:
            continue
        cases.append(((int(B), int(Ci), int(H), int(W)), (int(Co), int(Ci), int(KH), int(KW)), s, p))
    # make sure the required corners are covered
    cases += [((2, 3, 9, 8), (4, 3, 3, 3), 2, 0), ((2, 3, 9, 8), (4, 3, 3, 3), 2, 1),
              ((2, 3, 9, 8), (4, 3, 3, 3), 2, 2), ((11, 2, 6, 5), (3, 2, 3, 3), 1, 1)]  # 11 > 8 groups
    return cases


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("tiles", ["whole", "one-row-bands", "forward-one-row-bands"])
def test_fast_path_equals_loop_reference(dtype, tol, tiles, monkeypatch):
    if tiles != "whole":  # one output row per GEMM: exercises the band walk and ragged ends
        monkeypatch.setattr(conv, "FWD_TILE_BYTES", 1)
    if tiles == "one-row-bands":
        monkeypatch.setattr(conv, "TILE_BYTES", 1)
    rng = np.random.default_rng(5)
    for xs, ws, s, p in _random_cases(10, seed=6):
        x, w = rng.normal(size=xs).astype(dtype), rng.normal(size=ws).astype(dtype)
        os_ = out_shape(xs, ws, s, p)
        R = rng.normal(size=os_).astype(dtype)
        cols = _cols(xs, ws, s, p, dtype)
        out, out_f = np.empty(os_, dtype), np.full(os_, np.nan, dtype)
        conv.conv2d_forward(out, x, w, s, p)
        conv.conv2d_forward_fast(out_f, x, w, s, p, cols)
        gx, gx_f = np.zeros_like(x), np.zeros_like(x)
        conv.conv2d_backward_input(gx, R, w, s, p)
        conv.conv2d_backward_input_fast(gx_f, R, w, s, p, cols)
        gw, gw_f, gw_s = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
        conv.conv2d_backward_weight(gw, R, x, s, p)
        conv.conv2d_backward_weight_fast(gw_f, R, x, s, p, cols)
        wshape = conv.fast_scratch_shapes(xs, ws[0], ws[2], ws[3], s, p, np.dtype(dtype).itemsize)[1]
        conv.conv2d_backward_weight_fast(gw_s, R, x, s, p, cols, np.full(wshape, np.nan, dtype))
        case = (xs, ws, s, p)
        assert out_f.dtype == gx_f.dtype == gw_f.dtype == dtype
        assert rel_err(out_f, out) < tol, case
        assert rel_err(gx_f, gx) < tol, case
        assert rel_err(gw_f, gw) < tol, case
        assert np.array_equal(gw_s, gw_f), case  # caller scratch (NaN-filled: it is overwritten) or own
        # both gradients in one call: the same GEMMs in the same order, so bitwise the same
        gx_c, gw_c = np.zeros_like(x), np.zeros_like(w)
        conv.conv2d_backward_fast(gx_c, gw_c, R, w, x, s, p, cols)
        assert np.array_equal(gx_c, gx_f) and np.array_equal(gw_c, gw_f), case


def _sparse(rng, shape, density, dtype):
    """Spike-like input: mostly 0, some 1, a few analog values (pooled spikes), exactly 0 elsewhere."""
    x = (rng.random(shape) < density).astype(dtype)
    x[rng.random(shape) < density / 4] = 0.25
    return x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tiles", ["whole", "forward-one-row-bands"])
def test_event_forward_is_the_reference_sum(dtype, tiles, monkeypatch):
    """The event-driven forward adds the nonzero terms in the loop reference's (c, u, v) order, and the
    skipped terms are exact zeros: it is bitwise the loop reference. With the default threshold each
    sample takes its own path: sparse samples the event sum, dense ones the GEMM."""
    if tiles != "whole":
        monkeypatch.setattr(conv, "FWD_TILE_BYTES", 1)
    rng = np.random.default_rng(11)
    paths = {"events": 0, "gemm": 0}
    for xs, ws, s, p in _random_cases(12, seed=12) + [((3, 6, 14, 14), (16, 6, 5, 5), 1, 0),
                                                      ((2, 8, 12, 12), (16, 8, 3, 3), 1, 1)]:
        x, w = _sparse(rng, xs, 0.1, dtype), rng.normal(size=ws).astype(dtype)
        x[:, 0, 0, 0] = 1  # never an all-zero sample
        case = (xs, ws, s, p)
        os_ = out_shape(xs, ws, s, p)
        out, out_e = np.empty(os_, dtype), np.full(os_, np.nan, dtype)
        conv.conv2d_forward(out, x, w, s, p)
        cols = _cols(xs, ws, s, p, dtype)
        wt = np.full((ws[1] * ws[2] * ws[3], ws[0]), np.nan, dtype)  # overwritten with W₂ᵀ
        conv.conv2d_forward_fast(out_e, x, w, s, p, cols, wt, max_density=1.0)  # every sample by events
        assert np.array_equal(out_e, out), case
        assert rel_err(out, ref_conv(x, w, s, p)) < (1e-12 if dtype == np.float64 else 1e-5), case
        # default threshold, sample 0 made dense: each sample takes the path its own density picks
        x[0] = rng.normal(size=xs[1:])
        out_m, out_r = np.empty(os_, dtype), np.empty(os_, dtype)
        conv.conv2d_forward_fast(out_m, x, w, s, p, cols)
        conv.conv2d_forward(out_r, x, w, s, p)
        for b in range(xs[0]):
            if np.count_nonzero(x[b]) <= conv.EVENT_DENSITY * x[b].size:
                paths["events"] += 1
                assert np.array_equal(out_m[b], out_r[b]), case
            else:
                paths["gemm"] += 1
                assert rel_err(out_m[b], out_r[b]) < (1e-12 if dtype == np.float64 else 1e-5), case
        out_g = np.empty(os_, dtype)  # max_density=-1: the GEMM alone, even for sparse input
        conv.conv2d_forward_fast(out_g, x, w, s, p, cols, max_density=-1)
        assert rel_err(out_g, out_r) < (1e-12 if dtype == np.float64 else 1e-5), case
    assert paths["events"] >= 5 and paths["gemm"] >= 14, paths  # both paths taken, not vacuous


def test_im2col_col2im_adjoint_and_layout():
    rng = np.random.default_rng(7)
    xs, KH, KW, s, p = (2, 3, 7, 6), 3, 2, 2, 1
    x = rng.normal(size=xs)
    cols = np.full(conv.im2col_shape(xs, KH, KW, s, p), np.nan)  # overwritten, padding -> 0
    conv.im2col(cols, x, KH, KW, s, p)
    Ho, Wo = conv.out_size(7, KH, s, p), conv.out_size(6, KW, s, p)
    assert cols.shape == (2, 3 * KH * KW, Ho * Wo)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    for c, u, v, i, j in [(0, 0, 0, 0, 0), (2, 2, 1, Ho - 1, Wo - 1), (1, 1, 0, 2, 1)]:
        assert cols[1, (c * KH + u) * KW + v, i * Wo + j] == xp[1, c, s * i + u, s * j + v]
    C = rng.normal(size=cols.shape)
    gx = np.zeros_like(x)
    conv.col2im_add(gx, C, KH, KW, s, p)
    assert abs((cols * C).sum() - (x * gx).sum()) < 1e-12 * np.abs(cols * C).sum()


def test_fast_path_rejects_bad_buffers():
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
    out = np.zeros((1, 3, 3, 3))
    cols = _cols(x.shape, w.shape, 1, 0, np.float64)
    slots, n = cols.shape
    with pytest.raises(ValueError, match="fast_scratch_shapes"):
        conv.conv2d_forward_fast(out, x, w, 1, 0, np.zeros((slots, n - 1)))  # wrong band size
    with pytest.raises(ValueError, match="numba threads"):
        conv.conv2d_forward_fast(out, x, w, 1, 0, np.zeros((slots - 1, n)))  # a slot per thread
    with pytest.raises(ValueError, match="float64"):
        conv.conv2d_forward_fast(out, x, w, 1, 0, np.zeros((slots, n), np.float32))  # dtype
    with pytest.raises(ValueError, match="scratch"):  # the per-chunk (2, K, Co) layout is refused
        conv.conv2d_backward_weight_fast(np.zeros_like(w), out, x, 1, 0, cols, np.zeros((2, 18, 3)))
    with pytest.raises(ValueError, match="dtype"):
        conv.conv2d_forward_fast(out, x.astype(np.float32), w, 1, 0, cols)
    with pytest.raises(ValueError, match="wt is"):  # W₂ᵀ for the event-driven forward: (Ci·KH·KW, Co)
        conv.conv2d_forward_fast(out, x, w, 1, 0, cols, np.zeros((3, 18)))
    big = np.zeros((1, 3, 3, 6))
    with pytest.raises(ValueError):
        conv.conv2d_forward_fast(big[..., :3], x, w, 1, 0, cols)  # out not reshapable as a view
    view = big[..., ::2]  # strided, but its (Ho, Wo) axes merge into a view: accepted
    conv.conv2d_forward_fast(view, x + 1, w + 1, 1, 0, cols)
    assert np.all(view == 18) and np.all(big[..., 1::2] == 0)


@pytest.mark.parametrize("xs,ws,s,p", [((5, 3, 9, 8), (4, 3, 3, 2), 2, 1),  # im2col lowering
                                        ((5, 3, 9, 8), (4, 3, 3, 2), 1, 1),  # wide lowering, padded
                                        ((5, 3, 9, 8), (4, 3, 3, 2), 1, 0)], ids=["s2p1", "s1p1", "s1p0"])
def test_threads_bitwise_identical(xs, ws, s, p):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    rng = np.random.default_rng(8)
    results = []
    prev = numba.get_num_threads()
    try:
        for dtype in (np.float32, np.float64):
            x, w = rng.normal(size=xs).astype(dtype), rng.normal(size=ws).astype(dtype)
            R = rng.normal(size=out_shape(xs, ws, s, p)).astype(dtype)
            xe = _sparse(rng, (11, *xs[1:]), 0.1, dtype)  # event-driven forward
            per_n = []
            for n in (1, 2):
                numba.set_num_threads(n)
                out = np.empty(R.shape, dtype)
                gx, gw = np.zeros_like(x), np.zeros_like(w)
                conv.conv2d_forward(out, x, w, s, p)
                conv.conv2d_backward_input(gx, R, w, s, p)
                conv.conv2d_backward_weight(gw, R, x, s, p)
                cols = np.empty(conv.im2col_shape(xs, ws[2], ws[3], s, p), dtype)
                conv.im2col(cols, x, ws[2], ws[3], s, p)
                gx2 = np.zeros_like(x)
                conv.col2im_add(gx2, cols, ws[2], ws[3], s, p)
                fcols = _cols(xs, ws, s, p, dtype)  # fast path: 11 samples in 8 weight-gradient groups
                xb, Rb = np.concatenate([x, x, x[:1]]), np.concatenate([R, 2 * R, R[:1]])
                outb, gxb, gwb = np.empty(Rb.shape, dtype), np.zeros_like(xb), np.zeros_like(w)
                conv.conv2d_forward_fast(outb, xb, w, s, p, fcols)
                conv.conv2d_backward_fast(gxb, gwb, Rb, w, xb, s, p, fcols)
                oute = np.empty(Rb.shape, dtype)
                conv.conv2d_forward_fast(oute, xe, w, s, p, fcols, max_density=1.0)
                per_n.append((out, gx, gw, cols, gx2, outb, gxb, gwb, oute))
            results.append(per_n)
    finally:
        numba.set_num_threads(prev)
    for one, two in results:
        for a, b in zip(one, two):
            assert np.array_equal(a, b)


def test_band_rows_budget(monkeypatch):
    xs = (16, 64, 32, 32)
    _, K, P = conv.im2col_shape(xs, 3, 3, 1, 1)
    assert conv.band_rows(xs, 3, 3, 1, 1) == 32  # VGG's 64-channel layer: the whole image in one band
    monkeypatch.setattr(conv, "TILE_BYTES", 256 << 10)
    rows = conv.band_rows(xs, 3, 3, 1, 1)
    Wp = 34  # stride 1: the wide lowering's rows are the padded image's
    assert 1 <= rows < 32 and K * rows * Wp * 4 <= conv.TILE_BYTES < K * (rows + 1) * Wp * 4
    assert conv.band_rows((2, 512, 64, 64), 3, 3, 1, 1) == 1  # one row over budget: still 1
    (slots, n), wshape = conv.fast_scratch_shapes(xs, 64, 3, 3, 1, 1)
    assert slots == numba.config.NUMBA_NUM_THREADS and n == (K + 64) * rows * Wp + 2 * 64 * Wp * Wp
    (_, n2), _ = conv.fast_scratch_shapes(xs, 64, 3, 3, 2, 1)  # stride 2: rows of Wo, no padded images
    assert n2 == (K + 64) * conv.band_rows(xs, 3, 3, 2, 1) * 16
    assert wshape == (8 + slots, K, 64)  # 8 weight-gradient groups for 16 samples, one GEMM slot per thread
