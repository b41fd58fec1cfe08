"""NIR export (stopnp/export/nir.py): the written graph, re-simulated in NumPy with the documented Euler
discretisation, gives stopnp's spikes exactly and its membranes to rounding."""
import sys

import numpy as np
import pytest

import stopnp
from stopnp.export import nir as nx

T, B = 4, 2


@pytest.fixture
def nir():
    return pytest.importorskip("nir", reason="NIR export needs the optional extra: pip install 'stopnp[nir]'")


def _net(model, seed=0, **overrides):
    """A float64 net with random θ in [0.6, 1.4] and α in (0.2, 0.9) per spiking layer."""
    net = stopnp.build(model, **overrides).astype(np.float64)
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if layer.spiking:
            th = net.params[f"{layer.name}.theta"]
            th[...] = rng.uniform(0.6, 1.4, th.shape)
            net.params[f"{layer.name}.alpha"][...] = rng.uniform(0.2, 0.9)
    return net


def _reference(net, x):
    """stopnp's own forward (BN in eval mode). simulate() runs the STOP pass, which refuses the hard
    reset; the forward pass is the same for every rule, so the hard reset is recorded through SLTT."""
    if net.neuron["reset"] == "soft":
        return stopnp.simulate(net, x, record=("s", "u"), bn_mode="eval")
    return stopnp.run_batch(net, x, None, "sltt", learn="W", bn_mode="eval", record=("s", "u")).records


def _check_same(net, x, path, theta_scaled=False):
    ref = _reference(net, x)
    out = nx.nir_forward(str(path), x)
    for layer in net.layers:
        if not layer.spiking:
            continue
        rate = ref[f"{layer.name}.s"].mean()
        assert 0.0 < rate < 1.0, f"{layer.name}: spike rate {rate} (the check needs spikes and silences)"
        np.testing.assert_array_equal(out[f"{layer.name}_neuron.s"], ref[f"{layer.name}.s"], err_msg=layer.name)
        u = out[f"{layer.name}_neuron.u"]
        if theta_scaled:  # unit_threshold: the NIR membrane is U/θ
            th = net.params[f"{layer.name}.theta"]
            u = u * (th.reshape(-1, 1, 1) if len(layer.shape) == 3 and th.size > 1 else th)
        np.testing.assert_allclose(u, ref[f"{layer.name}.u"], rtol=1e-9, atol=1e-9, err_msg=layer.name)
    last = net.layers[-1]
    want = ref[f"{last.name}.s"] if last.spiking else ref[f"{last.name}.u"]  # readout: u = o[t] = I[t]
    np.testing.assert_allclose(out["output"], want, rtol=1e-9, atol=1e-9)


def test_missing_nir_is_a_one_line_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nir", None)  # makes `import nir` raise ImportError
    with pytest.raises(ImportError) as err:
        nx.export_nir(stopnp.build("mlp"), tmp_path / "net.nir")
    assert str(err.value) == "NIR export needs the optional extra: pip install 'stopnp[nir]'"


@pytest.mark.parametrize("model, overrides", [
    ("mlp", {}),
    ("mlp", {"neuron__reset": "hard", "neuron__theta_mode": "layer"}),
    ("lenet5", {}),
    ("lenet5", {"neuron__reset": "hard", "neuron__theta_mode": "channel", "model__readout": "membrane"}),
], ids=["mlp-soft", "mlp-hard-layer", "lenet5-soft", "lenet5-hard-channel-readout"])
def test_nir_resimulation_matches_stopnp(nir, tmp_path, model, overrides):
    net = _net(model, **overrides)
    x = np.random.default_rng(1).random((T, B) + net.input_shape)
    summary = nx.export_nir(net, tmp_path / "net.nir")
    assert summary["reset"] == ("zero" if net.neuron["reset"] == "hard" else "subtract")
    _check_same(net, x, tmp_path / "net.nir")


@pytest.mark.parametrize("model, overrides", [
    ("mlp", {"model__bn": True}),
    ("lenet5", {"model__bn": True}),
    # BN on by default; two pools before fc1 (avgpool, then global average pooling)
    ("vgg11", {"model__width": 0.0625, "model__input_shape": [3, 32, 32], "model__readout": "membrane"}),
], ids=["mlp", "lenet5", "vgg11-small"])
def test_bn_is_folded(nir, tmp_path, model, overrides):
    net = _net(model, **overrides)
    rng = np.random.default_rng(2)
    for name in list(net.params):
        if ".bn." in name:
            a = net.params[name]
            kind = name.rsplit(".", 1)[1]
            a[...] = {"gamma": rng.uniform(0.5, 1.5, a.shape), "beta": rng.uniform(-0.2, 0.2, a.shape),
                      "running_mean": rng.uniform(-0.3, 0.3, a.shape),
                      "running_var": rng.uniform(0.5, 2.0, a.shape)}[kind]
    path = tmp_path / "bn.nir"
    nx.export_nir(net, path)
    rows = {r["name"]: r for r in nx.read_nir(path)}
    first = net.layers[0].name
    assert rows[first]["type"] == ("Affine" if model == "mlp" else "Conv2d")  # BN's shift -> bias
    assert not any("bn" in str(r["params"]) for r in rows.values())
    if model == "vgg11":
        assert [rows[n]["type"] for n in ("fc1_avgpool", "fc1_gap", "fc1_flatten")] == [
            "AvgPool2d", "AvgPool2d", "Flatten"]
    x = np.random.default_rng(3).random((T, B) + net.input_shape)
    _check_same(net, x, path)


