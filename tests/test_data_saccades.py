"""Simulated N-MNIST (stopnp/data/saccades.py): the DVS kernel against a slow NumPy reference, polarity
against the motion, determinism, the .bin writer, the event cache (the same frames as `stopnp data convert
nmnist` of the written .bin files), a tiny network learning from it, and the statistics of the real N-MNIST
sample beside the simulated ones."""
import argparse
import dataclasses
import json
import math
import os

import numpy as np
import pytest

from stopnp import data
from stopnp.data import DataError, download, events, saccades
from stopnp.cli import data as data_cli
from test_data_formats import FIXTURE, nmnist_bytes


# --- slow reference -----------------------------------------------------------------------------------
def _ref_log_image(image, ox, oy, scale, eps, H, W):
    """ln(I + eps), I = the image bilinearly sampled at each pixel centre (zero outside), scalar loops."""
    h, w = image.shape

    def px(r, c):
        return image[r, c] if 0 <= r < h and 0 <= c < w else 0.0
    out = np.empty((H, W))
    for Y in range(H):
        for X in range(W):
            u, v = (X + 0.5 - ox) / scale - 0.5, (Y + 0.5 - oy) / scale - 0.5
            c, r = math.floor(u), math.floor(v)
            a, b = u - c, v - r
            val = (1 - a) * (1 - b) * px(r, c) + a * (1 - b) * px(r, c + 1) + (1 - a) * b * px(r + 1, c) \
                + a * b * px(r + 1, c + 1)
            out[Y, X] = math.log(val + eps)
    return out


def _ref_events(image, c_on, c_off, path_t, path_x, path_y, scale, eps, refractory):
    """Per pixel and step: crossings of ref ± C at linearly interpolated times; events as (t, x, y, p)."""
    H, W = c_on.shape
    prev = _ref_log_image(image, path_x[0], path_y[0], scale, eps, H, W)
    ref = prev.copy()
    last = np.full((H, W), -np.inf)
    out = []
    for k in range(1, len(path_t)):
        cur = _ref_log_image(image, path_x[k], path_y[k], scale, eps, H, W)
        for Y in range(H):
            for X in range(W):
                while True:
                    if cur[Y, X] - ref[Y, X] >= c_on[Y, X]:
                        level, p = ref[Y, X] + c_on[Y, X], 1
                    elif ref[Y, X] - cur[Y, X] >= c_off[Y, X]:
                        level, p = ref[Y, X] - c_off[Y, X], 0
                    else:
                        break
                    slope = cur[Y, X] - prev[Y, X]
                    frac = np.clip((level - prev[Y, X]) / slope, 0, 1) if slope != 0 else 0.0
                    te = max(path_t[k - 1] + frac * (path_t[k] - path_t[k - 1]), last[Y, X] + refractory)
                    if te > path_t[k]:
                        break
                    out.append((math.floor(te), X, Y, p))
                    ref[Y, X], last[Y, X] = level, te
        prev = cur
    return out


def _run_kernel(image, c_on, c_off, path, scale, eps, refractory, capacity=4096):
    H, W = c_on.shape
    t, x, y = np.empty(capacity, np.int64), np.empty(capacity, np.int16), np.empty(capacity, np.int16)
    p = np.empty(capacity, np.int8)
    scratch = [np.empty((H, W)) for _ in range(4)]
    n = saccades.saccade_events(t, x, y, p, *scratch, image, c_on, c_off, *path, scale, eps, refractory)
    return n, list(zip(t[:n].tolist(), x[:n].tolist(), y[:n].tolist(), p[:n].tolist()))


def _same_events(a, b):
    """The same events per pixel, in the same order, timestamps within 1 µs (the floor of a float time)."""
    def by_pixel(evs):
        d = {}
        for t, x, y, p in evs:
            d.setdefault((x, y), []).append((t, p))
        return d
    da, db = by_pixel(a), by_pixel(b)
    assert da.keys() == db.keys()
    for k in da:
        assert [p for _, p in da[k]] == [p for _, p in db[k]], k
        assert np.abs(np.array([t for t, _ in da[k]]) - np.array([t for t, _ in db[k]])).max() <= 1, k


