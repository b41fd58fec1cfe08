"""``stopnp data get NAME``: download (resumable via HTTP Range into ``<file>.part``; md5 or sha256
verified before the rename), then convert once to an HDF5 cache (``convert``).

MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 come from their official addresses; the event datasets
need a registration or a manual download, so ``get`` prints where to obtain them and the layout that
``stopnp data convert`` expects. Offline, the error message gives the manual steps.

Originals go to <data folder>/raw/<name>/ and caches to <data folder>/cache/ (``paths.py``: --data-dir,
else $STOPNP_DATA, else the user cache folder); ``root`` and ``cache_dir`` override each one.
"""
import hashlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import numpy as np

from . import DataError, paths

SOURCES = {
    "mnist": {"base": "https://ossci-datasets.s3.amazonaws.com/mnist/", "official": "http://yann.lecun.com/exdb/mnist/",
              "files": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
              "kind": "idx", "n_classes": 10},
    "fashion-mnist": {"base": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "files": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
                      "kind": "idx", "n_classes": 10},
    "cifar10": {"base": "https://www.cs.toronto.edu/~kriz/",
                "files": {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
                "kind": "cifar", "n_classes": 10},
    "cifar100": {"base": "https://www.cs.toronto.edu/~kriz/",
                 "files": {"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"},
                 "kind": "cifar", "n_classes": 100},
}

MANUAL = {
    "nmnist": ("N-MNIST (Orchard et al. 2015): download Train.zip and Test.zip from "
               "https://www.garrickorchard.com/datasets/n-mnist and unzip into a folder ROOT so that "
               "ROOT/Train/0/*.bin ... ROOT/Test/9/*.bin exist; then run "
               "`stopnp data convert nmnist ROOT --T 8`. Offline, `stopnp data get nmnist-builtin` "
               "simulates N-MNIST-like recordings from the built-in digits."),
    "dvsgesture": ("DVS128 Gesture (Amir et al. 2017): download DvsGesture.tar.gz from "
                   "https://research.ibm.com/interactive/dvsgesture/ and extract into a folder ROOT "
                   "(user*_*.aedat with their *_labels.csv, trials_to_train.txt, trials_to_test.txt); then "
                   "`stopnp data convert dvsgesture ROOT --T 20`. tonic's per-sample .npy "
                   "layout (<split>/<class>/*.npy) is accepted too."),
    "cifar10-dvs": ("CIFAR10-DVS (Li et al. 2017): download the ten class archives from "
                    "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 and extract into "
                    "ROOT/<class name>/*.aedat (AEDAT 2.0); then "
                    "`stopnp data convert cifar10-dvs ROOT --T 10 --size 48`."),
}


RETRY_WAIT = 1.0  # seconds before the first retry (then 2x, 3x ...)


def digest(path, algo):
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5(path):
    return digest(path, "md5")


def _matches(path, expected):
    """``expected``: an md5 (32 hex digits, as the official pages publish) or a sha256 (64)."""
    return expected is None or digest(path, "sha256" if len(expected) == 64 else "md5") == expected.lower()


def fetch(url, dest, expected=None, retries=3, timeout=30):
    """Download ``url`` to ``dest`` via ``dest.part``, resuming with an HTTP Range request; verify the
    md5 or sha256 ``expected`` before the final rename."""
    if os.path.isfile(dest) and _matches(dest, expected):
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    for attempt in range(retries):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                # 206: the server resumed; 200: it ignored Range and sends everything again
                mode = "ab" if have and r.status == 206 else "wb"
                with open(part, mode) as f:
                    shutil.copyfileobj(r, f, 1 << 20)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the .part is complete
                break
            if e.code in (403, 404) or attempt == retries - 1:
                raise DataError(f"{url}: HTTP {e.code} {e.reason}; the partial file {part} is kept") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            if attempt == retries - 1:
                raise DataError(f"{url}: download failed ({getattr(e, 'reason', e)}); the partial file {part} is "
                                f"kept and the next `stopnp data get` resumes it") from None
        time.sleep(RETRY_WAIT * (1 + attempt))
    if not _matches(part, expected):
        os.remove(part)
        raise DataError(f"{url}: checksum mismatch ({expected} expected); the download was removed, "
                        f"run the command again")
    os.replace(part, dest)
    return dest


def get(name, root=None, base_url=None, cache_dir=None, data_dir=None, **simulate):
    """Download and convert ``name``; returns the cache path. Event datasets: raises with instructions.
    'nmnist-builtin' (and its named variants, e.g. 'nmnist-builtin-T20') is simulated from the built-in
    digits instead (``saccades.build``; ``root``: also write its N-MNIST .bin files there; ``simulate``:
    T, by, size, seed, limit, force, progress). Defaults: ``root`` <data folder>/raw/<name>, ``cache_dir``
    <data folder>/cache."""
    cache_dir = cache_dir or paths.cache_dir(data_dir)
    if name == "nmnist-builtin" or name.startswith("nmnist-builtin-"):
        if base_url:
            raise DataError(f"--url {base_url}: {name} is simulated here, nothing is downloaded; drop --url")
        from .saccades import get as simulated
        return simulated(name, cache_dir=cache_dir, bin_root=root, **simulate)
    if simulate:
        raise DataError(f"{', '.join(sorted(simulate))}: options of the simulated set nmnist-builtin only, "
                        f"not of {name}")
    if name in MANUAL:
        raise DataError(f"{name} cannot be downloaded automatically. {MANUAL[name]} ROOT is any folder, "
                        f"e.g. {paths.raw_dir(name, data_dir)}")
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(list(SOURCES) + list(MANUAL))}, "
                        f"nmnist-builtin")
    src = SOURCES[name]
    root = root or paths.raw_dir(name, data_dir)
    base = base_url or src["base"]
    try:
        for fname, digest in src["files"].items():
            fetch(base.rstrip("/") + "/" + fname, os.path.join(root, fname), digest)
    except DataError as e:
        manual = ", ".join(src["files"])
        raise DataError(f"{e}. Offline? Download {manual} from {src.get('official', src['base'])} by hand "
                        f"into {root}/ and run `stopnp data get {name}` again.") from None
    return convert(name, root, cache_dir=cache_dir)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_checksums(root, exts, names=()):
    """{relative path: sha256} of the original files under ``root`` (a folder or one archive), those
    whose name ends with one of ``exts`` or is one of ``names``: the cache's provenance."""
    if os.path.isfile(root):
        return {os.path.basename(root): sha256(root)}
    out = {}
    for folder, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(exts) or f in names:
                p = os.path.join(folder, f)
                out[os.path.relpath(p, root)] = sha256(p)
    return dict(sorted(out.items()))


