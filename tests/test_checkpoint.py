"""Checkpoints: bit-exact round trip, RNG stream restored, atomic writes, readable errors."""
import os

import h5py
import numpy as np
import pytest

from stopnp.run import checkpoint
from stopnp.run.checkpoint import Checkpoint, CheckpointError


def _state():
    rng = np.random.default_rng(5)
    params = {"fc1.weight": rng.normal(size=(4, 3)).astype(np.float32), "fc1.alpha": np.array([0.5], np.float32),
              "fc1.theta": np.ones(4, np.float32), "conv1.bn.running_mean": rng.normal(size=3),
              "x.scalar": np.array(3.0), "a.first": np.arange(3, dtype=np.int16)}
    opt = {"kind": "adam", "step": 7, "m": {k: v * 2 for k, v in params.items()},
           "v": {k: v * 3 for k, v in params.items()}}
    return params, opt, rng


def _kw(rng, **over):
    kw = dict(rng_state=rng.bit_generator.state, config={}, epoch=0, step=0)
    kw.update(over)
    return kw


def test_round_trip_bitwise_and_rng(tmp_path):
    params, opt, rng = _state()
    opt["scalars"] = {"beta": np.float32(0.9), "flag": True, "none": None, "name": "x", "lst": [1, 2.5]}
    rng.random(10)
    p = tmp_path / "c.h5"
    assert checkpoint.save(p, params=params, opt_state=opt, rng_state=rng.bit_generator.state,
                           config={"a": {"b": 1}, "l": [1, "x"]}, epoch=3, step=11,
                           metrics=[{"epoch": 1, "test_acc": np.float32(0.5)}], extra={"note": "hi"}) == p
    ck = checkpoint.load(p, expect_params=params)
    assert isinstance(ck, Checkpoint)
    assert list(ck.params) == list(params)  # insertion order kept, not alphabetical
    for k, v in params.items():
        got = ck.params[k]
        assert type(got) is np.ndarray and got.dtype == v.dtype and got.shape == v.shape
        assert got.tobytes() == v.tobytes()
    assert ck.params["x.scalar"].shape == ()  # 0-d stays a 0-d array
    assert ck.opt_state["kind"] == "adam" and ck.opt_state["step"] == 7
    for key in ("m", "v"):
        for k, v in opt[key].items():
            assert ck.opt_state[key][k].dtype == v.dtype and ck.opt_state[key][k].tobytes() == v.tobytes()
    sc = ck.opt_state["scalars"]
    assert type(sc["beta"]) is np.float32 and sc["beta"] == np.float32(0.9)
    assert sc["flag"] is True and sc["none"] is None and sc["name"] == "x" and sc["lst"] == [1, 2.5]
    assert ck.epoch == 3 and ck.step == 11 and ck.config == {"a": {"b": 1}, "l": [1, "x"]}
    assert ck.metrics == [{"epoch": 1, "test_acc": 0.5}] and ck.extra == {"note": "hi"}
    assert ck.format_version == 2 and ck.stopnp_version
    r2 = np.random.default_rng()
    r2.bit_generator.state = ck.rng_state
    assert np.array_equal(r2.random(5), rng.random(5))
    with h5py.File(p, "r") as f:  # the documented layout, readable by any HDF5 tool
        assert f.attrs["format_version"] == 2 and isinstance(f.attrs["config"], str)
        assert f.attrs["sha256"] == checkpoint.digest(f)
        assert f["params/fc1.weight"].dtype == np.float32 and "opt_state/m/fc1.weight" in f


@pytest.mark.parametrize("bitgen", [np.random.MT19937, np.random.Philox, np.random.SFC64, np.random.PCG64DXSM])
def test_rng_states_with_arrays_and_big_ints(tmp_path, bitgen):
    rng = np.random.Generator(bitgen(123))
    rng.integers(0, 10, 7)
    checkpoint.save(tmp_path / "r.h5", params={}, opt_state={}, **_kw(rng))
    r2 = np.random.Generator(bitgen())
    r2.bit_generator.state = checkpoint.load(tmp_path / "r.h5").rng_state
    assert np.array_equal(r2.integers(0, 2**62, 20), rng.integers(0, 2**62, 20))
    assert np.array_equal(r2.standard_normal(5), rng.standard_normal(5))


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    params, opt, rng = _state()
    p = tmp_path / "last.h5"
    checkpoint.save(p, params=params, opt_state=opt, **_kw(rng, epoch=1))
    before = p.read_bytes()
    seen = []
    real = h5py.Group.create_dataset

    def boom(self, name, *a, **k):
        if name == "fc1.theta":  # some data already written into the temporary
            seen.append(sorted(os.listdir(tmp_path)))
            raise RuntimeError("simulated crash")
        return real(self, name, *a, **k)

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        checkpoint.save(p, params={k: v + 1 for k, v in params.items()}, opt_state=opt, **_kw(rng, epoch=2))
    monkeypatch.undo()
    assert len(seen[0]) == 2  # the temporary was open beside last.h5 when the crash came
    assert p.read_bytes() == before
    ck = checkpoint.load(p)
    assert ck.epoch == 1 and np.array_equal(ck.params["fc1.weight"], params["fc1.weight"])
    assert sorted(os.listdir(tmp_path)) == ["last.h5"]  # no temporary left behind


