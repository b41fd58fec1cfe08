"""``stopnp eval``: test accuracy of a checkpoint (argument parsing; the work is run/train.evaluate)."""


def register(sub):
    p = sub.add_parser("eval", help="test accuracy of a checkpoint",
                       description="Evaluate a checkpoint on a dataset split (BN in eval mode).")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="dataset name or HDF5 cache (default: the checkpoint's data.name)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--T", type=int, help="time steps (default: the checkpoint's data.T)")
    p.add_argument("--numerics", choices=["float", "fixed"],
                   help="float (run.dtype) or fixed: the integer arithmetic of the C export "
                        "(default: the checkpoint's numerics.kind)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="numerics.KEY=VALUE",
                   help="override a [numerics] format for this evaluation, e.g. --set numerics.w_bits=8")
    p.set_defaults(func=cmd)


def cmd(args):
    from .. import data
    from .. import config as C
    from ..run.resume import load_network
    from ..run.train import check_data, evaluate
    net, ck = load_network(args.checkpoint)
    bad = [o for o in args.overrides if not o.startswith("numerics.")]
    if bad:
        raise C.ConfigError(f"eval --set changes [numerics] only (the network is the checkpoint's): {bad[0]}")
    net.config = C.resolve(net.config, args.overrides)
    d = net.config["data"]
    src = data.load(args.data or d["name"], args.split)
    check_data(net, src, args.split)
    kind = args.numerics or net.config["numerics"]["kind"]
    T = d["T"] if args.T is None else args.T
    if T < 1:
        raise C.ConfigError(f"eval --T {T}: time steps must be >= 1")
    acc = evaluate(net, src, T, d["test_batch_size"], numerics=kind)
    print(f"{args.checkpoint}: {args.split} accuracy {100 * acc:.2f}% on {len(src.y)} samples ({kind})")
    return 0
