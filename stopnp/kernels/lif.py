"""LIF neuron kernels: charge, fire, reset, surrogate gradients, STOP traces.

One layer, one time step, whole batch. Neuron arrays are ``(B, N)`` views (the caller flattens the
neuron shape); ``theta`` is the per-neuron threshold ``(N,)`` (the caller expands per-channel or
per-layer thresholds once per batch). Outputs come first; gradient outputs accumulate with ``+=``.

Equations (docs/algorithms.md §1, §4, §5):

    U[t] = α·V[t-1] + I[t]                        charge (input not scaled by 1-α)
    s[t] = H(U[t] - θ)                            fire   (H(z) = 1 for z >= 0)
    V[t] = U[t] - θ·s[t]     (soft reset)         reset
    V[t] = U[t]·(1 - s[t])   (hard reset)
    φ(z)                                           surrogate ∂s/∂U, see ``surrogate``
    th~[t] = α·(th~[t-1] - s[t-1])                 STOP threshold trace  [Eq. 26]
    al~[t] = α·al~[t-1] + V[t-1]                   STOP leak trace       [Eq. 30]
    w~[t]  = λ·w~[t-1] + x[t]                      STOP weight trace     [Eq. 20], λ = α for STOP
    δ[t]   = g[t]·φ(U[t] - θ)                      spatial error
    Δθ_j  += Σ_b δ·(th~ - 1)                       [Eq. 24]
    Δα_j  += Σ_b δ·al~                             [Eq. 27] (caller reduces over j: mean or sum)

BPTT, backward in time with eU[t+1] carried (``lif_bptt_backward``):

    eV[t]  = α·eU[t+1]
    gs     = g[t] + (keep_reset ? (soft: -θ·eV ; hard: -U·eV) : 0)       total ∂E/∂s[t]
    eU[t]  = gs·φ + eV·(soft: 1 ; hard: 1 - s[t])
    Δθ_j  += -gs·φ - (soft: s·eV ; hard: 0)
    Δα_j  += eU[t]·V[t-1]

``smooth=True`` replaces H by the smooth function S with S' = φ (finite-difference checks only).
"""
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

# surrogate codes (stable: they are stored in configs as names, mapped here)
EXP, TRIANGLE, SIGMOID, ATAN, RECTANGLE = 0, 1, 2, 3, 4
SURROGATES = {"exp": EXP, "triangle": TRIANGLE, "sigmoid": SIGMOID, "atan": ATAN,
              "rectangle": RECTANGLE}


@njit(cache=True, inline="always")
def surrogate(z, kind):
    """φ(z): exp(-|z|) | max(0,1-|z|) | 4σ(4z)(1-σ(4z)) | 1/(1+(πz)²) | 1{|z|<1/2}."""
    if kind == EXP:
        return math.exp(-abs(z))
    elif kind == TRIANGLE:
        return max(0.0, 1.0 - abs(z))
    elif kind == SIGMOID:
        sg = 1.0 / (1.0 + math.exp(-4.0 * z))
        return 4.0 * sg * (1.0 - sg)
    elif kind == ATAN:
        return 1.0 / (1.0 + (math.pi * z) ** 2)
    else:
        return 1.0 if abs(z) < 0.5 else 0.0


@njit(cache=True, inline="always")
def smooth_step(z, kind):
    """S(z) with S'(z) = φ(z) and S(-inf) = 0 (checks only; exp's S rises to 2, not 1)."""
    if kind == EXP:
        return math.exp(z) if z < 0.0 else 2.0 - math.exp(-z)
    elif kind == TRIANGLE:
        if z < -1.0:
            return 0.0
        elif z < 0.0:
            return 0.5 * (z + 1.0) ** 2
        elif z < 1.0:
            return 1.0 - 0.5 * (1.0 - z) ** 2
        return 1.0
    elif kind == SIGMOID:
        return 1.0 / (1.0 + math.exp(-4.0 * z))
    elif kind == ATAN:
        return math.atan(math.pi * z) / math.pi + 0.5
    else:
        return min(1.0, max(0.0, z + 0.5))


