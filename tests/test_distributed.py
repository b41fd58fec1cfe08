"""Data-parallel training over MPI (distributed.py): 2 ranks on loopback against one process.

Each test launches ``mpiexec -n N python -m stopnp train`` on a tiny run (the built-in MNIST subset).
Without mpi4py or mpiexec these tests skip, except under CI (CI or STOPNP_CI set), where they fail:
CI installs the ``mpi`` extra.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from stopnp.run import checkpoint
from stopnp.run.train import train
from tools_needed import missing


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    exe = here if os.path.isfile(here) else shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        exe = None
    if exe is None:
        why = "mpi4py or mpiexec missing: pip install -e '.[mpi]'"
        missing(why)
    return exe


# Open MPI refuses root without these (MPICH ignores them); CI runs as root
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONUNBUFFERED="1")

# run.mpi_bucket_kib = 0: every layer's gradient sum starts as soon as it is final (the overlap), so these
# small networks exercise it too
BASE = {"model": {"name": "mlp", "input_shape": [1, 28, 28], "hidden": [32]},
        "data": {"T": 4, "batch_size": 16, "limit_train": 64, "limit_test": 100},
        "run": {"epochs": 2, "dtype": "float64", "quiet": True, "mpi_bucket_kib": 0}}


def _cfg(tmp, name, **sections):
    cfg = json.loads(json.dumps(BASE))
    for sec, kv in sections.items():
        cfg.setdefault(sec, {}).update(kv)
    path = os.path.join(tmp, f"{name}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path, cfg


def _launch(n, *args, timeout=120, tag=None, background=False):
    cmd = [_mpiexec(), "-n", str(n), sys.executable, "-m", "stopnp", "train", *args]
    env = dict(ENV, STOPNP_TEST_TAG=tag or "")
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _one(cfg, out):
    cfg = json.loads(json.dumps(cfg))
    cfg["run"]["out_dir"] = out
    return train(cfg)


def _params(run_dir, name="last.h5"):
    return checkpoint.load(os.path.join(run_dir, name)).params


def _close(a, b, rtol, atol):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


def test_two_ranks_equal_one_process_float64(tmp_path):
    path, cfg = _cfg(tmp_path, "mlp")
    ref = _one(cfg, str(tmp_path / "one"))
    p = _launch(2, path, "--out", str(tmp_path / "two"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("done in") == 1  # rank 0 alone reports
    rows = [json.loads(line) for line in open(tmp_path / "two" / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]  # one metrics file, written once
    for r, m in zip(rows, ref.metrics):
        assert r["test_acc"] == m["test_acc"]  # evaluation split over the ranks, counts summed
        assert r["train_acc"] == m["train_acc"]
        assert r["train_loss"] == pytest.approx(m["train_loss"], rel=1e-12)
    one, two = _params(tmp_path / "one"), _params(tmp_path / "two")
    _close(two, one, rtol=1e-12, atol=1e-14)
    moved = {k: float(np.abs(one[k] - v).max()) for k, v in _one_init(cfg).items()}
    assert all(m > 1e-6 for m in moved.values()), moved  # the runs trained (a test that can fail)


def _one_init(cfg):
    from stopnp.config import resolve
    from stopnp.engine.network import from_config
    return from_config(resolve(cfg)).params


def test_distributed_path_on_one_rank_is_bitwise_the_single_process_run(tmp_path):
    path, cfg = _cfg(tmp_path, "mlp32", run={"dtype": "float32"})
    _one(cfg, str(tmp_path / "one"))
    p = _launch(1, path, "--out", str(tmp_path / "mpi1"), "--set", "run.distributed=mpi")
    assert p.returncode == 0, p.stdout + p.stderr
    one, mpi1 = _params(tmp_path / "one"), _params(tmp_path / "mpi1")
    for k in one:
        assert np.array_equal(one[k], mpi1[k]), k


def test_two_ranks_float32_conv_and_online(tmp_path):
    """float32 equals within rounding (not bitwise: the batch sums regroup); the online rule reduces at
    every step."""
    conv = {"name": "custom", "layers": [{"type": "conv", "out": 4, "k": 3, "pad": 1}, {"type": "avgpool", "k": 2},
                                         {"type": "flatten"}, {"type": "linear", "out": 10}]}
    for name, extra in (("conv", {"model": conv}), ("online", {"rule": {"online": True}})):
        path, cfg = _cfg(tmp_path, name, run={"dtype": "float32", "epochs": 1}, **extra)
        _one(cfg, str(tmp_path / f"{name}1"))
        p = _launch(2, path, "--out", str(tmp_path / f"{name}2"))
        assert p.returncode == 0, p.stdout + p.stderr
        one, two = _params(tmp_path / f"{name}1"), _params(tmp_path / f"{name}2")
        _close(two, one, rtol=1e-4, atol=1e-6)


CONV_BN = {"name": "custom", "layers": [
    {"type": "conv", "out": 4, "k": 3, "pad": 1, "bn": True}, {"type": "avgpool", "k": 2},
    {"type": "conv", "out": 8, "k": 3, "pad": 1, "bn": True}, {"type": "avgpool", "k": 2},
    {"type": "flatten"}, {"type": "linear", "out": 10}]}

# a rank whose rule names each layer's gradients one layer too early (the layer below too, before its
# backward has run): the negative control of the overlap test
EARLY = """
import sys
from stopnp.rules import common
done = common.FinalGrads.layer_done
def early(self, layer):
    done(self, layer)
    if self.on_final is not None and layer.index > 0 and self.names(self.net.layers[layer.index - 1]):
        self.on_final(self.names(self.net.layers[layer.index - 1]))
