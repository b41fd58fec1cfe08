"""The data folder (stopnp/data/paths.py): explicit argument / --data-dir, then STOPNP_DATA, then the user
cache folder; names resolve to <folder>/cache/<name>.h5; the built-in set is package data read in place."""
import os
import sys

import pytest

from stopnp import data
from stopnp.cli import main
from stopnp.data import DataError, download, paths
from test_data_formats import write_mnist_folder


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("STOPNP_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if sys.platform.startswith("linux"):
        assert paths.data_dir() == str(tmp_path / "home" / ".cache" / "stopnp")
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG rule: only an absolute path counts
        assert paths.data_dir() == str(tmp_path / "home" / ".cache" / "stopnp")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert paths.data_dir() == str(tmp_path / "xdg" / "stopnp")
    monkeypatch.setenv("STOPNP_DATA", str(tmp_path / "env"))
    assert paths.data_dir() == str(tmp_path / "env") == data.data_dir()
    assert paths.data_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")
    assert paths.cache_dir() == str(tmp_path / "env" / "cache")
    assert paths.raw_dir("mnist") == str(tmp_path / "env" / "raw" / "mnist")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STOPNP_DATA", "rel")
    assert paths.data_dir() == str(tmp_path / "rel")  # absolute, so a later chdir changes nothing


def test_builtin_is_package_data_read_in_place(tmp_path, monkeypatch):
    import stopnp
    monkeypatch.setenv("STOPNP_DATA", str(tmp_path / "d"))
    pkg = os.path.dirname(os.path.abspath(stopnp.__file__))
    assert paths.builtin_path() == os.path.join(pkg, "resources", "mnist_builtin.h5")
    assert len(data.load("mnist-builtin", "test").y) == 2000
    assert not (tmp_path / "d").exists()  # nothing copied into the data folder


def test_convert_and_load_by_name_in_the_data_folder(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "orig"
    raw.mkdir()
    write_mnist_folder(str(raw))
    monkeypatch.setenv("STOPNP_DATA", str(tmp_path / "env"))
    out = download.convert("mnist", str(raw))
    assert out == str(tmp_path / "env" / "cache" / "mnist.h5")
    assert len(data.load("mnist", "train").y) == 7 and data.info("mnist")["path"] == out
    # --data-dir after the command, and before it, beat STOPNP_DATA
    for argv in (["data", "convert", "mnist", str(raw), "--data-dir", str(tmp_path / "a")],
                 ["--data-dir", str(tmp_path / "b"), "data", "convert", "mnist", str(raw)]):
        assert main(argv) == 0
    assert (tmp_path / "a" / "cache" / "mnist.h5").is_file() and (tmp_path / "b" / "cache" / "mnist.h5").is_file()
    capsys.readouterr()
    assert main(["data", "info", "mnist", "--data-dir", str(tmp_path / "a")]) == 0
    assert str(tmp_path / "a" / "cache" / "mnist.h5") in capsys.readouterr().out
    with pytest.raises(DataError, match=f"no cache {tmp_path}/c/cache/mnist.h5 in the data folder {tmp_path}/c"):
        data.load("mnist", "train", data_dir=str(tmp_path / "c"))


def test_train_reads_names_from_data_dir(tmp_path, monkeypatch, capsys):
    """`stopnp train --data-dir DIR` looks for data.name in DIR/cache and fails in one line before any run
    folder is made."""
    monkeypatch.delenv("STOPNP_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "fashion-lenet5", "--data-dir", str(tmp_path / "d"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no cache {tmp_path}/d/cache/fashion-mnist.h5" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "d").exists()
