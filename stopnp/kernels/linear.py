"""Dense synapse kernels (no bias).

    forward          out[b, o]  = Σ_i W[o, i]·x[b, i]
    input gradient   gx[b, i]  += Σ_o gout[b, o]·W[o, i]
    weight gradient  gW[o, i]  += Σ_b gout[b, o]·a[b, i]      a = x (BPTT) or the trace w~ (STOP)

The ``*_loop`` functions are the C-portable references (numba, prange over the output an iteration
owns, fixed summation order). The ``*_blas`` functions compute the same through NumPy's sgemm/dgemm;
they take a caller-allocated scratch so that nothing is allocated per step. How many BLAS threads a
GEMM gets is the caller's business (``stopnp.threads``): kernels import nothing from the package.
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
def linear_backward_input_loop(gx, gout, w):
    B, O = gout.shape
    I = w.shape[1]
    for b in prange(B):
        for i in range(I):
            acc = 0.0
            for o in range(O):
                acc += gout[b, o] * w[o, i]
            gx[b, i] += acc


@njit(cache=True, parallel=True)
def linear_backward_weight_loop(gw, gout, a):
    B, O = gout.shape
    I = a.shape[1]
    for o in prange(O):
        for i in range(I):
            acc = 0.0
            for b in range(B):
                acc += gout[b, o] * a[b, i]
            gw[o, i] += acc


def linear_forward_blas(out, x, w):
    np.matmul(x, w.T, out=out)


def linear_backward_input_blas(gx, gout, w, scratch):
    np.matmul(gout, w, out=scratch)
    gx += scratch


def linear_backward_weight_blas(gw, gout, a, scratch):
    np.matmul(gout.T, a, out=scratch)
    gw += scratch
