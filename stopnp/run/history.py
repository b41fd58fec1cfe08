"""history.h5: θ and α of every spiking layer after each epoch (the θ/α-across-epochs plots).

    /<epoch>/<layer>.theta, /<epoch>/<layer>.alpha      one group per finished epoch (1, 2, ...)

``append`` rewrites the file atomically (a copy with the new epoch, then a rename): a crash leaves the
previous history whole. ``read`` returns {epoch: {name: array}} or raises a one-line HistoryError
naming the file, what is wrong and the fix.
"""
import os
import shutil

import numpy as np

from ..fsutil import atomic_write

NAME = "history.h5"


class HistoryError(ValueError):
    """history.h5 is unreadable or does not match the run's layers."""


def _fix(path):
    return f"move {path} away (or delete it): only the θ/α-across-epochs figure needs it"


def read(path, names):
    """{epoch: {name: array}} for the parameter ``names`` (e.g. 'conv1.theta'); every epoch must hold all."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            out = {}
            for key, g in f.items():
                if not key.isdigit() or int(key) < 1 or not isinstance(g, h5py.Group):
                    raise HistoryError(f"{path}: unexpected entry {key!r} (not an epoch); {_fix(path)}")
                missing = [n for n in names if n not in g]
                if missing:
                    raise HistoryError(f"{path}: epoch {key} has no {missing[0]} (not this run's history?); "
                                       f"{_fix(path)}")
                out[int(key)] = {n: np.asarray(g[n][...], dtype=float) for n in names}
    except HistoryError:
        raise
    except Exception as e:  # h5py reports damage as OSError, KeyError, RuntimeError...
        text = (str(e).strip().splitlines() or [""])[0]
        raise HistoryError(f"{path}: corrupt or truncated ({type(e).__name__}: {text}); {_fix(path)}") from None
    bad = [(e, n) for e, d in out.items() for n, v in d.items() if not np.isfinite(v).all()]
    if bad:
        raise HistoryError(f"{path}: epoch {bad[0][0]} {bad[0][1]} holds NaN/Inf; {_fix(path)}")
    return dict(sorted(out.items()))


def append(path, params, epoch):
    """Add (or replace) ``epoch`` with the θ and α in ``params``."""
    import h5py
    with atomic_write(path) as tmp:
        if os.path.exists(path):
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            if str(epoch) in f:
                del f[str(epoch)]
            g = f.create_group(str(epoch))
            for k, v in params.items():
                if k.endswith((".theta", ".alpha")):
                    g.create_dataset(k, data=v)
