"""Optimizer update kernels (stopnp/kernels/optim.py): the serial and parallel variants agree bitwise; the
formulas themselves are checked through optim.step in test_optim.py."""
import numpy as np
import pytest

from stopnp.kernels import optim as kopt


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_serial_and_parallel_kernels_agree(kind):
    """Small parameters update serially, large ones in a parallel loop: the same formula element by
    element, so the two variants give bitwise the same result on the same data."""
    rng = np.random.default_rng(4)
    n = 3 * kopt.SERIAL_BELOW + 5
    for dtype in (np.float32, np.float64):
        p, g, m, v = (rng.normal(size=n).astype(dtype) for _ in range(4))
        v = np.abs(v)
        outs = []
        for fn in ((kopt._sgd_ser, kopt._sgd_par) if kind == "sgd" else (kopt._adam_ser, kopt._adam_par)):
            a = [p.copy(), g, m.copy(), v.copy()]
            lo, hi = dtype(-1.0), dtype(1.0)  # the clamps inside the kernels: some values hit each
            if kind == "sgd":
                fn(a[0], a[1], a[2], 0.1, 0.9, 1e-4, True, lo, hi)
            else:
                fn(a[0], a[1], a[2], a[3], 1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001, 1e-4, lo, hi)
            outs.append(a)
        assert not np.array_equal(outs[0][0], p)
        assert (outs[0][0] == -1).any() and (outs[0][0] == 1).any() and np.abs(outs[0][0]).max() == 1
        for x, y in zip(*outs):
            assert np.array_equal(x, y)
