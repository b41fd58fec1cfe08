"""export/c.py: the generated C99 compiles warning-free and matches the Python fixed point bit for bit.

The harness (templates/harness.c) is an independent loop implementation of what fixed/integer.py computes with
NumPy; it exits 1 on any mismatch, so each test below is a real comparison (see the negative controls).
"""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import stopnp
from stopnp.fixed import integer as fixed
from stopnp.export import c as cexp

from nets import convnet, mlp3
from tools_needed import missing


@pytest.fixture(autouse=True)
def _gcc():
    if shutil.which("gcc") is None:
        missing("gcc not installed: the C export is not compiled")


def _lenet(**over):
    return stopnp.build("lenet5", model__readout="membrane", **over)


def _inputs(net, n_seq=2, T=3, B=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n_seq, T, B) + tuple(net.input_shape)).astype(np.float32)
    y = rng.integers(0, net.n_classes, (n_seq, B))
    return x, y


def _export_and_run(tmp_path, net, x, y=None, learn_last=0, **kw):
    cexp.export(net, tmp_path, learn="stop" if y is not None else None, learn_last=learn_last, batch=x.shape[2], **kw)
    vec = os.path.join(tmp_path, "vectors.bin")
    q = cexp.write_vectors(vec, net, x, y, learn_last=learn_last, lr=(0.1, 0.1, 0.1))
    rc, out = cexp.compile_and_check(str(tmp_path), vec)
    return rc, out, q


def _spike_rates(net, x):
    q = fixed.quantize(net)
    rec = {}
    fixed.run(q, fixed.quantize_input(q, x[0]), record=rec)
    return {k: float(np.mean(v)) for k, v in rec.items() if k.endswith(".s")}


@pytest.mark.parametrize("name, make, learn", [
    ("mlp-spiking-infer", lambda: stopnp.build(mlp3().config), False),
    ("mlp-spiking-learn", lambda: stopnp.build(mlp3().config), True),
    ("mlp-readout-learn", lambda: stopnp.build(mlp3(readout="membrane").config), True),
    ("conv-avg-learn", lambda: stopnp.build(convnet().config), True),
    ("conv-max-channel-learn", lambda: stopnp.build(convnet(pool="maxpool", theta_mode="channel").config), True),
    ("conv-layer-theta-triangle", lambda: stopnp.build(convnet(theta_mode="layer", surrogate="triangle").config), True),
    ("mlp-rectangle-learn", lambda: stopnp.build(mlp3(surrogate="rectangle").config), True),
    ("mlp-hard-reset-infer", lambda: stopnp.build(mlp3(reset="hard").config), False),
    ("conv-bn-folded-infer", lambda: stopnp.build(convnet(bn=True).config), False),
])
def test_bit_exact(tmp_path, name, make, learn):
    net = make()
    x, y = _inputs(net, n_seq=3, T=4, B=3)
    x *= 1.5
    rates = _spike_rates(net, x)
    assert all(0 < r < 1 for r in rates.values()), rates
    rc, out, q = _export_and_run(tmp_path, net, x, y if learn else None)
    assert rc == 0, out
    assert "0 mismatches" in out
    if learn:   # the parameters really moved, so the update comparison is not vacuous
        q0 = fixed.quantize(net)
        assert any(not np.array_equal(q.params[k], q0.params[k]) for k in q.params if k.endswith(".weight"))


def test_lenet5_learning_bit_exact_over_ten_steps(tmp_path):
    """The issue's criterion: LeNet-5, on-device STOP, >= 10 training steps, everything bit-exact."""
    net = _lenet()
    x, y = _inputs(net, n_seq=10, T=2, B=2)
    rates = _spike_rates(net, x)
    assert all(0 < r < 1 for r in rates.values()), rates
    rc, out, q = _export_and_run(tmp_path, net, x, y)
    assert rc == 0 and "0 mismatches" in out, out
    n = int(re.search(r"(\d+) values compared", out).group(1))
    assert n > 10 * 2 * 2 * 6000   # outputs, V and s of every layer and step, and all parameters


def test_learn_last_layers(tmp_path):
    net = _lenet()
    x, y = _inputs(net, n_seq=2, T=2, B=1)
    rc, out, _ = _export_and_run(tmp_path, net, x, y, learn_last=2)
    assert rc == 0, out
    hdr = open(tmp_path / "stopnp.h").read()
    assert "#define STOPNP_LEARN_FROM 3" in hdr


