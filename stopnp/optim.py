"""Optimizers, learning-rate schedule and parameter clamps (docs/algorithms.md §6).

    SGD:   m <- μ·m + (g + λ_wd·w·[weight]);  w <- w - η_p·m            (nesterov: w -= η_p(g' + μ m))
    Adam:  m <- β1 m + (1-β1) g';  v <- β2 v + (1-β2) g'²;  w <- w - η_p·m̂/(sqrt(v̂) + ε)
    clip:  g <- g·c/‖g‖ when the global norm ‖g‖ (over every gradient) exceeds c = optim.grad_clip
    BN:    running <- (1-m)·running + m·(mean over the batch's steps of the per-step statistic)
    η_p  = η(step) · (theta_lr_scale for θ | alpha_lr_scale for α | 1)
    η(step) = η0 · ½(1 + cos(π·step/total))        cosine schedule (or constant)
    clamps after every update:  α ∈ [0, 1],  θ ≥ θ_min

Weight decay applies to weights only (not θ, α, BN). The state is a plain dict of arrays, so a
checkpoint stores it as it is. The element updates (with their clamps) are kernels/optim.py.
"""
import math

import numpy as np

from .kernels import optim as kopt

BUFFERS = {"sgd": ("momentum",), "adam": ("m", "v")}


def init_state(cfg_optim: dict, params: dict, names) -> dict:
    state = {"kind": cfg_optim["kind"], "step": 0}
    for buf in BUFFERS[cfg_optim["kind"]]:
        state[buf] = {n: np.zeros(params[n].shape, params[n].dtype) for n in names}  # C order: flat views
    return state


def check_state(state, params: dict, names, cfg_optim: dict, where="opt_state"):
    """A one-line ValueError unless ``state`` is an optimizer state of ``cfg_optim``'s kind holding one
    C-contiguous float buffer of each parameter's shape for exactly ``names`` (e.g. a resumed checkpoint)."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in BUFFERS:
        raise ValueError(f"{where}: no optimizer state (kind {kind!r}); start a new run instead of resuming")
    if kind != cfg_optim["kind"]:
        raise ValueError(f"{where}: the run was trained with optim.kind = {kind!r}, the config says "
                         f"{cfg_optim['kind']!r}; resume with --set optim.kind={kind} or start a new run")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"{where}/step = {step!r}: expected an integer >= 0")
    for buf in BUFFERS[kind]:
        tree = state.get(buf)
        if not isinstance(tree, dict) or set(tree) != set(names):
            have = sorted(tree) if isinstance(tree, dict) else tree
            raise ValueError(f"{where}/{buf}: holds {have}, the run learns {sorted(names)} (was rule.learn "
                             f"changed?); resume with the run's own config or start a new run")
        for n in names:
            a = tree[n]
            if (not isinstance(a, np.ndarray) or a.shape != params[n].shape or a.dtype.kind != "f"
                    or not a.flags.c_contiguous):
                desc = f"{a.dtype}{a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise ValueError(f"{where}/{buf}/{n}: {desc}, expected a float array of shape "
                                 f"{params[n].shape}")
            if not np.isfinite(a).all():  # training never stores one (its guard stops first)
                raise ValueError(f"{where}/{buf}/{n}: contains NaN or Inf (corrupt checkpoint); resume from "
                                 f"an earlier checkpoint (best.h5) or start a new run")


def lr_at(cfg_optim: dict, step: int, total_steps: int) -> float:
    lr = cfg_optim["lr"]
    if cfg_optim["schedule"] == "cosine" and total_steps > 0:
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return lr


def _lr_scale(cfg_optim, name):
    if name.endswith(".theta"):
        return cfg_optim["theta_lr_scale"]
    if name.endswith(".alpha"):
        return cfg_optim["alpha_lr_scale"]
    return 1.0


def clip_grads(grads: dict, max_norm: float) -> float:
    """Scale all gradients so that their global L2 norm is at most ``max_norm``; returns the norm."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if max_norm > 0 and norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm
    return norm


def step(params: dict, grads: dict, state: dict, cfg_optim: dict, lr: float, theta_min: float):
    """Apply one update in place to ``params`` (and ``state``), then clamp θ and α."""
    kind = state["kind"]
    for name, g in grads.items():  # checked before any update: the kernels index flat arrays blindly
        p = params[name]
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f" or not p.flags.writeable:
            raise ValueError(f"optim.step: parameter {name!r} must be a writable float array, got "
                             f"{getattr(p, 'dtype', type(p).__name__)}")
        bufs = [state[b].get(name) if isinstance(state.get(b), dict) else None for b in BUFFERS[kind]]
        for what, a in (("gradient", g), *((f"{kind} state", b) for b in bufs)):
            if not isinstance(a, np.ndarray) or a.shape != p.shape:
                got = a.shape if isinstance(a, np.ndarray) else type(a).__name__
                raise ValueError(f"optim.step: {what} of {name!r} is {got}, the parameter is {p.shape}")
            if a is not g and (a.dtype.kind != "f" or not a.flags.writeable):
                raise ValueError(f"optim.step: {what} of {name!r} must be a writable float array")
    state["step"] += 1
    wd = cfg_optim["weight_decay"]
    t = state["step"]
    if kind == "adam":
        b1, b2 = cfg_optim["betas"]
        bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    for name, g in grads.items():
        eta = lr * _lr_scale(cfg_optim, name)
        decay = wd if name.endswith(".weight") else 0.0
        lo, hi = ((0.0, 1.0) if name.endswith(".alpha") else (theta_min, math.inf) if name.endswith(".theta")
                  else (-math.inf, math.inf))  # the clamps, applied by the kernels after the update
        # the kernels update flat views in place: a non-contiguous parameter or state buffer is updated
        # through a contiguous copy written back, so no update is lost on a reshape copy
        arrays = [params[name], *(state[b][name] for b in BUFFERS[kind])]
        work = [np.ascontiguousarray(a) for a in arrays]
        flat = [w.reshape(-1) for w in work]
        g = np.ascontiguousarray(g, dtype=work[0].dtype).reshape(-1)
        if kind == "sgd":
            kopt.sgd(flat[0], g, flat[1], eta, cfg_optim["momentum"], decay, cfg_optim["nesterov"], lo, hi)
        else:
            kopt.adam(flat[0], g, flat[1], flat[2], eta, b1, b2, cfg_optim["eps"], bc1, bc2, decay, lo, hi)
        for a, w in zip(arrays, work):
            if w is not a:
                a[...] = w


def update_bn_running(params: dict, bn_stats: dict, momentum: float = 0.1):
    """running <- (1-m)·running + m·(mean over the batch's steps of the per-step statistics)."""
    for prefix, (mean, var) in bn_stats.items():
        rm, rv = params[f"{prefix}.running_mean"], params[f"{prefix}.running_var"]
        rm *= 1 - momentum
        rm += (momentum * mean).astype(rm.dtype)
        rv *= 1 - momentum
        rv += (momentum * var).astype(rv.dtype)
