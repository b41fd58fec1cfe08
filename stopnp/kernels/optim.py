"""Optimizer update kernels over flat parameter arrays, the clamps inside (stopnp/optim.py calls them).

    SGD:   m <- μ·m + (g + wd·p);  p <- p - η·(nesterov ? g' + μ·m : m)
    Adam:  g' = g + wd·p;  m <- β1·m + (1-β1)·g';  v <- β2·v + (1-β2)·g'²
           p <- p - η·(m/bc1)/(sqrt(v/bc2) + ε)
    clamp: p <- min(max(p, lo), hi) after the update, in p's dtype (NaN stays NaN)

Every array is a flat (N,) view updated in place; an iteration owns element i. Arrays under SERIAL_BELOW
elements run serially (a parallel launch costs more than α or a small θ), larger ones in a parallel loop:
the same formula per element, so both give the same bits.
"""
import math

from numba import njit, prange

SERIAL_BELOW = 256  # parameters smaller than this update serially (a parallel launch costs more: α, small θ)


@njit(cache=True, inline="always")
def _clamp(p, i, lo, hi):
    """p[i] into [lo, hi] after its update (as stored: in p's dtype); NaN stays NaN."""
    w = p[i]
    if w < lo:
        p[i] = lo
    elif w > hi:
        p[i] = hi


@njit(cache=True, inline="always")
def _sgd_at(p, g, m, lr, mu, wd, nesterov, lo, hi, i):
    gi = g[i] + wd * p[i]
    mi = mu * m[i] + gi
    m[i] = mi
    p[i] -= lr * (gi + mu * mi if nesterov else mi)
    _clamp(p, i, lo, hi)


@njit(cache=True, parallel=True)
def _sgd_par(p, g, m, lr, mu, wd, nesterov, lo, hi):
    for i in prange(p.shape[0]):  # (a prange loop vectorizes; the same loop serial did not: aliasing)
        _sgd_at(p, g, m, lr, mu, wd, nesterov, lo, hi, i)


@njit(cache=True)
def _sgd_ser(p, g, m, lr, mu, wd, nesterov, lo, hi):
    for i in range(p.shape[0]):
        _sgd_at(p, g, m, lr, mu, wd, nesterov, lo, hi, i)


def sgd(p, g, m, lr, mu, wd, nesterov, lo=-math.inf, hi=math.inf):
    """In place over flat arrays: m = μm + (g + wd·p); p -= lr·(nesterov ? g' + μm : m); p into [lo, hi]."""
    lo, hi = p.dtype.type(lo), p.dtype.type(hi)
    (_sgd_ser if p.shape[0] < SERIAL_BELOW else _sgd_par)(p, g, m, lr, mu, wd, nesterov, lo, hi)


@njit(cache=True, inline="always")
def _adam_at(p, g, m, v, lr, b1, b2, eps, bc1, bc2, wd, lo, hi, i):
    gi = g[i] + wd * p[i]
    mi = b1 * m[i] + (1.0 - b1) * gi
    vi = b2 * v[i] + (1.0 - b2) * gi * gi
    m[i] = mi
    v[i] = vi
    p[i] -= lr * (mi / bc1) / (math.sqrt(vi / bc2) + eps)
    _clamp(p, i, lo, hi)


@njit(cache=True, parallel=True)
def _adam_par(p, g, m, v, lr, b1, b2, eps, bc1, bc2, wd, lo, hi):
    for i in prange(p.shape[0]):
        _adam_at(p, g, m, v, lr, b1, b2, eps, bc1, bc2, wd, lo, hi, i)


@njit(cache=True)
def _adam_ser(p, g, m, v, lr, b1, b2, eps, bc1, bc2, wd, lo, hi):
    for i in range(p.shape[0]):
        _adam_at(p, g, m, v, lr, b1, b2, eps, bc1, bc2, wd, lo, hi, i)


def adam(p, g, m, v, lr, b1, b2, eps, bc1, bc2, wd, lo=-math.inf, hi=math.inf):
    """In place over flat arrays: Adam with bias corrections bc1 = 1-β1^t, bc2 = 1-β2^t; p into [lo, hi]."""
    lo, hi = p.dtype.type(lo), p.dtype.type(hi)
    (_adam_ser if p.shape[0] < SERIAL_BELOW else _adam_par)(p, g, m, v, lr, b1, b2, eps, bc1, bc2, wd, lo, hi)