def convert(name, root, cache_dir=None, T=None, size=None, by="time", denoise_dt=0, data_dir=None):
    """Original files under ``root`` -> <cache_dir>/<name>[-T<T>].h5 (idempotent, atomic); ``cache_dir``
    defaults to <data folder>/cache."""
    from . import cifar, events, idx
    from .cache import write_h5_atomic
    cache_dir = cache_dir or paths.cache_dir(data_dir)
    kind = SOURCES.get(name, {}).get("kind", name)
    if kind not in ("idx", "cifar", "nmnist", "dvsgesture", "cifar10-dvs"):
        raise DataError(f"cannot convert {name!r}; known: {', '.join(list(SOURCES) + list(MANUAL))}")
    if not os.path.exists(root):
        layout = MANUAL.get(name) or (f"put {', '.join(SOURCES[name]['files'])} there (or run `stopnp data get "
                                      f"{name}`)")
        raise DataError(f"{root}: not found. Expected layout: {layout}")
    out = os.path.join(cache_dir, f"{name}.h5")
    if kind in ("nmnist", "dvsgesture", "cifar10-dvs") and (T or size or by != "time" or denoise_dt):
        # one file per representation: every binning parameter that changes the frames is in the name
        out = os.path.join(cache_dir, f"{name}-T{T or 0}" + (f"-{size}px" if size else "")
                           + ("-count" if by == "count" else "") + (f"-dn{denoise_dt}" if denoise_dt else "")
                           + ".h5")
    if os.path.isfile(out):
        return out  # idempotent: a finished cache is never half-written (atomic rename)
    if by not in ("time", "count"):
        raise DataError(f"binning {by!r}: valid: time, count")
    if kind == "idx":
        splits = {s: idx.read_mnist_split(root, s) for s in ("train", "test")}
        attrs = {"n_classes": 10, "static": True}
    elif kind == "cifar":
        archives = [os.path.join(root, a) for a in (next(iter(SOURCES[name]["files"])),
                                                    name.replace("cifar", "cifar-") + "-python.tar.gz")]
        path = next((a for a in archives if os.path.isfile(a)), root)
        splits = {s: cifar.read_any(path, name, s) for s in ("train", "test")}
        attrs = {"n_classes": SOURCES[name]["n_classes"], "static": True}
    elif kind in ("nmnist", "dvsgesture", "cifar10-dvs"):
        from .cache import write_h5_streamed
        T = T or {"nmnist": 8, "dvsgesture": 20, "cifar10-dvs": 10}[kind]
        sensor = {"nmnist": (34, 34), "dvsgesture": (128, 128), "cifar10-dvs": (128, 128)}[kind]
        out_hw = (size, size) if size else sensor
        lister = {"nmnist": lambda s: events.list_nmnist(root, s),
                  "dvsgesture": lambda s: events.list_dvsgesture(root, s),
                  "cifar10-dvs": lambda s: events.list_cifar10_dvs(root, s)}[kind]
        splits = {}
        for s in ("train", "test"):
            items = lister(s)
            if not items:
                raise DataError(f"{root}: no {s} recordings found. Expected layout: {MANUAL[kind]}")
            frames = ((events.to_frames(load(), T, sensor, out_hw, by=by, denoise_dt=denoise_dt,
                                        source=load.source), c) for load, c in items)
            splits[s] = (len(items), (T, 2, *out_hw), np.uint16, frames)
        attrs = {"n_classes": {"nmnist": 10, "dvsgesture": 11, "cifar10-dvs": 10}[kind], "static": False, "T": T,
                 "binning": by, "denoise_dt": denoise_dt, "size": list(out_hw), "name": name,
                 "source_root": os.path.abspath(root),
                 "source_sha256": json.dumps(source_checksums(root, (".bin", ".aedat", ".csv", ".txt", ".npy"))),
                 "shapes": json.dumps({s: [n, *shape] for s, (n, shape, _, _) in splits.items()})}
        made = _missing_dirs(cache_dir)
        try:
            return write_h5_streamed(out, splits, attrs)
        except BaseException:  # a bad recording, read while writing: leave no folder behind either
            for d in made:
                if os.path.isdir(d) and not os.listdir(d):
                    os.rmdir(d)
            raise
    attrs.update({"name": name, "source_root": os.path.abspath(root),
                  "source_sha256": json.dumps(source_checksums(
                      root, (".gz", "ubyte", ".bin"), names=("data_batch_1", "data_batch_2", "data_batch_3",
                                                               "data_batch_4", "data_batch_5", "test_batch",
                                                               "train", "test"))),
                  "shapes": json.dumps({s: list(x.shape) for s, (x, _) in splits.items()})})
    return write_h5_atomic(out, splits, attrs)


def _missing_dirs(folder):
    """The folders that creating ``folder`` would make, deepest first."""
    out = []
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        out.append(folder)
        folder = os.path.dirname(folder)
    return out
