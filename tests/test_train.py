"""Training workflow: a tiny real run, bit-exact resume, NaN guard, CLI commands and their help."""
import os
import subprocess
import sys

import numpy as np
import pytest

from stopnp import cli, config as C
from stopnp.run import checkpoint
from stopnp.run.resume import load_network
from stopnp.run.train import TrainingError, train

TINY = ["model.name=mlp", "model.hidden=[32]", "model.dropout=0.2", "data.limit_train=320",
        "data.limit_test=100", "data.batch_size=64", "data.test_batch_size=100", "data.T=3", "run.epochs=2",
        "run.quiet=true", "optim.lr=0.05"]


def _cfg(tmp_path, name, extra=()):
    return C.resolve({}, TINY + [f'run.out_dir="{tmp_path / name}"', *extra])


def test_tiny_run_writes_checkpoint_metrics_and_learns(tmp_path):
    res = train(_cfg(tmp_path, "a"))
    d = tmp_path / "a"
    assert {"last.h5", "best.h5", "metrics.jsonl", "config.toml", "history.h5"} <= set(os.listdir(d))
    assert len(res.metrics) == 2 and res.metrics[-1]["test_acc"] > 0.3  # 10 classes: chance is 0.1
    assert C.resolve(C.read(d / "config.toml")) == _cfg(tmp_path, "a")


@pytest.mark.parametrize("stop_after", [5, 3])  # 5 = epoch boundary (320/64), 3 = mid-epoch
def test_resume_is_bit_exact(tmp_path, stop_after):
    straight = train(_cfg(tmp_path, "straight"))
    part = train(_cfg(tmp_path, "resumed"), stop_after=stop_after)
    assert part.interrupted
    resumed = train(_cfg(tmp_path, "resumed"), resume=str(tmp_path / "resumed" / "last.h5"))
    for k, v in straight.net.params.items():
        assert np.array_equal(v, resumed.net.params[k]), k
    for a, b in zip(straight.metrics, resumed.metrics, strict=True):  # the interrupted epoch's sums too
        for key in ("train_loss", "train_acc", "test_acc", "lr"):
            assert a[key] == b[key], (a["epoch"], key)


def test_an_ignored_sigint_stays_ignored(tmp_path, monkeypatch):
    """nohup and background jobs start with SIGINT ignored: training must not take it over (checked
    during an update), while a terminal's default handler is replaced for the run."""
    import signal
    from stopnp import optim
    real, during = optim.step, []

    def step(*a, **k):
        during.append(signal.getsignal(signal.SIGINT))
        real(*a, **k)

    monkeypatch.setattr(optim, "step", step)
    before = signal.getsignal(signal.SIGINT)
    try:
        for handler in (signal.SIG_IGN, signal.default_int_handler):
            signal.signal(signal.SIGINT, handler)
            during.clear()
            assert not train(_cfg(tmp_path, f"bg{len(str(handler))}", ["run.epochs=1"])).interrupted
            assert during and all((h is signal.SIG_IGN) == (handler is signal.SIG_IGN) for h in during)
            assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_inside_an_update_stops_at_the_batch_boundary(tmp_path, monkeypatch, presses):
    """SIGINT delivered in the middle of the 3rd update: one press finishes that batch and writes a
    checkpoint from which the resume is bit-exact; a second press stops at once and writes none."""
    import signal
    from stopnp import optim
    straight = train(_cfg(tmp_path, "straight"))
    real, calls = optim.step, [0]

    def step(params, grads, *a, **k):
        calls[0] += 1
        if calls[0] == 3:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        real(params, grads, *a, **k)

    monkeypatch.setattr(optim, "step", step)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI may ignore it)
    try:
        part = train(_cfg(tmp_path, "resumed"))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after training
    finally:
        signal.signal(signal.SIGINT, before)
    monkeypatch.setattr(optim, "step", real)
    assert part.interrupted
    last = tmp_path / "resumed" / "last.h5"
    if presses == 2:
        assert not last.exists()
        return
    assert checkpoint.load(str(last)).step == 3
    resumed = train(_cfg(tmp_path, "resumed"), resume=str(last))
    for k, v in straight.net.params.items():
        assert np.array_equal(v, resumed.net.params[k]), k


def test_nan_guard_names_the_array_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "nan", ["run.epochs=3"])
    train(C.resolve(cfg, ["run.epochs=1"]))
    good = checkpoint.load(tmp_path / "nan" / "last.h5").params
    from stopnp import optim
    real = optim.step

    def poisoned(params, grads, *a, **k):
        real(params, grads, *a, **k)
        params["fc1.weight"][0, 0] = np.nan

    monkeypatch.setattr(optim, "step", poisoned)
    with pytest.raises(TrainingError, match="non-finite.*layer 'fc1'"):
        train(cfg, resume=str(tmp_path / "nan" / "last.h5"))
    after = checkpoint.load(tmp_path / "nan" / "last.h5").params
    assert all(np.array_equal(good[k], after[k]) for k in good)


