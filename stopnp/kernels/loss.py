"""Per-step losses on the output o[t] and their gradients (docs/algorithms.md §2).

    E[t]        = c_ce · CE(softmax(o[t]), y) + c_mse · MSE(o[t], onehot(y))
    ∂E[t]/∂o[t] = c_ce · (softmax(o[t]) - onehot(y)) / B + c_mse · 2 (o[t] - onehot(y)) / (B·C)

with (c_ce, c_mse) = (1, 0) for "ce", (1-λ, λ) for "ce_mse" (SLTT/OTTT, λ = 0.05), (0, 1) for "mse";
both multiplied by 1/T when the loss is the mean over steps instead of the sum. CE and MSE are
batch means (MSE also over classes, as torch's mse_loss).
"""
import math

from numba import njit


def coefficients(kind: str, mix: float, reduce: str, T: int) -> tuple:
    c_ce, c_mse = {"ce": (1.0, 0.0), "ce_mse": (1.0 - mix, mix), "mse": (0.0, 1.0)}[kind]
    scale = 1.0 / T if reduce == "mean" else 1.0
    return c_ce * scale, c_mse * scale


@njit(cache=True)
def step_loss(go, o, y, c_ce, c_mse):
    """Writes ∂E[t]/∂o[t] into ``go`` (B, C); returns E[t]."""
    B, C = o.shape
    total = 0.0
    for b in range(B):
        m = o[b, 0]
        for c in range(1, C):
            m = max(m, o[b, c])
        z = 0.0
        for c in range(C):
            z += math.exp(o[b, c] - m)
        lse = m + math.log(z)
        total += c_ce * (lse - o[b, y[b]]) / B
        for c in range(C):
            hot = 1.0 if c == y[b] else 0.0
            p = math.exp(o[b, c] - lse)
            d = o[b, c] - hot
            total += c_mse * d * d / (B * C)
            go[b, c] = c_ce * (p - hot) / B + c_mse * 2.0 * d / (B * C)
    return total
