"""MNIST / Fashion-MNIST IDX files (raw or gzipped).

Header: 2 zero bytes, type code 0x08 (uint8), number of dimensions n, then n big-endian uint32
sizes; images are magic 0x00000803 (N, 28, 28), labels 0x00000801 (N,).
"""
import gzip
import os
import zlib

import numpy as np


def _read_bytes(path):
    from . import DataError
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e}); the download may be truncated: delete it and get it "
                        f"again") from None


def read_idx(path, expect_ndim=None):
    from . import DataError
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise DataError(f"{path}: truncated at byte {len(buf)} (header needs 4 bytes); delete it and download it again")
    if buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise DataError(f"{path}: bad magic number 0x{buf[:4].hex()} (expected 0x00000801 labels or "
                        f"0x00000803 images); not an MNIST IDX file: delete it and download it again")
    ndim = buf[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{path}: magic 0x{buf[:4].hex()} has {ndim} dimensions, expected {expect_ndim}; "
                        f"images and labels swapped? delete it and download it again")
    head = 4 + 4 * ndim
    if len(buf) < head:
        raise DataError(f"{path}: truncated at byte {len(buf)} (header needs {head} bytes); delete it and "
                        f"download it again")
    shape = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    need = head + int(np.prod(shape))
    if len(buf) < need:
        raise DataError(f"{path}: truncated at byte {len(buf)}; {need} bytes expected for shape {shape}: "
                        f"delete it and download it again")
    if len(buf) > need:
        raise DataError(f"{path}: {len(buf) - need} bytes after the {need} that shape {shape} needs; the header "
                        f"does not match the data: delete it and download it again")
    return np.frombuffer(buf, np.uint8, int(np.prod(shape)), head).reshape(shape)


def read_mnist_split(folder, split):
    """(images uint8 (N, 1, 28, 28), labels int64) from the four standard file names (.gz or raw)."""
    from . import DataError
    prefix = "train" if split == "train" else "t10k"
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        cands = [os.path.join(folder, f"{prefix}-{kind}{ext}") for ext in (".gz", "")]
        found = [p for p in cands if os.path.isfile(p)]
        if not found:
            raise DataError(f"{folder}: missing {prefix}-{kind}[.gz]; download the four MNIST IDX files "
                            f"(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...) into this folder")
        paths.append(found[0])
    x = read_idx(paths[0], 3)
    y = read_idx(paths[1], 1).astype(np.int64)
    if x.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]}: images are {x.shape[1]}x{x.shape[2]}, expected 28x28; is this MNIST? "
                        f"delete it and download it again")
    if len(x) == 0:
        raise DataError(f"{paths[0]}: holds no images; delete it and download it again")
    if len(x) != len(y):
        raise DataError(f"{paths[0]}: {len(x)} images but {paths[1]} has {len(y)} labels; download both again")
    if y.size and y.max() > 9:
        raise DataError(f"{paths[1]}: label {int(y.max())} out of range 0..9; delete it and download it again")
    return x[:, None], y
