"""The α-β cost model of ring Allreduce (scaling.py): its limits, its fit, its projection."""
import pytest

from stopnp.tools.scaling import fit_alpha_gamma, project, ring_allreduce_s


def test_ring_allreduce_terms():
    assert ring_allreduce_s(1, 1e6, 1e-5, 1e9, 1e-10) == 0.0
    # two ranks: 2 messages of latency, and M bytes each way through the link plus the local cost
    assert ring_allreduce_s(2, 1e6, 1e-5, 1e9, 1e-10) == pytest.approx(2e-5 + 1e6 * (1e-9 + 1e-10))
    # many ranks: the bytes term tends to 2·M/β, the latency term grows with p
    assert ring_allreduce_s(1000, 1e6, 0.0, 1e9, 0.0) == pytest.approx(2e-3, rel=1e-2)
    assert ring_allreduce_s(8, 8, 1e-5, 1e9, 0.0) == pytest.approx(14e-5, rel=1e-3)


def test_fit_recovers_alpha_and_gamma():
    sizes = [8, 1 << 10, 1 << 20, 1 << 22, 1 << 24]
    times = [2 * 3e-6 + s * 5e-10 for s in sizes]  # p = 2: 2α + M·γ
    alpha, gamma = fit_alpha_gamma(sizes, times)
    assert alpha == pytest.approx(3e-6, rel=1e-3)
    assert gamma == pytest.approx(5e-10, rel=1e-3)


def test_projection_efficiency():
    one, eff1 = project(50000, 128, 37.5e6, 30.0, 1, 2, 5e-5, 10e9, 0.0)
    assert eff1 == 1.0 and one == pytest.approx(391 * 128 / 60.0)
    eight, eff8 = project(50000, 128, 37.5e6, 30.0, 8, 2, 5e-5, 10e9, 0.0)
    assert eight < one and 0 < eff8 < 1
    _, eff_fast = project(50000, 128, 37.5e6, 30.0, 8, 2, 5e-5, 100e9, 0.0)
    _, eff_cores = project(50000, 128, 37.5e6, 30.0, 8, 16, 5e-5, 10e9, 0.0)
    assert eff_fast > eff8 > eff_cores  # a faster link helps, faster nodes expose the sum more
