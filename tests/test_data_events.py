"""Event readers and binning (stopnp/data/events.py): the real N-MNIST recording, N-MNIST / AEDAT 2.0 /
AEDAT 3.1 / tonic .npy files written here, frames and denoise against naive NumPy references."""
import os

import numpy as np
import pytest

from stopnp import data
from stopnp.data import DataError, events
from test_data_formats import FIXTURE, aedat2_bytes, aedat31_bytes, aedat31_packet, nmnist_bytes
from tools_needed import missing


# --- N-MNIST ---------------------------------------------------------------------------------------
def test_nmnist_real_fixture():
    if not os.path.isfile(FIXTURE):
        pytest.skip(f"real N-MNIST fixture not found at {os.path.normpath(FIXTURE)} (shared/fixtures is not "
                    f"part of this checkout)")
    ev = events.read_nmnist(FIXTURE)
    assert len(ev) == 4325 and ev.dtype == events.EVENT_DTYPE
    assert 0 <= ev["x"].min() and ev["x"].max() < 34 and 0 <= ev["y"].min() and ev["y"].max() < 34
    dur_ms = (ev["t"][-1] - ev["t"][0]) / 1000
    assert 300 < dur_ms < 320, dur_ms
    assert set(np.unique(ev["p"]).tolist()) == {0, 1}
    fr = events.to_frames(ev, 8, (34, 34))
    assert fr.shape == (8, 2, 34, 34) and fr.sum() == 4325 and (fr.sum(axis=(1, 2, 3)) > 0).all()
    assert np.array_equal(fr, _frames_reference(ev, 8, (34, 34), (34, 34), False))


def test_nmnist_bit_fields():
    b = nmnist_bytes([1, 33, 255], [2, 0, 7], [1, 0, 1], [10, 20, 8388607])
    ev = events.decode_nmnist(b)
    assert ev["x"].tolist() == [1, 33, 255] and ev["y"].tolist() == [2, 0, 7]
    assert ev["p"].tolist() == [1, 0, 1] and ev["t"].tolist() == [10, 20, 8388607]


def test_nmnist_truncated_backwards_and_layout(tmp_path):
    b = nmnist_bytes([1, 33, 5], [2, 0, 7], [1, 0, 1], [10, 20, 30])
    p = tmp_path / "s.bin"
    p.write_bytes(b[:-2])
    with pytest.raises(DataError, match="s.bin: truncated at byte 10"):
        events.read_nmnist(str(p))
    p.write_bytes(nmnist_bytes([1, 1, 1], [1, 1, 1], [0, 0, 0], [30, 40, 35]))
    with pytest.raises(DataError, match=r"s.bin: timestamps go backwards at event 2 \(byte offset 10\)"):
        events.read_nmnist(str(p))
    with pytest.raises(DataError, match="expected the N-MNIST layout .*/Train/0..9/\\*.bin"):
        events.read_nmnist_folder(str(tmp_path), "train")
    (tmp_path / "Test" / "0").mkdir(parents=True)
    with pytest.raises(DataError, match="missing class folder 1/"):
        events.list_nmnist(str(tmp_path), "test")


# --- AEDAT 2.0 (CIFAR10-DVS) -------------------------------------------------------------------------
def test_aedat2(tmp_path):
    f = tmp_path / "a.aedat"
    f.write_bytes(aedat2_bytes([0, 127, 3], [0, 5, 127], [1, 0, 1], [5, 6, 9]))
    ev = events.read_aedat2(str(f))
    assert ev["x"].tolist() == [0, 127, 3] and ev["y"].tolist() == [0, 5, 127] and ev["p"].tolist() == [1, 0, 1]
    assert ev["t"].tolist() == [5, 6, 9]
    raw = aedat2_bytes([0, 1], [0, 1], [0, 1], [5, 6])
    f.write_bytes(raw[:-3])
    with pytest.raises(DataError, match="a.aedat: truncated at byte"):
        events.read_aedat2(str(f))
    f.write_bytes(b"#!AER-DAT3.1\r\n")
    with pytest.raises(DataError, match="not an AEDAT 2.0 file"):
        events.read_aedat2(str(f))
    f.write_bytes(aedat2_bytes([0, 1], [0, 1], [0, 1], [9, 6], header=b"#!AER-DAT2.0\r\n"))
    with pytest.raises(DataError, match=r"backwards at event 1 \(byte offset 22\)"):
        events.read_aedat2(str(f))