def test_negative_controls(tmp_path):
    net = stopnp.build(convnet().config)
    x, y = _inputs(net, n_seq=2, T=3, B=2)
    rc, out, _ = _export_and_run(tmp_path, net, x, y)
    assert rc == 0, out
    vec = tmp_path / "vectors.bin"
    raw = bytearray(vec.read_bytes())
    # one expected membrane value off by one LSB: caught
    bad = tmp_path / "bad.bin"
    header = 4 * (8 + len(net.layers)) + 4 * (2 + 3)      # header, labels, learning rates
    pos = header + 4 * (2 * 2 * 8 * 8 + 2 * 3)            # after x and the outputs of step 0
    val = int.from_bytes(raw[pos:pos + 4], "little", signed=True)
    raw[pos:pos + 4] = (val + 1).to_bytes(4, "little", signed=True)
    bad.write_bytes(bytes(raw))
    r = subprocess.run([str(tmp_path / "harness"), str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "mismatch: membrane" in r.stderr
    # a wrong magic number, a truncated file: exit 2 with a message
    bad.write_bytes(b"XXXX" + bytes(vec.read_bytes()[4:]))
    r = subprocess.run([str(tmp_path / "harness"), str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "magic" in r.stderr
    bad.write_bytes(vec.read_bytes()[:100])
    r = subprocess.run([str(tmp_path / "harness"), str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "truncated" in r.stderr


def test_float_build_same_spikes_close_state(tmp_path):
    net = _lenet()
    x, _ = _inputs(net, n_seq=2, T=3, B=2)
    cexp.export(net, tmp_path, numerics="float", batch=2)
    vec, act = str(tmp_path / "v.bin"), str(tmp_path / "a.bin")
    q = cexp.write_float_vectors(vec, net, x)
    rc, out = cexp.compile_and_check(str(tmp_path), vec, actual=act)
    assert rc == 0, out
    got = cexp.read_actual(act, q, 2, 3, 2, numerics="float")
    for i, layer in enumerate(net.layers):
        ref = [stopnp.simulate(net, x[s], record=("u", "v", "s", "i"), numerics="float") for s in range(2)]
        if layer.spiking:
            s_ref = np.concatenate([r[f"{layer.name}.s"] for r in ref]).reshape(got["s"][i].shape)
            u_ref = np.concatenate([r[f"{layer.name}.u"] for r in ref]).reshape(got["s"][i].shape)
            theta = np.broadcast_to(net.params[f"{layer.name}.theta"], layer.shape).reshape(-1)
            far = np.abs(u_ref - theta) > 1e-4
            assert 0 < s_ref.mean() < 1
            assert np.array_equal(got["s"][i][far], s_ref[far])
            v_ref = np.concatenate([r[f"{layer.name}.v"] for r in ref]).reshape(got["v"][i].shape)
            np.testing.assert_allclose(got["v"][i], v_ref, atol=1e-4)


def test_fixed_source_has_no_malloc_no_libm_and_states_its_footprint(tmp_path):
    net = _lenet()
    info = cexp.export(net, tmp_path, learn="stop")
    src, hdr = (tmp_path / "stopnp.c").read_text(), (tmp_path / "stopnp.h").read_text()
    assert "malloc(" not in src and "free(" not in src
    assert "#if !STOPNP_FIXED\n#include <math.h>" in src and "#define STOPNP_FIXED 1" in hdr
    fp = info["footprint"]
    assert f"#define STOPNP_BYTES_PARAMS {fp['params']}" in hdr and f"#define STOPNP_BYTES_LEARN {fp['learn']}" in hdr
    n_w = sum(v.size for k, v in net.params.items() if k.endswith(".weight"))
    assert fp["params"] >= 2 * n_w    # int16 weights
    exe = tmp_path / "o"
    r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-c", "-o", str(exe),
                        str(tmp_path / "stopnp.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    nm_out = subprocess.run(["nm", "-u", str(exe)], capture_output=True, text=True).stdout
    assert "exp" not in nm_out and "malloc" not in nm_out   # no libm call, no allocation
    # negative control: the float build with learning does call expf, and nm sees it
    cexp.export(net, tmp_path / "f", learn="stop", numerics="float")
    r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-c", "-o", str(exe),
                        str(tmp_path / "f" / "stopnp.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "expf" in subprocess.run(["nm", "-u", str(exe)], capture_output=True, text=True).stdout


def test_refusals(tmp_path):
    with pytest.raises(stopnp.ConfigError, match="learn"):
        cexp.generate(_lenet(), learn="bptt")
    with pytest.raises(stopnp.ConfigError, match="soft reset"):
        cexp.generate(stopnp.build(mlp3(reset="hard").config), learn="stop")
    two_pools = {"model": {"name": "custom", "input_shape": [1, 8, 8], "n_classes": 3,
                           "layers": [{"type": "conv", "out": 2, "k": 3, "pad": 1}, {"type": "avgpool", "k": 2},
                                      {"type": "maxpool", "k": 2}, {"type": "flatten"}, {"type": "linear", "out": 3}]}}
    with pytest.raises(stopnp.ConfigError, match="2 pooling steps.*avgpool, maxpool.*one per layer"):
        cexp.generate(stopnp.build(two_pools))


def test_vgg11_exports_bit_exact(tmp_path):
    """VGG-11 (BN folded; its global pool of a 1×1 map is no pooling step) exports and matches."""
    net = stopnp.build("vgg11", model__width=0.125, model__input_shape=[3, 32, 32], model__readout="membrane")
    x, _ = _inputs(net, n_seq=1, T=2, B=1)
    rates = _spike_rates(net, 3 * x)
    assert all(0 < r < 1 for r in rates.values()), rates
    rc, out, _ = _export_and_run(tmp_path, net, 3 * x)
    assert rc == 0 and "0 mismatches" in out, out


def test_cli_export_and_mcu_example(tmp_path):
    """A trained checkpoint exports from the CLI, checks bit-exact, and examples/mcu builds and runs it."""
    from stopnp.cli import main
    from stopnp.run.train import train
    run = tmp_path / "run"
    train({"model": {"name": "lenet5", "readout": "membrane"}, "data": {"T": 2, "batch_size": 32, "limit_train": 64,
                                                                      "limit_test": 20},
           "run": {"epochs": 1, "out_dir": str(run), "quiet": True}})
    out = tmp_path / "c"
    assert main(["export", "c", str(run / "last.h5"), str(out), "--learn", "stop", "--vectors", "2", "--batch", "2",
                 "--check"]) == 0
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(["make", "-C", os.path.join(root, "examples", "mcu"), f"CKPT={run / 'last.h5'}",
                        f"BUILD={tmp_path / 'mcu'}", "SAMPLE=1", "PYTHON=" + __import__("sys").executable],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"predicted class \d \(label \d\)", r.stdout)
