"""Bad-input corpus, data files: malformed dataset caches (HDF5), MNIST IDX files, CIFAR binary and python
batches, N-MNIST .bin, AEDAT 2.0 (CIFAR10-DVS), AEDAT 3.1 + _labels.csv (DVS Gesture) and tonic .npy,
each run through every command that reads it: a cache through `stopnp data info`, `stopnp eval CKPT
--data CACHE` and `stopnp train --set data.name=CACHE`; original files through `stopnp data convert`.
Each must give one line naming the file and the fix, exit 2, and change nothing (tests/badinput.py).
The good inputs the makers start from are converted / evaluated successfully first (controls)."""
import gzip
import io
import json
import os
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest

from badinput import Corpus, Env, refused
from test_data_formats import (aedat2_bytes, aedat31_bytes, aedat31_packet, cifar_python_batch, cifar_records,
                               nmnist_bytes, py2_pickle, tar_gz, write_idx, write_mnist_folder)
from stopnp.run import checkpoint
from stopnp import cli, optim
from stopnp import config as C
from stopnp.data import cifar, events
from stopnp.engine.network import from_config

TINY = ["model.name=mlp", "model.hidden=[16]", "data.batch_size=4", "data.test_batch_size=4", "data.T=2",
        "run.epochs=1", "run.quiet=true"]


def _convert(name):
    return lambda env: ["data", "convert", name, env.path, "--cache-dir", env.work / "cache", "--T", "2"]


COMMANDS = {
    "info": lambda env: ["data", "info", env.path],
    "eval": lambda env: ["eval", env.shared["checkpoint"], "--data", env.path],
    "train": lambda env: ["train", "--quiet", "--out", env.work / "run",
                          *[a for o in TINY + [f"data.name={json.dumps(str(env.path))}"] for a in ("--set", o)]],
    **{f"convert-{n}": _convert(n) for n in ("mnist", "cifar10", "cifar100", "nmnist", "cifar10-dvs", "dvsgesture")},
}
CACHE_COMMANDS = ("info", "eval", "train")
PIXEL_COMMANDS = ("eval", "train")  # the commands that read a cache's pixels
corpus = Corpus(COMMANDS)


# --- HDF5 caches -------------------------------------------------------------------------------------------
X = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28)).astype(np.uint8)
Y = np.array([0, 3, 9, 1], np.int64)


def good_cache(work, mutate=None, x=X, y=Y, attrs=None):
    """train/ and test/ with x, y as stopnp writes them; ``mutate(f)`` then breaks the file."""
    path = work / f"{work.name}.h5"
    with h5py.File(path, "w") as f:
        for split in ("train", "test"):
            f.create_dataset(f"{split}/x", data=x, chunks=(1, *x.shape[1:]), compression="gzip")
            f[f"{split}/y"] = y
        f.attrs.update({"name": "tiny", "n_classes": 10, "static": True, **(attrs or {})})
    if mutate is not None:
        with h5py.File(path, "a") as f:
            mutate(f)
    return path


def in_test(fn):
    """A mutation of the test split only: `train` reads a good train split first, then refuses."""
    return lambda f: fn(f["test"], f)


def replace(name, value):
    """The test split's dataset ``name`` replaced by ``value``."""
    def fn(g, f):
        del g[name]
        g.create_dataset(name, data=value)
    return in_test(fn)


def del_attr(key):
    return lambda f: f.attrs.__delitem__(key)


def cache_case(name, expect, mutate=None, commands=CACHE_COMMANDS, **kw):
    corpus.add(f"cache-{name}", lambda work: good_cache(work, mutate, **kw), commands, expect)


big = Y.copy()
big[2] = 2 ** 40
neg = Y.copy()
neg[1] = -1
cache_case("y-column", r"test/y has shape \(4, 1\), expected \(4,\).*y.reshape", replace("y", Y[:, None]))
cache_case("y-2d", r"test/y has shape \(4, 2\)", replace("y", np.stack([Y, Y], 1)))
cache_case("y-float", "labels are float64, expected integer", replace("y", Y + 0.5))
cache_case("y-string", "labels are |S1, expected integer", replace("y", np.array([b"a", b"b", b"c", b"d"])))
cache_case("y-negative", "test: label -1 at index 1; class indices must be 0..n_classes - 1",
           lambda f: (replace("y", neg)(f), del_attr("n_classes")(f)))
