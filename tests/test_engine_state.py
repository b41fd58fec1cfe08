"""Run-state containers (stopnp/engine/state.py): named fields over the arrays the kernels use, memory
independent of T for the online rules (growing with T for the stored ones), a sequence's reset, and the
refusals at construction."""
import tracemalloc

import numpy as np
import pytest

import stopnp
from stopnp.engine.state import LayerView, Workspace
from stopnp.rules import bptt, stop
from stopnp.rules.common import resolve_options
from nets import convnet, data, mlp3


def _stop_run(net, T, ws=None):
    x, y = data(net, T=T, B=4, scale=1.2)
    opts = resolve_options(net, "stop", {})
    ws = ws or stop.workspace(net, 4, np.float64, opts)
    return stop.run(net, net.params, x, y, opts, ws=ws), ws

def test_stop_state_and_traces_independent_of_T():
    net = mlp3()
    sizes = {}
    for T in (4, 64):
        res, ws = _stop_run(net, T)
        assert 0 < sum(res.spike_counts.values())
        sizes[T] = (ws.nbytes(persistent_only=True), ws.nbytes())
    assert sizes[4] == sizes[64]
    assert sizes[4][0] > 0
    # BPTT's stored history grows with T (the contrast that makes the check meaningful)
    opts = resolve_options(net, "bptt", {})
    b4 = bptt.workspace(net, 4, np.float64, opts, 4).nbytes()
    b64 = bptt.workspace(net, 4, np.float64, opts, 64).nbytes()
    assert b64 > 8 * b4

def test_stop_peak_allocation_independent_of_T():
    """Peak traced allocation during a STOP batch (input excluded) is the same for T = 4 and 64."""
    net = convnet()
    opts = resolve_options(net, "stop", {})
    ws = stop.workspace(net, 4, np.float64, opts)
    peaks = {}
    for T in (4, 64):
        x, y = data(net, T=T, B=4)
        stop.run(net, net.params, x, y, opts, ws=ws)  # warm (compile, caches)
        tracemalloc.start()
        stop.run(net, net.params, x, y, opts, ws=ws)
        peaks[T] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[64] <= peaks[4] * 1.10 + 4096, peaks
    x, y = data(net, T=64, B=4)
    tracemalloc.start()
    bptt.run(net, net.params, x, y, resolve_options(net, "bptt", {}))
    peak_bptt = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak_bptt > 10 * peaks[64]

def test_dropout_one_mask_per_sequence():
    net = stopnp.build("mlp", model__input_shape=[10], model__hidden=[400], model__dropout=0.25,
                       model__n_classes=3)
    opts = resolve_options(net, "stop", {})
    ws = stop.workspace(net, 8, np.float32, opts)
    x = np.random.default_rng(1).uniform(0, 1, (5, 8, 10)).astype(np.float32)
    y = np.arange(8) % 3
    stop.run(net, net.params, x, y, opts, ws=ws, rng=np.random.default_rng(3))
    mask = [m for op in ws.synapses.values() for m in op.mask if m is not None][0]
    vals = set(float(v) for v in np.unique(mask).astype(np.float64).round(6))
    assert vals == {0.0, round(1 / 0.75, 6)} and 0.15 < (mask == 0).mean() < 0.35
    # drawn once at the start of the sequence: a fresh run with the same seed draws the same mask and
    # gives the same gradients (that they are the gradients of that mask held for all T steps is
    # test_dropout_gradients_with_the_sequence_mask's proof)
    first = {k: v.copy() for k, v in stop.run(net, net.params, x, y, opts, ws=ws,
                                              rng=np.random.default_rng(3)).grads.items()}
    again = stop.run(net, net.params, x, y, opts, ws=ws, rng=np.random.default_rng(3))
    assert np.array_equal(mask, [m for op in ws.synapses.values() for m in op.mask if m is not None][0])
    assert first.keys() == again.grads.keys() and all(np.array_equal(first[k], again.grads[k]) for k in first)
    eval_run = stop.run(net, net.params, x, None, resolve_options(net, "stop", {"bn_mode": "eval"}), ws=ws)
    assert np.isfinite(again.loss) and eval_run.out_sum.shape == (8, 3)

