"""HDF5 checkpoints: parameters, optimizer state, RNG state, config, epoch/step, metrics.

Layout (format_version 2):
    /params/<name>                 arrays as they are (dtype and shape preserved; 0-d kept 0-d)
    /opt_state/<key>/.../<name>    nested dicts become groups, arrays datasets, numpy scalars 0-d
                                   datasets marked ``numpy_scalar``; anything else (int, str, list,
                                   None) a JSON string attribute of its group
    attrs: format_version, stopnp_version, epoch, step, and JSON strings config, rng_state,
           metrics, extra; sha256 (below)

Integrity: ``sha256`` is the SHA-256 digest of the whole file's content in a canonical order: every
group and dataset by sorted path; for a dataset its dtype, shape and bytes; for each attribute (the
file's, the groups', the datasets') its name, type and value; everything but ``sha256`` itself.
It is computed from the written file before the rename and verified on every load, so one flipped
byte, one changed weight or momentum, or an edited attribute is refused with one line (HDF5's
Fletcher-32 filter would cover the dataset bytes only, not the attributes that hold the config and
the RNG state). Format 1 files (no digest) still load, with a note that they are unverified.

JSON here may hold numpy arrays (the MT19937/Philox/SFC64 RNG states do): they are written as
``{"__ndarray__": [...], "dtype": "<u4", "shape": [...]}`` and read back as the same array.

Writes are atomic: a temporary file in the same folder, flushed and fsynced, then ``os.replace``;
a crash mid-write leaves the previous checkpoint intact and no temporary behind. No pickle anywhere:
only arrays, numbers and strings are stored, so loading a file can never run code.

This module knows only plain containers (dicts of arrays); it must not import the engine.
"""
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field

import h5py
import numpy as np

from .._version import __version__
from ..fsutil import atomic_write

FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
DIGEST = "sha256"  # root attribute: the content digest (format 2)
_ND = "__ndarray__"
_SCALAR = "numpy_scalar"  # dataset attribute: restore as a numpy scalar, not a 0-d array
_FAMILY = {"f": "float", "c": "complex", "i": "integer", "u": "integer", "b": "bool"}


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
    format_version: int = FORMAT_VERSION
    stopnp_version: str = ""


# ---------------------------------------------------------------- JSON (no pickle, arrays tagged)

def _json_default(o):
    if isinstance(o, np.ndarray):
        if o.dtype.kind not in "biuf":
            raise TypeError(f"array of dtype {o.dtype} cannot be stored as JSON")
        return {_ND: o.tolist(), "dtype": o.dtype.str, "shape": list(o.shape)}
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _json_hook(d):
    if _ND in d:
        return np.array(d[_ND], dtype=np.dtype(d["dtype"])).reshape(d["shape"])
    return d


def _dumps(value, what):
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot store {what}: {e}") from None


def _loads(text):
    return json.loads(text, object_hook=_json_hook)


# ---------------------------------------------------------------- writing

def _name_ok(name, where):
    # A "/" would silently become a nested HDF5 group and the name would not round-trip.
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise CheckpointError(f"cannot store {where}: key {name!r} must be a non-empty string without '/'")
    return name


def _write_array(group, name, value, where):
    arr = np.asarray(value)
    if arr.dtype.kind not in "biufc":
        raise CheckpointError(f"cannot store {where}/{name}: dtype {arr.dtype} (numbers only, no pickle)")
    ds = group.create_dataset(name, data=arr)
    if isinstance(value, np.generic):
        ds.attrs[_SCALAR] = 1
    return ds


def _write_tree(group, tree, where):
    for k, v in tree.items():
        _name_ok(k, where)
        if isinstance(v, dict):
            _write_tree(group.create_group(k, track_order=True), v, f"{where}/{k}")
        elif isinstance(v, (np.ndarray, np.generic)):
            _write_array(group, k, v, where)
        else:
            group.attrs[k] = _dumps(v, f"{where}/{k}")


