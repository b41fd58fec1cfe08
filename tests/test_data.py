"""Dataset readers on format-exact files made here, the real N-MNIST fixture, frames, cache, downloads."""
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import tarfile
import threading
import time

import numpy as np
import pytest

from stopnp import data
from stopnp.data import DataError, builtin, cifar, download, events, idx

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures", "sample_nmnist.bin")


# --- built-in set ---------------------------------------------------------------------------------
def test_builtin_loads_fast_with_its_split():
    t0 = time.perf_counter()
    tr, te = data.load("mnist-builtin", "train"), data.load("mnist-builtin", "test")
    assert time.perf_counter() - t0 < 1.0
    assert tr.x.shape == (8000, 1, 28, 28) and te.x.shape == (2000, 1, 28, 28) and tr.x.dtype == np.uint8
    assert np.bincount(te.y).tolist() == [200, 225, 198, 206, 196, 173, 203, 214, 189, 196]
    assert tr.n_classes == 10 and tr.static and tr.input_shape == (1, 28, 28)
    assert 30 < tr.x.mean() < 40  # real digits: ~13% ink at ~255


def test_stratified_split_is_fixed_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    a, b = builtin.stratified_split(labels)
    a2, _ = builtin.stratified_split(labels)
    assert np.array_equal(a, a2) and not set(a) & set(b) and len(a) == 400


def test_batches_time_major_static_view_and_deterministic():
    src = data.load("mnist-builtin", "test")
    x, y = next(data.batches(src, 16, 5, seed=3, epoch=2))
    assert x.shape == (5, 16, 1, 28, 28) and x.strides[0] == 0 and x[0].flags.c_contiguous
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.dtype == np.float32
    x2, y2 = next(data.batches(src, 16, 5, seed=3, epoch=2))
    x3, y3 = next(data.batches(src, 16, 5, seed=3, epoch=3))
    assert np.array_equal(y, y2) and not np.array_equal(y, y3)
    n = sum(len(yb) for _, yb in data.batches(src, 300, 2))
    assert n == 2000


# --- IDX -------------------------------------------------------------------------------------------
def _write_idx(path, arr, magic_dims, gz=True):
    head = bytes([0, 0, 8, magic_dims]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    raw = head + arr.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)
    return raw


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader(tmp_path, gz):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for split, n in (("train", 7), ("t10k", 3)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)), 3, gz)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n), 1, gz)
    x, y = idx.read_mnist_split(str(tmp_path), "train")
    assert x.shape == (7, 1, 28, 28) and y.shape == (7,)


def test_idx_errors(tmp_path):
    p = tmp_path / "a.idx"
    raw = _write_idx(p, np.zeros((4, 28, 28)), 3, gz=False)
    p.write_bytes(raw[:200])
    with pytest.raises(DataError, match=r"a.idx: truncated at byte 200"):
        idx.read_idx(str(p))
    p.write_bytes(b"\x00\x00\x09\x03" + raw[4:])
    with pytest.raises(DataError, match="bad magic number 0x00000903"):
        idx.read_idx(str(p))
    for split, n, m in (("train", 4, 5),):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)), 3)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.zeros(m), 1)
    with pytest.raises(DataError, match="4 images but .* 5 labels"):
        idx.read_mnist_split(str(tmp_path), "train")
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(4, 11), 1)
    with pytest.raises(DataError, match="label 11 out of range"):
        idx.read_mnist_split(str(tmp_path), "train")
    with pytest.raises(DataError, match="expected the four MNIST IDX files"):
        idx.read_mnist_split(str(tmp_path / "empty"), "test")


