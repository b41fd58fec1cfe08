"""2-D convolution kernels (cross-correlation, no bias), NCHW, square kernel K, stride s, zero pad p.

    forward          out[b,o,i,j]   = Σ_{c,u,v} W[o,c,u,v]·x[b,c, s·i+u-p, s·j+v-p]
    input gradient   gx[b,c,h,w]   += Σ_{o,u,v: h = s·i+u-p, w = s·j+v-p} gout[b,o,i,j]·W[o,c,u,v]
    weight gradient  gW[o,c,u,v]   += Σ_{b,i,j} gout[b,o,i,j]·a[b,c, s·i+u-p, s·j+v-p]
                     (a = x for BPTT, the trace map w~ for STOP: the same correlation)

``conv2d_*`` are the C-portable loop references (prange over the output an iteration owns). The
``*_fast`` functions lower the same sums to GEMMs through im2col: cols[b, (c,u,v), (i,j)].
"""
import numpy as np
from numba import njit, prange


def out_size(h, k, stride, pad):
    return (h + 2 * pad - k) // stride + 1


@njit(cache=True, parallel=True)
def conv2d_forward(out, x, w, stride, pad):
    B, Co, Ho, Wo = out.shape
    Ci, H, W = x.shape[1], x.shape[2], x.shape[3]
    K = w.shape[2]
    for bo in prange(B * Co):
        b, o = bo // Co, bo % Co
        for i in range(Ho):
            for j in range(Wo):
                acc = 0.0
                for c in range(Ci):
                    for u in range(K):
                        h = i * stride + u - pad
                        if h < 0 or h >= H:
                            continue
                        for v in range(K):
                            ww = j * stride + v - pad
                            if ww < 0 or ww >= W:
                                continue
                            acc += w[o, c, u, v] * x[b, c, h, ww]
                out[b, o, i, j] = acc


@njit(cache=True, parallel=True)
def conv2d_backward_input(gx, gout, w, stride, pad):
    B, Co, Ho, Wo = gout.shape
    Ci, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    K = w.shape[2]
    for bc in prange(B * Ci):
        b, c = bc // Ci, bc % Ci
        for o in range(Co):
            for i in range(Ho):
                for j in range(Wo):
                    g = gout[b, o, i, j]
                    for u in range(K):
                        h = i * stride + u - pad
                        if h < 0 or h >= H:
                            continue
                        for v in range(K):
                            ww = j * stride + v - pad
                            if ww < 0 or ww >= W:
                                continue
                            gx[b, c, h, ww] += g * w[o, c, u, v]


@njit(cache=True, parallel=True)
def conv2d_backward_weight(gw, gout, a, stride, pad):
    B, Co, Ho, Wo = gout.shape
    Ci, H, W = a.shape[1], a.shape[2], a.shape[3]
    K = gw.shape[2]
    for oc in prange(Co * Ci):
        o, c = oc // Ci, oc % Ci
        for u in range(K):
            for v in range(K):
                acc = 0.0
                for b in range(B):
                    for i in range(Ho):
                        h = i * stride + u - pad
                        if h < 0 or h >= H:
                            continue
                        for j in range(Wo):
                            ww = j * stride + v - pad
                            if ww < 0 or ww >= W:
                                continue
                            acc += gout[b, o, i, j] * a[b, c, h, ww]
                gw[o, c, u, v] += acc


# --- im2col lowering -----------------------------------------------------------------------------

def im2col_shape(x_shape, KH, KW, stride, pad):
    B, C, H, W = x_shape
    return (B, C * KH * KW, out_size(H, KH, stride, pad) * out_size(W, KW, stride, pad))


@njit(cache=True, parallel=True)
def im2col(cols, x, KH, KW, stride, pad):
    """cols[b, (c·KH + u)·KW + v, i·Wo + j] = x[b, c, s·i+u-p, s·j+v-p] (0 outside)."""
    B, C, H, W = x.shape
    Ho, Wo = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    for b in prange(B):
        for c in range(C):
            for u in range(KH):
                for v in range(KW):
                    r = (c * KH + u) * KW + v
                    for i in range(Ho):
                        h = i * stride + u - pad
                        for j in range(Wo):
                            ww = j * stride + v - pad
                            if h < 0 or h >= H or ww < 0 or ww >= W:
                                cols[b, r, i * Wo + j] = 0.0
                            else:
                                cols[b, r, i * Wo + j] = x[b, c, h, ww]


@njit(cache=True, parallel=True)
def col2im_add(gx, cols, KH, KW, stride, pad):
    """gx[b, c, s·i+u-p, s·j+v-p] += cols[b, (c,u,v), (i,j)] (the adjoint of im2col)."""
    B, C, H, W = gx.shape
    Ho, Wo = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    for b in prange(B):
        for c in range(C):
            for u in range(KH):
                for v in range(KW):
                    r = (c * KH + u) * KW + v
                    for i in range(Ho):
                        h = i * stride + u - pad
                        if h < 0 or h >= H:
                            continue
                        for j in range(Wo):
                            ww = j * stride + v - pad
                            if ww < 0 or ww >= W:
                                continue
                            gx[b, c, h, ww] += cols[b, r, i * Wo + j]


def conv2d_forward_fast(out, x, w, stride, pad, cols):
    K = w.shape[2]
    im2col(cols, x, K, K, stride, pad)
    B, Co = out.shape[:2]
    np.matmul(w.reshape(Co, -1), cols, out=out.reshape(B, Co, -1))


def conv2d_backward_input_fast(gx, gout, w, stride, pad, cols):
    K = w.shape[2]
    B, Co = gout.shape[:2]
    np.matmul(w.reshape(Co, -1).T, gout.reshape(B, Co, -1), out=cols)
    col2im_add(gx, cols, K, K, stride, pad)


def conv2d_backward_weight_fast(gw, gout, a, stride, pad, cols, scratch=None):
    """gW += Σ_b gout[b] · cols(a)[b]ᵀ, one GEMM per sample (``scratch``: (Co, Ci·K·K))."""
    K = gw.shape[2]
    im2col(cols, a, K, K, stride, pad)
    B, Co = gout.shape[:2]
    g3 = gout.reshape(B, Co, -1)
    gw2 = gw.reshape(Co, -1)
    if scratch is None:
        scratch = np.empty_like(gw2)
    for b in range(B):
        np.matmul(g3[b], cols[b].T, out=scratch)
        gw2 += scratch
