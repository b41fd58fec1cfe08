"""Dense synapse kernels (no bias).

    forward          out[b, o]  = Σ_i W[o, i]·x[b, i]
    input gradient   gx[b, i]  += Σ_o δ[b, o]·W[o, i]
    weight gradient  gW[o, i]  += Σ_b δ[b, o]·w~[b, i]

δ (``delta``) is the error on W·x (after BN's backward when there is one); w~ (``w_trace``) is what the
weight gradient correlates it with: STOP's trace, x itself for SLTT and BPTT, â for OTTT.

The ``*_loop`` functions are the C-portable references (numba, prange over the output an iteration
owns, fixed summation order). The ``*_blas`` functions compute the same through NumPy's sgemm/dgemm;
they take a caller-allocated scratch so that nothing is allocated per step. How many BLAS threads a
GEMM gets is the caller's business (``stopnp.engine.threads``): kernels import nothing from the package.

The ``*_pool`` functions run the same GEMMs inside numba's thread pool, for networks whose conv kernels
keep that pool busy (NumPy's BLAS then has one thread): the output rows are split into ``parts``
fixed by the shape alone (``parts_for``), each part one single-threaded BLAS call (SciPy's, through
``np.dot``) that owns its rows, so the results are the same for any thread count. The weight gradient
splits gW by rows o and reads δᵀ from a caller's (O, B) scratch that each part fills for its rows.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def linear_forward_loop(out, x, w):
    B, I = x.shape
    O = w.shape[0]
    for b in prange(B):
        for o in range(O):
            acc = 0.0
            for i in range(I):
                acc += w[o, i] * x[b, i]
            out[b, o] = acc


@njit(cache=True, parallel=True)
def linear_backward_input_loop(gx, delta, w):
    B, O = delta.shape
    I = w.shape[1]
    for b in prange(B):
        for i in range(I):
            acc = 0.0
            for o in range(O):
                acc += delta[b, o] * w[o, i]
            gx[b, i] += acc


@njit(cache=True, parallel=True)
def linear_backward_weight_loop(gw, delta, w_trace):
    B, O = delta.shape
    I = w_trace.shape[1]
    for o in prange(O):
        for i in range(I):
            acc = 0.0
            for b in range(B):
                acc += delta[b, o] * w_trace[b, i]
            gw[o, i] += acc


def linear_backward_loop(gx, gw, delta, w, w_trace):
    """gW += δᵀ·w~ (when ``gw``) and gx += δ·W (when ``gx``): the loop references, one call per synapse."""
    if gw is not None:
        linear_backward_weight_loop(gw, delta, w_trace)
    if gx is not None:
        linear_backward_input_loop(gx, delta, w)


def linear_forward_blas(out, x, w):
    np.matmul(x, w.T, out=out)


def linear_backward_input_blas(gx, delta, w, scratch):
    np.matmul(delta, w, out=scratch)
    gx += scratch


def linear_backward_weight_blas(gw, delta, w_trace, scratch):
    np.matmul(delta.T, w_trace, out=scratch)
    gw += scratch


def parts_for(rows):
    """Row blocks of a pooled GEMM: at least 16 rows each, at most 8 (fixed by the shape, not the threads)."""
    return max(1, min(8, rows // 16))


@njit(cache=True, parallel=True)
def _forward_pool(out, x, wt, parts):
    B = x.shape[0]
    for p in prange(parts):  # a part owns rows b0 <= b < b1 of out
        b0, b1 = p * B // parts, (p + 1) * B // parts
        np.dot(x[b0:b1], wt, out[b0:b1])


@njit(cache=True, parallel=True)
def _backward_input_pool(gx, delta, w, scratch, parts):
    B, I = gx.shape
    for p in prange(parts):  # a part owns rows b0 <= b < b1 of gx
        b0, b1 = p * B // parts, (p + 1) * B // parts
        np.dot(delta[b0:b1], w, scratch[b0:b1])
        for b in range(b0, b1):
            g, s = gx[b], scratch[b]
            for i in range(I):
                g[i] += s[i]


@njit(cache=True, parallel=True)
def _backward_weight_pool(gw, delta, w_trace, scratch, delta_t, parts):
    O, I = gw.shape
    B = delta.shape[0]
    for p in prange(parts):  # a part owns rows o0 <= o < o1 of gW (and of the scratches)
        o0, o1 = p * O // parts, (p + 1) * O // parts
        for o in range(o0, o1):
            for b in range(B):
                delta_t[o, b] = delta[b, o]
        np.dot(delta_t[o0:o1], w_trace, scratch[o0:o1])
        for o in range(o0, o1):
            g, s = gw[o], scratch[o]
            for i in range(I):
                g[i] += s[i]


def linear_forward_pool(out, x, w):
    """out = x·Wᵀ (overwritten), in numba's pool."""
    _forward_pool(out, x, w.T, parts_for(x.shape[0]))


def linear_backward_input_pool(gx, delta, w, scratch):
    """gx += δ·W, in numba's pool; ``scratch`` (B, I)."""
    _backward_input_pool(gx, delta, w, scratch, parts_for(gx.shape[0]))


def linear_backward_weight_pool(gw, delta, w_trace, scratch, delta_t):
    """gW += δᵀ·w~, in numba's pool; ``scratch`` (O, I), ``delta_t`` (O, B)."""
    _backward_weight_pool(gw, delta, w_trace, scratch, delta_t, parts_for(gw.shape[0]))


def linear_backward_pool(gx, gw, delta, w, w_trace, gx_scratch, gw_scratch, delta_t):
    """``linear_backward_loop`` in numba's pool; scratch (B, I) for gx, (O, I) and (O, B) for gW."""
    if gw is not None:
        _backward_weight_pool(gw, delta, w_trace, gw_scratch, delta_t, parts_for(gw.shape[0]))
    if gx is not None:
        _backward_input_pool(gx, delta, w, gx_scratch, parts_for(gx.shape[0]))