@pytest.mark.parametrize("refractory", [0.0, 700.0])
def test_kernel_matches_slow_reference(refractory):
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (5, 6)) * (rng.uniform(size=(5, 6)) < 0.6)  # zeros too: the skipped box
    H, W = 9, 11
    c_on = rng.uniform(0.1, 0.3, (H, W))
    c_off = rng.uniform(0.1, 0.3, (H, W))
    k = np.arange(40)
    path = (k * 250.0, 1.5 + 2.5 * np.sin(k / 6.0), 1.0 + 0.1 * k)  # fractional, both directions in x
    n, got = _run_kernel(image, c_on, c_off, path, 1.3, 0.05, refractory)
    want = _ref_events(image, c_on, c_off, *path, 1.3, 0.05, refractory)
    assert n == len(want) > 200
    _same_events(got, want)
    with pytest.raises(AssertionError):  # negative control: ON thresholds 1 % higher are caught
        _same_events(got, _ref_events(image, c_on * 1.01, c_off, *path, 1.3, 0.05, refractory))
    steps = {}
    for t, x, y, p in got:
        steps.setdefault((x, y, int(t // 250)), []).append(t)
    if not refractory:  # several events of one pixel in one step get distinct interpolated times
        assert any(len(v) > 1 and len(set(v)) > 1 for v in steps.values())
    else:
        for (x, y), evs in {(x, y): [e for e in got if e[1:3] == (x, y)] for _, x, y, _ in got}.items():
            ts = np.array([e[0] for e in evs])
            assert (np.diff(ts) >= refractory - 1).all()


def test_kernel_reports_overflow_and_the_wrapper_retries():
    img = data.load("mnist-builtin", "test").x[:3]
    small = saccades.simulate_saccades(img, capacity=64)  # every sample overflows 64 events and is rerun
    big = saccades.simulate_saccades(img)
    assert all(len(a) > 64 and np.array_equal(a, b) for a, b in zip(small, big))
    c_on = np.full((34, 34), 0.25)
    n, _ = _run_kernel(saccades._as_images(img)[0], c_on, c_on, saccades.saccade_path(saccades.SaccadeParams()),
                       1.0, 0.2, 0.0, capacity=10)
    assert n == -1


# --- the simulated recordings ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    src = data.load("mnist-builtin", "test")
    return src.x[:40], src.y[:40]


@pytest.fixture(scope="module")
def recordings(digits):
    return saccades.simulate_saccades(digits[0])


def test_events_valid_sorted_in_range(recordings):
    P = saccades.SaccadeParams()
    for ev in recordings:
        assert ev.dtype == events.EVENT_DTYPE and len(ev) > 500
        assert (np.diff(ev["t"]) >= 0).all() and ev["t"].min() >= 0 and ev["t"].max() <= P.duration_us
        assert ev["x"].min() >= 0 and ev["x"].max() < 34 and ev["y"].min() >= 0 and ev["y"].max() < 34
        assert set(np.unique(ev["p"]).tolist()) == {0, 1}
        events.to_frames(ev, 8, (34, 34))  # the binning accepts them (sorted, on the sensor)


def test_polarity_follows_the_motion_of_a_bright_bar():
    bar = np.zeros((28, 28))
    bar[4:24, 12:15] = 1.0  # a bright vertical bar on a dark screen
    ev = saccades.simulate_saccades(bar[None], dataclasses.replace(saccades.SaccadeParams(), noise_hz=0))[0]
    D = saccades.SaccadeParams().saccade_us
    third = ev[ev["t"] >= 2 * D]  # the third saccade moves the digit right (+x) by 4 px
    on, off = third[third["p"] == 1], third[third["p"] == 0]
    assert len(on) > 50 and len(off) > 50
    assert on["x"].min() >= off["x"].max() - 2 and on["x"].mean() > off["x"].mean() + 2  # ON leads, OFF trails
    path_t, path_x, _ = saccades.saccade_path(saccades.SaccadeParams())
    for e in on[:: max(1, len(on) // 50)]:  # an ON event lies right of the bar's centre at its time
        assert e["x"] + 0.5 >= np.interp(e["t"], path_t, path_x) + 13.5
    first = ev[ev["t"] < D]  # the first saccade moves it up (-y) and left: ON above, OFF below
    assert first[first["p"] == 1]["y"].mean() < first[first["p"] == 0]["y"].mean() - 2


def test_deterministic_and_independent_of_chunking(digits, recordings):
    again = saccades.simulate_saccades(digits[0][:6], chunk=4)
    parts = saccades.simulate_saccades(digits[0][2:6], ids=np.arange(2, 6))
    for a, b in zip(recordings[:6], again):
        assert np.array_equal(a, b)
    for a, b in zip(recordings[2:6], parts):
        assert np.array_equal(a, b)
    other = saccades.simulate_saccades(digits[0][:2], seed=1)
    assert not np.array_equal(other[0], recordings[0])
    quiet = saccades.simulate_saccades(digits[0][:2], dataclasses.replace(saccades.SaccadeParams(), noise_hz=0))
    assert 0 < len(recordings[0]) - len(quiet[0]) < 400  # the background noise: ~0.5 Hz x 1156 px x 0.31 s


def test_sensor_thresholds_are_drawn_once_per_seed():
    P = saccades.SaccadeParams()
    a, b = saccades.sensor_thresholds(P, 5), saccades.sensor_thresholds(P, 5)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], a[1])
    assert abs(a[0].mean() - P.c_on) < 0.01 and abs(a[0].std() - P.sigma_c) < 0.01


def test_bad_input_is_refused():
    with pytest.raises(DataError, match=r"images: expected \(N, h, w\)"):
        saccades.simulate_saccades(np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"in \[0, 1\]"):
        saccades.simulate_saccades(np.full((1, 28, 28), 2.0))
    with pytest.raises(DataError, match="saccade parameter c_on = -0.1: must be > 0"):
        saccades.simulate_saccades(np.zeros((1, 28, 28)), dataclasses.replace(saccades.SaccadeParams(), c_on=-0.1))
    with pytest.raises(DataError, match="ids: expected 1 sample ids"):
        saccades.simulate_saccades(np.zeros((1, 28, 28)), ids=[1, 2])


def test_the_package_exposes_the_simulator():
    assert data.simulate_saccades is saccades.simulate_saccades


# --- N-MNIST .bin ------------------------------------------------------------------------------------
def test_bin_round_trip_and_bytes(recordings, tmp_path):
    ev = recordings[0]
    raw = events.encode_nmnist(ev)
    assert raw == nmnist_bytes(ev["x"], ev["y"], ev["p"], ev["t"])  # the tests' own writer, byte for byte
    back = events.read_nmnist(events.write_nmnist(str(tmp_path / "a" / "1.bin"), ev))
    assert np.array_equal(back, ev)
    bad = ev.copy()
    bad["t"][-1] = 2 ** 23
    with pytest.raises(DataError, match=r"timestamps must lie in \[0, 2\^23\)"):
        events.encode_nmnist(bad)
    bad = ev.copy()
    bad["x"][0] = 256
    with pytest.raises(DataError, match="x and y must lie in 0..255"):
        events.encode_nmnist(bad)
    with pytest.raises(DataError, match="timestamps go backwards at event 1 .* sort the events by time first"):
        events.encode_nmnist(ev[::-1])
    with pytest.raises(DataError, match="no events to write"):
        events.write_nmnist(str(tmp_path / "empty.bin"), ev[:0])
    assert not (tmp_path / "empty.bin").exists()


# --- the built-in set as a cache ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("nmnist-builtin")
    path = saccades.build(str(root / "cache"), bin_root=str(root / "bin"), limit=200)
    return root, path


def test_cache_is_what_convert_makes_of_the_bin_files(small_build):
    root, path = small_build
    assert os.path.basename(path) == "nmnist-builtin.h5"
    src, digits = data.load(path, "train"), data.load("mnist-builtin", "train")
    assert src.x.shape == (200, 8, 2, 34, 34) and src.x.dtype == np.uint16 and src.T == 8
    assert np.array_equal(src.y, digits.y[:200]) and src.n_classes == 10 and not src.static
    assert (src.x.sum(axis=(2, 3, 4)) > 0).all()  # every frame of every sample holds events
    attrs = data.info(path)["attrs"]
    assert attrs["name"] == "nmnist-builtin" and attrs["binning"] == "time"
    assert attrs["simulation_seed"] == saccades.SEED
    assert json.loads(attrs["simulation"])["c_on"] == saccades.SaccadeParams().c_on
    converted = data.load(download.convert("nmnist", str(root / "bin"), cache_dir=str(root / "conv")), "train")
    order = [int(f[:-4]) for d in range(10) for f in sorted(os.listdir(root / "bin" / "Train" / str(d)))]
    assert np.array_equal(converted.x, src.x[order]) and np.array_equal(converted.y, src.y[order])
    first = saccades.simulate_saccades(digits.x[:1])[0]
    assert np.array_equal(events.read_nmnist(str(root / "bin" / "Train" / str(digits.y[0]) / "00000.bin")), first)
    test = data.load(path, "test")  # test recordings: other noise streams than train's first digits
    assert test.x.shape[0] == 200 and np.array_equal(test.y, data.load("mnist-builtin", "test").y[:200])


def test_cache_reuse_settings_and_names(small_build, tmp_path):
    root, path = small_build
    mtime = os.path.getmtime(path)
    assert saccades.build(str(root / "cache"), limit=200) == path and os.path.getmtime(path) == mtime
    with pytest.raises(DataError, match="exists, made with other settings"):
        saccades.build(str(root / "cache"), limit=100)
    assert saccades.cache_name(20) == "nmnist-builtin-T20"
    assert saccades.cache_name(10, "count", 48) == "nmnist-builtin-T10-48px-count"
    for name in ("nmnist-builtin", "nmnist-builtin-T20", "nmnist-builtin-T10-48px-count"):
        assert saccades.cache_name(**saccades.parse_name(name)) == name
    assert saccades.parse_name("nmnist-builtin-T8") is None and saccades.parse_name("nmnist") is None
    with pytest.raises(DataError, match="T = 20, by = time, size = 34; T = 4 disagrees"):
        saccades.get("nmnist-builtin-T20", str(tmp_path), T=4)
    with pytest.raises(DataError, match="N-MNIST .bin recordings are 34x34"):
        saccades.build(str(tmp_path), size=48, bin_root=str(tmp_path / "bin"))
    with pytest.raises(DataError, match="options of the simulated set nmnist-builtin only"):
        download.get("mnist", T=4)
    with pytest.raises(DataError, match="nothing is downloaded; drop --url"):
        download.get("nmnist-builtin", base_url="http://example.invalid/")


def test_larger_sensor_scales_the_digit(tmp_path):
    path = saccades.get("nmnist-builtin-T4-48px", str(tmp_path), limit=12)
    src = data.load(path, "train")
    assert os.path.basename(path) == "nmnist-builtin-T4-48px.h5" and src.x.shape == (12, 4, 2, 48, 48)
    ev = saccades.simulate_saccades(data.load("mnist-builtin", "train").x[:1],
                                    dataclasses.replace(saccades.SaccadeParams(), sensor=48, noise_hz=0))[0]
    assert ev["x"].max() > 33 and ev["y"].max() > 33 and ev["x"].min() > 0


def test_cli_get_writes_the_cache(tmp_path, capsys):
    p = argparse.ArgumentParser(prog="stopnp")
    data_cli.register(p.add_subparsers(dest="command"))
    args = p.parse_args(["data", "get", "nmnist-builtin", "--T", "3", "--limit", "10", "--cache-dir", str(tmp_path)])
    assert data_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "nmnist-builtin-T3.h5" in out and data.load(str(tmp_path / "nmnist-builtin-T3.h5"), "test").T == 3


def test_a_small_network_learns_the_simulated_digits(small_build, tmp_path):
    from stopnp import config as C
    from stopnp.api import simulate
    from stopnp.run.resume import load_network
    from stopnp.run.train import train
    _, path = small_build
    cfg = C.resolve({}, ["model.name=mlp", "model.hidden=[64]", "model.input_shape=[2, 34, 34]",
                         f'data.name="{path}"', "data.T=8", "data.batch_size=20", "data.test_batch_size=100",
                         "run.epochs=4", "run.quiet=true", "optim.kind=adam", "optim.lr=0.002",
                         f'run.out_dir="{tmp_path / "run"}"'])
    res = train(cfg)
    losses = [m["train_loss"] for m in res.metrics]
    assert losses[-1] < 0.9 * losses[0] and all(b < a for a, b in zip(losses, losses[1:])), losses
    assert res.metrics[-1]["test_acc"] > 0.4, res.metrics  # 10 classes: chance is 0.1
    net, _ = load_network(str(tmp_path / "run" / "best.h5"))
    x, _ = next(data.batches(data.load(path, "test"), 50, 8, shuffle=False))
    spikes = {k: v for k, v in simulate(net, x, record=("s",)).items() if k.endswith(".s")}
    assert spikes and all(v.sum() > 0 for v in spikes.values())


def test_event_stats_on_known_events():
    ev = events.make_events([1000, 2000, 120000, 250000, 400000], [3, 5, 5, 9, 3], [4, 4, 6, 7, 4], [1, 0, 1, 1, 0])
    s = saccades.event_stats(ev, saccade_us=100000)
    assert s["events"] == 5 and s["on_fraction"] == 0.6 and s["duration_ms"] == 399.0
    assert (s["x_min"], s["x_max"], s["y_min"], s["y_max"]) == (3, 9, 4, 7) and s["active_pixels"] == 4
    assert (s["saccade_1"], s["saccade_2"], s["saccade_3"]) == (2, 1, 2)
    assert s["x_p01"] == np.percentile([3, 5, 5, 9, 3], 1) and saccades.event_stats(ev[:0]) == {"events": 0}


# --- against the real N-MNIST sample ------------------------------------------------------------------
def _real_sample():
    path = FIXTURE  # STOPNP_FIXTURES or ../shared/fixtures
    if not os.path.isfile(path):
        pytest.skip(f"real N-MNIST sample not found at {os.path.normpath(path)}: it lives in ../shared/fixtures "
                    f"beside the repository (or STOPNP_FIXTURES), which a clean clone such as CI's does not have, "
                    f"so this comparison skips there too")
    return events.read_nmnist(path)


def test_statistics_resemble_the_real_sample(recordings):
    real = saccades.event_stats(_real_sample())
    sim = [saccades.event_stats(ev) for ev in recordings]
    mean = {k: np.mean([s[k] for s in sim]) for k in real}
    assert 0.7 * real["events"] < mean["events"] < 1.4 * real["events"], (mean["events"], real["events"])
    assert abs(mean["on_fraction"] - real["on_fraction"]) < 0.05
    assert abs(mean["duration_ms"] - real["duration_ms"]) < 0.03 * real["duration_ms"]
    for k in ("x_p01", "x_p99", "y_p01", "y_p99"):
        assert abs(mean[k] - real[k]) < 3, (k, mean[k], real[k])
    assert 0.7 * real["active_pixels"] < mean["active_pixels"] < 1.3 * real["active_pixels"]
    for k in ("saccade_1", "saccade_2", "saccade_3"):  # events in each saccade's window
        assert 0.5 * real[k] < mean[k] < 1.6 * real[k], (k, mean[k], real[k])
