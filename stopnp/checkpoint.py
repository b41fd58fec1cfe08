"""HDF5 checkpoints: parameters, optimizer state, RNG state, config, epoch/step, metrics.

Layout (format_version 1):
    /params/<name>                 arrays as they are (dtype and shape preserved; 0-d kept)
    /opt_state/<key>/<name>        arrays of the optimizer state; scalars as attributes of /opt_state
    attrs: format_version, stopnp_version, config (JSON), rng_state (JSON), epoch, step, metrics (JSON)

Writes are atomic: a temporary file in the same folder, flushed and fsynced, then ``os.replace``;
a crash mid-write leaves the previous checkpoint intact. No pickle anywhere.
"""
import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from ._version import __version__
from .fsutil import atomic_write

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of an unknown version, or does not fit the network."""


@dataclass
class Checkpoint:
    params: dict
    opt_state: dict
    rng_state: dict
    config: dict
    epoch: int
    step: int
    metrics: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _write_tree(group, tree):
    for k, v in tree.items():
        if isinstance(v, dict):
            _write_tree(group.create_group(k), v)
        elif isinstance(v, np.ndarray):
            group.create_dataset(k, data=v)
        else:
            group.attrs[k] = json.dumps(v)


def _read_tree(group):
    out = {k: json.loads(v) for k, v in group.attrs.items()}
    for k, v in group.items():
        out[k] = _read_tree(v) if isinstance(v, h5py.Group) else v[()] if v.shape == () else v[...]
        if isinstance(out[k], np.generic):
            out[k] = np.array(out[k])
    return out


def save(path, *, params, opt_state, rng_state, config, epoch, step, metrics=(), extra=None):
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["stopnp_version"] = __version__
        f.attrs["config"] = json.dumps(config)
        f.attrs["rng_state"] = json.dumps(rng_state)
        f.attrs["epoch"] = int(epoch)
        f.attrs["step"] = int(step)
        f.attrs["metrics"] = json.dumps(list(metrics))
        f.attrs["extra"] = json.dumps(extra or {})
        g = f.create_group("params")
        for k, v in params.items():
            g.create_dataset(k, data=np.asarray(v))
        _write_tree(f.create_group("opt_state"), opt_state)
    return path


def load(path, *, expect_params=None) -> Checkpoint:
    """Read and validate. ``expect_params``: name -> shape (or array) the network needs."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with h5py.File(path, "r") as f:
            version = int(f.attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise CheckpointError(f"{path}: checkpoint format version {version}; this stopnp reads "
                                      f"version {FORMAT_VERSION}")
            params = {k: v[()] if v.shape == () else v[...] for k, v in f["params"].items()}
            ck = Checkpoint(params=params, opt_state=_read_tree(f["opt_state"]),
                            rng_state=json.loads(f.attrs["rng_state"]), config=json.loads(f.attrs["config"]),
                            epoch=int(f.attrs["epoch"]), step=int(f.attrs["step"]),
                            metrics=json.loads(f.attrs["metrics"]), extra=json.loads(f.attrs["extra"]))
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e}); "
                              f"use the previous one (best.h5 / last.h5)") from None
    if expect_params is not None:
        _check_params(path, ck.params, expect_params)
    return ck


def _check_params(path, got, expect):
    missing = [k for k in expect if k not in got]
    unknown = [k for k in got if k not in expect]
    if missing or unknown:
        raise CheckpointError(f"{path}: parameter names differ from the network: missing {missing[:5]}, "
                              f"unexpected {unknown[:5]}")
    for k, want in expect.items():
        shape = tuple(want.shape) if hasattr(want, "shape") else tuple(want)
        if tuple(got[k].shape) != shape:
            raise CheckpointError(f"{path}: {k}: checkpoint has {tuple(got[k].shape)}, network expects "
                                  f"{shape}")
