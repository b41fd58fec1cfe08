"""The ``stopnp`` command line: argument parsing only; every command calls the library.

    stopnp train [RECIPE] [--set SECTION.KEY=VALUE ...] [--resume CKPT | --force]
    stopnp eval CHECKPOINT [--data NAME] [--split test] [--numerics fixed]
    stopnp inspect CHECKPOINT [--out FILE.h5] [--batch N]
    stopnp plot RUN_DIR [--out DIR]
    stopnp data {get,info,convert} ...
    stopnp bench [...]
    stopnp compare [--rules R1,R2] [--epochs N] [--force]
    stopnp export {c,nir} CHECKPOINT OUT
    stopnp recipes [list | show NAME | copy NAME [DEST]]

RECIPE: a config file (TOML or JSON) or the name of a packaged recipe (``stopnp recipes list``).
--data-dir DIR (before or after the command; same as STOPNP_DATA=DIR): the folder dataset names resolve in.
"""
import argparse
import contextlib
import json
import os
import sys

EPILOG = """examples:
  stopnp train                                   LeNet-5, STOP-WTL, built-in MNIST subset
  stopnp train mnist-lenet5 --set optim.lr=0.05 --set run.epochs=3   a packaged recipe (stopnp recipes)
  stopnp train my.toml --data-dir /srv/datasets  a recipe file; datasets from /srv/datasets/cache
  stopnp eval runs/default/best.h5
  stopnp inspect runs/default/last.h5 --out plots/inspect.h5
  stopnp plot runs/default
  stopnp export c runs/default/best.h5 build/mcu  C99 library (fixed point), see: stopnp export c --help
"""


def _add_train(sub):
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
    p.set_defaults(func=cmd_train)


def cmd_train(args):
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


def _add_eval(sub):
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
    p.set_defaults(func=cmd_eval)


def cmd_eval(args):
    from .. import data
    from ..run.train import check_data, evaluate, load_network
    from .. import config as C
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


def _add_inspect(sub):
    p = sub.add_parser("inspect", help="dump δ, traces and ΔW/Δθ/Δα per layer and step for one batch",
                       description="Run one batch of the checkpoint's data through STOP, write per-layer, "
                                   "per-step δ, U, s, traces and gradient contributions to HDF5, and print "
                                   "spike rates, gradient norms and the cosine to the BPTT gradient.\n\n"
                                   "The file: records/<layer>.<u|s|delta|th_trace|al_trace> and "
                                   "records/<synapse>.w_trace, each (T, B, ...); per_step/<param>: that "
                                   "step's gradient contribution (ΔW[t] = Σ_b δ[t] ⊗ w~[t], Δθ[t] = "
                                   "Σ_b δ[t]·(th~[t] - 1), Δα[t] = mean_j Σ_b δ[t]·al~[t]), (T, ...param "
                                   "shape); grads/<param> = Σ_t per_step; bptt/<param>: BPTT's gradient "
                                   "on the same batch; inputs/x (T, B, ...) and inputs/y; attrs: table "
                                   "(JSON, the printed rows), checkpoint and split.")
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="output HDF5 (default: plots/inspect.h5)")
    p.add_argument("--batch", type=int, default=16, help="samples in the batch (default 16)")
    p.add_argument("--split", default="test", choices=["train", "test"],
                   help="dataset split the batch is taken from (default test; its first samples)")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args):
    import numpy as np
    from .. import data
    from ..tools.inspect import check_inspectable, format_table, inspect_batch, write_h5
    from ..run.train import load_network
    net, _ = load_network(args.checkpoint)
    check_inspectable(net, args.checkpoint)
    d = net.config["data"]
    src = data.load(d["name"], args.split)
    x, y = next(iter(data.batches(src, args.batch, d["T"], shuffle=False, dtype=np.float64)))
    net = net.astype(np.float64)
    records, steps, grads, ref, table = inspect_batch(net, np.ascontiguousarray(x), y)
    out = args.out or os.path.join("plots", "inspect.h5")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    write_h5(out, records, steps, grads, ref, table, {"checkpoint": os.path.abspath(args.checkpoint),
                                                       "split": args.split}, inputs={"x": x, "y": y})
    print(format_table(table))
    print(f"wrote {out}")
    return 0


