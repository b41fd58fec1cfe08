"""Datasets as plain arrays: sources (cached HDF5 files) and time-major mini-batches.

    load(name_or_path, split, data_dir=None)  "mnist-builtin", a cache name in the data folder, or a path
    batches(source, batch_size, T, ...)       yields x (T, B, C, H, W) float, y (B,) int64
    info(path, data_dir=None) -> dict         what a cache file holds
    data_dir(explicit=None) -> str            the data folder: explicit, $STOPNP_DATA, the user cache
    from_arrays(x, y), from_tonic(dataset, T, sensor_size)   sources without a cache file
    simulate_saccades(images, params, seed)   N-MNIST-like event recordings of static digits (saccades.py);
                                              "nmnist-builtin": those of the built-in digits, as a cache
    DataError (a ValueError)                  any missing, truncated or inconsistent file; names it

A cache is checked once, when it is opened (``load``, ``info``): x and y are datasets stored in the file
itself (no external link, external raw storage or virtual dataset), x real numbers (N, C, H, W) or
(N, T, C, H, W), y integer labels of shape (N,) (an (N, 1) column is refused, not squeezed), the
attribute n_classes an integer in 1..MAX_CLASSES (absent: the largest label + 1) and every label in
0..n_classes - 1,
the attribute static consistent with x's rank. x's checks read metadata only; float pixels are checked
for NaN/Inf as they are read.

Source: x (N, C, H, W) uint8 images or (N, T, C, H, W) uint8/uint16 event counts (numpy array, or an
h5py dataset for caches over 512 MiB), y int64 (N,), n_classes, input_shape (C, H, W), static, T
(None for images), name, attrs (the cache file's attributes).

Names resolve to <data folder>/cache/<name>.h5 (``paths.py``: the ``data_dir`` argument, else the
environment variable STOPNP_DATA, else the platform's user cache folder such as ~/.cache/stopnp).
"mnist-builtin" is package data, read in place.

Static images are fed as the analog image at every step (direct coding) through a stride-0 view
over T: no T copies. Event data are stored as per-step count frames (N, T, C, H, W).
This package never imports the engine.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from . import paths
from .paths import data_dir


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


def _is_path(name_or_path):
    return os.path.sep in name_or_path or "/" in name_or_path or name_or_path.endswith(".h5")


def _resolve_path(name_or_path, data_dir=None):
    if name_or_path == "mnist-builtin":
        return paths.builtin_path()
    if _is_path(name_or_path):
        return name_or_path
    return os.path.join(paths.cache_dir(data_dir), f"{name_or_path}.h5")


def _missing(name_or_path, path, data_dir=None):
    """The one-line reason a dataset file is not there, and the fix."""
    if name_or_path == "mnist-builtin":
        return f"{path}: the built-in dataset is missing from this installation of stopnp; reinstall it"
    if _is_path(name_or_path):
        return (f"{path}: no such dataset cache file (`stopnp data get NAME` or `stopnp data convert NAME ROOT` "
                f"make one), or use data.name = 'mnist-builtin'")
    return (f"dataset {name_or_path!r}: no cache {path} in the data folder {paths.data_dir(data_dir)}; make it "
            f"with `stopnp data get {name_or_path}` or `stopnp data convert {name_or_path} ROOT`, point "
            f"{paths.ENV} (or --data-dir) at the folder that holds it, or use data.name = 'mnist-builtin'")


def load(name_or_path: str, split: str, data_dir=None) -> Source:
    """Open a cached dataset split. Small sets are read into memory; large ones stay on disk.
    ``data_dir``: the data folder for a name (default $STOPNP_DATA, else the user cache folder)."""
    if split not in ("train", "test"):
        raise DataError(f"split {split!r}: valid: train, test")
    path = _resolve_path(name_or_path, data_dir)
    if not os.path.isfile(path):
        raise DataError(_missing(name_or_path, path, data_dir))
    f = _open_h5(path)
    try:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        x, y, n_classes, static = _read_split(f, path, split, attrs)
        if x.size * x.dtype.itemsize <= 512 * 2 ** 20:
            x = _read(x, f"{path}: {split}/x")  # small: read once
            _check_finite(x, f"{path}: {split}")
            f.close()
    except BaseException:
        f.close()
        raise
    shape = tuple(x.shape[1:]) if static else tuple(x.shape[2:])
    return Source(attrs.get("name", os.path.basename(path)), x, y, n_classes, shape, static,
                  None if static else int(x.shape[1]), attrs)


MAX_CLASSES = 2 ** 16  # n_classes above this is a corrupt attribute or label, not a classification task
_REDO = "convert the dataset again"


def _open_h5(path):
    import h5py
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 cache ({e}); delete it and {_REDO}") from None


def _read(ds, where, index=Ellipsis):
    """``ds[index]`` of an HDF5 dataset; a damaged chunk or a missing filter becomes a DataError naming it."""
    try:
        return ds[index]
    except OSError as e:
        raise DataError(f"{where} is unreadable ({e}); the file is damaged: delete it and {_REDO}") from None


def _dataset(g, name, where):
    """``g[name]`` as an h5py Dataset whose data lie in this file (no external link, external raw file
    or virtual mapping: those read whatever other file they name)."""
    import h5py
    link = g.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise DataError(f"{where} is a link to {link.filename}:{link.path}; a cache holds its own data: "
                        f"{_REDO}")
    ds = g.get(name)
    if ds is None:
        return None
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{where} is an HDF5 group, expected a dataset (array); not a stopnp cache: {_REDO}")
    if ds.is_virtual or ds.external:
        kind = "a virtual dataset" if ds.is_virtual else f"stored in external files ({ds.external[0][0]}, ...)"
        raise DataError(f"{where} is {kind}; a cache holds its own data: {_REDO}")
    return ds


def _read_split(f, path, split, attrs):
    """The split's x (h5py Dataset, not read), y (int64 (N,), read), n_classes and static flag: every
    type, shape and range checked here, once; x's dtype and shape are metadata (no pixel is read)."""
    import h5py
    g = f.get(split)
    if g is not None and not isinstance(g, h5py.Group):
        raise DataError(f"{path}: '{split}' is not a group with x and y; not a stopnp dataset cache: {_REDO}")
    x = None if g is None else _dataset(g, "x", f"{path}: {split}/x")
    yd = None if g is None else _dataset(g, "y", f"{path}: {split}/y")
    if x is None or yd is None:
        raise DataError(f"{path}: has no '{split}/x' and '{split}/y' datasets; {_REDO}")
    where = f"{path}: {split}"
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}/x is {x.dtype}, expected real numbers (uint8 images, uint16 event counts or "
                        f"float); {_REDO}")
    if x.ndim not in (4, 5):
        raise DataError(f"{where}/x has shape {x.shape}, expected images (N, C, H, W) or event frames "
                        f"(N, T, C, H, W); {_REDO}")
    if yd.dtype.kind not in "iu":
        raise DataError(f"{where} labels are {yd.dtype}, expected integer class indices; {_REDO}")
    if yd.ndim != 1:
        raise DataError(f"{where}/y has shape {yd.shape}, expected ({x.shape[0]},): one class index per sample; "
                        f"store the labels 1-D (y.reshape(-1) if each row holds one label) or {_REDO}")
    if len(yd) != x.shape[0]:
        raise DataError(f"{where} has {x.shape[0]} samples but {len(yd)} labels; {_REDO}")
    if x.shape[0] == 0:
        raise DataError(f"{where} has no samples; {_REDO}")
    if 0 in x.shape[1:]:
        raise DataError(f"{where}/x has shape {x.shape}: empty samples; {_REDO}")
    static = attrs.get("static", x.ndim == 4)
    if not isinstance(static, bool):
        raise DataError(f"{path}: attribute static = {static!r}, expected true or false; {_REDO}")
    if static != (x.ndim == 4):
        raise DataError(f"{path}: attribute static = {static} but {split}/x has shape {x.shape} (static images "
                        f"are 4-D, event frames 5-D); {_REDO}")
    n_classes = attrs.get("n_classes")
    if n_classes is not None and not _is_count(n_classes):
        raise DataError(f"{path}: attribute n_classes = {n_classes!r}, expected an integer in 1..{MAX_CLASSES}; "
                        f"{_REDO}")
    y = _read(yd, f"{where}/y")
    return x, y.astype(np.int64), _check_labels(y, n_classes, where, _REDO), static


