"""Central finite differences in float64 and a relative-error comparison, shared by the tests.

    fd_grad(f, x)                    ∂f/∂x by (f(x + h e_i) - f(x - h e_i)) / 2h, for every i
    check_grad(f, x, analytic)       -> (ok, max_rel_err); relative to max(|fd|, |analytic|, floor)
"""
import numpy as np


def fd_grad(f, x, eps=1e-6, index=None):
    """``f`` reads the array ``x`` (modified in place and restored). ``index``: subset of flat ids."""
    g = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), g.reshape(-1)
    ids = range(flat_x.size) if index is None else index
    for i in ids:
        old = flat_x[i]
        flat_x[i] = old + eps
        fp = f()
        flat_x[i] = old - eps
        fm = f()
        flat_x[i] = old
        flat_g[i] = (fp - fm) / (2 * eps)
    return g


def rel_err(a, b, floor=1e-8):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), floor)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def check_grad(f, x, analytic, eps=1e-6, rtol=1e-6, index=None):
    fd = fd_grad(f, x, eps, index)
    if index is not None:
        sel = np.asarray(list(index))
        err = rel_err(fd.reshape(-1)[sel], np.asarray(analytic).reshape(-1)[sel])
    else:
        err = rel_err(fd, analytic)
    return err <= rtol, err