common.FinalGrads.layer_done = early
from stopnp.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name, sections", [
    ("stop-mlp", {"model": {"hidden": [32, 16]}}),
    ("stop-conv-bn", {"model": CONV_BN, "run": {"dtype": "float32", "epochs": 1}}),
    ("bptt-mlp", {"rule": {"name": "bptt"}, "run": {"epochs": 1}}),
])
def test_overlapped_sum_is_bitwise_the_blocking_sum(tmp_path, name, sections):
    """run.mpi_overlap: the sums of the top layers' gradients start during the last backward pass. Two ranks
    add the same two numbers either way, so the parameters are bitwise those of the blocking sum; a hook
    that names a layer before its backward has run is caught (the negative control)."""
    run = dict(BASE["run"], **sections.pop("run", {}))
    path, cfg = _cfg(tmp_path, name, run=run, **sections)
    out = {}
    for mode, overlap in (("on", "true"), ("off", "false")):
        p = _launch(2, path, "--out", str(tmp_path / mode), "--set", f"run.mpi_overlap={overlap}")
        assert p.returncode == 0, p.stdout + p.stderr
        out[mode] = _params(tmp_path / mode)
    for k in out["off"]:
        assert np.array_equal(out["on"][k], out["off"][k]), k
    moved = {k: float(np.abs(out["on"][k] - v).max()) for k, v in _one_init(cfg).items()}
    assert all(m > 0 for m in moved.values()), {k: m for k, m in moved.items() if m == 0}  # every one trained
    if name != "stop-mlp":
        return
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-c", EARLY, "train", path, "--out", str(tmp_path / "early")]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:  # the ranks' replicas differ, which stops the run
        assert "the ranks' parameters differ" in p.stdout + p.stderr, p.stdout + p.stderr
    else:
        early = _params(tmp_path / "early")
        assert any(not np.array_equal(early[k], out["off"][k]) for k in early)


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("rule", ["stop", "bptt", "sltt", "sltt-k", "ottt", "bpsta"])
def test_every_rule_names_its_final_gradients_once_top_layer_first(rule, static):
    """on_grads_final (the overlap hook, rules/common.FinalGrads), in one process: every gradient is named
    once, the layers top first, each at a time when it already holds its final value; the gradients are
    bitwise those of a run without the hook. ``static``: the same input at every step (the input layer's
    ΔW completed after the time loop, so that layer is named last), else a new input per step."""
    from stopnp.config import resolve
    from stopnp.engine.network import from_config
    from stopnp.rules import RULES
    from stopnp.rules.common import resolve_options
    no_bn = rule == "bpsta"  # (BPSTA's nets have none)
    model = dict(CONV_BN, layers=[dict(l, bn=False) if no_bn and "bn" in l else l for l in CONV_BN["layers"]])
    cfg = resolve({"model": dict(model, input_shape=[1, 8, 8], readout="spiking" if rule == "bpsta" else "membrane"),
                   "rule": {"name": rule, "learn": "WTL" if rule in ("stop", "bptt") else "W", "k": 2},
                   "neuron": {"theta_init": 0.3}, "data": {"T": 3, "batch_size": 4}})
    net = from_config(cfg).astype("float64")
    rng = np.random.default_rng(0)
    x = (np.broadcast_to(rng.uniform(0, 1, (4, 1, 8, 8)), (3, 4, 1, 8, 8)) if static
         else rng.uniform(0, 1, (3, 4, 1, 8, 8)))
    y = np.array([0, 1, 2, 3])
    opts = resolve_options(net, rule, {})
    seen = []
    named = lambda names: seen.append({n: grads[n].copy() for n in names})  # noqa: E731
    grads = {n: np.zeros(net.params[n].shape) for n in net.trainable(opts["learn"])}
    RULES[rule].run(net, net.params, x, y, opts, grads=grads, rng=np.random.default_rng(1), on_grads_final=named)
    plain = RULES[rule].run(net, net.params, x, y, opts, rng=np.random.default_rng(1)).grads
    names = [n for s in seen for n in s]
    assert sorted(names) == sorted(grads) and len(names) == len(set(names))  # each once
    position = net.trainable(opts["learn"]).index  # the buffer's order: layers bottom first
    assert [max(map(position, s)) for s in seen] == sorted((max(map(position, s)) for s in seen), reverse=True)
    assert len(seen) == 3                                                    # one call per layer, top first
    for s in seen:
        for n, at_the_time in s.items():
            assert np.array_equal(at_the_time, grads[n]), n                 # already final
    for n in grads:
        assert np.array_equal(grads[n], plain[n]), n
    assert all(np.abs(g).max() > 0 for g in grads.values())


