"""Number formats: float32 / float64, and the fixed-point formats shared with the C export.

A fixed-point value with ``f`` fractional bits stores the integer q = round(x · 2^f). Every quantity
of the network has its own format (``Formats``, all configurable in the ``numerics`` config section):

    name   holds                                        storage          default
    w      weights W (BN folded in)                     int{w_bits}      w_bits 16; per layer the most
                                                                         fractional bits that hold max|W|
                                                                         (w_scale "layer"), or w_frac for
                                                                         every layer (w_scale "global");
                                                                         w_headroom 1 spare bit to grow
    x      layer inputs: image pixels, pooled spikes,   int32            x_frac 8  (a spike is 2^8)
           and the STOP weight trace w~
    v      I, U, V, θ, BN-folded bias, th~, al~          int32            v_frac 12
    a      leak α (0 ≤ α ≤ 1)                            int32            a_frac 15 (α = 1 is 2^15)
    p      surrogate φ, softmax probabilities           int32            p_frac 14
    e      errors g, δ                                   int32            e_frac 16
    g      gradient accumulators ΔW, Δθ, Δα              int32            g_frac 16
    lr     learning rate                                 int32            lr_frac 16

Rounding: every narrowing is ``rshift(a, n)`` = a / 2^n rounded half away from zero (symmetric, and the
same in C without relying on the sign behaviour of >> on negative numbers); every division is ``rdiv``,
also half away from zero. Saturation: every stored value is clipped to its storage range (``sat``).
Products and sums are exact in int64 before the one rounding at their end. No floating point and no
libm: exp for the surrogate and the softmax is ``exp_neg``, a base-2 split with a cubic for 2^r.

These functions work elementwise on int64 NumPy arrays (or Python ints); ``export/c.py`` writes the
same operations in C99, and tests check the two bit for bit.
"""
from dataclasses import dataclass, fields

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

# 2^r for r in [0, 1) ≈ 1 + r·(C1 + r·(C2 + r·C3)) in Q(EXP_FRAC): a cubic through 2^0 and 2^1
# (C1 + C2 + C3 = 1), max error 1e-4 over [0, 1).
EXP_FRAC = 16
EXP_C = (45600, 14752, 5184)          # 0.69580, 0.22510, 0.07910 in Q16 (sum = 65536)
LOG2E_Q16 = 94548                     # log2(e) in Q16


@dataclass(frozen=True)
class Formats:
    """Fractional bits (and the weight storage width) of every fixed-point quantity."""
    w_bits: int = 16
    w_frac: int = 12
    w_scale: str = "layer"
    w_headroom: int = 1
    x_frac: int = 8
    v_frac: int = 12
    a_frac: int = 15
    p_frac: int = 14
    e_frac: int = 16
    g_frac: int = 16
    lr_frac: int = 16

    def check(self):
        from ..config import ConfigError
        if self.w_bits not in (8, 16, 32):
            raise ConfigError(f"numerics.w_bits = {self.w_bits}: weights are stored as int8, int16 or int32 "
                              f"(8, 16 or 32)")
        if self.w_scale not in ("layer", "global"):
            raise ConfigError(f"numerics.w_scale = {self.w_scale!r}: valid choices are layer, global")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name not in ("w_bits", "w_scale", "w_headroom") and not 0 <= v <= 24:
                raise ConfigError(f"numerics.{f.name} = {v}: fractional bits must be in 0..24")
        if not 0 <= self.w_headroom <= 8:
            raise ConfigError(f"numerics.w_headroom = {self.w_headroom}: expected 0..8 bits")
        if self.w_scale == "global" and self.w_frac >= self.w_bits:
            raise ConfigError(f"numerics.w_frac = {self.w_frac} leaves no integer bit in int{self.w_bits} "
                              f"weights; use w_frac < w_bits")
        if self.a_frac > 30 or self.p_frac > EXP_FRAC:
            raise ConfigError(f"numerics.p_frac must be <= {EXP_FRAC}")
        return self

    @property
    def w_range(self):
        return -(1 << (self.w_bits - 1)), (1 << (self.w_bits - 1)) - 1

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}