def _fsync_dir(folder):
    # Makes the rename itself durable (POSIX); harmless to skip where directories cannot be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _hash_value(h, name, value):
    h.update(name.encode("utf-8") + b"\0")
    if isinstance(value, (str, bytes)):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        h.update(b"s" + len(raw).to_bytes(8, "little") + raw)
        return
    arr = np.ascontiguousarray(value)
    head = f"{arr.dtype.str}{arr.shape}".encode()
    h.update(b"a" + len(head).to_bytes(8, "little") + head + arr.tobytes())


def _hash_attrs(h, obj):
    for k in sorted(obj.attrs):
        if obj.name == "/" and k == DIGEST:
            continue
        _hash_value(h, f"{obj.name}@{k}", obj.attrs[k])


def digest(f) -> str:
    """SHA-256 (hex) of an open checkpoint's content: every group, dataset and attribute by sorted path,
    except the root ``sha256`` attribute itself (see the module docstring)."""
    h = hashlib.sha256()
    _hash_attrs(h, f)
    paths = []
    f.visit(paths.append)
    for name in sorted(paths):
        obj = f[name]
        _hash_attrs(h, obj)
        if isinstance(obj, h5py.Dataset):
            _hash_value(h, obj.name, obj[()])
        else:
            h.update(f"{obj.name}/\0".encode("utf-8"))
    return h.hexdigest()


def save(path, *, params, opt_state, rng_state, config, epoch, step, metrics=(), extra=None):
    """Write a checkpoint atomically; returns ``path``. The previous file survives any failure."""
    target = os.fspath(path)
    # Serialise the JSON parts first: a bad value fails before any file is touched.
    meta = {"config": _dumps(config, "config"), "rng_state": _dumps(rng_state, "rng_state"),
            "metrics": _dumps(list(metrics), "metrics"), "extra": _dumps(extra or {}, "extra")}
    with atomic_write(target) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["stopnp_version"] = __version__
        f.attrs["epoch"] = int(epoch)
        f.attrs["step"] = int(step)
        for k, v in meta.items():
            f.attrs[k] = v
        g = f.create_group("params", track_order=True)
        for k, v in params.items():
            _write_array(g, _name_ok(k, "params"), v, "params")
        _write_tree(f.create_group("opt_state", track_order=True), opt_state, "opt_state")
        f.flush()
        f.attrs[DIGEST] = digest(f)  # of what the file now holds: exactly what load will hash
        f.flush()
    _fsync_dir(os.path.dirname(os.path.abspath(target)))
    return path


def save_best_and_last(run_dir, *, is_best, **fields):
    """Write ``run_dir/last.h5``; when ``is_best`` also ``best.h5`` (a copy, also atomic).

    ``fields`` are the keyword arguments of :func:`save`. Returns the paths written.
    """
    last = save(os.path.join(run_dir, "last.h5"), **fields)
    written = [last]
    if is_best:
        best = os.path.join(run_dir, "best.h5")
        with atomic_write(best) as tmp:  # copying the bytes is cheaper than serialising twice
            shutil.copyfile(last, tmp)
        written.append(best)
    return written


# ---------------------------------------------------------------- reading

def _read_array(ds):
    # ds[...] keeps 0-d datasets as 0-d arrays; ds[()] would give a numpy scalar.
    return ds[()] if ds.attrs.get(_SCALAR, 0) else ds[...]


def _read_tree(group):
    out = {k: _loads(v) for k, v in group.attrs.items()}
    for k, v in group.items():
        out[k] = _read_tree(v) if isinstance(v, h5py.Group) else _read_array(v)
    return out


