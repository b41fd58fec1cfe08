"""``stopnp export {c,nir}`` argument parsing (the work is in export/c.py and export/nir.py)."""
import argparse
import os

from ..config import ConfigError


def register(sub):
    p = sub.add_parser("export", help="export a checkpoint to microcontroller C or to NIR",
                       description="Export a trained network: self-contained C99 (fixed point or float, "
                                   "optionally with the on-device STOP learning step) or a NIR graph.")
    esub = p.add_subparsers(dest="format", metavar="FORMAT")
    c = esub.add_parser(
        "c", help="C99 library: stopnp.h + stopnp.c (+ harness.c)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write OUTDIR/stopnp.h and OUTDIR/stopnp.c: parameters as static arrays (BN folded), static\n"
                    "buffers sized for --batch, no malloc, no libm in fixed point; API stopnp_init, stopnp_reset,\n"
                    "stopnp_step (and with --learn stop: stopnp_learn_step, stopnp_apply). The memory footprint is\n"
                    "printed and written in the header. Fixed-point formats come from the checkpoint's\n"
                    "[numerics] section (see stopnp/fixed/formats.py).",
        epilog="examples:\n"
               "  stopnp export c runs/default/best.h5 build/mcu\n"
               "  stopnp export c runs/default/best.h5 build/mcu --learn stop --learn-last 2 --vectors 4 --check\n"
               "  stopnp export c runs/default/best.h5 build/mcu --learn stop --online   (no gradient buffers)\n"
               "  make -C examples/mcu            (exports runs/default/best.h5 and runs it on a test digit)\n"
               "  make -C examples/mcu qemu       (the same on a Cortex-M3 under QEMU)")
    c.add_argument("checkpoint")
    c.add_argument("outdir")
    c.add_argument("--numerics", choices=["fixed", "float"], default="fixed",
                   help="integer arithmetic (bit-exact to stopnp's fixed point; default) or float32")
    c.add_argument("--learn", choices=["stop"], help="add the on-device STOP learning step")
    c.add_argument("--learn-last", type=int, default=0, metavar="N",
                   help="with --learn: learn only the last N layers (default 0: all)")
    c.add_argument("--online", action="store_true",
                   help="with --learn: update W, θ, α after every step (no gradient accumulators; "
                        "default: stopnp_apply after a sequence)")
    c.add_argument("--batch", type=int, default=1, help="samples per step the buffers hold (default 1)")
    c.add_argument("--vectors", type=int, default=0, metavar="N",
                   help="also write OUTDIR/vectors.bin: N sequences of test samples with every expected value")
    c.add_argument("--sample", type=int, default=None, metavar="INDEX",
                   help="also write OUTDIR/sample.h: test sample INDEX and its label (examples/mcu/main.c)")
    c.add_argument("--check", action="store_true",
                   help="compile with gcc -std=c99 -O2 and every warning an error, and run the harness on vectors.bin")
    c.add_argument("--lr", type=float, default=None, help="learning rate in the vectors (default: optim.lr)")
    c.set_defaults(func=cmd_c)
    n = esub.add_parser("nir", help="NIR graph (needs: pip install 'stopnp[nir]')",
                        description="Write a NIR graph (HDF5) of the network: BN and thresholds folded where "
                                    "NIR needs it. See stopnp/export/nir.py for what NIR cannot carry.")
    n.add_argument("checkpoint")
    n.add_argument("out", help="output file, e.g. net.nir")
    n.add_argument("--dt", type=float, default=1e-4,
                   help="time step of the importer's Euler step (default 1e-4: snntorch, SpikingJelly)")
    n.add_argument("--pool", choices=["avg", "sum"], default="avg",
                   help="AvgPool2d (snntorch, SpikingJelly) or SumPool2d with 1/k² in the next weights (Norse)")
    n.add_argument("--unit-threshold", action="store_true",
                   help="fold 1/θ into the weights so every threshold is 1 (importers needing one θ per layer)")
    n.set_defaults(func=cmd_nir)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _test_batches(net, n, batch, T):
    """The first n·batch test samples of the checkpoint's dataset as (n, T, batch, ...) and (n, batch)."""
    import numpy as np
    from .. import data
    src = data.load(net.config["data"]["name"], "test")
    xs, ys = [], []
    for x, y in data.batches(src, batch, T, shuffle=False, dtype=np.float32):
        xs.append(np.ascontiguousarray(x))
        ys.append(y)
        if len(xs) == n:
            break
    return np.stack(xs), np.stack(ys)


