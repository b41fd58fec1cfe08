"""Learning rules over the same network and kernels (ALGORITHMS.md §3 table).

    stop    online, traces forward, spatial errors within each step          O(1) memory in T
    bptt    stored history, exact reference                                  O(T)
"""
from . import bptt, stop

RUNNERS = {"stop": stop.run, "bptt": bptt.run}


def runner(name):
    from ..config import ConfigError
    if name not in RUNNERS:
        raise ConfigError(f"rule {name!r} is not available; available: {', '.join(RUNNERS)}")
    return RUNNERS[name]