@pytest.mark.parametrize("n, batch, needle", [(2, 15, "does not split into 2 equal shares"),
                                              (2, 1, "every rank needs at least one sample")])
def test_bad_launch_refused_with_one_line(tmp_path, n, batch, needle):
    path, _ = _cfg(tmp_path, "bad", data={"batch_size": batch})
    p = _launch(n, path, "--out", str(tmp_path / "bad"))
    assert p.returncode != 0
    errors = [line for line in (p.stdout + p.stderr).splitlines() if "error" in line]
    assert len(errors) == 1 and needle in errors[0], p.stdout + p.stderr
    assert not os.path.exists(tmp_path / "bad" / "last.h5")


def test_ranks_with_different_configs_refused(tmp_path):
    path, _ = _cfg(tmp_path, "a")
    rank = [sys.executable, "-m", "stopnp", "train", path, "--out", str(tmp_path / "r")]
    cmd = [_mpiexec(), "-n", "1", *rank, ":", "-n", "1", *rank, "--set", "optim.lr=0.2"]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    errors = [line for line in (p.stdout + p.stderr).splitlines() if "error" in line]
    assert len(errors) == 1 and "rank 1 runs another config than rank 0" in errors[0], p.stdout + p.stderr


def test_data_digest_tells_sources_apart():
    from stopnp import data
    from stopnp.run.distributed import data_digest
    x = np.zeros((100, 1, 4, 4), np.uint8)
    y = np.arange(100) % 10
    a = data_digest(data.from_arrays(x, y))
    x2 = x.copy()
    x2[99, 0, 1, 1] = 1
    assert data_digest(data.from_arrays(x, y)) == a
    assert data_digest(data.from_arrays(x2, y)) != a
    assert data_digest(data.from_arrays(x, (y + 1) % 10)) != a