# --- AEDAT 3.1 (DVS128 Gesture) ----------------------------------------------------------------------
def test_aedat31_packets_overflow_and_labels(tmp_path):
    p1 = aedat31_packet([1, 2], [9, 8], [0, 1], [100, 200])
    special = aedat31_packet([0], [0], [0], [250], etype=0)  # a special-event packet: skipped
    p2 = aedat31_packet([3, 4], [7, 6], [0, 1], [300, 400])
    f = tmp_path / "user01_fluorescent.aedat"
    f.write_bytes(aedat31_bytes(p1, special, p2))
    ev = events.read_aedat31(str(f))
    assert ev["x"].tolist() == [1, 2, 3, 4] and ev["y"].tolist() == [9, 8, 7, 6]
    assert ev["p"].tolist() == [0, 1, 0, 1] and ev["t"].tolist() == [100, 200, 300, 400]
    f.write_bytes(aedat31_bytes(p1, aedat31_packet([5], [5], [1], [3], overflow=1)))
    assert events.read_aedat31(str(f))["t"].tolist() == [100, 200, (1 << 31) + 3]
    f.write_bytes(aedat31_bytes(p1, p2))
    lab = tmp_path / "user01_fluorescent_labels.csv"
    lab.write_text("class,startTime_usec,endTime_usec\n1,150,350\n11,350,500\n")
    cuts = events.cut_gestures(events.read_aedat31(str(f)), events.read_gesture_labels(str(lab)))
    assert [(len(e), c) for e, c in cuts] == [(2, 0), (1, 10)]
    lab.write_text("\nclass,startTime_usec,endTime_usec\n\n1,150,350\n11,350,500\n\n")  # blank lines skipped
    assert events.read_gesture_labels(str(lab)) == [(0, 150, 350), (10, 350, 500)]
    lab.write_text("class,startTime_usec,endTime_usec\n12,1,2\n")
    with pytest.raises(DataError, match="labels.csv: line 2: class 12 outside 1..11"):
        events.read_gesture_labels(str(lab))
    f.write_bytes(aedat31_bytes(p1 + p2)[:-5])
    with pytest.raises(DataError, match="truncated packet at byte"):
        events.read_aedat31(str(f))
    f.write_bytes(aedat31_bytes(p2, p1))
    with pytest.raises(DataError, match="user01_fluorescent.aedat: timestamps go backwards"):
        events.read_aedat31(str(f))


