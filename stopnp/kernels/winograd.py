"""3×3, stride 1, pad 1 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016).

Each 2×2 block of outputs (a tile) comes from a 4×4 block of the zero-padded input d, with the
filter g in a 4×4 transformed space where the 3×3 correlation becomes an elementwise product:

    Y  = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A          forward, summed over input channels
    Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]     G = [[1,0,0],[½,½,½],[½,-½,½],[0,0,1]]
    Aᵀ = [[1,1,1,0],[0,1,-1,-1]]

Summed over channels, each of the 16 transformed positions k is one GEMM: M[k] = U[k]·V[k] with
U[k] (Co×Ci) the transformed filters and V[k] (Ci×tiles) the transformed input: 16 GEMMs of
Ci·Co·tiles multiply-adds replace one of 9·Ci·Co·4·tiles (2.25× fewer), and the lowered input is 4×
the image instead of im2col's 9×.

    input gradient   gx = the same forward, on the output gradient, with W rotated 180° and its two
                     channel axes swapped (the transposed convolution of a pad-1 3×3 is a pad-1 3×3)
    weight gradient  dL/dU = (A δ Aᵀ) ⊙ (Bᵀ d B) per tile, so ∂W = Gᵀ [ Σ_tiles,b D[k]·V[k]ᵀ ] G

The sums over samples run in WGRAD_GROUPS fixed groups, as in conv.py, so results are the same for
any thread count. Floating-point results differ from the direct sum by rounding only (the transforms
add and halve); tests compare with the loop reference at float tolerance. Outputs are overwritten,
gradients accumulate.
"""
import numpy as np
from numba import get_thread_id, njit, prange


@njit(cache=True)
def filter_transform(U, w, q, rotate):
    """U[k, o, i] = (G w[o, i] Gᵀ)[k // 4, k % 4] for w (O, I, 3, 3); ``rotate``: the input gradient's
    filters instead, U[k, i, o] from w[o, i] turned 180°. ``q`` (4, 3): scratch."""
    O, I = w.shape[0], w.shape[1]
    half = w.dtype.type(0.5)
    for o in range(O):
        for i in range(I):
            for c in range(3):
                if rotate:
                    g0, g1, g2 = w[o, i, 2, 2 - c], w[o, i, 1, 2 - c], w[o, i, 0, 2 - c]
                else:
                    g0, g1, g2 = w[o, i, 0, c], w[o, i, 1, c], w[o, i, 2, c]
                q[0, c] = g0
                q[1, c] = half * (g0 + g1 + g2)
                q[2, c] = half * (g0 - g1 + g2)
                q[3, c] = g2
            for r in range(4):
                u0, u1 = q[r, 0], half * (q[r, 0] + q[r, 1] + q[r, 2])
                u2, u3 = half * (q[r, 0] - q[r, 1] + q[r, 2]), q[r, 2]
                if rotate:
                    U[4 * r + 0, i, o], U[4 * r + 1, i, o], U[4 * r + 2, i, o], U[4 * r + 3, i, o] = u0, u1, u2, u3
                else:
                    U[4 * r + 0, o, i], U[4 * r + 1, o, i], U[4 * r + 2, o, i], U[4 * r + 3, o, i] = u0, u1, u2, u3


@njit(cache=True)
def _pad_into(xp, x, off):
    """xp (C, Hp, Wp) = x placed at (off, off), zeros elsewhere (the zero padding and odd-size tiles)."""
    C, H, W = x.shape
    xp[...] = 0
    for c in range(C):
        for i in range(H):
            for j in range(W):
                xp[c, off + i, off + j] = x[c, i, j]


