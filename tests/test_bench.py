"""``stopnp bench``: a quick run of one configuration in its own subprocess prints a table row and a
JSON line with every documented field; the FLOP count follows the documented formula."""
import io
import json

from stopnp import bench


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
    text = out.getvalue().splitlines()
    assert text[0].startswith("workload") and text[1].startswith("mlp") and "auto" in text[1]
    assert json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])["workload"] == "mlp"
