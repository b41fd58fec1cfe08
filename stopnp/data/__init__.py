"""Datasets as plain arrays: sources (cached HDF5 files) and time-major mini-batches.

    load(name_or_path, split) -> Source       "mnist-builtin", a cache name under data/cache/, or a path
    batches(source, batch_size, T, ...)       yields x (T, B, C, H, W) float, y (B,) int64
    info(path) -> dict                        what a cache file holds
    from_arrays(x, y), from_tonic(dataset, T, sensor_size)   sources without a cache file
    DataError (a ValueError)                  any missing, truncated or inconsistent file; names it

Source: x (N, C, H, W) uint8 images or (N, T, C, H, W) uint8/uint16 event counts (numpy array, or an
h5py dataset for caches over 512 MiB), y int64 (N,), n_classes, input_shape (C, H, W), static, T
(None for images), name, attrs (the cache file's attributes).

Static images are fed as the analog image at every step (direct coding) through a stride-0 view
over T: no T copies. Event data are stored as per-step count frames (N, T, C, H, W).
This package never imports the engine.
"""
import os
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """A dataset file or folder is missing, truncated or inconsistent; the message says which."""


@dataclass
class Source:
    name: str
    x: object                 # numpy array or h5py dataset: (N, C, H, W) uint8 or (N, T, C, H, W)
    y: np.ndarray             # (N,) int64
    n_classes: int
    input_shape: tuple
    static: bool
    T: int | None = None
    attrs: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.y)


def _resolve_path(name_or_path):
    from .builtin import DEFAULT_PATH, ROOT
    if name_or_path == "mnist-builtin":
        return DEFAULT_PATH
    if os.path.sep in name_or_path or name_or_path.endswith(".h5"):
        return name_or_path
    return os.path.join(ROOT, "data", "cache", f"{name_or_path}.h5")


