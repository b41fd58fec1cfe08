"""Small elementwise kernels over flat ``(B, M)`` views (dropout masks, sums into currents).

    mul_into(out, a, m)    out  = a ⊙ m          dropout forward (m holds mask / (1 - p))
    mul_add(out, a, m)     out += a ⊙ m          dropout backward
    add_into(out, a)       out += a              gradient / current sums
    axpy(out, a, c)        out += c·a            static-input weight gradients
"""
from numba import njit, prange


@njit(cache=True, parallel=True)
def mul_into(out, a, m):
    B, M = out.shape
    for b in prange(B):
        for j in range(M):
            out[b, j] = a[b, j] * m[b, j]


@njit(cache=True, parallel=True)
def mul_add(out, a, m):
    B, M = out.shape
    for b in prange(B):
        for j in range(M):
            out[b, j] += a[b, j] * m[b, j]


@njit(cache=True, parallel=True)
def add_into(out, a):
    B, M = out.shape
    for b in prange(B):
        for j in range(M):
            out[b, j] += a[b, j]


@njit(cache=True, parallel=True)
def axpy(out, a, c):
    """out += c·a (static-input weight gradients: G += c_t·ĝ[t])."""
    B, M = out.shape
    for b in prange(B):
        for j in range(M):
            out[b, j] += c * a[b, j]