def test_alpha_one_is_IF_and_alpha_zero_is_LIF_with_tau_dt(nir, tmp_path):
    net = _net("mlp", model__hidden=[64])
    net.params["fc1.alpha"][...] = 1.0
    net.params["fc2.alpha"][...] = 0.0
    path = tmp_path / "edge.nir"
    nx.export_nir(net, path, dt=1e-3)
    g = nir.read(str(path))
    assert isinstance(g.nodes["fc1_neuron"], nir.IF)
    np.testing.assert_allclose(g.nodes["fc1_neuron"].r, 1e3)
    assert isinstance(g.nodes["fc2_neuron"], nir.LIF)
    np.testing.assert_allclose(g.nodes["fc2_neuron"].tau, 1e-3)
    x = np.random.default_rng(4).random((T, B) + net.input_shape)
    _check_same(net, x, path)


def test_unit_threshold_and_sum_pool(nir, tmp_path):
    net = _net("lenet5", neuron__theta_mode="channel")
    path = tmp_path / "unit.nir"
    nx.export_nir(net, path, unit_threshold=True, pool="sum")
    g = nir.read(str(path))
    for name, node in g.nodes.items():
        if isinstance(node, nir.LIF):
            assert np.all(node.v_threshold == 1.0), name
    assert sum(isinstance(n, nir.SumPool2d) for n in g.nodes.values()) == 2
    assert not any(isinstance(n, nir.AvgPool2d) for n in g.nodes.values())
    x = np.random.default_rng(5).random((T, B) + net.input_shape)
    _check_same(net, x, path, theta_scaled=True)
    with pytest.raises(nx.NIRUnsupported, match="per-neuron θ"):
        nx.export_nir(_net("lenet5"), tmp_path / "refused.nir", unit_threshold=True)


def test_read_nir_summarises_the_graph(nir, tmp_path):
    net = _net("lenet5")
    path = tmp_path / "lenet.nir"
    nx.export_nir(net, path, dt=1e-4)
    rows = nx.read_nir(path)
    assert [r["type"] for r in rows] == [
        "Input", "Conv2d", "LIF", "AvgPool2d", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Linear", "LIF",
        "Linear", "LIF", "Linear", "LIF", "Output"]
    by = {r["name"]: r for r in rows}
    assert by["input"]["output"] == [1, 28, 28] and by["output"]["input"] == [10]
    assert by["fc1_flatten"]["output"] == [400]
    assert by["conv1_neuron"]["metadata"]["reset"] == "subtract"
    assert by["conv1"]["next"] == ["conv1_neuron"]
    g = nir.read(str(path))
    assert float(g.metadata["dt"]) == 1e-4
    a = float(net.params["conv1.alpha"][0])
    lif = g.nodes["conv1_neuron"]
    np.testing.assert_allclose(lif.tau, 1e-4 / (1 - a))
    np.testing.assert_array_equal(lif.r, 1.0)
    np.testing.assert_allclose(lif.v_threshold, net.params["conv1.theta"])
    np.testing.assert_allclose(g.nodes["conv1"].weight, net.params["conv1.weight"] / (1 - a))


def test_refuses_resnet_and_maxpool(nir, tmp_path):
    res = stopnp.build("resnet18", model__width=0.0625)
    with pytest.raises(NotImplementedError) as err:
        nx.export_nir(res, tmp_path / "res.nir")
    assert isinstance(err.value, stopnp.ConfigError) and "\n" not in str(err.value)
    assert "ResNet" in str(err.value)
    with pytest.raises(nx.NIRUnsupported, match="maxpool"):
        nx.export_nir(stopnp.build("lenet5", model__pool="max"), tmp_path / "max.nir")
    with pytest.raises(nx.NIRUnsupported, match="BPSTA"):
        nx.export_nir(stopnp.build("mlp", rule__name="bpsta"), tmp_path / "bpsta.nir")
    assert not any((tmp_path / f).exists() for f in ("res.nir", "max.nir", "bpsta.nir"))


def test_cli_export_nir(nir, tmp_path, capsys):
    from stopnp.cli import main
    ckpt, out = tmp_path / "net.h5", tmp_path / "net.nir"
    stopnp.save(stopnp.build("mlp", model__hidden=[32]), ckpt)
    assert main(["export", "nir", str(ckpt), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert [r["type"] for r in nx.read_nir(out)] == ["Input", "Flatten", "Linear", "LIF", "Linear", "LIF",
                                                     "Output"]
