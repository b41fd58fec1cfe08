"""Data-parallel training over MPI: one model on N processes (``mpiexec -n N stopnp train CONFIG``).

Every rank builds the same global batches (order and augmentation are pure functions of (seed, epoch))
and runs the rule on its contiguous share, samples ⌊r·n/N⌋ <= b < ⌊(r+1)·n/N⌋ of a batch of n. The
rules compute means over the samples they are given (the loss gradient carries 1/n_r), so with
w_r = n_r / n

    g = Σ_r w_r · g_r        the gradient of the batch-mean loss over all n samples (W, θ, α, BN γ/β)
    L = Σ_r w_r · L_r        the loss; BN batch statistics (for the running averages) likewise
    correct = Σ_r correct_r

An MPI sum over a flat buffer that the rule writes its gradients into (no copies) gives every rank the
same g; every rank applies the same update, so the replicas stay identical (checked after each epoch: a
CRC of the parameters, gathered). The buffer holds the layers bottom first, so the top layers' gradients
are its tail. With ``run.mpi_overlap`` (the default) the sum overlaps the batch's last backward pass:
the rule names each layer's gradients as they become final, top layer first (``on_grads_final``,
rules/common.FinalGrads), and ``grads_final`` starts a non-blocking MPI_Iallreduce of the final tail
as soon as it holds ``run.mpi_bucket_kib``, then lets MPI progress (Testall) between layers;
``allreduce_grads`` starts the rest and waits for all. Each element is still one sum over the ranks of
the same values. Without it, one blocking MPI_Allreduce over the whole buffer. ``rule.online``: the
buffer is reduced after every step, before each update (blocking). The loss, counts, BN statistics and
the Ctrl-C flag travel together in one small float64 Allreduce per batch.

BN uses each rank's own batch statistics (as data-parallel PyTorch does by default). With
``run.sync_bn`` it uses the whole batch's instead: the forward sums Σx, then Σ(x - μ)², and the backward
Σgy and Σgy·x̂ over the ranks at every step (``Workspace.bn_sync``; three small Allreduces per BN layer and
step), which gives the one-process result within rounding.

Rounding: w_r = 1/N is exact for N a power of two, and the two-rank sum a + b is the same on both ranks,
but the result is not bitwise that of one process at the same batch: the rules sum each gradient over
the steps t and, inside a step, over the batch (BLAS for dense layers, 8 sample groups in sequence for
convolutions), so splitting the batch regroups the float sums (Σ_t Σ_b versus Σ_r Σ_t Σ_{b∈r}). N ranks
at B/N equal one process at B within float32 (float64) rounding.

Faults: a collective that has not returned after ``run.mpi_timeout`` seconds ends the job: one line
on stderr, then MPI_Abort, which has the launcher end every rank (a process that merely exits is not
always taken as a failure by the launcher; if Abort itself has not ended the process within
``ABORT_GRACE`` seconds, SIGALRM does). A rank that dies is noticed by the launcher (mpiexec) itself. An
error that only this rank sees (a checkpoint write that fails, a bug) ends the job the same way at once.
A run that ends normally waits (watched) until every rank has finished before MPI is finalized, so a
rank that hangs at the very end is caught too. Errors in the set-up (a bad config, a missing file,
launch checks) are exchanged before the first batch, so every rank stops with the same one line,
printed by rank 0.

Nothing here is imported by a single-process run: mpi4py is loaded only when the run is distributed.
"""
import hashlib
import json
import os
import signal
import sys
import threading
import time
import zlib

import numpy as np

from ..config import ConfigError

INSTALL = ("pip install -e \".[mpi]\" (mpi4py and MPICH as wheels; or pip install mpi4py against a system "
           "MPI)")
LAUNCH_SIZE_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")  # Open MPI, MPICH/Intel, MVAPICH


def launched_size():
    """Processes in the MPI job that started this one, as the launcher's environment says (None: none)."""
    for name in LAUNCH_SIZE_ENV:
        v = os.environ.get(name, "")
        if v.isdigit():
            return int(v)
    return None


def wanted(cfg) -> bool:
    """Whether this run is distributed: ``run.distributed`` = "mpi", or "auto" under an N > 1 launch."""
    mode = cfg["run"]["distributed"]
    return mode == "mpi" or (mode == "auto" and (launched_size() or 1) > 1)


