"""HDF5 dataset caches: one file per dataset / representation with ``train`` and ``test`` groups.

    /<split>/x   uint8 images (N, C, H, W) or event-count frames (N, T, C, H, W), chunked, gzip
    /<split>/y   int64 labels (N,)
    attrs        name, n_classes, static, source files and checksums, T/binning, stopnp version

Writes go to a temporary file in the same folder, flushed and fsynced, then renamed: a crash never
leaves a half-written cache under the final name.
"""
import h5py
import numpy as np

from .._version import __version__
from ..fsutil import atomic_write


def write_h5_atomic(path, splits, attrs):
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        for split, (x, y) in splits.items():
            g = f.create_group(split)
            chunk = (min(len(x), 256),) + tuple(x.shape[1:])
            g.create_dataset("x", data=x, chunks=chunk, compression="gzip", compression_opts=9, shuffle=True)
            g.create_dataset("y", data=np.asarray(y, np.int64), compression="gzip")
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["stopnp_version"] = __version__
    return path


def write_h5_streamed(path, splits, attrs):
    """Like ``write_h5_atomic`` but each split is (n, sample_shape, dtype, iterator of (x_i, y_i)):
    samples are written one at a time into chunked datasets, so a large set is never held in memory."""
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        for split, (n, shape, dtype, samples) in splits.items():
            g = f.create_group(split)
            dx = g.create_dataset("x", shape=(n, *shape), dtype=dtype, chunks=(1, *shape), compression="gzip",
                                  shuffle=True)
            labels = np.zeros(n, np.int64)
            count = 0
            for i, (x, y) in enumerate(samples):
                dx[i] = x
                labels[i] = y
                count += 1
            if count != n:
                raise ValueError(f"{path}: {split} produced {count} samples, expected {n}")
            g.create_dataset("y", data=labels, compression="gzip")
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["stopnp_version"] = __version__
    return path
