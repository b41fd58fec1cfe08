"""The example scripts run and show what they promise (falling loss; exact hand-computed ΔW)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(name, tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_train_mlp_synthetic_loss_falls(tmp_path):
    out = _run("train_mlp_synthetic.py", tmp_path)
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) >= 5 and losses[-1] < 0.8 * losses[0]


def test_inspect_gradients_hand_check(tmp_path):
    out = _run("inspect_gradients.py", tmp_path)
    err = float(re.search(r"Σ_t δ\[t\] ⊗ w~\[t\]\| = (\S+)", out).group(1))
    assert err < 1e-12
    assert (tmp_path / "plots" / "inspect_lenet5.png").exists()
