"""Bad input on the training workflow: one line naming the file or field, never a crash or a silent loss."""
import json
import os

import h5py
import numpy as np
import pytest

import stopnp
from stopnp.run import checkpoint
from stopnp import cli, optim, config as C
from stopnp.data import DataError, cache
from stopnp.run.train import train

TINY = ["model.name=mlp", "model.hidden=[16]", "data.limit_train=64", "data.limit_test=32", "data.batch_size=32",
        "data.test_batch_size=32", "data.T=2", "run.epochs=1", "run.quiet=true"]


def _run(tmp_path, name="run", extra=()):
    cfg = C.resolve({}, TINY + [f'run.out_dir="{tmp_path / name}"', *extra])
    train(cfg)
    return tmp_path / name


def _err(capsys, argv, *needles):
    """The CLI fails with exit 2 and exactly one error line containing ``needles``."""
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return err


def _edit(src, dst, fn):
    """A copy of ``src`` changed by ``fn``; a checkpoint's digest is then recomputed: the file is whole,
    as a buggy or foreign writer would leave it, so the checks behind the checksum are the ones tested."""
    dst.write_bytes(open(src, "rb").read())
    with h5py.File(dst, "a") as f:
        fn(f)
        if "sha256" in f.attrs:
            f.attrs["sha256"] = checkpoint.digest(f)
    return dst


def test_resume_checks_the_optimizer_state_before_touching_anything(tmp_path, capsys):
    run = _run(tmp_path)
    last = run / "last.h5"
    resume = ["train", "--resume", None, "--set", "run.epochs=2", "--quiet"]

    def shape(f):
        del f["opt_state/momentum/fc1.weight"]
        f["opt_state/momentum/fc1.weight"] = np.zeros((3, 3), np.float32)

    bad = _edit(last, tmp_path / "shape.h5", shape)
    _err(capsys, [a or bad for a in resume], "shape.h5: opt_state/momentum/fc1.weight", "(3, 3)")
    _err(capsys, [a or last for a in resume] + ["--set", "optim.kind=adam"], "optim.kind = 'sgd'")
    _err(capsys, [a or last for a in resume] + ["--set", "rule.learn=W"], "rule.learn")
    bad = _edit(last, tmp_path / "epoch.h5", lambda f: f.attrs.__setitem__("epoch", -5))
    _err(capsys, [a or bad for a in resume], "epoch = -5")

    def theta(f):
        f["params/fc1.theta"][...] = -1.0

    bad = _edit(last, tmp_path / "cfg.h5", lambda f: f.attrs.__setitem__("config", "null"))
    _err(capsys, ["eval", bad], "cfg.h5: its config is not a table")
    bad = _edit(last, tmp_path / "cfg2.h5", lambda f: f.attrs.__setitem__("config", '{"model": {"name": "foo"}}'))
    _err(capsys, ["eval", bad], "cfg2.h5: its config: model.name = 'foo'")
    bad = _edit(last, tmp_path / "theta.h5", theta)
    _err(capsys, ["eval", bad], "theta.h5: fc1.theta", "theta_min")
    assert checkpoint.load(str(last)).epoch == 1  # the run itself is untouched


def test_a_run_directory_is_never_silently_replaced(tmp_path, capsys):
    run = _run(tmp_path, extra=["run.epochs=2"])
    before = (run / "best.h5").read_bytes()
    _err(capsys, ["train", "--quiet", "--out", run] + sum((["--set", o] for o in TINY), []), "already holds a run",
         "--resume", "--force")
    assert (run / "best.h5").read_bytes() == before
    assert cli.main(["train", "--quiet", "--force", "--out", str(run)] + sum((["--set", o] for o in TINY), [])) == 0
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1]  # the replaced run's rows are gone, not mixed in
    with h5py.File(run / "history.h5") as f:
        assert list(f) == ["1"]  # and its θ/α history
    dead = tmp_path / "dead"  # a run that died before its first checkpoint: nothing to keep
    os.makedirs(dead)
    (dead / "metrics.jsonl").write_text("")
    assert cli.main(["train", "--quiet", "--out", str(dead)] + sum((["--set", o] for o in TINY), [])) == 0