def _one_line(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


_unverified_noted = set()


def _verify(path, f, version):
    """The stored digest matches the content (format 2); a format 1 file has none: a note, once per file."""
    stored = f.attrs.get(DIGEST)
    if stored is None:
        if version >= 2:
            raise CheckpointError(f"{path}: no sha256 digest in a format {version} checkpoint (corrupt or edited); "
                                  f"use the previous one (best.h5 / last.h5) or start a new run")
        key = os.path.abspath(path)
        if key not in _unverified_noted:
            _unverified_noted.add(key)
            print(f"note: {path}: format 1 checkpoint, no checksum: loaded unverified (checkpoints written from "
                  f"now on carry one)", file=sys.stderr)
        return
    if isinstance(stored, bytes):
        stored = stored.decode("ascii", "replace")
    if str(stored) != digest(f):
        raise CheckpointError(f"{path}: checksum mismatch: the file was changed or damaged after it was written "
                              f"(corrupt checkpoint); use the previous one (best.h5 / last.h5) or start a new run")


def _read(path, f):
    if "format_version" not in f.attrs:
        raise CheckpointError(f"{path}: not a stopnp checkpoint (no format_version attribute; "
                              f"found {sorted(f.keys())[:5]})")
    version = int(f.attrs["format_version"])
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointError(f"{path}: checkpoint format version {version} (written by stopnp "
                              f"{f.attrs.get('stopnp_version', '?')}); this stopnp {__version__} reads "
                              f"version(s) {', '.join(map(str, SUPPORTED_VERSIONS))}")
    for part in ("params", "opt_state"):
        if part not in f:
            raise CheckpointError(f"{path}: not a complete stopnp checkpoint (no /{part} group)")
    _verify(path, f, version)
    a = f.attrs
    if not isinstance(_loads(a["config"]), dict):
        raise CheckpointError(f"{path}: its config is not a table of sections (corrupt checkpoint)")
    return Checkpoint(params={k: v[...] for k, v in f["params"].items()},
                      opt_state=_read_tree(f["opt_state"]),
                      rng_state=_loads(a["rng_state"]), config=_loads(a["config"]),
                      epoch=int(a["epoch"]), step=int(a["step"]),
                      metrics=_loads(a.get("metrics", "[]")), extra=_loads(a.get("extra", "{}")),
                      format_version=version, stopnp_version=str(a.get("stopnp_version", "")))


def load(path, *, expect_params=None) -> Checkpoint:
    """Read and validate a checkpoint.

    ``expect_params``: name -> array (shape and dtype family checked) or name -> shape, the
    parameters the network needs. Every problem raises a one-line :class:`CheckpointError` that
    names the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file (try {path}/last.h5)")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if not h5py.is_hdf5(path):
        with open(path, "rb") as fh:
            empty = not fh.read(1)
        if empty or not path.endswith((".h5", ".hdf5")):  # a config, a log, ...: not a damaged checkpoint
            raise CheckpointError(f"{path}: not an HDF5 checkpoint ({'empty file' if empty else 'no HDF5 signature'}); "
                                  f"give a .h5 file that stopnp train wrote, e.g. runs/default/best.h5")
    try:
        with h5py.File(path, "r") as f:
            ck = _read(path, f)
    except CheckpointError:
        raise
    except Exception as e:  # h5py reports damage as OSError, KeyError, ValueError, RuntimeError...
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_one_line(e)}); "
                              f"use the previous one (best.h5 / last.h5)") from None
    if expect_params is not None:
        _check_params(path, ck.params, expect_params)
    return ck


def _family(dtype):
    return _FAMILY.get(np.dtype(dtype).kind, str(np.dtype(dtype)))


def _mismatch(name, got, want):
    """A description of how ``got`` (array) differs from ``want`` (array or shape), or None."""
    shape = tuple(want.shape) if hasattr(want, "shape") else \
        (int(want),) if np.isscalar(want) else tuple(int(n) for n in want)
    if tuple(got.shape) != shape:
        return f"{name}: checkpoint has {tuple(got.shape)}, network expects {shape}"
    if hasattr(want, "dtype") and _family(got.dtype) != _family(want.dtype):
        return (f"{name}: checkpoint has dtype {got.dtype}, network expects a {_family(want.dtype)} "
                f"array ({want.dtype})")
    return None


def _check_params(path, got, expect):
    problems = [m for k in expect if k in got for m in [_mismatch(k, got[k], expect[k])] if m]
    missing = [k for k in expect if k not in got]
    unknown = [k for k in got if k not in expect]
    if not (problems or missing or unknown):
        return
    parts = []
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        parts.append(problems[0] + more)
    if missing:
        parts.append(f"missing from checkpoint: {_names(missing)}")
    if unknown:
        parts.append(f"unknown to the network: {_names(unknown)}")
    raise CheckpointError(f"{path}: parameters do not fit the network: " + "; ".join(parts))


def _names(names, k=5):
    return ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")