# --- CIFAR -----------------------------------------------------------------------------------------
def _cifar_records(rng, n, name):
    lab = 1 if name == "cifar10" else 2
    rec = np.zeros((n, lab + 3072), np.uint8)
    rec[:, lab - 1] = rng.integers(0, 10 if name == "cifar10" else 100, n)
    rec[:, lab:] = rng.integers(0, 256, (n, 3072))
    return rec


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_binary_tar_and_folder(tmp_path, name):
    rng = np.random.default_rng(1)
    folder = tmp_path / ("cifar-10-batches-bin" if name == "cifar10" else "cifar-100-binary")
    folder.mkdir()
    recs = {}
    for split in ("train", "test"):
        for f in cifar.FILES[name][split]:
            recs[f] = _cifar_records(rng, 5, name)
            (folder / f).write_bytes(recs[f].tobytes())
    arch = tmp_path / "a.tar.gz"
    with tarfile.open(arch, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    for path in (str(folder), str(arch)):
        x, y = cifar.read_binary(path, name, "test")
        f = cifar.FILES[name]["test"][0]
        lab = 1 if name == "cifar10" else 2
        assert x.shape == (5, 3, 32, 32) and np.array_equal(y, recs[f][:, lab - 1])
        assert np.array_equal(x.reshape(5, -1), recs[f][:, lab:])
    bad = folder / cifar.FILES[name]["test"][0]
    bad.write_bytes(recs[cifar.FILES[name]["test"][0]].tobytes()[:-7])
    with pytest.raises(DataError, match="truncated at byte"):
        cifar.read_binary(str(folder), name, "test")


def test_cifar_python_version_restricted_unpickler(tmp_path):
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}
    p = tmp_path / "batch"
    p.write_bytes(pickle.dumps(good))
    x, y = cifar.read_python_batch(str(p))
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [1, 2]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refusing to unpickle"):
        cifar.read_python_batch(str(p))


# --- events ----------------------------------------------------------------------------------------
def _nmnist_bytes(x, y, p, t):
    w = (np.asarray(x, np.uint64) << 32) | (np.asarray(y, np.uint64) << 24) | (np.asarray(p, np.uint64) << 23) \
        | np.asarray(t, np.uint64)
    return b"".join(int(v).to_bytes(5, "big") for v in w)


def test_nmnist_real_fixture():
    if not os.path.isfile(FIXTURE):
        pytest.skip(f"real N-MNIST fixture not found at {FIXTURE}")
    ev = events.read_nmnist(FIXTURE)
    assert len(ev) == 4325
    assert 0 <= ev["x"].min() and ev["x"].max() < 34 and 0 <= ev["y"].min() and ev["y"].max() < 34
    dur = (ev["t"][-1] - ev["t"][0]) / 1000
    assert 290 < dur < 320, dur
    assert set(np.unique(ev["p"])) == {0, 1}
    fr = events.to_frames(ev, 8, (34, 34))
    assert fr.shape == (8, 2, 34, 34) and fr.sum() == 4325 and (fr.sum(axis=(1, 2, 3)) > 0).all()


def test_nmnist_synthetic_and_errors(tmp_path):
    b = _nmnist_bytes([1, 33, 5], [2, 0, 7], [1, 0, 1], [10, 20, 8388607])
    ev = events.decode_nmnist(b)
    assert ev["x"].tolist() == [1, 33, 5] and ev["p"].tolist() == [1, 0, 1] and ev["t"][-1] == 8388607
    p = tmp_path / "s.bin"
    p.write_bytes(b[:-2])
    with pytest.raises(DataError, match="s.bin: truncated at byte 10"):
        events.read_nmnist(str(p))
    p.write_bytes(_nmnist_bytes([1, 1, 1], [1, 1, 1], [0, 0, 0], [30, 40, 35]))
    with pytest.raises(DataError, match="backwards at event 2 \\(byte offset 10\\)"):
        events.read_nmnist(str(p))
    with pytest.raises(DataError, match="expected the N-MNIST layout"):
        events.read_nmnist_folder(str(tmp_path), "train")


