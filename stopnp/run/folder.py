"""The run folder: what a run writes there, and whether a run may write there at all.

    config.toml     the resolved config, each key's valid values as a comment
    metrics.jsonl   one line per epoch (progress.MetricsLog)
    last.h5         the last checkpoint: resumable, also mid-epoch (checkpoint.py)
    best.h5         the checkpoint of the best test accuracy so far
    history.h5      θ and α of every layer after each epoch (history.py)

A folder that already holds a run (its checkpoints) is refused unless the run resumes itself there or
``--force`` replaces it; a run resumed into another folder starts it as a copy of the run so far. While a
run trains, lock.py keeps any second writer out.
"""
import os
import shutil

from .. import config as config_mod
from ..fsutil import atomic_write
from . import history

RUN_FILES = ("last.h5", "best.h5")  # a run worth keeping: its checkpoints (metrics alone cannot resume)
REPLACED = ("last.h5", "best.h5", "metrics.jsonl", "history.h5")  # what --force removes


def held_run(run_dir):
    """The checkpoints of a run already in ``run_dir`` (empty: nothing there to protect)."""
    return [f for f in RUN_FILES if os.path.exists(os.path.join(run_dir, f))]


def same_dir(a, b):
    return os.path.isdir(a) and os.path.isdir(b) and os.path.samefile(a, b)


def check(run_dir, resume, overwrite):
    """May this run write into ``run_dir``? A ConfigError naming the ways on if not; with ``overwrite``
    (--force) the run there is removed whole (no stale best.h5 or history epochs mixed in)."""
    if not run_dir:
        raise config_mod.ConfigError("run.out_dir is empty; name a run directory, e.g. --out runs/mnist")
    held = held_run(run_dir)
    own = bool(resume) and same_dir(run_dir, os.path.dirname(os.path.abspath(resume)))
    if overwrite and not own:
        for f in REPLACED:
            if os.path.exists(os.path.join(run_dir, f)):
                os.remove(os.path.join(run_dir, f))
        return
    if not held:
        return
    if not resume:
        cont = (f"continue it with --resume {os.path.join(run_dir, 'last.h5')}, "
                if "last.h5" in held else "")
        raise config_mod.ConfigError(f"{run_dir} already holds a run ({', '.join(held)}); {cont}choose another "
                                     f"--out, or replace it with --force")
    if not own:
        raise config_mod.ConfigError(
            f"{run_dir} holds another run ({', '.join(held)}); resuming {resume} there would replace it: "
            f"resume without --out (its own folder), into an empty --out, or replace it with --force")


def carry_over(resume, run_dir):
    """Resuming into another folder: it starts as a copy of the run so far (last.h5, and best.h5 and the
    θ/α history when the run has them), so it is whole even if no epoch is left to train."""
    src = os.path.dirname(os.path.abspath(resume))
    if same_dir(src, run_dir):
        return
    for name, source in (("last.h5", resume), ("best.h5", os.path.join(src, "best.h5")),
                         ("history.h5", os.path.join(src, "history.h5"))):
        if os.path.isfile(source):
            with atomic_write(os.path.join(run_dir, name)) as tmp:
                shutil.copyfile(source, tmp)


def write_config(run_dir, cfg):
    with open(os.path.join(run_dir, "config.toml"), "w") as f:
        f.write(config_mod.dumps_toml(cfg, comments=True))


def save_history(run_dir, net, epoch):
    """θ and α of every layer after ``epoch`` into history.h5 (atomically)."""
    history.append(os.path.join(run_dir, history.NAME), net.params, epoch)
