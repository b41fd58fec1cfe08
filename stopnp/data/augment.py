"""Batch augmentations on float arrays (B, C, H, W) or frames (B, T, C, H, W); NumPy only.

    shift   random translation by up to ±2 px in x and y, zero fill (small static images, MNIST)
    cifar   random crop 32 from the image zero-padded by 4, then horizontal flip with p = 1/2
    dvs     one of: roll by ±5 px (x and y), rotate by ±30°, shear by ±30°  (nearest neighbour;
            the same transform for every frame of a sample)
"""
import math

import numpy as np

AUGMENTS = ("shift", "cifar", "dvs")


def _slices(d, n):
    """(source, destination) slices of a shift by d along an axis of length n (zero fill)."""
    return (slice(0, n - d), slice(d, n)) if d >= 0 else (slice(-d, n), slice(0, n + d))


def _translate(img, dy, dx):
    out = np.zeros_like(img)
    H, W = img.shape[-2:]
    (ys, yd), (xs, xd) = _slices(dy, H), _slices(dx, W)
    out[..., yd, xd] = img[..., ys, xs]
    return out


def _affine(img, m):
    """Nearest-neighbour warp about the centre: out(p) = img(m·(p - c) + c)."""
    H, W = img.shape[-2:]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    sy = np.rint(m[0, 0] * (yy - cy) + m[0, 1] * (xx - cx) + cy).astype(np.int64)
    sx = np.rint(m[1, 0] * (yy - cy) + m[1, 1] * (xx - cx) + cx).astype(np.int64)
    ok = (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
    out = np.zeros_like(img)
    out[..., ok] = img[..., sy[ok], sx[ok]]
    return out


def _shift_batch(out, xb, rng):
    """``shift`` for a whole batch: one draw of (dy, dx) per sample, in the order a per-sample loop
    draws them (the same random stream), written straight into ``out``."""
    H, W = xb.shape[-2:]
    out.fill(0)
    for i, (dy, dx) in enumerate(rng.integers(-2, 3, (len(xb), 2))):
        (ys, yd), (xs, xd) = _slices(int(dy), H), _slices(int(dx), W)
        out[i, ..., yd, xd] = xb[i, ..., ys, xs]
    return out


def apply(kind, xb, rng, static=True):
    from . import DataError
    if kind not in AUGMENTS:
        raise DataError(f"augment {kind!r}: valid: {', '.join(AUGMENTS)}")
    out = np.empty_like(xb)
    if kind == "shift":
        return _shift_batch(out, xb, rng)
    for i in range(len(xb)):
        img = xb[i]
        if kind == "cifar":
            dy, dx = rng.integers(-4, 5, 2)
            img = _translate(img, int(dy), int(dx))
            if rng.random() < 0.5:
                img = img[..., ::-1]
        else:
            which = rng.integers(0, 3)
            if which == 0:
                dy, dx = rng.integers(-5, 6, 2)
                img = np.roll(img, (int(dy), int(dx)), axis=(-2, -1))
            elif which == 1:
                a = math.radians(rng.uniform(-30, 30))
                img = _affine(img, np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]))
            else:
                s = math.tan(math.radians(rng.uniform(-30, 30)))
                img = _affine(img, np.array([[1.0, 0.0], [s, 1.0]]))
        out[i] = img
    return out
