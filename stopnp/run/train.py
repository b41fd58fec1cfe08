"""The training loop, in four parts: prepare, step, epoch, end of epoch.

    prepare(cfg, ...)      the data, the network, the checks (memory included), the optimizer state, a
                           resume (resume.py), the run folder (folder.py): everything checked before
                           anything is written
    step(run, x, y, ...)   one mini-batch: gradients of Σ_t E[t] (rules/) -> optional clip -> optimizer step
                           with clamps (stopnp/optim.py; online: after every time step) -> BN running
                           statistics -> the NaN guard; fixed point: the integer STOP step and SGD
                           (fixed/integer.py)
    epoch(run, ...)        the epoch's mini-batches with the progress bar (progress.py)
    end_epoch(run, ...)    test accuracy, the metrics line, θ/α history, checkpoints (checkpoint.py), the
                           silent-layer and chance check (activity.py)

Data order is a pure function of (seed, epoch), and the RNG for dropout masks / SLTT-K steps is
checkpointed, so resuming from a checkpoint (even mid-epoch) continues bit-exactly. Ctrl-C stops at the
next batch boundary with a resumable checkpoint. The run folder is locked while training (lock.py).
Under ``mpiexec -n N`` the ranks train one model data-parallel (distributed.py): each runs the rule on its
share of the batch, the gradients are summed before the same update; rank 0 alone prints and writes.
"""
import dataclasses
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial as bind

import numpy as np

from .. import config as config_mod
from .. import data, optim
from ..engine import memory, threads
from ..engine.network import from_config
from ..rules import RULES
from ..rules.common import resolve_options
from . import activity, checkpoint, folder, resume as resume_mod
from .lock import RunLock
from .progress import MetricsLog, Progress


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


@dataclass
class Run:
    """One training run: what ``prepare`` sets up, and what every batch and epoch updates."""
    cfg: dict
    net: object
    opts: dict                 # the rule's options (rules/common.resolve_options)
    names: list                # the parameters it learns
    opt_state: dict            # the optimizer's buffers (stopnp/optim.py)
    rng: object                # dropout masks, SLTT-K steps: checkpointed
    train_src: object
    test_src: object           # (a distributed run: this rank's share)
    log: object                # metrics.jsonl (None on the ranks > 0)
    metrics: list
    best: float                # the best test accuracy so far
    silence: object            # activity.ActivityCheck: silent layers, a loss stuck at chance
    pos: tuple = (0, 0)        # (epoch, index of the next batch): what a resume continues from
    partial: dict = None       # the running sums of the epoch a resume continues
    qnet: object = None        # the integer network (numerics.kind = "fixed")
    comm: object = None        # distributed.Comm of a data-parallel run, else None
    quiet: bool = False
    stream: object = None
    ws_cache: dict = field(default_factory=dict)
    ctrl_c: object = None
    done_batches: int = 0

    @property
    def root(self):
        return self.comm is None or self.comm.is_root

    @property
    def rule(self):
        return self.cfg["rule"]["name"]

    @property
    def run_dir(self):
        return self.cfg["run"]["out_dir"]

    @property
    def per_epoch(self):
        return -(-len(self.train_src.y) // self.cfg["data"]["batch_size"])

    @property
    def total_steps(self):
        return self.per_epoch * self.cfg["run"]["epochs"]

    def stop_requested(self):
        """A Ctrl-C here (a distributed run: on any rank)."""
        return self.comm.stop if self.comm else self.ctrl_c.requested


@dataclass
class EpochSums:
    """One epoch's running sums (a resumed epoch continues its checkpoint's: the same metrics)."""
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    t0: float = 0.0            # perf_counter at the epoch's start, less what a resumed epoch already ran

    def add(self, loss, correct, n):
        self.loss_sum += loss * n
        self.correct += correct
        self.seen += n

    def record(self):
        """What a checkpoint keeps of an epoch stopped mid-way."""
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen,
                "seconds": time.perf_counter() - self.t0}


def train(cfg, *, resume=None, quiet=None, stream=None, stop_after=None, overwrite=False) -> RunResult:
    """Train from a resolved (or partial) config dict. ``resume``: path to a checkpoint.

    A run directory that already holds a run is refused unless ``resume`` continues it or ``overwrite``
    replaces it (its checkpoints and metrics are then lost). The run directory is locked while training
    (lock.py): a second writer is refused.

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
    """``_train`` holding the run directory's lock (run/lock.py); in a distributed run rank 0 holds it."""
    if comm is not None and not comm.is_root:
        return _train(cfg, comm=comm, **kw)
    stream = kw["stream"]
    note = (lambda text: print(f"note: {text}", file=stream or sys.stderr, flush=True))
    with RunLock(cfg["run"]["out_dir"], note=note):
        return _train(cfg, comm=comm, **kw)


