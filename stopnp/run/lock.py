"""One writer per run folder: ``train`` holds ``RUN_DIR/.stopnp.lock`` while it runs.

    with RunLock(run_dir, command="stopnp train ..."):   ... write the run ...

The lock file is created whole and atomically (written under a temporary name, then hard-linked to
``.stopnp.lock``: the link fails if the lock exists) and holds JSON: pid, host, since (UTC), command,
and the process start time (``/proc/<pid>/stat``, to tell a live holder from a recycled pid). It is
removed on exit, on an error and on Ctrl-C. A second writer is refused with one line naming the
holder. A lock left by a killed process (its pid is gone, or now belongs to a process started later,
on this host) is stale: it is taken over with a note. A lock from another host cannot be checked: the
line says how to remove it. Taking the lock also removes the temporary files (``.stopnp-*.tmp``) that
a write killed mid-way left in the folder: the lock holder is the only writer, so none is in use.
"""
import datetime
import glob
import json
import os
import socket
import sys

LOCK_NAME = ".stopnp.lock"


class RunLockError(RuntimeError):
    """Another process writes this run folder (the message names it and what to do)."""


def _start_ticks(pid):
    """The process's start time in clock ticks since boot (Linux), or None where /proc has no answer."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
        return int(text.rsplit(")", 1)[1].split()[19])  # field 22; the name before ")" may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, ticks):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    except (OverflowError, ValueError, TypeError):
        return False
    if ticks is not None:  # a recycled pid runs another, later process
        now = _start_ticks(pid)
        return now is None or now == ticks
    return True


def read_lock(path):
    """The holder recorded in a lock file (dict), or None if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def describe(info) -> str:
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
            + (f" ({info['command']})" if info.get("command") else ""))


class RunLock:
    """The run folder's lock (see the module docstring); a context manager."""

    def __init__(self, run_dir, command=None, note=None):
        self.run_dir = os.fspath(run_dir)
        self.path = os.path.join(self.run_dir, LOCK_NAME)
        self.command = command if command is not None else " ".join(["stopnp", *sys.argv[1:]])[:300]
        self.note = note or (lambda text: print(f"note: {text}", file=sys.stderr, flush=True))
        self.held = False
        self.created = []   # the folders acquire made, deepest first: removed again if left empty

    def acquire(self):
        d = os.path.abspath(self.run_dir)
        while not os.path.isdir(d) and d != os.path.dirname(d):
            self.created.append(d)
            d = os.path.dirname(d)
        os.makedirs(self.run_dir, exist_ok=True)
        host = socket.gethostname()
        info = {"pid": os.getpid(), "host": host,
                "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "command": self.command, "start_ticks": _start_ticks(os.getpid())}
        tmp = os.path.join(self.run_dir, f".stopnp-lock-{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f)
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    break
                except FileExistsError:
                    self._stale_or_refuse(host)
            else:
                raise RunLockError(f"{self.path}: cannot take the run folder's lock (it keeps reappearing); "
                                   f"is another stopnp train writing {self.run_dir}?")
        finally:
            os.remove(tmp)
        self._sweep()
        return self

    def _stale_or_refuse(self, host):
        holder = read_lock(self.path)
        if holder is None:  # a lock is written whole before it appears: an unreadable one is damaged
            self.note(f"{self.path}: unreadable lock file replaced")
        elif holder.get("host") != host:
            raise RunLockError(f"{self.run_dir} is being written by {describe(holder)}; wait for it to finish, or, "
                               f"if that process is gone, delete {self.path}")
        elif _alive(holder.get("pid"), holder.get("start_ticks")):
            raise RunLockError(f"{self.run_dir} is being written by {describe(holder)}; wait for it to finish or "
                               f"choose another --out")
        if read_lock(self.path) != holder:  # replaced meanwhile (another writer took it over): look again
            return
        if holder is not None:
            self.note(f"{self.run_dir}: stale lock of {describe(holder)} (no longer running) taken over")
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def _sweep(self):
        """Temporary files of writes killed mid-way (atomic_write's ``.stopnp-*.tmp``)."""
        left = [p for p in glob.glob(os.path.join(glob.escape(self.run_dir), ".stopnp-*.tmp"))
                if not os.path.basename(p).startswith(".stopnp-lock-")]
        for p in left:
            try:
                os.remove(p)
            except OSError:
                pass
        if left:
            self.note(f"{self.run_dir}: removed {len(left)} temporary file(s) left by an interrupted write")

    def release(self):
        if not self.held:
            return
        self.held = False
        holder = read_lock(self.path)
        if holder is not None and holder.get("pid") == os.getpid():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        for d in self.created:  # a run that failed before writing anything leaves no empty folder behind
            try:
                os.rmdir(d)
            except OSError:
                break

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
