"""Thread policy: numba kernels and OpenBLAS must not both spin on the same cores.

numba's OpenMP workers busy-wait after a parallel region, and OpenBLAS's do too; on a 2-core box
the two pools fight and every small kernel waits for the other pool's spinning workers. So only one
pool is ever multi-threaded:

* The conv GEMMs run inside numba's pool: each iteration of the conv kernels' parallel loop calls
  single-threaded BLAS (``np.dot`` in numba, which is SciPy's OpenBLAS; ``inner_blas_single`` pins
  that library to one thread). They never start NumPy's BLAS pool.
* ``set_threads(0)`` (auto, the default; numba on one thread until ``fit`` knows the workload): the
  numba kernels run on all cores (``PoolTuner`` may settle on one) and NumPy's BLAS on one thread.
  The engine's linear GEMMs also run inside numba's pool, in row parts fixed by the shape
  (kernels/linear.py): a multi-threaded OpenBLAS GEMM sums differently from a one-thread one, and
  the trained model must not depend on the thread count. ``gemm_threads`` (BLAS on all cores for
  a GEMM of ``BIG_GEMM_MACS``) is left for callers outside the engine that want it.
* ``set_threads(n > 0, blas=k)``: numba kernels on n threads, NumPy's BLAS fixed at k threads
  (default 1: the GEMMs stay single-threaded so that the two pools never spin against each other).

The BLAS counts are set through the OpenBLAS libraries that NumPy and SciPy loaded (the same call
threadpoolctl makes).
"""
import ctypes
import functools
import glob
import math
import os

_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


BIG_GEMM_MACS = 4_000_000
_policy = {"auto": False, "max": 1, "cur": None, "fn": None, "blas_pool": True, "inner": None}


def _openblas_fn(package, symbols):
    """The first of ``symbols`` found in the OpenBLAS bundled with ``package`` (numpy or scipy wheels),
    or None."""
    try:
        mod = __import__(package)
    except ImportError:
        return None
    base = os.path.dirname(os.path.dirname(mod.__file__))
    patterns = (f"{package}.libs/*openblas*.so*", f"{package}/.dylibs/*openblas*", f"{package}.libs/*openblas*.dll")
    for pattern in patterns:
        for path in glob.glob(os.path.join(base, pattern)):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for sym in symbols:
                fn = getattr(lib, sym, None)
                if fn is not None:
                    return fn
    return None


def _openblas():
    return _openblas_fn("numpy", _SYMBOLS)


