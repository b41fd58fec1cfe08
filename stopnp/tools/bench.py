"""``stopnp bench``: the training/inference benchmark, one subprocess per configuration.

Workloads (synthetic data, seed 0, float32, the same analog input at every step, random labels,
4 distinct batches generated before timing and cycled; LIF α = 0.5, θ = 1, soft reset; every weight
layer, the output included, followed by LIF; cross-entropy; Adam lr 1e-3, its step timed):

    mlp     784 -> 800 -> 10                                                   T = 8,  B = 64
    lenet   1x28x28: conv5 pad 2 -> 6, avgpool 2, conv5 -> 16, avgpool 2, fc 120, 84, 10   T = 4, B = 32
    vgg     3x32x32: conv3 -> 64, conv3 -> 64, avgpool 2, conv3 -> 128, conv3 -> 128, avgpool 2,
            fc 10, no BN                                                         T = 4,  B = 16
    mlp-T   mlp at T = 4, 8, 16, 32, 64

Before timing, each layer's weights are scaled so that it fires at ``rate`` (default 0.1) spikes per
neuron per step on the first 16 samples (``calibrate``: the peer benchmark's protocol, so both simulate
the same activity; 0 = default init); the rates reached are reported.

Measured per (workload, rule): compile time (first call, numba cache included), training samples/s
(median over timed batches after warm-up), inference samples/s (with ranks: the whole batch, split over
the ranks, over the slowest rank's time), peak RSS and its growth over the RSS measured after imports,
model and data (before the first timed step), dense FLOPs per sample
(2·MACs: forward 2·T·ΣM, backward 2·T·ΣM + 2·T·Σ_{l>1}M) and achieved GFLOP/s.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

WORKLOADS = {
    "mlp": {"spec": [{"type": "flatten"}, {"type": "linear", "out": 800}, {"type": "linear", "out": 10}],
            "input": [1, 28, 28], "T": 8, "B": 64},
    "lenet": {"spec": [{"type": "conv", "out": 6, "k": 5, "pad": 2}, {"type": "avgpool", "k": 2},
                       {"type": "conv", "out": 16, "k": 5}, {"type": "avgpool", "k": 2}, {"type": "flatten"},
                       {"type": "linear", "out": 120}, {"type": "linear", "out": 84}, {"type": "linear", "out": 10}],
              "input": [1, 28, 28], "T": 4, "B": 32},
    "vgg": {"spec": [{"type": "conv", "out": 64, "k": 3, "pad": 1}, {"type": "conv", "out": 64, "k": 3, "pad": 1},
                     {"type": "avgpool", "k": 2},
                     {"type": "conv", "out": 128, "k": 3, "pad": 1}, {"type": "conv", "out": 128, "k": 3, "pad": 1},
                     {"type": "avgpool", "k": 2}, {"type": "flatten"}, {"type": "linear", "out": 10}],
            "input": [3, 32, 32], "T": 4, "B": 16},
}
SWEEP_T = (4, 8, 16, 32, 64)


def config_for(workload, rule, T=None, threads=0):
    w = WORKLOADS[workload]
    return {"model": {"name": "custom", "input_shape": w["input"], "n_classes": 10, "layers": w["spec"]},
            "neuron": {"alpha_init": 0.5, "theta_init": 1.0, "reset": "soft"},
            "rule": {"name": rule, "learn": "WTL" if rule == "stop" else "W"},
            "optim": {"kind": "adam", "lr": 1e-3, "schedule": "constant", "weight_decay": 0.0},
            "data": {"T": T or w["T"], "batch_size": w["B"]},
            "run": {"seed": 0, "threads": threads}}


def macs_per_step(net):
    out = []
    for layer in net.layers:
        m = 0
        for s in layer.synapses:
            if s.op == "linear":
                m += s.in_shape[0] * s.out_shape[0]
            elif s.op == "conv":
                m += s.out_shape[0] * s.in_shape[0] * s.k * s.k * s.out_shape[1] * s.out_shape[2]
        out.append(m)
    return out


def flops_per_sample(net, T):
    m = macs_per_step(net)
    fwd = 2 * T * sum(m)
    bwd = 2 * T * sum(m) + 2 * T * sum(m[1:])
    return fwd, fwd + bwd


def spike_rates(net, x, opts, ws=None):
    """Mean spikes per neuron per step of every spiking layer on input ``x`` (T, B, ...), forward only."""
    from ..rules import stop as stop_rule
    res = stop_rule.run(net, net.params, x, None, opts, ws=ws)
    T, B = x.shape[:2]
    return [res.spike_counts[layer.name] / (T * B * layer.size) for layer in net.layers if layer.spiking]


def calibrate(net, x, target, opts, steps=16):
    """Scale each layer's weights, in order, so that the layer fires at ~``target`` spikes per neuron per
    step on ``x`` (multiplicative bisection on [1e-2, 1e3], ``steps`` halvings): the peer benchmark's
    protocol (docs/results.md), so both run at the same activity, as trained SNNs do
    (5-20 %). Deterministic; returns the scales. Layers without weights or spikes are left alone."""
    from ..rules import stop as stop_rule
    ws = stop_rule.workspace(net, x.shape[1], x.dtype, opts)  # one workspace for every trial forward
    scales = []
    spiking = [layer for layer in net.layers if layer.spiking]
    for k, layer in enumerate(spiking):
        keys = [f"{syn.name}.weight" for syn in layer.synapses if f"{syn.name}.weight" in net.params]
        if not keys:
            continue
        w0 = {key: net.params[key].copy() for key in keys}

        def set_scale(m):
            for key in keys:
                np.multiply(w0[key], w0[key].dtype.type(m), out=net.params[key])

        lo, hi = 1e-2, 1e3
        for _ in range(steps):
            mid = (lo * hi) ** 0.5
            set_scale(mid)
            if spike_rates(net, x, opts, ws)[k] < target:
                lo = mid
            else:
                hi = mid
        set_scale((lo * hi) ** 0.5)
        scales.append(round((lo * hi) ** 0.5, 3))
    return scales


def _rss_kib(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_one(workload, rule, T=None, threads=0, warm=3, n=20, budget_s=30.0, rate=0.1, distributed=False,
            overlap=True):
    """Measure one configuration in this process; returns a dict (one JSON line).

    ``distributed``: this process is one rank of ``mpiexec -n N``: it trains on its share (B/N) of each
    batch and sums the gradients over the ranks (distributed.py) before the step; every rank times the
    same fixed number of batches; per batch, the wait for the slowest rank (a barrier) and the gradient
    Allreduce are timed apart. ``overlap`` (run.mpi_overlap): the sums of the top layers' gradients start
    during the last backward pass (timed as ``overlap_ms``: the MPI calls made there), and ``reduce_ms`` is
    what is left after the barrier (which also lets MPI progress them). Rank 0 returns the row, the others
    None."""
    t_import = time.perf_counter()
    from .. import optim
    from ..engine.network import from_config
    from ..config import resolve
    from ..rules import RULES, runner
    from ..rules.common import resolve_options
    from ..rules import stop as stop_rule
    from ..engine.threads import blas_core, describe as threads_describe, fit as threads_fit, set_threads
    from ..engine.threads import thread_workload
    import numba
    comm = None
    if distributed:
        from mpi4py import MPI
        from ..run.distributed import Comm
        comm = Comm(MPI, 600.0)
        budget_s = float("inf")  # every rank times the same batches (a collective each)
    set_threads(threads, cores=comm.cores if comm else None)
    cfg = resolve(config_for(workload, rule, T, threads))
    net = from_config(cfg)
    T, B = cfg["data"]["T"], cfg["data"]["batch_size"]
    threads_fit(*thread_workload(net, B))
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        img = rng.uniform(0, 1, (B, *net.input_shape)).astype(np.float32)
        batches.append((np.broadcast_to(img, (T, *img.shape)), rng.integers(0, 10, B)))
    opts = resolve_options(net, rule, {})
    run = runner(rule)
    names = net.trainable(opts["learn"])
    import_s = time.perf_counter() - t_import
    # compile (or load from numba's cache) on a tiny batch so that it is not timed or counted
    t0 = time.perf_counter()
    tiny = (np.ascontiguousarray(batches[0][0][:1, :2]), batches[0][1][:2])
    run(net, net.params, np.broadcast_to(tiny[0][0], (2, *tiny[0].shape[1:])), tiny[1], opts)
    run(net, net.params, np.broadcast_to(tiny[0][0], (2, *tiny[0].shape[1:])), None, opts)
    compile_s = time.perf_counter() - t0
    fwd_opts = resolve_options(net, "stop", {})
    calib = np.ascontiguousarray(batches[0][0][:, :16])
    scales = calibrate(net, calib, rate, fwd_opts) if rate > 0 else []
    rates = spike_rates(net, calib, fwd_opts)
    state = optim.init_state(cfg["optim"], net.params, names)  # after the weights were scaled
    B_all = B
    if comm:  # calibrated on the whole batch as above; each rank then trains on its share
        batches = [comm.local_batch(x, y) for x, y in batches]
        B = batches[0][1].shape[0]
    rss_before = _rss_kib()
    ws = RULES[rule].workspace(net, B, np.float32, opts, T)
    fwd_ws = stop_rule.workspace(net, B, np.float32, fwd_opts) if RULES[rule].stored else ws

    waits, reduces, hooks, early = [], [], [], []

    def train_step(i):
        x, y = batches[i % 4]
        if comm:
            in_hook, early_bytes = comm.reduce_seconds, comm.early_bytes
        res = run(net, net.params, x, y, opts, ws=ws, rng=rng,
                  grads=comm.grads(net, names, np.float32) if comm else None,
                  on_grads_final=comm.grads_final if comm and overlap else None)
        if comm:
            t = time.perf_counter()
            hooks.append(comm.reduce_seconds - in_hook)
            comm.comm.Barrier()
            t1 = time.perf_counter()
            comm.allreduce_grads(res.grads)
            waits.append(t1 - t)
            reduces.append(time.perf_counter() - t1)
            early.append(comm.early_bytes - early_bytes)
        optim.step(net.params, res.grads, state, cfg["optim"], cfg["optim"]["lr"], 1e-3)

    def infer_step(i):  # the forward pass is the same for every rule; with ranks, each does its share
        x, _ = batches[i % 4]
        stop_rule.run(net, net.params, x, None, fwd_opts, ws=fwd_ws)
        if comm:  # the time of the slowest rank, so that B_all / time is the throughput of all of them
            comm.comm.Barrier()

    def timed(fn, warm, n, budget):
        for i in range(warm):
            fn(i)
        ts, start = [], time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            ts.append(time.perf_counter() - t)
            if time.perf_counter() - start > budget and len(ts) >= 3:
                break
        return float(np.median(ts)), float(np.min(ts)), len(ts)

    tr_med, tr_min, tr_n = timed(train_step, warm, n, budget_s)
    inf_med, _, _ = timed(infer_step, warm, n, budget_s / 2)
    peak = _rss_kib("VmHWM")
    fwd, train_flops = flops_per_sample(net, T)
    dist = {}
    if comm:
        dist = {"ranks": comm.size, "reduced_mib": sum(net.params[k].nbytes for k in names) / 2 ** 20,
                "reduce_ms": 1000 * float(np.median(reduces[-tr_n:])),
                "wait_ms": 1000 * float(np.median(waits[-tr_n:])), "overlap": overlap,
                "overlap_ms": 1000 * float(np.median(hooks[-tr_n:])),
                "early_mib": float(np.median(early[-tr_n:])) / 2 ** 20}
        if not comm.is_root:
            return None
    return {"workload": workload, "rule": rule, "T": T, "batch": B_all, "threads": numba.get_num_threads(),
            "thread_policy": threads_describe(), **dist,
            "train_per_s": B_all / tr_med, "train_best_per_s": B_all / tr_min, "infer_per_s": B_all / inf_med,
            "ms_per_batch": 1000 * tr_med, "timed_batches": tr_n, "compile_s": compile_s, "import_s": import_s,
            "peak_rss_mib": peak / 1024, "rss_before_mib": rss_before / 1024,
            "rss_growth_mib": (peak - rss_before) / 1024, "train_mflop_per_sample": train_flops / 1e6,
            "fwd_mflop_per_sample": fwd / 1e6, "train_gflops": train_flops * B_all / tr_med / 1e9,
            "target_rate": rate, "spike_rates": [round(r, 4) for r in rates], "calib_scales": scales,
            "blas_core": blas_core(), "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE", "")}


def plan(workloads, rules, sweep=True):
    jobs = [(w, r, None) for w in workloads for r in rules]
    if sweep and "mlp" in workloads:
        jobs += [("mlp", r, T) for r in rules for T in SWEEP_T if T != WORKLOADS["mlp"]["T"]]
    return jobs


def mpiexec():
    """The mpiexec beside this Python (the ``mpi`` extra's wheel) or on PATH; None if there is none."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.isfile(here) else shutil.which("mpiexec")


def run_all(workloads=("mlp", "lenet", "vgg"), rules=("stop", "bptt"), threads=0, sweep=True, quick=False,
            stream=sys.stdout, as_json=False, out=None, rate=0.1, ranks=1, overlap=True):
    rows = []
    if not as_json:
        from ..engine.threads import blas_note
        print(f"# {blas_note()}; " + (f"weights calibrated to {rate:g} spikes/neuron/step" if rate > 0
                                      else "default init (no calibration)"), file=stream, flush=True)
        print(HEADER, file=stream, flush=True)
    for w, r, T in plan(workloads, rules, sweep):
        cmd = [sys.executable, "-m", "stopnp.tools.bench", w, r, str(T or 0), str(threads), "1" if quick else "0",
               repr(float(rate)), "mpi" if ranks > 1 else "one", "overlap" if overlap else "blocking"]
        env = dict(os.environ)
        if ranks > 1:  # (Open MPI refuses root without these; MPICH ignores them)
            cmd = [mpiexec(), "-n", str(ranks), *cmd]
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            row = {"workload": w, "rule": r, "T": T, "error": proc.stderr.strip().splitlines()[-1:]}
        else:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row) if as_json else fmt(row), file=stream, flush=True)
        if out:
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
    return rows


