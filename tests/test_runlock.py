"""One writer per run folder: the lock refuses a second writer in one line naming it, a lock left by a
killed process is taken over, and temporary files of killed writes are swept."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from stopnp import cli, config as C
from stopnp.run.lock import LOCK_NAME, RunLock, RunLockError, read_lock
from stopnp.run.train import train

TINY = ["model.name=mlp", "model.hidden=[8]", "data.limit_train=32", "data.limit_test=16", "data.batch_size=16",
        "data.test_batch_size=16", "data.T=2", "run.epochs=1", "run.quiet=true"]


def _args(out):
    return ["train", "--quiet", "--out", str(out)] + sum((["--set", s] for s in TINY), [])


def _snapshot(folder):
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder)) if (folder / n).is_file()}


def test_a_second_writer_is_refused_in_one_line_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_args(out)) == 0
    capsys.readouterr()
    before = _snapshot(out)
    with RunLock(out, command="stopnp train --out run"):  # a writer in this very process: alive
        holder = read_lock(out / LOCK_NAME)
        assert holder["pid"] == os.getpid() and holder["command"] == "stopnp train --out run"
        for argv in (_args(out), ["train", "--resume", str(out / "last.h5"), "--quiet"]):
            assert cli.main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"is being written by pid {os.getpid()} on " in err, err
            assert "since" in err
        after = _snapshot(out)
    assert {k: v for k, v in after.items() if k != LOCK_NAME} == before
    assert not (out / LOCK_NAME).exists() and _snapshot(out) == before


def test_two_trainings_started_together_leave_one_whole_run(tmp_path):
    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "stopnp", *_args(out), "--set", f"run.seed={s}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    res = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in res)
    assert codes in ([0, 2], [0, 0]), res  # [0, 0]: the second started after the first had finished
    for rc, err in res:
        if rc == 2:
            assert err.count("\n") == 1 and ("is being written by pid" in err or "already holds a run" in err), err
    from stopnp.run import checkpoint, progress
    ck = checkpoint.load(out / "last.h5")
    assert C.read(out / "config.toml")["run"]["seed"] == ck.config["run"]["seed"]
    assert [r["epoch"] for r in progress.read_metrics(out / "metrics.jsonl")] == [1]
    assert not (out / LOCK_NAME).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    code = ("import sys, time; from stopnp.run.lock import RunLock; RunLock(sys.argv[1], command='killed').acquire(); "
            "print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    with pytest.raises(RunLockError, match=f"pid {p.pid} on .* since .*killed"):
        RunLock(out).acquire()  # alive: refused
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert read_lock(out / LOCK_NAME)["pid"] == p.pid  # kill -9 leaves the lock
    (out / ".stopnp-abc123.tmp").write_bytes(b"half a checkpoint")  # and a write it was in the middle of
    assert cli.main(_args(out)) == 0
    err = capsys.readouterr().err
    assert f"stale lock of pid {p.pid}" in err and "removed 1 temporary file" in err, err
    assert not [n for n in os.listdir(out) if n.startswith(".stopnp")]


def test_a_recycled_pid_is_not_a_live_holder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    lock = RunLock(out, command="x").acquire()
    info = read_lock(out / LOCK_NAME)
    lock.release()
    if info["start_ticks"] is None:
        pytest.skip("no /proc start times on this system")
    info["start_ticks"] -= 1  # our pid, but the recorded holder started earlier: a dead process's pid reused
    (out / LOCK_NAME).write_text(json.dumps(info))
    notes = []
    RunLock(out, note=notes.append).acquire().release()
    assert notes and "stale lock" in notes[0]


def test_the_lock_goes_with_an_error_and_a_bad_run_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new"
    assert cli.main(_args(out) + ["--set", "data.name=nope"]) == 2
    capsys.readouterr()
    assert not out.exists()
    cfg = C.resolve({}, TINY + [f'run.out_dir="{out}"'])
    train(cfg, stop_after=1)  # interrupted (as by Ctrl-C): resumable, lock released
    assert not (out / LOCK_NAME).exists() and (out / "last.h5").exists()
