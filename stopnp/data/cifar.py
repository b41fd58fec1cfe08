"""CIFAR-10 / CIFAR-100 readers: the binary version (tar.gz or extracted), and the python version
through a restricted unpickler.

Binary records: CIFAR-10 = 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32);
CIFAR-100 = coarse label byte + fine label byte + 3072 bytes (the fine label is used).
"""
import io
import os
import pickle
import tarfile

import numpy as np

FILES = {"cifar10": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
         "cifar100": {"train": ["train.bin"], "test": ["test.bin"]}}


def parse_binary(buf, name, source="<bytes>"):
    from . import DataError
    lab = 1 if name == "cifar10" else 2
    rec = lab + 3072
    if len(buf) % rec:
        raise DataError(f"{source}: {len(buf)} bytes is not a whole number of {rec}-byte records; truncated "
                        f"at byte {len(buf) // rec * rec}")
    arr = np.frombuffer(buf, np.uint8).reshape(-1, rec)
    y = arr[:, lab - 1].astype(np.int64)
    n_classes = 10 if name == "cifar10" else 100
    if y.size and y.max() >= n_classes:
        bad = int(np.argmax(y >= n_classes))
        raise DataError(f"{source}: label {int(y[bad])} out of range at byte {bad * rec + lab - 1}")
    return arr[:, lab:].reshape(-1, 3, 32, 32), y


def read_binary(path, name, split):
    """From ``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz`` or the folder it extracts to."""
    from . import DataError
    xs, ys = [], []
    for fname in FILES[name][split]:
        if os.path.isdir(path):
            cands = [os.path.join(root, fname) for root, _, files in os.walk(path) if fname in files]
            if not cands:
                raise DataError(f"{path}: missing {fname}; expected the extracted CIFAR binary version "
                                f"({', '.join(FILES[name][split])})")
            with open(cands[0], "rb") as f:
                buf, src = f.read(), cands[0]
        else:
            try:
                with tarfile.open(path, "r:gz") as tar:
                    member = next((m for m in tar.getmembers() if m.name.endswith("/" + fname)), None)
                    if member is None:
                        raise DataError(f"{path}: archive has no {fname}")
                    buf, src = tar.extractfile(member).read(), f"{path}:{member.name}"
            except (tarfile.TarError, OSError, EOFError) as e:
                raise DataError(f"{path}: corrupt or truncated archive ({e}); download it again") from None
        x, y = parse_binary(buf, name, src)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only what CIFAR's python pickles hold: containers, bytes, ints and numpy arrays."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        from . import DataError
        raise DataError(f"refusing to unpickle {module}.{name}: only plain data and numpy arrays are "
                        f"allowed in a CIFAR python-version file")


def read_python_batch(path):
    """One python-version batch -> (x uint8 (N, 3, 32, 32), y int64). Never runs arbitrary code."""
    from . import DataError
    with open(path, "rb") as f:
        raw = f.read()
    try:
        d = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: not a readable CIFAR python batch ({e})") from None
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    labels = d.get("labels", d.get("fine_labels"))
    if "data" not in d or labels is None:
        raise DataError(f"{path}: missing 'data' or 'labels' entries")
    x = np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(labels, np.int64)
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y
