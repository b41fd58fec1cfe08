"""Atomic file replacement, shared by checkpoints and dataset caches.

    with atomic_write(path) as tmp:  ... write tmp ...
The data go to a temporary file in the destination folder, which is fsynced and then renamed onto
``path`` (atomic on POSIX); on any exception the temporary is removed and ``path`` is untouched.
A failed write (a full disk, a read-only folder: OSError, HDF5 reports it in several lines) becomes
``WriteError``: one line naming ``path`` (not the temporary) and the fix.
"""
import contextlib
import errno
import os
import tempfile


class WriteError(OSError):
    """A file could not be written; the message is one line naming it and the fix."""


def write_error(path, e) -> WriteError:
    """``e`` (raised while writing ``path``) as a one-line WriteError."""
    text = str(e)
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in text or "errno = 28" in text:
        why = "the disk is full; free some space (or choose another --out)"
    elif getattr(e, "errno", None) in (errno.EACCES, errno.EROFS, errno.EPERM) or "Permission denied" in text:
        why = "no permission to write there; choose another folder"
    else:
        first = (getattr(e, "strerror", None) or (text.strip().splitlines() or [""])[0])[:200]
        why = f"{type(e).__name__}: {first}"
    return WriteError(f"{path}: could not be written ({why}); the previous file, if any, is kept")


@contextlib.contextmanager
def atomic_write(path, suffix=".tmp"):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".stopnp-", suffix=suffix, dir=folder)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from None
        raise
