"""Every recipe in examples/configs resolves, builds, and its model accepts its input shape."""
import glob
import os

import numpy as np
import pytest

import stopnp
from stopnp import config as C

ROOT = os.path.dirname(os.path.dirname(__file__))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "examples", "configs", "*.toml")))


def test_all_paper_settings_have_a_recipe():
    names = {os.path.basename(p)[:-5] for p in RECIPES}
    assert {"mnist-lenet5", "fashion-lenet5", "nmnist", "cifar10-vgg11", "cifar100-resnet18",
            "dvsgesture-vgg11", "dvscifar10-vgg11"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: os.path.basename(p))
def test_recipe_resolves_and_builds(path):
    cfg = C.resolve(C.read(path))
    # shrink wide models so the test stays light; the structure is what is checked
    if cfg["model"]["name"] in ("vgg11", "resnet18"):
        cfg["model"]["width"] = 0.0625
    net = stopnp.build(cfg)
    assert net.layers[-1].size == cfg["model"]["n_classes"] or cfg["rule"]["name"] == "bpsta"
    if cfg["model"]["input_shape"][-1] <= 48:
        x = np.random.default_rng(0).uniform(0, 1, (2, 2, *net.input_shape)).astype(np.float32)
        assert stopnp.predict(net, x).shape == (2,)


def test_default_train_config_is_the_mnist_lenet5_recipe():
    recipe = C.resolve(C.read(os.path.join(ROOT, "examples", "configs", "mnist-lenet5.toml")))
    default = C.resolve(C.DEFAULT_TRAIN)
    for sec in ("model", "neuron", "rule", "loss", "optim", "data", "run"):
        assert recipe[sec] == default[sec], sec
