"""Thread policy: numba kernels and OpenBLAS must not both spin on the same cores.

numba's OpenMP workers busy-wait after a parallel region, and OpenBLAS's do too; on a 2-core box
the two pools fight and every small kernel becomes ~10x slower (measured: LeNet-5 STOP 144 vs 843
samples/s). The default policy is therefore: numba gets the cores, the GEMMs (which are small per
step) run on one BLAS thread. ``set_threads(n, blas=k)`` changes both at run time; the BLAS count is
set through the OpenBLAS library that NumPy loaded (the same call threadpoolctl makes).
"""
import ctypes
import glob
import os

_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


def _openblas():
    import numpy as np
    base = os.path.dirname(os.path.dirname(np.__file__))
    for pattern in ("numpy.libs/*openblas*.so*", "numpy/.dylibs/*openblas*", "numpy.libs/*openblas*.dll"):
        for path in glob.glob(os.path.join(base, pattern)):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for sym in _SYMBOLS:
                fn = getattr(lib, sym, None)
                if fn is not None:
                    return fn
    return None


def set_blas_threads(n: int) -> bool:
    """Set OpenBLAS's thread count at run time; False if NumPy's BLAS is not OpenBLAS."""
    fn = _openblas()
    if fn is None:
        return False
    fn(ctypes.c_int(int(n)))
    return True


def set_threads(n: int = 0, blas: int = 1):
    """numba threads (0 = all cores) and BLAS threads (default 1, see the module docstring)."""
    import numba
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS if n <= 0 else min(n, numba.config.NUMBA_NUM_THREADS))
    if blas > 0:
        set_blas_threads(blas)
