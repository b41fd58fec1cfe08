"""N-MNIST-like event recordings simulated from static digits: three saccades seen by an emulated DVS.

N-MNIST (Orchard et al. 2015) was recorded by an ATIS sensor on a pan-tilt unit making three saccades
over MNIST digits shown on a screen. Here the digit moves instead (the same relative motion), and each
pixel is a DVS pixel as in the emulators ESIM and v2e:

    motion     offset(t) of the digit's top-left corner in sensor pixels: a triangle of three saccades
               V0 -> V0 + (-f a, -h) -> V0 + (-a, 0) -> V0, each of duration D, position along a saccade
               s(τ) = 10τ³ - 15τ⁴ + 6τ⁵ (minimum jerk: speed and acceleration zero at the corners),
               τ = (t - t_start) / D
    optics     I(X, Y, t) = the digit (pixels in [0, 1]) sampled bilinearly at
               u = (X + 1/2 - offset_x(t)) / scale - 1/2 (and v likewise), 0 outside; scale =
               sensor / 34 (a 28x28 digit in a 34x34 field, as N-MNIST); at scale 1 bilinear sampling
               is the exact area average of the screen's square pixels over the sensor pixel
    pixel      L = ln(I + eps) (eps: the screen's black level); each pixel keeps a reference L_ref;
               while L - L_ref >= C_on(X, Y): an ON event, L_ref += C_on; while L_ref - L >= C_off(X, Y):
               an OFF event, L_ref -= C_off. L is linear in t within a step (t0, t1], so the crossing of
               level l happens at t = t0 + (l - L(t0)) / (L(t1) - L(t0)) · (t1 - t0)
    mismatch   C_on(X, Y) = max(C_on + σ_C·n, 0.01), n ~ N(0, 1), drawn once per sensor (per seed), and
               C_off likewise (v2e's threshold mismatch)
    refractory an event at t' < t_last + t_refr is delayed to t_last + t_refr (or to a later step)
    noise      background events: a Poisson process of rate r per pixel, polarity ON or OFF with equal
               probability, uniform in time over the recording; they do not move L_ref

    simulate_saccades(images, params, seed, ids) -> list of event arrays (t µs, x, y, p; sorted by t)
    sensor_thresholds(params, seed) -> (c_on, c_off)   the per-pixel thresholds of one sensor
    build(cache_dir, T, by, size, ...) -> path   the built-in digits as an event cache ("nmnist-builtin"),
                                                 optionally also as N-MNIST .bin files
    get(name, ...) -> path                       build for a cache name ("nmnist-builtin-T20-48px")
    event_stats(events) -> dict                  events, ON fraction, duration, extent, events per saccade

The kernels are deterministic (no random numbers inside); all random draws come from NumPy generators
seeded by (seed, sample id), so a set can be generated in any order or in parts. The default parameters
make recordings whose statistics resemble a real N-MNIST recording (docs/results.md).
"""
import dataclasses
import json
import os

import numpy as np
from numba import njit, prange

from .events import make_events

NAME = "nmnist-builtin"
SEED = 20241201
DEFAULT_T = 8
FIELD = 34  # N-MNIST's sensor field (px) around a 28x28 digit


