"""Pooling kernels over (B, C, H, W), window = stride = (kh, kw), no padding, floor:
Ho = H//kh, Wo = W//kw (trailing rows/columns that do not fill a window are dropped; they get no
gradient).

    avgpool   out[b,c,i,j]   = (1/(kh·kw)) Σ_{p<kh, q<kw} x[b,c, kh·i+p, kw·j+q]
              gx[b,c, kh·i+p, kw·j+q] += gout[b,c,i,j] / (kh·kw)
    maxpool   out[b,c,i,j]   = max_{p<kh, q<kw} x[b,c, kh·i+p, kw·j+q]
              argmax[b,c,i,j] = h·W + w of the first maximum in row-major window order (ties -> first)
              gx[b,c, argmax // W, argmax % W] += gout[b,c,i,j]

Global average pooling is avgpool with (kh, kw) = (H, W). The caller guarantees Ho·kh <= H and
Wo·kw <= W (network.check_layers; numba does not check bounds). prange over the (b, c) plane an iteration owns;
windows do not overlap, so each gx element receives at most one term. Forward outputs (out, argmax)
are overwritten, gx accumulates. Arithmetic in the arrays' dtype.
"""
from numba import njit, prange


@njit(cache=True, parallel=True)
def avgpool2d_forward(out, x, kh, kw):
    B, C, Ho, Wo = out.shape
    inv = x.dtype.type(1.0 / (kh * kw))  # 1/k² in the array dtype (no silent float64 promotion)
    zero = x.dtype.type(0)
    for bc in prange(B * C):  # iteration owns the plane out[b, c]
        b, c = bc // C, bc % C
        for i in range(Ho):
            o = out[b, c, i]  # row views: the inner loops vectorize (4-D indexing did not)
            if kh == 2 and kw == 2:  # the usual window, unrolled: the same sum in the same order
                x0, x1 = x[b, c, 2 * i], x[b, c, 2 * i + 1]
                for j in range(Wo):
                    acc = zero + x0[2 * j]
                    acc += x0[2 * j + 1]
                    acc += x1[2 * j]
                    acc += x1[2 * j + 1]
                    o[j] = acc * inv
                continue
            for j in range(Wo):
                o[j] = zero
            for p in range(kh):  # window sum in order (p, q), as the formula
                xr = x[b, c, i * kh + p]
                for j in range(Wo):
                    acc = o[j]
                    for q in range(kw):
                        acc += xr[j * kw + q]
                    o[j] = acc
            for j in range(Wo):
                o[j] *= inv


@njit(cache=True, parallel=True)
def avgpool2d_backward(gx, gout, kh, kw):
    B, C, Ho, Wo = gout.shape
    inv = gx.dtype.type(1.0 / (kh * kw))
    for bc in prange(B * C):  # iteration owns the plane gx[b, c]
        b, c = bc // C, bc % C
        for i in range(Ho):
            g = gout[b, c, i]
            if kh == 2 and kw == 2:
                x0, x1 = gx[b, c, 2 * i], gx[b, c, 2 * i + 1]
                for j in range(Wo):
                    gj = g[j] * inv
                    x0[2 * j] += gj
                    x0[2 * j + 1] += gj
                    x1[2 * j] += gj
                    x1[2 * j + 1] += gj
                continue
            for p in range(kh):
                xr = gx[b, c, i * kh + p]
                for j in range(Wo):
                    gj = g[j] * inv
                    for q in range(kw):
                        xr[j * kw + q] += gj


@njit(cache=True, parallel=True)
def maxpool2d_forward(out, argmax, x, kh, kw):
    B, C, Ho, Wo = out.shape
    W = x.shape[3]
    for bc in prange(B * C):  # iteration owns the planes out[b, c], argmax[b, c]
        b, c = bc // C, bc % C
        for i in range(Ho):
            for j in range(Wo):
                best = x[b, c, i * kh, j * kw]
                idx = (i * kh) * W + j * kw
                for p in range(kh):
                    for q in range(kw):
                        v = x[b, c, i * kh + p, j * kw + q]
                        if v > best:  # strict: the first maximum wins ties
                            best = v
                            idx = (i * kh + p) * W + j * kw + q
                out[b, c, i, j] = best
                argmax[b, c, i, j] = idx


@njit(cache=True, parallel=True)
def maxpool2d_backward(gx, gout, argmax):
    B, C, Ho, Wo = gout.shape
    W = gx.shape[3]
    for bc in prange(B * C):  # iteration owns the plane gx[b, c] (argmax stays inside it)
        b, c = bc // C, bc % C
        for i in range(Ho):
            for j in range(Wo):
                idx = argmax[b, c, i, j]
                gx[b, c, idx // W, idx % W] += gout[b, c, i, j]
