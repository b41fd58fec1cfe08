"""Batch augmentations (stopnp/data/augment.py): CIFAR crop+flip, DVS roll/rotate/shear, MNIST shift."""
import numpy as np
import pytest

from stopnp.data import DataError, augment


def test_cifar_crop_pad4_and_flip_are_exact_translations():
    rng = np.random.default_rng(0)
    x = rng.random((32, 3, 8, 8)).astype(np.float32)
    out = augment.apply("cifar", x, rng)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(len(x)):  # every output is some shift in [-4, 4]^2 of x or of its mirror, zero filled
        ok = False
        for src in (x[i], x[i][..., ::-1]):
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    ok |= np.array_equal(out[i], augment._translate(src, dy, dx)) or \
                        np.array_equal(out[i][..., ::-1], augment._translate(src, dy, dx)[..., ::-1])
        assert ok


def test_dvs_keeps_shape_and_frames_move_together():
    rng = np.random.default_rng(10)
    x = np.zeros((12, 3, 2, 20, 20), np.float32)
    x[:, :, :, 8:12, 8:12] = 1
    out = augment.apply("dvs", x, rng, static=False)
    assert out.shape == x.shape and (out.sum(axis=(1, 2, 3, 4)) > 0).all()
    assert not np.array_equal(out, x)
    assert all(np.array_equal(out[i, 0], out[i, t]) for i in range(12) for t in range(3))


def test_affine_rotation_by_90_degrees_is_exact():
    img = np.arange(25, dtype=np.float32).reshape(1, 5, 5)
    m = np.array([[0.0, -1.0], [1.0, 0.0]])
    assert np.array_equal(augment._affine(img, m)[0], np.rot90(img[0], -1)) or \
        np.array_equal(augment._affine(img, m)[0], np.rot90(img[0], 1))
    assert np.array_equal(augment._affine(img, np.eye(2)), img)


def test_unknown_augment():
    with pytest.raises(DataError, match="valid: shift, cifar, dvs"):
        augment.apply("mixup", np.zeros((1, 1, 2, 2)), np.random.default_rng())


def test_shift_batch_equals_the_per_sample_translation():
    """``shift`` draws (dy, dx) for the whole batch at once: the same draws, in the same order, as one
    per sample, and each sample is its zero-filled translation by them."""
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(40, 1, 9, 8)).astype(np.float32)
    out = augment.apply("shift", xb, np.random.default_rng(7))
    ref_rng = np.random.default_rng(7)
    seen = set()
    H, W = xb.shape[-2:]
    for i in range(len(xb)):
        dy, dx = (int(d) for d in ref_rng.integers(-2, 3, 2))
        seen.add((dy, dx))
        want = np.zeros_like(xb[i])  # out(y, x) = x(y - dy, x - dx) inside the image, 0 elsewhere
        for y in range(H):
            for x in range(W):
                if 0 <= y - dy < H and 0 <= x - dx < W:
                    want[:, y, x] = xb[i][:, y - dy, x - dx]
        assert np.array_equal(out[i], want), (i, dy, dx)
    assert len(seen) > 10 and min(d[0] for d in seen) == -2 and max(d[1] for d in seen) == 2
