"""The training loop: epochs, evaluation, progress, metrics, guards, checkpoints, exact resume.

One mini-batch (rule from config):  gradients of Σ_t E[t] (rules/) -> optional clip -> optimizer
step with clamps (optim.py) -> BN running statistics. Data order is a pure function of
(seed, epoch), and the RNG for dropout masks / SLTT-K steps is checkpointed, so resuming from a
checkpoint (even mid-epoch) continues bit-exactly.

Run directory: config.toml (resolved), metrics.jsonl (one line per epoch), last.h5, best.h5.
"""
import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import activity, checkpoint, history
from .. import data, optim
from ..engine import memory
from .. import config as config_mod
from ..engine.network import ShapeError, check_params, from_config
from ..fsutil import atomic_write
from .progress import MetricsLog, Progress
from .lock import RunLock
from ..engine import threads
from ..rules import RULES, runner
from ..rules.common import resolve_options


class TrainingError(RuntimeError):
    """Training stopped (NaN/Inf, bad data); the message names the array and what to do."""


@dataclass
class RunResult:
    net: object
    metrics: list
    run_dir: str
    best_acc: float
    seconds: float
    interrupted: bool = False
    history: dict = field(default_factory=dict)
    root: bool = True   # False on the ranks > 0 of a distributed run (they print and write nothing)


def check_data(net, src, split):
    """The split fits the network (sample shape, classes) and is not empty; one line each."""
    if len(src.y) == 0:
        raise TrainingError(f"data {src.name!r} ({split}): no samples; check the dataset or data.limit_*")
    if tuple(src.input_shape) != net.input_shape:
        raise TrainingError(f"data {src.name!r} ({split}): samples have shape {tuple(src.input_shape)} but "
                            f"model.input_shape = {list(net.input_shape)}; set model.input_shape")
    if src.n_classes > net.n_classes:
        raise TrainingError(f"data {src.name!r}: {src.n_classes} classes but model.n_classes = "
                            f"{net.n_classes}")


def _finite(arr) -> bool:
    # a finite sum means every element is finite (NaN and ±Inf propagate); a sum that overflows from
    # finite values falls through to the exact test. The sum allocates nothing, np.isfinite a mask.
    return bool(np.isfinite(arr.sum())) or bool(np.all(np.isfinite(arr)))


def _nonfinite(what):
    return TrainingError(f"non-finite values (NaN/Inf) in {what}; the last good checkpoint is kept. "
                         f"Lower optim.lr or enable optim.grad_clip")


def guard(loss, grads, ws, net):
    """Stop on NaN/Inf, naming the layer and array (state first: it is where a blow-up starts)."""
    if ws is not None:
        for layer in net.layers:
            if not _finite(ws.state.v[layer.index]):
                raise _nonfinite(f"membrane state V of layer {layer.name!r}")
    for name, g in grads.items():
        if not _finite(g):
            raise _nonfinite(f"gradient {name!r} (layer {name.rsplit('.', 1)[0]})")
    if not np.isfinite(loss):
        raise TrainingError(f"loss is {loss}; the last good checkpoint is kept. Lower optim.lr or enable "
                            f"optim.grad_clip")


def guard_update(net, opt_state):
    """After an update, before anything can be saved: every parameter and optimizer buffer is finite (an
    update can overflow from finite gradients; a checkpoint never holds what it produced)."""
    for name, p in net.params.items():
        if not _finite(p):
            raise _nonfinite(f"parameter {name!r} after the update (layer {name.split('.', 1)[0]!r})")
    for buf, tree in opt_state.items():
        if isinstance(tree, dict):
            for name, a in tree.items():
                if not _finite(a):
                    raise _nonfinite(f"optimizer state {buf}/{name!r} after the update")


