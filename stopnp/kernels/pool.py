"""Pooling kernels over (B, C, H, W), window = stride = k, no padding (floor).

    avgpool   out[b,c,i,j]  = (1/k²) Σ_{p,q<k} x[b,c,ki+p,kj+q]
              gx[b,c,ki+p,kj+q] += gout[b,c,i,j] / k²
    maxpool   out[b,c,i,j]  = max_{p,q} x[b,c,ki+p,kj+q];  argmax = flat index (h·W + w) of the first max
              gx[b,c,argmax] += gout[b,c,i,j]

Global average pooling is avgpool with k = H = W.
"""
from numba import njit, prange


@njit(cache=True, parallel=True)
def avgpool2d_forward(out, x, k):
    B, C, Ho, Wo = out.shape
    inv = 1.0 / (k * k)
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        for i in range(Ho):
            for j in range(Wo):
                acc = 0.0
                for p in range(k):
                    for q in range(k):
                        acc += x[b, c, i * k + p, j * k + q]
                out[b, c, i, j] = acc * inv


@njit(cache=True, parallel=True)
def avgpool2d_backward(gx, gout, k):
    B, C, Ho, Wo = gout.shape
    inv = 1.0 / (k * k)
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        for i in range(Ho):
            for j in range(Wo):
                g = gout[b, c, i, j] * inv
                for p in range(k):
                    for q in range(k):
                        gx[b, c, i * k + p, j * k + q] += g


@njit(cache=True, parallel=True)
def maxpool2d_forward(out, argmax, x, k):
    B, C, Ho, Wo = out.shape
    W = x.shape[3]
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        for i in range(Ho):
            for j in range(Wo):
                best = x[b, c, i * k, j * k]
                idx = (i * k) * W + j * k
                for p in range(k):
                    for q in range(k):
                        v = x[b, c, i * k + p, j * k + q]
                        if v > best:
                            best = v
                            idx = (i * k + p) * W + j * k + q
                out[b, c, i, j] = best
                argmax[b, c, i, j] = idx


@njit(cache=True, parallel=True)
def maxpool2d_backward(gx, gout, argmax):
    B, C, Ho, Wo = gout.shape
    W = gx.shape[3]
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        for i in range(Ho):
            for j in range(Wo):
                idx = argmax[b, c, i, j]
                gx[b, c, idx // W, idx % W] += gout[b, c, i, j]
