"""Look at everything STOP computes for one batch, by hand: U, s, the traces, δ, and the per-step
gradient contributions ΔW[t], Δθ[t], Δα[t]; check ΔW = Σ_t δ[t] ⊗ w~[t] yourself; plot a layer.

    python examples/inspect_gradients.py          # figures in plots/
"""
import numpy as np

import stopnp
from stopnp import data
from stopnp.tools import plot
from stopnp.tools.inspect import format_table, inspect_batch

net = stopnp.build("lenet5").astype(np.float64)       # float64 so that the hand check is exact
src = data.load("mnist-builtin", "test")
x, y = next(data.batches(src, 8, 4, shuffle=False, dtype=np.float64))
x = np.ascontiguousarray(x)

records, per_step, grads, bptt, table = inspect_batch(net, x, y)
print(format_table(table))                           # spike rate, |ΔW|, cosine to BPTT per layer

# ΔW of fc1 by hand from the recorded δ and weight trace (Eq. 17)
delta, w_trace = records["fc1.delta"], records["fc1.w_trace"]      # (T, B, 120), (T, B, 400)
by_hand = sum(delta[t].T @ w_trace[t] for t in range(x.shape[0]))
print("fc1: |ΔW - Σ_t δ[t] ⊗ w~[t]| =", float(np.abs(by_hand - grads["fc1.weight"]).max()))
print("fc1: Δθ per step (first neuron):", per_step["fc1.theta"][:, 0])
print("fc1: Δα per step:", per_step["fc1.alpha"][:, 0])

fig, axes = plot.plt.subplots(1, 3, figsize=(12, 3))
plot.raster(axes[0], records["conv2.s"])
plot.membrane(axes[1], records["fc1.u"], net.params["fc1.theta"], [0, 1, 2])
plot.traces([axes[2]] * 3, records["fc1.w_trace"], records["fc1.th_trace"], records["fc1.al_trace"], [0])
print("wrote", plot.save(fig, "plots/inspect_lenet5.png"))