def _is_count(n):
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and 1 <= n <= MAX_CLASSES


def _check_labels(y, n_classes, where, fix):
    """Every label of the integer array ``y`` in 0..n_classes - 1 (``n_classes`` None: max + 1, at most
    MAX_CLASSES); returns n_classes."""
    if n_classes is None:
        lo, hi = int(y.min()), int(y.max())  # Python ints: uint64 labels do not wrap
        if lo >= 0 and hi < MAX_CLASSES:
            return hi + 1
        bad = int(np.argmax(y < 0)) if lo < 0 else int(np.argmax(y == y.max()))
        raise DataError(f"{where}: label {int(y[bad])} at index {bad}; class indices must be 0..n_classes - 1 "
                        f"(at most {MAX_CLASSES} classes): fix the labels or {fix}")
    out = (y < 0) | (y >= n_classes)
    if out.any():
        bad = int(np.argmax(out))
        raise DataError(f"{where} labels outside [0, {n_classes}): label {int(y[bad])} at index {bad} "
                        f"(n_classes = {n_classes}); fix the labels or {fix}")
    return int(n_classes)


def __getattr__(name):
    # the simulator compiles numba kernels: imported on first use, not with the package
    if name == "simulate_saccades":
        from .saccades import simulate_saccades
        return simulate_saccades
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_finite(x, where):
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: samples contain NaN or Inf; fix the data or convert it again")