def test_crash_before_replace_and_interrupt(tmp_path, monkeypatch):
    params, opt, rng = _state()
    p = tmp_path / "sub" / "last.h5"

    def no_replace(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(p, params=params, opt_state=opt, **_kw(rng))
    monkeypatch.undo()
    assert os.listdir(p.parent) == []  # first save failed: nothing at all, not a half file

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    checkpoint.save(p, params=params, opt_state=opt, **_kw(rng))
    monkeypatch.setattr(h5py.Group, "create_dataset", interrupt)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(p, params=params, opt_state=opt, **_kw(rng, epoch=5))
    monkeypatch.undo()
    assert os.listdir(p.parent) == ["last.h5"] and checkpoint.load(p).epoch == 0


def test_unstorable_values_fail_before_touching_the_file(tmp_path):
    params, opt, rng = _state()
    p = tmp_path / "c.h5"
    checkpoint.save(p, params=params, opt_state=opt, **_kw(rng))
    with pytest.raises(CheckpointError, match="config"):
        checkpoint.save(p, params=params, opt_state=opt, **_kw(rng, config={"f": object()}))
    with pytest.raises(CheckpointError, match="'a/b'"):
        checkpoint.save(p, params={"a/b": np.zeros(2)}, opt_state=opt, **_kw(rng))
    with pytest.raises(CheckpointError, match="dtype object"):
        checkpoint.save(p, params={"w": np.array([None])}, opt_state=opt, **_kw(rng))
    assert sorted(os.listdir(tmp_path)) == ["c.h5"] and checkpoint.load(p).epoch == 0


def test_truncated_and_garbage_files(tmp_path):
    params, opt, rng = _state()
    p = tmp_path / "c.h5"
    checkpoint.save(p, params=params, opt_state=opt, **_kw(rng))
    data = p.read_bytes()
    for cut in (len(data) // 2, 100, len(data) - 1):
        t = tmp_path / "trunc.h5"
        t.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="trunc.h5: corrupt or truncated") as e:
            checkpoint.load(t)
        assert "\n" not in str(e.value)
    g = tmp_path / "garbage.h5"
    g.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbage.h5: corrupt or truncated"):
        checkpoint.load(g)
    with pytest.raises(CheckpointError, match="missing.h5: checkpoint not found"):
        checkpoint.load(tmp_path / "missing.h5")
    with pytest.raises(CheckpointError, match="is a directory"):
        checkpoint.load(tmp_path)
    other = tmp_path / "cache.h5"  # a valid HDF5 file that is not a checkpoint (e.g. a dataset cache)
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(CheckpointError, match="cache.h5: not a stopnp checkpoint"):
        checkpoint.load(other)


def _poke(path, dataset, data):
    """Overwrite the stored bytes of ``dataset`` in place (what a bad disk or a stray write does)."""
    with h5py.File(path, "r") as f:
        off = f[dataset].id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(off)
        fh.write(data)


@pytest.mark.parametrize("damage", ["random_bytes", "one_weight", "momentum", "config_attr", "epoch_attr",
                                    "digest_removed", "new_dataset"])
def test_any_change_after_writing_is_refused_in_one_line(tmp_path, damage):
    params, opt, rng = _state()
    p = tmp_path / "c.h5"
    checkpoint.save(p, params=params, opt_state=opt, **_kw(rng, config={"a": {"b": 1}}))
    checkpoint.load(p)
    if damage == "random_bytes":
        _poke(p, "params/fc1.weight", np.random.default_rng(1).bytes(7))
    elif damage == "one_weight":
        _poke(p, "params/fc1.weight", np.float32(12345.0).tobytes())
    elif damage == "momentum":
        _poke(p, "opt_state/m/fc1.theta", np.float32(np.nan).tobytes())
    else:
        with h5py.File(p, "a") as f:
            if damage == "config_attr":
                f.attrs["config"] = '{"a": {"b": 2}}'
            elif damage == "epoch_attr":
                f.attrs["epoch"] = 5
            elif damage == "digest_removed":
                del f.attrs["sha256"]
            else:
                f["params"].create_dataset("extra", data=np.zeros(2))
    with pytest.raises(CheckpointError, match="c.h5: (checksum mismatch|no sha256 digest)") as e:
        checkpoint.load(p)
    assert "\n" not in str(e.value)


def test_a_format_1_file_loads_unverified_with_a_note(tmp_path, capsys):
    params, opt, rng = _state()
    p = tmp_path / "old.h5"
    checkpoint.save(p, params=params, opt_state=opt, **_kw(rng))
    with h5py.File(p, "a") as f:  # what stopnp wrote before the digest
        f.attrs["format_version"] = 1
        del f.attrs["sha256"]
    ck = checkpoint.load(p, expect_params=params)
    assert ck.format_version == 1 and ck.params["fc1.weight"].tobytes() == params["fc1.weight"].tobytes()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "old.h5: format 1 checkpoint, no checksum" in err
    checkpoint.load(p)
    assert capsys.readouterr().err == ""  # once per file


def test_version_mismatch_names_found_and_supported(tmp_path):
    params, opt, rng = _state()
    p = tmp_path / "c.h5"
    checkpoint.save(p, params=params, opt_state=opt, **_kw(rng))
    with h5py.File(p, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CheckpointError, match=r"c.h5: checkpoint format version 99 .*reads version\(s\) 1, 2"):
        checkpoint.load(p)


def test_expect_params_mismatches(tmp_path):
    params, opt, rng = _state()
    p = tmp_path / "c.h5"
    checkpoint.save(p, params=params, opt_state=opt, **_kw(rng))
    shapes = {k: v.shape for k, v in params.items()}
    assert checkpoint.load(p, expect_params=shapes).params.keys() == params.keys()
    with pytest.raises(CheckpointError, match=r"c.h5: .*fc1.weight: checkpoint has \(4, 3\), network expects \(4, 5\)"):
        checkpoint.load(p, expect_params={**shapes, "fc1.weight": (4, 5)})
    with pytest.raises(CheckpointError, match=r"x.scalar: checkpoint has \(\), network expects \(1,\)"):
        checkpoint.load(p, expect_params={**shapes, "x.scalar": (1,)})
    with pytest.raises(CheckpointError, match="fc1.theta: checkpoint has dtype float32, network expects a integer"):
        checkpoint.load(p, expect_params={**params, "fc1.theta": np.ones(4, np.int32)})
    # float32 vs float64 is the same family: the network casts on load
    checkpoint.load(p, expect_params={**params, "fc1.theta": np.ones(4, np.float64)})
    with pytest.raises(CheckpointError, match="missing from checkpoint: fc9.weight; unknown to the network: "
                                              "fc1.weight"):
        checkpoint.load(p, expect_params={**{k: s for k, s in shapes.items() if k != "fc1.weight"},
                                          "fc9.weight": (1,)})


def test_save_best_and_last(tmp_path):
    params, opt, rng = _state()
    run = tmp_path / "run"
    w = checkpoint.save_best_and_last(run, is_best=True, params=params, opt_state=opt, **_kw(rng, epoch=1))
    assert [os.path.basename(x) for x in w] == ["last.h5", "best.h5"]
    w = checkpoint.save_best_and_last(run, is_best=False, params=params, opt_state=opt, **_kw(rng, epoch=2))
    assert len(w) == 1
    assert checkpoint.load(run / "last.h5").epoch == 2 and checkpoint.load(run / "best.h5").epoch == 1
    assert sorted(os.listdir(run)) == ["best.h5", "last.h5"]


def test_network_save_load_round_trip(tmp_path):
    import stopnp
    net = stopnp.build("mlp", model__input_shape=[12], model__hidden=[7], model__n_classes=3)
    net.params["fc1.theta"][...] = 0.7
    stopnp.save(net, tmp_path / "n.h5")
    back = stopnp.load(tmp_path / "n.h5")
    assert back.config == net.config
    for k in net.params:
        assert np.array_equal(back.params[k], net.params[k]) and back.params[k].dtype == net.params[k].dtype


def test_no_engine_import():
    """checkpoint, progress and plot work on plain containers: their only stopnp imports are leaves.
    (Checked in the source: ``import stopnp`` itself loads the engine through its __init__.)"""
    import ast
    import stopnp
    root = os.path.dirname(stopnp.__file__)
    allowed = {"_version", "fsutil"}
    for mod in ("run/checkpoint", "run/progress", "tools/plot"):
        with open(os.path.join(root, f"{mod}.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    names = [node.module] if node.module else [a.name for a in node.names]
                    assert set(n.split(".")[0] for n in names) <= allowed, (mod, names)
                else:
                    assert not (node.module or "").startswith("stopnp"), (mod, node.module)
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith(("stopnp", "numba")) for a in node.names), mod


def test_a_full_disk_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch):
    """HDF5 reports a failed write in two lines naming the temporary file; the user sees one naming last.h5."""
    from stopnp.fsutil import WriteError
    params, opt, rng = _state()
    run = tmp_path / "run"
    checkpoint.save_best_and_last(run, is_best=True, params=params, opt_state=opt, **_kw(rng, epoch=1))
    before = {n: (run / n).read_bytes() for n in os.listdir(run)}

    def full(self):
        raise OSError(f"[Errno 28] Can't synchronously write data (file write failed: time = Thu, "
                      f"filename = '{self.filename}', errno = 28, error message = 'No space left on device')\n"
                      f"HDF5-DIAG: Error detected in HDF5 (1.14.2)")

    monkeypatch.setattr(h5py.File, "flush", full)
    with pytest.raises(WriteError) as e:
        checkpoint.save_best_and_last(run, is_best=True, params=params, opt_state=opt, **_kw(rng, epoch=2))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(run / "last.h5")) and "disk is full" in msg, msg
    assert ".tmp" not in msg
    assert {n: (run / n).read_bytes() for n in os.listdir(run)} == before  # no temporary, nothing changed
