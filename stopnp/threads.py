"""Thread policy: numba kernels and OpenBLAS must not both spin on the same cores.

numba's OpenMP workers busy-wait after a parallel region, and OpenBLAS's do too; on a 2-core box
the two pools fight and every small kernel becomes ~10x slower (measured: LeNet-5 STOP 144 vs 843
samples/s). Two policies:

* ``set_threads(0)`` (auto, the default): the numba kernels run on one thread and the BLAS GEMMs take
  turns with them: a GEMM of at least ``BIG_GEMM_MACS`` multiply-adds in one BLAS call (the mlp
  layers, the VGG convolutions) runs on all cores, a smaller one on one thread (``gemm_threads``,
  called by the kernels just before each GEMM). Only one pool is ever busy, so nothing spins against
  anything; measured on the shared 2-core host (STOP, samples/s): vgg 26 vs 17, mlp 7400 vs 6200,
  lenet equal, against numba on both cores with auto BLAS.
* ``set_threads(n > 0, blas=k)``: numba kernels on n threads, BLAS fixed at k threads (default 1: the
  GEMMs stay single-threaded so that the two pools never spin against each other).

The BLAS count is set through the OpenBLAS library that NumPy loaded (the same call threadpoolctl
makes).
"""
import ctypes
import glob
import os

_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


BIG_GEMM_MACS = 4_000_000
_policy = {"auto": False, "max": 1, "cur": None, "fn": None}


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
    if _policy["fn"] is None:
        _policy["fn"] = _openblas() or False
    fn = _policy["fn"]
    if not fn:
        return False
    fn(ctypes.c_int(int(n)))
    _policy["cur"] = int(n)
    return True


def gemm_threads(macs: int):
    """Under the auto policy, BLAS threads for a GEMM of ``macs`` multiply-adds (no-op otherwise)."""
    if _policy["auto"]:
        n = _policy["max"] if macs >= BIG_GEMM_MACS else 1
        if n != _policy["cur"]:
            set_blas_threads(n)


def set_threads(n: int = 0, blas: int = 1):
    """n = 0: the auto policy (all cores, taking turns); n > 0: n numba threads and ``blas`` BLAS threads."""
    import numba
    cores = numba.config.NUMBA_NUM_THREADS
    _policy["auto"] = n <= 0
    _policy["max"] = cores
    numba.set_num_threads(1 if n <= 0 else min(n, cores))
    set_blas_threads(1 if n <= 0 else max(1, blas))
