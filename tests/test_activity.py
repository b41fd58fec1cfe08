"""Silent layers and a loss stuck at chance: one line naming the layer and the fix; a run that stays at
chance stops; a run that learns says nothing."""
import io
import math

import numpy as np
import pytest

from stopnp.run import activity
from stopnp import config as C
from stopnp.engine.network import from_config
from stopnp.run.train import TrainingError, train

TINY = ["model.name=mlp", "model.hidden=[32]", "data.limit_train=256", "data.limit_test=100",
        "data.batch_size=64", "data.test_batch_size=100", "data.T=3", "run.quiet=true", "optim.lr=0.05"]


def _cfg(tmp_path, name, extra=()):
    return C.resolve({}, TINY + [f'run.out_dir="{tmp_path / name}"', *extra])


@pytest.mark.parametrize("kind,reduce", [("ce", "sum"), ("ce", "mean"), ("ce_mse", "mean"), ("mse", "sum")])
def test_chance_loss_is_the_engines_loss_of_a_silent_output(kind, reduce):
    """A threshold nothing reaches silences every layer; the engine's loss is then chance_loss exactly."""
    from stopnp.rules import runner
    from stopnp.rules.common import resolve_options
    cfg = C.resolve({}, ["model.name=mlp", "model.hidden=[16]", "data.T=5", "neuron.theta_init=1e6",
                         f"loss.kind={kind}", f"loss.reduce={reduce}"])
    net = from_config(cfg)
    x = np.random.default_rng(0).random((5, 8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8) % 10
    res = runner("stop")(net, net.params, x, y, resolve_options(net, "stop", {}))
    assert all(c == 0 for c in res.spike_counts.values())
    assert res.loss == pytest.approx(activity.chance_loss(cfg), rel=1e-6)
    if (kind, reduce) == ("ce", "sum"):
        assert activity.chance_loss(cfg) == pytest.approx(5 * math.log(10))


def test_silent_output_is_one_line_naming_layer_and_fix_and_stops_at_chance(tmp_path):
    cfg = _cfg(tmp_path, "silent", ["neuron.theta_init=1e6", "run.epochs=1"])
    out = io.StringIO()
    res = train(cfg, stream=out)
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1, out.getvalue()
    line = lines[0]
    assert "'fc1'" in line and "'fc2'" in line and "at chance" in line and "T·ln C" in line
    assert 'model.readout = "membrane"' in line and "optim.lr" in line and "model.init_gain" in line
    assert res.metrics[0]["train_loss"] == pytest.approx(3 * math.log(10), rel=1e-6)
    # three epochs in a row at chance: training stops with the same advice, the checkpoint kept
    with pytest.raises(TrainingError, match="at chance for 3 epochs.*model.readout"):
        train(_cfg(tmp_path, "stops", ["neuron.theta_init=1e6", "run.epochs=5"]), stream=io.StringIO())
    assert (tmp_path / "stops" / "last.h5").exists()


def test_a_silent_hidden_layer_names_that_layer_and_init_gain():
    """Rates as an epoch would sum them: the hidden layer fired nothing, the loss moves (not at chance)."""
    cfg = C.resolve({}, ["model.name=mlp", "model.hidden=[32, 32]", "model.readout=membrane"])
    net = from_config(cfg)
    line = activity.check(net, cfg, {"fc1": 0.12, "fc2": 0.0}, train_loss=3.1, test_acc=0.6, epoch=4)
    assert line.startswith("warning: epoch 4: layer 'fc2' (0)") and "model.init_gain (now 2)" in line
    assert "readout" not in line and "\n" not in line
    # negative controls: a layer that fires a little is not silent; a loss 2 % off chance is not at chance
    assert activity.check(net, cfg, {"fc1": 0.12, "fc2": 2e-4}, 3.1, 0.6, 4) == ""
    e0 = activity.chance_loss(cfg)
    assert activity.check(net, cfg, {"fc1": 0.1, "fc2": 0.1}, 1.02 * e0, 0.1, 1) == ""
    assert "at chance" in activity.check(net, cfg, {"fc1": 0.1, "fc2": 0.1}, 1.001 * e0, 0.1, 1)


def test_a_run_that_learns_prints_no_warning(tmp_path):
    out = io.StringIO()
    res = train(_cfg(tmp_path, "ok", ["run.epochs=1", "run.quiet=false", "model.readout=membrane"]), stream=out)
    assert res.metrics[0]["test_acc"] > 0.3 and "epoch 1:" in out.getvalue()
    assert "warning:" not in out.getvalue()
