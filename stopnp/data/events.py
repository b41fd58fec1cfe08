"""Event-camera recordings and their binning into frames.

Events are a structured array with fields t (int64, µs), x, y (int16), p (int8, 0/1).

Formats read here:
    N-MNIST .bin    5 bytes per event, big-endian 40-bit word: x (8) | y (8) | p (1) | t (23 bits, µs)
    AEDAT 2.0       '#'-prefixed header lines, then 8-byte big-endian (address uint32, timestamp int32);
                    DVS128 address: p = a & 1, x = 127 - ((a >> 1) & 0x7F), y = (a >> 8) & 0x7F
                    (CIFAR10-DVS)
    AEDAT 3.1       '#' header ending with '#!END-HEADER\r\n', then packets: 28-byte little-endian header
                    (type int16, source int16, size int32, tsoffset int32, tsoverflow int32,
                    capacity int32, number int32, valid int32) and events; polarity events (type 1,
                    8 bytes): data uint32 (bit 0 valid, bit 1 p, bits 2-16 y, bits 17-31 x),
                    timestamp int32 (+ overflow << 31)  (DVS128 Gesture, cut by its _labels.csv)
    tonic .npy      tonic's preprocessed DVS Gesture: ibmGestureTrain|ibmGestureTest/<user_light>/<label>.npy,
                    each a plain (N, 4) array of columns x, y, p, t in milliseconds (label = file stem,
                    0-based); a structured array with fields t, x, y, p (t in µs) is accepted too

Frames (numba): frame[k, p, y', x'] = #events of polarity p in bin k at the (downsampled) pixel,
bins by time, k = ⌊(t - t0)·T / (t1 - t0 + 1)⌋, or by count, k = ⌊i·T / n⌋;
x' = ⌊x·W'/W⌋. Denoise: keep an event only if one of its 8 neighbours fired within ``dt`` µs before.

Checked before binning (numba does not check bounds): timestamps sorted, within ±2^62 µs and a span
with (t1 - t0 + 1)·T < 2^63 (no int64 overflow in k); every event inside the sensor. A file that holds
no events is refused by its reader (a recording is never turned into an all-zero sample).
"""
import csv
import functools
import os

import numpy as np
from numba import njit

AGAIN = "remove it or extract the dataset again"
EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])


def _err(msg):
    from . import DataError
    return DataError(msg)


class Recording:
    """One sample of a dataset layout, read when called (returns its events); ``source`` names it in
    messages: its file, and for a DVS Gesture sample the window of its labels file."""

    def __init__(self, source, read, *args):
        self.source, self._read, self._args = source, read, args

    def __call__(self):
        return self._read(*self._args)


