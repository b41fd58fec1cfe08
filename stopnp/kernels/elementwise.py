"""Small elementwise kernels over flat ``(B, M)`` views (dropout masks, sums into currents).

    mul_into(out, a, m)    out  = a ⊙ m          dropout forward (m holds mask / (1 - p))
    mul_add(out, a, m)     out += a ⊙ m          dropout backward
    add_into(out, a)       out += a              gradient / current sums
    axpy(out, a, c)        out += c·a            static-input weight gradients
    count_nonzero(out, a)  out[b] = #{j: a[b, j] != 0}   spike counts (0/1 spikes: their sum)

Row views (``o, x = out[b], a[b]``) in the inner loops: LLVM vectorizes those, not 2-D indexing.
"""
from numba import njit, prange


@njit(cache=True, parallel=True)
def mul_into(out, a, m):
    B, M = out.shape
    for b in prange(B):
        o, x, k = out[b], a[b], m[b]
        for j in range(M):
            o[j] = x[j] * k[j]


@njit(cache=True, parallel=True)
def mul_add(out, a, m):
    B, M = out.shape
    for b in prange(B):
        o, x, k = out[b], a[b], m[b]
        for j in range(M):
            o[j] += x[j] * k[j]


@njit(cache=True, parallel=True)
def add_into(out, a):
    B, M = out.shape
    for b in prange(B):
        o, x = out[b], a[b]
        for j in range(M):
            o[j] += x[j]


@njit(cache=True, parallel=True)
def axpy(out, a, c):
    """out += c·a (static-input weight gradients: G += c_t·ĝ[t])."""
    B, M = out.shape
    for b in prange(B):
        o, x = out[b], a[b]
        for j in range(M):
            o[j] += c * x[j]


@njit(cache=True, parallel=True)
def count_nonzero(out, a):
    """out[b] = number of nonzero a[b, j] (an integer count vectorizes; a float sum in order does not)."""
    B, M = a.shape
    for b in prange(B):
        x = a[b]
        n = 0
        for j in range(M):
            n += x[j] != 0
        out[b] = n