def test_cli_help_for_every_command(capsys):
    parser = cli.build_parser()
    sub = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0]
    assert {"train", "eval", "inspect", "plot", "data", "bench"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            cli.main([name, "--help"])
        assert e.value.code == 0
        assert "usage: stopnp " + name in capsys.readouterr().out


def test_cli_train_eval_inspect_plot(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--quiet", "--out", str(out)] + sum((["--set", s] for s in TINY), [])
    assert cli.main(args) == 0
    assert "best test accuracy" in capsys.readouterr().out
    assert cli.main(["eval", str(out / "best.h5")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    h5 = tmp_path / "insp.h5"
    assert cli.main(["inspect", str(out / "last.h5"), "--out", str(h5), "--batch", "8"]) == 0
    table = capsys.readouterr().out
    assert "cos_weight" in table and h5.exists()
    # the output layer's STOP weight gradient is BPTT's exactly (nothing above it sends time errors)
    last = [line.split() for line in table.splitlines() if line.strip().startswith("fc2")][0]
    assert abs(float(last[3]) - 1.0) < 1e-6
    import h5py
    with h5py.File(h5, "r") as f:
        assert f["records/fc1.delta"].shape[:2] == (3, 8)
        assert f["per_step/fc1.weight"].shape[0] == 3
        np.testing.assert_allclose(f["per_step/fc1.weight"][...].sum(0), f["grads/fc1.weight"][...])
    assert cli.main(["plot", str(out)]) == 0
    pngs = set(os.listdir(out / "plots"))
    assert {"curves.png", "raster.png", "membrane.png", "traces.png", "spike_rates.png",
            "theta_alpha.png"} <= pngs


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["train", "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown config key optim.lrr" in err
    assert cli.main(["eval", str(tmp_path / "nope.h5")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_python_m_stopnp_help():
    r = subprocess.run([sys.executable, "-m", "stopnp", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "train" in r.stdout


def test_train_prints_the_blas_warning_only_when_there_is_one(tmp_path, monkeypatch):
    """An AVX-512 CPU held to AVX2 kernels by OPENBLAS_CORETYPE gets one 'note:' line before the epochs."""
    import io
    from stopnp.engine import threads
    for warning in ("OPENBLAS_CORETYPE=Haswell is set and this CPU has AVX-512", ""):
        monkeypatch.setattr(threads, "blas_warning", lambda coretype=None, w=warning: w)
        out = io.StringIO()
        train(_cfg(tmp_path, f"w{len(warning)}", ["run.epochs=1", "run.quiet=false"]), stream=out)
        lines = out.getvalue().splitlines()
        notes = [line for line in lines if line.startswith("note: ")]
        assert notes == ([f"note: {warning}"] if warning else []), lines[:3]
        assert any(line.startswith("epoch 1:") for line in lines)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_an_update_that_overflows_is_never_saved(tmp_path, capsys):
    """optim.lr = 1e30: the update of an epoch's last batch overflows from finite gradients. The guard
    checks the updated state before the epoch's checkpoint, so last.h5 stays loadable and finite."""
    out = tmp_path / "big"
    tiny = [s for s in TINY if not s.startswith(("optim.lr", "run.epochs", "data.limit_train"))]
    args = ["train", "--out", str(out), "--set", "optim.lr=1e30", "--set", "data.limit_train=64",
            "--set", "run.epochs=3"] + sum((["--set", s] for s in tiny), [])
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite" in err, err
    if (out / "last.h5").exists():
        net, ck = load_network(str(out / "last.h5"))
        assert all(np.isfinite(v).all() for v in net.params.values())
        assert all(np.isfinite(a).all() for t in ck.opt_state.values() if isinstance(t, dict) for a in t.values())
        assert cli.main(["eval", str(out / "last.h5")]) == 0


def test_the_thread_policy_never_changes_the_trained_model(tmp_path):
    """An MLP whose big GEMM once went to a multi-threaded BLAS under the auto policy (784-800-10 at
    B = 64): run.threads = 1, 2 and 0 (auto) train bitwise the same weights and metrics."""
    import numba
    runs = {}
    try:
        for n in (1, 2, 0):
            cfg = _cfg(tmp_path, f"t{n}", ["model.hidden=[800]", "data.limit_train=256", "data.T=2",
                                           "model.dropout=0.0", f"run.threads={n}"])
            runs[n] = train(cfg)
    finally:
        from stopnp.engine import threads
        threads.set_threads(numba.config.NUMBA_NUM_THREADS)
    for n in (2, 0):
        for k, v in runs[1].net.params.items():
            assert np.array_equal(v, runs[n].net.params[k]), (n, k, np.abs(v - runs[n].net.params[k]).max())
        strip = lambda ms: [{k: v for k, v in m.items() if k not in ("seconds", "samples_per_s", "threads")}  # noqa: E731
                            for m in ms]
        assert strip(runs[1].metrics) == strip(runs[n].metrics)