@njit(cache=True)
def _input_transform(V, xp, nty, ntx):
    """V[k, c·P + p] = (Bᵀ d B)[k], d the 4×4 block at (2ty, 2tx) of the padded input xp (C, 2nty+2, 2ntx+2)."""
    C, P = xp.shape[0], nty * ntx
    for c in range(C):
        for ty in range(nty):
            r = 2 * ty
            p0 = ty * ntx
            for tx in range(ntx):
                q = 2 * tx
                # Bᵀ d, one column j at a time: t_i,j from the four rows of column q + j
                a0, a1, a2, a3 = xp[c, r, q], xp[c, r + 1, q], xp[c, r + 2, q], xp[c, r + 3, q]
                b0, b1, b2, b3 = xp[c, r, q + 1], xp[c, r + 1, q + 1], xp[c, r + 2, q + 1], xp[c, r + 3, q + 1]
                c0, c1, c2, c3 = xp[c, r, q + 2], xp[c, r + 1, q + 2], xp[c, r + 2, q + 2], xp[c, r + 3, q + 2]
                d0, d1, d2, d3 = xp[c, r, q + 3], xp[c, r + 1, q + 3], xp[c, r + 2, q + 3], xp[c, r + 3, q + 3]
                t00, t10, t20, t30 = a0 - a2, a1 + a2, a2 - a1, a1 - a3
                t01, t11, t21, t31 = b0 - b2, b1 + b2, b2 - b1, b1 - b3
                t02, t12, t22, t32 = c0 - c2, c1 + c2, c2 - c1, c1 - c3
                t03, t13, t23, t33 = d0 - d2, d1 + d2, d2 - d1, d1 - d3
                cp = c * P + p0 + tx
                V[0, cp], V[1, cp], V[2, cp], V[3, cp] = t00 - t02, t01 + t02, t02 - t01, t01 - t03
                V[4, cp], V[5, cp], V[6, cp], V[7, cp] = t10 - t12, t11 + t12, t12 - t11, t11 - t13
                V[8, cp], V[9, cp], V[10, cp], V[11, cp] = t20 - t22, t21 + t22, t22 - t21, t21 - t23
                V[12, cp], V[13, cp], V[14, cp], V[15, cp] = t30 - t32, t31 + t32, t32 - t31, t31 - t33


@njit(cache=True)
def _output_transform(out, M, nty, ntx, accumulate):
    """out (C, H, W) = (or +=) Aᵀ M[:, c, p] A for every tile p, cropped to the image."""
    C, H, W = out.shape
    P = nty * ntx
    for c in range(C):
        for ty in range(nty):
            yy = 2 * ty
            full_y = yy + 1 < H
            p0 = ty * ntx
            for tx in range(ntx):
                cp = c * P + p0 + tx
                m0, m1, m2, m3 = M[0, cp], M[1, cp], M[2, cp], M[3, cp]
                m4, m5, m6, m7 = M[4, cp], M[5, cp], M[6, cp], M[7, cp]
                m8, m9, m10, m11 = M[8, cp], M[9, cp], M[10, cp], M[11, cp]
                m12, m13, m14, m15 = M[12, cp], M[13, cp], M[14, cp], M[15, cp]
                s0, s1, s2, s3 = m0 + m4 + m8, m1 + m5 + m9, m2 + m6 + m10, m3 + m7 + m11  # Aᵀ m, row 0
                r0, r1, r2, r3 = m4 - m8 - m12, m5 - m9 - m13, m6 - m10 - m14, m7 - m11 - m15  # row 1
                y00, y01 = s0 + s1 + s2, s1 - s2 - s3
                y10, y11 = r0 + r1 + r2, r1 - r2 - r3
                xx = 2 * tx
                if full_y and xx + 1 < W:
                    if accumulate:
                        out[c, yy, xx] += y00
                        out[c, yy, xx + 1] += y01
                        out[c, yy + 1, xx] += y10
                        out[c, yy + 1, xx + 1] += y11
                    else:
                        out[c, yy, xx] = y00
                        out[c, yy, xx + 1] = y01
                        out[c, yy + 1, xx] = y10
                        out[c, yy + 1, xx + 1] = y11
                else:  # the last row or column of an odd-sized image
                    for a, b, v in ((0, 0, y00), (0, 1, y01), (1, 0, y10), (1, 1, y11)):
                        if yy + a < H and xx + b < W:
                            if accumulate:
                                out[c, yy + a, xx + b] += v
                            else:
                                out[c, yy + a, xx + b] = v


@njit(cache=True)
def _delta_transform(D, gp, nty, ntx):
    """D[k, o, p] = (A δ Aᵀ)[k], δ the 2×2 block at (2ty, 2tx) of gp (O, 2nty, 2ntx), zero-padded."""
    O, P = gp.shape[0], nty * ntx
    for o in range(O):
        for ty in range(nty):
            yy = 2 * ty
            p0 = ty * ntx
            for tx in range(ntx):
                xx = 2 * tx
                d00, d01, d10, d11 = gp[o, yy, xx], gp[o, yy, xx + 1], gp[o, yy + 1, xx], gp[o, yy + 1, xx + 1]
                # A δ: rows e0 = δ0, e1 = δ0 + δ1, e2 = δ0 - δ1, e3 = -δ1; then (A δ) Aᵀ on the columns
                e0a, e0b = d00, d01
                e1a, e1b = d00 + d10, d01 + d11
                e2a, e2b = d00 - d10, d01 - d11
                e3a, e3b = -d10, -d11
                op = o * P + p0 + tx
                D[0, op], D[1, op], D[2, op], D[3, op] = e0a, e0a + e0b, e0a - e0b, -e0b
                D[4, op], D[5, op], D[6, op], D[7, op] = e1a, e1a + e1b, e1a - e1b, -e1b
                D[8, op], D[9, op], D[10, op], D[11, op] = e2a, e2a + e2b, e2a - e2b, -e2b
                D[12, op], D[13, op], D[14, op], D[15, op] = e3a, e3a + e3b, e3a - e3b, -e3b


