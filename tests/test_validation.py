"""Bad input is a one-line ConfigError naming the field and what to do: config files, custom layers,
non-finite numbers, library options, the network argument."""
import numpy as np
import pytest

import stopnp
from stopnp import config as C
from stopnp.config import ConfigError


def refused(fn, *match):
    """fn() raises a one-line ConfigError whose message contains every string of ``match``."""
    with pytest.raises(ConfigError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg
    for m in match:
        assert m in msg, (m, msg)
    return msg


@pytest.mark.parametrize("text", ["[1, 2]", '"s"', "null", "3"])
def test_json_top_level_must_be_an_object(tmp_path, text):
    p = tmp_path / "c.json"
    p.write_text(text)
    refused(lambda: C.read(p), "c.json", "top level must be a table/object of sections")
    refused(lambda: stopnp.build(str(p)), "c.json", "top level")
    refused(lambda: C.resolve([1, 2]), "top level")   # e.g. a checkpoint's config attribute


CUSTOM = {"name": "custom", "input_shape": [1, 8, 8], "n_classes": 2}
OUT = {"type": "linear", "out": 2}


@pytest.mark.parametrize("layers, match", [
    ([{"type": "linear"}], ["model.layers[0].out", "missing", "integer >= 1"]),
    ([{"type": "linear", "out": "a"}], ["model.layers[0].out = 'a'", "integer >= 1"]),
    ([{"type": "linear", "out": 1.7}], ["model.layers[0].out = 1.7"]),
    ([{"type": "linear", "out": True}], ["model.layers[0].out = True"]),
    ([{"type": "conv", "out": 2, "k": 0}, OUT], ["model.layers[0].k = 0", "integer >= 1"]),
    ([{"type": "conv", "out": 0}, OUT], ["model.layers[0].out = 0"]),
    ([{"type": "conv", "out": 2, "stride": 0}, OUT], ["model.layers[0].stride = 0"]),
    ([{"type": "conv", "out": 2, "pad": -5}, OUT], ["model.layers[0].pad = -5", "integer >= 0"]),
    ([{"type": "avgpool", "k": 0}, OUT], ["model.layers[0].k = 0"]),
    ([{"type": "resblock", "out": 2, "stride": 0}, OUT], ["model.layers[0].stride = 0"]),
    ([{"type": "dropout", "p": "x"}, OUT], ["model.layers[0].p = 'x'", "0 <= p < 1"]),
    ([{"type": "flatten"}, {"type": "dropout", "p": 1.0}, OUT], ["model.layers[1].p = 1.0"]),
    ([{"type": "linear", "out": 2, "bn": "no"}], ["model.layers[0].bn = 'no'", "true or false"]),
    ([{"type": "linear", "out": 2, "foo": 1}], ["model.layers[0]", "unknown key(s) foo", "valid keys: type, out, bn"]),
    ([{"type": "gap", "k": 2}, OUT], ["model.layers[0]", "unknown key(s) k", "valid keys: type"]),
    ([{"type": ["conv"]}], ["model.layers[0]: unknown type"]),
])
def test_custom_layer_values_are_checked(layers, match):
    refused(lambda: stopnp.build({"model": {**CUSTOM, "layers": layers}}), *match)


def test_custom_layers_go_with_model_custom():
    refused(lambda: stopnp.build({"model": {**CUSTOM}}), "model.name = 'custom' needs model.layers")
    refused(lambda: stopnp.build({"model": {"name": "mlp", "layers": [OUT]}}),
            "model.layers is read with model.name = 'custom' only")
    net = stopnp.build({"model": {**CUSTOM, "layers": [{"type": "conv", "out": 3}, {"type": "dropout"}, OUT]}})
    assert net.layers[0].synapses[0].k == 3 and not net.layers[0].synapses[0].bn   # defaults filled in


@pytest.mark.parametrize("override, match", [
    ("model.width=inf", "model.width = inf: expected a finite number"),
    ("optim.eps=inf", "optim.eps = inf"),
    ("optim.lr=-inf", "optim.lr = -inf"),
    ("rule.bpsta_beta=inf", "rule.bpsta_beta = inf"),
    ("optim.grad_clip=nan", "optim.grad_clip = nan"),
    ("optim.betas=[0.9, nan]", "optim.betas"),
    ("run.seed=-1", "run.seed = -1: expected >= 0"),
    ("numerics.w_frac=25", "numerics.w_frac = 25: expected 0..24"),
    ("numerics.w_frac=31", "numerics.w_frac = 31"),
    ("model.hidden=[true]", "model.hidden"),
])
def test_non_finite_and_out_of_range_config_values(override, match):
    refused(lambda: C.resolve({"model": {"name": "vgg11"}}, [override]), match)


def test_numerics_config_ranges_match_the_formats():
    """Every numerics.* value the config accepts is accepted by numerics.Formats (and the other way)."""
    from stopnp.fixed.formats import formats_from_config
    for key, values in {"w_frac": range(0, 33), "x_frac": range(0, 33), "p_frac": range(0, 33),
                        "w_headroom": range(0, 10)}.items():
        for v in values:
            try:
                cfg = C.resolve({}, [f"numerics.{key}={v}"])
            except ConfigError:
                config_ok = False
            else:
                config_ok = True
                formats_from_config(cfg)   # must not raise
            if not config_ok:
                with pytest.raises(ConfigError):
                    formats_from_config({"numerics": {**C.defaults()["numerics"], key: v}})


@pytest.fixture(scope="module")
def small():
    net = stopnp.build("mlp", model__hidden=[8], model__input_shape=[6], model__n_classes=3)
    x = np.random.default_rng(0).uniform(0, 1, (3, 2, 6)).astype(np.float32)
    return net, x, np.array([0, 2])


@pytest.mark.parametrize("options, match", [
    (dict(loss="l1"), ["option loss (loss.kind) = 'l1'", "ce, ce_mse, mse"]),
    (dict(alpha_reduce="max"), ["option alpha_reduce", "mean, sum"]),
    (dict(loss_reduce="max"), ["option loss_reduce", "sum, mean"]),
    (dict(mix=7.0), ["option mix", "0 <= lambda <= 1"]),
    (dict(ottt_lambda=5.0), ["option ottt_lambda"]),
    (dict(ottt_lambda=float("nan")), ["option ottt_lambda", "finite"]),
    (dict(k=0), ["option k", ">= 1"]),
    (dict(k=-1), ["option k"]),
    (dict(k="2"), ["option k"]),
    (dict(k=1.5), ["option k"]),
    (dict(learn="TL"), ["option learn"]),
    (dict(surrogate="foo"), ["option surrogate", "exp, triangle"]),
    (dict(bn_mode="x"), ["option bn_mode", "train, eval"]),
    (dict(smooth=1), ["option smooth"]),
])
def test_library_options_are_checked(small, options, match):
    net, x, y = small
    refused(lambda: stopnp.gradients(net, x, y, **options), *match)


def test_library_options_accept_numpy_scalars(small):
    net, x, y = small
    g = stopnp.gradients(net, x, y, mix=np.float32(0.25), loss="ce_mse")
    assert set(g) >= {"fc1.weight"}
    stopnp.gradients(net, x, y, rule="sltt-k", learn="W", k=np.int64(2))


def test_numerics_option_and_fixed_options(small):
    net, x, y = small
    refused(lambda: stopnp.simulate(net, x, numerics="int"), "option numerics", "float, fixed")
    refused(lambda: stopnp.predict(net, x, numerics="int"), "option numerics")
    refused(lambda: stopnp.gradients(net, x, y, numerics="int"), "option numerics")
    refused(lambda: stopnp.predict(net, x, numerics="fixed", mix=0.1), "mix", "numerics='fixed'")
    refused(lambda: stopnp.gradients(net, x, y, numerics="fixed", learn_last=-1), "option learn_last (numerics.learn_last) = -1")
    assert stopnp.predict(net, x, numerics="fixed", bn_mode="eval").shape == (2,)


def test_network_dtype_and_type(small):
    net, x, y = small
    for dtype in (np.int32, np.float16, "nonsense"):
        refused(lambda: net.astype(dtype), "Network.astype", "float32 or float64")
    assert net.astype(np.float64).params["fc1.weight"].dtype == np.float64
    refused(lambda: stopnp.gradients({"model": {}}, x, y), "got dict", "stopnp.build")
    refused(lambda: stopnp.predict([1], x), "got list", "stopnp.build")
