"""CIFAR-10 / CIFAR-100 readers: the binary version (tar.gz or extracted), and the python version
through a restricted unpickler.

Binary records: CIFAR-10 = 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32);
CIFAR-100 = coarse label byte + fine label byte + 3072 bytes (the fine label is used).
Python version: one pickle per batch, a dict {b"data": uint8 ndarray (N, 3072), b"labels" or
b"fine_labels": list of ints}. Pickles can run code, so the unpickler admits only the three numpy
callables an ndarray needs and refuses every other global.
"""
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from . import DataError

AGAIN = "delete it and download it again"


class _Missing(DataError):
    """A batch file is not in the folder or archive (read_any then tries the other version)."""

FILES = {"cifar10": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
         "cifar100": {"train": ["train.bin"], "test": ["test.bin"]}}
PY_FILES = {"cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
            "cifar100": {"train": ["train"], "test": ["test"]}}
N_CLASSES = {"cifar10": 10, "cifar100": 100}


def _members(path, names, what):
    """(bytes, source name) of each file in ``names``, from an extracted folder or a .tar.gz archive."""
    if not os.path.exists(path):
        raise DataError(f"{path}: not found; expected the CIFAR {what} archive or the folder it extracts to, "
                        f"holding {', '.join(names)}")
    out = []
    if os.path.isdir(path):
        for fname in names:
            cands = sorted(os.path.join(root, fname) for root, _, files in os.walk(path) if fname in files)
            if not cands:
                raise _Missing(f"{path}: missing {fname}; expected the extracted CIFAR {what} "
                               f"({', '.join(names)})")
            with open(cands[0], "rb") as f:
                out.append((f.read(), cands[0]))
        return out
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
            missing = [f for f in names if f not in members]
            if missing:
                raise _Missing(f"{path}: archive has no {missing[0]}; is this the CIFAR {what}?")
            for fname in names:
                out.append((tar.extractfile(members[fname]).read(), f"{path}:{members[fname].name}"))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({e}); delete it and download it again") from None
    return out


def parse_binary(buf, name, source="<bytes>"):
    lab = 1 if name == "cifar10" else 2
    rec = lab + 3072
    if not buf:
        raise DataError(f"{source}: empty file (no {rec}-byte records); {AGAIN}")
    if len(buf) % rec:
        raise DataError(f"{source}: {len(buf)} bytes is not a whole number of {rec}-byte records; truncated "
                        f"at byte {len(buf) // rec * rec}: {AGAIN}")
    arr = np.frombuffer(buf, np.uint8).reshape(-1, rec)
    y = arr[:, lab - 1].astype(np.int64)
    n_classes = 10 if name == "cifar10" else 100
    if y.size and y.max() >= n_classes:
        bad = int(np.argmax(y >= n_classes))
        raise DataError(f"{source}: label {int(y[bad])} out of range at byte {bad * rec + lab - 1}; is this "
                        f"{name}? {AGAIN}")
    return arr[:, lab:].reshape(-1, 3, 32, 32), y


def read_binary(path, name, split):
    """From ``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz`` or the folder it extracts to."""
    xs, ys = [], []
    for buf, src in _members(path, FILES[name][split], "binary version"):
        x, y = parse_binary(buf, name, src)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def read_python(path, name, split):
    """From ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` or the folder it extracts to."""
    xs, ys = [], []
    for buf, src in _members(path, PY_FILES[name][split], "python version"):
        x, y = parse_python_batch(buf, src)
        if y.size and (y.min() < 0 or y.max() >= N_CLASSES[name]):
            raise DataError(f"{src}: label {int(y.max() if y.max() >= N_CLASSES[name] else y.min())} out of "
                            f"range 0..{N_CLASSES[name] - 1}; is this {name}? {AGAIN}")
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def read_any(path, name, split):
    """The binary version if ``path`` holds it, else the python version (errors other than a missing
    file, e.g. truncation, are raised as they are)."""
    try:
        return read_binary(path, name, split)
    except _Missing:
        pass
    try:
        return read_python(path, name, split)
    except _Missing:
        fix = (f"the archive is corrupt, truncated or another file: {AGAIN}" if os.path.isfile(path) else
               f"download {name.replace('cifar', 'cifar-')}-binary.tar.gz (or run `stopnp data get {name}`)")
        raise DataError(f"{path}: holds neither the CIFAR binary version ({', '.join(FILES[name][split])}) "
                        f"nor the python version ({', '.join(PY_FILES[name][split])}); {fix}") from None


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only what CIFAR's python pickles hold: containers, bytes, ints and numpy arrays."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: only plain data and numpy arrays are "
                        f"allowed in a CIFAR python-version file; {AGAIN} from the official address")


def parse_python_batch(raw, source="<bytes>"):
    """One python-version batch (pickle bytes) -> (x uint8 (N, 3, 32, 32), y int64). Runs no code."""
    try:
        d = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except DataError as e:
        raise DataError(f"{source}: {e}") from None
    except Exception as e:
        raise DataError(f"{source}: not a readable CIFAR python batch ({type(e).__name__}: {e}); {AGAIN}") from None
    if not isinstance(d, dict):
        raise DataError(f"{source}: expected a dict with 'data' and 'labels', got {type(d).__name__}; {AGAIN}")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    labels = d.get("labels", d.get("fine_labels"))
    if "data" not in d or labels is None:
        raise DataError(f"{source}: missing 'data' or 'labels' / 'fine_labels' entries; not a CIFAR batch: {AGAIN}")
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{source}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072); {AGAIN}")
    x = data.reshape(-1, 3, 32, 32)
    if len(x) == 0:
        raise DataError(f"{source}: holds no images; {AGAIN}")
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError, OverflowError):
        y = np.asarray(None)
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataError(f"{source}: labels are {y.dtype} {y.shape}, expected a list of integer class indices; "
                        f"not a CIFAR batch: {AGAIN}")
    y = y.astype(np.int64)
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} images but {len(y)} labels; {AGAIN}")
    return x, y


def read_python_batch(path):
    """One python-version batch file -> (x uint8 (N, 3, 32, 32), y int64)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        return parse_python_batch(f.read(), path)
