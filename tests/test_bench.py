"""``stopnp bench``: a quick run of one configuration in its own subprocess prints a table row and a
JSON line with every documented field; the FLOP count follows the documented formula."""
import io
import json

from stopnp.tools import bench


def test_quick_run_prints_table_and_json(tmp_path):
    out = io.StringIO()
    rows = bench.run_all(["mlp"], ["stop"], sweep=False, quick=True, stream=out, out=str(tmp_path / "b.jsonl"))
    assert len(rows) == 1 and "error" not in rows[0], rows
    r = rows[0]
    for key in ("train_per_s", "infer_per_s", "peak_rss_mib", "rss_growth_mib", "compile_s",
                "train_mflop_per_sample", "train_gflops", "thread_policy"):
        assert key in r, key
    assert r["train_per_s"] > 0 and r["infer_per_s"] > 0 and r["peak_rss_mib"] > 0
    # 784 -> 800 -> 10 at T = 8: forward 2·T·ΣM, backward 2·T·ΣM + 2·T·M(layer 2)
    m = [784 * 800, 800 * 10]
    assert abs(r["train_mflop_per_sample"] - (4 * 8 * sum(m) + 2 * 8 * m[1]) / 1e6) < 1e-9
    # calibrated like the peer benchmark: every spiking layer near 0.1 spikes per neuron per step
    assert r["target_rate"] == 0.1 and len(r["spike_rates"]) == len(r["calib_scales"]) == 2, r
    assert all(0.08 < x < 0.12 for x in r["spike_rates"]), r["spike_rates"]
    assert "blas_core" in r and "openblas_coretype_env" in r
    text = out.getvalue().splitlines()
    assert text[0].startswith("# ") and "calibrated to 0.1" in text[0]
    assert text[1].startswith("workload") and text[2].startswith("mlp") and "auto" in text[2]
    assert json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])["workload"] == "mlp"


def test_calibrate_reaches_the_target_rate_per_layer():
    """Bisection on each layer's weight scale, in order: every spiking layer ends near the target; the
    scales are deterministic; without calibration the same net fires at other rates (so the check bites)."""
    import numpy as np
    from stopnp.config import resolve
    from stopnp.engine.network import from_config
    from stopnp.rules.common import resolve_options
    cfg = bench.config_for("lenet", "stop")
    cfg["data"]["T"] = 2
    rng = np.random.default_rng(0)
    x = np.broadcast_to(rng.uniform(0, 1, (8, 1, 28, 28)).astype(np.float32), (2, 8, 1, 28, 28))
    rates, scales = [], []
    for target in (0.05, 0.2):
        net = from_config(resolve(cfg))
        opts = resolve_options(net, "stop", {})
        before = bench.spike_rates(net, x, opts)
        scales.append(bench.calibrate(net, x, target, opts))
        rates.append(bench.spike_rates(net, x, opts))
        assert all(abs(r - target) < 0.25 * target for r in rates[-1]), (target, rates[-1])
        assert any(abs(r - target) > 0.25 * target for r in before), before
    assert scales[0] != scales[1] and len(scales[0]) == 5
    net = from_config(resolve(cfg))
    assert bench.calibrate(net, x, 0.05, resolve_options(net, "stop", {})) == scales[0]  # deterministic


def test_bad_bench_options_are_one_line_errors(capsys):
    from stopnp import cli
    for argv, field in ((["--workloads", "mlp,foo"], "--workloads"), (["--rules", "stop,xx"], "--rules"),
                        (["--rate", "1.5"], "--rate"), (["--rate", "-0.1"], "--rate"),
                        (["--threads", "-1"], "--threads")):
        assert cli.main(["bench", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"stopnp bench: error: {field}"), err
