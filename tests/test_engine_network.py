"""Network records and building (stopnp/engine/network.py): parameter names and containers, and the input,
label and parameter checks at the API boundary."""
import numpy as np
import pytest

import stopnp
from nets import data, mlp3


@pytest.mark.parametrize("bad, match", [
    (lambda x: x[0], "expected"),
    (lambda x: x.astype(np.int32), "dtype"),
    (lambda x: np.where(x > 0.5, np.nan, x), "NaN"),
    (lambda x: np.asfortranarray(x), "contiguous"),
])
def test_bad_input_is_refused_with_a_readable_error(bad, match):
    net = mlp3()
    x, y = data(net)
    with pytest.raises(stopnp.ShapeError, match=match):
        stopnp.gradients(net, bad(x), y)

def test_bad_labels_and_options():
    net = mlp3()
    x, y = data(net)
    with pytest.raises(stopnp.ShapeError, match="labels must be in"):
        stopnp.gradients(net, x, y + 10)
    with pytest.raises(stopnp.ConfigError, match="unknown option"):
        stopnp.gradients(net, x, y, lr=3)
    with pytest.raises(stopnp.ConfigError, match="valid rules"):
        stopnp.gradients(net, x, y, rule="backprop")
    net.params["fc1.weight"] = net.params["fc1.weight"][:, :3]
    with pytest.raises(stopnp.ShapeError, match="fc1.weight"):
        stopnp.gradients(net, x, y)

def test_params_are_plain_writable_arrays_with_documented_names():
    net = stopnp.build("lenet5")
    names = set(net.params)
    assert {"conv1.weight", "conv1.theta", "conv1.alpha", "fc3.weight"} <= names
    assert all(isinstance(v, np.ndarray) and v.flags.writeable for v in net.params.values())
    assert net.params["conv1.theta"].shape == (6, 28, 28)
    vgg = stopnp.build("vgg11", model__input_shape=[3, 32, 32], model__width=0.125)
    assert "conv1.bn.gamma" in vgg.params and vgg.layers[-1].shape == (10,)
    res = stopnp.build("resnet18", model__input_shape=[3, 16, 16], model__width=0.0625, model__n_classes=5)
    assert any(s.op == "identity" for l in res.layers for s in l.synapses)
    assert any(s.name.endswith("shortcut") and s.op == "conv" for l in res.layers for s in l.synapses)
