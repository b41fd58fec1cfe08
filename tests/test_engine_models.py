"""The named models (stopnp/engine/models.py) build the networks of docs/algorithms.md §6: layer shapes,
weight shapes, BN where the model has it, and the voting readout's n_classes·vote outputs."""
import pytest

import stopnp


def _shapes(net):
    return [(layer.name, layer.shape) for layer in net.layers]


def test_lenet5_is_the_classic_geometry():
    net = stopnp.build("lenet5")
    assert _shapes(net) == [("conv1", (6, 28, 28)), ("conv2", (16, 10, 10)), ("fc1", (120,)), ("fc2", (84,)),
                            ("fc3", (10,))]
    assert net.params["conv1.weight"].shape == (6, 1, 5, 5) and net.params["fc1.weight"].shape == (120, 400)
    assert [op.kind for op in net.layers[2].synapses[0].pre] == ["avgpool", "flatten"]
    assert not any(k.endswith("bn.gamma") for k in net.params)
    assert [op.kind for op in stopnp.build("lenet5", model__pool="max").layers[1].synapses[0].pre] == ["maxpool"]


def test_mlp_vgg11_and_resnet18():
    assert _shapes(stopnp.build("mlp")) == [("fc1", (800,)), ("fc2", (10,))]
    vgg = stopnp.build("vgg11", model__input_shape=[3, 32, 32], model__width=0.125)
    convs = [layer for layer in vgg.layers if layer.synapses[0].op == "conv"]
    assert [layer.shape[0] for layer in convs] == [8, 16, 32, 32, 64, 64, 64, 64]  # [64, M, 128, M, 256, 256, ...]/8
    assert all(layer.synapses[0].bn and layer.synapses[0].k == 3 for layer in convs)
    assert [op.kind for op in vgg.layers[-1].synapses[0].pre] == ["avgpool", "gap", "flatten"]
    assert vgg.layers[-1].shape == (10,)
    res = stopnp.build("resnet18", model__input_shape=[3, 16, 16], model__width=0.0625, model__n_classes=5)
    blocks = [layer for layer in res.layers if layer.name.startswith("block")]
    assert len(blocks) == 16 and res.layers[-1].shape == (5,)  # 8 blocks of two convs
    assert sum(len(layer.synapses) == 2 for layer in blocks) == 8  # each block's conv2 adds its shortcut


@pytest.mark.parametrize("vote", [1, 10])
def test_voting_readout_has_n_classes_times_vote_outputs(vote):
    net = stopnp.build("mlp", model__hidden=[16], model__vote=vote)
    assert net.output.shape == (10 * vote,) and net.n_classes == 10


def test_layers_only_with_custom():
    with pytest.raises(stopnp.ConfigError, match="model.name = 'custom' only"):
        stopnp.build("mlp", model__layers=[{"type": "linear", "out": 10}])
    with pytest.raises(stopnp.ConfigError, match="needs model.layers"):
        stopnp.build({"model": {"name": "custom"}})
