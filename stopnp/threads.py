"""Thread policy: numba kernels and OpenBLAS must not both spin on the same cores.

numba's OpenMP workers busy-wait after a parallel region, and OpenBLAS's do too; on a 2-core box
the two pools fight and every small kernel becomes ~10x slower (measured: LeNet-5 STOP 144 vs 843
samples/s). Two policies:

* ``set_threads(0)`` (auto, the default): the numba kernels run on one thread and the BLAS GEMMs take
  turns with them: a GEMM of at least ``BIG_GEMM_MACS`` multiply-adds in one BLAS call (the mlp
  layers, the VGG convolutions) runs on all cores, a smaller one on one thread (``gemm_threads``,
  called by ``ops`` before each synapse's GEMMs; the kernels themselves import nothing). Only one
  pool is ever busy, so nothing spins against anything; measured on the shared 2-core host (STOP,
  samples/s): vgg 26 vs 17, mlp 7400 vs 6200, against numba on both cores with auto BLAS. Once the training workload is known, ``fit(macs)``
  hands the cores to numba instead when none of its GEMMs reaches ``BIG_GEMM_MACS`` (BLAS then stays
  on one thread, also for larger evaluation batches): LeNet-5 at B = 32, 1227-1395 vs 916-1352
  samples/s in five paired runs.
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
_policy = {"auto": False, "max": 1, "cur": None, "fn": None, "blas_pool": True}


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
        n = _policy["max"] if macs >= BIG_GEMM_MACS and _policy["blas_pool"] else 1
        if n != _policy["cur"]:
            set_blas_threads(n)


def set_threads(n: int = 0, blas: int = 1):
    """n = 0: the auto policy (all cores, taking turns); n > 0: n numba threads and ``blas`` BLAS threads."""
    import numba
    cores = numba.config.NUMBA_NUM_THREADS
    _policy["auto"] = n <= 0
    _policy["max"] = cores
    _policy["blas_pool"] = True
    numba.set_num_threads(1 if n <= 0 else min(n, cores))
    set_blas_threads(1 if n <= 0 else max(1, blas))


def fit(max_gemm_macs: int):
    """Auto policy only: give the cores to numba when no GEMM of the workload is big enough for BLAS.

    ``max_gemm_macs``: the largest single GEMM of the training step (``ops.max_gemm_macs``). Below
    ``BIG_GEMM_MACS`` the numba kernels run on all cores and every GEMM on one BLAS thread; otherwise
    numba stays on one thread and the big GEMMs take all cores. Either way one pool alone is
    multi-threaded. No-op under an explicit ``set_threads(n > 0)``.
    """
    if not _policy["auto"]:
        return
    import numba
    _policy["blas_pool"] = max_gemm_macs >= BIG_GEMM_MACS
    numba.set_num_threads(1 if _policy["blas_pool"] else _policy["max"])
    set_blas_threads(1)


def describe() -> str:
    """The policy in effect, in words (bench rows, run logs)."""
    import numba
    if not _policy["auto"]:
        return f"numba {numba.get_num_threads()}, blas {_policy['cur'] or 'default'}"
    pool = "big GEMMs on BLAS" if _policy["blas_pool"] else "numba kernels"
    return f"auto: {pool} on {_policy['max']} cores"
