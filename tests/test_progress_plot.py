"""Progress bar, metrics log, and every plot helper draws and saves a PNG."""
import io

import numpy as np

from stopnp import plot
from stopnp.progress import MetricsLog, Progress, read_metrics


def test_progress_quiet_and_logs(tmp_path):
    s = io.StringIO()
    p = Progress(100, desc="epoch 1/2", stream=s)
    for _ in range(10):
        p.update(10, loss=0.5, acc=90.0)
    p.close()
    out = s.getvalue()
    assert out.count("\n") == 1 and "100/100" in out and "samples/s" in out and "loss 0.5" in out
    s2 = io.StringIO()
    q = Progress(10, quiet=True, stream=s2)
    q.update(10)
    q.close()
    assert s2.getvalue() == ""
    log = MetricsLog(str(tmp_path / "m.jsonl"))
    log.append({"epoch": 1, "x": 1.5})
    log.append({"epoch": 2, "x": 2.5})
    assert read_metrics(str(tmp_path / "m.jsonl"))[1]["x"] == 2.5


def test_every_plot_helper(tmp_path):
    plt = plot.plt
    rng = np.random.default_rng(0)
    s = (rng.random((6, 2, 20)) < 0.3).astype(float)
    u = rng.normal(size=(6, 2, 20))
    calls = [
        lambda ax: plot.raster(ax, s),
        lambda ax: plot.membrane(ax, u, np.ones(20), [0, 3]),
        lambda ax: plot.traces(ax, u, u, u, [1, 2]),
        lambda ax: plot.distributions(ax, {1: rng.normal(size=30), 2: rng.normal(size=30)}),
        lambda ax: plot.curves(ax, [{"epoch": 1, "train_loss": 2.0, "test_acc": 0.5},
                                    {"epoch": 2, "train_loss": 1.0, "test_acc": 0.7}]),
        lambda ax: plot.spike_rates(ax, {"a": 0.1, "b": 0.2}),
        lambda ax: plot.memory_vs_T(ax, [{"rule": "stop", "T": 4, "rss_growth_mib": 10},
                                         {"rule": "stop", "T": 8, "rss_growth_mib": 10}]),
        lambda ax: plot.accuracy_vs_epoch(ax, {"stop": [0.5, 0.7]}),
    ]
    for i, call in enumerate(calls):
        fig, ax = plt.subplots()
        arts = call(ax)
        assert len(arts) > 0
        path = plot.save(fig, str(tmp_path / "sub" / f"p{i}.png"))
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
