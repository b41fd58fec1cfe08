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