cache_case("y-negative-with-n-classes", r"labels outside \[0, 10\): label -1 at index 1", replace("y", neg))
cache_case("y-2pow40", "label 1099511627776 at index 2",  # data info: bincount tried to allocate 8 TiB
           lambda f: (replace("y", big)(f), del_attr("n_classes")(f)))
cache_case("y-equals-n-classes", r"labels outside \[0, 5\): label 9 at index 2", attrs={"n_classes": 5})
cache_case("y-uint64-wraps", r"label 9223372036854775809 at index 0",
           lambda f: (replace("y", np.array([2 ** 63 + 1, 0, 1, 2], np.uint64))(f), del_attr("n_classes")(f)))
cache_case("y-group", r"test/y is an HDF5 group, expected a dataset",
           in_test(lambda g, f: (g.__delitem__("y"), g.create_group("y"))))
cache_case("x-group", r"test/x is an HDF5 group, expected a dataset",
           in_test(lambda g, f: (g.__delitem__("x"), g.create_group("x"))))
cache_case("split-is-dataset", r"'test' is not a group with x and y",
           lambda f: (f.__delitem__("test"), f.create_dataset("test", data=X)))
cache_case("y-missing", r"has no 'test/x' and 'test/y' datasets", in_test(lambda g, f: g.__delitem__("y")))
cache_case("x-dangling-soft-link", r"has no 'test/x' and 'test/y' datasets",
           in_test(lambda g, f: (g.__delitem__("x"), g.__setitem__("x", h5py.SoftLink("/nowhere")))))
cache_case("x-complex", "test/x is complex64, expected real numbers", replace("x", X.astype(np.complex64) + 1j))
cache_case("x-bytes", r"test/x is \|S1, expected real numbers", replace("x", np.full(X.shape, b"a")))
cache_case("x-3d", r"test/x has shape \(4, 28, 28\), expected images", replace("x", X[:, 0]))
cache_case("x-empty-samples", r"test/x has shape \(4, 1, 0, 28\): empty samples", replace("x", X[:, :, :0]))
cache_case("x-nan", "test: samples contain NaN or Inf",  # `data info` reads no pixels
           replace("x", np.where(X > 250, np.nan, X / 255).astype(np.float32)), commands=PIXEL_COMMANDS)
cache_case("count-mismatch", "test has 4 samples but 3 labels", replace("y", Y[:3]))
cache_case("no-samples", "test has no samples", lambda f: (replace("x", X[:0])(f), replace("y", Y[:0])(f)))
cache_case("n-classes-string", "attribute n_classes = 'ten', expected an integer", attrs={"n_classes": "ten"})
cache_case("n-classes-float", "attribute n_classes = 10.0, expected an integer", attrs={"n_classes": 10.0})
cache_case("n-classes-zero", "attribute n_classes = 0, expected an integer", attrs={"n_classes": 0})
cache_case("n-classes-2pow40", "attribute n_classes = 1099511627776", attrs={"n_classes": 2 ** 40})
cache_case("n-classes-array", r"attribute n_classes = \[10, 10\]", attrs={"n_classes": [10, 10]})
cache_case("static-string", "attribute static = 'yes', expected true or false", attrs={"static": "yes"})
cache_case("static-but-5d", r"attribute static = True but test/x has shape \(4, 1, 1, 28, 28\)",
           replace("x", X[:, None]))


@corpus.case("cache-x-external-storage", CACHE_COMMANDS, r"test/x is stored in external files .*secret.raw")
def _external(work):
    raw = work / "secret.raw"
    raw.write_bytes(X.tobytes())  # pixels of a file the cache names: never read

    def fn(g, f):
        del g["x"]
        g.create_dataset("x", shape=X.shape, dtype=X.dtype, external=[(str(raw), 0, X.nbytes)])
    return good_cache(work, in_test(fn))


@corpus.case("cache-x-external-link", CACHE_COMMANDS, r"test/x is a link to .*other.h5:/x")
def _external_link(work):
    with h5py.File(work / "other.h5", "w") as f:
        f["x"] = X
    link = h5py.ExternalLink(str(work / "other.h5"), "/x")
    return good_cache(work, in_test(lambda g, f: (g.__delitem__("x"), g.__setitem__("x", link))))