def test_nmnist_folder_convert_and_cache(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "nmnist"
    for split in ("Train", "Test"):
        for d in range(10):
            (root / split / str(d)).mkdir(parents=True)
            t = np.sort(rng.integers(0, 300000, 50))
            (root / split / str(d) / "00001.bin").write_bytes(
                _nmnist_bytes(rng.integers(0, 34, 50), rng.integers(0, 34, 50), rng.integers(0, 2, 50), t))
    out = download.convert("nmnist", str(root), cache_dir=str(tmp_path / "cache"), T=4)
    src = data.load(out, "train")
    assert src.x.shape == (10, 4, 2, 34, 34) and not src.static and src.T == 4 and src.input_shape == (2, 34, 34)
    x, y = next(data.batches(src, 5, 4, shuffle=False))
    assert x.shape == (4, 5, 2, 34, 34)
    assert np.array_equal(x, np.swapaxes(src.x[:5], 0, 1).astype(np.float32)) and x.sum() == 5 * 50
    mtime = os.path.getmtime(out)
    assert download.convert("nmnist", str(root), cache_dir=str(tmp_path / "cache"), T=4) == out
    assert os.path.getmtime(out) == mtime  # idempotent
    info = data.info(out)
    assert info["train"]["n"] == 10 and info["attrs"]["T"] == 4 and info["attrs"]["stopnp_version"]
    sums = json.loads(info["attrs"]["source_sha256"])
    assert len(sums) == 20 and sums["Train/0/00001.bin"] == hashlib.sha256(
        (root / "Train" / "0" / "00001.bin").read_bytes()).hexdigest()
    assert json.loads(info["attrs"]["shapes"])["test"] == [10, 4, 2, 34, 34]


def _frames_reference(ev, T, in_hw, out_hw, by_count):
    fr = np.zeros((T, 2, *out_hw), np.uint16)
    n = len(ev)
    t0, t1 = ev["t"][0], ev["t"][-1]
    for i, e in enumerate(ev):
        k = i * T // n if by_count else (e["t"] - t0) * T // (t1 - t0 + 1)
        fr[k, e["p"], e["y"] * out_hw[0] // in_hw[0], e["x"] * out_hw[1] // in_hw[1]] += 1
    return fr


@pytest.mark.parametrize("by", ["time", "count"])
def test_frames_match_naive_reference(by):
    rng = np.random.default_rng(3)
    n = 400
    ev = events.make_events(np.sort(rng.integers(0, 10000, n)), rng.integers(0, 128, n), rng.integers(0, 128, n),
                            rng.integers(0, 2, n))
    got = events.to_frames(ev, 5, (128, 128), (48, 48), by=by)
    assert np.array_equal(got, _frames_reference(ev, 5, (128, 128), (48, 48), by == "count"))
    assert got.sum() == n


def test_denoise_drops_isolated_events():
    ev = events.make_events([0, 10, 20, 5000], [5, 6, 6, 30], [5, 5, 6, 30], [1, 1, 0, 1])
    keep = np.zeros(4, np.bool_)
    events.denoise_mask(keep, ev["t"], ev["x"].astype(np.int64), ev["y"].astype(np.int64), 64, 64, 100)
    assert keep.tolist() == [False, True, True, False]


def test_aedat2_and_aedat31_and_labels(tmp_path):
    # AEDAT 2.0 (CIFAR10-DVS): big-endian address/timestamp pairs after '#' header lines
    x, y, p, t = np.array([0, 127, 3]), np.array([0, 5, 127]), np.array([1, 0, 1]), np.array([5, 6, 9])
    addr = (y << 8) | ((127 - x) << 1) | p
    body = np.stack([addr, t], 1).astype(">u4").tobytes()
    f2 = tmp_path / "a.aedat"
    f2.write_bytes(b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n" + body)
    ev = events.read_aedat2(str(f2))
    assert ev["x"].tolist() == [0, 127, 3] and ev["y"].tolist() == [0, 5, 127] and ev["p"].tolist() == [1, 0, 1]
    f2.write_bytes(b"#!AER-DAT2.0\r\n" + body[:-3])
    with pytest.raises(DataError, match="truncated at byte"):
        events.read_aedat2(str(f2))
    # AEDAT 3.1 (DVS Gesture): one polarity packet
    n = 4
    xs, ys, ps, ts = np.array([1, 2, 3, 4]), np.array([9, 8, 7, 6]), np.array([0, 1, 0, 1]), np.array([100, 200, 300, 400])
    data32 = (xs << 17) | (ys << 2) | (ps << 1) | 1
    head = np.array([1, 0], "<i2").tobytes() + np.array([8, 4, 0, n, n, n], "<i4").tobytes()
    pkt = head + np.stack([data32, ts], 1).astype("<u4").tobytes()
    f3 = tmp_path / "user01_fluorescent.aedat"
    f3.write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#!END-HEADER\r\n" + pkt)
    ev3 = events.read_aedat31(str(f3))
    assert ev3["x"].tolist() == [1, 2, 3, 4] and ev3["y"].tolist() == [9, 8, 7, 6] and ev3["t"].tolist() == [100, 200, 300, 400]
    lab = tmp_path / "user01_fluorescent_labels.csv"
    lab.write_text("class,startTime_usec,endTime_usec\n1,150,350\n11,350,500\n")
    cuts = events.cut_gestures(ev3, events.read_gesture_labels(str(lab)))
    assert [(len(e), c) for e, c in cuts] == [(2, 0), (1, 10)]
    lab.write_text("class,startTime_usec,endTime_usec\n12,1,2\n")
    with pytest.raises(DataError, match="class 12 outside 1..11"):
        events.read_gesture_labels(str(lab))
    f3.write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + pkt[:-5])
    with pytest.raises(DataError, match="truncated packet at byte"):
        events.read_aedat31(str(f3))


def test_tonic_npy_layout(tmp_path):
    arr = np.zeros(3, dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
    arr["t"] = [1, 2, 3]
    arr["x"] = [4, 5, 6]
    np.save(tmp_path / "s.npy", arr)
    assert events.read_tonic_npy(str(tmp_path / "s.npy"))["x"].tolist() == [4, 5, 6]
    np.save(tmp_path / "bad.npy", np.zeros(3))
    with pytest.raises(DataError, match="fields t, x, y, p"):
        events.read_tonic_npy(str(tmp_path / "bad.npy"))


# --- downloads against a local server --------------------------------------------------------------
@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a: None
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_download_and_convert_mnist_from_local_server(tmp_path, server, monkeypatch):
    www, url = server
    rng = np.random.default_rng(4)
    files = {}
    for split, n in (("train", 6), ("t10k", 4)):
        for kind, arr, dims in (("images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 3),
                                ("labels-idx1-ubyte", rng.integers(0, 10, n), 1)):
            name = f"{split}-{kind}.gz"
            _write_idx(www / name, arr, dims)
            files[name] = hashlib.md5((www / name).read_bytes()).hexdigest()
    monkeypatch.setitem(download.SOURCES, "mnist", dict(download.SOURCES["mnist"], files=files))
    raw = tmp_path / "raw"
    out = download.get("mnist", str(raw), base_url=url, cache_dir=str(tmp_path / "cache"))
    src = data.load(out, "test")
    assert src.x.shape == (4, 1, 28, 28)
    assert set(json.loads(src.attrs["source_sha256"])) == set(files)
    # resume: a partial file is completed with a Range request, then verified
    name = "train-images-idx3-ubyte.gz"
    full = (www / name).read_bytes()
    (raw / name).unlink()
    (raw / (name + ".part")).write_bytes(full[:100])
    download.fetch(url + name, str(raw / name), files[name])
    assert (raw / name).read_bytes() == full


def test_download_checksum_and_offline_messages(tmp_path, server, monkeypatch):
    www, url = server
    (www / "f.bin").write_bytes(b"abc")
    with pytest.raises(DataError, match="checksum mismatch"):
        download.fetch(url + "f.bin", str(tmp_path / "f.bin"), "0" * 32)
    assert not (tmp_path / "f.bin").exists()
    with pytest.raises(DataError, match="Offline\\? Download .* by hand"):
        download.get("cifar10", str(tmp_path / "c"), base_url="http://127.0.0.1:9/")
    with pytest.raises(DataError, match="cannot be downloaded automatically.*Train/0"):
        download.get("nmnist")


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="stopnp data get"):
        data.load("cifar10-nothere", "train")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.h5: not a readable HDF5"):
        data.load(str(bad), "train")


def _aedat2_bytes(x, y, p, t):
    addr = (np.asarray(y) << 8) | ((127 - np.asarray(x)) << 1) | np.asarray(p)
    return b"#!AER-DAT2.0\r\n" + np.stack([addr, t], 1).astype(">u4").tobytes()


def test_cifar10_dvs_and_dvsgesture_convert_streamed(tmp_path):
    rng = np.random.default_rng(8)
    root = tmp_path / "c10dvs"
    for name in events.CIFAR10_DVS_CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(10):  # 9 train + 1 test per class
            n = 40
            (root / name / f"cifar10_{name}_{i}.aedat").write_bytes(_aedat2_bytes(
                rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n), np.sort(rng.integers(0, 10**6, n))))
    out = download.convert("cifar10-dvs", str(root), cache_dir=str(tmp_path / "cache"), T=5, size=48)
    tr, te = data.load(out, "train"), data.load(out, "test")
    assert tr.x.shape == (90, 5, 2, 48, 48) and te.x.shape == (10, 5, 2, 48, 48)
    assert int(np.asarray(tr.x[0]).sum()) == 40 and sorted(te.y.tolist()) == list(range(10))
    # DVS Gesture, original layout: trials list + AEDAT 3.1 + labels csv
    g = tmp_path / "gesture"
    g.mkdir()
    xs, ys, ps, ts = np.array([1, 2, 3, 4]), np.array([9, 8, 7, 6]), np.array([0, 1, 0, 1]), np.array([100, 200, 300, 400])
    d32 = (xs << 17) | (ys << 2) | (ps << 1) | 1
    pkt = np.array([1, 0], "<i2").tobytes() + np.array([8, 4, 0, 4, 4, 4], "<i4").tobytes() + \
        np.stack([d32, ts], 1).astype("<u4").tobytes()
    for split, user in (("train", "user01_led"), ("test", "user24_led")):
        (g / f"{user}.aedat").write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + pkt)
        (g / f"{user}_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,100,250\n5,250,401\n")
        (g / f"trials_to_{split}.txt").write_text(f"{user}.aedat\n")
    out = download.convert("dvsgesture", str(g), cache_dir=str(tmp_path / "cache"), T=2)
    src = data.load(out, "train")
    assert src.x.shape == (2, 2, 2, 128, 128) and src.y.tolist() == [2, 4] and src.n_classes == 11
    assert int(np.asarray(src.x).sum()) == 4
    with pytest.raises(DataError, match="missing class folder"):
        events.list_cifar10_dvs(str(tmp_path), "train")


def test_tonic_adapter_with_a_tonic_like_dataset():
    """from_tonic accepts any iterable of (structured events, label), which is what tonic datasets yield."""
    rng = np.random.default_rng(9)
    ds = []
    for label in range(3):
        ev = np.zeros(30, dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
        ev["x"], ev["y"] = rng.integers(0, 34, 30), rng.integers(0, 34, 30)
        ev["t"], ev["p"] = np.sort(rng.integers(0, 1000, 30)), rng.integers(0, 2, 30)
        ds.append((ev, label))
    x, y = events.from_tonic(ds, 4, (34, 34))
    assert x.shape == (3, 4, 2, 34, 34) and x.sum() == 90 and y.tolist() == [0, 1, 2]
    src = data.from_tonic(ds, 4, (34, 34), n_classes=10)
    assert not src.static and src.T == 4 and src.input_shape == (2, 34, 34) and src.n_classes == 10
    xb, yb = next(data.batches(src, 2, 4, shuffle=False))
    assert xb.shape == (4, 2, 2, 34, 34) and xb.sum() == 60
    tonic = pytest.importorskip("tonic", reason="tonic (the 'events' extra) is not installed")
    assert hasattr(tonic, "datasets")


def test_dvs_augmentation_keeps_shape_and_mass():
    from stopnp.data import augment
    rng = np.random.default_rng(10)
    x = np.zeros((6, 3, 2, 20, 20), np.float32)
    x[:, :, :, 8:12, 8:12] = 1
    out = augment.apply("dvs", x, rng, static=False)
    assert out.shape == x.shape and (out.sum(axis=(1, 2, 3, 4)) > 0).all()
    assert not np.array_equal(out, x)
    c = augment.apply("cifar", np.ones((4, 3, 8, 8), np.float32), rng)
    assert c.shape == (4, 3, 8, 8) and c.max() == 1
