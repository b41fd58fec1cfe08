"""Thread policy (stopnp.threads): auto = numba on one thread, large GEMMs on all cores, small on one."""
import numba

from stopnp import threads


def test_auto_policy_switches_blas_by_gemm_size():
    cores = numba.config.NUMBA_NUM_THREADS
    try:
        threads.set_threads(0)
        assert numba.get_num_threads() == 1 and threads._policy["auto"]
        if threads._policy["fn"]:  # NumPy on OpenBLAS: the count is really set
            threads.gemm_threads(threads.BIG_GEMM_MACS)
            assert threads._policy["cur"] == cores
            threads.gemm_threads(threads.BIG_GEMM_MACS - 1)
            assert threads._policy["cur"] == 1
        threads.set_threads(cores)  # explicit: numba n threads, BLAS fixed, gemm_threads a no-op
        assert numba.get_num_threads() == cores and not threads._policy["auto"]
        threads.gemm_threads(10 * threads.BIG_GEMM_MACS)
        assert threads._policy["cur"] in (None, 1)
    finally:
        threads.set_threads(cores)