@corpus.case("cache-x-virtual", CACHE_COMMANDS, r"test/x is a virtual dataset")
def _virtual(work):
    with h5py.File(work / "source.h5", "w") as f:
        f["x"] = X
    layout = h5py.VirtualLayout(shape=X.shape, dtype=X.dtype)
    layout[...] = h5py.VirtualSource(str(work / "source.h5"), "x", shape=X.shape)
    return good_cache(work, in_test(lambda g, f: (g.__delitem__("x"), g.create_virtual_dataset("x", layout))))


@corpus.case("cache-x-corrupt-chunk", PIXEL_COMMANDS, r"test/x is unreadable .*damaged")
def _corrupt_chunk(work):
    path = good_cache(work)
    with h5py.File(path, "r") as f:
        info = f["test/x"].id.get_chunk_info(1)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 2)
        fh.write(b"\xff" * (info.size - 4))  # the deflate stream garbled: inflate fails
    return path


@corpus.case("cache-truncated", CACHE_COMMANDS, "not a readable HDF5 cache")
def _truncated(work):
    path = good_cache(work)
    path.write_bytes(path.read_bytes()[:3000])
    return path


@corpus.case("cache-not-hdf5", CACHE_COMMANDS, "not a readable HDF5 cache")
def _not_hdf5(work):
    path = work / f"{work.name}.h5"
    path.write_text("x,y\n1,2\n")
    return path


@corpus.case("cache-empty-file", CACHE_COMMANDS, "not a readable HDF5 cache")
def _empty_file(work):
    path = work / f"{work.name}.h5"
    path.write_bytes(b"")
    return path


# --- MNIST IDX ---------------------------------------------------------------------------------------------
def mnist_folder(work, name=None, edit=None, gz=True):
    """The four gzipped IDX files (3 train, 2 test images); ``edit(idx bytes) -> bytes`` rewrites file
    ``name``, gzipped again (``gz`` False: written as returned, e.g. a broken gzip stream)."""
    raw = work / "raw"
    raw.mkdir()
    write_mnist_folder(str(raw), n_train=3, n_test=2)
    if name is not None:
        new = edit(gzip.decompress((raw / name).read_bytes()))
        (raw / name).write_bytes(gzip.compress(new) if gz else new)
    return raw


def idx_bytes(arr):
    """An IDX file's bytes (written as test_data_formats.write_idx writes them)."""
    return write_idx(os.devnull, arr, arr.ndim, gz=False)


def _flip(b, start, stop):
    return b[:start] + bytes(v ^ 0xA5 for v in b[start:stop]) + b[stop:]


def idx_case(name, file, edit, expect, gz=True):
    corpus.add(f"idx-{name}", lambda work: mnist_folder(work, file, edit, gz), ["convert-mnist"], expect, file)


IMG, LAB = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
idx_case("truncated-images", IMG, lambda b: b[:-10], r"truncated at byte 1574; 1584 bytes expected")
idx_case("truncated-header", IMG, lambda b: b[:6], r"truncated at byte 6 \(header needs 16 bytes\)")
idx_case("bad-magic", IMG, lambda b: b"\x00\x00\x09" + b[3:], "bad magic number 0x00000903")
idx_case("wrong-dims", IMG, lambda b: bytes([0, 0, 8, 2]) + b[4:12] + b[16:], "has 2 dimensions, expected 3")
idx_case("trailing-bytes", LAB, lambda b: b + b"\x01\x02", "2 bytes after the 10 that shape")
idx_case("count-mismatch", LAB, lambda b: b[:4] + (1).to_bytes(4, "big") + b[8:9],
         "2 images but .*t10k-labels-idx1-ubyte.gz has 1 labels")
idx_case("label-10", LAB, lambda b: b[:-1] + b"\x0a", "label 10 out of range 0..9")
idx_case("images-10x10", IMG, lambda b: idx_bytes(np.zeros((2, 10, 10))), "images are 10x10, expected 28x28")
idx_case("no-images", IMG, lambda b: idx_bytes(np.zeros((0, 28, 28))), "holds no images")
idx_case("gz-truncated", IMG, lambda b: gzip.compress(b)[:-20], "cannot read", gz=False)
idx_case("gz-corrupt", IMG, lambda b: _flip(gzip.compress(b), 30, 60), "cannot read .*CRC", gz=False)
idx_case("gz-bad-deflate", IMG, lambda b: _flip(gzip.compress(b), 10, 16), "cannot read .*while decompressing", gz=False)
idx_case("gz-not-gzip", IMG, lambda b: b, "cannot read", gz=False)