@njit(cache=True, parallel=True)
def _forward(out, x, U, V, M, XP, nty, ntx, accumulate):
    """out[b] (=/+=) Winograd conv of x[b]; V, M, XP: per-thread scratch rows."""
    P, C = nty * ntx, x.shape[1]
    for b in prange(x.shape[0]):  # iteration owns out[b]
        tid = get_thread_id()
        v = V[tid].reshape((16, -1))  # planes padded apart: 16 streams at one 4 KiB stride thrash L1
        m = M[tid].reshape((16, -1))
        xp = XP[tid, :C * (2 * nty + 2) * (2 * ntx + 2)].reshape((C, 2 * nty + 2, 2 * ntx + 2))
        _pad_into(xp, x[b], 1)
        _input_transform(v, xp, nty, ntx)
        O = out.shape[1]
        for k in range(16):
            np.dot(U[k], v[k, :C * P].reshape((C, P)), m[k, :O * P].reshape((O, P)))
        _output_transform(out[b], m, nty, ntx, accumulate)


@njit(cache=True, parallel=True)
def _weight_grad_groups(acc, tmp, delta, w_trace, V, D, XP, nty, ntx):
    """acc[grp, k] = Σ_{b in group} D_b[k]·V_b[k]ᵀ, the groups' samples in order."""
    B, G = delta.shape[0], acc.shape[0]
    P = nty * ntx
    for grp in prange(G):  # iteration owns acc[grp]
        tid = get_thread_id()
        v = V[tid].reshape((16, -1))
        d = D[tid].reshape((16, -1))
        s = tmp[tid]
        C, O = w_trace.shape[1], delta.shape[1]
        xp = XP[tid, :C * (2 * nty + 2) * (2 * ntx + 2)].reshape((C, 2 * nty + 2, 2 * ntx + 2))
        b0, b1 = grp * B // G, (grp + 1) * B // G
        for b in range(b0, b1):
            _pad_into(xp, w_trace[b], 1)
            _input_transform(v, xp, nty, ntx)
            gp = XP[tid, :O * 2 * nty * 2 * ntx].reshape((O, 2 * nty, 2 * ntx))
            _pad_into(gp, delta[b], 0)
            _delta_transform(d, gp, nty, ntx)
            for k in range(16):
                dk, vk = d[k, :O * P].reshape((O, P)), v[k, :C * P].reshape((C, P))
                if b == b0:
                    np.dot(dk, vk.T, acc[grp, k])
                else:
                    np.dot(dk, vk.T, s[k])
                    acc[grp, k] += s[k]


@njit(cache=True, parallel=True)
def _reduce_filter_grad(gw, acc, tmp):
    """gw[o] += Gᵀ (Σ_g acc[g, :, o]) G: the groups summed in order, rows read contiguously;
    parallel over o (an iteration owns gw[o]); tmp: per-thread scratch of at least 16·I values."""
    G, O, I = acc.shape[0], acc.shape[2], acc.shape[3]
    half = gw.dtype.type(0.5)
    for o in prange(O):
        m = tmp[get_thread_id()].reshape(-1)[:16 * I].reshape((16, I))  # m[k, i] = Σ_g acc[g, k, o, i]
        for k in range(16):
            for i in range(I):
                m[k, i] = acc[0, k, o, i]
            for g in range(1, G):
                for i in range(I):
                    m[k, i] += acc[g, k, o, i]
        for i in range(I):
            for r in range(3):  # Gᵀ m G: row r of Gᵀ m (four values), then its three taps
                if r == 0:
                    h0 = m[0, i] + half * (m[4, i] + m[8, i])
                    h1 = m[1, i] + half * (m[5, i] + m[9, i])
                    h2 = m[2, i] + half * (m[6, i] + m[10, i])
                    h3 = m[3, i] + half * (m[7, i] + m[11, i])
                elif r == 1:
                    h0 = half * (m[4, i] - m[8, i])
                    h1 = half * (m[5, i] - m[9, i])
                    h2 = half * (m[6, i] - m[10, i])
                    h3 = half * (m[7, i] - m[11, i])
                else:
                    h0 = half * (m[4, i] + m[8, i]) + m[12, i]
                    h1 = half * (m[5, i] + m[9, i]) + m[13, i]
                    h2 = half * (m[6, i] + m[10, i]) + m[14, i]
                    h3 = half * (m[7, i] + m[11, i]) + m[15, i]
                gw[o, i, r, 0] += h0 + half * (h1 + h2)
                gw[o, i, r, 1] += half * (h1 - h2)
                gw[o, i, r, 2] += half * (h1 + h2) + h3


