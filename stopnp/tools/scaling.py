"""The cost of data-parallel training: the α-β model of ring Allreduce, its loopback calibration, and
projections of time per epoch and efficiency (docs/distributed.md).

Ring Allreduce of M bytes over p ranks (reduce-scatter, then all-gather; 2(p-1) messages of M/p bytes
per rank, and (p-1)/p·M bytes summed per rank):

    t_ar(p, M) = 2(p-1)·α + 2·(p-1)/p · M · (1/β_link + γ)

α: the latency of one message, β_link: the link's bandwidth in bytes/s, γ: the local cost per byte
moved (copy and sum in memory), fitted on loopback where 1/β_link is part of it. One batch of B samples
on p nodes of c cores:

    compute = B / (p·c·r) + s / c             r: training samples/s of one core, s: the optimizer step
                                              of the whole model on one core (every rank makes it)
    t_batch = compute + exposed
    efficiency = t_1 / (p · t_batch)          t_1: one node's t_batch (no sum)

Without overlap, exposed = t_ar(p, M). With it (run.mpi_overlap), the gradients are summed in buckets,
top layer first, each started as soon as the last backward pass has left its layers: bucket k of M_k
bytes is ready h_k·B/(p·c·r) before the backward ends (h_k: the measured share of a batch's compute
that lies below it), the buckets go through the link one after another, so with f_0 = -∞ and times
relative to the end of the backward

    f_k = max(f_{k-1}, -h_k·B/(p·c·r)) + t_ar(p, M_k),      exposed = max(0, f_last)

(a per-layer pipeline; it assumes the transfers progress while the node computes: a NIC that moves the
data itself, or an MPI progress thread).

    python -m stopnp.tools.scaling sweep            under mpiexec -n 2: Allreduce times on this machine
    python -m stopnp.tools.scaling profile          r, s and the h_k of a recipe's network, measured here
    python -m stopnp.tools.scaling model ...        the projection table
"""
import argparse
import json
import math
import sys
import time

import numpy as np


def ring_allreduce_s(p, nbytes, alpha, link_bytes_s, gamma):
    """Seconds for a ring Allreduce of ``nbytes`` over ``p`` ranks (0 for one rank)."""
    if p <= 1:
        return 0.0
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes * (1.0 / link_bytes_s + gamma)


def buckets(layers, bucket_bytes):
    """The sums the overlap starts: ``layers`` top first as (bytes, h) (h: the share of a batch's compute
    below the layer), consecutive layers merged until a bucket holds ``bucket_bytes`` (as
    distributed.Comm.grads_final); a bucket starts when its lowest layer is final. The rest is the last."""
    out, nbytes = [], 0
    for i, (b, h) in enumerate(layers):
        nbytes += b
        if nbytes >= bucket_bytes or i == len(layers) - 1:
            out.append((nbytes, h))
            nbytes = 0
    return out


def exposed_s(bucket_list, compute_s, p, alpha, link_bytes_s, gamma):
    """Seconds of the gradient sum left after the backward pass: the buckets (bytes, h), top first, go
    through the link one after another, bucket k no earlier than h_k·``compute_s`` before the end."""
    end = -math.inf
    for nbytes, h in bucket_list:
        end = max(end, -h * compute_s) + ring_allreduce_s(p, nbytes, alpha, link_bytes_s, gamma)
    return max(0.0, end) if p > 1 else 0.0