@njit(cache=True, inline="always")
def spike_fn(z, smooth, kind):
    if smooth:
        return smooth_step(z, kind)
    return 1.0 if z >= 0.0 else 0.0


@njit(cache=True, parallel=True)
def lif_forward(u, s, v, i_in, alpha, theta, hard_reset, smooth, kind):
    """U = αV + I; s = H(U-θ); V <- reset(U, s). ``v`` is the state, updated in place."""
    B, N = u.shape
    for b in prange(B):
        for j in range(N):
            uu = alpha * v[b, j] + i_in[b, j]
            sp = spike_fn(uu - theta[j], smooth, kind)
            u[b, j] = uu
            s[b, j] = sp
            if hard_reset:
                v[b, j] = uu * (1.0 - sp)
            else:
                v[b, j] = uu - theta[j] * sp


@njit(cache=True, parallel=True)
def lif_stop_forward_loop(u, s, v, th_trace, al_trace, i_in, alpha, theta, smooth, kind):
    """Reference fused STOP step (soft reset): traces from V[t-1], s[t-1], then charge, fire, reset.

    ``s`` holds s[t-1] on entry and s[t] on exit; ``v`` holds V[t-1] on entry and V[t] on exit.
    """
    B, N = u.shape
    for b in prange(B):
        for j in range(N):
            th_trace[b, j] = alpha * (th_trace[b, j] - s[b, j])
            al_trace[b, j] = alpha * al_trace[b, j] + v[b, j]
            uu = alpha * v[b, j] + i_in[b, j]
            sp = spike_fn(uu - theta[j], smooth, kind)
            u[b, j] = uu
            s[b, j] = sp
            v[b, j] = uu - theta[j] * sp


@njit(cache=True, inline="always")
def _trace_rows(w_trace, x, decay, b0, b1):
    M = x.shape[1]
    for b in range(b0, b1):
        wr, xr = w_trace[b], x[b]  # row views: vectorized
        for j in range(M):
            wr[j] = decay * wr[j] + xr[j]


@njit(cache=True, parallel=True)
def _trace_update_par(w_trace, x, decay):
    for b in prange(x.shape[0]):  # iteration owns row b
        _trace_rows(w_trace, x, decay, b, b + 1)


@njit(cache=True)
def _trace_update_ser(w_trace, x, decay):
    _trace_rows(w_trace, x, decay, 0, x.shape[0])


def trace_update(w_trace, x, decay):
    """w~ = λ·w~ + x over a flat ``(B, M)`` view (λ = α for STOP, fixed λ for OTTT); serial for small
    arrays (see SERIAL_BELOW), the same formula either way."""
    (_trace_update_ser if x.size < SERIAL_BELOW else _trace_update_par)(w_trace, x, w_trace.dtype.type(decay))


@njit(cache=True, parallel=True)
def spatial_delta(delta, g, u, theta, kind):
    """δ = g·φ(U - θ)."""
    B, N = u.shape
    for b in prange(B):
        for j in range(N):
            delta[b, j] = g[b, j] * surrogate(u[b, j] - theta[j], kind)


@njit(cache=True, parallel=True)
def stop_param_grads(gtheta, galpha, delta, th_trace, al_trace):
    """gθ_j += Σ_b δ(th~ - 1);  gα_j += Σ_b δ·al~  (per neuron; caller reduces over j)."""
    B, N = delta.shape
    for j in prange(N):
        acc_t = 0.0
        acc_a = 0.0
        for b in range(B):
            d = delta[b, j]
            acc_t += d * (th_trace[b, j] - 1.0)
            acc_a += d * al_trace[b, j]
        gtheta[j] += acc_t
        galpha[j] += acc_a


