"""BPSTA neuron kernels (Shen, Zhao, Zeng, Patterns 2022), one layer, one step, whole batch.

Forward (hard reset; the β term is 0 in the forward pass):
    I[t] = ReLU(BN(W ⊛ x[t]))
    v[t] = m[t-1] + I[t];   s[t] = H(v[t] - θ);   m[t] = λ·v[t]·(1 - s[t])
Backward (BPTT with two changed derivatives), em[t] = ∂E/∂m[t] = ev[t+1]:
    BPSA  ∂s/∂v     = H(v - θ) / v          only firing neurons pass error, with gain 1/v
    BPTA  ∂m[t]/∂s[t] = λβ                  (replaces the reset path -λv)
    gs    = g[t] + λβ·em[t]
    ev[t] = gs·H(v-θ)/v + λ(1 - s[t])·em[t]
    eI[t] = ev[t]·1[I[t] > 0]                (ReLU)
ANN warm-up (spiking nodes bypassed: a ReLU network, one step):  a = I,  eI = g·1[I > 0]
Plain BPTT of the same neuron (the reference BPSTA changes; compare's cosine): no β path and
    ∂s/∂v     = φ(v - θ)                    surrogate (codes as in kernels/lif.py)
    ∂m[t]/∂s[t] = -λ·v[t] (reset kept) or 0 (reset detached)
    gs    = g[t] + (keep_reset ? -λ·v·em[t] : 0)
    ev[t] = gs·φ(v - θ) + λ(1 - s[t])·em[t];   eI[t] = ev[t]·1[I[t] > 0]
"""
import math

from numba import njit, prange


@njit(cache=True, parallel=True)
def relu_(i_in):
    B, N = i_in.shape
    for b in prange(B):
        for j in range(N):
            if i_in[b, j] < 0.0:
                i_in[b, j] = 0.0


@njit(cache=True, parallel=True)
def bpsta_forward(v, s, m, i_in, lam, theta):
    """v = m + I; s = H(v - θ); m <- λ·v·(1 - s). ``m`` is the state, updated in place."""
    B, N = v.shape
    for b in prange(B):
        for j in range(N):
            vv = m[b, j] + i_in[b, j]
            sp = 1.0 if vv >= theta[j] else 0.0
            v[b, j] = vv
            s[b, j] = sp
            m[b, j] = lam * vv * (1.0 - sp)


@njit(cache=True, parallel=True)
def bpsta_backward(e, g, v, s, i_in, lam, beta, theta):
    """``e`` holds ev[t+1] (= em[t]) on entry and eI[t] on exit... see below.

    On exit ``e`` holds ev[t] (carried to step t-1); the error on the current, eI = ev·1[I > 0], is
    written into ``g`` (which is no longer needed after this step).
    """
    B, N = v.shape
    for b in prange(B):
        for j in range(N):
            em = e[b, j]
            gs = g[b, j] + lam * beta * em
            dsdv = 1.0 / v[b, j] if v[b, j] >= theta[j] else 0.0
            ev = gs * dsdv + lam * (1.0 - s[b, j]) * em
            e[b, j] = ev
            g[b, j] = ev if i_in[b, j] > 0.0 else 0.0


@njit(cache=True, parallel=True)
def relu_backward_(g, i_in):
    """g <- g·1[I > 0] (ANN warm-up: the error on the current of a bypassed node)."""
    B, N = g.shape
    for b in prange(B):
        for j in range(N):
            if i_in[b, j] <= 0.0:
                g[b, j] = 0.0


@njit(cache=True, inline="always")
def phi(z, kind):
    """Surrogate ∂s/∂v, codes 0..4 = exp, triangle, sigmoid (slope 4), atan, rectangle (as kernels/lif.py)."""
    if kind == 0:
        return math.exp(-abs(z))
    elif kind == 1:
        return max(0.0, 1.0 - abs(z))
    elif kind == 2:
        sg = 1.0 / (1.0 + math.exp(-4.0 * z))
        return 4.0 * sg * (1.0 - sg)
    elif kind == 3:
        return 1.0 / (1.0 + (math.pi * z) ** 2)
    return 1.0 if abs(z) < 0.5 else 0.0


@njit(cache=True, parallel=True)
def bpsta_bptt_backward(e, g, v, s, i_in, lam, theta, surr, keep_reset):
    """Plain BPTT step of the BPSTA neuron; ``e`` and ``g`` as in ``bpsta_backward``."""
    B, N = v.shape
    for b in prange(B):
        for j in range(N):
            em = e[b, j]
            gs = g[b, j]
            if keep_reset:
                gs -= lam * v[b, j] * em
            ev = gs * phi(v[b, j] - theta[j], surr) + lam * (1.0 - s[b, j]) * em
            e[b, j] = ev
            g[b, j] = ev if i_in[b, j] > 0.0 else 0.0
