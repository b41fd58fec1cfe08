"""The α-β cost model of ring Allreduce (tools/scaling.py): its limits, its fit, its projection."""
import pytest

from stopnp.tools import scaling
from stopnp.tools.scaling import buckets, exposed_s, fit_alpha_gamma, project, ring_allreduce_s


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


def test_buckets_merge_small_layers_top_first():
    layers = [(100, 0.5), (300, 0.4), (50, 0.3), (10, 0.2), (1000, 0.0)]
    assert buckets(layers, 0) == layers
    assert buckets(layers, 200) == [(400, 0.4), (1060, 0.0)]  # a bucket starts when its lowest layer is final
    assert buckets(layers, 10 ** 9) == [(1460, 0.0)]            # one sum at the end: no overlap


def test_overlap_pipeline():
    a, link, g = 1e-5, 1e9, 0.0
    t = lambda m: ring_allreduce_s(8, m, a, link, g)  # noqa: E731
    # nothing below the only bucket: the whole sum is exposed, as without overlap
    assert exposed_s([(1e6, 0.0)], 0.1, 8, a, link, g) == pytest.approx(t(1e6))
    # a bucket ready 0.1·compute before the end hides that much of its sum, never more than all of it
    assert exposed_s([(1e6, 0.5)], 0.001, 8, a, link, g) == pytest.approx(t(1e6) - 0.0005)
    assert exposed_s([(1e6, 0.5)], 1.0, 8, a, link, g) == 0.0
    # two buckets share the link: the second starts when both it is ready and the first is done
    c = 0.002
    first_end = -0.5 * c + t(1e6)          # ready 1 ms before the end
    second_end = max(first_end, -0.1 * c) + t(2e6)
    assert exposed_s([(1e6, 0.5), (2e6, 0.1)], c, 8, a, link, g) == pytest.approx(max(0.0, second_end))
    assert exposed_s([(1e6, 0.5)], 0.1, 1, a, link, g) == 0.0  # one node: no sum


def test_projection_with_overlap_and_optimizer_step():
    args = (50000, 128, 37.5e6, 30.0, 8, 2, 5e-5, 10e9, 0.0)
    _, plain = project(*args)
    _, same = project(*args, layers=[(37.5e6, 0.0)])
    assert same == pytest.approx(plain)                      # nothing below: no gain
    _, better = project(*args, layers=[(30e6, 0.1), (7.5e6, 0.0)], bucket_bytes=0)
    assert plain < better < 1
    _, hidden = project(*args, layers=[(37.5e6, 0.9)])
    assert hidden == pytest.approx(1.0)                      # all hidden: linear scaling
    # an optimizer step every node makes in full does not scale with the nodes
    epoch, eff = project(50000, 128, 37.5e6, 30.0, 8, 2, 5e-5, 10e9, 0.0, step_s=0.2, layers=[(37.5e6, 0.9)])
    share, step = 128 / (8 * 2 * 30.0), 0.1
    assert eff == pytest.approx((128 / (2 * 30.0) + step) / (8 * (share + step)))
    assert epoch == pytest.approx(391 * (share + step))


@pytest.mark.parametrize("args, needle", [
    (["--bytes", "1", "--rate", "0"], "argument --rate: '0': expected a finite number > 0"),
    (["--bytes", "1", "--rate", "1", "--nodes", "1,x"], "argument --nodes: 'x' is not a number"),
    (["--bytes", "1", "--rate", "1", "--cores", "0"], "argument --cores: '0': expected a finite number > 0"),
    (["--bytes", "1", "--rate", "1", "--bucket-kib", "-1"], "argument --bucket-kib: '-1': expected"),
    (["--profile", "/nonexistent/profile.json"], "--profile /nonexistent/profile.json: No such file"),
    (["--profile", "README"], "--profile README: not the JSON of `profile`"),
])
def test_model_bad_input_is_one_line(tmp_path, capsys, args, needle):
    """`python -m stopnp.tools.scaling model` with a bad number or profile: one line naming the option, exit 2."""
    (tmp_path / "README").write_text("not json\n")
    args = [a.replace("README", str(tmp_path / "README")) for a in args]
    needle = needle.replace("README", str(tmp_path / "README"))
    with pytest.raises(SystemExit) as e:
        scaling.main(["model", "--alpha", "5e-5", "--gamma", "2e-10", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err, err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "error" in line]) == 1
