"""HDF5 caches (stopnp/data/cache.py) and conversion of original layouts (download.convert): attributes,
idempotence, atomicity, streamed event conversion for N-MNIST, CIFAR10-DVS and DVS Gesture."""
import hashlib
import json
import os

import h5py
import numpy as np
import pytest

from stopnp import data
from stopnp.data import DataError, cache, download, events
from test_data_formats import aedat2_bytes, aedat31_bytes, aedat31_packet, nmnist_bytes, write_mnist_folder


def test_write_atomic_attrs_and_chunks(tmp_path):
    x = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    out = cache.write_h5_atomic(str(tmp_path / "c.h5"), {"train": (x, [0, 1]), "test": (x[:1], [1])},
                                {"n_classes": 2, "static": True})
    with h5py.File(out) as f:
        assert f["train/x"].compression == "gzip" and f["train/x"].chunks is not None
        assert f.attrs["stopnp_version"] and f["train/y"].dtype == np.int64
    assert os.listdir(tmp_path) == ["c.h5"]  # no temporary left behind


def test_streamed_failure_leaves_nothing(tmp_path):
    def bad():
        yield np.zeros((2, 2), np.uint16), 0
        raise DataError("boom")
    with pytest.raises(DataError, match="boom"):
        cache.write_h5_streamed(str(tmp_path / "s.h5"), {"train": (2, (2, 2), np.uint16, bad())}, {})
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="produced 1 samples, expected 3"):
        cache.write_h5_streamed(str(tmp_path / "s.h5"),
                                {"train": (3, (2, 2), np.uint16, iter([(np.zeros((2, 2)), 0)]))}, {})
    assert os.listdir(tmp_path) == []