def test_missing_scipy_blas_is_a_readable_error(monkeypatch):
    """The BLAS conv path needs SciPy's BLAS (numba's np.dot): without it, a one-line ConfigError that
    names run.kernels, before numba would fail inside its compiler; the loop kernels still work."""
    import sys
    from stopnp.config import ConfigError
    from stopnp.engine.state import Workspace
    net = convnet()
    monkeypatch.setitem(sys.modules, "scipy.linalg.cython_blas", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match="run.kernels"):
        Workspace(net, 2, np.float32, backend="blas")
    Workspace(net, 2, np.float32, backend="loop")


def test_containers_name_the_arrays_the_kernels_use():
    """State, traces, sums and scratch hold the arrays; a layer's LayerView and a synapse op see the same
    memory under the equation's names (nothing copied, nothing positional)."""
    net = convnet(bn=True)
    ws = Workspace(net, 3, np.float64, traces=True)
    assert LayerView._fields == ("u", "s", "v", "th_trace", "al_trace", "i_in", "g", "delta")
    for layer in net.layers:
        i, v = layer.index, ws.views[layer.index]
        for name, arr in (("u", ws.state.u[i][0]), ("s", ws.state.s[i][0]), ("v", ws.state.v[i]),
                          ("th_trace", ws.traces.th_trace[i]), ("al_trace", ws.traces.al_trace[i]),
                          ("i_in", ws.state.i_in[i]), ("g", ws.scratch.g[i]), ("delta", ws.scratch.delta[i])):
            view = getattr(v, name)
            assert view.shape == (3, layer.size) and np.shares_memory(view, arr), (layer.name, name)
        assert ws.sums.dtheta[i].shape == ws.sums.dalpha[i].shape == (layer.size,)
    for name, op in ws.synapses.items():
        assert op.w_trace is ws.traces.w_trace[name] and op.w_trace.shape == (3, *op.syn.in_shape)
        if op.syn.src >= 0:
            assert op.g_src is ws.scratch.g[op.syn.src] and op.src_s is ws.state.s[op.syn.src]
        else:
            assert op.static_sum is ws.sums.static[name]
        assert op.bn_mean_sum is ws.sums.bn_mean.get(name)
    # what a rule does not need is not there: no traces for a stored rule, no V[t-1] for an online one
    stored = Workspace(net, 3, np.float64, T_store=5, keep_vprev=True)
    assert stored.traces.w_trace == {} and stored.traces.th_trace[0] is None and stored.views[0].th_trace is None
    assert stored.state.v_prev[0].shape == (5, 3, *net.layers[0].shape) and ws.state.v_prev[0] is None


def test_a_sequence_starts_from_zero():
    """reset_sequence zeroes V, s and the traces and expands θ per neuron; sums.zero() zeroes every sum."""
    net = convnet(bn=True, theta_mode="channel")
    net.params["conv1.theta"][...] = [0.5, 1.0, 1.5]
    ws = Workspace(net, 2, np.float64, traces=True)
    for group in (ws.state.v, ws.state.s, ws.traces.th_trace, ws.traces.al_trace, ws.traces.w_trace.values(),
                  ws.sums.dtheta, ws.sums.dalpha, ws.sums.static.values(), ws.sums.bn_mean.values()):
        for a in group:
            a.fill(1.0)
    ws.sums.bn_steps = 3
    ws.reset_sequence(net, net.params)
    ws.sums.zero()
    for group in (ws.state.v, ws.state.s, ws.traces.th_trace, ws.traces.al_trace, ws.traces.w_trace.values(),
                  ws.sums.dtheta, ws.sums.dalpha, ws.sums.static.values(), ws.sums.bn_mean.values()):
        for a in group:
            assert not a.any()
    assert ws.sums.bn_steps == 0
    theta = ws.state.theta[0].reshape(3, -1)
    assert theta.shape == (3, 64) and (theta == np.array([[0.5], [1.0], [1.5]])).all()