def _add_plot(sub):
    p = sub.add_parser("plot", help="all figures of a run directory (PNG)",
                       description="Write spike rasters, membrane potentials with thresholds, STOP traces, "
                                   "θ/α across epochs, loss/accuracy curves and spike rates for a run.")
    p.add_argument("run_dir")
    p.add_argument("--out", help="figure directory (default: RUN_DIR/plots)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args):
    from ..tools.report import plot_run
    paths = plot_run(args.run_dir, args.out)
    for p in paths:
        print(p)
    return 0


def _add_recipes(sub):
    p = sub.add_parser("recipes", help="list, show or copy the packaged recipes",
                       description="The recipes shipped with stopnp (`stopnp train NAME` runs one). Copy one "
                                   "to edit it, then `stopnp train FILE`.",
                       epilog="examples:\n  stopnp recipes\n  stopnp recipes show fashion-lenet5\n"
                              "  stopnp recipes copy fashion-lenet5 my.toml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    rs = p.add_subparsers(dest="recipes_command", metavar="SUBCOMMAND")
    rs.add_parser("list", help="names and one-line descriptions (the default)")
    show = rs.add_parser("show", help="print a recipe")
    show.add_argument("name", metavar="NAME")
    copy = rs.add_parser("copy", help="copy a recipe to a file or folder")
    copy.add_argument("name", metavar="NAME")
    copy.add_argument("dest", nargs="?", default=".", metavar="DEST",
                      help="file, or folder for NAME.toml (default: the current folder)")
    copy.add_argument("--force", action="store_true", help="replace an existing DEST file")
    p.set_defaults(func=cmd_recipes)


def cmd_recipes(args):
    import shutil
    from .. import recipes
    from ..config import ConfigError
    which = getattr(args, "recipes_command", None) or "list"
    if which == "list":
        names = recipes.names()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {recipes.summary(name)}")
        return 0
    src = recipes.path(args.name)
    if which == "show":
        with open(src, encoding="utf-8") as f:
            sys.stdout.write(f.read())
        return 0
    dest = args.dest
    if os.path.isdir(dest):
        dest = os.path.join(dest, os.path.basename(src))
    if os.path.exists(dest) and not args.force:
        raise ConfigError(f"{dest}: exists; choose another DEST or replace it with --force")
    shutil.copyfile(src, dest)
    print(f"wrote {dest}")
    return 0


def _version():
    """stopnp's version and those of the libraries that decide its numbers (without importing them)."""
    import platform
    from importlib import metadata
    from .._version import __version__
    deps = []
    for dist in ("numpy", "numba", "scipy", "h5py"):
        try:
            deps.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            deps.append(f"{dist} missing")
    return f"stopnp {__version__} (python {platform.python_version()}, {', '.join(deps)})"


class _VersionAction(argparse.Action):
    """--version: the versions are looked up only when asked for."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print stopnp's version and those of python, numpy, numba, scipy, h5py")

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


# commands that read datasets by name: they take --data-dir after the command too
_DATA_COMMANDS = ("train", "eval", "inspect", "plot", "compare", "export")


def build_parser():
    from . import data as data_cli
    parser = argparse.ArgumentParser(
        prog="stopnp", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train spiking neural networks with STOP (and BPTT, SLTT, OTTT, BPSTA) on the CPU.")
    parser.add_argument("--version", action=_VersionAction)
    data_cli.add_data_dir(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_eval(sub)
    _add_inspect(sub)
    _add_plot(sub)
    data_cli.register(sub)
    for mod in ("stopnp.cli.bench", "stopnp.cli.compare", "stopnp.cli.export"):
        try:
            module = __import__(mod, fromlist=["register"])
        except ModuleNotFoundError as e:
            if not mod.startswith(e.name or "?"):
                raise
            continue
        module.register(sub)
    _add_recipes(sub)
    for name in _DATA_COMMANDS:
        if name in sub.choices:
            data_cli.add_data_dir(sub.choices[name])
    return parser


@contextlib.contextmanager
def _data_dir_env(data_dir):
    """--data-dir as STOPNP_DATA while the command runs: seen by the library and by the subprocesses a
    command starts (compare), and restored afterwards for callers of ``main``."""
    from ..data.paths import ENV
    if not data_dir:
        yield
        return
    old = os.environ.get(ENV)
    os.environ[ENV] = os.path.abspath(os.path.expanduser(data_dir))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    from ..config import ConfigError
    from ..engine.network import ShapeError
    from ..engine.memory import ResourceError
    errors = [ConfigError, ShapeError, FileNotFoundError]
    try:
        from ..run.checkpoint import CheckpointError
        errors.append(CheckpointError)
        from ..data import DataError
        errors.append(DataError)
        from ..run.train import TrainingError
        errors.append(TrainingError)
        from ..run.progress import MetricsError
        errors.append(MetricsError)
        from ..run.lock import RunLockError
        errors.append(RunLockError)
        from ..run.history import HistoryError
        errors.append(HistoryError)
    except ImportError:
        pass
    try:
        with _data_dir_env(getattr(args, "data_dir", None)):
            return args.func(args) or 0
    except BrokenPipeError:  # e.g. `stopnp data info ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except (*errors, OSError) as e:  # OSError: an output path that is a file, a full disk, ...
        if getattr(e, "silent", False):  # agreed by the ranks of a distributed run: rank 0 prints it
            return 2
        print(f"stopnp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:  # memory.ResourceError says how much; a bare MemoryError is NumPy's
        text = (str(e).strip().splitlines() or ["out of memory"])[0]
        hint = "" if isinstance(e, ResourceError) else "; lower data.T, the batch size or the model width"
        print(f"stopnp {args.command}: error: {text}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