WGRAD_GROUPS = 8
PLANE_PAD = 48  # floats between transformed planes (see _forward)


MIN_CHANNELS = 16  # below this many input or output channels the lowered GEMM (conv.py) is as fast


def eligible(in_shape, Co, k, stride, pad):
    """The convolutions this module computes: 3×3, stride 1, pad 1, enough channels."""
    return k == 3 and stride == 1 and pad == 1 and len(in_shape) == 3 and min(in_shape[0], Co) >= MIN_CHANNELS


def tiles(H, W):
    return (H + 1) // 2, (W + 1) // 2


def scratch_shapes(B, Ci, Co, H, W, slots):
    """Shapes of the scratch tuple: per-thread transformed input and GEMM results (16 planes, padded
    apart), the weight gradient's group accumulators and per-thread GEMM result, the per-thread padded
    image, and the transformed filters (16, Co, Ci) and (16, Ci, Co) with a (4, 3) helper."""
    nty, ntx = tiles(H, W)
    P, C = nty * ntx, max(Ci, Co)
    G = max(1, min(B, WGRAD_GROUPS))
    plane = C * P + PLANE_PAD
    return ((slots, 16 * plane), (slots, 16 * plane), (G, 16, Co, Ci), (slots, 16, Co, Ci),
            (slots, C * (2 * nty + 2) * (2 * ntx + 2)), (16, Co, Ci), (16, Ci, Co), (4, 3))


def make_scratch(B, Ci, Co, H, W, dtype, slots=None):
    from numba import config
    slots = config.NUMBA_NUM_THREADS if slots is None else slots
    return tuple(np.zeros(s, dtype) for s in scratch_shapes(B, Ci, Co, H, W, slots))


def _check(scratch, x_shape, Co, dtype):
    from numba import config
    B, Ci, H, W = x_shape
    want = scratch_shapes(B, Ci, Co, H, W, config.NUMBA_NUM_THREADS)
    if (len(scratch) != len(want) or any(a.shape != s or a.dtype != dtype or not a.flags.c_contiguous
                                         for a, s in zip(scratch, want))):
        raise ValueError(f"winograd scratch does not fit input {x_shape} -> {Co} channels in {np.dtype(dtype)} "
                         f"(make it with make_scratch)")


def conv3x3_forward(out, x, w, scratch, accumulate=False, transformed=False):
    """out = (or +=) conv(x, w), 3×3, stride 1, pad 1; x (B, Ci, H, W), w (Co, Ci, 3, 3), all C-contiguous
    in one float dtype; ``scratch`` from ``make_scratch``. ``transformed``: the scratch already holds
    this w's transformed filters (an earlier call in the same sequence: W is fixed within one)."""
    B, Ci, H, W = x.shape
    _check(scratch, x.shape, w.shape[0], x.dtype)
    V, M, _, _, XP, U, _, q = scratch
    if not transformed:
        filter_transform(U, w, q, False)
    nty, ntx = tiles(H, W)
    _forward(out, x, U, V, M, XP, nty, ntx, accumulate)


def conv3x3_backward(gx, gw, delta, w, w_trace, scratch, transformed=False):
    """gx += conv_transposed(δ, w) and gw += Σ_b δ ⋆ w~ (either may be None; w_trace and w with it).
    ``transformed``: as in ``conv3x3_forward``, for the rotated filters of the input gradient."""
    B, Co, H, W = delta.shape
    Ci = (w if w is not None else gw).shape[1]
    _check(scratch, (B, Ci, H, W), Co, delta.dtype)
    V, M, acc, tmp, XP, _, Ut, q = scratch
    nty, ntx = tiles(H, W)
    if gw is not None:
        _weight_grad_groups(acc, tmp, delta, w_trace, V, M, XP, nty, ntx)
        _reduce_filter_grad(gw, acc, tmp)
    if gx is not None:
        if not transformed:
            filter_transform(Ut, w, q, True)
        _forward(gx, delta, Ut, V, M, XP, nty, ntx, True)
