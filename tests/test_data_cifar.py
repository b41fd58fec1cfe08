"""CIFAR-10/100 readers (stopnp/data/cifar.py): binary version (folder and tar.gz), python version through
the restricted unpickler, and refusal of a malicious pickle."""
import os
import pickle

import numpy as np
import pytest

from stopnp.data import DataError, cifar
from test_data_formats import cifar_python_batch, cifar_records, py2_pickle, tar_gz


def _binary_folder(tmp_path, name, n=5, seed=1):
    rng = np.random.default_rng(seed)
    folder = tmp_path / ("cifar-10-batches-bin" if name == "cifar10" else "cifar-100-binary")
    folder.mkdir()
    recs = {}
    for split in ("train", "test"):
        for f in cifar.FILES[name][split]:
            recs[f] = cifar_records(rng, n, name)
            (folder / f).write_bytes(recs[f].tobytes())
    return folder, recs


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_binary_folder_and_tar(tmp_path, name):
    folder, recs = _binary_folder(tmp_path, name)
    arch = tar_gz(tmp_path / "a.tar.gz", {f"{folder.name}/{f}": r.tobytes() for f, r in recs.items()})
    lab = 1 if name == "cifar10" else 2
    for path in (str(folder), str(arch)):
        x, y = cifar.read_binary(path, name, "test")
        f = cifar.FILES[name]["test"][0]
        assert x.shape == (5, 3, 32, 32) and x.dtype == np.uint8
        assert np.array_equal(y, recs[f][:, lab - 1]) and np.array_equal(x.reshape(5, -1), recs[f][:, lab:])
        xt, yt = cifar.read_binary(path, name, "train")
        assert len(xt) == 5 * len(cifar.FILES[name]["train"])


def test_binary_truncated_label_range_missing_corrupt(tmp_path):
    folder, recs = _binary_folder(tmp_path, "cifar10")
    bad = folder / "test_batch.bin"
    bad.write_bytes(recs["test_batch.bin"].tobytes()[:-7])
    with pytest.raises(DataError, match=r"test_batch.bin: .*truncated at byte 12292"):
        cifar.read_binary(str(folder), "cifar10", "test")
    r = recs["test_batch.bin"].copy()
    r[2, 0] = 10
    bad.write_bytes(r.tobytes())
    with pytest.raises(DataError, match=f"label 10 out of range at byte {2 * 3073}"):
        cifar.read_binary(str(folder), "cifar10", "test")
    with pytest.raises(DataError, match="not found; expected the CIFAR binary"):
        cifar.read_binary(str(tmp_path / "nothere"), "cifar10", "test")
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match="missing data_batch_3.bin"):
        cifar.read_binary(str(folder), "cifar10", "train")
    arch = tmp_path / "c.tar.gz"
    tar_gz(arch, {"x/test_batch.bin": recs["test_batch.bin"].tobytes()})
    arch.write_bytes(arch.read_bytes()[:100])
    with pytest.raises(DataError, match="c.tar.gz: corrupt or truncated archive"):
        cifar.read_binary(str(arch), "cifar10", "test")


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_python_version_restricted_unpickler(tmp_path, name, protocol):
    rng = np.random.default_rng(2)
    files = {}
    ref = {}
    for split in ("train", "test"):
        for f in cifar.PY_FILES[name][split]:
            files[f"cifar-xx-python/{f}"], ref[f] = cifar_python_batch(rng, 3, name, protocol)
    arch = tar_gz(tmp_path / "py.tar.gz", files)
    x, y = cifar.read_python(str(arch), name, "test")
    d = ref[cifar.PY_FILES[name]["test"][0]]
    assert np.array_equal(x.reshape(3, -1), d[b"data"])
    assert y.tolist() == d[b"labels" if name == "cifar10" else b"fine_labels"]
    # read_any falls back to the python version when no binary files are there
    x2, _ = cifar.read_any(str(arch), name, "train")
    assert x2.shape == (3 * len(cifar.PY_FILES[name]["train"]), 3, 32, 32)


class _Evil:
    """Unpickling this runs ``fn(arg)``: the attack a restricted unpickler must stop."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize("fn", [os.system, eval, exec])
@pytest.mark.parametrize("proto", [2, pickle.DEFAULT_PROTOCOL])
def test_malicious_pickle_is_refused(tmp_path, fn, proto):
    marker = tmp_path / "pwned"
    code = f"touch {marker}" if fn is os.system else f"open({str(marker)!r}, 'w').close()"
    obj = {b"data": _Evil(fn, code), b"labels": [1]}
    p = tmp_path / "data_batch_1"
    p.write_bytes(py2_pickle(obj) if proto == 2 else pickle.dumps(obj, protocol=proto))
    assert b"pwned" in p.read_bytes()
    with pytest.raises(DataError, match=r"data_batch_1: refusing to unpickle \S+\.(system|eval|exec): only plain"):
        cifar.read_python_batch(str(p))
    assert not marker.exists()


def test_python_batch_bad_content(tmp_path):
    p = tmp_path / "b"
    p.write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2, 3]}))
    with pytest.raises(DataError, match="b: 2 images but 3 labels"):
        cifar.read_python_batch(str(p))
    p.write_bytes(py2_pickle([1, 2]))
    with pytest.raises(DataError, match="expected a dict"):
        cifar.read_python_batch(str(p))
    p.write_bytes(b"\x80\x02}q\x00(")
    with pytest.raises(DataError, match="not a readable CIFAR python batch"):
        cifar.read_python_batch(str(p))
    files = {"d/test_batch": pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]})}
    tar_gz(tmp_path / "l.tar.gz", files)
    with pytest.raises(DataError, match="label 12 out of range 0..9"):
        cifar.read_python(str(tmp_path / "l.tar.gz"), "cifar10", "test")
    with pytest.raises(DataError, match="holds neither the CIFAR binary version"):
        cifar.read_any(str(tmp_path / "l.tar.gz"), "cifar10", "train")
