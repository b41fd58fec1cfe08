"""Batch normalisation over per-channel statistics of (B, C, S) views (S = H·W, or 1 for dense).

Training (statistics of this step's batch, n = B·S):
    μ_c = (1/n) Σ_{b,s} x,   σ²_c = (1/n) Σ (x - μ_c)²,   r_c = 1/sqrt(σ²_c + ε)
    x̂ = (x - μ_c)·r_c,       y = γ_c·x̂ + β_c
    ∂γ_c += Σ gy·x̂,  ∂β_c += Σ gy,
    gx += (γ_c r_c / n)·( n·gy - Σ gy - x̂·Σ gy·x̂ )
Evaluation (running statistics are constants):
    y = γ_c (x - m_c)/sqrt(v_c + ε) + β_c;   gx += gy·γ_c/sqrt(v_c + ε)
Folding for inference/export: W'_c = W_c·γ_c/sqrt(v_c+ε),  b_c = β_c - γ_c m_c/sqrt(v_c+ε).
"""
import math

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def bn_forward_train(y, xhat, mean, invstd, x, gamma, beta, eps):
    B, C, S = x.shape
    n = B * S
    for c in prange(C):
        acc = 0.0
        for b in range(B):
            for s in range(S):
                acc += x[b, c, s]
        mu = acc / n
        acc = 0.0
        for b in range(B):
            for s in range(S):
                d = x[b, c, s] - mu
                acc += d * d
        r = 1.0 / math.sqrt(acc / n + eps)
        mean[c] = mu
        invstd[c] = r
        for b in range(B):
            for s in range(S):
                xh = (x[b, c, s] - mu) * r
                xhat[b, c, s] = xh
                y[b, c, s] = gamma[c] * xh + beta[c]


@njit(cache=True, parallel=True)
def bn_backward_train(gx, ggamma, gbeta, gy, xhat, gamma, invstd):
    B, C, S = gy.shape
    n = B * S
    for c in prange(C):
        sg = 0.0
        sgx = 0.0
        for b in range(B):
            for s in range(S):
                sg += gy[b, c, s]
                sgx += gy[b, c, s] * xhat[b, c, s]
        ggamma[c] += sgx
        gbeta[c] += sg
        k = gamma[c] * invstd[c] / n
        for b in range(B):
            for s in range(S):
                gx[b, c, s] += k * (n * gy[b, c, s] - sg - xhat[b, c, s] * sgx)


@njit(cache=True, parallel=True)
def bn_forward_eval(y, x, gamma, beta, running_mean, running_var, eps):
    B, C, S = x.shape
    for c in prange(C):
        r = 1.0 / math.sqrt(running_var[c] + eps)
        for b in range(B):
            for s in range(S):
                y[b, c, s] = gamma[c] * (x[b, c, s] - running_mean[c]) * r + beta[c]


@njit(cache=True, parallel=True)
def bn_backward_eval(gx, ggamma, gbeta, gy, x, gamma, running_mean, running_var, eps):
    B, C, S = gy.shape
    for c in prange(C):
        r = 1.0 / math.sqrt(running_var[c] + eps)
        sg = 0.0
        sgx = 0.0
        for b in range(B):
            for s in range(S):
                sg += gy[b, c, s]
                sgx += gy[b, c, s] * (x[b, c, s] - running_mean[c]) * r
                gx[b, c, s] += gy[b, c, s] * gamma[c] * r
        ggamma[c] += sgx
        gbeta[c] += sg


def bn_fold(w, gamma, beta, running_mean, running_var, eps):
    """(W', b) with W' ⊛ x + b == BN_eval(W ⊛ x), per output channel (axis 0 of ``w``)."""
    scale = gamma / np.sqrt(running_var + eps)
    w_folded = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    bias = beta - scale * running_mean
    return w_folded.astype(w.dtype), bias.astype(w.dtype)
