"""Downloads (stopnp/data/download.py) against a local http.server serving archives made here:
resume with HTTP Range, checksum verification, offline and manual-dataset messages."""
import functools
import hashlib
import http.server
import json
import threading

import numpy as np
import pytest

from stopnp import data
from stopnp.data import DataError, cifar, download
from test_data_formats import cifar_records, tar_gz, write_idx


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus 'Range: bytes=N-' (206), as the official servers do; records requests."""
    ranges = []

    def log_message(self, *a):
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        if not rng:
            return super().send_head()
        self.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-"))
        path = self.translate_path(self.path)
        with open(path, "rb") as f:
            body = f.read()[start:]
        self.send_response(206)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        import io
        return io.BytesIO(body)


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch):
    monkeypatch.setattr(download, "RETRY_WAIT", 0.0)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    _RangeHandler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(root)))
    th = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _serve_mnist(www, rng):
    files = {}
    for split, n in (("train", 6), ("t10k", 4)):
        for kind, arr, dims in (("images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 3),
                                ("labels-idx1-ubyte", rng.integers(0, 10, n), 1)):
            name = f"{split}-{kind}.gz"
            write_idx(www / name, arr, dims)
            files[name] = hashlib.md5((www / name).read_bytes()).hexdigest()
    return files


def test_get_mnist_from_local_server_then_resume(tmp_path, server, monkeypatch):
    www, url = server
    files = _serve_mnist(www, np.random.default_rng(4))
    monkeypatch.setitem(download.SOURCES, "mnist", dict(download.SOURCES["mnist"], files=files))
    raw = tmp_path / "raw"
    out = download.get("mnist", str(raw), base_url=url, cache_dir=str(tmp_path / "cache"))
    src = data.load(out, "test")
    assert src.x.shape == (4, 1, 28, 28) and set(json.loads(src.attrs["source_sha256"])) == set(files)
    assert not list(raw.glob("*.part"))
    # resume: a partial file is completed with a Range request, then verified
    name = "train-images-idx3-ubyte.gz"
    full = (www / name).read_bytes()
    (raw / name).unlink()
    (raw / (name + ".part")).write_bytes(full[:100])
    download.fetch(url + name, str(raw / name), files[name])
    assert (raw / name).read_bytes() == full and _RangeHandler.ranges == ["bytes=100-"]
    # a complete, verified file is not fetched again
    (www / name).unlink()
    assert download.fetch(url + name, str(raw / name), files[name]) == str(raw / name)


def test_get_cifar10_archive_from_local_server(tmp_path, server, monkeypatch):
    www, url = server
    rng = np.random.default_rng(6)
    members = {f"cifar-10-batches-bin/{f}": cifar_records(rng, 3, "cifar10").tobytes()
               for s in ("train", "test") for f in cifar.FILES["cifar10"][s]}
    tar_gz(www / "cifar-10-binary.tar.gz", members)
    digest = hashlib.md5((www / "cifar-10-binary.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setitem(download.SOURCES, "cifar10",
                        dict(download.SOURCES["cifar10"], files={"cifar-10-binary.tar.gz": digest}))
    out = download.get("cifar10", str(tmp_path / "raw"), base_url=url, cache_dir=str(tmp_path / "cache"))
    tr = data.load(out, "train")
    assert tr.x.shape == (15, 3, 32, 32) and tr.n_classes == 10 and tr.static


def test_checksum_offline_and_manual_messages(tmp_path, server):
    www, url = server
    (www / "f.bin").write_bytes(b"abc")
    with pytest.raises(DataError, match="checksum mismatch"):
        download.fetch(url + "f.bin", str(tmp_path / "f.bin"), "0" * 32)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    sha = hashlib.sha256(b"abc").hexdigest()
    assert open(download.fetch(url + "f.bin", str(tmp_path / "f.bin"), sha), "rb").read() == b"abc"
    with pytest.raises(DataError, match="HTTP 404"):
        download.fetch(url + "missing.bin", str(tmp_path / "m.bin"))
    with pytest.raises(DataError, match=r"Offline\? Download cifar-10-binary.tar.gz from https://www.cs.toronto"
                                        r".* by hand into .*/c/"):
        download.get("cifar10", str(tmp_path / "c"), base_url="http://127.0.0.1:9/")
    for name, layout in (("nmnist", "Train/0"), ("dvsgesture", "trials_to_train.txt"), ("cifar10-dvs", "<class")):
        with pytest.raises(DataError, match=f"cannot be downloaded automatically.*{layout}"):
            download.get(name)
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        download.get("imagenet")