@njit(cache=True, parallel=True)
def stop_delta_grads_loop(delta, gtheta, galpha, g, u, theta, th_trace, al_trace, kind):
    """Reference fused ``spatial_delta`` + ``stop_param_grads``: δ = g·φ(U-θ); gθ_j += δ(th~-1); gα_j += δ·al~.

    Parallel over blocks of neurons (a block owns its gθ_j, gα_j); inside, batch rows are walked in
    order, so memory is read contiguously and each sum has a fixed order (thread-count independent).
    """
    B, N = u.shape
    block = 256  # neurons per parallel chunk: a chunk owns its θ/α accumulators; rows stay contiguous
    nblocks = (N + block - 1) // block
    for blk in prange(nblocks):
        j0 = blk * block
        j1 = min(N, j0 + block)
        for b in range(B):
            for j in range(j0, j1):
                d = g[b, j]
                if d != 0.0:
                    d *= surrogate(u[b, j] - theta[j], kind)
                    gtheta[j] += d * (th_trace[b, j] - 1.0)
                    galpha[j] += d * al_trace[b, j]
                delta[b, j] = d


# --- fast paths of the two STOP per-step kernels ------------------------------------------------
# Same sums in the same order as the references above (each neuron's θ/α sum over b in order), written
# so that LLVM vectorizes them: contiguous row slices, one surrogate per loop (no per-element switch),
# arithmetic in the arrays' dtype, and for float32 with the exp surrogate a branch-free exp
# (``exp_neg_f32``, < 1e-7 relative error) instead of a scalar libm call per neuron. float64 results
# equal the references' (tests/test_kernels_lif.py); small arrays run serially (no parallel launch).

SERIAL_BELOW = 1 << 15      # elements (B·N) under which the serial variant is used
BLOCK = 512                 # at most this many neurons per parallel chunk (it owns their θ/α sums)


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the low 32 bits of the integer ``bits`` (C: memcpy or a
    union); vectorizes."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if bits.bitwidth > 32:
            v = builder.trunc(v, context.get_value_type(types.int32))
        return builder.bitcast(v, context.get_value_type(types.float32))
    return types.float32(bits), codegen


@njit(cache=True, inline="always")
def exp_neg_f32(x):
    """exp(x) for float32 x <= 0 (x < -87 is clamped: result < 1.7e-38): Cody-Waite reduction
    x = k·ln2 + r, |r| <= ln2/2, a degree-7 polynomial for e^r, 2^k written as a float's exponent bits
    (exact)."""
    f = np.float32
    x = max(x, f(-87.0))
    kf = (x * f(1.4426950408889634) + f(12582912.0)) - f(12582912.0)  # round to nearest integer
    r = x - kf * f(0.693359375)
    r = r - kf * f(-2.12194440e-4)
    p = f(1.9875691500e-4)
    p = p * r + f(1.3981999507e-3)
    p = p * r + f(8.3334519073e-3)
    p = p * r + f(4.1665795894e-2)
    p = p * r + f(1.6666665459e-1)
    p = p * r + f(5.0000001201e-1)
    p = p * r * r + r + f(1.0)
    m = np.int32(-kf)  # 0 <= m <= 126
    return p * _f32_from_bits((127 - m) << 23)  # 2^-m, exact (a normal float)


@njit(cache=True, inline="always")
def _delta_rows(delta, gtheta, galpha, g, u, theta, th_trace, al_trace, kind, fast_exp, j0, j1):
    B = u.shape[0]
    one = u.dtype.type(1)
    gt, ga, thr = gtheta[j0:j1], galpha[j0:j1], theta[j0:j1]
    n = j1 - j0
    for b in range(B):
        dr, gr, ur, tr, ar = delta[b, j0:j1], g[b, j0:j1], u[b, j0:j1], th_trace[b, j0:j1], al_trace[b, j0:j1]
        if fast_exp:
            for j in range(n):
                d = gr[j] * exp_neg_f32(-abs(ur[j] - thr[j]))
                gt[j] += d * (tr[j] - one)
                ga[j] += d * ar[j]
                dr[j] = d
        elif kind == EXP:
            for j in range(n):
                d = gr[j] * math.exp(-abs(ur[j] - thr[j]))
                gt[j] += d * (tr[j] - one)
                ga[j] += d * ar[j]
                dr[j] = d
        else:
            for j in range(n):
                d = gr[j] * u.dtype.type(surrogate(ur[j] - thr[j], kind))
                gt[j] += d * (tr[j] - one)
                ga[j] += d * ar[j]
                dr[j] = d