def make_events(t, x, y, p):
    ev = np.empty(len(t), EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


def check_monotonic(ev, path, bytes_per_event=None, offset=0):
    if len(ev) > 1:
        back = ev["t"][1:] < ev["t"][:-1]  # a comparison, not np.diff: unsigned differences wrap around
        if back.any():
            i = int(np.argmax(back)) + 1
            where = f" (byte offset {offset + i * bytes_per_event})" if bytes_per_event else ""
            raise _err(f"{path}: timestamps go backwards at event {i}{where}: {int(ev['t'][i - 1])} -> "
                       f"{int(ev['t'][i])} µs; the recording is corrupt: {AGAIN}")
    return ev


def _nonempty(ev, path, what="the file holds no events"):
    if len(ev) == 0:
        raise _err(f"{path}: {what}; the recording is empty or cut short: {AGAIN}")
    return ev


# --- N-MNIST ------------------------------------------------------------------------------------------
def decode_nmnist(buf, path="<bytes>"):
    if len(buf) % 5:
        raise _err(f"{path}: truncated at byte {len(buf) // 5 * 5} ({len(buf)} bytes is not a multiple of "
                   f"5-byte events): {AGAIN}")
    raw = np.frombuffer(buf, np.uint8).reshape(-1, 5).astype(np.int64)
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    ev = make_events(t, raw[:, 0], raw[:, 1], raw[:, 2] >> 7)
    return check_monotonic(ev, path, 5)


def read_nmnist(path):
    if not os.path.isfile(path):
        raise _err(f"{path}: file not found")
    with open(path, "rb") as f:
        return _nonempty(decode_nmnist(f.read(), path), path)


def list_nmnist(root, split):
    """(loader, label) per recording of root/{Train,Test}/<digit>/*.bin (read lazily, one at a time)."""
    sub = os.path.join(root, "Train" if split == "train" else "Test")
    if not os.path.isdir(sub):
        raise _err(f"{root}: expected the N-MNIST layout {root}/Train/0..9/*.bin and {root}/Test/0..9/*.bin")
    out = []
    for d in range(10):
        folder = os.path.join(sub, str(d))
        if not os.path.isdir(folder):
            raise _err(f"{sub}: missing class folder {d}/ (expected {sub}/0 ... {sub}/9); extract the dataset again")
        out += [(Recording(os.path.join(folder, name), read_nmnist, os.path.join(folder, name)), d)
                for name in sorted(os.listdir(folder)) if name.endswith(".bin")]
    return out


def read_nmnist_folder(root, split):
    """root/{Train,Test}/<digit>/*.bin -> list of (events, label)."""
    return [(load(), d) for load, d in list_nmnist(root, split)]


def encode_nmnist(ev, where="events"):
    """Events -> N-MNIST .bin bytes (the inverse of ``decode_nmnist``); refuses what the format cannot hold."""
    t, x, y, p = (np.asarray(ev[k]).astype(np.int64) for k in ("t", "x", "y", "p"))
    if len(t) and (t.min() < 0 or t.max() >= 2 ** 23):
        raise _err(f"{where}: timestamps must lie in [0, 2^23) µs for N-MNIST .bin, got {t.min()}..{t.max()}")
    if len(t) and (min(x.min(), y.min()) < 0 or max(x.max(), y.max()) > 255):
        raise _err(f"{where}: x and y must lie in 0..255 for N-MNIST .bin")
    if len(t) and not np.isin(p, (0, 1)).all():
        raise _err(f"{where}: polarity must be 0 or 1")
    if len(t) > 1 and (t[1:] < t[:-1]).any():
        i = int(np.argmax(t[1:] < t[:-1])) + 1
        raise _err(f"{where}: timestamps go backwards at event {i} ({t[i - 1]} -> {t[i]} µs); sort the events by "
                   f"time first (ev[np.argsort(ev['t'], kind='stable')])")
    word = (x << 32) | (y << 24) | (p << 23) | t
    return ((word[:, None] >> np.array([32, 24, 16, 8, 0])) & 0xFF).astype(np.uint8).tobytes()


def write_nmnist(path, ev):
    """One recording as an N-MNIST .bin file (folders created as needed); an empty one is refused, as the
    reader refuses it."""
    if len(ev) == 0:
        raise _err(f"{path}: no events to write; an N-MNIST recording holds at least one")
    buf = encode_nmnist(ev, path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(buf)
    return path


# --- AEDAT ---------------------------------------------------------------------------------------------
def _split_header(buf, path, end_marker=None):
    pos = 0
    while pos < len(buf) and buf[pos:pos + 1] == b"#":
        nl = buf.find(b"\n", pos)
        if nl < 0:
            raise _err(f"{path}: truncated header at byte {len(buf)}; {AGAIN}")
        line = buf[pos:nl + 1]
        pos = nl + 1
        if end_marker is not None and line.startswith(end_marker):
            break
    return pos


def read_aedat2(path, width=128):
    if not os.path.isfile(path):
        raise _err(f"{path}: file not found")
    with open(path, "rb") as f:
        buf = f.read()
    if not buf.startswith(b"#!AER-DAT2"):
        raise _err(f"{path}: not an AEDAT 2.0 file (first line must be '#!AER-DAT2.0'); is this CIFAR10-DVS? {AGAIN}")
    start = _split_header(buf, path)
    body = len(buf) - start
    if body % 8:
        raise _err(f"{path}: truncated at byte {start + body // 8 * 8} (8-byte events): {AGAIN}")
    raw = np.frombuffer(buf, ">u4", offset=start).reshape(-1, 2)
    a, t = raw[:, 0].astype(np.int64), raw[:, 1].astype(np.int64)
    ev = make_events(t, width - 1 - ((a >> 1) & 0x7F), (a >> 8) & 0x7F, a & 1)
    return _nonempty(check_monotonic(ev, path, 8, start), path)


def read_aedat31(path):
    if not os.path.isfile(path):
        raise _err(f"{path}: file not found")
    with open(path, "rb") as f:
        buf = f.read()
    if not buf.startswith(b"#!AER-DAT3"):
        raise _err(f"{path}: not an AEDAT 3.x file (first line must be '#!AER-DAT3.1'); is this DVS Gesture? {AGAIN}")
    pos = _split_header(buf, path, b"#!END-HEADER")
    parts = []
    while pos < len(buf):
        if pos + 28 > len(buf):
            raise _err(f"{path}: truncated packet header at byte {pos}; {AGAIN}")
        head = np.frombuffer(buf, "<i4", 7, pos + 4)
        etype = int(np.frombuffer(buf, "<i2", 1, pos)[0])
        size, overflow, number = int(head[0]), int(head[2]), int(head[4])
        if size < 1 or number < 0:
            raise _err(f"{path}: packet at byte {pos} declares {number} events of {size} bytes; the file is "
                       f"corrupt: {AGAIN}")
        start, end = pos + 28, pos + 28 + size * number
        if end > len(buf):
            raise _err(f"{path}: truncated packet at byte {pos} ({number} events of {size} bytes declared); {AGAIN}")
        if etype == 1 and size == 8:
            raw = np.frombuffer(buf, "<u4", 2 * number, start).reshape(-1, 2).astype(np.int64)
            data, ts = raw[:, 0], raw[:, 1] | (overflow << 31)
            valid = (data & 1) == 1
            parts.append(make_events(ts[valid], (data[valid] >> 17) & 0x7FFF, (data[valid] >> 2) & 0x7FFF,
                                     (data[valid] >> 1) & 1))
        pos = end
    ev = np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)
    return _nonempty(check_monotonic(ev, path), path, "the file holds no polarity events")


def read_gesture_labels(path):
    """DVS128 Gesture ``*_labels.csv``: class (1-based), startTime_usec, endTime_usec -> rows
    (class 0-based, t0, t1)."""
    return [row[1:] for row in _gesture_rows(path)]


def _gesture_rows(path):
    """(line number, class 0-based, t0, t1) per gesture; blank lines and a header line are skipped."""
    if not os.path.isfile(path):
        raise _err(f"{path}: labels file not found (each user*.aedat needs its *_labels.csv): extract the dataset "
                   f"again")
    rows = []
    fix = "fix the line or extract the labels file again"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(enumerate(csv.reader(f), 1))
    except (UnicodeDecodeError, csv.Error) as e:
        raise _err(f"{path}: not a text CSV file ({e}); extract the labels file again") from None
    first = True
    for i, row in lines:
        if not "".join(row).strip():
            continue
        if first and row[0].strip().lower().startswith("class"):  # class,startTime_usec,endTime_usec
            first = False
            continue
        first = False
        try:
            c, t0, t1 = (int(v) for v in row[:3])
            if len(row) < 3:
                raise ValueError
        except ValueError:
            raise _err(f"{path}: line {i}: {','.join(row)[:60]!r} is not class,startTime_usec,endTime_usec "
                       f"(three integers); {fix}") from None
        if not 1 <= c <= 11:
            raise _err(f"{path}: line {i}: class {c} outside 1..11; {fix}")
        if t1 <= t0:
            raise _err(f"{path}: line {i}: end time {t1} is not after start time {t0}; {fix}")
        rows.append((i, c - 1, t0, t1))
    if not rows:
        raise _err(f"{path}: no gesture rows (class,startTime_usec,endTime_usec); extract the labels file again")
    return rows


def cut_gestures(ev, labels):
    """Gesture samples: the events within each labelled [start, end) window."""
    return [(ev[(ev["t"] >= t0) & (ev["t"] < t1)], c) for c, t0, t1 in labels]


def read_tonic_npy(path):
    """One tonic ``.npy`` sample: structured (t µs, x, y, p) or tonic's DVS Gesture (N, 4) x, y, p, t[ms]."""
    if not os.path.isfile(path):
        raise _err(f"{path}: file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _err(f"{path}: not a readable .npy file ({e}); extract the archive again") from None
    if arr.dtype.names is not None and {"t", "x", "y", "p"} <= set(arr.dtype.names) and arr.ndim == 1:
        t, x, y, p = arr["t"], arr["x"], arr["y"], arr["p"]
        cols, scale = {"t": t, "x": x, "y": y, "p": p}, 1  # t in µs
    elif arr.dtype.names is None and arr.ndim == 2 and arr.shape[1] == 4:
        x, y, p, t = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
        cols, scale = {"x": x, "y": y, "p": p, "t[ms]": t}, 1000  # tonic's DVS Gesture: t in ms
    else:
        raise _err(f"{path}: expected a structured array with fields t, x, y, p or an (N, 4) array of x, y, "
                   f"p, t[ms] (tonic's layouts), got {arr.dtype} {arr.shape}; {AGAIN}")
    for name, col in cols.items():
        if col.dtype.kind not in "biuf":
            raise _err(f"{path}: column {name} is {col.dtype}, expected numbers; extract the archive again")
        if col.dtype.kind == "f" and len(col) and not np.isfinite(col).all():
            i = int(np.argmax(~np.isfinite(col)))
            raise _err(f"{path}: column {name} is {col[i]} at event {i}; the file is corrupt: extract the archive "
                       f"again")
    _nonempty(t, path)
    for name, col in (("x", x), ("y", y)):
        bad = (col < 0) | (col >= 2 ** 15) | (col != np.floor(col))
        if bad.any():
            i = int(np.argmax(bad))
            raise _err(f"{path}: {name} = {col[i]} at event {i} is not a pixel index; the file is corrupt: "
                       f"extract the archive again")
    t = np.rint(t.astype(np.float64) * scale) if scale != 1 or t.dtype.kind == "f" else t
    if t.min() < -2 ** 62 or t.max() >= 2 ** 62:
        i = int(np.argmax((t < -2 ** 62) | (t >= 2 ** 62)))
        raise _err(f"{path}: timestamp {t[i]} µs at event {i} is out of range; the file is corrupt: extract the "
                   f"archive again")
    return check_monotonic(make_events(t.astype(np.int64), x, y, (np.asarray(p) > 0)), path)


# --- frames (numba) -----------------------------------------------------------------------------------
@njit(cache=True)
def events_to_frames(frames, t, x, y, p, in_h, in_w, by_count):
    """frames (T, 2, H', W') += event counts; bins by time (default) or by event count."""
    T, _, H, W = frames.shape
    n = t.shape[0]
    if n == 0:
        return
    t0, t1 = t[0], t[n - 1]
    span = t1 - t0 + 1
    for i in range(n):
        k = (i * T) // n if by_count else ((t[i] - t0) * T) // span
        yy = (y[i] * H) // in_h
        xx = (x[i] * W) // in_w
        frames[k, p[i], yy, xx] += 1


@njit(cache=True)
def denoise_mask(keep, last, t, x, y, dt):
    """keep[i] = some 8-neighbour pixel fired within dt µs before event i (a background-activity filter).
    ``last`` (H + 2, W + 2) int64 scratch, filled with a very old time by the caller."""
    for i in range(t.shape[0]):
        xi, yi = x[i] + 1, y[i] + 1
        ok = False
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                if (dx != 0 or dy != 0) and t[i] - last[yi + dy, xi + dx] <= dt:
                    ok = True
        keep[i] = ok
        last[yi, xi] = t[i]


def to_frames(ev, T, in_shape, out_shape=None, by="time", denoise_dt=0, source="events"):
    """Events -> uint16 frames (T, 2, H', W'). ``in_shape`` = (H, W) of the sensor; ``source`` names the
    recording in messages."""
    in_h, in_w = in_shape
    out_h, out_w = out_shape or in_shape
    if int(T) < 1:
        raise _err(f"T = {T}: frames need T >= 1 time bins")
    if ev.dtype.names is None or not {"t", "x", "y", "p"} <= set(ev.dtype.names):
        raise _err(f"events must be a structured array with fields t, x, y, p (make_events), got {ev.dtype}")
    if ev["t"].dtype.kind not in "iu":
        raise _err(f"event timestamps are {ev['t'].dtype}; expected integer µs (make_events converts)")
    check_monotonic(ev, source)  # the time bins assume sorted timestamps (else they fall outside 0..T-1)
    if len(ev):
        x, y = ev["x"], ev["y"]
        out = (x < 0) | (x >= in_w) | (y < 0) | (y >= in_h)
        if out.any():
            i = int(np.argmax(out))
            raise _err(f"{source}: event {i} at (x, y) = ({int(x[i])}, {int(y[i])}) is outside the {in_w}x{in_h} "
                       f"sensor; the recording is corrupt or from another camera: {AGAIN}")
        t0, t1 = int(ev["t"][0]), int(ev["t"][-1])  # Python ints: no overflow
        if t0 < -2 ** 62 or t1 >= 2 ** 62 or (t1 - t0 + 1) * int(T) >= 2 ** 63:
            raise _err(f"{source}: timestamps {t0} .. {t1} µs are out of range for binning into T = {T} frames; "
                       f"the recording is corrupt: {AGAIN}")
    if denoise_dt:
        keep = np.zeros(len(ev), np.bool_)
        last = np.full((in_h + 2, in_w + 2), -(2 ** 62), np.int64)
        denoise_mask(keep, last, ev["t"].astype(np.int64), ev["x"].astype(np.int64), ev["y"].astype(np.int64),
                     int(denoise_dt))
        ev = ev[keep]
    frames = np.zeros((T, 2, out_h, out_w), np.uint16)
    events_to_frames(frames, ev["t"].astype(np.int64), ev["x"].astype(np.int64), ev["y"].astype(np.int64),
                     (ev["p"] > 0).astype(np.int64), in_h, in_w, by == "count")
    return frames


# --- dataset layouts ------------------------------------------------------------------------------
GESTURE_SENSOR = (128, 128)


TONIC_GESTURE_DIRS = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}


def list_dvsgesture(root, split):
    """(events loader, label) per gesture sample, from the original DvsGesture release
    (trials_to_<split>.txt, user*.aedat, user*_labels.csv) or from tonic's preprocessed layout
    (ibmGestureTrain|ibmGestureTest/<user_light>/<label>.npy)."""
    tonic_root = os.path.join(root, TONIC_GESTURE_DIRS[split])
    if os.path.isdir(tonic_root):
        out = []
        for folder, dirs, files in os.walk(tonic_root):
            dirs.sort()
            for f in sorted(files):
                if f.endswith(".npy"):
                    stem = f[:-4]
                    if not stem.isdigit() or not 0 <= int(stem) <= 10:
                        raise _err(f"{os.path.join(folder, f)}: tonic names gesture samples <label>.npy with "
                                   f"label 0..10; rename or remove it")
                    out.append((Recording(os.path.join(folder, f), read_tonic_npy, os.path.join(folder, f)),
                                int(stem)))
        return out
    trials = os.path.join(root, f"trials_to_{split}.txt")
    if not os.path.isfile(trials):
        raise _err(f"{root}: expected DvsGesture's trials_to_train.txt / trials_to_test.txt with user*.aedat and "
                   f"*_labels.csv beside them, or tonic's {root}/{TONIC_GESTURE_DIRS[split]}/<user>/<label>.npy")
    out = []
    try:
        with open(trials, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise _err(f"{trials}: not a text file ({e}); extract the dataset again") from None
    for name in names:
        aedat = os.path.join(root, name)
        if not name.endswith(".aedat") or not os.path.isfile(aedat):
            raise _err(f"{trials}: lists {name[:60]!r}, which is not an .aedat file in {root}; extract the "
                       f"dataset again")
        csv_path = aedat[:-len(".aedat")] + "_labels.csv"
        out += [(Recording(f"{aedat} ({t0}..{t1} µs, {os.path.basename(csv_path)} line {line})", _gesture_cut,
                           aedat, t0, t1, csv_path, line), c)
                for line, c, t0, t1 in _gesture_rows(csv_path)]
    return out


@functools.lru_cache(maxsize=1)
def _read_aedat31_cached(path, mtime_ns, size):
    # a recording holds ~11 gestures, cut one after the other: read each file once, not once per gesture
    # (keyed on the file's mtime and size too, so a rewritten file is read again)
    return read_aedat31(path)


def _gesture_cut(path, t0, t1, csv_path="", line=0):
    st = os.stat(path)
    ev = _read_aedat31_cached(path, st.st_mtime_ns, st.st_size)
    cut = ev[(ev["t"] >= t0) & (ev["t"] < t1)]
    if len(cut) == 0:
        raise _err(f"{csv_path}: line {line}: no events of {os.path.basename(path)} between {t0} and {t1} µs; "
                   f"fix the line or extract the dataset again")
    return cut


CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def list_cifar10_dvs(root, split, test_every=10):
    """(loader, label) per recording of <root>/<class>/*.aedat; a fixed split: every 10th file (sorted
    by name) of each class is a test sample (90/10, the usual protocol)."""
    out = []
    for c, name in enumerate(CIFAR10_DVS_CLASSES):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            raise _err(f"{root}: missing class folder {name}/ (expected {', '.join(CIFAR10_DVS_CLASSES)}); extract the "
                       f"dataset again")
        files = sorted(f for f in os.listdir(folder) if f.endswith(".aedat"))
        for i, f in enumerate(files):
            if (i % test_every == test_every - 1) == (split == "test"):
                out.append((Recording(os.path.join(folder, f), read_aedat2, os.path.join(folder, f)), c))
    return out


def from_tonic(dataset, T, sensor_size, out_size=None, by="time"):
    """Frames and labels from any tonic dataset yielding (events, label) with fields t, x, y, p
    (the ``events`` extra); returns (x uint16 (N, T, 2, H, W), y int64)."""
    xs, ys = [], []
    for ev, label in dataset:
        e = make_events(ev["t"], ev["x"], ev["y"], ev["p"])
        xs.append(to_frames(e, T, sensor_size, out_size, by=by, source=f"tonic sample {len(xs)}"))
        ys.append(int(label))
    return np.stack(xs), np.asarray(ys, np.int64)