HEADER = (f"{'workload':<8} {'rule':<6} {'T':>3} {'B':>3} {'train/s':>9} {'infer/s':>9} {'ms/batch':>9} "
          f"{'peakMiB':>8} {'dRSS':>7} {'MFLOP':>8} {'GFLOP/s':>8} {'compile':>8} {'rate':>5}  threads")


def fmt(r):
    if "error" in r:
        return f"{r['workload']:<8} {r['rule']:<6} {str(r.get('T')):>3} error: {r['error']}"
    dist = (f"; {r['ranks']} ranks, Allreduce {r['reduce_ms']:.2f} ms of {r['reduced_mib']:.2f} MiB, wait "
            f"{r['wait_ms']:.2f} ms" if "ranks" in r else "")
    if r.get("overlap"):
        dist += f", overlap: {r['early_mib']:.2f} MiB started in the backward, {r['overlap_ms']:.2f} ms in MPI there"
    return (f"{r['workload']:<8} {r['rule']:<6} {r['T']:>3} {r['batch']:>3} {r['train_per_s']:>9.0f} "
            f"{r['infer_per_s']:>9.0f} {r['ms_per_batch']:>9.2f} {r['peak_rss_mib']:>8.1f} "
            f"{r['rss_growth_mib']:>7.1f} {r['train_mflop_per_sample']:>8.2f} {r['train_gflops']:>8.1f} "
            f"{r['compile_s']:>7.2f}s {np.mean(r.get('spike_rates') or [0]):>5.3f}  {r.get('thread_policy', '')}{dist}")


if __name__ == "__main__":
    w, r, T, threads, quick = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    res = run_one(w, r, T or None, threads, warm=1 if quick else 3, n=3 if quick else 20,
                  budget_s=5.0 if quick else 30.0, rate=float(sys.argv[6]) if len(sys.argv) > 6 else 0.1,
                  distributed=len(sys.argv) > 7 and sys.argv[7] == "mpi",
                  overlap=len(sys.argv) <= 8 or sys.argv[8] == "overlap")
    if res is not None:  # (ranks > 0 of a distributed run report nothing)
        print(json.dumps(res))