@njit(cache=True, parallel=True)
def _stop_delta_grads_par(delta, gtheta, galpha, g, u, theta, th_trace, al_trace, kind, fast_exp, block):
    N = u.shape[1]
    for blk in prange((N + block - 1) // block):  # a block owns gθ, gα of its neurons
        _delta_rows(delta, gtheta, galpha, g, u, theta, th_trace, al_trace, kind, fast_exp,
                    blk * block, min(N, (blk + 1) * block))


@njit(cache=True)
def _stop_delta_grads_ser(delta, gtheta, galpha, g, u, theta, th_trace, al_trace, kind, fast_exp, block):
    N = u.shape[1]
    for blk in range((N + block - 1) // block):
        _delta_rows(delta, gtheta, galpha, g, u, theta, th_trace, al_trace, kind, fast_exp,
                    blk * block, min(N, (blk + 1) * block))


def delta_block(N):
    """Neurons per parallel block: about equal blocks of at most BLOCK, a multiple of 16, their count
    even unless that rounding changes it (5 blocks of 1024 kept one of 2 threads idle a fifth of the
    time). Each neuron's θ/α sum runs over b in order inside its block, so the partition does not
    change the results."""
    n = -(-N // BLOCK)
    n += n % 2
    return max(16, -(-(-(-N // n)) // 16) * 16)


def stop_delta_grads(delta, gtheta, galpha, g, u, theta, th_trace, al_trace, kind):
    """δ = g·φ(U-θ); gθ_j += Σ_b δ(th~-1); gα_j += Σ_b δ·al~ (fast path of ``stop_delta_grads_loop``)."""
    fast_exp = kind == EXP and u.dtype == np.float32
    fn = _stop_delta_grads_ser if u.size < SERIAL_BELOW else _stop_delta_grads_par
    fn(delta, gtheta, galpha, g, u, theta, th_trace, al_trace, kind, fast_exp, delta_block(u.shape[1]))


@njit(cache=True, inline="always")
def _lif_stop_rows(u, s, v, th_trace, al_trace, i_in, alpha, theta, counts, b0, b1):
    N = u.shape[1]
    zero, one = u.dtype.type(0), u.dtype.type(1)
    for b in range(b0, b1):
        n = 0
        for j0 in range(0, N, 512):  # chunks that stay in L1 between the two passes
            j1 = min(N, j0 + 512)
            ur, sr, vr, ir, th = u[b, j0:j1], s[b, j0:j1], v[b, j0:j1], i_in[b, j0:j1], theta[j0:j1]
            tr, ar = th_trace[b, j0:j1], al_trace[b, j0:j1]
            for j in range(j1 - j0):  # traces from s[t-1], V[t-1] (few arrays per loop: vectorizes)
                tr[j] = alpha * (tr[j] - sr[j])
                ar[j] = alpha * ar[j] + vr[j]
            for j in range(j1 - j0):
                uu = alpha * vr[j] + ir[j]
                fire = uu - th[j] >= zero
                sp = one if fire else zero
                ur[j] = uu
                sr[j] = sp
                vr[j] = uu - th[j] * sp
                n += fire
        counts[b] = n


@njit(cache=True, parallel=True)
def _lif_stop_forward_par(u, s, v, th_trace, al_trace, i_in, alpha, theta, counts):
    for b in prange(u.shape[0]):  # iteration owns row b
        _lif_stop_rows(u, s, v, th_trace, al_trace, i_in, alpha, theta, counts, b, b + 1)
    return counts.sum()


@njit(cache=True)
def _lif_stop_forward_ser(u, s, v, th_trace, al_trace, i_in, alpha, theta, counts):
    _lif_stop_rows(u, s, v, th_trace, al_trace, i_in, alpha, theta, counts, 0, u.shape[0])
    return counts.sum()


def lif_stop_forward(u, s, v, th_trace, al_trace, i_in, alpha, theta, smooth, kind, counts=None):
    """Fused STOP step (soft reset), fast path of ``lif_stop_forward_loop`` (``smooth``: the reference).

    Returns the number of spikes (nonzero s; with ``smooth`` the spikes are not 0/1 and this is not
    their sum); ``counts`` (B,) int64, if given, receives them per sample (the fast path counts while
    it fires: no second pass over s).
    """
    if counts is None:
        counts = np.empty(u.shape[0], np.int64)
    if smooth:
        lif_stop_forward_loop(u, s, v, th_trace, al_trace, i_in, alpha, theta, smooth, kind)
        counts[:] = np.count_nonzero(s, axis=1)
        return int(counts.sum())
    fn = _lif_stop_forward_ser if u.size < SERIAL_BELOW else _lif_stop_forward_par
    return int(fn(u, s, v, th_trace, al_trace, i_in, u.dtype.type(alpha), theta, counts))


@njit(cache=True, parallel=True)
def lif_bptt_backward(e_u, gtheta, galpha, g, u, s, v_prev, alpha, theta,
                      hard_reset, keep_reset, kind):
    """One backward-in-time step of BPTT for one layer.

    ``e_u`` holds eU[t+1] on entry (zeros at t = T) and eU[t] on exit; ``g`` = ∂E/∂s[t] from above.
    Parallel over blocks of neurons (a block owns its gθ_j, gα_j and its columns of e_u); rows are
    walked in order inside a block, so reads are contiguous and sums have a fixed order.
    """
    B, N = u.shape
    block = 256  # neurons per parallel chunk: a chunk owns its θ/α accumulators; rows stay contiguous
    nblocks = (N + block - 1) // block
    for blk in prange(nblocks):
        j0 = blk * block
        j1 = min(N, j0 + block)
        for b in range(B):
            for j in range(j0, j1):
                th = theta[j]
                e_v = alpha * e_u[b, j]
                phi = surrogate(u[b, j] - th, kind)
                gs = g[b, j]
                if keep_reset:
                    if hard_reset:
                        gs -= u[b, j] * e_v
                    else:
                        gs -= th * e_v
                if hard_reset:
                    eu = gs * phi + e_v * (1.0 - s[b, j])
                    gtheta[j] -= gs * phi
                else:
                    eu = gs * phi + e_v
                    gtheta[j] -= gs * phi + s[b, j] * e_v
                galpha[j] += eu * v_prev[b, j]
                e_u[b, j] = eu


def expand_theta(theta, layer_shape, mode):
    """Per-neuron view ``(N,)`` of a per-neuron, per-channel or per-layer threshold (once per batch)."""
    n = int(np.prod(layer_shape))
    if mode == "neuron":  # θ itself when contiguous: a view, so in-place updates of θ are seen
        return np.ascontiguousarray(theta.reshape(n))
    out = np.empty(n, theta.dtype)
    expand_theta_into(out, theta, layer_shape, mode)
    return out


def expand_theta_into(out, theta, layer_shape, mode):
    """``expand_theta`` written into ``out`` (N,) without allocating; a no-op when ``out`` is θ itself."""
    if np.may_share_memory(out, theta):
        return
    t = theta.reshape(-1)
    if mode == "neuron":
        out[...] = t
    elif mode == "layer":
        out.fill(t[0])
    else:
        out.reshape(layer_shape[0], -1)[...] = t[:, None]


def add_reduced_theta_grad(out, gtheta_full, layer_shape, mode):
    """out += ``reduce_theta_grad(...)`` without a temporary (online updates reduce every step)."""
    if mode == "neuron":
        out += gtheta_full.reshape(out.shape)
    else:
        C = 1 if mode == "layer" else layer_shape[0]
        _add_group_sums(out.reshape(C), gtheta_full.reshape(C, -1))


@njit(cache=True)
def _add_group_sums(out, g):
    """out[c] += Σ_j g[c, j], summed in float64 (a per-layer θ sums over up to 10⁵ neurons)."""
    for c in range(g.shape[0]):
        acc = 0.0
        for j in range(g.shape[1]):
            acc += g[c, j]
        out[c] += acc


def reduce_theta_grad(gtheta_full, layer_shape, mode):
    """Sum the per-neuron θ gradient over neurons sharing one θ (inverse of ``expand_theta``)."""
    if mode == "neuron":
        return gtheta_full.reshape(layer_shape)
    if mode == "layer":
        return np.array([gtheta_full.sum()], dtype=gtheta_full.dtype)
    return gtheta_full.reshape(layer_shape[0], -1).sum(axis=1)
