"""The cost of data-parallel training: the α-β model of ring Allreduce, its loopback calibration, and
projections of time per epoch and efficiency (docs/distributed.md).

Ring Allreduce of M bytes over p ranks (reduce-scatter, then all-gather; 2(p-1) messages of M/p bytes
per rank, and (p-1)/p·M bytes summed per rank):

    t_ar(p, M) = 2(p-1)·α + 2·(p-1)/p · M · (1/β_link + γ)

α: the latency of one message, β_link: the link's bandwidth in bytes/s, γ: the local cost per byte
moved (copy and sum in memory), fitted on loopback where 1/β_link is part of it. One batch of B samples
on p nodes of c cores:

    t_batch = B / (p·c·r) + t_ar(p, M)        r: training samples/s of one core
    efficiency = (B / (p·c·r)) / t_batch      (no overlap of the sum with the backward)

    python -m stopnp.tools.scaling sweep            under mpiexec -n 2: Allreduce times on this machine
    python -m stopnp.tools.scaling model ...        the projection table
"""
import argparse
import json
import sys
import time

import numpy as np


def ring_allreduce_s(p, nbytes, alpha, link_bytes_s, gamma):
    """Seconds for a ring Allreduce of ``nbytes`` over ``p`` ranks (0 for one rank)."""
    if p <= 1:
        return 0.0
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes * (1.0 / link_bytes_s + gamma)


def project(samples, batch, nbytes, rate_per_core, nodes, cores, alpha, link_bit_s, gamma):
    """Time per epoch (s) and efficiency of ``samples`` per epoch in batches of ``batch`` on ``nodes``
    nodes of ``cores`` cores, each core training ``rate_per_core`` samples/s."""
    compute = batch / (nodes * cores * rate_per_core)
    reduce = ring_allreduce_s(nodes, nbytes, alpha, link_bit_s / 8.0, gamma)
    steps = -(-samples // batch)
    return steps * (compute + reduce), compute / (compute + reduce)


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


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m stopnp.tools.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sweep", help="Allreduce times (run under mpiexec -n 2)")
    m = sub.add_parser("model", help="projected time per epoch and efficiency")
    m.add_argument("--samples", type=int, default=50000)
    m.add_argument("--batch", type=int, default=128)
    m.add_argument("--bytes", type=float, required=True, help="gradient bytes per batch")
    m.add_argument("--rate", type=float, required=True, help="training samples/s of one core")
    m.add_argument("--alpha", type=float, required=True, help="seconds per message")
    m.add_argument("--gamma", type=float, required=True, help="seconds per byte, local (loopback fit)")
    m.add_argument("--nodes", default="1,8,64")
    m.add_argument("--cores", default="2,4,16")
    m.add_argument("--links", default="1,10,100", help="Gbit/s")
    args = p.parse_args(argv)
    if args.cmd == "sweep":
        rows = sweep()
        if rows is not None:
            for r in rows:
                print(json.dumps(r))
            alpha, gamma = fit_alpha_gamma([r["bytes"] for r in rows], [r["min_s"] for r in rows], rows[0]["ranks"])
            print(json.dumps({"alpha_s": alpha, "gamma_s_per_byte": gamma}))
        return 0
    print(f"{'nodes':>5} {'cores':>5} {'Gbit/s':>6} {'compute ms':>10} {'sum ms':>8} {'epoch s':>9} {'eff':>6}")
    for nodes in map(int, args.nodes.split(",")):
        for cores in map(int, args.cores.split(",")):
            for link in map(float, args.links.split(",")):
                epoch, eff = project(args.samples, args.batch, args.bytes, args.rate, nodes, cores, args.alpha,
                                     link * 1e9, args.gamma)
                comp = 1000 * args.batch / (nodes * cores * args.rate)
                red = 1000 * ring_allreduce_s(nodes, args.bytes, args.alpha, link * 1e9 / 8, args.gamma)
                print(f"{nodes:>5} {cores:>5} {link:>6g} {comp:>10.1f} {red:>8.1f} {epoch:>9.0f} {100 * eff:>5.1f}%")
                if nodes == 1:
                    break  # (no link)
    return 0


if __name__ == "__main__":
    sys.exit(main())