def formats_from_config(cfg: dict) -> Formats:
    sec = cfg.get("numerics", {})
    return Formats(**{f.name: type(f.default)(sec.get(f.name, f.default)) for f in fields(Formats)}).check()


def weight_frac(fmt: Formats, w) -> int:
    """Fractional bits of one layer's weights: ``fmt.w_frac`` (global), or (per layer) the most bits
    with which 2^w_headroom · max|W| still fits the int{w_bits} range (headroom: room for the weights
    to grow during on-device learning before they saturate), in 0..min(24, w_bits - 1)."""
    if fmt.w_scale == "global":
        return fmt.w_frac
    top = min(24, fmt.w_bits - 1)
    m = float(np.max(np.abs(w))) if np.size(w) else 0.0
    if m == 0.0:
        return top
    frac = int(np.floor(np.log2(fmt.w_range[1] / m))) - fmt.w_headroom
    return max(0, min(top, frac))


def is_fixed(cfg: dict) -> bool:
    return cfg.get("numerics", {}).get("kind", "float") == "fixed"


# ---------------------------------------------------------------------------------------------
# integer primitives (int64 arrays or ints)

def sat(a, lo=INT32_MIN, hi=INT32_MAX):
    """Clip to the storage range [lo, hi]."""
    return np.clip(a, lo, hi)


def rshift(a, n):
    """a / 2^n rounded half away from zero; n may be an array (per element, shifts past 62 give 0);
    a scalar n < 0 shifts left (exact)."""
    a = np.asarray(a, np.int64)
    if np.ndim(n) == 0 and n <= 0:
        return a << (-n)
    n = np.minimum(np.asarray(n, np.int64), 62)
    h = np.where(n > 0, np.int64(1) << np.maximum(n - 1, 0), 0)
    mag = (np.abs(a) + h) >> n
    return np.where(a < 0, -mag, mag)


def rdiv(a, d):
    """a / d (d > 0 integer) rounded half away from zero."""
    a = np.asarray(a, np.int64)
    mag = (np.abs(a) + d // 2) // d
    return np.where(a < 0, -mag, mag)


def quantize(x, frac, lo=INT32_MIN, hi=INT32_MAX):
    """round(x · 2^frac) half away from zero, saturated; float in, int64 out."""
    x = np.asarray(x, np.float64) * float(1 << frac)
    return sat(np.where(x < 0, -np.floor(-x + 0.5), np.floor(x + 0.5)), lo, hi).astype(np.int64)


def dequantize(q, frac):
    return np.asarray(q, np.float64) / float(1 << frac)


def exp_neg(z, z_frac, out_frac):
    """exp(z) for z ≤ 0 given in Q(z_frac), returned in Q(out_frac) (out_frac ≤ 16); integers only.

    y = z·log2(e) in Q16; y = -k + r with k ≥ 0 an integer and r in [0, 1) (r = y & 0xFFFF);
    2^r by the cubic in Q16; exp(z) = 2^r / 2^k, then narrowed to out_frac.
    """
    z = np.minimum(np.asarray(z, np.int64), 0)
    y = rshift(z * LOG2E_Q16, z_frac)                  # Q16, ≤ 0
    y = np.maximum(y, -(40 << EXP_FRAC))                # exp(-27.7): 0 in every format
    k = -(y >> EXP_FRAC)                               # floor division: y = -k·2^16 + r, r ≥ 0
    r = y + (k << EXP_FRAC)
    c1, c2, c3 = EXP_C
    p = c3
    p = c2 + rshift(r * p, EXP_FRAC)
    p = c1 + rshift(r * p, EXP_FRAC)
    p = (1 << EXP_FRAC) + rshift(r * p, EXP_FRAC)      # 2^r in Q16, in [1, 2)
    return rshift(p, k + EXP_FRAC - out_frac)
