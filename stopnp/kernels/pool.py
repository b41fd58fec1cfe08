"""Pooling kernels over (B, C, H, W), window = stride = k, no padding, floor:
Ho = H//k, Wo = W//k (trailing rows/columns that do not fill a window are dropped; they get no
gradient).

    avgpool   out[b,c,i,j]   = (1/k²) Σ_{p,q<k} x[b,c, k·i+p, k·j+q]
              gx[b,c, k·i+p, k·j+q] += gout[b,c,i,j] / k²
    maxpool   out[b,c,i,j]   = max_{p,q<k} x[b,c, k·i+p, k·j+q]
              argmax[b,c,i,j] = h·W + w of the first maximum in row-major window order (ties -> first)
              gx[b,c, argmax // W, argmax % W] += gout[b,c,i,j]

Global average pooling is avgpool with k = H = W. prange over the (b, c) plane an iteration owns;
windows do not overlap, so each gx element receives at most one term. Forward outputs (out, argmax)
are overwritten, gx accumulates. Arithmetic in the arrays' dtype.
"""
from numba import njit, prange


@njit(cache=True, parallel=True)
def avgpool2d_forward(out, x, k):
    B, C, Ho, Wo = out.shape
    inv = x.dtype.type(1.0 / (k * k))  # 1/k² in the array dtype (no silent float64 promotion)
    zero = x.dtype.type(0)
    for bc in prange(B * C):  # iteration owns the plane out[b, c]
        b, c = bc // C, bc % C
        for i in range(Ho):
            o = out[b, c, i]  # row views: the inner loops vectorize (4-D indexing did not)
            if k == 2:  # the usual window, unrolled: the same sum in the same order
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
            for p in range(k):  # window sum in order (p, q), as the formula
                xr = x[b, c, i * k + p]
                for j in range(Wo):
                    acc = o[j]
                    for q in range(k):
                        acc += xr[j * k + q]
                    o[j] = acc
            for j in range(Wo):
                o[j] *= inv


@njit(cache=True, parallel=True)
def avgpool2d_backward(gx, gout, k):
    B, C, Ho, Wo = gout.shape
    inv = gx.dtype.type(1.0 / (k * k))
    for bc in prange(B * C):  # iteration owns the plane gx[b, c]
        b, c = bc // C, bc % C
        for i in range(Ho):
            g = gout[b, c, i]
            if k == 2:
                x0, x1 = gx[b, c, 2 * i], gx[b, c, 2 * i + 1]
                for j in range(Wo):
                    gj = g[j] * inv
                    x0[2 * j] += gj
                    x0[2 * j + 1] += gj
                    x1[2 * j] += gj
                    x1[2 * j + 1] += gj
                continue
            for p in range(k):
                xr = gx[b, c, i * k + p]
                for j in range(Wo):
                    gj = g[j] * inv
                    for q in range(k):
                        xr[j * k + q] += gj


@njit(cache=True, parallel=True)
def maxpool2d_forward(out, argmax, x, k):
    B, C, Ho, Wo = out.shape
    W = x.shape[3]
    for bc in prange(B * C):  # iteration owns the planes out[b, c], argmax[b, c]
        b, c = bc // C, bc % C
        for i in range(Ho):
            for j in range(Wo):
                best = x[b, c, i * k, j * k]
                idx = (i * k) * W + j * k
                for p in range(k):
                    for q in range(k):
                        v = x[b, c, i * k + p, j * k + q]
                        if v > best:  # strict: the first maximum wins ties
                            best = v
                            idx = (i * k + p) * W + j * k + q
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