def communicator(cfg):
    """The run's communicator (``Comm``), or None for a single-process run (mpi4py never imported)."""
    if not wanted(cfg):
        return None
    try:
        from mpi4py import MPI
    except ImportError as e:
        how = ("run.distributed = 'mpi'" if cfg["run"]["distributed"] == "mpi"
               else f"this launch ({launched_size()} processes under mpiexec)")
        raise ConfigError(f"{how} needs mpi4py and an MPI library ({e}); install them with {INSTALL}") from None
    return Comm(MPI, cfg["run"]["mpi_timeout"], cfg["run"]["mpi_bucket_kib"] * 1024)


class Refused(ConfigError):
    """A launch or set-up error agreed by every rank; ``silent`` on all but rank 0 (one line per job)."""

    def __init__(self, message, silent=False):
        super().__init__(message)
        self.silent = silent


def cores_per_rank(comm, MPI):
    """This rank's share of its cores: the CPUs it may run on, divided among the ranks on the same node
    that may run on any of them (so nothing is oversubscribed, bound or not)."""
    mine = set(os.sched_getaffinity(0))
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        sets = node.allgather(sorted(mine))
    finally:
        node.Free()
    sharing = sum(1 for s in sets if mine & set(s))
    return max(1, len(mine) // max(sharing, 1))


OUTPUT_GRACE = 1.0  # seconds for the launcher to pass on this rank's last line before Abort kills it
ABORT_GRACE = 10    # seconds MPI_Abort has to end the job before SIGALRM ends this process


def end_job(MPI, code):
    """Ends every rank of the job: MPI_Abort (the launcher kills the others); callable from any thread.
    The launcher forwards output asynchronously and drops what it has not forwarded when Abort kills
    the job, so the rank's last line gets ``OUTPUT_GRACE`` seconds first. Should Abort neither return
    nor end the process (a broken MPI library), SIGALRM ends it."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(OUTPUT_GRACE)
    signal.alarm(ABORT_GRACE)
    try:
        MPI.COMM_WORLD.Abort(code)
    finally:
        os._exit(code)


class _Watchdog:
    """Ends the job when a collective has waited longer than ``timeout`` seconds."""

    def __init__(self, timeout, rank, MPI):
        self.timeout, self.rank, self.since, self.what, self.MPI = float(timeout), rank, None, "", MPI
        if self.timeout > 0:
            threading.Thread(target=self._watch, name="stopnp-mpi-watchdog", daemon=True).start()

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            since = self.since
            if since is not None and time.monotonic() - since > self.timeout:
                print(f"stopnp (rank {self.rank}): no answer from the other ranks for {self.timeout:g} s in "
                      f"{self.what} (a rank stopped or hangs); ending the job (run.mpi_timeout)",
                      file=sys.stderr, flush=True)
                end_job(self.MPI, 3)

    def __call__(self, what):
        self.what = what
        return self

    def __enter__(self):
        self.since = time.monotonic()

    def __exit__(self, *exc):
        self.since = None
        return False


def _digest(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def data_digest(src) -> str:
    """Labels, shapes and the first and last 64 samples of a source: enough to tell two files apart."""
    n = len(src.y)
    head, tail = np.asarray(src.x[:min(n, 64)]), np.asarray(src.x[max(0, n - 64):])
    return _digest([list(src.x.shape), str(src.x.dtype)], np.ascontiguousarray(src.y).tobytes(),
                   np.ascontiguousarray(head).tobytes(), np.ascontiguousarray(tail).tobytes())


class Comm:
    """MPI_COMM_WORLD for one training run: batch shares, reductions, agreement on errors."""

    def __init__(self, MPI, timeout, bucket_bytes=256 * 1024):
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        self.is_root = self.rank == 0
        self.cores = cores_per_rank(self.comm, MPI)
        self.watch = _Watchdog(timeout, self.rank, MPI)
        self.set_up = False
        self.weight = 1.0            # w_r of the current batch
        self.stop = False            # a Ctrl-C seen by any rank (agreed at each batch)
        self._flat, self._grads, self._span = None, None, {}
        self._requests, self._ready, self._started = [], 0, 0   # the overlap: tail [_ready, _started) final
        self.reduce_seconds, self.reduced_bytes, self.reductions = 0.0, 0, 0
        self.bucket_bytes = bucket_bytes  # the overlap starts a sum once this many bytes are final
        self.early_bytes = 0  # bytes whose sum started during the backward pass (the overlap)

    # -- set-up -------------------------------------------------------------------------------------
    def run(self, fn, *args, **kw):
        """``fn`` (the training run) on this rank, then a watched barrier: it returns once every rank has
        finished. An error before ``setup_done`` is exchanged with the other ranks there; an error after
        it that this rank alone sees ends the job."""
        try:
            result = fn(*args, comm=self, **kw)
            with self.watch("the end of the run"):
                self.comm.Barrier()  # every rank finished: none is left waiting in MPI_Finalize
        except BaseException as e:
            if not self.set_up:
                self._exchange(f"{e}" if str(e) else type(e).__name__, None)
                raise  # (_exchange raises the agreed error instead unless this rank's is the first)
            from .train import TrainingError
            if isinstance(e, (TrainingError, SystemExit)):
                if not self.is_root:
                    e.silent = True
                raise
            print(f"stopnp (rank {self.rank}): error: {e or type(e).__name__}; ending the job",
                  file=sys.stderr, flush=True)
            end_job(self.MPI, 130 if isinstance(e, KeyboardInterrupt) else 2)
        return result

    def setup_done(self, cfg, sources):
        """Every rank finished its set-up: same config and data everywhere, the batch splits N ways."""
        self._exchange(None, _digest({k: v for k, v in cfg.items()}), [data_digest(s) for s in sources])
        B, N = cfg["data"]["batch_size"], self.size
        n_train = len(sources[0].y)
        if N > B:
            raise Refused(f"{N} ranks but data.batch_size = {B}: every rank needs at least one sample; launch "
                          f"at most {B} ranks (mpiexec -n) or raise data.batch_size", not self.is_root)
        if B % N:
            raise Refused(f"data.batch_size = {B} does not split into {N} equal shares; use a multiple of {N} or "
                          f"a rank count that divides {B}", not self.is_root)
        last = n_train % B
        if last and last < N:
            raise Refused(f"the last batch of each epoch has {last} sample(s) ({n_train} % {B}), fewer than the "
                          f"{N} ranks; change data.limit_train or data.batch_size", not self.is_root)
        if cfg["numerics"]["kind"] == "fixed":
            raise Refused("numerics.kind = 'fixed' trains in one process only; launch without mpiexec",
                          not self.is_root)
        if cfg["model"]["dropout"] > 0:
            raise Refused("model.dropout > 0 is not supported across ranks (the ranks would draw the same "
                          "masks); set model.dropout = 0 or train in one process", not self.is_root)
        self.set_up = True

    def _exchange(self, error, cfg_digest, data_digests=None):
        with self.watch("the set-up check"):
            rows = self.comm.allgather((error, cfg_digest, data_digests))
        failed = [(r, e) for r, (e, _, _) in enumerate(rows) if e is not None]
        if failed:
            r, e = failed[0]
            if error is not None and r == self.rank:
                if not self.is_root:
                    raise Refused(error, silent=True)
                return  # rank 0's own error: re-raised by the caller as it is
            raise Refused(f"rank {r}: {e}", silent=not self.is_root)
        for r, (_, c, d) in enumerate(rows):
            if c != rows[0][1]:
                raise Refused(f"rank {r} runs another config than rank 0; launch every rank with the same "
                              f"CONFIG and --set options", not self.is_root)
            if d != rows[0][2]:
                raise Refused(f"rank {r} reads other data than rank 0 (data.name); give every node the same "
                              f"dataset file", not self.is_root)

    # -- batches ------------------------------------------------------------------------------------
    def bounds(self, n):
        return self.rank * n // self.size, (self.rank + 1) * n // self.size

    def local_batch(self, x, y):
        """This rank's share of a global batch (x time-major (T, n, ...)); sets the weight n_r / n."""
        lo, hi = self.bounds(len(y))
        self.weight = (hi - lo) / len(y)
        xs = x[:, lo:hi]
        return (xs if x.strides[0] == 0 else np.ascontiguousarray(xs)), y[lo:hi]

    def grads(self, net, names, dtype):
        """Zeroed gradient arrays for the rule: views into one flat buffer (reduced in place)."""
        key = (tuple(names), np.dtype(dtype))
        if self._grads is None or self._grads[0] != key:
            sizes = [net.params[n].size for n in names]
            flat = np.zeros(sum(sizes), dtype)
            views, at, self._span = {}, 0, {}
            for n, k in zip(names, sizes):
                views[n] = flat[at:at + k].reshape(net.params[n].shape)
                self._span[n] = (at, at + k)
                at += k
            self._grads, self._flat = (key, views), flat
        else:
            self._flat.fill(0)
        self._ready = self._started = self._flat.size
        return self._grads[1]

    def grads_final(self, names):
        """The overlap hook (a rule's ``on_grads_final``): the gradients ``names`` (the arrays from
        ``grads``) are final on this rank. When they extend the final tail of the buffer downward, the tail
        is summed (non-blocking) once it holds ``bucket_bytes``; names out of that order wait for
        ``allreduce_grads``. Then MPI progresses the sums under way."""
        spans = [self._span[n] for n in names]
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        if hi == self._ready and sum(b - a for a, b in spans) == hi - lo:
            self._ready = lo
        t = time.perf_counter()
        pending = (self._started - self._ready) * self._flat.itemsize
        if pending and pending >= self.bucket_bytes:
            self._start(self._ready, self._started)
        if self._requests:
            self.MPI.Request.Testall(self._requests)
        self.reduce_seconds += time.perf_counter() - t

    def _start(self, lo, hi):
        """Σ_r w_r·g_r of flat[lo:hi], non-blocking (in place)."""
        part = self._flat[lo:hi]
        if self.weight != 1.0:
            part *= part.dtype.type(self.weight)
        self._requests.append(self.comm.Iallreduce(self.MPI.IN_PLACE, part, op=self.MPI.SUM))
        self._started = lo

    def allreduce_grads(self, grads):
        """g <- Σ_r w_r·g_r in place (``grads``: the arrays from ``grads``): the part not started by
        ``grads_final``, then the wait for every part."""
        flat = self._flat
        if any(not np.shares_memory(g, flat) for g in grads.values()):
            raise ValueError("allreduce_grads: the gradients must be the arrays Comm.grads returned")
        t = time.perf_counter()
        if self._requests:  # the overlap: the rest, non-blocking as the parts before it
            self.early_bytes += flat[self._started:].nbytes
            if self._started > 0:
                self._start(0, self._started)
            with self.watch("the gradient sum"):
                self.MPI.Request.Waitall(self._requests)
            self._requests = []
        else:
            if self.weight != 1.0:
                flat *= flat.dtype.type(self.weight)
            with self.watch("the gradient sum"):
                self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        self._ready = self._started = flat.size
        self.reduce_seconds += time.perf_counter() - t
        self.reduced_bytes += flat.nbytes
        self.reductions += 1

    def bn_sum(self, a, weighted):
        """Synchronized BN (``Workspace.bn_sync``): per-channel sums over every rank's share, in place;
        ``weighted``: sums of errors, each rank's scaled by w_r and the total returned in this rank's scale."""
        if weighted and self.weight != 1.0:
            a *= a.dtype.type(self.weight)
        t = time.perf_counter()
        with self.watch("the BN statistics sum"):
            self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)
        self.reduce_seconds += time.perf_counter() - t
        self.reduced_bytes += a.nbytes
        if weighted and self.weight != 1.0:
            a /= a.dtype.type(self.weight)

    def batch_sums(self, loss, correct, n, bn_stats, stop):
        """Global loss, correct and sample counts of the batch; BN statistics averaged in place; the stop
        flag (any rank's Ctrl-C) in ``self.stop``."""
        stats = [a for pair in bn_stats.values() for a in pair]
        buf = np.concatenate([[loss * self.weight, correct, n, float(bool(stop))],
                              *[np.asarray(a, np.float64).reshape(-1) * self.weight for a in stats]])
        with self.watch("the batch sums"):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        at = 4
        for a in stats:
            a[...] = buf[at:at + a.size].reshape(a.shape)
            at += a.size
        self.stop = buf[3] > 0
        return float(buf[0]), int(round(buf[1])), int(round(buf[2]))

    # -- evaluation and checks ----------------------------------------------------------------------
    def shard(self, src):
        """This rank's contiguous part of an evaluation source."""
        import dataclasses
        lo, hi = self.bounds(len(src.y))
        return dataclasses.replace(src, x=src.x[lo:hi], y=src.y[lo:hi])

    def accuracy(self, acc, n, stop=False):
        """Accuracy over all ranks' shards from this rank's ``acc`` on ``n`` samples; agrees on ``stop``."""
        buf = np.array([round(acc * n), n, float(bool(stop))], np.float64)
        with self.watch("the evaluation sum"):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self.stop = buf[2] > 0
        return float(buf[0] / max(buf[1], 1))

    def check_replicas(self, params):
        """Every rank holds the same parameters (a CRC each, gathered); raises if not."""
        crc = 0
        for k in sorted(params):
            crc = zlib.crc32(np.ascontiguousarray(params[k]).view(np.uint8), crc)
        with self.watch("the replica check"):
            crcs = self.comm.allgather(crc)
        if len(set(crcs)) > 1:
            from .train import TrainingError
            raise TrainingError(f"the ranks' parameters differ after the update (CRCs {crcs}); the MPI library's "
                                f"sum is not the same on every rank: report it with `mpiexec --version`")
