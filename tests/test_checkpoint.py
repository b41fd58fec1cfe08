"""Checkpoints: bit-exact round trip, RNG stream restored, atomic writes, readable errors."""
import os

import h5py
import numpy as np
import pytest

from stopnp import checkpoint
from stopnp.checkpoint import CheckpointError


def _state():
    rng = np.random.default_rng(5)
    params = {"fc1.weight": rng.normal(size=(4, 3)).astype(np.float32), "fc1.alpha": np.array([0.5], np.float32),
              "fc1.theta": np.ones(4, np.float32), "x.scalar": np.array(3.0)}
    opt = {"kind": "adam", "step": 7, "m": {k: v * 0.1 for k, v in params.items()},
           "v": {k: v * 0.2 for k, v in params.items()}}
    return params, opt, rng


def test_round_trip_bitwise_and_rng(tmp_path):
    params, opt, rng = _state()
    rng.random(10)
    p = tmp_path / "c.h5"
    checkpoint.save(p, params=params, opt_state=opt, rng_state=rng.bit_generator.state, config={"a": {"b": 1}},
                    epoch=3, step=11, metrics=[{"epoch": 1, "test_acc": 0.5}])
    ck = checkpoint.load(p, expect_params={k: v.shape for k, v in params.items()})
    for k, v in params.items():
        assert ck.params[k].dtype == v.dtype and ck.params[k].shape == v.shape
        assert np.array_equal(ck.params[k], v)
    assert ck.opt_state["kind"] == "adam" and ck.opt_state["step"] == 7
    assert np.array_equal(ck.opt_state["m"]["fc1.weight"], opt["m"]["fc1.weight"])
    assert ck.epoch == 3 and ck.step == 11 and ck.config == {"a": {"b": 1}} and ck.metrics[0]["test_acc"] == 0.5
    r2 = np.random.default_rng()
    r2.bit_generator.state = ck.rng_state
    assert np.array_equal(r2.random(5), rng.random(5))


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    params, opt, rng = _state()
    p = tmp_path / "last.h5"
    kw = dict(opt_state=opt, rng_state=rng.bit_generator.state, config={}, epoch=1, step=0)
    checkpoint.save(p, params=params, **kw)

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        checkpoint.save(p, params={k: v + 1 for k, v in params.items()}, **kw)
    monkeypatch.undo()
    ck = checkpoint.load(p)
    assert np.array_equal(ck.params["fc1.weight"], params["fc1.weight"])
    assert sorted(os.listdir(tmp_path)) == ["last.h5"]  # no temporary left behind


def test_truncated_and_garbage_files(tmp_path):
    params, opt, rng = _state()
    p = tmp_path / "c.h5"
    checkpoint.save(p, params=params, opt_state=opt, rng_state=rng.bit_generator.state, config={}, epoch=0, step=0)
    data = p.read_bytes()
    t = tmp_path / "trunc.h5"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.h5: corrupt or truncated"):
        checkpoint.load(t)
    g = tmp_path / "garbage.h5"
    g.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbage.h5"):
        checkpoint.load(g)
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing.h5")


def test_version_and_shape_mismatch(tmp_path):
    params, opt, rng = _state()
    p = tmp_path / "c.h5"
    checkpoint.save(p, params=params, opt_state=opt, rng_state=rng.bit_generator.state, config={}, epoch=0, step=0)
    with pytest.raises(CheckpointError, match=r"fc1.weight: checkpoint has \(4, 3\), network expects \(4, 5\)"):
        checkpoint.load(p, expect_params={**{k: v.shape for k, v in params.items()}, "fc1.weight": (4, 5)})
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.load(p, expect_params={"fc9.weight": (1,)})
    with h5py.File(p, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CheckpointError, match="format version 99"):
        checkpoint.load(p)


def test_network_save_load_round_trip(tmp_path):
    import stopnp
    net = stopnp.build("mlp", model__input_shape=[12], model__hidden=[7], model__n_classes=3)
    net.params["fc1.theta"][...] = 0.7
    stopnp.save(net, tmp_path / "n.h5")
    back = stopnp.load(tmp_path / "n.h5")
    assert back.config == net.config
    for k in net.params:
        assert np.array_equal(back.params[k], net.params[k]) and back.params[k].dtype == net.params[k].dtype