def test_convert_mnist_idx_records_provenance(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    ref = write_mnist_folder(str(raw))
    out = download.convert("fashion-mnist", str(raw), cache_dir=str(tmp_path / "cache"))
    assert os.path.basename(out) == "fashion-mnist.h5"
    src = data.load(out, "test")
    assert np.array_equal(src.x[:, 0], ref["t10k"][0]) and np.array_equal(src.y, ref["t10k"][1])
    sums = json.loads(src.attrs["source_sha256"])
    assert sums["t10k-images-idx3-ubyte.gz"] == hashlib.sha256((raw / "t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert json.loads(src.attrs["shapes"]) == {"train": [7, 1, 28, 28], "test": [3, 1, 28, 28]}
    with pytest.raises(DataError, match="nothere: not found. Expected layout"):
        download.convert("mnist", str(tmp_path / "nothere"), cache_dir=str(tmp_path / "cache"))


def _nmnist_tree(root, rng, n=50):
    for split in ("Train", "Test"):
        for d in range(10):
            (root / split / str(d)).mkdir(parents=True)
            t = np.sort(rng.integers(0, 300000, n))
            (root / split / str(d) / "00001.bin").write_bytes(
                nmnist_bytes(rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n), t))


def test_convert_nmnist_streamed_idempotent(tmp_path):
    root = tmp_path / "nmnist"
    _nmnist_tree(root, np.random.default_rng(2))
    cdir = str(tmp_path / "cache")
    out = download.convert("nmnist", str(root), cache_dir=cdir, T=4)
    src = data.load(out, "train")
    assert src.x.shape == (10, 4, 2, 34, 34) and src.x.dtype == np.uint16
    assert not src.static and src.T == 4 and src.input_shape == (2, 34, 34) and src.n_classes == 10
    x, y = next(data.batches(src, 5, 4, shuffle=False))
    assert x.shape == (4, 5, 2, 34, 34) and x.flags.c_contiguous
    assert np.array_equal(x, np.swapaxes(src.x[:5], 0, 1).astype(np.float32)) and x.sum() == 5 * 50
    mtime = os.path.getmtime(out)
    assert download.convert("nmnist", str(root), cache_dir=cdir, T=4) == out
    assert os.path.getmtime(out) == mtime  # idempotent: reused, not rewritten
    other = download.convert("nmnist", str(root), cache_dir=cdir, T=4, by="count", denoise_dt=1000)
    assert other != out and os.path.basename(other) == "nmnist-T4-count-dn1000.h5"
    info = data.info(out)
    assert info["train"]["n"] == 10 and info["attrs"]["T"] == 4 and info["attrs"]["binning"] == "time"
    assert info["attrs"]["stopnp_version"]
    sums = json.loads(info["attrs"]["source_sha256"])
    assert len(sums) == 20 and sums["Train/0/00001.bin"] == hashlib.sha256(
        (root / "Train" / "0" / "00001.bin").read_bytes()).hexdigest()
    assert json.loads(info["attrs"]["shapes"])["test"] == [10, 4, 2, 34, 34]
    with pytest.raises(DataError, match="frames were binned with T = 4"):
        next(data.batches(src, 5, 6))


def test_convert_corrupt_recording_names_file_and_keeps_no_cache(tmp_path):
    root = tmp_path / "nmnist"
    _nmnist_tree(root, np.random.default_rng(5))
    bad = root / "Test" / "3" / "00001.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"Test/3/00001.bin: truncated at byte 245"):
        download.convert("nmnist", str(root), cache_dir=str(tmp_path / "cache"), T=2)
    assert not (tmp_path / "cache").exists()  # no cache, and no folder made for it


def test_convert_cifar10_dvs_and_dvsgesture(tmp_path):
    rng = np.random.default_rng(8)
    root = tmp_path / "c10dvs"
    for name in events.CIFAR10_DVS_CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(10):  # 9 train + 1 test per class
            n = 40
            (root / name / f"cifar10_{name}_{i}.aedat").write_bytes(aedat2_bytes(
                rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n), np.sort(rng.integers(0, 10**6, n))))
    out = download.convert("cifar10-dvs", str(root), cache_dir=str(tmp_path / "cache"), T=5, size=48)
    tr, te = data.load(out, "train"), data.load(out, "test")
    assert tr.x.shape == (90, 5, 2, 48, 48) and te.x.shape == (10, 5, 2, 48, 48)
    assert int(np.asarray(tr.x[0]).sum()) == 40 and sorted(te.y.tolist()) == list(range(10))
    with pytest.raises(DataError, match="missing class folder airplane/"):
        events.list_cifar10_dvs(str(tmp_path), "train")
    # DVS Gesture, original layout: trials list + AEDAT 3.1 + labels csv
    g = tmp_path / "gesture"
    g.mkdir()
    pkt = aedat31_packet([1, 2, 3, 4], [9, 8, 7, 6], [0, 1, 0, 1], [100, 200, 300, 400])
    for split, user in (("train", "user01_led"), ("test", "user24_led")):
        (g / f"{user}.aedat").write_bytes(aedat31_bytes(pkt))
        (g / f"{user}_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,100,250\n5,250,401\n")
        (g / f"trials_to_{split}.txt").write_text(f"{user}.aedat\n")
    out = download.convert("dvsgesture", str(g), cache_dir=str(tmp_path / "cache"), T=2)
    src = data.load(out, "train")
    assert src.x.shape == (2, 2, 2, 128, 128) and src.y.tolist() == [2, 4] and src.n_classes == 11
    assert int(np.asarray(src.x).sum()) == 4
    # tonic's preprocessed layout: ibmGestureTrain/<user_light>/<label>.npy, (N, 4) x, y, p, t[ms]
    tg = tmp_path / "tonic_gesture"
    for split, folder in (("train", "ibmGestureTrain"), ("test", "ibmGestureTest")):
        (tg / folder / "user01_led").mkdir(parents=True)
        for label in (0, 10):
            np.save(tg / folder / "user01_led" / f"{label}.npy",
                    np.array([[1, 2, 1, 0.0], [3, 4, 0, 1.5], [5, 6, 1, 3.0]]))
    out = download.convert("dvsgesture", str(tg), cache_dir=str(tmp_path / "cache2"), T=3, size=64)
    src = data.load(out, "test")
    assert src.x.shape == (2, 3, 2, 64, 64) and src.y.tolist() == [0, 10]
    assert np.asarray(src.x[0]).sum(axis=(1, 2, 3)).tolist() == [1, 1, 1]
    with pytest.raises(DataError, match="trials_to_train.txt"):
        events.list_dvsgesture(str(tmp_path), "train")
