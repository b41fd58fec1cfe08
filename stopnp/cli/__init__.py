"""The ``stopnp`` command line: argument parsing only, one module per command; every command calls the library.

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
    from . import bench, compare, export, inspect, plot, recipes, train
    from . import eval as evaluate  # (``eval`` itself would shadow the builtin here)
    for command in (train, evaluate, inspect, plot, data_cli, bench, compare, export, recipes):
        command.register(sub)
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
