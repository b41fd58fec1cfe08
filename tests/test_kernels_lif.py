"""LIF kernels: surrogates are derivatives of the smooth spike, BPTT backward equals finite
differences of the smooth forward (every surrogate, soft and hard reset), STOP traces follow Eq. 20/26/30."""
import numba
import numpy as np
import pytest

from fdcheck import check_grad, rel_err
from stopnp.kernels import lif

SURR = list(lif.SURROGATES)


def _run(I, theta, alpha, hard, kind, smooth=True):
    T, B, N = I.shape
    u, s, v = np.zeros((T, B, N), I.dtype), np.zeros((T, B, N), I.dtype), np.zeros((B, N), I.dtype)
    vprev = np.zeros((T, B, N), I.dtype)
    for t in range(T):
        vprev[t] = v
        lif.lif_forward(u[t], s[t], v, I[t], alpha, theta, hard, smooth, kind)
    return u, s, vprev


def _backward(R, I, theta, alpha, hard, kind, keep_reset=True):
    u, s, vprev = _run(I, theta, alpha, hard, kind)
    T, B, N = I.shape
    e = np.zeros((B, N), I.dtype)
    gI = np.zeros_like(I)
    gth, gal = np.zeros(N, I.dtype), np.zeros(N, I.dtype)
    for t in range(T - 1, -1, -1):
        lif.lif_bptt_backward(e, gth, gal, R[t], u[t], s[t], vprev[t], alpha, theta, hard, keep_reset, kind)
        gI[t] = e
    return gI, gth, gal.sum()


def _setup(seed=0, T=5, B=3, N=4):
    rng = np.random.default_rng(seed)
    I = rng.uniform(0.0, 1.6, (T, B, N))
    theta = rng.uniform(0.8, 1.2, N)
    R = rng.normal(size=(T, B, N))
    return I, theta, 0.6, R


@pytest.mark.parametrize("kind", SURR)
def test_smooth_step_derivative_is_surrogate(kind):
    code = lif.SURROGATES[kind]
    z = np.linspace(-2.3, 2.3, 37) + 0.013  # avoid the kinks of triangle/rectangle
    h = 1e-6
    fd = np.array([(lif.smooth_step(v + h, code) - lif.smooth_step(v - h, code)) / (2 * h) for v in z])
    an = np.array([lif.surrogate(v, code) for v in z])
    assert rel_err(fd, an) < 1e-7
    assert an.max() > 0.5  # non-vacuous: the surrogate is not identically zero


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("kind", SURR)
def test_bptt_kernel_matches_finite_differences(kind, hard):
    code = lif.SURROGATES[kind]
    I, theta, alpha, R = _setup()
    loss = lambda: float((R * _run(I, theta, alpha, hard, code)[1]).sum())  # noqa: E731
    gI, gth, gal = _backward(R, I, theta, alpha, hard, code)
    ok, err = check_grad(loss, I, gI, rtol=1e-6)
    assert ok, err
    ok, err = check_grad(loss, theta, gth, rtol=1e-6)
    assert ok, err
    a = np.array([alpha])
    loss_a = lambda: float((R * _run(I, theta, a[0], hard, code)[1]).sum())  # noqa: E731
    ok, err = check_grad(loss_a, a, np.array([gal]), rtol=1e-6)
    assert ok, err
    assert np.abs(gI).max() > 0 and np.abs(gth).max() > 0 and gal != 0


def test_checker_catches_one_percent_error():
    code = lif.SURROGATES["exp"]
    I, theta, alpha, R = _setup(1)
    loss = lambda: float((R * _run(I, theta, alpha, False, code)[1]).sum())  # noqa: E731
    gI, gth, gal = _backward(R, I, theta, alpha, False, code)
    assert check_grad(loss, I, gI)[0]
    ok, err = check_grad(loss, I, gI * 1.01)
    assert not ok and err > 1e-3
    ok, _ = check_grad(loss, theta, gth * 1.01)
    assert not ok
    a = np.array([alpha])
    loss_a = lambda: float((R * _run(I, theta, a[0], False, code)[1]).sum())  # noqa: E731
    assert check_grad(loss_a, a, np.array([gal]))[0]
    assert not check_grad(loss_a, a, np.array([gal * 1.01]))[0]


