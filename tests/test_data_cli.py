"""``stopnp data`` hook (stopnp/cli/data.py) on a parser built here, as the top-level CLI builds it."""
import argparse
import json

import pytest

from stopnp.data import DataError
from stopnp.cli import data as cli
from test_data_formats import write_mnist_folder


def _parser():
    p = argparse.ArgumentParser(prog="stopnp")
    sub = p.add_subparsers(dest="command")
    cli.register(sub)
    return p


def test_help_texts(capsys):
    p = _parser()
    for argv, words in ((["data", "--help"], ["get", "convert", "info", "mnist-builtin"]),
                        (["data", "get", "--help"], ["--root", "--url", "resumes", "nmnist"]),
                        (["data", "convert", "--help"], ["--T", "--by", "--denoise", "--size", "N-MNIST"]),
                        (["data", "info", "--help"], ["checksums"])):
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert all(w in text for w in words), (argv, text)


def test_main_convert_info_and_bare(tmp_path, capsys):
    p = _parser()
    raw = tmp_path / "raw"
    raw.mkdir()
    write_mnist_folder(str(raw))
    args = p.parse_args(["data", "convert", "mnist", str(raw), "--cache-dir", str(tmp_path / "c")])
    assert args.func(args) == 0
    path = capsys.readouterr().out.split("wrote ")[1].strip()
    args = p.parse_args(["data", "info", path])
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"]["n"] == 7 and out["test"]["x_shape"] == [3, 1, 28, 28]
    args = p.parse_args(["data"])
    assert cli.main(args) == 0 and "SUBCOMMAND" in capsys.readouterr().out


def test_main_errors_are_data_errors(tmp_path, monkeypatch):
    from stopnp.data import download
    monkeypatch.setattr(download, "RETRY_WAIT", 0.0)
    p = _parser()
    args = p.parse_args(["data", "get", "nmnist"])
    with pytest.raises(DataError, match="garrickorchard"):
        cli.main(args)
    args = p.parse_args(["data", "get", "mnist", "--root", str(tmp_path / "r"), "--url", "http://127.0.0.1:9/",
                         "--cache-dir", str(tmp_path / "c")])
    with pytest.raises(DataError, match="Offline"):
        cli.main(args)
    assert not (tmp_path / "c").exists()
