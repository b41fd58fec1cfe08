"""``stopnp train``: argument parsing; the training loop is stopnp/run/train.py."""
import argparse
import json
import os

from . import EPILOG


def register(sub):
    p = sub.add_parser("train", help="train a network (default: LeNet-5 with STOP-WTL on built-in MNIST)",
                       description="Train a spiking network. With no RECIPE: LeNet-5, STOP with weights,\n"
                                   "thresholds and leaks learned (STOP-WTL), on the built-in 8,000/2,000-digit\n"
                                   "MNIST subset (the packaged recipe mnist-lenet5). Writes config.toml,\n"
                                   "metrics.jsonl, last.h5, best.h5 and history.h5 to run.out_dir, which must not\n"
                                   "hold a run already (--resume continues it, --force replaces it).",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("config", nargs="?", metavar="RECIPE",
                   help="a config file (TOML or JSON) or a packaged recipe name, e.g. fashion-lenet5 "
                        "(stopnp recipes list)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set optim.lr=0.05")
    p.add_argument("--rule", help="shortcut for --set rule.name=RULE")
    p.add_argument("--epochs", type=int, help="shortcut for --set run.epochs=N")
    p.add_argument("--out", help="shortcut for --set run.out_dir=DIR")
    p.add_argument("--resume", metavar="CKPT", help="continue bit-exactly from a checkpoint (last.h5)")
    p.add_argument("--force", action="store_true",
                   help="replace a run already in run.out_dir (its checkpoints and metrics are lost)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (logs, CI)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd)


def cmd(args):
    from .. import config as C
    from ..recipes import locate
    from ..run.train import train
    ov = list(args.overrides)
    for o in ov:  # before the config file: `--set optim.lr 0.1` would otherwise read "0.1" as the file
        C.parse_override(o)
    base = C.read(locate(args.config)) if args.config else C.DEFAULT_TRAIN
    if args.rule is not None:
        ov.append(f"rule.name={args.rule!s}")
    if args.epochs is not None:
        ov.append(f"run.epochs={args.epochs}")
    if args.out is not None:
        ov.append(f"run.out_dir={json.dumps(args.out)}")
    out_set = any(C.parse_override(o)[:2] == ("run", "out_dir") for o in ov)
    if args.resume and not out_set:  # continue in the checkpoint's own folder, wherever it now is
        ov.insert(0, f"run.out_dir={json.dumps(os.path.dirname(os.path.abspath(args.resume)))}")
    if args.quiet:
        ov.append("run.quiet=true")
    cfg = C.resolve(base, ov)
    if args.resume and not args.config:
        from ..run.checkpoint import load
        saved = load(args.resume).config
        run = saved.get("run") if isinstance(saved.get("run"), dict) else {}
        saved = {**saved, "run": {**run, "quiet": False}}  # display only: not inherited from the old run
        try:
            C.resolve(saved)
        except C.ConfigError as e:  # the checkpoint's own config: name the file, not just the field
            raise C.ConfigError(f"{args.resume}: its config: {e}; start a new run") from None
        cfg = C.resolve(saved, ov)
    if args.print_config:
        print(C.dumps_toml(cfg, comments=True))
        return 0
    res = train(cfg, resume=args.resume, overwrite=args.force)
    if not res.root:  # ranks > 0 of a distributed run: rank 0 reports
        return 130 if res.interrupted else 0
    last = res.metrics[-1] if res.metrics else {}
    print(("stopped after" if res.interrupted else "done in") + f" {res.seconds:.1f} s: best test accuracy "
          f"{100 * res.best_acc:.2f}%"
          + (f", last {100 * last['test_acc']:.2f}%" if last else "") + f"; run directory {res.run_dir}")
    return 130 if res.interrupted else 0
