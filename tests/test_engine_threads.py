"""Thread policy (stopnp/engine/threads.py): auto = numba on all cores, NumPy BLAS on one (every engine GEMM
in numba's pool, the linear ones included, whatever the network); ``fit`` gives the cores to numba; SciPy's
BLAS (inside the conv kernels) runs one thread; results are bitwise the same on 1 and 2 threads."""
import numba
import numpy as np
import pytest

import stopnp
from stopnp.engine import threads
from stopnp.rules import stop
from stopnp.rules.common import resolve_options
from nets import checked_grads, convnet, data


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


def test_fit_gives_the_cores_to_numba_whatever_the_gemm_sizes():
    """Every engine GEMM runs in numba's pool (fixed row parts): the auto policy gives numba the cores
    and pins NumPy's BLAS to 1 for any workload, so the thread count never changes a result."""
    cores = numba.config.NUMBA_NUM_THREADS
    try:
        threads.set_threads(0)
        big = 10 * threads.BIG_GEMM_MACS
        for args in ((threads.BIG_GEMM_MACS - 1,), (threads.BIG_GEMM_MACS,), (big, big + 1, big), (big, 0, big)):
            threads.fit(*args)
            assert numba.get_num_threads() == cores and "numba" in threads.describe(), args
            threads.gemm_threads(big)  # stays on one BLAS thread: no second pool
            assert threads._policy["cur"] in (None, 1)
        threads.set_threads(cores)  # explicit policy: fit is a no-op
        threads.fit(0)
        assert numba.get_num_threads() == cores
    finally:
        threads.set_threads(cores)


def test_max_gemm_macs_counts_the_largest_call():
    from stopnp.tools import bench
    from stopnp.config import resolve
    from stopnp.engine.network import from_config
    from stopnp.engine.threads import max_gemm_macs
    lenet = from_config(resolve(bench.config_for("lenet", "stop")))
    # only NumPy BLAS calls count: fc 400 -> 120 over the batch; the conv GEMMs run inside numba
    assert max_gemm_macs(lenet, 32) == 32 * 400 * 120
    assert max_gemm_macs(lenet, 1) == 400 * 120
    vgg = from_config(resolve(bench.config_for("vgg", "stop")))
    assert max_gemm_macs(vgg, 16) == 16 * 128 * 8 * 8 * 10  # the classifier fc 8192 -> 10


def test_inner_blas_is_pinned_to_one_thread():
    """The conv GEMMs call SciPy's OpenBLAS from inside numba's parallel loop: it must run one thread."""
    import ctypes
    import glob
    import os
    import scipy
    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs", "*openblas*"))
    if not libs:
        pytest.skip("SciPy is not linked to a bundled OpenBLAS here")
    assert threads.inner_blas_single()
    get = getattr(ctypes.CDLL(libs[0]), "scipy_openblas_get_num_threads", None)
    if get is not None:
        assert get() == 1


@pytest.mark.parametrize("config,pool", [("mnist-lenet5", "numba"), ("rule-stop", "numba"),
                                         ("cifar100-resnet18", "numba"), ("cifar10-vgg11", "numba")])
def test_conv_nets_give_numba_the_cores(config, pool):
    """LeNet-5 at B = 128 and ResNet-18 have a linear GEMM over 4M multiply-adds, but their conv work
    (in numba's pool) is larger: the cores go to numba. So does the bench mlp (its GEMMs run in that pool too)."""
    from stopnp.tools import bench
    from stopnp.config import read, resolve
    from stopnp.recipes import path
    from stopnp.engine.network import from_config
    from stopnp.engine.threads import conv_macs, linear_macs, thread_workload
    cfg = resolve(read(path(config)))
    net, B = from_config(cfg), cfg["data"]["batch_size"]
    m, inner, blas = thread_workload(net, B)
    assert inner == conv_macs(net, B) > blas == linear_macs(net, B) > 0
    cores = numba.config.NUMBA_NUM_THREADS
    try:
        threads.set_threads(0)
        threads.fit(m, inner, blas)
        assert pool in threads.describe() and numba.get_num_threads() == cores
        mlp = from_config(resolve(bench.config_for("mlp", "stop")))
        threads.fit(*thread_workload(mlp, 64))
        assert "numba" in threads.describe() and numba.get_num_threads() == cores
    finally:
        threads.set_threads(cores)