def test_tonic_npy_layouts(tmp_path):
    arr = np.zeros(3, dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
    arr["t"], arr["x"], arr["p"] = [1, 2, 3], [4, 5, 6], [1, 0, 1]
    np.save(tmp_path / "s.npy", arr)
    ev = events.read_tonic_npy(str(tmp_path / "s.npy"))
    assert ev["x"].tolist() == [4, 5, 6] and ev["p"].tolist() == [1, 0, 1]
    # tonic's DVS Gesture release: plain (N, 4) columns x, y, p, t in ms
    np.save(tmp_path / "3.npy", np.array([[1, 2, 1, 0.5], [3, 4, 0, 1.25]]))
    ev = events.read_tonic_npy(str(tmp_path / "3.npy"))
    assert ev["t"].tolist() == [500, 1250] and ev["x"].tolist() == [1, 3] and ev["p"].tolist() == [1, 0]
    np.save(tmp_path / "bad.npy", np.zeros(3))
    with pytest.raises(DataError, match="bad.npy: expected a structured array with fields t, x, y, p"):
        events.read_tonic_npy(str(tmp_path / "bad.npy"))


# --- frames and denoise against naive references -------------------------------------------------------
def _frames_reference(ev, T, in_hw, out_hw, by_count):
    fr = np.zeros((T, 2, *out_hw), np.uint16)
    n = len(ev)
    t0, t1 = int(ev["t"][0]), int(ev["t"][-1])
    for i, e in enumerate(ev):
        k = i * T // n if by_count else (int(e["t"]) - t0) * T // (t1 - t0 + 1)
        fr[k, e["p"], int(e["y"]) * out_hw[0] // in_hw[0], int(e["x"]) * out_hw[1] // in_hw[1]] += 1
    return fr


def _random_events(rng, n, size=128, span=10000):
    return events.make_events(np.sort(rng.integers(0, span, n)), rng.integers(0, size, n),
                              rng.integers(0, size, n), rng.integers(0, 2, n))


@pytest.mark.parametrize("by", ["time", "count"])
@pytest.mark.parametrize("out", [128, 64, 48])
def test_frames_match_naive_reference(by, out):
    ev = _random_events(np.random.default_rng(3), 500)
    got = events.to_frames(ev, 5, (128, 128), (out, out), by=by)
    assert got.dtype == np.uint16 and got.shape == (5, 2, out, out)
    assert np.array_equal(got, _frames_reference(ev, 5, (128, 128), (out, out), by == "count"))
    assert got.sum() == 500
    if by == "count":
        assert got.sum(axis=(1, 2, 3)).tolist() == [100] * 5


def test_frames_edge_cases():
    assert events.to_frames(np.empty(0, events.EVENT_DTYPE), 3, (34, 34)).sum() == 0
    one = events.make_events([7, 7], [1, 2], [1, 2], [0, 1])  # zero duration: all in bin 0
    assert events.to_frames(one, 4, (34, 34))[0].sum() == 2
    with pytest.raises(DataError, match=r"event 0 at \(x, y\) = \(34, 0\) is outside the 34x34 sensor"):
        events.to_frames(events.make_events([1], [34], [0], [0]), 2, (34, 34))
    # unsorted timestamps (e.g. a hand-made tonic sample) would bin outside 0..T-1: refused, not written
    with pytest.raises(DataError, match="timestamps go backwards at event 1"):
        events.to_frames(events.make_events([100, 0, 10, 20], [1, 2, 3, 4], [1, 2, 3, 4], [0, 1, 0, 1]), 4, (8, 8))
    uint = np.zeros(4, [("t", "<u4"), ("x", "<i2"), ("y", "<i2"), ("p", "?")])
    uint["t"] = [1000, 5, 2000000, 3]  # unsigned differences wrap around: compared, not subtracted
    with pytest.raises(DataError, match="timestamps go backwards at event 1"):
        events.to_frames(uint, 4, (8, 8))
    # k = (t - t0)·T // span in int64: a span with (t1 - t0 + 1)·T >= 2^63 would wrap k outside 0..T-1
    with pytest.raises(DataError, match=r"rec.bin: timestamps 0 \.\. 4611686018427387903 µs are out of range"):
        events.to_frames(events.make_events([0, 2 ** 62 - 1], [0, 1], [0, 1], [0, 1]), 2, (4, 4), source="rec.bin")
    fr = events.to_frames(events.make_events([0, 2 ** 62 - 2], [0, 1], [0, 1], [0, 1]), 2, (4, 4))
    assert fr[0, 0, 0, 0] == 1 and fr[1, 1, 1, 1] == 1 and fr.sum() == 2  # the largest span still bins right
    bad = np.zeros(2, [("t", "<f8"), ("x", "<i2"), ("y", "<i2"), ("p", "?")])
    with pytest.raises(DataError, match="timestamps are float64"):
        events.to_frames(bad, 2, (8, 8))


def _denoise_reference(ev, h, w, dt):
    keep = np.zeros(len(ev), bool)
    for i in range(len(ev)):
        for j in range(i):
            if abs(int(ev["x"][j]) - int(ev["x"][i])) <= 1 and abs(int(ev["y"][j]) - int(ev["y"][i])) <= 1 \
                    and (ev["x"][j], ev["y"][j]) != (ev["x"][i], ev["y"][i]) and ev["t"][i] - ev["t"][j] <= dt:
                keep[i] = True
    return keep


def test_denoise_matches_naive_reference():
    ev = events.make_events([0, 10, 20, 5000], [5, 6, 6, 30], [5, 5, 6, 30], [1, 1, 0, 1])
    keep = np.zeros(4, np.bool_)
    events.denoise_mask(keep, np.full((66, 66), -(2 ** 62)), ev["t"], ev["x"].astype(np.int64),
                        ev["y"].astype(np.int64), 100)
    assert keep.tolist() == [False, True, True, False]
    rng = np.random.default_rng(4)
    ev = _random_events(rng, 400, size=16, span=20000)
    keep = np.zeros(len(ev), np.bool_)
    events.denoise_mask(keep, np.full((18, 18), -(2 ** 62)), ev["t"], ev["x"].astype(np.int64),
                        ev["y"].astype(np.int64), 300)
    ref = _denoise_reference(ev, 16, 16, 300)
    assert np.array_equal(keep, ref) and 0 < ref.sum() < len(ev)
    fr = events.to_frames(ev, 4, (16, 16), denoise_dt=300)
    assert np.array_equal(fr, _frames_reference(ev[ref], 4, (16, 16), (16, 16), False))


# --- tonic adapter -------------------------------------------------------------------------------------
def _tonic_like(rng, n_samples=3):
    ds = []
    for label in range(n_samples):
        ev = np.zeros(30, dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")])
        ev["x"], ev["y"] = rng.integers(0, 34, 30), rng.integers(0, 34, 30)
        ev["t"], ev["p"] = np.sort(rng.integers(0, 1000, 30)), rng.integers(0, 2, 30)
        ds.append((ev, label))
    return ds


def test_tonic_adapter_with_a_tonic_like_dataset():
    """from_tonic takes any iterable of (structured events, label): what tonic datasets yield."""
    ds = _tonic_like(np.random.default_rng(9))
    x, y = events.from_tonic(ds, 4, (34, 34))
    assert x.shape == (3, 4, 2, 34, 34) and x.sum() == 90 and y.tolist() == [0, 1, 2]
    src = data.from_tonic(ds, 4, (34, 34), n_classes=10)
    assert not src.static and src.T == 4 and src.input_shape == (2, 34, 34) and src.n_classes == 10
    xb, yb = next(data.batches(src, 2, 4, shuffle=False))
    assert xb.shape == (4, 2, 2, 34, 34) and xb.sum() == 60


def test_tonic_adapter_with_real_tonic():
    try:
        import tonic
    except ImportError:
        missing("tonic (the 'events' extra: pip install stopnp[events]) is not installed")
    ds = _tonic_like(np.random.default_rng(1))
    tf = tonic.transforms.Denoise(filter_time=10**9)
    x, y = events.from_tonic([(tf(e), c) for e, c in ds], 2, (34, 34))
    assert x.shape == (3, 2, 2, 34, 34)