def from_arrays(x, y, n_classes=None, name="arrays", T=None) -> Source:
    """A Source over in-memory arrays: images (N, C, H, W) or frames (N, T, C, H, W)."""
    x, y = np.asarray(x), np.asarray(y)
    if y.dtype.kind not in "iu":
        raise DataError(f"{name}: labels are {y.dtype}, expected integer class indices")
    if x.dtype.kind not in "biuf" or x.ndim not in (4, 5):
        raise DataError(f"{name}: samples are {x.dtype} {x.shape}, expected real numbers (N, C, H, W) or "
                        f"(N, T, C, H, W)")
    if y.shape != (len(x),):
        raise DataError(f"{name}: {len(x)} samples but labels of shape {y.shape}, expected ({len(x)},)")
    if len(y) == 0:
        raise DataError(f"{name}: no samples")
    n_classes = n_classes or None  # 0 / None: inferred from the labels
    if n_classes is not None and not _is_count(n_classes):
        raise DataError(f"{name}: n_classes = {n_classes!r}, expected an integer in 1..{MAX_CLASSES}")
    n_classes = _check_labels(y, n_classes, name, "pass n_classes")
    _check_finite(x, name)
    static = x.ndim == 4
    return Source(name, x, y.astype(np.int64), n_classes, tuple(x.shape[1:] if static else x.shape[2:]),
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
            xb[srt] = _read(source.x, f"{source.x.file.filename}: {source.x.name.lstrip('/')}", np.sort(idx))
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


def info(path: str, data_dir=None) -> dict:
    """Shapes, dtypes, class counts and attributes of a cache file (a path, or a name as for ``load``);
    every split is checked as ``load`` checks it, except the pixels, which are not read."""
    name, path = path, _resolve_path(path, data_dir)
    if not os.path.isfile(path):
        raise DataError(_missing(name, path, data_dir))
    with _open_h5(path) as f:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        out = {"path": path, "attrs": attrs}
        for split in f:
            x, y, n_classes, _ = _read_split(f, path, split, attrs)
            out[split] = {"x_shape": tuple(x.shape), "x_dtype": str(x.dtype), "n": int(len(y)),
                          "per_class": np.bincount(y, minlength=n_classes).tolist()}
    return out