@corpus.case("idx-missing-file", ["convert-mnist"], "missing t10k-labels-idx1-ubyte", "raw")
def _missing(work):
    raw = mnist_folder(work)
    os.remove(raw / LAB)
    return raw


# --- CIFAR: binary and python version ------------------------------------------------------------------------
def cifar_bin_folder(work, name="cifar10", edit=None):
    """2 records per batch file; ``edit(folder)`` then breaks one."""
    root = work / "raw"
    root.mkdir()
    rng = np.random.default_rng(1)
    for f in cifar.FILES[name]["train"] + cifar.FILES[name]["test"]:
        (root / f).write_bytes(cifar_records(rng, 2, name).tobytes())
    if edit:
        edit(root)
    return root


def cifar_py_folder(work, edit=None, name="cifar10"):
    root = work / "raw"
    root.mkdir()
    rng = np.random.default_rng(2)
    for f in cifar.PY_FILES[name]["train"] + cifar.PY_FILES[name]["test"]:
        (root / f).write_bytes(cifar_python_batch(rng, 2, name)[0])
    if edit:
        edit(root)
    return root


def edit_file(name, fn):
    return lambda root: (root / name).write_bytes(fn((root / name).read_bytes()))


def bin_case(name, file, fn, expect, dataset="cifar10"):
    corpus.add(f"cifar-bin-{name}", lambda work: cifar_bin_folder(work, dataset, edit_file(file, fn)),
               [f"convert-{dataset}"], expect, file)


def py_batch(labels=None, data=None, **extra):
    d = {b"batch_label": b"testing batch 1 of 1",
         b"data": np.full((2, 3072), 7, np.uint8) if data is None else data,
         b"labels": [1, 2] if labels is None else labels, **extra}
    return py2_pickle(d)


def py_case(name, raw, expect, file="test_batch"):
    corpus.add(f"cifar-py-{name}", lambda work: cifar_py_folder(work, edit_file(file, lambda _: raw)),
               ["convert-cifar10"], expect, file)


bin_case("truncated", "test_batch.bin", lambda b: b[:-100], "is not a whole number of 3073-byte records")
bin_case("empty", "data_batch_3.bin", lambda b: b"", "data_batch_3.bin: empty file")
bin_case("label-10", "test_batch.bin", lambda b: b"\x0a" + b[1:], "label 10 out of range at byte 0")
bin_case("cifar100-label-100", "test.bin", lambda b: b[:1] + b"\x64" + b[2:], "label 100 out of range at byte 1",
         "cifar100")
py_case("truncated", py_batch()[:-50], "not a readable CIFAR python batch")
py_case("string-labels", py_batch(["cat", "dog"]), r"labels are <U3 \(2,\), expected a list of integer")
py_case("numeric-string-labels", py_batch(["3", "5"]), r"labels are <U1 \(2,\)")
py_case("bytes-labels", py_batch([b"3", b"5"]), r"labels are \|S1 \(2,\)")
py_case("float-labels", py_batch([1.5, 2.0]), r"labels are float64 \(2,\)")
py_case("ragged-labels", py_batch([[1], [2, 3]]), r"labels are object")
py_case("label-10", py_batch([1, 10]), "label 10 out of range 0..9")
py_case("negative-label", py_batch([-1, 1]), "label -1 out of range 0..9")
py_case("count-mismatch", py_batch([1, 2, 3]), "2 images but 3 labels")
py_case("data-3000", py_batch(data=np.zeros((2, 3000), np.uint8)),
        r"'data' is uint8 \(2, 3000\), expected uint8 \(N, 3072\)")
py_case("data-int64", py_batch(data=np.zeros((2, 3072), np.int64)), r"'data' is int64 \(2, 3072\)")
py_case("no-images", py_batch([], data=np.zeros((0, 3072), np.uint8)), "holds no images")
py_case("not-a-dict", py2_pickle([1, 2, 3]), "expected a dict with 'data' and 'labels', got list")
py_case("missing-labels", py2_pickle({b"data": np.zeros((2, 3072), np.uint8)}), "missing 'data' or 'labels'")
py_case("runs-code", pickle.dumps(os.system), "refusing to unpickle posix.system")
py_case("garbage", b"\x00garbage, not a pickle", "not a readable CIFAR python batch")