def test_detached_reset_differs_from_kept_reset():
    code = lif.SURROGATES["exp"]
    I, theta, alpha, R = _setup(2)
    kept = _backward(R, I, theta, alpha, False, code, keep_reset=True)[0]
    detached = _backward(R, I, theta, alpha, False, code, keep_reset=False)[0]
    assert rel_err(kept, detached) > 1e-3


def test_heaviside_spikes_and_soft_reset():
    I = np.array([[[0.7, 1.5]], [[0.7, 0.2]], [[0.7, 0.0]]])
    u, s, _ = _run(I, np.array([1.0, 1.0]), 0.5, False, 0, smooth=False)
    # neuron 0: U = 0.7, 1.05 (spike, V = 0.05), 0.725; neuron 1: U = 1.5 (spike, V = .5), .45, .225
    np.testing.assert_allclose(u[:, 0, 0], [0.7, 1.05, 0.725])
    np.testing.assert_array_equal(s[:, 0, 0], [0, 1, 0])
    np.testing.assert_allclose(u[:, 0, 1], [1.5, 0.45, 0.225])
    np.testing.assert_array_equal(s[:, 0, 1], [1, 0, 0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spike_when_u_equals_theta_exactly(dtype):
    """H(0) = 1 (s = H(U - θ), lif.py: H(z) = 1 for z >= 0): U = θ fires, U one ulp below θ does not;
    in lif_forward, the STOP loop reference and its fast path. Step 2 reaches U = 0.5·0.5 + 0.75 = θ
    by charging (binary-exact values)."""
    below = np.nextafter(dtype(1.0), dtype(0.0))
    I = np.array([[[1.0, 0.75, below, 0.5]], [[0.0, 0.0, 0.0, 0.75]]], dtype)
    theta = np.array([1.0, 0.75, 1.0, 1.0], dtype)
    want = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], dtype)
    _, s, _ = _run(I, theta, dtype(0.5), False, 0, smooth=False)
    np.testing.assert_array_equal(s[:, 0], want)
    for fn in (lif.lif_stop_forward_loop, lif.lif_stop_forward):
        st = [np.zeros((1, 4), dtype) for _ in range(5)]
        for t in range(2):
            fn(*st, I[t], dtype(0.5), theta, False, 0)
            np.testing.assert_array_equal(st[1][0], want[t], err_msg=fn.__name__)
            assert st[0][0, 3] == (0.5, 1.0)[t]  # U: 0.5, then exactly θ = 1


