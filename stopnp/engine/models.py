"""The model zoo as layer-spec lists (docs/algorithms.md §6).

A spec is a list of plain dicts that ``network.build_layers`` turns into layer records:

    {"type": "conv", "out": C, "k": 3, "stride": 1, "pad": 1, "bn": bool}   -> conv [-> BN] -> LIF
    {"type": "linear", "out": N, "bn": bool}                                  -> fc [-> BN] -> LIF
    {"type": "avgpool", "k": 2} | {"type": "maxpool", "k": 2} | {"type": "gap"}
    {"type": "flatten"} | {"type": "dropout", "p": 0.1}                       (act on spikes)
    {"type": "resblock", "out": C, "stride": s}                               spiking basic block

The last weight layer is the output layer (spiking LIF, or non-spiking readout by config). The keys of
each type, their defaults and valid values: ``network.LAYER_KEYS``, ``network.LAYER_CHECKS``.
"""
from ..config import ConfigError

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def mlp(hidden=(800,), n_classes=10, dropout=0.0, bn=False, **_):
    spec = [{"type": "flatten"}]
    for h in hidden:
        spec.append({"type": "linear", "out": int(h), "bn": bn})
        if dropout:
            spec.append({"type": "dropout", "p": dropout})
    spec.append({"type": "linear", "out": n_classes, "bn": False})
    return spec


def lenet5(n_classes=10, bn=False, pool="avg", dropout=0.0, input_shape=(1, 28, 28), **_):
    # pad 2 on the first conv keeps the classic 28 -> 28 -> 14 -> 10 -> 5 geometry for 28x28 inputs
    p = pool + "pool"
    spec = [{"type": "conv", "out": 6, "k": 5, "stride": 1, "pad": 2, "bn": bn}, {"type": p, "k": 2},
            {"type": "conv", "out": 16, "k": 5, "stride": 1, "pad": 0, "bn": bn}, {"type": p, "k": 2},
            {"type": "flatten"},
            {"type": "linear", "out": 120, "bn": False}]
    if dropout:
        spec.append({"type": "dropout", "p": dropout})
    spec += [{"type": "linear", "out": 84, "bn": False}]
    if dropout:
        spec.append({"type": "dropout", "p": dropout})
    spec += [{"type": "linear", "out": n_classes, "bn": False}]
    return spec


def vgg11(n_classes=10, bn=True, pool="avg", dropout=0.0, width=1.0, **_):
    spec = []
    for v in VGG11:
        if v == "M":
            spec.append({"type": pool + "pool", "k": 2})
        else:
            spec.append({"type": "conv", "out": max(1, int(v * width)), "k": 3, "stride": 1, "pad": 1,
                         "bn": bn})
    spec.append({"type": "gap"})
    spec.append({"type": "flatten"})
    if dropout:
        spec.append({"type": "dropout", "p": dropout})
    spec.append({"type": "linear", "out": n_classes, "bn": False})
    return spec


def resnet18(n_classes=10, bn=True, width=1.0, **_):
    c = lambda n: max(1, int(n * width))  # noqa: E731
    spec = [{"type": "conv", "out": c(64), "k": 3, "stride": 1, "pad": 1, "bn": bn}]
    for stage, (ch, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
        spec.append({"type": "resblock", "out": c(ch), "stride": stride, "bn": bn})
        spec.append({"type": "resblock", "out": c(ch), "stride": 1, "bn": bn})
    spec += [{"type": "gap"}, {"type": "flatten"}, {"type": "linear", "out": n_classes, "bn": False}]
    return spec


ZOO = {"mlp": mlp, "lenet5": lenet5, "vgg11": vgg11, "resnet18": resnet18}
DEFAULT_BN = {"mlp": False, "lenet5": False, "vgg11": True, "resnet18": True}


def spec_from_config(model_cfg: dict) -> list:
    name = model_cfg["name"]
    layers = model_cfg.get("layers")
    if name == "custom" and layers is None:
        raise ConfigError("model.name = 'custom' needs model.layers: a list of layer tables such as "
                          "{type = \"linear\", out = 10}")
    if name == "custom":
        return list(layers)
    if layers is not None:
        raise ConfigError(f"model.layers is read with model.name = 'custom' only; remove it, or set "
                          f"model.name = 'custom' instead of {name!r}")
    bn = model_cfg.get("bn")
    kw = dict(model_cfg)
    kw["bn"] = DEFAULT_BN[name] if bn is None else bn
    kw["n_classes"] = model_cfg["n_classes"] * model_cfg.get("vote", 1)  # voting readout: G neurons a class
    return ZOO[name](**{k: v for k, v in kw.items() if k != "name"})