def _check_c_args(args):
    """Every option that can be checked without the checkpoint (one line each)."""
    import math
    for flag, value, low in (("--vectors", args.vectors, 0), ("--sample", args.sample, 0),
                             ("--learn-last", args.learn_last, 0), ("--batch", args.batch, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} {value}: expected an integer >= {low}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(f"--lr {args.lr}: expected a finite learning rate > 0")
    if args.check and not args.vectors:
        raise ConfigError("--check runs the harness on vectors.bin; add --vectors N")
    if args.learn_last and not args.learn:
        raise ConfigError(f"--learn-last {args.learn_last} chooses the layers that learn; add --learn stop")
    if args.online and not args.learn:
        raise ConfigError("--online is a way of learning; add --learn stop")
    if args.lr is not None and not (args.learn and args.vectors):
        raise ConfigError("--lr sets the learning rate of the test vectors; add --learn stop and --vectors N")
    if args.vectors and args.numerics == "float" and args.learn:
        raise ConfigError("--vectors with --numerics float checks inference only; drop --learn or use "
                          "--numerics fixed")
    if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
        raise ConfigError(f"{args.outdir}: is a file; export c writes a folder of C files there")


def _check_c_data(args, net):
    """The test split holds what --vectors and --sample ask for (before anything is written)."""
    from .. import data
    if not args.vectors and args.sample is None:
        return
    n_test = len(data.load(net.config["data"]["name"], "test").y)
    if args.sample is not None and args.sample >= n_test:
        raise ConfigError(f"--sample {args.sample}: the test split has samples 0..{n_test - 1}")
    if args.vectors * args.batch > n_test:
        raise ConfigError(f"--vectors {args.vectors} with --batch {args.batch} needs {args.vectors * args.batch} "
                          f"test samples; the test split has {n_test}")


def cmd_c(args):
    from .. import load
    from ..export import c as cexp
    _check_c_args(args)
    net = load(args.checkpoint)
    kw = dict(numerics=args.numerics, learn=args.learn, learn_last=args.learn_last, batch=args.batch,
              online=args.online)
    cexp.check_options(net, **kw)
    _check_c_data(args, net)
    info = cexp.export(net, args.outdir, source=os.path.basename(args.checkpoint), **kw)
    fp = info["footprint"]
    print(f"wrote {', '.join(os.path.join(args.outdir, f) for f in info['files'])}")
    print(f"memory: parameters {fp['params']:,} B, state {fp['state']:,} B, learning {fp['learn']:,} B, "
          f"scratch {fp['scratch']:,} B; flash {fp['flash']:,} B, RAM {fp['ram']:,} B, plus code "
          f"({args.numerics}, batch {args.batch})")
    T = net.config["data"]["T"]
    if args.sample is not None:
        x, y = _test_batches(net, 1, args.sample + 1, T)
        path = cexp.write_sample(os.path.join(args.outdir, "sample.h"), net, x[0][:, args.sample],
                                 y[0][args.sample], args.numerics)
        print(f"wrote {path} (test sample {args.sample}, label {int(y[0][args.sample])})")
    if args.vectors:
        x, y = _test_batches(net, args.vectors, args.batch, T)
        vec = os.path.join(args.outdir, "vectors.bin")
        if args.numerics == "float":
            cexp.write_float_vectors(vec, net, x)
        else:
            lr = args.lr if args.lr is not None else net.config["optim"]["lr"]
            o = net.config["optim"]
            cexp.write_vectors(vec, net, x, y if args.learn else None, learn_last=args.learn_last,
                               online=args.online, lr=(lr, lr * o["theta_lr_scale"], lr * o["alpha_lr_scale"]))
        print(f"wrote {vec} ({args.vectors} sequences of {args.batch} test samples, T = {T})")
    if args.check:
        rc, out = cexp.compile_and_check(args.outdir, os.path.join(args.outdir, "vectors.bin"))
        print(out.strip())
        return 1 if rc else 0
    return 0


def cmd_nir(args):
    from .. import load
    from ..export.nir import export_nir
    if os.path.isdir(args.out):
        raise ConfigError(f"{args.out}: is a folder; give the output file, e.g. {os.path.join(args.out, 'net.nir')}")
    net = load(args.checkpoint)
    summary = export_nir(net, args.out, dt=args.dt, pool=args.pool, unit_threshold=args.unit_threshold)
    print(f"wrote {args.out}" + (f": {summary}" if summary else ""))
    return 0