def _rank_pid(tag, rank):
    """The pid of one rank of the job whose environment carries STOPNP_TEST_TAG=tag."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"STOPNP_TEST_TAG={tag}".encode() in env and any(
                e in env for e in (f"PMI_RANK={rank}".encode(), f"OMPI_COMM_WORLD_RANK={rank}".encode())):
            return int(d)
    return None


def _wait_for(path, proc, limit=120):
    t = time.monotonic()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() - t < limit
        time.sleep(0.05)


def test_killed_rank_takes_the_job_down_and_resume_continues(tmp_path):
    path, cfg = _cfg(tmp_path, "long", run={"epochs": 10}, data={"limit_test": 32})
    tag = f"kill-{os.getpid()}"
    proc = _launch(2, path, "--out", str(tmp_path / "k"), tag=tag, background=True)
    try:
        _wait_for(tmp_path / "k" / "last.h5", proc)  # epoch 1 is saved (an atomic rename)
        pid = _rank_pid(tag, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        t = time.monotonic()
        proc.wait(timeout=30)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert took < 10, f"the job took {took:.1f} s to go down"
    ck = checkpoint.load(tmp_path / "k" / "last.h5")  # intact
    assert 1 <= ck.epoch < 10
    # the uninterrupted run, and resumes on the same and on another number of ranks
    p = _launch(2, path, "--out", str(tmp_path / "full"))
    assert p.returncode == 0, p.stdout + p.stderr
    shutil.copytree(tmp_path / "k", tmp_path / "k1")
    p = _launch(2, "--resume", str(tmp_path / "k" / "last.h5"))
    assert p.returncode == 0, p.stdout + p.stderr
    p1 = _launch(1, "--resume", str(tmp_path / "k1" / "last.h5"), "--set", "run.distributed=mpi")
    assert p1.returncode == 0, p1.stdout + p1.stderr
    full, same, other = _params(tmp_path / "full"), _params(tmp_path / "k"), _params(tmp_path / "k1")
    for k in full:
        assert np.array_equal(full[k], same[k]), k  # same N: bitwise the uninterrupted run
    _close(other, full, rtol=1e-10, atol=1e-12)     # another N: within rounding
    assert len(open(tmp_path / "k" / "metrics.jsonl").read().splitlines()) == 10


def test_a_rank_that_hangs_ends_the_job(tmp_path):
    """No rank waits forever in a collective: a stopped rank's partner gives up after run.mpi_timeout."""
    epochs = 10 ** 6  # far more than the test can take: the job is mid-training when rank 1 stops
    path, _ = _cfg(tmp_path, "hang", run={"epochs": epochs, "mpi_timeout": 2.0}, data={"limit_test": 32})
    tag = f"hang-{os.getpid()}"
    proc = _launch(2, path, "--out", str(tmp_path / "h"), tag=tag, background=True)
    pid = None
    try:
        _wait_for(tmp_path / "h" / "last.h5", proc)
        pid = _rank_pid(tag, 1)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        t = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "no answer from the other ranks" in out, out
    assert took < 20, f"the job took {took:.1f} s to go down"
    assert 1 <= checkpoint.load(tmp_path / "h" / "last.h5").epoch < epochs


# Comm.run on its own under mpiexec: rank 1 misbehaves after the set-up, in the way named by argv[1]
_SCRIPT = """
import sys, time
from mpi4py import MPI
from stopnp.run.distributed import Comm
comm = Comm(MPI, timeout=2.0)
def fn(comm):
    comm.set_up = True
    if comm.rank == 1 and sys.argv[1] == "error":
        raise ValueError("only rank 1 sees this")
    if comm.rank == 1 and sys.argv[1] == "late":
        time.sleep(60)
    return "ok"
result = comm.run(fn)
sys.stdout.write(f"rank {comm.rank}: {result}\\n")  # one write: the two ranks' lines do not interleave
sys.stdout.flush()
"""


@pytest.mark.parametrize("how, line", [("error", "stopnp (rank 1): error: only rank 1 sees this; ending the job"),
                                       ("late", "no answer from the other ranks for 2 s in the end of the run"),
                                       ("fine", "rank 1: ok")])
def test_an_error_on_one_rank_or_a_rank_that_never_finishes_ends_the_job(tmp_path, how, line):
    script = tmp_path / "comm_run.py"
    script.write_text(_SCRIPT)
    t = time.monotonic()
    p = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(script), how], env=ENV, capture_output=True,
                       text=True, timeout=50)
    took = time.monotonic() - t
    assert line in p.stdout + p.stderr, p.stdout + p.stderr
    if how == "fine":
        assert p.returncode == 0 and "rank 0: ok" in p.stdout, p.stdout + p.stderr
    else:
        assert p.returncode != 0 and "rank 0: ok" not in p.stdout, p.stdout + p.stderr
        assert took < 30, f"the job took {took:.1f} s to go down"


def test_single_process_does_not_import_mpi4py(tmp_path):
    code = ("import sys, json; from stopnp.run.train import train; "
            f"cfg = json.load(open({str(_cfg(tmp_path, 's', run={'epochs': 1})[0])!r})); "
            f"cfg['run']['out_dir'] = {str(tmp_path / 's')!r}; train(cfg); "
            "assert 'mpi4py' not in sys.modules, 'imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")})
    assert p.returncode == 0, p.stderr


