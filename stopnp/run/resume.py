"""Reading a run back from a checkpoint, every field checked before anything is changed.

    load_network(path)   the network of a checkpoint (``stopnp.load``): its config resolved, the
                         parameters of the right names and shapes, finite and in their ranges
    restore(path, ...)   a resume: the network's parameters, the optimizer state, the position (epoch,
                         next batch), the metrics so far, the random generator and a stopped epoch's
                         running sums, so that the run continues bit-exactly; and the run's history.h5,
                         which the resume appends to

Each problem is one line naming the file and the field (CheckpointError or ConfigError).
"""
import os

import numpy as np

from .. import config as config_mod
from .. import optim
from ..engine.network import ShapeError, check_params, from_config
from . import checkpoint, folder, history


def load_network(path):
    """A Network from a checkpoint file (config and parameters validated); returns (net, checkpoint)."""
    ck = checkpoint.load(path)
    try:
        cfg = config_mod.resolve(ck.config)
    except config_mod.ConfigError as e:
        raise checkpoint.CheckpointError(f"{path}: its config: {e}") from None
    net = from_config(cfg)
    expect = {k: v.shape for k, v in net.params.items()}
    ck = checkpoint.load(path, expect_params=expect)
    for k in net.params:
        net.params[k] = np.array(ck.params[k], dtype=net.params[k].dtype)
    check_loaded(net, path)
    return net, ck


def check_loaded(net, path):
    """Parameters read from ``path`` are finite and inside the ranges training keeps them in."""
    try:
        check_params(net)
    except ShapeError as e:
        raise checkpoint.CheckpointError(f"{path}: {e}") from None
    theta_min = net.config["neuron"]["theta_min"]
    for layer in net.layers:
        if not layer.spiking:
            continue
        theta, alpha = net.params[f"{layer.name}.theta"], net.params[f"{layer.name}.alpha"]
        if theta.min() < theta_min:
            raise checkpoint.CheckpointError(f"{path}: {layer.name}.theta has {theta.min():g} < neuron.theta_min "
                                             f"= {theta_min:g} (training never writes that); corrupt checkpoint?")
        if not 0 <= alpha.min() <= alpha.max() <= 1:
            raise checkpoint.CheckpointError(f"{path}: {layer.name}.alpha outside [0, 1] (training never writes "
                                             f"that); corrupt checkpoint?")


def restore(path, net, names, rng, cfg):
    """Resume from ``path``: check everything (``check``), then load the parameters into ``net`` and the
    saved stream into ``rng``; the history it will append to is checked too. Returns (opt_state, (epoch,
    next batch), metrics, the stopped epoch's sums or None)."""
    ck = checkpoint.load(path, expect_params={k: v.shape for k, v in net.params.items()})
    partial = check(path, ck, net, names, cfg, rng)
    for k, v in ck.params.items():
        net.params[k][...] = v
    check_loaded(net, path)
    check_history(cfg["run"]["out_dir"], net, path)
    return ck.opt_state, (ck.epoch, ck.step), list(ck.metrics), partial


def check_history(run_dir, net, resume):
    """A resume appends to the run's history.h5 (its own, or the one carried into another folder): it must
    be readable and hold this network's layers."""
    src = os.path.dirname(os.path.abspath(resume))
    path = os.path.join(run_dir if folder.same_dir(src, run_dir) else src, history.NAME)
    if os.path.isfile(path):
        history.read(path, [k for k in net.params if k.endswith((".theta", ".alpha"))])


def check(path, ck, net, names, cfg, rng):
    """Everything a resume reads from the checkpoint, checked before anything is changed (one line each);
    sets ``rng`` to the saved stream and returns the stopped epoch's running sums (None at an epoch end)."""
    try:
        optim.check_state(ck.opt_state, net.params, names, cfg["optim"], where=f"{path}: opt_state")
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    for field in ("epoch", "step"):
        v = getattr(ck, field)
        if v < 0:  # (checkpoint.load reads both as int)
            raise config_mod.ConfigError(f"{path}: {field} = {v!r} is not an integer >= 0 (corrupt checkpoint); "
                                         f"start a new run")
    if not isinstance(ck.metrics, (list, tuple)) or not all(isinstance(m, dict) for m in ck.metrics):
        raise config_mod.ConfigError(f"{path}: metrics is not a list of epoch records (corrupt checkpoint); "
                                     f"start a new run")
    if ck.step:  # mid-epoch: the saved batch position only means something for the same batch order
        saved = ck.config  # a dict: checkpoint.load refuses anything else
        for sec, key in (("data", "name"), ("data", "batch_size"), ("data", "limit_train"), ("run", "seed"),
                         ("data", "augment")):
            old, new = (saved.get(sec) or {}).get(key), cfg[sec][key]
            if old is not None and old != new:
                raise config_mod.ConfigError(
                    f"{path}: stopped inside an epoch with {sec}.{key} = {old!r}; resuming with {new!r} would "
                    f"skip the wrong batches: keep {sec}.{key} = {old!r} until the epoch ends")
    partial = ck.extra.get("epoch_partial") if ck.step and isinstance(ck.extra, dict) else None
    if partial is not None and not (isinstance(partial, dict) and all(
            isinstance(partial.get(k), (int, float)) and not isinstance(partial.get(k), bool)
            and partial.get(k) >= 0 for k in ("loss_sum", "correct", "seen", "seconds"))):
        raise config_mod.ConfigError(f"{path}: its epoch_partial record is malformed (corrupt checkpoint); start "
                                     f"a new run")
    try:
        rng.bit_generator.state = ck.rng_state
    except (ValueError, TypeError, KeyError) as e:
        raise config_mod.ConfigError(f"{path}: random generator state unreadable ({e}); start a new run") from None
    return partial