def check_memory(net, cfg, rule, n_train, n_test):
    """Training's largest buffers (one encoded batch, the workspace; BPTT and BPSTA store every step) fit
    in the memory available: else one line with both figures, before anything is allocated."""
    d, itemsize = cfg["data"], np.dtype(cfg["run"]["dtype"]).itemsize
    stored = RULES[rule].stored
    for B, what in ((min(d["batch_size"], n_train), "data.batch_size"),
                    (min(d["test_batch_size"], n_test), "data.test_batch_size")):
        need = memory.batch_bytes(d["T"], B, net.input_shape, itemsize) + memory.workspace_bytes(
            net, B, itemsize, d["T"] if stored and what == "data.batch_size" else 1)
        memory.check(need, f"rule {rule} with data.T = {d['T']} and {what} = {B}",
                     f"lower data.T or {what}" + (" (rule stop keeps memory flat in T)" if stored else "")
                     + " or the model width")


def evaluate(net, source, T, batch_size, *, ws_cache=None, kernels="blas", numerics=None):
    """Test accuracy (prediction = argmax Σ_t o[t]) with BN in eval mode; forward only.

    ``numerics="fixed"`` (default: the config's numerics.kind) evaluates the integer network of fixed/integer.py."""
    if (numerics or net.config["numerics"]["kind"]) == "fixed":
        from ..fixed import integer as fixed
        return fixed.accuracy(net, data.batches(source, batch_size, T, shuffle=False, dtype=np.float32))
    rule = RULES[net.config["rule"]["name"]].forward
    opts = resolve_options(net, rule, {"bn_mode": "eval", "kernels": kernels, "learn": "W"})
    run = RULES[rule].run
    dtype = np.dtype(net.config["run"]["dtype"])
    correct = total = 0
    ws_cache = {} if ws_cache is None else ws_cache
    for x, y in data.batches(source, batch_size, T, shuffle=False, dtype=dtype):
        ws = _ws(ws_cache, net, x.shape[1], dtype, opts, rule, x.shape[0])
        res = run(net, net.params, x, None, opts, ws=ws)
        correct += int((res.out_sum.argmax(axis=1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def _limit(src, n):
    """The first ``n`` samples of a source (0 = all): quick runs and tests."""
    if not n or n >= len(src.y):
        return src
    return dataclasses.replace(src, x=src.x[:n], y=src.y[:n])


def _ws(cache, net, B, dtype, opts, rule, T=None):
    """One workspace per (batch size, rule, T), reused across batches (no per-batch allocation)."""
    key = (B, rule, T if RULES[rule].stored else None)
    if key not in cache:
        cache[key] = RULES[rule].workspace(net, B, dtype, opts, T)
    return cache[key]


def train(cfg, *, resume=None, quiet=None, stream=None, stop_after=None, overwrite=False) -> RunResult:
    """Train from a resolved (or partial) config dict. ``resume``: path to a checkpoint.

    A run directory that already holds a run is refused unless ``resume`` continues it or ``overwrite``
    replaces it (its checkpoints and metrics are then lost). The run directory is locked while training
    (runlock.py): a second writer is refused.

    ``stop_after``: stop after this many mini-batches (tests: simulate an interruption).

    Under ``mpiexec -n N`` (or ``run.distributed = "mpi"``) the ranks train one model data-parallel
    (distributed.py); rank 0 alone prints and writes the run directory.
    """
    cfg = config_mod.resolve(cfg) if not _is_resolved(cfg) else cfg
    if not cfg["run"]["out_dir"]:
        raise config_mod.ConfigError("run.out_dir is empty; name a run directory, e.g. --out runs/mnist")
    from . import distributed
    comm = distributed.communicator(cfg)  # None: one process (mpi4py is not imported)
    kw = dict(resume=resume, quiet=quiet, stream=stream, stop_after=stop_after, overwrite=overwrite)
    return _locked_train(cfg, comm=None, **kw) if comm is None else comm.run(_locked_train, cfg, **kw)


def _locked_train(cfg, *, comm, **kw) -> RunResult:
    """``_train`` holding the run directory's lock (runlock.py); in a distributed run rank 0 holds it."""
    if comm is not None and not comm.is_root:
        return _train(cfg, comm=comm, **kw)
    stream = kw["stream"]
    note = (lambda text: print(f"note: {text}", file=stream or sys.stderr, flush=True))
    with RunLock(cfg["run"]["out_dir"], note=note):
        return _train(cfg, comm=comm, **kw)


def _train(cfg, *, comm, resume, quiet, stream, stop_after, overwrite) -> RunResult:
    run_cfg, dcfg, ocfg = cfg["run"], cfg["data"], cfg["optim"]
    root = comm is None or comm.is_root
    quiet = (run_cfg["quiet"] if quiet is None else quiet) or not root
    threads.set_threads(run_cfg["threads"], cores=comm.cores if comm else None)
    dtype = np.dtype(run_cfg["dtype"])
    train_src = _limit(data.load(dcfg["name"], "train"), dcfg["limit_train"])
    test_src = _limit(data.load(dcfg["name"], "test"), dcfg["limit_test"])
    net = from_config(cfg)
    threads.fit(*threads.thread_workload(net, dcfg["batch_size"]))
    check_data(net, train_src, "train")
    check_data(net, test_src, "test")
    rule = cfg["rule"]["name"]
    check_memory(net, cfg, rule, len(train_src.y), len(test_src.y))
    run = runner(rule)
    if rule == "bpsta":
        from ..rules import bpsta
        bpsta.check_config(cfg)
    is_fixed = cfg["numerics"]["kind"] == "fixed"
    if is_fixed:
        from ..fixed import integer as fixed
        fixed.check_training(cfg)
        fixed.check_supported(net, learn=True)
    opts = resolve_options(net, rule, {})
    names = net.trainable(opts["learn"])
    opt_state = optim.init_state(ocfg, net.params, names)
    rng = np.random.default_rng(run_cfg["seed"] + 1)
    n_train = len(train_src.y)
    per_epoch = -(-n_train // dcfg["batch_size"])
    total_steps = per_epoch * run_cfg["epochs"]
    start_epoch, start_batch, metrics, partial = 0, 0, [], None
    run_dir = run_cfg["out_dir"]
    if resume:  # everything read and checked before the run folder is touched (--force deletes)
        ck = checkpoint.load(resume, expect_params={k: v.shape for k, v in net.params.items()})
        partial = _check_resume(resume, ck, net, names, ocfg, rng, cfg)
        for k, v in ck.params.items():
            net.params[k][...] = v
        _check_loaded(net, resume)
        opt_state = ck.opt_state
        start_epoch, start_batch, metrics = ck.epoch, ck.step, list(ck.metrics)
        _check_history(run_dir, net, resume)
    if root:  # (the other ranks of a distributed run write nothing)
        _check_run_dir(run_dir, resume, overwrite)
        os.makedirs(run_dir, exist_ok=True)
        if resume:
            _carry_over(resume, run_dir)
        with open(os.path.join(run_dir, "config.toml"), "w") as f:
            f.write(config_mod.dumps_toml(cfg, comments=True))
        log = MetricsLog(os.path.join(run_dir, "metrics.jsonl"))
        log.rewrite(metrics)  # the checkpoint's epochs only: a fresh run starts empty, a resume drops rows
        # appended after its checkpoint (a write that failed after the metrics line)
    if comm:  # every rank set up alike (or all stop with the first error), and the batch splits N ways
        comm.setup_done(cfg, (train_src, test_src))
        test_src = comm.shard(test_src)  # evaluation: each rank a part, the counts summed
    best = max([m.get("test_acc", 0.0) for m in metrics], default=0.0)
    ws_cache = {}
    qnet = fixed.quantize(net) if is_fixed else None
    if is_fixed:
        fixed.to_float(qnet, net)   # the float copy holds exactly the integer parameters (checkpoints, eval)
    blas_warning = "" if quiet else threads.blas_warning()  # printed once every check has passed
    if blas_warning:
        print(f"note: {blas_warning}", file=stream or sys.stderr, flush=True)  # advice, not a result
    t_start = time.perf_counter()
    interrupted = False
    done_batches = 0
    pos = (start_epoch, start_batch)  # (epoch, index of the next batch): what a resume continues from
    ctrl_c = _DeferredInterrupt(quiet, stream)
    tuner = threads.PoolTuner()
    silence = activity.ActivityCheck(net, cfg, error=TrainingError)  # silent layers, loss stuck at chance
    try:
        with ctrl_c:  # Ctrl-C stops at the next batch boundary, where the state is whole
            for epoch in range(start_epoch, run_cfg["epochs"]):
                skip = start_batch if epoch == start_epoch else 0
                # a resumed epoch continues its sums: its metrics equal an uninterrupted run's
                loss_sum, correct, seen, before = ((partial["loss_sum"], partial["correct"], partial["seen"],
                                                    partial["seconds"]) if skip and partial else (0.0, 0, 0, 0.0))
                bar = Progress(n_train, desc=f"epoch {epoch + 1}/{run_cfg['epochs']}", quiet=quiet, initial=seen,
                               **({"stream": stream} if stream is not None else {}))
                t_epoch = time.perf_counter() - before
                tuner.start_epoch()
                silence.start_epoch()
                batches = data.batches(train_src, dcfg["batch_size"], dcfg["T"], seed=run_cfg["seed"],
                                       epoch=epoch, shuffle=True, augment=None if dcfg["augment"] == "none"
                                       else dcfg["augment"], dtype=dtype)
                for bi, (x, y) in enumerate(batches):
                    if bi < skip:
                        continue
                    t_batch = time.perf_counter()
                    if comm:  # this rank's share of the global batch
                        x, y = comm.local_batch(x, y)
                    ws = _ws(ws_cache, net, x.shape[1], dtype, opts, rule, x.shape[0])
                    if comm and run_cfg["sync_bn"]:  # BN statistics of the whole batch
                        ws.bn_sync.sum = comm.bn_sum
                    lr = optim.lr_at(ocfg, epoch * per_epoch + bi, total_steps)

                    def apply(t, grads, lr=lr):
                        if comm and t is not None:  # online: summed over the ranks at every step
                            comm.allreduce_grads(grads)
                        if ocfg["grad_clip"] > 0:
                            optim.clip_grads(grads, ocfg["grad_clip"])
                        optim.step(net.params, grads, opt_state, ocfg, lr, cfg["neuron"]["theta_min"])
                        if t is not None:  # online: the rule keeps summing into these arrays
                            for g in grads.values():
                                g.fill(0)

                    if is_fixed:   # integer STOP step and SGD: what the exported C computes (fixed/integer.py)
                        out_sum, grads, loss = fixed.run(qnet, fixed.quantize_input(qnet, x), y,
                                                         learn_last=cfg["numerics"]["learn_last"])
                        fixed.apply(qnet, grads, lr, ocfg["theta_lr_scale"], ocfg["alpha_lr_scale"])
                        fixed.to_float(qnet, net)
                        n_b, ok_b = len(y), int((out_sum.argmax(axis=1) == y).sum())
                    else:
                        ann = rule == "bpsta" and epoch < cfg["rule"]["warmup_epochs"]
                        res = run(net, net.params, x, y, dict(opts, ann=True) if ann else opts, ws=ws, rng=rng,
                                  on_step=apply if cfg["rule"]["online"] else None,
                                  grads=comm.grads(net, names, dtype) if comm else None)
                        out_sum, loss = res.out_sum, res.loss
                        n_b, ok_b = len(y), int((out_sum.argmax(axis=1) == y).sum())
                        if comm:  # the sums over the ranks (an online rule has reduced its gradients)
                            if not cfg["rule"]["online"]:
                                comm.allreduce_grads(res.grads)
                            loss, ok_b, n_b = comm.batch_sums(loss, ok_b, n_b, res.bn_stats, ctrl_c.requested)
                        guard(loss, res.grads, None if comm else ws, net)  # (ranks: the summed values)
                        if not cfg["rule"]["online"]:
                            apply(None, res.grads)
                        optim.update_bn_running(net.params, res.bn_stats)
                        guard_update(net, opt_state)
                        silence.batch(res.spike_counts, len(y))  # this rank's spikes
                    loss_sum += loss * n_b
                    correct += ok_b
                    seen += n_b
                    bar.update(n_b, loss=loss_sum / seen, acc=100.0 * correct / seen)
                    done_batches += 1
                    tuner.batch_done(time.perf_counter() - t_batch)
                    pos = (epoch, bi + 1)
                    stop = comm.stop if comm else ctrl_c.requested  # (ranks: any rank's Ctrl-C)
                    if stop or (stop_after is not None and done_batches >= stop_after):
                        raise KeyboardInterrupt
                bar.close()
                tuner.end_epoch()
                train_time = time.perf_counter() - t_epoch
                test_acc = evaluate(net, test_src, dcfg["T"], dcfg["test_batch_size"], ws_cache=ws_cache,
                                    kernels=run_cfg["kernels"])
                if comm:
                    test_acc = comm.accuracy(test_acc, len(test_src.y), ctrl_c.requested)
                    comm.check_replicas(net.params)
                row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                       "train_acc": correct / max(seen, 1), "test_acc": test_acc,
                       "lr": optim.lr_at(ocfg, (epoch + 1) * per_epoch, total_steps),
                       "seconds": train_time, "samples_per_s": seen / max(train_time, 1e-9)}
                if tuner.threads is not None:
                    row["threads"] = tuner.threads  # the auto policy's pick for this epoch
                row.update(_param_summary(net))
                metrics.append(row)
                is_best = test_acc > best
                best = max(best, test_acc)
                pos = (epoch + 1, 0)
                if root:
                    log.append(row)
                    _save_history(run_dir, net, epoch + 1)
                    _save(run_dir, net, opt_state, rng, cfg, epoch + 1, 0, metrics, is_best)
                if not quiet:
                    print(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"
                          f" | test acc {100 * test_acc:.2f}% | {row['samples_per_s']:.0f} samples/s"
                          + (f" on {tuner.threads} thread{'s' * (tuner.threads > 1)}" if tuner.threads else ""),
                          file=stream or None, flush=True)
                # (ranks: the loss and accuracy are the summed ones, so every rank stops together)
                warning = silence.end_epoch(epoch + 1, row["train_loss"], test_acc)
                if warning and root:  # also under --quiet: a run at chance is worth one line in any log
                    print(warning, file=stream or sys.stderr, flush=True)
                if (comm.stop if comm else ctrl_c.requested) and epoch + 1 < run_cfg["epochs"]:  # the last epoch just finished
                    raise KeyboardInterrupt
    except _HardStop:
        interrupted = True
        if not quiet:
            saved = os.path.exists(os.path.join(run_dir, "last.h5"))
            print("stopped at once: no checkpoint written for this batch" +
                  ("; last.h5 holds the last saved point" if saved else "; no checkpoint exists yet"),
                  file=stream or None, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        sums = None
        if pos[1] > 0:  # stopped inside an epoch: keep its running sums for the resume
            sums = {"loss_sum": loss_sum, "correct": correct, "seen": seen, "seconds": time.perf_counter() - t_epoch}
        if root:
            _save(run_dir, net, opt_state, rng, cfg, pos[0], pos[1], metrics, False, sums)
        if not quiet:
            print(f"interrupted: resumable checkpoint written; continue with: stopnp train --resume "
                  f"{os.path.join(run_dir, 'last.h5')}", file=stream or None, flush=True)
    tuner.finish()
    return RunResult(net, metrics, run_dir, best, time.perf_counter() - t_start, interrupted, root=root)


class _HardStop(KeyboardInterrupt):
    """A second Ctrl-C: stop now, mid-batch, without writing the half-updated state."""


class _DeferredInterrupt:
    """The first Ctrl-C only sets ``requested``; training stops at the next batch boundary, so the
    checkpoint never holds a half-applied update or a random stream advanced past a batch it did not
    apply (resume stays bit-exact). A second Ctrl-C stops at once (``_HardStop``)."""

    def __init__(self, quiet, stream):
        self.requested, self.quiet, self.stream, self.prev = False, quiet, stream, None

    def _handler(self, signum, frame):
        if self.requested:
            raise _HardStop
        self.requested = True
        if not self.quiet:
            print("\nCtrl-C: stopping after this batch with a resumable checkpoint (Ctrl-C again: stop now, "
                  "without one)", file=self.stream or None, flush=True)

    def __enter__(self):
        # signals reach the main thread only; a process that ignores SIGINT (nohup, a background job)
        # keeps ignoring it
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self.prev = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)
        return False


def _save_history(run_dir, net, epoch):
    """θ and α of every layer after each epoch (history.h5, for the θ/α-across-epochs plots)."""
    history.append(os.path.join(run_dir, history.NAME), net.params, epoch)


def _check_history(run_dir, net, resume):
    """A resume appends to the run's history.h5: it must be readable and hold this network's layers."""
    path = os.path.join(run_dir, history.NAME)
    src = os.path.join(os.path.dirname(os.path.abspath(resume)), history.NAME)
    path = path if _same_dir(os.path.dirname(os.path.abspath(resume)), run_dir) else src
    if os.path.isfile(path):
        history.read(path, [k for k in net.params if k.endswith((".theta", ".alpha"))])


def _param_summary(net):
    out = {}
    for layer in net.layers:
        if layer.spiking:
            out[f"{layer.name}.alpha"] = float(net.params[f"{layer.name}.alpha"][0])
            th = net.params[f"{layer.name}.theta"]
            out[f"{layer.name}.theta_mean"] = float(th.mean())
            out[f"{layer.name}.theta_std"] = float(th.std())
    return out


def _save(run_dir, net, opt_state, rng, cfg, epoch, step, metrics, is_best, partial=None):
    """last.h5 (and best.h5); ``partial``: the running sums of an epoch stopped mid-way, so that the
    resumed epoch reports the same loss and accuracy as an uninterrupted one."""
    kw = dict(params=net.params, opt_state=opt_state, rng_state=rng.bit_generator.state, config=cfg,
              epoch=epoch, step=step, metrics=metrics, extra={"epoch_partial": partial} if partial else None)
    checkpoint.save_best_and_last(run_dir, is_best=is_best, **kw)


def _is_resolved(cfg):
    return isinstance(cfg, dict) and set(cfg) == set(config_mod.SCHEMA) and all(
        set(cfg[s]) == set(config_mod.SCHEMA[s]) for s in cfg)


RUN_FILES = ("last.h5", "best.h5")  # a run worth keeping: its checkpoints (metrics alone cannot resume)
REPLACED = ("last.h5", "best.h5", "metrics.jsonl", "history.h5")  # what --force removes


def _carry_over(resume, run_dir):
    """Resuming into another folder: it starts as a copy of the run so far (last.h5, and best.h5 and the
    θ/α history when the run has them), so it is whole even if no epoch is left to train."""
    src = os.path.dirname(os.path.abspath(resume))
    if _same_dir(src, run_dir):
        return
    for name, source in (("last.h5", resume), ("best.h5", os.path.join(src, "best.h5")),
                         ("history.h5", os.path.join(src, "history.h5"))):
        if os.path.isfile(source):
            with atomic_write(os.path.join(run_dir, name)) as tmp:
                shutil.copyfile(source, tmp)


def _same_dir(a, b):
    return os.path.isdir(a) and os.path.isdir(b) and os.path.samefile(a, b)


def held_run(run_dir):
    """The checkpoints of a run already in ``run_dir`` (empty: nothing there to protect)."""
    return [f for f in RUN_FILES if os.path.exists(os.path.join(run_dir, f))]


def _check_run_dir(run_dir, resume, overwrite):
    if not run_dir:
        raise config_mod.ConfigError("run.out_dir is empty; name a run directory, e.g. --out runs/mnist")
    held = held_run(run_dir)
    own = bool(resume) and _same_dir(run_dir, os.path.dirname(os.path.abspath(resume)))
    if overwrite and not own:
        for f in REPLACED:  # the replaced run goes whole: no stale best.h5 or history epochs mixed in
            if os.path.exists(os.path.join(run_dir, f)):
                os.remove(os.path.join(run_dir, f))
        return
    if not held:
        return
    if not resume:
        cont = (f"continue it with --resume {os.path.join(run_dir, 'last.h5')}, "
                if "last.h5" in held else "")
        raise config_mod.ConfigError(f"{run_dir} already holds a run ({', '.join(held)}); {cont}choose another "
                                     f"--out, or replace it with --force")
    if not own:
        raise config_mod.ConfigError(
            f"{run_dir} holds another run ({', '.join(held)}); resuming {resume} there would replace it: "
            f"resume without --out (its own folder), into an empty --out, or replace it with --force")


def _check_resume(path, ck, net, names, ocfg, rng, cfg):
    """Everything a resume reads from the checkpoint, checked before anything is changed (one line each);
    sets ``rng`` to the saved stream and returns the stopped epoch's running sums (None at an epoch end)."""
    try:
        optim.check_state(ck.opt_state, net.params, names, ocfg, where=f"{path}: opt_state")
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    for field in ("epoch", "step"):
        v = getattr(ck, field)
        if v < 0:  # (checkpoint.load reads both as int)
            raise config_mod.ConfigError(f"{path}: {field} = {v!r} is not an integer >= 0 (corrupt checkpoint); "
                                         f"start a new run")
    if not isinstance(ck.metrics, (list, tuple)) or not all(isinstance(m, dict) for m in ck.metrics):
        raise config_mod.ConfigError(f"{path}: metrics is not a list of epoch records (corrupt checkpoint); "
                                     f"start a new run")
    if ck.step:  # mid-epoch: the saved batch position only means something for the same batch order
        saved = ck.config  # a dict: checkpoint.load refuses anything else
        for sec, key in (("data", "name"), ("data", "batch_size"), ("data", "limit_train"), ("run", "seed"),
                         ("data", "augment")):
            old, new = (saved.get(sec) or {}).get(key), cfg[sec][key]
            if old is not None and old != new:
                raise config_mod.ConfigError(
                    f"{path}: stopped inside an epoch with {sec}.{key} = {old!r}; resuming with {new!r} would "
                    f"skip the wrong batches: keep {sec}.{key} = {old!r} until the epoch ends")
    partial = ck.extra.get("epoch_partial") if ck.step and isinstance(ck.extra, dict) else None
    if partial is not None and not (isinstance(partial, dict) and all(
            isinstance(partial.get(k), (int, float)) and not isinstance(partial.get(k), bool)
            and partial.get(k) >= 0 for k in ("loss_sum", "correct", "seen", "seconds"))):
        raise config_mod.ConfigError(f"{path}: its epoch_partial record is malformed (corrupt checkpoint); start "
                                     f"a new run")
    try:
        rng.bit_generator.state = ck.rng_state
    except (ValueError, TypeError, KeyError) as e:
        raise config_mod.ConfigError(f"{path}: random generator state unreadable ({e}); start a new run") from None
    return partial


def load_network(path):
    """A Network from a checkpoint file (config and parameters validated)."""
    ck = checkpoint.load(path)
    try:
        cfg = config_mod.resolve(ck.config)
    except config_mod.ConfigError as e:
        raise checkpoint.CheckpointError(f"{path}: its config: {e}") from None
    net = from_config(cfg)
    expect = {k: v.shape for k, v in net.params.items()}
    ck = checkpoint.load(path, expect_params=expect)
    for k in net.params:
        net.params[k] = np.array(ck.params[k], dtype=net.params[k].dtype)
    _check_loaded(net, path)
    return net, ck


def _check_loaded(net, path):
    """Parameters read from ``path`` are finite and inside the ranges training keeps them in."""
    try:
        check_params(net)
    except ShapeError as e:
        raise checkpoint.CheckpointError(f"{path}: {e}") from None
    theta_min = net.config["neuron"]["theta_min"]
    for layer in net.layers:
        if not layer.spiking:
            continue
        theta, alpha = net.params[f"{layer.name}.theta"], net.params[f"{layer.name}.alpha"]
        if theta.min() < theta_min:
            raise checkpoint.CheckpointError(f"{path}: {layer.name}.theta has {theta.min():g} < neuron.theta_min "
                                             f"= {theta_min:g} (training never writes that); corrupt checkpoint?")
        if not 0 <= alpha.min() <= alpha.max() <= 1:
            raise checkpoint.CheckpointError(f"{path}: {layer.name}.alpha outside [0, 1] (training never writes "
                                             f"that); corrupt checkpoint?")