def test_blas_core_is_reported_and_an_avx2_override_on_avx512_is_flagged(monkeypatch):
    """blas_core names OpenBLAS's kernel family (SciPy's wheel bundles OpenBLAS); blas_note warns only when
    OPENBLAS_CORETYPE holds an AVX-512 CPU to an older family (the variable's value is passed in: the
    environment and the loaded library are not touched)."""
    core = threads.blas_core()
    assert isinstance(core, str)
    if threads._scipy_openblas() is not None:
        assert core, "SciPy's OpenBLAS answered no core name"
    monkeypatch.setattr(threads, "blas_core", lambda package="scipy": "Haswell")
    monkeypatch.setattr(threads, "cpu_has_avx512", lambda: True)
    note = threads.blas_note("Haswell")
    assert "OPENBLAS_CORETYPE=Haswell" in note and "half" in note
    assert threads.blas_note("") == "OpenBLAS Haswell kernels"  # not forced: OpenBLAS chose it
    monkeypatch.setattr(threads, "cpu_has_avx512", lambda: False)  # an AVX2 CPU: Haswell is right
    assert threads.blas_note("Haswell") == "OpenBLAS Haswell kernels"
    monkeypatch.setattr(threads, "cpu_has_avx512", lambda: True)
    monkeypatch.setattr(threads, "blas_core", lambda package="scipy": "SkylakeX")
    assert threads.blas_note("SkylakeX") == "OpenBLAS SkylakeX kernels"  # AVX-512 kernels: nothing to flag


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads to choose between")
def test_pool_tuner_keeps_the_faster_thread_count_and_rechecks():
    """Batch 0 warms up, batches 1-2 run on all cores, 3-4 on one, then the faster count stays until a
    batch is 4x slower than its probe (or 30 s pass): then it probes again, without a warm-up batch."""
    cores = numba.config.NUMBA_NUM_THREADS
    now = [0.0]
    try:
        threads.set_threads(0)
        threads.fit(0)  # conv-like workload: numba's pool carries it
        for busy_box, want in ((True, 1), (False, cores)):
            tuner = threads.PoolTuner(probe=2, clock=lambda: now[0])
            assert tuner.active
            tuner.start_epoch()
            seen = []
            for _ in range(10):
                seen.append(numba.get_num_threads())
                one = seen[-1] == 1
                tuner.batch_done(1.0 if one == busy_box else 2.0)
            assert seen[:5] == [cores, cores, cores, 1, 1]
            assert tuner.threads == want and seen[5:] == [want] * 5
        tuner.batch_done(9.0)  # another process started: probe again at once
        assert tuner.threads == cores
        for t in (1.0, 1.0, 3.0, 3.0):  # all cores now fast again, one slow
            tuner.batch_done(t)
        assert tuner.threads == cores
        now[0] += 31.0
        tuner.batch_done(1.0)  # time for a re-check
        assert tuner._ref is None and tuner.threads == cores
        short = threads.PoolTuner(probe=2)  # an epoch of 4 batches ends mid-probe, on one thread
        short.start_epoch()
        for _ in range(4):
            short.batch_done(1.0)
        assert numba.get_num_threads() == 1
        short.end_epoch()
        assert numba.get_num_threads() == cores and short.threads == cores
        short._set(1)
        short.finish()  # after training: all cores again for the rest of the process
        assert numba.get_num_threads() == cores
        threads.set_threads(cores)
        assert not threads.PoolTuner().active and threads.PoolTuner().threads is None
    finally:
        threads.set_threads(cores)


@pytest.mark.parametrize("kernels", ["loop", "blas"])
@pytest.mark.parametrize("rule", ["stop", "bptt"])
def test_one_and_two_threads_bitwise(rule, kernels):
    net = convnet(bn=True).astype(np.float32)
    x, y = data(net, T=4, B=6)
    x = x.astype(np.float32)
    out = []
    for n in (1, 2):
        numba.set_num_threads(n)
        out.append(checked_grads(net, x, y, rule, kernels=kernels))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for k in out[0]:
        assert np.array_equal(out[0][k], out[1][k]), k

def test_linear_gemms_run_in_numbas_pool():
    """LeNet-5 and the bench MLP alike: the linear GEMMs run in numba's pool (fixed row parts, never a
    multi-threaded BLAS), so the results never depend on the thread count; the loop backend: its own
    kernels."""
    from stopnp.tools import bench
    lenet = stopnp.build(bench.config_for("lenet", "stop"))
    mlp = stopnp.build(bench.config_for("mlp", "stop"))
    opts = resolve_options(lenet, "stop", {})

    def kernels(ws, name):
        return ws.synapses[name].kernels

    assert kernels(stop.workspace(lenet, 32, np.float32, opts), "fc1") == "linear-pool"
    assert kernels(stop.workspace(mlp, 64, np.float32, resolve_options(mlp, "stop", {})), "fc1") == "linear-pool"
    assert kernels(stop.workspace(lenet, 32, np.float32, dict(opts, kernels="loop")), "fc1") == "linear-loop"
