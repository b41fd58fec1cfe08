"""The public functions (stopnp/api.py) over the whole engine: the same gradients without JIT, float32 close
to float64, simulate's records, and the larger networks running end to end."""
import os
import subprocess
import sys

import numpy as np
import pytest

import stopnp
from nets import checked_grads, data, mlp3

HERE = os.path.dirname(__file__)


def test_no_jit_gives_same_gradients(tmp_path):
    """NUMBA_DISABLE_JIT=1 (pure Python kernels) gives the same float64 gradients."""
    script = tmp_path / "g.py"
    script.write_text(
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {HERE!r})\n"
        "import stopnp\nfrom nets import mlp3, data\n"
        "net = mlp3(); x, y = data(net, T=3, B=2, scale=1.2)\n"
        "out = {}\n"
        "for rule in ('stop', 'bptt'):\n"
        "    for k, v in stopnp.gradients(net, x, y, rule=rule, kernels='loop').items():\n"
        "        out[rule + ':' + k] = v\n"
        "np.savez(sys.argv[1], **out)\n")
    res = {}
    for jit in ("0", "1"):
        env = dict(os.environ, NUMBA_DISABLE_JIT=jit)
        path = tmp_path / f"out{jit}.npz"
        subprocess.run([sys.executable, str(script), str(path)], check=True, env=env, timeout=300)
        res[jit] = dict(np.load(path))
    assert res["0"].keys() == res["1"].keys() and res["0"]
    for k in res["0"]:
        np.testing.assert_allclose(res["0"][k], res["1"][k], rtol=1e-12, atol=1e-14)

@pytest.mark.parametrize("rule", ["stop", "bptt"])
def test_float32_close_to_float64(rule):
    """Same spikes, gradients within 3e-6 of max|g| per parameter (observed: <= 1.5e-7 STOP, 3.2e-7
    for BPTT's fc1.alpha; the margin covers other BLAS kernel families; a flipped spike or a
    float64 -> float32 slip in a kernel is far larger)."""
    net = mlp3()
    x, y = data(net, scale=1.2)
    g64 = checked_grads(net, x, y, rule)
    g32 = checked_grads(net.astype(np.float32), x.astype(np.float32), y, rule)
    for k in g64:
        assert g32[k].dtype == np.float32 and g64[k].dtype == np.float64
        err = np.abs(g32[k].astype(np.float64) - g64[k]).max() / np.abs(g64[k]).max()
        assert err <= 3e-6, f"{k}: rel err {err:.2e}"

def test_simulate_records_time_major_arrays():
    net = mlp3()
    x, y = data(net, T=5, B=3, scale=1.2)
    rec = stopnp.simulate(net, x, record=("u", "s"))
    assert rec["fc1.u"].shape == (5, 3, 12) and rec["fc3.s"].shape == (5, 3, 4)
    assert 0 < rec["fc1.s"].mean() < 1
    with pytest.raises(stopnp.ConfigError, match="needs labels"):
        stopnp.simulate(net, x, record=("delta",))

def test_resnet_and_dropout_gradients_run():
    net = stopnp.build("resnet18", model__input_shape=[3, 8, 8], model__width=0.0625, model__n_classes=4)
    x = np.random.default_rng(0).uniform(0, 1, (2, 2, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 3])
    g = stopnp.gradients(net, x, y)
    assert all(np.isfinite(v).all() for v in g.values())
    assert "block1.conv2.alpha" in g
    mlp = stopnp.build("mlp", model__input_shape=[10], model__hidden=[8], model__dropout=0.5,
                       model__n_classes=3)
    xx = np.random.default_rng(1).uniform(0, 1, (3, 4, 10)).astype(np.float32)
    res = stopnp.run_batch(mlp, xx, np.array([0, 1, 2, 0]), rng=np.random.default_rng(0))
    assert np.isfinite(res.loss)
