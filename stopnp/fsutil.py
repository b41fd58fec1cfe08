"""Atomic file replacement, shared by checkpoints and dataset caches.

    with atomic_write(path) as tmp:  ... write tmp ...
The data go to a temporary file in the destination folder, which is fsynced and then renamed onto
``path`` (atomic on POSIX); on any exception the temporary is removed and ``path`` is untouched.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, suffix=".tmp"):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stopnp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