@dataclasses.dataclass(frozen=True)
class SaccadeParams:
    """Motion and sensor parameters. Lengths in pixels of the 34x34 field (scaled with ``sensor``)."""
    sensor: int = 34                   # square sensor side (px); the digit is scaled by sensor / 34
    saccade_us: float = 104_500.0      # duration D of each of the three saccades
    base: float = 4.0                  # triangle base a (px along x)
    height: float = 4.0                # triangle height h (px along y)
    apex: float = 0.35                 # f: the apex lies at a fraction f of the base (0.5: isosceles)
    start: tuple = (5.0, 5.0)          # V0: the digit's top-left corner at t = 0 (x, y)
    dt_us: float = 1000.0              # simulation step (timestamps are interpolated within it)
    c_on: float = 0.25                 # contrast thresholds (log intensity)
    c_off: float = 0.25
    sigma_c: float = 0.03              # per-pixel threshold mismatch (std)
    eps: float = 0.20                  # screen black level relative to white
    refractory_us: float = 0.0
    noise_hz: float = 0.5              # background events per pixel per second

    def check(self):
        """Raise DataError naming the first invalid field."""
        from . import DataError
        rules = (("sensor", 8 <= self.sensor <= 255, "8..255 (N-MNIST: 34)"),
                 ("saccade_us", self.saccade_us > 0 and 3 * self.saccade_us < 2 ** 23, "> 0, 3 D < 2^23 µs"),
                 ("dt_us", 0 < self.dt_us <= self.saccade_us, "in (0, saccade_us]"),
                 ("base", self.base >= 0, ">= 0"), ("height", self.height >= 0, ">= 0"),
                 ("apex", 0 <= self.apex <= 1, "in [0, 1]"),
                 ("c_on", self.c_on > 0, "> 0"), ("c_off", self.c_off > 0, "> 0"),
                 ("sigma_c", self.sigma_c >= 0, ">= 0"), ("eps", self.eps > 0, "> 0"),
                 ("refractory_us", self.refractory_us >= 0, ">= 0"), ("noise_hz", self.noise_hz >= 0, ">= 0"),
                 ("start", len(self.start) == 2 and all(np.isfinite(self.start)), "(x, y), finite"))
        for name, ok, hint in rules:
            if not ok:
                raise DataError(f"saccade parameter {name} = {getattr(self, name)!r}: must be {hint}")
        return self

    @property
    def duration_us(self):
        return 3 * self.saccade_us

    @property
    def scale(self):
        return self.sensor / FIELD


