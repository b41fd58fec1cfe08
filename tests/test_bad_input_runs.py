"""Bad-input corpus of the run files: checkpoints, history files, metrics logs and configs, each run through
every command that reads it (eval, train --resume, inspect, plot, export c; train for configs).

Every case must give ONE line on stderr naming the file (or field) with the fix, exit 2, and change nothing:
the run folder is byte-for-byte the same afterwards and no output is created (tests/badinput.py: ``refused``).
The corpus is a table: CHECKPOINTS / HISTORIES / METRICS map a name to a function that damages a copy of a
real run (trained once per module), CONFIGS a name to a bad config; each row is tried with each command that
reads that file. Controls: the undamaged run passes every command. The data files (caches, IDX, CIFAR,
events) have their own corpus (test_bad_input_data.py).
"""
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from badinput import refused
from stopnp.run import checkpoint
from stopnp import cli, config as C
from stopnp.engine import memory
from stopnp.run.train import train

TINY = ["model.name=mlp", "model.hidden=[16]", "data.limit_train=64", "data.limit_test=32", "data.batch_size=32",
        "data.test_batch_size=32", "data.T=2", "run.epochs=1", "run.quiet=true"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    train(C.resolve({}, TINY + [f'run.out_dir="{root / "run"}"']))
    return root / "run"


def _poke(path, dataset, data):
    """Overwrite the stored bytes of ``dataset`` in place (a bad disk, a stray write)."""
    with h5py.File(path, "r") as f:
        off = f[dataset].id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(off)
        fh.write(data)


def _edit_signed(path, fn):
    """Change the checkpoint and recompute its digest: a whole file, as a buggy or foreign writer leaves it
    (the checks behind the checksum must still refuse it)."""
    with h5py.File(path, "a") as f:
        fn(f)
        f.attrs["sha256"] = checkpoint.digest(f)


def _replace(f, name, value):
    del f[name]
    f[name] = value


def _cut(frac):
    def damage(p):
        data = p.read_bytes()
        p.write_bytes(data[:max(1, int(len(data) * frac))])
    return damage


def _cfg_edit(section, key, value):
    def fn(f):
        cfg = json.loads(f.attrs["config"])
        cfg[section][key] = value
        f.attrs["config"] = json.dumps(cfg)
    return fn


def _directory(p):
    p.unlink()
    p.mkdir()
    (p / "x").write_text("not a checkpoint")


CHECKPOINTS = {  # damage(path of a copy of last.h5) -> the commands that must refuse it
    "truncated_half": (_cut(0.5), "all"),
    "truncated_header": (lambda p: p.write_bytes(p.read_bytes()[:100]), "all"),
    "truncated_last_byte": (lambda p: p.write_bytes(p.read_bytes()[:-1]), "all"),
    "random_bytes_in_weights": (lambda p: _poke(p, "params/fc1.weight", np.random.default_rng(3).bytes(64)), "all"),
    "random_bytes_in_theta": (lambda p: _poke(p, "params/fc1.theta", np.random.default_rng(4).bytes(8)), "all"),
    "one_weight_12345": (lambda p: _poke(p, "params/fc2.weight", np.float32(12345.0).tobytes()), "all"),
    "momentum_bytes": (lambda p: _poke(p, "opt_state/momentum/fc1.weight", np.float32(7.0).tobytes()), "all"),
    "momentum_nan_signed": (lambda p: _edit_signed(p, lambda f: f["opt_state/momentum/fc1.weight"].__setitem__(
        (0, 0), np.nan)), "resume"),
    "weight_nan_signed": (lambda p: _edit_signed(p, lambda f: f["params/fc1.weight"].__setitem__((0, 0), np.inf)),
                          "all"),
    "theta_below_min_signed": (lambda p: _edit_signed(p, lambda f: f["params/fc1.theta"].__setitem__(
        slice(None), -1.0)), "all"),
    "alpha_above_one_signed": (lambda p: _edit_signed(p, lambda f: f["params/fc1.alpha"].__setitem__(
        slice(None), 3.0)), "all"),
    "weight_shape_signed": (lambda p: _edit_signed(p, lambda f: _replace(f, "params/fc1.weight",
                                                                         np.zeros((3, 3), np.float32))), "all"),
    "weight_missing_signed": (lambda p: _edit_signed(p, lambda f: f["params"].__delitem__("fc2.weight")), "all"),
    "other_model_config_signed": (lambda p: _edit_signed(p, _cfg_edit("model", "hidden", [8])), "all"),
    "unknown_model_signed": (lambda p: _edit_signed(p, _cfg_edit("model", "name", "foo")), "all"),
    "config_not_json_signed": (lambda p: _edit_signed(p, lambda f: f.attrs.__setitem__("config", "{oops")), "all"),
    "config_edited_unsigned": (lambda p: _unsigned(p, _cfg_edit("optim", "lr", 9.0)), "all"),
    "digest_removed": (lambda p: _unsigned(p, lambda f: f.attrs.__delitem__("sha256")), "all"),
    "version_99_signed": (lambda p: _edit_signed(p, lambda f: f.attrs.__setitem__("format_version", 99)), "all"),
    "epoch_negative_signed": (lambda p: _edit_signed(p, lambda f: f.attrs.__setitem__("epoch", -3)), "resume"),
    "optimizer_kind_signed": (lambda p: _edit_signed(p, lambda f: f["opt_state"].attrs.__setitem__(
        "kind", '"adam"')), "resume"),
    "rng_state_signed": (lambda p: _edit_signed(p, lambda f: f.attrs.__setitem__("rng_state", '{"x": 1}')),
                         "resume"),
    "no_params_group_signed": (lambda p: _edit_signed(p, lambda f: f.__delitem__("params")), "all"),
    "dataset_cache_not_checkpoint": (lambda p: _h5_other(p), "all"),
    "text_file": (lambda p: p.write_text("[run]\nepochs = 3\n"), "all"),
    "empty_file": (lambda p: p.write_bytes(b""), "all"),
    "zeros": (lambda p: p.write_bytes(bytes(4096)), "all"),
    "directory": (_directory, "all"),
    "missing": (lambda p: p.unlink(), "all"),
}


def _unsigned(p, fn):
    with h5py.File(p, "a") as f:
        fn(f)


def _h5_other(p):
    p.unlink()
    with h5py.File(p, "w") as f:
        f.create_dataset("train/x", data=np.zeros((2, 3), np.float32))


CKPT_COMMANDS = {  # command -> argv for the bad checkpoint at RUN/last.h5 (OUT: a folder outside the run)
    "eval": lambda run, out: ["eval", run / "last.h5"],
    "resume": lambda run, out: ["train", "--resume", run / "last.h5", "--quiet", "--set", "run.epochs=2"],
    "inspect": lambda run, out: ["inspect", run / "last.h5", "--out", out / "insp.h5", "--batch", "4"],
    "plot": lambda run, out: ["plot", run],
    "export_c": lambda run, out: ["export", "c", run / "last.h5", out / "c"],
}


def _history_drop_layer(p):
    with h5py.File(p, "a") as f:
        del f["1/fc1.theta"]


def _history_bad_key(p):
    with h5py.File(p, "a") as f:
        f.create_group("notes")


def _history_nan(p):
    with h5py.File(p, "a") as f:
        f["1/fc2.alpha"][...] = np.nan


HISTORIES = {
    "truncated_half": _cut(0.5),
    "truncated_header": lambda p: p.write_bytes(p.read_bytes()[:64]),
    "missing_layer": _history_drop_layer,
    "non_epoch_entry": _history_bad_key,
    "nan_alpha": _history_nan,
    "empty_file": lambda p: p.write_bytes(b""),
    "text_file": lambda p: p.write_text("epoch 1\n"),
}
HISTORY_COMMANDS = {"resume": CKPT_COMMANDS["resume"], "plot": CKPT_COMMANDS["plot"]}

METRICS = {
    "bad_line_in_middle": lambda p: p.write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n'),
    "not_an_object": lambda p: p.write_text("[1, 2]\n"),
    "missing": lambda p: p.unlink(),
}


def _cfg_file(text, name="bad.toml"):
    def make(tmp):
        p = tmp / name
        p.write_text(text)
        return p
    return make


CONFIGS = {  # make(tmp) -> config path (or None), extra --set, what the line must name (the file or field)
    "toml_syntax": (_cfg_file("[run\nepochs = 2\n"), [], "bad.toml"),
    "unknown_section": (_cfg_file("[runn]\nepochs = 2\n"), [], "'runn'"),
    "unknown_key": (_cfg_file("[optim]\nlrr = 0.1\n"), [], "optim.lrr"),
    "wrong_type": (_cfg_file('[run]\nepochs = "three"\n'), [], "run.epochs"),
    "negative_lr": (_cfg_file("[optim]\nlr = -1.0\n"), [], "optim.lr"),
    "json_syntax": (_cfg_file('{"run": {"epochs": }', "bad.json"), [], "bad.json"),
    "binary_file": (lambda tmp: (tmp / "bad.toml").write_bytes(b"\x89HDF\r\n\x1a\n\x00\xff") and tmp / "bad.toml", [],
                    "bad.toml"),
    "missing_file": (lambda tmp: tmp / "nope.toml", [], "nope.toml"),
    "directory": (lambda tmp: tmp, [], "cfg"),
    "T_2_pow_62": (None, ["data.T=4611686018427387904"], "data.T"),
    "T_1e8_bptt": (None, ["data.T=100000000", "rule.name=bptt"], "data.T"),
    "hidden_1e8": (None, ["model.hidden=[100000000]"], "model.hidden"),
    "bptt_T_beyond_memory": (None, ["data.T=100000", "rule.name=bptt"], "data.T"),
    "batch_beyond_memory": (None, ["data.limit_train=0", "data.batch_size=100000", "data.T=1000"], "data.batch_size"),
    "layer_unknown_type": (_cfg_file('[model]\nname = "custom"\nlayers = [{type = "convv", out = 4}]\n'), [],
                           "model.layers[0]"),
    "gap_after_linear": (_cfg_file('[model]\nname = "custom"\ninput_shape = [784]\n'
                                   'layers = [{type = "linear", out = 10}, {type = "gap"}]\n'), [], "model"),
}


def _check(capsys, argv, run, out, needle, expect=r"."):
    """``refused`` (one line naming ``needle`` with a fix, exit 2, nothing changed under the case folder)."""
    line = refused(capsys, argv, [run.parent], expect, needle)
    assert not out.exists() or not os.listdir(out), "an output was written"
    return line


def _copy(base_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    out = tmp_path / "out"
    out.mkdir()
    return run, out


CKPT_CASES = [(name, cmd) for name, (_, which) in CHECKPOINTS.items() for cmd in CKPT_COMMANDS
              if which == "all" or cmd == which]


@pytest.mark.parametrize("name,cmd", CKPT_CASES, ids=[f"{n}-{c}" for n, c in CKPT_CASES])
def test_bad_checkpoint(base_run, tmp_path, capsys, name, cmd):
    run, out = _copy(base_run, tmp_path)
    CHECKPOINTS[name][0](run / "last.h5")
    _check(capsys, CKPT_COMMANDS[cmd](run, out), run, out, "last.h5")


HIST_CASES = [(name, cmd) for name in HISTORIES for cmd in HISTORY_COMMANDS]


@pytest.mark.parametrize("name,cmd", HIST_CASES, ids=[f"{n}-{c}" for n, c in HIST_CASES])
def test_bad_history(base_run, tmp_path, capsys, name, cmd):
    run, out = _copy(base_run, tmp_path)
    HISTORIES[name](run / "history.h5")
    line = _check(capsys, HISTORY_COMMANDS[cmd](run, out), run, out, "history.h5")
    assert "move" in line or "delete" in line, line


@pytest.mark.parametrize("name", list(METRICS))
def test_bad_metrics_log(base_run, tmp_path, capsys, name):
    run, out = _copy(base_run, tmp_path)
    METRICS[name](run / "metrics.jsonl")
    _check(capsys, CKPT_COMMANDS["plot"](run, out), run, out, "metrics.jsonl")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bad_config(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setattr(memory, "available_bytes", lambda: 8 << 30)  # the same refusals on any machine
    make, sets, needle = CONFIGS[name]
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    out = tmp_path / "newrun"
    if make is not None:  # the file's own settings: nothing overrides them
        argv = ["train", make(cfg_dir), "--out", out, "--quiet"]
    else:
        argv = ["train", "--out", out, "--quiet"] + sum((["--set", s] for s in TINY[:-1] + sets), [])
    line = _check(capsys, argv, cfg_dir, out, needle)
    assert not out.exists(), "train created its --out folder"
    if name in ("hidden_1e8", "bptt_T_beyond_memory", "batch_beyond_memory"):
        assert "needs at least" in line and "GiB available" in line, line


@pytest.mark.parametrize("cmd", list(CKPT_COMMANDS))
def test_control_the_undamaged_run_passes_every_command(base_run, tmp_path, capsys, cmd):
    """Each case starts from this run: it fails only for its defect."""
    run, out = _copy(base_run, tmp_path)
    assert cli.main([str(a) for a in CKPT_COMMANDS[cmd](run, out)]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err


def test_corpus_size():
    """The counts the report quotes (each row x each command that reads it)."""
    n = len(CKPT_CASES) + len(HIST_CASES) + len(METRICS) + len(CONFIGS)
    assert n == len(CKPT_CASES) + 2 * len(HISTORIES) + len(METRICS) + len(CONFIGS) >= 150