def project(samples, batch, nbytes, rate_per_core, nodes, cores, alpha, link_bit_s, gamma, step_s=0.0,
            layers=None, bucket_bytes=256 * 1024):
    """Time per epoch (s) and efficiency of ``samples`` per epoch in batches of ``batch`` on ``nodes``
    nodes of ``cores`` cores, each core training ``rate_per_core`` samples/s, each node making the
    optimizer step (``step_s`` on one core) on its cores. ``layers``: (bytes, h) top first (``profile``):
    the sum overlaps the backward (the module docstring); None: it follows it."""
    share = batch / (nodes * cores * rate_per_core)
    step = step_s / cores
    if layers is None:
        exposed = ring_allreduce_s(nodes, nbytes, alpha, link_bit_s / 8.0, gamma)
    else:
        exposed = exposed_s(buckets(layers, bucket_bytes), share, nodes, alpha, link_bit_s / 8.0, gamma)
    t_batch = share + step + exposed
    one = batch / (cores * rate_per_core) + step
    steps = -(-samples // batch)
    return steps * t_batch, one / (nodes * t_batch)


def fit_alpha_gamma(sizes, seconds, p=2, large=1 << 20):
    """(α, γ) of t = 2(p-1)·α + 2(p-1)/p·M·γ from loopback times (no link term): α from the smallest
    message, γ the median per-byte cost of the messages of at least ``large`` bytes (robust to the
    outliers of a shared machine, where a least-squares fit can give α < 0)."""
    order = np.argsort(sizes)
    sizes, seconds = np.asarray(sizes, float)[order], np.asarray(seconds, float)[order]
    alpha = seconds[0] / (2 * (p - 1))
    big = sizes >= large
    per_byte = (seconds[big] - 2 * (p - 1) * alpha) / (2 * (p - 1) / p * sizes[big])
    return float(alpha), float(np.median(per_byte)) if big.any() else 0.0


def sweep(sizes=(8, 1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22, 1 << 24, 1 << 26), repeats=20):
    """Allreduce (float32 sum, in place) times per message size on MPI_COMM_WORLD: the minimum and the
    median over ``repeats``, each after a barrier. Returns rows on rank 0 (None on the others)."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rows = []
    for nbytes in sizes:
        buf = np.ones(max(1, nbytes // 4), np.float32)
        ts = []
        for _ in range(repeats + 2):
            comm.Barrier()
            t = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            ts.append(time.perf_counter() - t)
        ts = np.array(ts[2:])
        comm.Allreduce(MPI.IN_PLACE, ts, op=MPI.MAX)  # a sum ends when its slowest rank has it
        rows.append({"ranks": comm.size, "bytes": buf.nbytes, "min_s": float(ts.min()),
                     "median_s": float(np.median(ts))})
    return rows if comm.rank == 0 else None


def profile(recipe="cifar10-vgg11", batch=16, batches=3, threads=1, seed=0):
    """Measure, in this process, what the model needs of a recipe's network (float32, its T, synthetic
    images, the same at every step as direct coding feeds them, random labels): the training rate per
    core r (samples/s of the rule's batch over ``threads``, the median of ``batches`` after one warm-up),
    the optimizer step s of the whole model on one core, and per layer, top first, its gradient bytes
    and the share h of the batch's compute that lies below it in the last backward pass (the time from
    the moment the rule names the layer's gradients final, ``on_grads_final``, to the end of the batch).
    Returns a dict (JSON)."""
    from .. import optim, recipes
    from ..config import read, resolve
    from ..engine.network import from_config
    from ..engine.threads import set_threads
    from ..rules import RULES
    from ..rules.common import resolve_options
    set_threads(threads)
    cfg = resolve(read(recipes.path(recipe)))
    net = from_config(cfg)
    T, rule = cfg["data"]["T"], cfg["rule"]["name"]
    opts = resolve_options(net, rule, {})
    names = net.trainable(opts["learn"])
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 1, (batch, *net.input_shape)).astype(np.float32)
    x, y = np.broadcast_to(img, (T, *img.shape)), rng.integers(0, net.n_classes, batch)
    ws = RULES[rule].workspace(net, batch, np.float32, opts, T)
    state = optim.init_state(cfg["optim"], net.params, names)
    rows = []
    for i in range(batches + 1):
        grads = {n: np.zeros(net.params[n].shape, np.float32) for n in names}
        named = []
        t0 = time.perf_counter()
        res = RULES[rule].run(net, net.params, x, y, opts, grads=grads, ws=ws, rng=rng,
                              on_grads_final=lambda ns: named.append((time.perf_counter(), list(ns))))
        t1 = time.perf_counter()
        optim.step(net.params, res.grads, state, cfg["optim"], cfg["optim"]["lr"], cfg["neuron"]["theta_min"])
        t2 = time.perf_counter()
        rows.append({"batch_s": t1 - t0, "step_s": t2 - t1,
                     "layers": [{"names": ns, "below_s": t1 - t} for t, ns in named]})
    rows = rows[1:]
    median = lambda k: float(np.median([r[k] for r in rows]))  # noqa: E731
    batch_s, layers = median("batch_s"), []
    for k, first in enumerate(rows[0]["layers"]):
        below = float(np.median([r["layers"][k]["below_s"] for r in rows]))
        layers.append({"names": first["names"], "bytes": int(sum(net.params[n].nbytes for n in first["names"])),
                       "below_s": below, "h": below / batch_s})
    return {"recipe": recipe, "rule": rule, "T": T, "batch": batch, "threads": threads, "batches": batches,
            "batch_s": batch_s, "rate_per_core": batch / (batch_s * threads), "step_s": median("step_s") * threads,
            "bytes": int(sum(net.params[n].nbytes for n in names)), "layers": layers,
            "spikes_per_neuron_step": {layer.name: res.spike_counts[layer.name] / (T * batch * layer.size)
                                       for layer in net.layers if layer.spiking}}


def _number(kind, zero_ok):
    """An argparse type: a finite number of ``kind`` > 0 (>= 0 with ``zero_ok``); one line naming the
    value otherwise."""
    bound = ">= 0" if zero_ok else "> 0"

    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (v >= 0 if zero_ok else v > 0) or (kind is float and not math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number {bound}")
        return v
    return parse


def _positive(kind):
    return _number(kind, zero_ok=False)


def _nonneg(kind):
    return _number(kind, zero_ok=True)


def _positive_list(kind):
    """An argparse type: comma-separated numbers of ``kind`` > 0, e.g. 1,8,64."""
    one = _positive(kind)
    return lambda text: [one(part) for part in text.split(",")]


def _read_profile(p, path):
    """The last JSON line of a ``profile`` output, or one line naming the file and the fix (``p.error``)."""
    try:
        with open(path) as f:
            prof = json.loads(f.read().strip().splitlines()[-1])
        layers = [(int(r["bytes"]), float(r["h"])) for r in prof["layers"]]
        return prof, layers, int(prof["bytes"]), float(prof["rate_per_core"]), float(prof["step_s"])
    except OSError as e:
        p.error(f"--profile {path}: {e.strerror or e}; give the JSON that `profile` printed")
    except (ValueError, IndexError, KeyError, TypeError) as e:
        p.error(f"--profile {path}: not the JSON of `profile` ({type(e).__name__}: {e}); give the line that "
                f"`python -m stopnp.tools.scaling profile` printed")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m stopnp.tools.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sweep", help="Allreduce times (run under mpiexec -n 2)")
    pr = sub.add_parser("profile", help="a recipe's r, optimizer step and overlap shares h, measured here")
    pr.add_argument("--recipe", default="cifar10-vgg11")
    pr.add_argument("--batch", type=_positive(int), default=16, help="samples per batch (default: 128 / 8 nodes)")
    pr.add_argument("--batches", type=_positive(int), default=3, help="timed batches, after one warm-up")
    pr.add_argument("--threads", type=_positive(int), default=1)
    m = sub.add_parser("model", help="projected time per epoch and efficiency")
    m.add_argument("--samples", type=_positive(int), default=50000)
    m.add_argument("--batch", type=_positive(int), default=128)
    m.add_argument("--bytes", type=_nonneg(float), help="gradient bytes per batch (default: the --profile's)")
    m.add_argument("--rate", type=_positive(float), help="training samples/s of one core (default: the --profile's)")
    m.add_argument("--alpha", type=_nonneg(float), required=True, help="seconds per message")
    m.add_argument("--gamma", type=_nonneg(float), required=True, help="seconds per byte, local (loopback fit)")
    m.add_argument("--step", type=_nonneg(float), help="seconds of the optimizer step on one core (default: the "
                   "--profile's, else 0)")
    m.add_argument("--profile", help="JSON of `profile`: the sum overlaps the backward (its layers' bytes and h)")
    m.add_argument("--bucket-kib", type=_nonneg(int), default=256, help="run.mpi_bucket_kib (with --profile)")
    m.add_argument("--no-overlap", action="store_true", help="with --profile: its r, bytes and step, but the sum "
                   "after the backward (run.mpi_overlap = false)")
    m.add_argument("--nodes", type=_positive_list(int), default="1,8,64")
    m.add_argument("--cores", type=_positive_list(int), default="2,4,16")
    m.add_argument("--links", type=_positive_list(float), default="1,10,100", help="Gbit/s")
    args = p.parse_args(argv)
    if args.cmd == "sweep":
        rows = sweep()
        if rows is not None:
            for r in rows:
                print(json.dumps(r))
            alpha, gamma = fit_alpha_gamma([r["bytes"] for r in rows], [r["min_s"] for r in rows], rows[0]["ranks"])
            print(json.dumps({"alpha_s": alpha, "gamma_s_per_byte": gamma}))
        return 0
    if args.cmd == "profile":
        from ..config import ConfigError
        try:
            print(json.dumps(profile(args.recipe, args.batch, args.batches, args.threads)))
        except ConfigError as e:
            p.error(f"--recipe {args.recipe}: {e}")
        return 0
    layers = None
    if args.profile:
        _, prof_layers, prof_bytes, prof_rate, prof_step = _read_profile(p, args.profile)
        layers = None if args.no_overlap else prof_layers
        args.bytes = prof_bytes if args.bytes is None else args.bytes
        args.rate = prof_rate if args.rate is None else args.rate
        args.step = prof_step if args.step is None else args.step
        if not args.rate > 0:
            p.error(f"--profile {args.profile}: rate_per_core = {args.rate!r}; expected > 0 (measure it again)")
    if args.bytes is None or args.rate is None:
        p.error("model needs --bytes and --rate, or --profile")
    args.step = args.step or 0.0
    print(f"{'nodes':>5} {'cores':>5} {'Gbit/s':>6} {'compute ms':>10} {'sum ms':>8} {'exposed ms':>10} "
          f"{'epoch s':>9} {'eff':>6}")
    for nodes in args.nodes:
        for cores in args.cores:
            for link in args.links:
                epoch, eff = project(args.samples, args.batch, args.bytes, args.rate, nodes, cores, args.alpha,
                                     link * 1e9, args.gamma, args.step, layers, args.bucket_kib * 1024)
                share = args.batch / (nodes * cores * args.rate)
                comp = 1000 * (share + args.step / cores)
                red = 1000 * ring_allreduce_s(nodes, args.bytes, args.alpha, link * 1e9 / 8, args.gamma)
                shown = red if layers is None else 1000 * exposed_s(
                    buckets(layers, args.bucket_kib * 1024), share, nodes, args.alpha, link * 1e9 / 8, args.gamma)
                print(f"{nodes:>5} {cores:>5} {link:>6g} {comp:>10.1f} {red:>8.1f} {shown:>10.1f} {epoch:>9.0f} "
                      f"{100 * eff:>5.1f}%")
                if nodes == 1:
                    break  # (no link)
    return 0


if __name__ == "__main__":
    sys.exit(main())