def _train(cfg, *, comm, resume, quiet, stream, stop_after, overwrite) -> RunResult:
    """prepare, then the epochs (each: ``epoch`` and ``end_epoch``) until the last or a Ctrl-C."""
    run = prepare(cfg, comm=comm, resume=resume, quiet=quiet, stream=stream, overwrite=overwrite)
    t_start = time.perf_counter()
    interrupted = False
    epochs = run.cfg["run"]["epochs"]
    sums = None
    run.ctrl_c = _DeferredInterrupt(run.quiet, stream)
    tuner = threads.PoolTuner()
    try:
        with run.ctrl_c:  # Ctrl-C stops at the next batch boundary, where the state is whole
            for ep in range(run.pos[0], epochs):
                sums = _epoch_sums(run, ep)
                epoch(run, ep, sums, tuner, stop_after)
                end_epoch(run, ep, sums, tuner)
                # (ranks: the loss and accuracy are the summed ones, so every rank stops together)
                if run.stop_requested() and ep + 1 < epochs:  # the last epoch just finished
                    raise KeyboardInterrupt
    except _HardStop:
        interrupted = True
        if not run.quiet:
            saved = os.path.exists(os.path.join(run.run_dir, "last.h5"))
            print("stopped at once: no checkpoint written for this batch" +
                  ("; last.h5 holds the last saved point" if saved else "; no checkpoint exists yet"),
                  file=stream or None, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        if run.root:  # stopped inside an epoch: keep its running sums for the resume
            save(run, *run.pos, is_best=False, partial=sums.record() if run.pos[1] > 0 else None)
        if not run.quiet:
            print(f"interrupted: resumable checkpoint written; continue with: stopnp train --resume "
                  f"{os.path.join(run.run_dir, 'last.h5')}", file=stream or None, flush=True)
    tuner.finish()
    return RunResult(run.net, run.metrics, run.run_dir, run.best, time.perf_counter() - t_start, interrupted,
                     root=run.root)


def prepare(cfg, *, comm=None, resume=None, quiet=None, stream=None, overwrite=False) -> Run:
    """Everything before the first batch, checked before anything is written (``--force`` deletes): the
    thread policy, the data and the network that must fit it and the memory, the rule's and the numerics'
    settings, the optimizer state, a resume, then the run folder, its config.toml and metrics log."""
    run_cfg, dcfg = cfg["run"], cfg["data"]
    root = comm is None or comm.is_root
    quiet = (run_cfg["quiet"] if quiet is None else quiet) or not root
    threads.set_threads(run_cfg["threads"], cores=comm.cores if comm else None)
    train_src = _limit(data.load(dcfg["name"], "train"), dcfg["limit_train"])
    test_src = _limit(data.load(dcfg["name"], "test"), dcfg["limit_test"])
    net = from_config(cfg)
    threads.fit(*threads.thread_workload(net, dcfg["batch_size"]))
    check_data(net, train_src, "train")
    check_data(net, test_src, "test")
    rule = cfg["rule"]["name"]
    check_memory(net, cfg, rule, len(train_src.y), len(test_src.y))
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
    opt_state = optim.init_state(cfg["optim"], net.params, names)
    rng = np.random.default_rng(run_cfg["seed"] + 1)
    pos, metrics, partial = (0, 0), [], None
    if resume:  # everything read and checked before the run folder is touched
        opt_state, pos, metrics, partial = resume_mod.restore(resume, net, names, rng, cfg)
    run_dir, log = run_cfg["out_dir"], None
    if root:  # (the other ranks of a distributed run write nothing)
        folder.check(run_dir, resume, overwrite)
        os.makedirs(run_dir, exist_ok=True)
        if resume:
            folder.carry_over(resume, run_dir)
        folder.write_config(run_dir, cfg)
        log = MetricsLog(os.path.join(run_dir, "metrics.jsonl"))
        log.rewrite(metrics)  # the checkpoint's epochs only: a fresh run starts empty, a resume drops rows
        # appended after its checkpoint (a write that failed after the metrics line)
    if comm:  # every rank set up alike (or all stop with the first error), and the batch splits N ways
        comm.setup_done(cfg, (train_src, test_src))
        test_src = comm.shard(test_src)  # evaluation: each rank a part, the counts summed
    best = max([m.get("test_acc", 0.0) for m in metrics], default=0.0)
    qnet = None
    if is_fixed:
        qnet = fixed.quantize(net)
        fixed.to_float(qnet, net)   # the float copy holds exactly the integer parameters (checkpoints, eval)
    blas_warning = "" if quiet else threads.blas_warning()  # printed once every check has passed
    if blas_warning:
        print(f"note: {blas_warning}", file=stream or sys.stderr, flush=True)  # advice, not a result
    silence = activity.ActivityCheck(net, cfg, error=TrainingError)
    return Run(cfg, net, opts, names, opt_state, rng, train_src, test_src, log, metrics, best, silence, pos,
               partial, qnet, comm, quiet=quiet, stream=stream)


def _epoch_sums(run, ep):
    """The running sums epoch ``ep`` starts from: a resumed epoch's, else zeros."""
    if ep == run.pos[0] and run.pos[1] and run.partial:
        p = run.partial
        return EpochSums(p["loss_sum"], p["correct"], p["seen"], time.perf_counter() - p["seconds"])
    return EpochSums(t0=time.perf_counter())


def epoch(run, ep, sums, tuner, stop_after=None):
    """The mini-batches of epoch ``ep`` from ``run.pos`` on, with the progress bar; a Ctrl-C (or
    ``stop_after`` batches in all) stops at the next batch boundary (KeyboardInterrupt)."""
    cfg, dcfg = run.cfg, run.cfg["data"]
    skip = run.pos[1] if ep == run.pos[0] else 0
    bar = Progress(len(run.train_src.y), desc=f"epoch {ep + 1}/{cfg['run']['epochs']}", quiet=run.quiet,
                   initial=sums.seen, **({"stream": run.stream} if run.stream is not None else {}))
    tuner.start_epoch()
    run.silence.start_epoch()
    batches = data.batches(run.train_src, dcfg["batch_size"], dcfg["T"], seed=cfg["run"]["seed"], epoch=ep,
                           shuffle=True, augment=None if dcfg["augment"] == "none" else dcfg["augment"],
                           dtype=np.dtype(cfg["run"]["dtype"]))
    for bi, (x, y) in enumerate(batches):
        if bi < skip:
            continue
        t_batch = time.perf_counter()
        loss, correct, n = step(run, x, y, ep, bi)
        sums.add(loss, correct, n)
        bar.update(n, loss=sums.loss_sum / sums.seen, acc=100.0 * sums.correct / sums.seen)
        run.done_batches += 1
        tuner.batch_done(time.perf_counter() - t_batch)
        run.pos = (ep, bi + 1)
        if run.stop_requested() or (stop_after is not None and run.done_batches >= stop_after):
            raise KeyboardInterrupt
    bar.close()
    tuner.end_epoch()


def step(run, x, y, ep, bi):
    """One mini-batch (batch ``bi`` of epoch ``ep``); returns (loss, correct predictions, samples), summed
    over the ranks of a distributed run."""
    ocfg, comm = run.cfg["optim"], run.comm
    if comm:  # this rank's share of the global batch
        x, y = comm.local_batch(x, y)
    lr = optim.lr_at(ocfg, ep * run.per_epoch + bi, run.total_steps)
    if run.qnet is not None:  # integer STOP step and SGD: what the exported C computes (fixed/integer.py)
        from ..fixed import integer as fixed
        out_sum, grads, loss = fixed.run(run.qnet, fixed.quantize_input(run.qnet, x), y,
                                         learn_last=run.cfg["numerics"]["learn_last"])
        fixed.apply(run.qnet, grads, lr, ocfg["theta_lr_scale"], ocfg["alpha_lr_scale"])
        fixed.to_float(run.qnet, run.net)
        return loss, int((out_sum.argmax(axis=1) == y).sum()), len(y)
    net, rule, online, dtype = run.net, run.rule, run.cfg["rule"]["online"], np.dtype(run.cfg["run"]["dtype"])
    ws = _ws(run.ws_cache, net, x.shape[1], dtype, run.opts, rule, x.shape[0])
    if comm and run.cfg["run"]["sync_bn"]:  # BN statistics of the whole batch
        ws.bn_sync.sum = comm.bn_sum
    ann = rule == "bpsta" and ep < run.cfg["rule"]["warmup_epochs"]
    overlap = comm and not online and run.cfg["run"]["mpi_overlap"]  # the sum starts during the last backward
    res = RULES[rule].run(net, net.params, x, y, dict(run.opts, ann=True) if ann else run.opts, ws=ws,
                          rng=run.rng, on_step=bind(update, run, lr) if online else None,
                          grads=comm.grads(net, run.names, dtype) if comm else None,
                          on_grads_final=comm.grads_final if overlap else None)
    loss, correct, n = res.loss, int((res.out_sum.argmax(axis=1) == y).sum()), len(y)
    if comm:  # the sums over the ranks (an online rule has reduced its gradients; overlap: the rest, the wait)
        if not online:
            comm.allreduce_grads(res.grads)
        loss, correct, n = comm.batch_sums(loss, correct, n, res.bn_stats, run.ctrl_c.requested)
    guard(loss, res.grads, None if comm else ws, net)  # (ranks: the summed values)
    if not online:
        update(run, lr, None, res.grads)
    optim.update_bn_running(net.params, res.bn_stats)
    guard_update(net, run.opt_state)
    run.silence.batch(res.spike_counts, len(y))  # this rank's spikes
    return loss, correct, n


def update(run, lr, t, grads):
    """Clip (optim.grad_clip), then one optimizer step with the clamps. ``t``: an online update after
    step t, so the gradients (summed over the ranks first) the rule keeps summing into are zeroed."""
    ocfg = run.cfg["optim"]
    if run.comm and t is not None:  # online: summed over the ranks at every step
        run.comm.allreduce_grads(grads)
    if ocfg["grad_clip"] > 0:
        optim.clip_grads(grads, ocfg["grad_clip"])
    optim.step(run.net.params, grads, run.opt_state, ocfg, lr, run.cfg["neuron"]["theta_min"])
    if t is not None:
        for g in grads.values():
            g.fill(0)


def end_epoch(run, ep, sums, tuner):
    """Test accuracy, the metrics line, θ/α history, last.h5 (and best.h5), the epoch line, and the
    silent-layer and chance check (a warning, or TrainingError after epochs in a row at chance)."""
    cfg, dcfg, net, comm = run.cfg, run.cfg["data"], run.net, run.comm
    train_time = time.perf_counter() - sums.t0
    test_acc = evaluate(net, run.test_src, dcfg["T"], dcfg["test_batch_size"], ws_cache=run.ws_cache,
                        kernels=cfg["run"]["kernels"])
    if comm:
        test_acc = comm.accuracy(test_acc, len(run.test_src.y), run.ctrl_c.requested)
        comm.check_replicas(net.params)
    seen = sums.seen
    row = {"epoch": ep + 1, "train_loss": sums.loss_sum / max(seen, 1), "train_acc": sums.correct / max(seen, 1),
           "test_acc": test_acc, "lr": optim.lr_at(cfg["optim"], (ep + 1) * run.per_epoch, run.total_steps),
           "seconds": train_time, "samples_per_s": seen / max(train_time, 1e-9)}
    if tuner.threads is not None:
        row["threads"] = tuner.threads  # the auto policy's pick for this epoch
    row.update(_param_summary(net))
    run.metrics.append(row)
    is_best = test_acc > run.best
    run.best = max(run.best, test_acc)
    run.pos = (ep + 1, 0)
    if run.root:
        run.log.append(row)
        folder.save_history(run.run_dir, net, ep + 1)
        save(run, ep + 1, 0, is_best=is_best)
    if not run.quiet:
        print(f"epoch {ep + 1}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"
              f" | test acc {100 * test_acc:.2f}% | {row['samples_per_s']:.0f} samples/s"
              + (f" on {tuner.threads} thread{'s' * (tuner.threads > 1)}" if tuner.threads else ""),
              file=run.stream or None, flush=True)
    warning = run.silence.end_epoch(ep + 1, row["train_loss"], test_acc)
    if warning and run.root:  # also under --quiet: a run at chance is worth one line in any log
        print(warning, file=run.stream or sys.stderr, flush=True)


def save(run, ep, next_batch, *, is_best, partial=None):
    """last.h5 (and best.h5) at position (epoch, next batch); ``partial``: the running sums of an epoch
    stopped mid-way, so that the resumed epoch reports the same loss and accuracy as an uninterrupted one."""
    checkpoint.save_best_and_last(run.run_dir, is_best=is_best, params=run.net.params, opt_state=run.opt_state,
                                  rng_state=run.rng.bit_generator.state, config=run.cfg, epoch=ep,
                                  step=next_batch, metrics=run.metrics,
                                  extra={"epoch_partial": partial} if partial else None)


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


def _param_summary(net):
    out = {}
    for layer in net.layers:
        if layer.spiking:
            out[f"{layer.name}.alpha"] = float(net.params[f"{layer.name}.alpha"][0])
            th = net.params[f"{layer.name}.theta"]
            out[f"{layer.name}.theta_mean"] = float(th.mean())
            out[f"{layer.name}.theta_std"] = float(th.std())
    return out


def _is_resolved(cfg):
    return isinstance(cfg, dict) and set(cfg) == set(config_mod.SCHEMA) and all(
        set(cfg[s]) == set(config_mod.SCHEMA[s]) for s in cfg)
