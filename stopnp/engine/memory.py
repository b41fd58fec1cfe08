"""Memory requests checked before they are made: a refusal that states the memory needed and the memory
available, instead of a MemoryError traceback (or the kernel's OOM killer) half-way through an allocation.

    need = Σ bytes of what is about to be allocated (a lower bound: the large arrays only)
    refuse when need > MemAvailable (/proc/meminfo; os.sysconf elsewhere; no check where neither answers)

    network_bytes(layers, dtype)          the parameters (drawn in float64 before the cast)
    workspace_bytes(net, B, T_store, ...) the per-layer state, traces and stored steps of one workspace
    batch_bytes(T, B, input_shape, ...)   one encoded batch (T, B, ...)
"""
import os

import numpy as np

GIB = float(1 << 30)


class ResourceError(MemoryError):
    """A request that cannot fit in the memory available (the message says how much and what to lower)."""


def available_bytes():
    """Memory available to a new allocation now (MemAvailable), or None when the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check(need, what, fix, available=None):
    """Refuse ``need`` bytes for ``what`` if more than the memory available; ``fix`` says what to lower."""
    have = available_bytes() if available is None else available
    if have is not None and need > have:
        raise ResourceError(f"{what} needs at least {need / GIB:.3g} GiB of memory, {have / GIB:.3g} GiB available; "
                            f"{fix}")


def network_bytes(layers) -> int:
    """Bytes of the parameters of ``layers`` while they are drawn (float64, then cast: 8 + 4 per weight)."""
    n = 0
    for layer in layers:
        for syn in layer.synapses:
            if syn.op in ("linear", "conv"):
                n += int(np.prod(syn.out_shape[:1], dtype=np.int64)) * int(np.prod(syn.in_shape[:1], dtype=np.int64)) \
                    * (syn.k * syn.k if syn.op == "conv" else 1)
        n += 2 * layer.size  # θ per neuron at most, with its gradient
    return 12 * n


def workspace_bytes(net, B, itemsize, T_store=1) -> int:
    """A lower bound on one workspace: per layer u and s for ``T_store`` steps, and I, V, g, e; per
    synapse its input x for ``T_store`` steps (pre-op outputs) and its gradient."""
    per_sample = 0
    for layer in net.layers:
        per_sample += layer.size * (2 * T_store + 4)
        for syn in layer.synapses:
            if syn.pre:
                per_sample += int(np.prod(syn.in_shape, dtype=np.int64)) * (T_store + 1)
    return int(per_sample) * int(B) * int(itemsize)


def batch_bytes(T, B, input_shape, itemsize) -> int:
    """One encoded batch x (T, B, ...)."""
    return int(T) * int(B) * int(np.prod(input_shape, dtype=np.int64)) * int(itemsize)
