"""Optimizers, learning-rate schedule and parameter clamps (ALGORITHMS.md §6).

    SGD:   m <- μ·m + (g + λ_wd·w·[weight]);  w <- w - η_p·m            (nesterov: w -= η_p(g' + μ m))
    Adam:  m <- β1 m + (1-β1) g';  v <- β2 v + (1-β2) g'²;  w <- w - η_p·m̂/(sqrt(v̂) + ε)
    η_p  = η(step) · (theta_lr_scale for θ | alpha_lr_scale for α | 1)
    η(step) = η0 · ½(1 + cos(π·step/total))        cosine schedule (or constant)
    clamps after every update:  α ∈ [0, 1],  θ ≥ θ_min

Weight decay applies to weights only (not θ, α, BN). The state is a plain dict of arrays, so a
checkpoint stores it as it is.
"""
import math

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _sgd(p, g, m, lr, mu, wd, nesterov):
    """In place over flat arrays: m = μm + (g + wd·p); p -= lr·(nesterov ? g' + μm : m)."""
    for i in prange(p.shape[0]):
        gi = g[i] + wd * p[i]
        mi = mu * m[i] + gi
        m[i] = mi
        p[i] -= lr * (gi + mu * mi if nesterov else mi)


@njit(cache=True, parallel=True)
def _adam(p, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    """In place over flat arrays: Adam with bias corrections bc1 = 1-β1^t, bc2 = 1-β2^t."""
    for i in prange(p.shape[0]):
        gi = g[i] + wd * p[i]
        mi = b1 * m[i] + (1.0 - b1) * gi
        vi = b2 * v[i] + (1.0 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= lr * (mi / bc1) / (math.sqrt(vi / bc2) + eps)


def init_state(cfg_optim: dict, params: dict, names) -> dict:
    state = {"kind": cfg_optim["kind"], "step": 0}
    if cfg_optim["kind"] == "sgd":
        state["momentum"] = {n: np.zeros_like(params[n]) for n in names}
    else:
        state["m"] = {n: np.zeros_like(params[n]) for n in names}
        state["v"] = {n: np.zeros_like(params[n]) for n in names}
    return state


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
    state["step"] += 1
    wd = cfg_optim["weight_decay"]
    for name, g in grads.items():
        p = params[name]
        eta = lr * _lr_scale(cfg_optim, name)
        decay = wd if name.endswith(".weight") else 0.0
        flat = lambda a: a.reshape(-1)  # noqa: E731  (params/state are contiguous: views, no copies)
        if state["kind"] == "sgd":
            _sgd(flat(p), flat(g.astype(p.dtype, copy=False)), flat(state["momentum"][name]), eta,
                 cfg_optim["momentum"], decay, cfg_optim["nesterov"])
        else:
            b1, b2 = cfg_optim["betas"]
            t = state["step"]
            _adam(flat(p), flat(g.astype(p.dtype, copy=False)), flat(state["m"][name]), flat(state["v"][name]),
                  eta, b1, b2, cfg_optim["eps"], 1.0 - b1 ** t, 1.0 - b2 ** t, decay)
        if name.endswith(".alpha"):
            np.clip(p, 0.0, 1.0, out=p)
        elif name.endswith(".theta"):
            np.maximum(p, theta_min, out=p)


def update_bn_running(params: dict, bn_stats: dict, momentum: float = 0.1):
    """running <- (1-m)·running + m·(mean over the batch's steps of the per-step statistics)."""
    for prefix, (mean, var) in bn_stats.items():
        rm, rv = params[f"{prefix}.running_mean"], params[f"{prefix}.running_var"]
        rm *= 1 - momentum
        rm += (momentum * mean).astype(rm.dtype)
        rv *= 1 - momentum
        rv += (momentum * var).astype(rv.dtype)