def saccade_path(params):
    """Step times (µs) and the digit's top-left offset (sensor px) at each: arrays (K,), (K,), (K,)."""
    p = params
    n = int(np.ceil(p.duration_us / p.dt_us))
    t = np.minimum(np.arange(n + 1) * p.dt_us, p.duration_us)
    a, h = p.base, p.height
    corners = np.array([[0.0, 0.0], [-p.apex * a, -h], [-a, 0.0], [0.0, 0.0]]) + np.asarray(p.start, float)
    seg = np.minimum((t // p.saccade_us).astype(np.int64), 2)
    tau = (t - seg * p.saccade_us) / p.saccade_us
    s = tau ** 3 * (10.0 - 15.0 * tau + 6.0 * tau ** 2)
    pos = corners[seg] + s[:, None] * (corners[seg + 1] - corners[seg])
    return t, pos[:, 0] * p.scale, pos[:, 1] * p.scale


def sensor_thresholds(params, seed):
    """Per-pixel contrast thresholds (c_on, c_off), each (sensor, sensor) float64: one sensor per seed."""
    rng = np.random.default_rng([int(seed), 0])
    shape = (params.sensor, params.sensor)
    c_on = np.maximum(params.c_on + params.sigma_c * rng.standard_normal(shape), 0.01)
    c_off = np.maximum(params.c_off + params.sigma_c * rng.standard_normal(shape), 0.01)
    return c_on, c_off


# --- kernels ----------------------------------------------------------------------------------------
@njit(cache=True)
def render_log(out, image, ox, oy, scale, eps, r0, r1, c0, c1):
    """out[Y, X] = ln(I + eps), I = image sampled bilinearly at the pixel centre (0 outside). Rows r0..r1
    and columns c0..c1 of the image hold its non-zero pixels: outside them I = 0."""
    H, W = out.shape
    h, w = image.shape
    inv = 1.0 / scale
    dark = np.log(eps)
    for Y in range(H):
        v = (Y + 0.5 - oy) * inv - 0.5
        v0 = int(np.floor(v))
        fv = v - v0
        if v0 < r0 - 1 or v0 > r1:
            for X in range(W):
                out[Y, X] = dark
            continue
        for X in range(W):
            u = (X + 0.5 - ox) * inv - 0.5
            u0 = int(np.floor(u))
            if u0 < c0 - 1 or u0 > c1:
                out[Y, X] = dark
                continue
            fu = u - u0
            val = 0.0
            if 0 <= v0 < h:
                if 0 <= u0 < w:
                    val += (1.0 - fv) * (1.0 - fu) * image[v0, u0]
                if 0 <= u0 + 1 < w:
                    val += (1.0 - fv) * fu * image[v0, u0 + 1]
            if 0 <= v0 + 1 < h:
                if 0 <= u0 < w:
                    val += fv * (1.0 - fu) * image[v0 + 1, u0]
                if 0 <= u0 + 1 < w:
                    val += fv * fu * image[v0 + 1, u0 + 1]
            out[Y, X] = np.log(val + eps)


@njit(cache=True)
def nonzero_box(image):
    """(r0, r1, c0, c1): first and last row and column of ``image`` holding a non-zero pixel ((0, -1, 0, -1)
    for an empty image)."""
    h, w = image.shape
    r0, r1, c0, c1 = h, -1, w, -1
    for r in range(h):
        for c in range(w):
            if image[r, c] != 0.0:
                r0, r1, c0, c1 = min(r0, r), max(r1, r), min(c0, c), max(c1, c)
    if r1 < 0:
        return 0, -1, 0, -1
    return r0, r1, c0, c1


@njit(cache=True)
def saccade_events(out_t, out_x, out_y, out_p, log_ref, log_a, log_b, last_t, image, c_on, c_off,
                   path_t, path_x, path_y, scale, eps, refractory_us):
    """Events of one digit moving along the path, unsorted across pixels within a step.

    out_* (capacity,) t int64 µs, x, y int16, p int8; scratch log_ref, log_a, log_b, last_t (H, W)
    float64; image (h, w) float64 in [0, 1]; c_on, c_off (H, W). Returns the number of events written,
    or -1 when they do not fit in the capacity (the caller retries with more room)."""
    H, W = log_ref.shape
    cap = out_t.shape[0]
    n = 0
    r0, r1, c0, c1 = nonzero_box(image)
    render_log(log_ref, image, path_x[0], path_y[0], scale, eps, r0, r1, c0, c1)
    for Y in range(H):
        for X in range(W):
            log_a[Y, X] = log_ref[Y, X]
            last_t[Y, X] = -1e300
    prev, cur = log_a, log_b
    for k in range(1, path_t.shape[0]):
        t0, t1 = path_t[k - 1], path_t[k]
        render_log(cur, image, path_x[k], path_y[k], scale, eps, r0, r1, c0, c1)
        for Y in range(H):
            for X in range(W):
                l0, l1 = prev[Y, X], cur[Y, X]
                ref, last = log_ref[Y, X], last_t[Y, X]
                dl = l1 - l0
                while True:
                    if l1 - ref >= c_on[Y, X]:
                        level, pol = ref + c_on[Y, X], 1
                    elif ref - l1 >= c_off[Y, X]:
                        level, pol = ref - c_off[Y, X], 0
                    else:
                        break
                    frac = (level - l0) / dl if dl != 0.0 else 0.0
                    frac = min(max(frac, 0.0), 1.0)
                    te = t0 + frac * (t1 - t0)
                    if te < last + refractory_us:
                        te = last + refractory_us
                    if te > t1:
                        break  # still refractory: the crossing fires in a later step
                    if n >= cap:
                        return -1
                    out_t[n] = int(np.floor(te))
                    out_x[n] = X
                    out_y[n] = Y
                    out_p[n] = pol
                    n += 1
                    ref = level
                    last = te
                log_ref[Y, X] = ref
                last_t[Y, X] = last
        prev, cur = cur, prev
    return n


@njit(parallel=True, cache=True)
def saccade_events_batch(out_t, out_x, out_y, out_p, counts, log_ref, log_a, log_b, last_t, images, c_on, c_off,
                         path_t, path_x, path_y, scale, eps, refractory_us):
    """``saccade_events`` for each image i into row i of the outputs and scratch; counts[i] = its count."""
    for i in prange(images.shape[0]):
        counts[i] = saccade_events(out_t[i], out_x[i], out_y[i], out_p[i], log_ref[i], log_a[i], log_b[i],
                                   last_t[i], images[i], c_on, c_off, path_t, path_x, path_y, scale, eps,
                                   refractory_us)


# --- library ---------------------------------------------------------------------------------------
def _as_images(images):
    from . import DataError
    a = np.asarray(images)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1] < 1 or a.shape[2] < 1:
        raise DataError(f"images: expected (N, h, w) or (N, 1, h, w) grey images, got shape {np.shape(images)}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a, np.float64) / 255.0
    if a.dtype.kind not in "fiu":
        raise DataError(f"images: expected uint8 or floats in [0, 1], got {a.dtype}")
    a = np.ascontiguousarray(a, np.float64)
    if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
        raise DataError("images: float pixels must be finite and in [0, 1] (or pass uint8 0..255)")
    return a


def _noise(params, seed, sample_id):
    rng = np.random.default_rng([int(seed), 1, int(sample_id)])
    S = params.sensor
    n = rng.poisson(params.noise_hz * S * S * params.duration_us * 1e-6)
    t = np.floor(rng.uniform(0.0, params.duration_us, n)).astype(np.int64)
    return make_events(t, rng.integers(0, S, n), rng.integers(0, S, n), rng.integers(0, 2, n))


def simulate_saccades(images, params=None, *, seed=SEED, ids=None, chunk=64, capacity=1 << 14):
    """Event recordings of ``images`` (N, h, w) or (N, 1, h, w) (uint8, or floats in [0, 1]) under the
    three-saccade motion: a list of N structured arrays (t µs, x, y, p), each sorted by time.

    ``seed`` fixes the sensor (threshold mismatch) and, with ``ids`` (default 0..N-1), each sample's
    background noise: the same (seed, id, image) gives the same events however the set is split."""
    from . import DataError
    params = (params or SaccadeParams()).check()
    imgs = _as_images(images)
    ids = np.arange(len(imgs)) if ids is None else np.asarray(ids)
    if ids.shape != (len(imgs),):
        raise DataError(f"ids: expected {len(imgs)} sample ids, got shape {ids.shape}")
    c_on, c_off = sensor_thresholds(params, seed)
    path_t, path_x, path_y = saccade_path(params)
    S = params.sensor
    out = []
    for start in range(0, len(imgs), chunk):
        part = imgs[start:start + chunk]
        m = len(part)
        cap = capacity
        t = np.empty((m, cap), np.int64)
        x, y = np.empty((m, cap), np.int16), np.empty((m, cap), np.int16)
        p = np.empty((m, cap), np.int8)
        counts = np.empty(m, np.int64)
        scratch = [np.empty((m, S, S)) for _ in range(4)]
        saccade_events_batch(t, x, y, p, counts, *scratch, part, c_on, c_off, path_t, path_x, path_y,
                             params.scale, params.eps, params.refractory_us)
        for j in range(m):
            if counts[j] >= 0:
                ev = make_events(t[j, :counts[j]], x[j, :counts[j]], y[j, :counts[j]], p[j, :counts[j]])
            else:
                ev = _one_with_room(part[j], params, c_on, c_off, (path_t, path_x, path_y), cap)
            if params.noise_hz > 0:
                ev = np.concatenate([ev, _noise(params, seed, ids[start + j])])
            out.append(ev[np.argsort(ev["t"], kind="stable")])
    return out


def _one_with_room(image, params, c_on, c_off, path, cap):
    """One sample whose events overflowed ``cap``: rerun with 4x the room until they fit."""
    S = params.sensor
    while True:
        cap *= 4
        t, p = np.empty(cap, np.int64), np.empty(cap, np.int8)
        x, y = np.empty(cap, np.int16), np.empty(cap, np.int16)
        scratch = [np.empty((S, S)) for _ in range(4)]
        n = saccade_events(t, x, y, p, *scratch, image, c_on, c_off, *path, params.scale, params.eps,
                           params.refractory_us)
        if n >= 0:
            return make_events(t[:n], x[:n], y[:n], p[:n])


def event_stats(ev, saccade_us=SaccadeParams.saccade_us):
    """Summary of one recording: events, ON fraction, duration (ms, first to last event), extent (min and
    max of x and y over all events, and their 1st and 99th percentiles, which ignore stray noise events),
    active pixels, and events in each saccade's time window [k D, (k + 1) D) (the last one open-ended)."""
    t, x, y, p = ev["t"], ev["x"].astype(np.int64), ev["y"].astype(np.int64), ev["p"]
    if len(ev) == 0:
        return {"events": 0}
    per_saccade = np.bincount(np.minimum(t // int(saccade_us), 2).astype(np.int64), minlength=3)
    return {"events": len(ev), "on_fraction": float((p > 0).mean()), "duration_ms": float(t[-1] - t[0]) / 1000.0,
            "x_min": int(x.min()), "x_max": int(x.max()), "y_min": int(y.min()), "y_max": int(y.max()),
            "x_p01": float(np.percentile(x, 1)), "x_p99": float(np.percentile(x, 99)),
            "y_p01": float(np.percentile(y, 1)), "y_p99": float(np.percentile(y, 99)),
            "active_pixels": int(len(np.unique(y * 256 + x))),
            "saccade_1": int(per_saccade[0]), "saccade_2": int(per_saccade[1]), "saccade_3": int(per_saccade[2])}


# --- the built-in set -------------------------------------------------------------------------------
def cache_name(T=DEFAULT_T, by="time", size=FIELD):
    """The cache's dataset name: 'nmnist-builtin' for the defaults, else with -T<T>, -<size>px, -count."""
    if (T, by, size) == (DEFAULT_T, "time", FIELD):
        return NAME
    return f"{NAME}-T{T}" + (f"-{size}px" if size != FIELD else "") + ("-count" if by == "count" else "")


def parse_name(name):
    """The settings {T, by, size} named by a cache name of this set ('nmnist-builtin-T20-48px'), or None."""
    if name != NAME and not name.startswith(NAME + "-T"):
        return None
    out = {"T": DEFAULT_T, "by": "time", "size": FIELD}
    parts = name[len(NAME) + 1:].split("-") if name != NAME else []
    for i, part in enumerate(parts):
        if i == 0 and part[1:].isdigit() and int(part[1:]) >= 1:
            out["T"] = int(part[1:])
        elif i > 0 and part.endswith("px") and part[:-2].isdigit():
            out["size"] = int(part[:-2])
        elif i > 0 and part == "count":
            out["by"] = "count"
        else:
            return None
    return out if cache_name(**out) == name else None


def _bin_name(split, label, index):
    return os.path.join("Train" if split == "train" else "Test", str(int(label)), f"{int(index):05d}.bin")


def build(cache_dir=None, *, T=DEFAULT_T, by="time", size=FIELD, seed=SEED, bin_root=None, limit=0,
          params=None, force=False, progress=None):
    """Simulate the built-in digits (``mnist-builtin``: 8,000 train / 2,000 test, in its stored order) and
    write the event cache ``<cache_dir>/<cache_name(T, by, size)>.h5``: frames binned by
    ``events.to_frames`` and written by ``cache.write_h5_streamed``, as ``stopnp data convert nmnist`` does.

    ``bin_root``: also write each recording as an N-MNIST .bin file, <bin_root>/{Train,Test}/<digit>/
    <index>.bin (index = the digit's position in its built-in split). ``limit``: only the first ``limit``
    digits of each split. A finished cache made with the same settings is reused; one made with other
    settings is refused unless ``force``. ``progress(split, done, total)`` is called at the start of each
    split and as samples finish."""
    from . import DataError, load
    from .cache import write_h5_streamed
    from .events import to_frames, write_nmnist
    from .paths import cache_dir as default_cache_dir
    if int(T) < 1:
        raise DataError(f"T = {T}: frames need T >= 1 time bins")
    if by not in ("time", "count"):
        raise DataError(f"binning {by!r}: valid: time, count")
    if int(limit) < 0:
        raise DataError(f"limit = {limit}: must be >= 0 (0 = all digits)")
    params = dataclasses.replace(params or SaccadeParams(), sensor=int(size)).check()
    if bin_root is not None and params.sensor != FIELD:
        raise DataError(f"{bin_root}: N-MNIST .bin recordings are {FIELD}x{FIELD}; write them with size {FIELD}")
    name = cache_name(int(T), by, params.sensor)
    out = os.path.join(cache_dir or default_cache_dir(), name + ".h5")
    digits = {s: load("mnist-builtin", s) for s in ("train", "test")}
    counts = {s: min(int(limit), len(d.y)) if limit else len(d.y) for s, d in digits.items()}
    S = params.sensor
    attrs = {"name": name, "n_classes": 10, "static": False, "T": int(T), "binning": by, "denoise_dt": 0,
             "size": [S, S],
             "source": "simulated: three saccades over the built-in digits (mnist-builtin) seen by an emulated "
                       "DVS (stopnp.data.saccades)",
             "source_sha256": digits["train"].attrs.get("source_sha256", ""),
             "simulation": json.dumps(dataclasses.asdict(params)), "simulation_seed": int(seed),
             "shapes": json.dumps({s: [n, int(T), 2, S, S] for s, n in counts.items()})}
    if os.path.isfile(out) and not force:
        if _same_build(out, attrs):
            if bin_root is None:
                return out
        else:
            raise DataError(f"{out}: exists, made with other settings (seed, limit or simulation parameters); "
                            f"pass force=True (CLI: --force) to replace it")
    offsets = {"train": 0, "test": len(digits["train"].y)}  # sample ids: the splits' noise streams differ

    def frames(split, n):
        src = digits[split]
        if progress:
            progress(split, 0, n)
        for start in range(0, n, 256):
            stop = min(start + 256, n)
            evs = simulate_saccades(src.x[start:stop], params, seed=seed,
                                    ids=offsets[split] + np.arange(start, stop))
            for i, ev in zip(range(start, stop), evs):
                if bin_root is not None:
                    write_nmnist(os.path.join(bin_root, _bin_name(split, src.y[i], i)), ev)
                yield to_frames(ev, T, (S, S), by=by, source=f"{NAME} {split} digit {i}"), int(src.y[i])
            if progress:
                progress(split, stop, n)

    splits = {s: (n, (int(T), 2, S, S), np.uint16, frames(s, n)) for s, n in counts.items()}
    return write_h5_streamed(out, splits, attrs)


def get(name=NAME, cache_dir=None, *, bin_root=None, T=None, by=None, size=None, **options):
    """``build`` for a cache name of this set ('nmnist-builtin', 'nmnist-builtin-T20-48px', ...): the name
    gives T, binning and size; explicit ``T``, ``by``, ``size`` must agree with it (or name the plain set)."""
    from . import DataError
    named = parse_name(name)
    if named is None:
        raise DataError(f"{name!r}: not a name of the simulated set; use {NAME} (with --T, --by, --size) or "
                        f"{cache_name(20, 'time', 48)}-style names")
    given = {k: v for k, v in (("T", T), ("by", by), ("size", size)) if v is not None}
    if name != NAME:
        clash = {k: v for k, v in given.items() if named[k] != v}
        if clash:
            raise DataError(f"{name}: the name sets T = {named['T']}, by = {named['by']}, size = {named['size']}; "
                            f"{', '.join(f'{k} = {v}' for k, v in clash.items())} disagrees")
    return build(cache_dir, bin_root=bin_root, **{**named, **given}, **options)


def _same_build(path, attrs):
    """Whether the cache at ``path`` was made with the settings in ``attrs``."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            have = {k: f.attrs.get(k) for k in ("simulation", "simulation_seed", "shapes", "binning")}
    except OSError:
        return False
    return all(have[k] is not None and str(have[k]) == str(attrs[k]) for k in have)