@corpus.case("cifar-tgz-truncated", ["convert-cifar10"], "corrupt or truncated archive", "cifar-10-binary.tar.gz")
def _tgz_truncated(work):
    root = cifar_bin_folder(work)
    files = {f"cifar-10-batches-bin/{p.name}": p.read_bytes() for p in sorted(root.iterdir())}
    for p in root.iterdir():
        p.unlink()
    tgz = root / "cifar-10-binary.tar.gz"
    tar_gz(tgz, files)
    tgz.write_bytes(tgz.read_bytes()[:len(tgz.read_bytes()) // 2])
    return root


@corpus.case("cifar-tgz-corrupt", ["convert-cifar10"], "corrupt", "cifar-10-binary.tar.gz")
def _tgz_corrupt(work):
    root = cifar_bin_folder(work)
    files = {f"cifar-10-batches-bin/{p.name}": p.read_bytes() for p in sorted(root.iterdir())}
    for p in root.iterdir():
        p.unlink()
    tgz = root / "cifar-10-binary.tar.gz"
    tar_gz(tgz, files)
    raw = tgz.read_bytes()
    tgz.write_bytes(_flip(raw, len(raw) // 2, len(raw) // 2 + 64))
    return root


@corpus.case("cifar-tgz-other-archive", ["convert-cifar10"], "holds neither the CIFAR binary version", "raw")
def _tgz_other(work):
    root = work / "raw"
    root.mkdir()
    tar_gz(root / "cifar-10-binary.tar.gz", {"readme.txt": b"hello"})
    return root


# --- N-MNIST .bin --------------------------------------------------------------------------------------------
def _events(n=5, w=34, seed=1):
    r = np.random.default_rng(seed)
    return r.integers(0, w, n), r.integers(0, w, n), r.integers(0, 2, n), np.sort(r.integers(0, 10 ** 5, n))


def nmnist_tree(work, raw=None):
    """Train/0..9 and Test/0..9, one 5-event recording each; Test/3/00001.bin gets ``raw`` bytes."""
    root = work / "nmnist"
    for split in ("Train", "Test"):
        for d in range(10):
            (root / split / str(d)).mkdir(parents=True)
            (root / split / str(d) / "00001.bin").write_bytes(nmnist_bytes(*_events(seed=d)))
    if raw is not None:
        (root / "Test" / "3" / "00001.bin").write_bytes(raw)
    return root


def nmnist_case(name, raw, expect):
    corpus.add(f"nmnist-{name}", lambda work: nmnist_tree(work, raw), ["convert-nmnist"], expect,
               os.path.join("Test", "3", "00001.bin"))


nmnist_case("empty", b"", "the file holds no events")
nmnist_case("truncated", nmnist_bytes(*_events())[:-2], "truncated at byte 20")
nmnist_case("out-of-sensor", nmnist_bytes([1, 40], [2, 3], [0, 1], [10, 20]),
            r"event 1 at \(x, y\) = \(40, 3\) is outside the 34x34 sensor")
nmnist_case("backwards", nmnist_bytes([1, 2], [2, 3], [0, 1], [20, 10]), "timestamps go backwards at event 1")


@corpus.case("nmnist-no-test-recordings", ["convert-nmnist"], "no test recordings found", "nmnist")
def _nmnist_none(work):
    root = nmnist_tree(work)
    for d in range(10):
        os.remove(root / "Test" / str(d) / "00001.bin")
    return root


@corpus.case("nmnist-missing-class", ["convert-nmnist"], "missing class folder 7/", "Test")
def _nmnist_class(work):
    root = nmnist_tree(work)
    os.remove(root / "Test" / "7" / "00001.bin")
    os.rmdir(root / "Test" / "7")
    return root


# --- AEDAT 2.0 (CIFAR10-DVS) ---------------------------------------------------------------------------------
def c10dvs_tree(work, raw=None, per_class=10):
    """10 classes x 10 recordings (9 train, 1 test); ship/cifar10_ship_4.aedat gets ``raw`` bytes."""
    root = work / "c10dvs"
    for name in events.CIFAR10_DVS_CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"cifar10_{name}_{i}.aedat").write_bytes(aedat2_bytes(*_events(w=128, seed=i)))
    if raw is not None:
        (root / "ship" / "cifar10_ship_4.aedat").write_bytes(raw)
    return root


def c10dvs_case(name, raw, expect):
    corpus.add(f"c10dvs-{name}", lambda work: c10dvs_tree(work, raw), ["convert-cifar10-dvs"], expect,
               "cifar10_ship_4.aedat")


c10dvs_case("header-only", b"#!AER-DAT2.0\r\n# no events\r\n", "the file holds no events")
c10dvs_case("truncated", aedat2_bytes(*_events(w=128))[:-3], "truncated at byte")
c10dvs_case("not-aedat2", b"#!AER-DAT3.1\r\n#!END-HEADER\r\n", "not an AEDAT 2.0 file")
c10dvs_case("unterminated-header", b"#!AER-DAT2.0 and no end of line", "truncated header")
c10dvs_case("backwards", aedat2_bytes([1, 2], [1, 2], [0, 1], [50, 40]), "timestamps go backwards at event 1")
corpus.add("c10dvs-no-test-recordings", lambda work: c10dvs_tree(work, per_class=9), ["convert-cifar10-dvs"],
           "no test recordings found", "c10dvs")


# --- AEDAT 3.1 + _labels.csv (DVS Gesture) ---------------------------------------------------------------------
LABELS = "class,startTime_usec,endTime_usec\n3,100,250\n5,250,401\n"


def gesture_tree(work, aedat=None, labels=None, trials=None):
    """user01_led (train) and user24_led (test), two gestures each; the test user's files get the
    ``aedat`` bytes / ``labels`` text, trials_to_test.txt the ``trials`` bytes."""
    root = work / "gesture"
    root.mkdir()
    pkt = aedat31_packet([1, 2, 3, 4], [9, 8, 7, 6], [0, 1, 0, 1], [100, 200, 300, 400])
    for split, user in (("train", "user01_led"), ("test", "user24_led")):
        (root / f"{user}.aedat").write_bytes(aedat31_bytes(pkt))
        (root / f"{user}_labels.csv").write_text(LABELS)
        (root / f"trials_to_{split}.txt").write_text(f"{user}.aedat\n")
    if aedat is not None:
        (root / "user24_led.aedat").write_bytes(aedat)
    if labels is not None:
        (root / "user24_led_labels.csv").write_bytes(labels.encode() if isinstance(labels, str) else labels)
    if trials is not None:
        (root / "trials_to_test.txt").write_bytes(trials)
    return root


def gesture_case(name, expect, culprit, **files):
    corpus.add(f"gesture-{name}", lambda work: gesture_tree(work, **files), ["convert-dvsgesture"], expect, culprit)


CSV, AEDAT = "user24_led_labels.csv", "user24_led.aedat"
gesture_case("csv-garbage-row", r"line 3: '5,abc,401' is not class,startTime_usec,endTime_usec", CSV,
             labels="class,startTime_usec,endTime_usec\n3,100,250\n5,abc,401\n")
gesture_case("csv-short-row", r"line 2: '3,100' is not class", CSV, labels="class,startTime_usec,endTime_usec\n3,100\n")
gesture_case("csv-garbage-first-row", r"line 1: 'xyz,1,2' is not class", CSV, labels="xyz,1,2\n3,100,250\n")
gesture_case("csv-class-12", "line 2: class 12 outside 1..11", CSV, labels="class,a,b\n12,100,250\n")
gesture_case("csv-end-before-start", "line 2: end time 100 is not after start time 250", CSV,
             labels="class,a,b\n3,250,100\n")
gesture_case("csv-window-without-events", r"line 3: no events of user24_led.aedat between 5000 and 6000", CSV,
             labels="class,a,b\n3,100,250\n4,5000,6000\n")
gesture_case("csv-no-rows", "no gesture rows", CSV, labels="class,startTime_usec,endTime_usec\n\n")
gesture_case("csv-binary", "not a text CSV file", CSV, labels=b"\xff\xfe\x00\x01garbage")
gesture_case("aedat-truncated-packet", "truncated packet at byte", AEDAT,
             aedat=aedat31_bytes(aedat31_packet([1, 2], [1, 2], [0, 1], [100, 300]))[:-5])
gesture_case("aedat-negative-size", "declares 1 events of -28 bytes", AEDAT,  # was an endless loop
             aedat=aedat31_bytes(aedat31_packet([1], [1], [0], [100])[:4] + np.array([-28], "<i4").tobytes()
                                 + aedat31_packet([1], [1], [0], [100])[8:]))
gesture_case("aedat-out-of-sensor", r"event 1 at \(x, y\) = \(200, 2\) is outside the 128x128 sensor", AEDAT,
             aedat=aedat31_bytes(aedat31_packet([1, 200, 3], [1, 2, 3], [0, 1, 0], [100, 150, 300])))
gesture_case("aedat-timestamp-overflow", r"timestamps -\d+ \.\. \d+ µs are out of range for binning", AEDAT,
             aedat=aedat31_bytes(aedat31_packet([1, 2], [1, 2], [0, 1], [100, 300], overflow=-2 ** 31),
                                 aedat31_packet([3], [3], [0], [5], overflow=2 ** 31 - 1)),
             labels=f"class,a,b\n3,{-2 ** 62},{2 ** 62}\n")  # (t1 - t0)·T overflows int64
gesture_case("aedat-no-polarity-events", "holds no polarity events", AEDAT,
             aedat=aedat31_bytes(aedat31_packet([1], [1], [0], [100], etype=0)))
gesture_case("aedat-backwards", "timestamps go backwards at event 1", AEDAT,
             aedat=aedat31_bytes(aedat31_packet([1, 2], [1, 2], [0, 1], [300, 100])))
gesture_case("aedat-wrong-header", "not an AEDAT 3.x file", AEDAT, aedat=aedat2_bytes([1], [1], [0], [1]))
gesture_case("trials-missing-file", "lists 'user99.aedat', which is not an .aedat file in", "trials_to_test.txt",
             trials=b"user99.aedat\n")
gesture_case("trials-binary", "not a text file", "trials_to_test.txt", trials=b"\xff\xfe\x00garbage")


@corpus.case("gesture-csv-missing", ["convert-dvsgesture"], "labels file not found", CSV)
def _csv_missing(work):
    root = gesture_tree(work)
    os.remove(root / CSV)
    return root


# --- tonic .npy (DVS Gesture, tonic's layout) ----------------------------------------------------------------
GOOD_NPY = np.array([[1, 2, 1, 0.0], [3, 4, 0, 1.5], [5, 6, 1, 3.0]])


def tonic_tree(work, arr=None, raw=None, file="1.npy"):
    """ibmGestureTrain/user01_led/{0,1}.npy and ibmGestureTest/user24_led/{0,1}.npy; the test user's
    ``file`` gets ``arr`` (np.save) or the ``raw`` bytes."""
    root = work / "tonic"
    for folder, user in (("ibmGestureTrain", "user01_led"), ("ibmGestureTest", "user24_led")):
        (root / folder / user).mkdir(parents=True)
        for label in (0, 1):
            np.save(root / folder / user / f"{label}.npy", GOOD_NPY)
    target = root / "ibmGestureTest" / "user24_led" / file
    if arr is not None:
        np.save(target, arr, allow_pickle=True)
    if raw is not None:
        target.write_bytes(raw)
    return root


def tonic_case(name, expect, **kw):
    corpus.add(f"tonic-{name}", lambda work: tonic_tree(work, **kw), ["convert-dvsgesture"], expect,
               os.path.join("user24_led", kw.get("file", "1.npy")))


def _with(row, col, value):
    a = GOOD_NPY.copy()
    a[row, col] = value
    return a


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


structured = np.zeros(2, [("t", "U3"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")])
tonic_case("empty", "the file holds no events", arr=np.zeros((0, 4)))
tonic_case("nan-timestamp", r"column t\[ms\] is nan at event 1", arr=_with(1, 3, np.nan))
tonic_case("inf-x", "column x is inf at event 2", arr=_with(2, 0, np.inf))
tonic_case("backwards", "timestamps go backwards at event 2", arr=_with(2, 3, 1.0))
tonic_case("out-of-sensor", r"event 1 at \(x, y\) = \(200, 4\) is outside the 128x128 sensor", arr=_with(1, 0, 200))
tonic_case("negative-x", r"x = -1.0 at event 0 is not a pixel index", arr=_with(0, 0, -1))
tonic_case("fractional-y", r"y = 2.5 at event 0 is not a pixel index", arr=_with(0, 1, 2.5))
tonic_case("x-beyond-int16", r"x = 70000.0 at event 0 is not a pixel index", arr=_with(0, 0, 70000))
tonic_case("huge-timestamp", r"timestamp .* µs at event 2 is out of range", arr=_with(2, 3, 1e300))
tonic_case("1d", r"expected a structured array .* got float64 \(5,\)", arr=np.zeros(5))
tonic_case("string-column", r"column t is <U3, expected numbers", arr=structured)
tonic_case("object-array", "not a readable .npy file", arr=np.array([{"x": 1}, None], dtype=object))
tonic_case("truncated", "not a readable .npy file", raw=_npy_bytes(GOOD_NPY)[:-7])
tonic_case("garbage", "not a readable .npy file", raw=b"\x93NUMPY garbage")
tonic_case("label-12", "tonic names gesture samples <label>.npy with label 0..10", arr=GOOD_NPY, file="12.npy")


@corpus.case("tonic-no-test-recordings", ["convert-dvsgesture"], "no test recordings found", "tonic")
def _tonic_none(work):
    root = tonic_tree(work)
    for label in (0, 1):
        os.remove(root / "ibmGestureTest" / "user24_led" / f"{label}.npy")
    return root


# --- running the corpus ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """An (untrained) checkpoint of the tiny MLP that `eval` evaluates the caches with."""
    run = tmp_path_factory.mktemp("ckpt")
    cfg = C.resolve({}, TINY + [f"run.out_dir={json.dumps(str(run))}"])
    net = from_config(cfg)
    checkpoint.save(run / "best.h5", params=net.params, opt_state=optim.init_state(cfg["optim"], net.params, []),
                    rng_state=np.random.default_rng(0).bit_generator.state, config=cfg, epoch=1, step=1)
    return {"checkpoint": run / "best.h5", "run": run}


def _env(case, tmp_path, shared):
    work = tmp_path / case.name
    work.mkdir()
    return Env(work, case.make(work), shared)


@pytest.mark.parametrize("case, command", corpus.params())
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case, command, tmp_path, shared, capsys):
    env = _env(case, tmp_path, shared)
    culprit = case.culprit or env.path.name
    refused(capsys, corpus.commands[command](env), [env.work, shared["run"]], case.expect, culprit)


CONTROLS = [("cache", good_cache, CACHE_COMMANDS[:2]), ("idx", mnist_folder, ["convert-mnist"]),
            ("cifar-bin", cifar_bin_folder, ["convert-cifar10"]), ("cifar-py", cifar_py_folder, ["convert-cifar10"]),
            ("nmnist", nmnist_tree, ["convert-nmnist"]), ("c10dvs", c10dvs_tree, ["convert-cifar10-dvs"]),
            ("gesture", gesture_tree, ["convert-dvsgesture"]), ("tonic", tonic_tree, ["convert-dvsgesture"])]


@pytest.mark.parametrize("name, make, commands", CONTROLS, ids=[c[0] for c in CONTROLS])
def test_the_good_inputs_the_cases_start_from_are_accepted(name, make, commands, tmp_path, shared, capsys):
    """Controls: each maker's starting point passes every command (a case fails only for its defect)."""
    work = tmp_path / name
    work.mkdir()
    env = Env(work, make(work), shared)
    for command in commands:
        assert cli.main([str(a) for a in corpus.commands[command](env)]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err


SUBPROCESS = ["cache-y-column-eval", "cache-x-external-storage-info", "nmnist-empty-convert-nmnist"]


@pytest.mark.parametrize("case, command", [p for p in corpus.params() if p.id in SUBPROCESS],
                         ids=SUBPROCESS)
def test_a_real_process_exits_2_without_a_traceback(case, command, tmp_path, shared):
    env = _env(case, tmp_path, shared)
    argv = [str(a) for a in corpus.commands[command](env)]
    r = subprocess.run([sys.executable, "-m", "stopnp", *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and (case.culprit or env.path.name) in r.stderr, r.stderr
