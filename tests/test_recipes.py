"""Every packaged recipe (stopnp/resources/configs) resolves, builds, and its model accepts its input shape;
recipes are found by name or path, and unknown names list the packaged ones."""
import os

import numpy as np
import pytest

import stopnp
from stopnp import config as C
from stopnp import recipes

RECIPES = [recipes.path(n) for n in recipes.names()]


def test_all_paper_settings_have_a_recipe():
    names = set(recipes.names())
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
    recipe = C.resolve(C.read(recipes.path("mnist-lenet5")))
    default = C.resolve(C.DEFAULT_TRAIN)
    for sec in ("model", "neuron", "rule", "loss", "optim", "data", "run"):
        assert recipe[sec] == default[sec], sec


def test_locate_name_path_and_unknown(tmp_path, monkeypatch):
    assert recipes.locate("fashion-lenet5") == recipes.locate("fashion-lenet5.toml") == recipes.path("fashion-lenet5")
    assert os.path.isfile(recipes.path("fashion-lenet5"))
    mine = tmp_path / "fashion-lenet5.toml"
    mine.write_text("[run]\nepochs = 1\n")
    monkeypatch.chdir(tmp_path)
    assert recipes.locate("fashion-lenet5.toml") == "fashion-lenet5.toml"  # a file in the cwd wins
    with pytest.raises(C.ConfigError, match="no such config file or packaged recipe; pass .* packaged recipes: .*mnist-lenet5"):
        recipes.locate("mnist-lenet6")
    with pytest.raises(C.ConfigError, match="config file not found"):
        recipes.locate("sub/mnist-lenet5.toml")
    with pytest.raises(C.ConfigError, match="unknown recipe 'nope'; packaged recipes: cifar10-vgg11"):
        recipes.path("nope")


def test_cli_recipes_list_show_copy_and_train_by_name(tmp_path, monkeypatch, capsys):
    from stopnp.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == recipes.names() and "Fashion-MNIST" in "".join(listed)
    assert main(["recipes", "show", "rule-stop"]) == 0
    assert capsys.readouterr().out == open(recipes.path("rule-stop"), encoding="utf-8").read()
    assert main(["recipes", "copy", "fashion-lenet5"]) == 0
    assert (tmp_path / "fashion-lenet5.toml").read_text() == open(recipes.path("fashion-lenet5")).read()
    assert main(["recipes", "copy", "fashion-lenet5"]) == 2  # no silent overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["recipes", "copy", "fashion-lenet5", "--force"]) == 0
    assert main(["recipes", "show", "nope"]) == 2 and "packaged recipes" in capsys.readouterr().err
    assert main(["train", "fashion-lenet5", "--print-config"]) == 0
    assert 'name = "fashion-mnist"' in capsys.readouterr().out
    assert main(["train", "mnist-lenet6"]) == 2
    err = capsys.readouterr().err
    assert "mnist-lenet6: no such config file or packaged recipe" in err and "fashion-lenet5" in err
    assert not (tmp_path / "runs").exists()


def test_build_takes_a_recipe_name():
    net = stopnp.build("fashion-lenet5", run__seed=1)
    assert net.config["data"]["name"] == "fashion-mnist" and net.config["model"]["name"] == "lenet5"
    assert stopnp.build("mlp").config["model"]["name"] == "mlp"
    with pytest.raises(C.ConfigError, match="unknown model 'lenet6'; valid: mlp.*packaged recipe.*fashion-lenet5"):
        stopnp.build("lenet6")