def _scipy_openblas():
    """SciPy's own OpenBLAS: numba's ``np.dot`` (the conv GEMMs inside the parallel kernels) calls that
    library, never NumPy's."""
    return _openblas_fn("scipy", ("scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                                     "openblas_set_num_threads"))


AVX512_CORES = ("SkylakeX", "Cooperlake", "SapphireRapids")  # OpenBLAS kernel families that use AVX-512


@functools.lru_cache(maxsize=None)  # fixed once the library is loaded
def blas_core(package="scipy") -> str:
    """The kernel family OpenBLAS picked for this CPU (e.g. 'SkylakeX' for AVX-512, 'Haswell' for AVX2),
    for the library of ``package`` (SciPy's carries the conv GEMMs); '' if that is not OpenBLAS.

    OpenBLAS honours OPENBLAS_CORETYPE at load time: an image that sets it to an older family (some do,
    for old OpenBLAS builds) costs an AVX-512 CPU a third to a half of its GEMM speed; ``stopnp bench``
    reports both.
    """
    fn = _openblas_fn(package, ("scipy_openblas_get_corename", "scipy_openblas_get_corename64_",
                                   "openblas_get_corename64_", "openblas_get_corename"))
    if fn is None:
        return ""
    fn.restype = ctypes.c_char_p
    return (fn() or b"").decode(errors="replace")


def cpu_has_avx512() -> bool:
    """True when /proc/cpuinfo lists avx512f (Linux; False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def blas_warning(coretype=None) -> str:
    """'' unless OPENBLAS_CORETYPE (``coretype``, default: the environment's) holds an AVX-512 CPU to older
    (AVX2) kernels; then one sentence saying so and what to do."""
    core = blas_core()
    env = os.environ.get("OPENBLAS_CORETYPE", "") if coretype is None else coretype
    if env and core and core not in AVX512_CORES and cpu_has_avx512():
        return (f"OPENBLAS_CORETYPE={env} is set and this CPU has AVX-512: its GEMMs run at half to two "
                f"thirds of their speed; with a current OpenBLAS (SciPy's wheel bundles one), run stopnp "
                f"with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset")
    return ""


def blas_note(coretype=None) -> str:
    """One line on the BLAS kernels in use, with ``blas_warning`` in parentheses when it has one."""
    core = blas_core()
    note = f"OpenBLAS {core} kernels" if core else "BLAS: not an OpenBLAS stopnp can query"
    warning = blas_warning(coretype)
    return f"{note} ({warning})" if warning else note


def inner_blas_single() -> bool:
    """One thread for the BLAS called from inside numba's parallel loops (each iteration is already one
    thread of the pool); False if it is not an OpenBLAS we can reach (then it may oversubscribe)."""
    if _policy["inner"] is None:
        fn = _scipy_openblas()
        if fn is not None:
            fn(ctypes.c_int(1))
        _policy["inner"] = fn is not None
    return _policy["inner"]


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


def set_threads(n: int = 0, blas: int = 1, cores: int | None = None):
    """n = 0: the auto policy (all cores, taking turns); n > 0: n numba threads and ``blas`` BLAS threads.

    ``cores``: the cores this process may use (default all; a distributed run's share per rank)."""
    import numba
    cores = min(cores or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)
    _policy["auto"] = n <= 0
    _policy["max"] = cores
    _policy["blas_pool"] = True
    numba.set_num_threads(1 if n <= 0 else min(n, cores))
    set_blas_threads(1 if n <= 0 else max(1, blas))


def blas_carries(max_gemm_macs: int, inner_macs: int = 0, blas_macs: int | None = None) -> bool:
    """Whether NumPy's BLAS carries the workload (see ``fit``): a GEMM reaches ``BIG_GEMM_MACS`` and the
    BLAS work is at least the numba work. A property of the network and batch size alone."""
    blas = max_gemm_macs if blas_macs is None else blas_macs
    return max_gemm_macs >= BIG_GEMM_MACS and blas >= inner_macs


def fit(max_gemm_macs: int, inner_macs: int = 0, blas_macs: int | None = None):
    """Auto policy only: give the cores to numba (every engine GEMM runs in its pool) and pin NumPy's
    BLAS to one thread. The workload arguments (``thread_workload``) are kept for the callers;
    the choice does not depend on them, so that results never depend on the thread count. No-op
    under an explicit ``set_threads(n > 0)``.
    """
    if not _policy["auto"]:
        return
    import numba
    # the engine's linear GEMMs run in numba's pool (engine.synapse: "linear-pool"): a multi-threaded
    # NumPy BLAS would train another model than one thread does, so BLAS never takes the cores
    _policy["blas_pool"] = False
    numba.set_num_threads(_policy["max"])
    set_blas_threads(1)


def describe() -> str:
    """The policy in effect, in words (bench rows, run logs)."""
    import numba
    if not _policy["auto"]:
        return f"numba {numba.get_num_threads()}, blas {_policy['cur'] or 'default'}"
    pool = "big GEMMs on BLAS" if _policy["blas_pool"] else "numba kernels"
    return f"auto: {pool} on {_policy['max']} cores"


# --- the workload the policy is fitted to (read off the network's records) -----------------------

def gemm_macs(syn, B) -> int:
    """Multiply-adds of one NumPy BLAS call of this synapse at batch B: linear B·in·out (the whole
    batch); 0 for conv (its per-sample GEMMs run inside numba's parallel loop, ``kernels.conv``) and
    for an identity synapse."""
    if syn.op == "linear":
        return B * syn.in_shape[0] * syn.out_shape[0]
    return 0


def max_gemm_macs(net, B) -> int:
    """The largest single NumPy BLAS call of a step at batch B, for the thread policy (``fit``)."""
    return max([gemm_macs(s, B) for layer in net.layers for s in layer.synapses] + [0])


def conv_macs(net, B) -> int:
    """Multiply-adds of one step's conv forward at batch B: GEMM work that runs in numba's pool."""
    return B * sum(math.prod(s.out_shape) * s.in_shape[0] * s.k * s.k
                   for layer in net.layers for s in layer.synapses if s.op == "conv")


def linear_macs(net, B) -> int:
    """Multiply-adds of one step's linear forward at batch B: GEMM work that runs on NumPy's BLAS."""
    return sum(gemm_macs(s, B) for layer in net.layers for s in layer.synapses if s.op == "linear")


def thread_workload(net, B):
    """``fit`` arguments for this network at batch B: (largest NumPy GEMM, conv MACs, linear MACs)."""
    return max_gemm_macs(net, B), conv_macs(net, B), linear_macs(net, B)


class PoolTuner:
    """Auto policy, numba pool: time ``probe`` batches on all cores and ``probe`` on one, then keep the
    faster; probe again at each epoch, after ``every`` seconds, and as soon as a batch takes ``slower``
    times the chosen count's probe time (another process started competing).

    On a box where another process holds a core, every parallel region waits at its barrier for a
    descheduled worker, so one thread can beat all cores; which wins depends on the load at the time,
    hence the probes. Results are bitwise the same for any thread count (tested), so switching costs
    nothing but the probe batches. Inactive (``threads`` is None)
    under an explicit thread count, on one core, or when the BLAS pool carries the work.
    """

    def __init__(self, probe=2, every=30.0, slower=4.0, clock=None):
        import time
        self.probe, self.every, self.slower = probe, every, slower
        self.clock = clock or time.perf_counter
        self.active = _policy["auto"] and not _policy["blas_pool"] and (_policy["max"] or 1) > 1
        self.threads = _policy["max"] if self.active else None
        self._i, self._times, self._ref, self._since = 0, {}, None, 0.0

    def start_epoch(self):
        self._restart(0)

    def _restart(self, i):
        if self.active:
            self._i, self._times, self._ref = i, {}, None
            self._set(_policy["max"])

    def batch_done(self, seconds):
        """Record one batch's time; switch thread counts along the probe schedule (batch 0 of an epoch is
        warm-up: the first one may compile)."""
        if not self.active:
            return
        if self._ref is not None:  # decided: watch for a slowdown, and re-check now and then
            if seconds > self.slower * self._ref or self.clock() - self._since > self.every:
                self._restart(1)
            return
        i, p, n = self._i, self.probe, _policy["max"]
        self._i += 1
        if 1 <= i <= p:
            self._times.setdefault(n, []).append(seconds)
        elif p < i <= 2 * p:
            self._times.setdefault(1, []).append(seconds)
        if i == p:
            self._set(1)
        elif i == 2 * p:
            best = min(self._times, key=lambda k: min(self._times[k]))
            self._set(best)
            self._ref, self._since = min(self._times[best]), self.clock()

    def end_epoch(self):
        """An epoch shorter than the probe schedule: back to all cores (one thread was never timed)."""
        if self.active and self._ref is None:
            self._set(_policy["max"])

    def finish(self):
        """Training is over: numba back on all cores for whatever the process runs next."""
        if self.active:
            self._set(_policy["max"])

    def _set(self, n):
        import numba
        numba.set_num_threads(n)
        self.threads = n
