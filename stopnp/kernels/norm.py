"""Batch normalisation over per-channel statistics of (B, C, S) views (S = H·W, or 1 for dense).

Training (statistics of this step's batch, n = B·S, sums over b and s):
    μ_c  = (1/n) Σ x                          mean                      -> mean[c]
    σ²_c = (1/n) Σ (x - μ_c)²                 biased variance, two-pass (no cancellation)
    r_c  = 1/sqrt(σ²_c + ε)                                             -> invstd[c]
    x̂    = (x - μ_c)·r_c,    y = γ_c·x̂ + β_c
  backward (exact, through the batch statistics):
    ∂γ_c += Σ gy·x̂,   ∂β_c += Σ gy
    gx   += (γ_c r_c / n)·( n·gy - Σ gy - x̂·Σ gy·x̂ )
Running statistics (``add_var_from_invstd``): the step's σ²_c = 1/r_c² - ε is summed over steps; the
optimizer moves m_c, v_c towards the step means (optim.update_bn_running).
Evaluation (running statistics m_c, v_c are constants), r_c = 1/sqrt(v_c + ε):
    y = γ_c (x - m_c)·r_c + β_c
    ∂γ_c += Σ gy·(x - m_c)·r_c,   ∂β_c += Σ gy,   gx += gy·γ_c·r_c
Folding for inference/export (``bn_fold``, per output channel c = axis 0 of W):
    W'_c = W_c·γ_c/sqrt(v_c + ε),   b_c = β_c - γ_c m_c/sqrt(v_c + ε)   so that  W' ⊛ x + b = BN_eval(W ⊛ x)

prange over channels: an iteration owns every output of its channel and does its sums serially
in (b, s) order, so results are bitwise identical for any thread count. Arithmetic in the arrays'
dtype (ε and n are cast to it). Forward outputs are overwritten; gradient outputs accumulate.
"""
import math

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def bn_forward_train(y, xhat, mean, invstd, x, gamma, beta, eps):
    B, C, S = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    nf = x.dtype.type(B * S)
    epsf = x.dtype.type(eps)
    for c in prange(C):  # iteration owns channel c
        acc = zero
        for b in range(B):
            for s in range(S):
                acc += x[b, c, s]
        mu = acc / nf
        acc = zero
        for b in range(B):
            for s in range(S):
                d = x[b, c, s] - mu
                acc += d * d
        r = one / math.sqrt(acc / nf + epsf)
        mean[c] = mu
        invstd[c] = r
        g, bt = gamma[c], beta[c]
        for b in range(B):
            for s in range(S):
                xh = (x[b, c, s] - mu) * r
                xhat[b, c, s] = xh
                y[b, c, s] = g * xh + bt


@njit(cache=True, parallel=True)
def bn_backward_train(gx, ggamma, gbeta, gy, xhat, gamma, invstd):
    B, C, S = gy.shape
    zero = gy.dtype.type(0)
    nf = gy.dtype.type(B * S)
    for c in prange(C):  # iteration owns channel c (gx[:, c], ggamma[c], gbeta[c])
        sg = zero
        sgx = zero
        for b in range(B):
            for s in range(S):
                sg += gy[b, c, s]
                sgx += gy[b, c, s] * xhat[b, c, s]
        ggamma[c] += sgx
        gbeta[c] += sg
        k = gamma[c] * invstd[c] / nf
        for b in range(B):
            for s in range(S):
                gx[b, c, s] += k * (nf * gy[b, c, s] - sg - xhat[b, c, s] * sgx)


@njit(cache=True)
def add_var_from_invstd(var_sum, invstd, eps):
    """var_sum += 1/invstd² - ε: the step's batch variance back from its inverse std (running stats)."""
    one, e = var_sum.dtype.type(1), var_sum.dtype.type(eps)
    for c in range(var_sum.shape[0]):
        var_sum[c] += one / (invstd[c] * invstd[c]) - e


@njit(cache=True, parallel=True)
def bn_forward_eval(y, x, gamma, beta, running_mean, running_var, eps):
    B, C, S = x.shape
    one = x.dtype.type(1)
    epsf = x.dtype.type(eps)
    for c in prange(C):  # iteration owns channel c
        r = one / math.sqrt(running_var[c] + epsf)
        m, g, bt = running_mean[c], gamma[c], beta[c]
        for b in range(B):
            for s in range(S):
                y[b, c, s] = g * (x[b, c, s] - m) * r + bt


@njit(cache=True, parallel=True)
def bn_backward_eval(gx, ggamma, gbeta, gy, x, gamma, running_mean, running_var, eps):
    B, C, S = gy.shape
    zero, one = gy.dtype.type(0), gy.dtype.type(1)
    epsf = gy.dtype.type(eps)
    for c in prange(C):  # iteration owns channel c (gx[:, c], ggamma[c], gbeta[c])
        r = one / math.sqrt(running_var[c] + epsf)
        m = running_mean[c]
        gr = gamma[c] * r
        sg = zero
        sgx = zero
        for b in range(B):
            for s in range(S):
                g = gy[b, c, s]
                sg += g
                sgx += g * (x[b, c, s] - m) * r
                gx[b, c, s] += g * gr
        ggamma[c] += sgx
        gbeta[c] += sg


def bn_fold(w, gamma, beta, running_mean, running_var, eps):
    """(W', b) with W' ⊛ x + b == BN_eval(W ⊛ x), per output channel (axis 0 of ``w``; any ndim,
    so dense (Co, Ci) weights fold the same way). Returns new arrays in ``w``'s dtype."""
    scale = gamma / np.sqrt(running_var + eps)
    w_folded = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    bias = beta - scale * running_mean
    return w_folded.astype(w.dtype), bias.astype(w.dtype)