def load(name_or_path: str, split: str) -> Source:
    """Open a cached dataset split. Small sets are read into memory; large ones stay on disk."""
    import h5py
    if split not in ("train", "test"):
        raise DataError(f"split {split!r}: valid: train, test")
    path = _resolve_path(name_or_path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such dataset cache; run `stopnp data get {name_or_path}` (or "
                        f"`stopnp data convert`) first, or pass data.name = 'mnist-builtin'")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 cache ({e}); delete it and convert again") from None
    if split not in f or "x" not in f[split] or "y" not in f[split]:
        raise DataError(f"{path}: has no '{split}/x' and '{split}/y' datasets; convert the dataset again")
    g = f[split]
    attrs = {k: _attr(v) for k, v in f.attrs.items()}
    x = g["x"]
    if g["y"].dtype.kind not in "iu":
        raise DataError(f"{path}: {split} labels are {g['y'].dtype}, expected integer class indices; "
                        f"convert the dataset again")
    y = np.asarray(g["y"][...], np.int64)
    if len(y) != x.shape[0]:
        raise DataError(f"{path}: {split} has {x.shape[0]} samples but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{path}: {split} has no samples; convert the dataset again")
    n_classes = int(attrs.get("n_classes", int(y.max()) + 1))
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{path}: {split} labels outside [0, {n_classes})")
    if x.size * x.dtype.itemsize <= 512 * 2 ** 20:
        x = x[...]  # small: read once
        _check_finite(x, f"{path}: {split}")
    static = bool(attrs.get("static", x.ndim == 4))
    shape = tuple(x.shape[1:]) if static else tuple(x.shape[2:])
    return Source(attrs.get("name", os.path.basename(path)), x, y, n_classes, shape, static,
                  None if static else int(x.shape[1]), attrs)


def _check_finite(x, where):
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: samples contain NaN or Inf; fix the data or convert it again")


def from_arrays(x, y, n_classes=None, name="arrays", T=None) -> Source:
    """A Source over in-memory arrays: images (N, C, H, W) or frames (N, T, C, H, W)."""
    if np.asarray(y).dtype.kind not in "iu":
        raise DataError(f"{name}: labels are {np.asarray(y).dtype}, expected integer class indices")
    y = np.asarray(y, np.int64)
    if len(x) != len(y):
        raise DataError(f"{name}: {len(x)} samples but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{name}: no samples")
    _check_finite(np.asarray(x), name)
    static = x.ndim == 4
    return Source(name, x, y, int(n_classes or (y.max() + 1)), tuple(x.shape[1:] if static else x.shape[2:]),
                  static, None if static else int(x.shape[1]))


def from_tonic(dataset, T, sensor_size, out_size=None, by="time", n_classes=None, name="tonic") -> Source:
    """A Source from any tonic dataset (the ``events`` extra): events binned into T frames."""
    from .events import from_tonic as frames
    x, y = frames(dataset, T, sensor_size, out_size, by)
    return from_arrays(x, y, n_classes, name)


def _attr(v):
    """HDF5 attribute -> plain Python value."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v.item() if hasattr(v, "item") else v


def _scale(x):
    return 1.0 / 255.0 if x.dtype == np.uint8 else 1.0


def batches(source: Source, batch_size: int, T: int, *, seed=0, epoch=0, shuffle=True, augment=None,
            drop_last=False, dtype=np.float32):
    """Mini-batches (x time-major (T, B, ...), y). Order and augmentation are pure functions of
    (seed, epoch). ``augment``: None / "none", "shift", "cifar" or "dvs" (see ``augment.py``)."""
    from .augment import AUGMENTS
    if int(batch_size) < 1 or int(T) < 1:
        raise DataError(f"{source.name}: batch_size and T must be >= 1 (got {batch_size}, {T})")
    augment = None if augment in (None, "none") else augment
    if augment is not None and augment not in AUGMENTS:
        raise DataError(f"augment {augment!r}: valid: none, {', '.join(AUGMENTS)}")
    n = len(source.y)
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    aug_rng = np.random.default_rng([seed, epoch, 1])
    if not source.static and source.T is not None and T != source.T:
        raise DataError(f"{source.name}: frames were binned with T = {source.T}, but data.T = {T}; "
                        f"set data.T = {source.T} or convert again")
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if drop_last and len(idx) < batch_size:
            return
        if isinstance(source.x, np.ndarray):
            xb = source.x[idx]
        else:  # h5py: fancy indexing needs increasing indices
            srt = np.argsort(idx)
            xb = np.empty((len(idx), *source.x.shape[1:]), source.x.dtype)
            xb[srt] = source.x[np.sort(idx)]
            _check_finite(xb, source.name)  # a large cache is checked as it is read
        scale = _scale(xb)
        xb = xb.astype(dtype)
        xb *= xb.dtype.type(scale)
        if augment:
            from .augment import apply
            xb = apply(augment, xb, aug_rng, static=source.static)
        if source.static:
            x = np.broadcast_to(xb, (T, *xb.shape))  # stride-0 time axis; x[t] is contiguous
        else:
            x = np.ascontiguousarray(np.swapaxes(xb, 0, 1))
        yield x, source.y[idx]


def info(path: str) -> dict:
    """Shapes, dtypes, class counts and attributes of a cache file (a path, or a name as for ``load``)."""
    import h5py
    path = _resolve_path(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; `stopnp data get NAME` or `stopnp data convert` makes caches")
    try:
        with h5py.File(path, "r") as f:
            out = {"path": path, "attrs": {k: _attr(v) for k, v in f.attrs.items()}}
            for split in f:
                g = f[split]
                if not isinstance(g, h5py.Group) or "x" not in g or "y" not in g:
                    raise DataError(f"{path}: '{split}' is not a split group with x and y; not a stopnp "
                                    f"dataset cache")
                y = g["y"][...]
                out[split] = {"x_shape": tuple(g["x"].shape), "x_dtype": str(g["x"].dtype),
                              "n": int(len(y)),
                              "per_class": np.bincount(y.astype(np.int64)).tolist()}
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
    return out
