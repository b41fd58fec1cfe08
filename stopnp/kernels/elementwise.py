"""Small elementwise kernels over flat ``(B, M)`` views (dropout masks, sums into currents).

    mul_into(out, a, m)    out  = a ⊙ m          dropout forward (m holds mask / (1 - p))
    mul_add(out, a, m)     out += a ⊙ m          dropout backward
    add_into(out, a)       out += a              gradient / current sums
    axpy(out, a, c)        out += c·a            static-input weight gradients
    count_nonzero(out, a)  out[b] = #{j: a[b, j] != 0}, returns Σ_b   spike counts (0/1 spikes: their sum)

Row views (``o, x = out[b], a[b]``) in the inner loops: LLVM vectorizes those, not 2-D indexing.
Arrays under SERIAL_BELOW elements run serially, larger ones in a parallel loop over rows: the same
elementwise formula, so the result does not depend on the variant or the thread count.
"""
from numba import njit, prange

SERIAL_BELOW = 1 << 15  # elements under which a kernel runs serially (a parallel launch costs more than the work)
MUL_INTO, MUL_ADD, ADD_INTO, AXPY = 0, 1, 2, 3


@njit(cache=True, inline="always")
def _rows(op, out, a, m, c, b0, b1):
    M = out.shape[1]
    for b in range(b0, b1):
        o, x, k = out[b], a[b], m[b]
        if op == MUL_INTO:
            for j in range(M):
                o[j] = x[j] * k[j]
        elif op == MUL_ADD:
            for j in range(M):
                o[j] += x[j] * k[j]
        elif op == ADD_INTO:
            for j in range(M):
                o[j] += x[j]
        else:
            for j in range(M):
                o[j] += c * x[j]


@njit(cache=True, parallel=True)
def _par(op, out, a, m, c):
    for b in prange(out.shape[0]):  # iteration owns row b
        _rows(op, out, a, m, c, b, b + 1)


@njit(cache=True)
def _ser(op, out, a, m, c):
    _rows(op, out, a, m, c, 0, out.shape[0])


def _run(op, out, a, m, c):
    (_ser if out.size < SERIAL_BELOW else _par)(op, out, a, m, c)


def mul_into(out, a, m):
    _run(MUL_INTO, out, a, m, out.dtype.type(0))


def mul_add(out, a, m):
    _run(MUL_ADD, out, a, m, out.dtype.type(0))


def add_into(out, a):
    _run(ADD_INTO, out, a, a, out.dtype.type(0))


def axpy(out, a, c):
    """out += c·a (static-input weight gradients: G += c_t·ĝ[t])."""
    _run(AXPY, out, a, a, out.dtype.type(c))


@njit(cache=True, inline="always")
def _count_rows(out, a, b0, b1):
    M = a.shape[1]
    for b in range(b0, b1):
        x = a[b]
        n = 0
        for j in range(M):
            n += x[j] != 0
        out[b] = n


@njit(cache=True, parallel=True)
def _count_par(out, a):
    for b in prange(a.shape[0]):
        _count_rows(out, a, b, b + 1)
    return out.sum()


@njit(cache=True)
def _count_ser(out, a):
    _count_rows(out, a, 0, a.shape[0])
    return out.sum()


def count_nonzero(out, a) -> int:
    """out[b] = number of nonzero a[b, j] (an integer count vectorizes; a float sum in order does not);
    returns Σ_b out[b]."""
    return int((_count_ser if a.size < SERIAL_BELOW else _count_par)(out, a))
