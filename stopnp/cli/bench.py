"""``stopnp bench`` argument parsing (the measurements are in bench.py)."""


def register(sub):
    p = sub.add_parser("bench", help="training/inference speed and memory benchmark",
                       description="Synthetic-data benchmark (mlp, lenet, vgg, and mlp at T = 4..64), one subprocess "
                                   "per configuration: samples/s, peak RSS and its growth, FLOPs, GFLOP/s, "
                                   "compile time. Protocol and results: docs/results.md.")
    p.add_argument("--workloads", default="mlp,lenet,vgg", help="comma list of mlp, lenet, vgg")
    p.add_argument("--rules", default="stop,bptt", help="comma list of rules (default stop,bptt)")
    p.add_argument("--threads", type=int, default=0,
                   help="0 = auto (numba kernels on all cores, the conv and linear GEMMs inside numba's pool, "
                        "NumPy BLAS 1, so results do not depend on the thread count; stopnp.engine.threads); "
                        "n > 0: n numba threads, NumPy BLAS 1")
    p.add_argument("--no-sweep", action="store_true", help="skip the mlp T = 4..64 sweep")
    p.add_argument("--quick", action="store_true", help="few batches (smoke test)")
    p.add_argument("--rate", type=float, default=0.1,
                   help="before timing, scale each layer's weights so that it fires at this many spikes per "
                        "neuron per step on the first 16 samples (the peer benchmark's protocol; default 0.1); "
                        "0 = default init")
    p.add_argument("--ranks", type=int, default=1,
                   help="N > 1: each configuration as one data-parallel job, mpiexec -n N (the mpi extra); each "
                        "rank trains on B/N of every batch and the gradients are summed over the ranks; adds the "
                        "Allreduce time and size per batch (docs/distributed.md)")
    p.add_argument("--no-overlap", action="store_true",
                   help="with --ranks: one blocking gradient sum after the backward pass (run.mpi_overlap = false) "
                        "instead of starting the top layers' sums during it")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--out", help="also append JSON lines to this file (e.g. RUN_DIR/bench.jsonl)")
    p.set_defaults(func=cmd)


def cmd(args):
    from ..config import ConfigError
    from ..rules import RULES
    from ..tools.bench import WORKLOADS, run_all
    workloads, rules = args.workloads.split(","), args.rules.split(",")
    for name, given, valid in (("--workloads", workloads, WORKLOADS), ("--rules", rules, RULES)):
        bad = [g for g in given if g not in valid]
        if bad:
            raise ConfigError(f"{name}: unknown {', '.join(map(repr, bad))}; valid: {', '.join(valid)}")
    if not 0 <= args.rate < 1:
        raise ConfigError(f"--rate {args.rate:g}: spikes per neuron per step, 0 <= rate < 1 (0 = no calibration)")
    if args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: 0 (auto) or a positive count")
    if args.ranks < 1:
        raise ConfigError(f"--ranks {args.ranks}: 1 (one process) or more")
    if args.ranks > 1:
        from ..tools.bench import mpiexec
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            mpi4py = None
        if mpi4py is None or mpiexec() is None:
            from ..run.distributed import INSTALL
            raise ConfigError(f"--ranks {args.ranks} needs mpi4py and mpiexec; install them with {INSTALL}")
    if args.out:  # found now, not after the whole benchmark has run
        import os
        folder = os.path.dirname(os.path.abspath(args.out))
        if os.path.isdir(args.out) or not os.path.isdir(folder):
            raise ConfigError(f"--out {args.out}: expected a file in an existing folder (JSON lines are appended)")
    run_all(workloads, rules, args.threads, not args.no_sweep, args.quick, as_json=args.json, out=args.out,
            rate=args.rate, ranks=args.ranks, overlap=not args.no_overlap)
    return 0