def test_stop_traces_follow_their_definition():
    rng = np.random.default_rng(3)
    T, B, N = 6, 2, 5
    I = rng.uniform(0, 1.5, (T, B, N))
    theta, alpha = np.full(N, 1.0), 0.7
    u, s, v = np.zeros((B, N)), np.zeros((B, N)), np.zeros((B, N))
    th, al = np.zeros((B, N)), np.zeros((B, N))
    th_ref, al_ref, s_prev, v_prev = np.zeros((B, N)), np.zeros((B, N)), np.zeros((B, N)), np.zeros((B, N))
    fired = 0.0
    for t in range(T):
        th_ref = alpha * (th_ref - s_prev)
        al_ref = alpha * al_ref + v_prev
        lif.lif_stop_forward(u, s, v, th, al, I[t], alpha, theta, False, 0)
        np.testing.assert_allclose(th, th_ref, rtol=0, atol=1e-15)
        np.testing.assert_allclose(al, al_ref, rtol=0, atol=1e-15)
        s_prev, v_prev = s.copy(), v.copy()
        fired += s.mean()
    assert 0 < fired / T < 1
    for shape in ((B, N), (8, lif.SERIAL_BELOW // 4)):  # the serial and the parallel variant
        w = np.zeros(shape)
        x = rng.normal(size=(T, *shape))
        ref = np.zeros(shape)
        for t in range(T):
            lif.trace_update(w, x[t], alpha)
            ref = alpha * ref + x[t]
        assert np.array_equal(w, ref)  # the same formula in the same precision: exact


def test_param_grads_accumulate():
    rng = np.random.default_rng(4)
    d, th, al = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    gt, ga = np.zeros(4), np.zeros(4)
    lif.stop_param_grads(gt, ga, d, th, al)
    lif.stop_param_grads(gt, ga, d, th, al)
    np.testing.assert_allclose(gt, 2 * (d * (th - 1)).sum(0), atol=1e-14)
    np.testing.assert_allclose(ga, 2 * (d * al).sum(0), atol=1e-14)


def test_one_and_two_threads_bitwise_equal():
    """N = 600: three 256-neuron blocks of lif_bptt_backward, so two threads split the work; float32
    throughout (no float64 array mixed in)."""
    I, theta, alpha, R = (np.float32(a) if np.isscalar(a) else a.astype(np.float32)
                          for a in _setup(5, T=4, B=8, N=600))
    res = []
    for n in (1, 2):
        numba.set_num_threads(n)
        res.append(_backward(R, I, theta, alpha, False, 0))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert all(a.dtype == np.float32 for a in res[0]) and 0 < _run(I, theta, alpha, False, 0, False)[1].mean() < 1
    for a, b in zip(res[0], res[1]):
        assert np.abs(a).max() > 0 and np.array_equal(a, b)


def test_expand_and_reduce_theta():
    shape = (2, 3, 3)
    th = np.array([1.0, 2.0])
    full = lif.expand_theta(th, shape, "channel")
    assert full.shape == (18,) and full[0] == 1.0 and full[9] == 2.0
    g = np.arange(18.0)
    np.testing.assert_allclose(lif.reduce_theta_grad(g, shape, "channel"), [36.0, 117.0])
    np.testing.assert_allclose(lif.reduce_theta_grad(g, shape, "layer"), [153.0])


def test_fused_delta_grads_equal_separate_kernels():
    rng = np.random.default_rng(6)
    B, N = 5, 700  # several neuron blocks
    g, u, th, al = (rng.normal(size=(B, N)) for _ in range(4))
    g[0, :10] = 0.0
    theta = rng.uniform(0.5, 1.5, N)
    for kind in lif.SURROGATES.values():
        d1, gt1, ga1 = np.zeros((B, N)), np.zeros(N), np.zeros(N)
        lif.spatial_delta(d1, g, u, theta, kind)
        lif.stop_param_grads(gt1, ga1, d1, th, al)
        d2, gt2, ga2 = np.zeros((B, N)), np.zeros(N), np.zeros(N)
        lif.stop_delta_grads(d2, gt2, ga2, g, u, theta, th, al, kind)
        assert np.array_equal(d1, d2)
        np.testing.assert_allclose(gt2, gt1, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(ga2, ga1, rtol=1e-13, atol=1e-15)
        assert np.abs(gt1).max() > 0


@pytest.mark.parametrize("N", [700, 5000], ids=["serial", "parallel"])
def test_fast_delta_grads_equal_loop_reference(N):
    """Fast path (row slices, per-surrogate loops, serial for small arrays) = the loop reference."""
    rng = np.random.default_rng(7)
    B = 9
    g, u, th, al = (rng.normal(size=(B, N)) for _ in range(4))
    g[0, :10] = 0.0
    theta = rng.uniform(0.5, 1.5, N)
    for kind in lif.SURROGATES.values():
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
            args = [a.astype(dtype) for a in (g, u, theta, th, al)]
            d1, gt1, ga1 = np.zeros((B, N), dtype), np.full(N, 0.5, dtype), np.full(N, -0.5, dtype)
            d2, gt2, ga2 = d1.copy(), gt1.copy(), ga1.copy()
            lif.stop_delta_grads_loop(d1, gt1, ga1, *args, kind)
            lif.stop_delta_grads(d2, gt2, ga2, *args, kind)
            if dtype == np.float64:
                assert np.array_equal(d1, d2)
            assert rel_err(d2, d1) < tol and rel_err(gt2, gt1) < tol and rel_err(ga2, ga1) < tol
            assert np.abs(d1).max() > 0


def test_delta_grads_independent_of_the_neuron_blocks(monkeypatch):
    """The parallel blocks (``delta_block``: an even count of equal blocks) only split the neurons: any
    block size gives bitwise the same δ, gθ, gα, because each neuron sums over b in order."""
    rng = np.random.default_rng(9)
    B, N = 5, 4704  # LeNet's first layer: 10 blocks of 480
    assert lif.delta_block(N) == 480 and all(lif.delta_block(n) % 16 == 0 for n in (10, 84, 1600, 70000))
    assert all(-(-n // lif.delta_block(n)) % 2 == 0 for n in (1600, 4704, 9000))
    args = [rng.normal(size=(B, N)).astype(np.float32) for _ in range(2)] + [
        rng.uniform(0.5, 1.5, N).astype(np.float32)] + [rng.normal(size=(B, N)).astype(np.float32) for _ in range(2)]
    res = []
    for block in (480, 16, 4704, 1000):
        monkeypatch.setattr(lif, "delta_block", lambda n, b=block: b)
        d, gt, ga = np.zeros((B, N), np.float32), np.zeros(N, np.float32), np.zeros(N, np.float32)
        lif.stop_delta_grads(d, gt, ga, *args, lif.EXP)
        res.append((d, gt, ga))
    assert np.abs(res[0][1]).max() > 0
    for other in res[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(res[0], other))


def test_exp_neg_f32_accuracy():
    z = -np.concatenate([np.linspace(0, 90, 200001), [0.0, 1e-8, 86.9, 87.0, 200.0]]).astype(np.float32)
    got = np.array([lif.exp_neg_f32(v) for v in z[::50]] + [lif.exp_neg_f32(v) for v in z[-5:]])
    zz = np.concatenate([z[::50], z[-5:]]).astype(np.float64)
    ref = np.exp(zz)
    ok = zz > -87.0
    assert (np.abs(got[ok] - ref[ok]) / ref[ok]).max() < 2e-7
    assert np.all(np.abs(got[~ok] - ref[~ok]) < 2e-38)


@pytest.mark.parametrize("N", [700, 5000], ids=["serial", "parallel"])
def test_fast_lif_stop_forward_equals_loop_reference(N):
    rng = np.random.default_rng(8)
    B, T = 7, 5
    for dtype in (np.float64, np.float32):
        I = rng.uniform(0, 1.5, (T, B, N)).astype(dtype)
        theta = rng.uniform(0.8, 1.2, N).astype(dtype)
        alpha = dtype(0.7)
        states = [[np.zeros((B, N), dtype) for _ in range(5)] for _ in range(2)]
        for t in range(T):
            lif.lif_stop_forward_loop(*states[0], I[t], alpha, theta, False, 0)
            counts = np.full(B, -1, np.int64)  # the fast path counts the spikes while it fires
            total = lif.lif_stop_forward(*states[1], I[t], alpha, theta, False, 0, counts)
            for a, b in zip(*states):
                assert np.array_equal(a, b)
            s = states[1][1]
            assert np.array_equal(counts, np.count_nonzero(s, axis=1)) and total == np.count_nonzero(s)
        assert 0 < states[1][1].mean() < 1


def test_fast_paths_one_and_two_threads_bitwise():
    rng = np.random.default_rng(9)
    B, N = 8, 6000
    g, u, th, al, I = (rng.normal(size=(B, N)).astype(np.float32) for _ in range(5))
    theta = np.ones(N, np.float32)
    res = []
    for n in (1, 2):
        numba.set_num_threads(n)
        d, gt, ga = np.zeros((B, N), np.float32), np.zeros(N, np.float32), np.zeros(N, np.float32)
        lif.stop_delta_grads(d, gt, ga, g, u, theta, th, al, lif.EXP)
        st = [np.zeros((B, N), np.float32) for _ in range(5)]
        for _ in range(3):
            lif.lif_stop_forward(*st, I, np.float32(0.6), theta, False, lif.EXP)
        res.append([d, gt, ga] + st)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*res):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("mode", ["neuron", "channel", "layer"])
def test_add_reduced_theta_grad_equals_the_reduction(mode):
    """The in-place reduction (online updates, every step) adds what ``reduce_theta_grad`` returns."""
    rng = np.random.default_rng(2)
    shape = (3, 4, 5)
    g = rng.standard_normal(60)
    n = {"neuron": shape, "channel": (3,), "layer": (1,)}[mode]
    out = rng.standard_normal(n)
    want = out + lif.reduce_theta_grad(g, shape, mode)
    lif.add_reduced_theta_grad(out, g, shape, mode)
    np.testing.assert_allclose(out, want, rtol=1e-14, atol=1e-14)
