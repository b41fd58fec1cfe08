"""`stopnp export c` and examples/mcu: options are checked before anything is written, nothing is
silently ignored, and the example rebuilds what its arguments change."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import stopnp
from stopnp import data
from stopnp.cli import main
from stopnp.export import c as cexp

from nets import mlp3
from tools_needed import missing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained LeNet-5 on the built-in digits (membrane readout), saved as a checkpoint."""
    path = tmp_path_factory.mktemp("ckpt") / "lenet.h5"
    stopnp.save(stopnp.build("lenet5", model__readout="membrane", data__T=2), path)
    return str(path)


def _refused(capsys, argv, match, outdir):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err
    assert not os.path.exists(outdir), "a refused export wrote files"


@pytest.mark.parametrize("extra, match", [
    (["--learn-last", "99", "--learn", "stop"], r"--learn-last 99: the network has 5 layers; use 1\.\.5"),
    (["--learn-last", "2"], r"--learn-last 2 chooses the layers that learn; add --learn stop"),
    (["--online"], r"--online is a way of learning; add --learn stop"),
    (["--lr", "0.1", "--vectors", "1"], r"--lr sets the learning rate of the test vectors; add --learn stop"),
    (["--numerics", "float", "--learn", "stop", "--vectors", "1"], r"--numerics float checks inference only"),
    (["--vectors", "300", "--batch", "10"], r"--vectors 300 with --batch 10 needs 3000 test samples; the test "
                                            r"split has 2000"),
    (["--sample", "5000"], r"--sample 5000: the test split has samples 0\.\.1999"),
])
def test_refusals_write_nothing(tmp_path, capsys, ckpt, extra, match):
    out = tmp_path / "c"
    _refused(capsys, ["export", "c", ckpt, str(out)] + extra, match, out)


@pytest.mark.parametrize("surrogate", ["sigmoid", "atan"])
def test_float_surrogate_network_exports_for_inference(tmp_path, capsys, surrogate):
    """The surrogate plays no part in inference (either numerics) nor in a float export's forward pass:
    it exports; learning is refused with a message about export c, not about numerics.kind."""
    net = stopnp.build(mlp3(surrogate=surrogate).config)
    path = tmp_path / "net.h5"
    stopnp.save(net, path)
    for numerics in ("fixed", "float"):
        assert main(["export", "c", str(path), str(tmp_path / numerics), "--numerics", numerics]) == 0
        assert (tmp_path / numerics / "stopnp.c").exists()
    capsys.readouterr()
    _refused(capsys, ["export", "c", str(path), str(tmp_path / "l"), "--numerics", "float", "--learn", "stop"],
             rf"error: export c: learning with neuron.surrogate = '{surrogate}' needs floating point", tmp_path / "l")
    x = np.random.default_rng(0).random((1, 3, 2) + tuple(net.input_shape)).astype(np.float32)
    cexp.export(net, tmp_path / "v", batch=2)
    cexp.write_vectors(str(tmp_path / "v" / "vectors.bin"), net, x)
    if shutil.which("gcc"):
        rc, out = cexp.compile_and_check(str(tmp_path / "v"), str(tmp_path / "v" / "vectors.bin"))
        assert rc == 0 and "0 mismatches" in out, out


def test_resnet_refusal_names_what_exports(tmp_path, capsys):
    """The refusal's list of supported networks is true: VGG-11 exports (test_export_c checks it)."""
    net = stopnp.build("resnet18", model__width=0.125, model__input_shape=[3, 32, 32])
    path = tmp_path / "r.h5"
    stopnp.save(net, path)
    _refused(capsys, ["export", "c", str(path), str(tmp_path / "c")],
             r"error: export c: layer .* has shortcuts; .* \(mlp, lenet5, vgg11\)", tmp_path / "c")
    vgg = stopnp.build("vgg11", model__width=0.125, model__input_shape=[3, 32, 32])
    stopnp.save(vgg, tmp_path / "v.h5")
    assert main(["export", "c", str(tmp_path / "v.h5"), str(tmp_path / "v")]) == 0


def test_online_export_and_check(tmp_path, capsys, ckpt):
    if shutil.which("gcc") is None:
        missing("gcc not installed")
    out = tmp_path / "c"
    assert main(["export", "c", ckpt, str(out), "--learn", "stop", "--online", "--learn-last", "2",
                 "--vectors", "2", "--check"]) == 0
    text = capsys.readouterr().out
    assert "0 mismatches" in text and "#define STOPNP_ONLINE 1" in (out / "stopnp.h").read_text()
    assert "sn_gw" not in (out / "stopnp.c").read_text()          # no gradient accumulators


def test_mcu_makefile_follows_its_arguments(tmp_path, ckpt):
    """SAMPLE (and any export argument) changes re-export sample.h; CC defaults to gcc."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        missing("make or gcc not installed")
    labels = data.load("mnist-builtin", "test").y
    mk = ["make", "-C", os.path.join(ROOT, "examples", "mcu"), f"CKPT={ckpt}", f"BUILD={tmp_path / 'b'}",
          f"PYTHON={sys.executable}"]
    for sample in (0, 7, 0):
        r = subprocess.run(mk + [f"SAMPLE={sample}"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(rf"predicted class \d \(label {labels[sample]}\)", r.stdout), r.stdout
    assert labels[7] != labels[0]
    r = subprocess.run(mk + ["SAMPLE=0"], capture_output=True, text=True)
    assert "export c" not in r.stdout          # nothing changed: nothing re-exported
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "MAKEFLAGS")}   # make's own default CC
    r = subprocess.run(mk + ["-n", "-B", "SAMPLE=0"], capture_output=True, text=True, env=env)
    assert re.search(r"^gcc ", r.stdout, re.M), r.stdout