def test_missing_mpi4py_says_what_to_install(tmp_path):
    path, _ = _cfg(tmp_path, "m")
    code = ("import sys; sys.modules['mpi4py'] = None; from stopnp.cli import main; "
            f"sys.exit(main(['train', {path!r}, '--out', {str(tmp_path / 'm')!r}, '--set', 'run.distributed=mpi']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs mpi4py" in lines[0] and "pip install" in lines[0], p.stderr


def test_bn_own_statistics_by_default_synchronized_equal_one_process(tmp_path):
    """Each rank normalizes with its own batch statistics (differs from one process: a negative control);
    run.sync_bn sums them over the ranks, which gives the one-process result."""
    bn = {"model": {"bn": True}, "run": {"epochs": 1}}
    path, cfg = _cfg(tmp_path, "bn", **bn)
    _one(cfg, str(tmp_path / "one"))
    for name, sync in (("own", "false"), ("sync", "true")):
        p = _launch(2, path, "--out", str(tmp_path / name), "--set", f"run.sync_bn={sync}")
        assert p.returncode == 0, p.stdout + p.stderr
    one, own, sync = (_params(tmp_path / d) for d in ("one", "own", "sync"))
    assert any(k.endswith(".gamma") for k in one)
    _close(sync, one, rtol=1e-10, atol=1e-12)
    assert max(float(np.abs(own[k] - one[k]).max()) for k in one) > 1e-6


def test_bench_ranks_reports_the_reduction(tmp_path):
    _mpiexec()
    import io
    from stopnp.tools.bench import run_all
    rows = run_all(["mlp"], ["stop"], sweep=False, quick=True, ranks=2, as_json=True, stream=io.StringIO())
    (row,) = rows
    assert "error" not in row, row
    assert row["ranks"] == 2 and row["batch"] == 64
    assert row["reduced_mib"] == pytest.approx((784 * 800 + 800 * 10 + 810 + 2) * 4 / 2 ** 20)
    assert row["reduce_ms"] > 0 and row["train_per_s"] > 0 and row["infer_per_s"] > 0
    # the overlap (default): the sums start in the backward pass (for this MLP, whose top layer is below a
    # bucket, when the input layer is final); without it, nothing starts before the blocking sum
    assert row["overlap"] is True and row["early_mib"] == pytest.approx(row["reduced_mib"])
    (off,) = run_all(["mlp"], ["stop"], sweep=False, quick=True, ranks=2, as_json=True, stream=io.StringIO(),
                     overlap=False)
    assert off["overlap"] is False and off["early_mib"] == 0 and off["reduce_ms"] > 0


def test_non_finite_values_stop_every_rank_with_one_line(tmp_path):
    """The NaN guard runs on the summed values, so every rank stops at the same batch: one line, no wait."""
    path, _ = _cfg(tmp_path, "nan", optim={"lr": 1e38}, run={"epochs": 3, "dtype": "float32"})
    p = _launch(2, path, "--out", str(tmp_path / "nan"), timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    errors = [line for line in (p.stdout + p.stderr).splitlines() if "error" in line]
    assert len(errors) == 1 and "non-finite values" in errors[0], p.stdout + p.stderr


def test_ranks_that_read_different_data_refused(tmp_path):
    """The same config, but each rank's working folder holds another data.h5 (two nodes, two copies)."""
    from stopnp.data.cache import write_h5_atomic
    rng = np.random.default_rng(0)
    for i, d in enumerate(("a", "b")):
        os.makedirs(tmp_path / d)
        x = rng.integers(0, 255, (64, 1, 28, 28)).astype(np.uint8)
        y = np.arange(64) % 10
        write_h5_atomic(str(tmp_path / d / "data.h5"), {"train": (x, y), "test": (x[:16], y[:16])},
                        {"n_classes": 10, "name": "tiny"})
    path, _ = _cfg(tmp_path, "d", data={"name": "data.h5"})
    rank = [sys.executable, "-m", "stopnp", "train", path, "--out", str(tmp_path / "r")]
    cmd = [_mpiexec(), "-n", "1", "-wdir", str(tmp_path / "a"), *rank, ":",
           "-n", "1", "-wdir", str(tmp_path / "b"), *rank]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    errors = [line for line in (p.stdout + p.stderr).splitlines() if "error" in line]
    assert len(errors) == 1 and "rank 1 reads other data than rank 0" in errors[0], p.stdout + p.stderr