def test_resume_keeps_only_the_checkpoints_metrics(tmp_path):
    run = _run(tmp_path)
    with open(run / "metrics.jsonl", "a") as f:  # a row whose checkpoint write then failed
        f.write(json.dumps({"epoch": 2, "test_acc": 0.5}) + "\n")
    train(C.resolve({}, TINY + [f'run.out_dir="{run}"', "run.epochs=2"]), resume=str(run / "last.h5"))
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["test_acc"] != 0.5


def test_float64_runs_train_and_evaluate_a_conv_network(tmp_path, capsys):
    run = _run(tmp_path, extra=["model.name=lenet5", "run.dtype=float64"])
    assert checkpoint.load(str(run / "last.h5")).params["conv1.weight"].dtype == np.float64
    assert cli.main(["eval", str(run / "best.h5")]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_optim_step_updates_non_contiguous_parameters_and_checks_shapes():
    rng = np.random.default_rng(0)
    w = np.asfortranarray(rng.standard_normal((4, 3)))
    ref, w0 = np.ascontiguousarray(w), w.copy()
    g = rng.standard_normal((4, 3))
    cfg = C.resolve({})["optim"]
    for params in ({"fc1.weight": w}, {"fc1.weight": ref}):
        state = optim.init_state(cfg, params, ["fc1.weight"])
        optim.step(params, {"fc1.weight": g}, state, cfg, 0.1, 1e-3)
    assert not np.array_equal(w, w0) and np.array_equal(w, ref)  # the Fortran-order update was not lost
    state = optim.init_state(cfg, {"fc1.weight": ref}, ["fc1.weight"])
    with pytest.raises(ValueError, match="gradient of 'fc1.weight' is \\(10,\\)"):
        optim.step({"fc1.weight": ref}, {"fc1.weight": np.zeros(10)}, state, cfg, 0.1, 1e-3)
    state["momentum"]["fc1.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match="sgd state of 'fc1.weight' is \\(3,\\)"):
        optim.step({"fc1.weight": ref}, {"fc1.weight": g}, state, cfg, 0.1, 1e-3)
    assert state["step"] == 0  # refused before counting a step
    state = optim.init_state(cfg, {"fc1.weight": ref}, ["fc1.weight"])
    frozen = ref.copy()
    frozen.flags.writeable = False
    for p in (ref.astype(np.int32), frozen):
        with pytest.raises(ValueError, match="must be a writable float array"):
            optim.step({"fc1.weight": p}, {"fc1.weight": g}, state, cfg, 0.1, 1e-3)


def _cache(path, x, y, xt=None, yt=None):
    xt = x if xt is None else xt
    yt = y if yt is None else yt
    return cache.write_h5_atomic(str(path), {"train": (x, y), "test": (xt, yt)}, {"name": "t", "n_classes": 10})


def test_bad_data_is_named_not_trained_on(tmp_path, capsys):
    run = _run(tmp_path)
    x = np.random.default_rng(0).random((8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8) % 10
    bad = x.copy()
    bad[3, 0, 5, 5] = np.nan
    nan = _cache(tmp_path / "nan.h5", bad, y)
    _err(capsys, ["eval", run / "best.h5", "--data", nan], "nan.h5: test", "NaN")
    def float_labels(f):
        del f["test/y"]
        f["test/y"] = y + 0.5

    flt = _edit(tmp_path / "nan.h5", tmp_path / "flt.h5", float_labels)
    with h5py.File(flt, "a") as f:
        f["test/x"][...] = x
    _err(capsys, ["eval", run / "best.h5", "--data", flt], "flt.h5", "labels are float64")
    def empty_train(f):
        for k, v in (("x", x[:0]), ("y", y[:0])):
            del f[f"train/{k}"]
            f[f"train/{k}"] = v

    empty = _edit(tmp_path / "nan.h5", tmp_path / "empty.h5", empty_train)
    _err(capsys, ["eval", run / "best.h5", "--data", empty, "--split", "train"], "empty.h5: train has no samples")
    small = _cache(tmp_path / "small.h5", x[:, :, :5, :7], y)
    _err(capsys, ["eval", run / "best.h5", "--data", small], "samples have shape (1, 5, 7)", "model.input_shape")
    _err(capsys, ["eval", run / "best.h5", "--T", "0"], "--T 0")
    with pytest.raises(DataError, match="labels are float"):
        stopnp.data.from_arrays(x, y + 0.5)


def test_output_paths_and_options_fail_before_any_work(tmp_path, capsys):
    run = _run(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    _err(capsys, ["train", "--quiet", "--out", afile / "sub"] + sum((["--set", o] for o in TINY), []),
         "Not a directory")
    _err(capsys, ["inspect", run / "last.h5", "--out", tmp_path], "Is a directory")
    _err(capsys, ["plot", afile], "is a file, not a run directory")
    _err(capsys, ["plot", tmp_path / "nope"], "no such run directory")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n[1, 2]\n{"epoch": 2}\n')
    _err(capsys, ["plot", run], "metrics.jsonl:2: not a JSON object")
    _err(capsys, ["bench", "--out", tmp_path], "--out")
    _err(capsys, ["export", "c", run / "last.h5", tmp_path / "c", "--vectors", "-1"], "--vectors -1")
    _err(capsys, ["export", "c", run / "last.h5", tmp_path / "c", "--lr", "nan"], "--lr nan")
    _err(capsys, ["export", "c", run / "last.h5", tmp_path / "c", "--sample", "99999999"], "--sample 99999999",
         "0..1999")
    _err(capsys, ["export", "c", run / "last.h5", afile], "afile: is a file")
    assert not (tmp_path / "c" / "vectors.bin").exists()
    _err(capsys, ["train", "--quiet", "--epochs", "0"], "run.epochs = 0")


def test_compare_checks_every_override_before_training(tmp_path, capsys):
    from stopnp.tools.compare import compare
    for extra, match in ((["rule.name=bptt"], "own recipe"), (["optim.lr=-1"], "optim.lr"),
                         (["foo.bar=1"], "unknown config section")):
        with pytest.raises(C.ConfigError, match=match):
            compare(("stop",), 1, 0, str(tmp_path / "runs"), str(tmp_path / "p"), False, extra)
    assert not (tmp_path / "runs").exists()
    os.makedirs(tmp_path / "runs" / "stop")
    (tmp_path / "runs" / "stop" / "last.h5").write_bytes(b"")
    with pytest.raises(C.ConfigError, match="--force"):
        compare(("stop",), 1, 0, str(tmp_path / "runs"), str(tmp_path / "p"), False)


def test_a_named_model_that_does_not_fit_the_input_says_so():
    with pytest.raises(C.ConfigError, match=r"model.name = 'vgg11' does not fit model.input_shape = \[1, 28, 28\]"):
        stopnp.build("vgg11", model__input_shape=[1, 28, 28])


def test_resume_continues_in_the_checkpoints_own_folder(tmp_path, capsys):
    run = _run(tmp_path, "a")
    moved = tmp_path / "moved"
    os.rename(run, moved)  # a run folder that was moved or copied
    assert cli.main(["train", "--resume", str(moved / "last.h5"), "--epochs", "2", "--quiet"]) == 0
    assert not run.exists()
    assert [json.loads(line)["epoch"] for line in open(moved / "metrics.jsonl")] == [1, 2]
    other = _run(tmp_path, "other")
    before = (other / "best.h5").read_bytes()
    _err(capsys, ["train", "--resume", moved / "last.h5", "--epochs", "3", "--out", other], "holds another run",
         "--force")
    assert (other / "best.h5").read_bytes() == before
    _err(capsys, ["train", "--set", "optim.lr", "0.1"], "optim.lr", "SECTION.KEY=VALUE")


def test_quiet_is_not_inherited_by_a_resume(tmp_path, capsys):
    run = _run(tmp_path)  # trained with run.quiet = true
    assert cli.main(["train", "--resume", str(run / "last.h5"), "--epochs", "2"]) == 0
    out = capsys.readouterr()
    assert "epoch 2: train loss" in out.out


def test_inspect_file_holds_the_batch_and_print_config_documents_itself(tmp_path, capsys):
    run = _run(tmp_path)
    assert cli.main(["inspect", str(run / "last.h5"), "--out", str(tmp_path / "i.h5"), "--batch", "4"]) == 0
    with h5py.File(tmp_path / "i.h5") as f:
        assert f["inputs/x"].shape[:2] == (2, 4) and f["inputs/y"].shape == (4,)
        assert f.attrs["split"] == "test"
    capsys.readouterr()
    assert cli.main(["train", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert 'name = "stop"' in text and "# stop, bptt, sltt" in text and "# bn =" in text
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert C.resolve(C.read(str(cfg))) == C.resolve(C.DEFAULT_TRAIN, ["run.quiet=false"])  # reads back whole
    _err(capsys, ["eval", cfg], "c.toml: not an HDF5 checkpoint")


def test_resume_flags_and_an_other_folder(tmp_path, capsys):
    run = _run(tmp_path, extra=["run.epochs=2"])
    # a config's or --set's run.quiet and run.out_dir are honoured with --resume
    assert cli.main(["train", "--resume", str(run / "last.h5"), "--set", "run.quiet=true", "--set",
                     f"run.out_dir={json.dumps(str(tmp_path / 'set'))}", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "quiet = true" in text and str(tmp_path / "set") in text
    # resuming into an empty folder copies the run so far: it is whole even with nothing left to train
    assert cli.main(["train", "--resume", str(run / "last.h5"), "--out", str(tmp_path / "copy"), "--quiet"]) == 0
    assert {"last.h5", "best.h5", "history.h5", "metrics.jsonl"} <= set(os.listdir(tmp_path / "copy"))
    # --force with a checkpoint that does not fit deletes nothing
    other = _run(tmp_path, "other")
    _err(capsys, ["train", "--resume", run / "last.h5", "--out", other, "--force", "--set", "model.hidden=[8]",
                  "--quiet"], "parameters do not fit")
    assert {"last.h5", "best.h5", "history.h5"} <= set(os.listdir(other))


@pytest.mark.parametrize("extra", [["model.name=lenet5", "neuron.theta_mode=channel"],
                                   ["rule.name=bptt", "rule.learn=W", "neuron.reset=hard"],
                                   ["numerics.kind=fixed", "optim.momentum=0.0", "optim.weight_decay=0.0"]])
def test_plot_every_kind_of_run(tmp_path, capsys, extra):
    """θ per channel, a hard reset (no STOP traces: skipped with a note), fixed point (simulated in float)."""
    run = _run(tmp_path, extra=extra)
    assert cli.main(["plot", str(run)]) == 0
    names = {os.path.basename(p) for p in capsys.readouterr().out.split()}
    assert {"curves.png", "raster.png", "membrane.png", "spike_rates.png", "theta_alpha.png"} <= names
    assert ("traces.png" in names) == ("neuron.reset=hard" not in extra)
    if "neuron.reset=hard" in extra:
        _err(capsys, ["inspect", run / "last.h5"], "resets hard")


def test_a_mid_epoch_resume_keeps_the_batch_order(tmp_path):
    cfg = C.resolve({}, TINY + [f'run.out_dir="{tmp_path / "r"}"', "run.epochs=2"])
    assert train(cfg, stop_after=1).interrupted  # stopped after batch 1 of epoch 1
    last = str(tmp_path / "r" / "last.h5")
    for change in ("data.batch_size=16", "run.seed=5"):
        with pytest.raises(C.ConfigError, match=f"stopped inside an epoch with {change.split('=')[0]}"):
            train(C.resolve(cfg, [change]), resume=last)
    assert not train(cfg, resume=last).interrupted  # the same order resumes
