"""Train a small MLP with STOP-WTL (weights, thresholds and leaks learned) on synthetic data.

Everything is explicit: the parameters are plain arrays in ``net.params``, gradients come back as a
dict with the same names, and the optimizer state is a dict too.

    python examples/train_mlp_synthetic.py
"""
import numpy as np

import stopnp
from stopnp import optim

rng = np.random.default_rng(0)
n_in, n_classes, T, B = 40, 4, 8, 64
centers = rng.uniform(0, 1, (n_classes, n_in))


def batch():
    y = rng.integers(0, n_classes, B)
    x = np.clip(centers[y] + 0.6 * rng.normal(size=(B, n_in)), 0, 1).astype(np.float32)
    return np.ascontiguousarray(np.broadcast_to(x, (T, B, n_in))), y  # direct input at every step


net = stopnp.build("mlp", model__input_shape=[n_in], model__hidden=[64], model__n_classes=n_classes,
                   rule__learn="WTL")
cfg = dict(net.config["optim"], kind="adam", lr=3e-3)
state = optim.init_state(cfg, net.params, net.trainable("WTL"))
for step in range(1, 201):
    x, y = batch()
    res = stopnp.run_batch(net, x, y, rule="stop")
    optim.step(net.params, res.grads, state, cfg, lr=cfg["lr"], theta_min=1e-3)
    if step == 1 or step % 20 == 0:
        acc = (res.out_sum.argmax(1) == y).mean()
        alphas = [float(net.params[f"{l.name}.alpha"][0]) for l in net.layers]
        print(f"step {step:4d}  loss {res.loss:.4f}  batch acc {100 * acc:5.1f}%  "
              f"alpha {', '.join(f'{a:.3f}' for a in alphas)}")
