"""Every plot helper draws on a fresh Agg figure, returns its artists, and saves a PNG."""
import matplotlib
import numpy as np
import pytest

from stopnp.tools import plot

plt = plot.plt
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    s = (rng.random((6, 2, 4, 5)) < 0.3).astype(np.float32)  # (T, B, C, N): neuron axes get flattened
    u = rng.normal(size=(6, 2, 4, 5)).astype(np.float32)
    return s, u


def test_backend_is_headless():
    assert matplotlib.get_backend().lower() == "agg"


def test_raster(ax, arrays):
    s, _ = arrays
    arts = plot.raster(ax, s, sample=1, max_neurons=12)
    assert len(arts) == 1
    offsets = arts[0].get_offsets()
    assert len(offsets) == int((s[:, 1].reshape(6, -1)[:, :12] > 0).sum()) > 0
    assert offsets[:, 1].max() < 12
    assert len(plot.raster(ax, np.zeros((3, 1, 4)))) == 1  # silence still gives an (empty) artist


def test_membrane_theta_shapes_and_spikes(ax, arrays):
    _, u = arrays
    for theta in (0.5, np.array([0.5], np.float32), np.full((4, 5), 0.5), np.full((4, 1), 0.5), np.full(4, 0.5)):
        arts = plot.membrane(ax, u, theta, [0, 7])
        lines = [a for a in arts if isinstance(a, matplotlib.lines.Line2D)]
        assert len(lines) == 4  # U and θ for each neuron
    marks = [a for a in arts if isinstance(a, matplotlib.collections.PathCollection)]
    flat = u[:, 0].reshape(6, -1)
    assert sum(len(m.get_offsets()) for m in marks) == int((flat[:, [0, 7]] >= 0.5).sum())
    s = np.zeros_like(u)
    s[2, 0, 0, 0] = 1  # the recorded spikes win over the U ≥ θ rule
    arts = plot.membrane(ax, u, 0.5, [0], s=s)
    assert [len(a.get_offsets()) for a in arts if isinstance(a, matplotlib.collections.PathCollection)] == [1]
    with pytest.raises(IndexError, match="out of range"):
        plot.membrane(ax, u, 0.5, [20])
    with pytest.raises(ValueError, match="does not broadcast"):
        plot.membrane(ax, u, np.ones(3), [0])


def test_traces_one_ax_or_three(arrays):
    _, u = arrays
    w = np.ones((6, 2, 3))  # w~ follows the inputs: fewer than the neurons here
    fig, ax = plt.subplots()
    arts = plot.traces(ax, w, u, u, [1, 5])
    assert len(arts) == 1 + 2 + 2  # index 5 is past w~'s 3 inputs: skipped for w~ only
    assert {a.get_linestyle() for a in arts} == {"-", "--", ":"}
    plt.close(fig)
    fig, axes = plt.subplots(1, 3)
    arts = plot.traces(list(axes), u, u, u, [0])
    assert len(arts) == 3 and all(len(a.get_lines()) == 1 for a in axes)
    with pytest.raises(ValueError, match="three"):
        plot.traces(list(axes[:2]), u, u, u, [0])
    plt.close(fig)


def test_distributions_box_or_line(ax):
    rng = np.random.default_rng(1)
    arts = plot.distributions(ax, {2: rng.normal(size=30), 1: rng.normal(size=(3, 10))}, "θ")
    assert len(arts) > 0 and [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    arts = plot.distributions(ax, {1: np.array([0.5]), 2: np.array(0.6), 3: 0.7}, "α")
    assert len(arts) == 1 and list(arts[0].get_ydata()) == pytest.approx([0.5, 0.6, 0.7])


def test_curves_spike_rates_accuracy(ax):
    metrics = [{"epoch": 1, "train_loss": 2.0, "test_acc": 0.5}, {"epoch": 2, "train_loss": 1.0}]
    arts = plot.curves(ax, metrics)
    assert len(arts) == 2 and np.isnan(arts[1].get_ydata()[1])
    assert [a.get_label() for a in plot.curves(ax, metrics, ("train_loss", "never"))] == ["train_loss"]
    assert len(plot.spike_rates(ax, {"conv1": 0.1, "fc1": np.float32(0.2)})) == 2
    arts = plot.accuracy_vs_epoch(ax, {"stop": [0.5, 0.7], "bptt": [55.0, 71.0]})
    assert list(arts[0].get_ydata()) == [50.0, 70.0] and list(arts[1].get_ydata()) == [55.0, 71.0]


def test_memory_vs_T(ax):
    rows = [{"rule": "stop", "T": 8, "rss_growth_mib": 10}, {"rule": "stop", "T": 4, "rss_growth_mib": 9},
            {"rule": "bptt", "T": 4, "rss_growth_mib": 20}, {"rule": "bptt", "T": 8, "rss_growth_mib": None}]
    arts = plot.memory_vs_T(ax, rows)
    assert [a.get_label() for a in arts] == ["bptt", "stop"]
    assert list(arts[1].get_xdata()) == [4, 8]


def test_every_helper_saves_a_png(tmp_path, arrays):
    s, u = arrays
    calls = [
        lambda ax: plot.raster(ax, s),
        lambda ax: plot.membrane(ax, u, np.ones((4, 5)), [0, 3]),
        lambda ax: plot.traces(ax, u, u, u, [1, 2]),
        lambda ax: plot.distributions(ax, {1: np.arange(5.0), 2: np.arange(5.0) + 1}),
        lambda ax: plot.curves(ax, [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.0}]),
        lambda ax: plot.spike_rates(ax, {"a": 0.1, "b": 0.2}),
        lambda ax: plot.memory_vs_T(ax, [{"rule": "stop", "T": 4, "rss_growth_mib": 10},
                                         {"rule": "stop", "T": 8, "rss_growth_mib": 10}]),
        lambda ax: plot.accuracy_vs_epoch(ax, {"stop": [0.5, 0.7]}),
    ]
    before = len(plt.get_fignums())
    for i, call in enumerate(calls):
        fig, ax = plt.subplots(figsize=(3, 2))
        assert len(call(ax)) > 0
        target = tmp_path / "a" / "b" / f"p{i}.png"
        assert plot.save(fig, target) == target
        data = target.read_bytes()
        assert data[:8] == PNG and len(data) > 1000
    assert len(plt.get_fignums()) == before  # save closed every figure


def test_raster_spread_reaches_the_whole_layer(ax):
    s = np.zeros((3, 1, 1000))
    s[:, 0, 999] = 1  # only the last neuron fires: the first 10 show nothing, 10 spread ones show it
    assert len(plot.raster(ax, s, max_neurons=10)[0].get_offsets()) == 0
    arts = plot.raster(ax, s, max_neurons=10, spread=True)
    assert len(arts[0].get_offsets()) == 3
    assert ax.yaxis.get_major_formatter()(9, 0) == "999"
