"""Engine properties: memory independent of T, thread determinism, no-JIT equality, validation."""
import os
import subprocess
import sys
import tracemalloc

import numba
import numpy as np
import pytest

import stopnp
from stopnp.rules import bptt, stop
from stopnp.rules.common import resolve_options
import reference
from fdcheck import check_grad, rel_err
from nets import convnet, data, mlp3, randomize_bn

HERE = os.path.dirname(__file__)


def _learned(net):
    """Every parameter but BN running statistics: what a rule with learn = "WTL" must return."""
    return {k for k in net.params if not k.endswith((".running_mean", ".running_var"))}


def _grads(net, x, y, rule, **options):
    """Gradients of one batch, checked non-vacuous: every learned parameter named, none all zero, and
    every spiking layer fired at a rate strictly in (0, 1)."""
    res = stopnp.run_batch(net, x, y, rule, **options)
    assert set(res.grads) == _learned(net), sorted(res.grads)
    for k, g in res.grads.items():
        assert np.abs(g).max() > 0, f"{k}: zero gradient"
    T, B = x.shape[:2]
    for layer in net.layers:
        if layer.spiking:
            rate = res.spike_counts[layer.name] / (T * B * layer.size)
            assert 0 < rate < 1, f"{layer.name}: spike rate {rate}"
    return res.grads


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


@pytest.mark.parametrize("kernels", ["loop", "blas"])
@pytest.mark.parametrize("rule", ["stop", "bptt"])
def test_one_and_two_threads_bitwise(rule, kernels):
    net = convnet(bn=True).astype(np.float32)
    x, y = data(net, T=4, B=6)
    x = x.astype(np.float32)
    out = []
    for n in (1, 2):
        numba.set_num_threads(n)
        out.append(_grads(net, x, y, rule, kernels=kernels))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for k in out[0]:
        assert np.array_equal(out[0][k], out[1][k]), k


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
    g64 = _grads(net, x, y, rule)
    g32 = _grads(net.astype(np.float32), x.astype(np.float32), y, rule)
    for k in g64:
        assert g32[k].dtype == np.float32 and g64[k].dtype == np.float64
        err = np.abs(g32[k].astype(np.float64) - g64[k]).max() / np.abs(g64[k]).max()
        assert err <= 3e-6, f"{k}: rel err {err:.2e}"


@pytest.mark.parametrize("bad, match", [
    (lambda x: x[0], "expected"),
    (lambda x: x.astype(np.int32), "dtype"),
    (lambda x: np.where(x > 0.5, np.nan, x), "NaN"),
    (lambda x: np.asfortranarray(x), "contiguous"),
])
def test_bad_input_is_refused_with_a_readable_error(bad, match):
    net = mlp3()
    x, y = data(net)
    with pytest.raises(stopnp.ShapeError, match=match):
        stopnp.gradients(net, bad(x), y)


def test_bad_labels_and_options():
    net = mlp3()
    x, y = data(net)
    with pytest.raises(stopnp.ShapeError, match="labels must be in"):
        stopnp.gradients(net, x, y + 10)
    with pytest.raises(stopnp.ConfigError, match="unknown option"):
        stopnp.gradients(net, x, y, lr=3)
    with pytest.raises(stopnp.ConfigError, match="valid rules"):
        stopnp.gradients(net, x, y, rule="backprop")
    net.params["fc1.weight"] = net.params["fc1.weight"][:, :3]
    with pytest.raises(stopnp.ShapeError, match="fc1.weight"):
        stopnp.gradients(net, x, y)


def test_params_are_plain_writable_arrays_with_documented_names():
    net = stopnp.build("lenet5")
    names = set(net.params)
    assert {"conv1.weight", "conv1.theta", "conv1.alpha", "fc3.weight"} <= names
    assert all(isinstance(v, np.ndarray) and v.flags.writeable for v in net.params.values())
    assert net.params["conv1.theta"].shape == (6, 28, 28)
    vgg = stopnp.build("vgg11", model__input_shape=[3, 32, 32], model__width=0.125)
    assert "conv1.bn.gamma" in vgg.params and vgg.layers[-1].shape == (10,)
    res = stopnp.build("resnet18", model__input_shape=[3, 16, 16], model__width=0.0625, model__n_classes=5)
    assert any(s.op == "identity" for l in res.layers for s in l.synapses)
    assert any(s.name.endswith("shortcut") and s.op == "conv" for l in res.layers for s in l.synapses)


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


@pytest.mark.parametrize("rule", ["stop", "bptt"])
@pytest.mark.parametrize("net_fn", [mlp3, convnet])
def test_static_input_fast_path_equals_general_path(rule, net_fn):
    """x with time stride 0 (direct coding) takes the once-per-sequence path; same gradients."""
    net = net_fn()
    x, y = data(net, T=5, B=4, scale=1.2)
    x_static = np.broadcast_to(x[0], x.shape)
    assert x_static.strides[0] == 0
    fast = _grads(net, x_static, y, rule)
    slow = _grads(net, np.ascontiguousarray(x_static), y, rule)
    for k in slow:
        assert np.abs(fast[k] - slow[k]).max() <= 1e-12 * np.abs(slow[k]).max(), k


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


def _dropout_net():
    cfg = {"model": {"name": "custom", "input_shape": [1, 4, 4], "n_classes": 4,
                     "layers": [{"type": "flatten"}, {"type": "linear", "out": 12}, {"type": "dropout", "p": 0.3},
                                {"type": "linear", "out": 10}, {"type": "linear", "out": 4}]},
           "neuron": {"alpha_init": 0.6}, "run": {"seed": 0}}
    return stopnp.build(cfg).astype(np.float64)


@pytest.mark.parametrize("rule", ["bptt", "stop"])
def test_dropout_gradients_with_the_sequence_mask(rule):
    """Dropout between fc1 and fc2, mask m drawn once per sequence (read back from the workspace):
    BPTT (smooth forward, reset kept) equals finite differences of the reference loss with x2 = s1 ⊙ m
    at every step; STOP equals the reference §4 identity with the same m."""
    net = _dropout_net()
    x, y = data(net, T=4, scale=1.2)
    T, B = x.shape[:2]
    if rule == "bptt":
        opts = resolve_options(net, rule, {"smooth": True, "detach_reset": False, "alpha_reduce": "sum"})
        ws = bptt.workspace(net, B, np.float64, opts, T)
    else:
        opts = resolve_options(net, rule, {})
        ws = stop.workspace(net, B, np.float64, opts)
    got = (bptt if rule == "bptt" else stop).run(net, net.params, x, y, opts, ws=ws,
                                                 rng=np.random.default_rng(3)).grads
    masks = {n: {k: m.copy() for k, m in enumerate(op.mask) if m is not None} for n, op in ws.synapses.items()}
    (m,) = [m for ms in masks.values() for m in ms.values()]
    assert m.shape == (B, 12) and 0 < (m == 0).mean() < 1 and np.allclose(m[m > 0], 1 / 0.7)
    assert set(got) == _learned(net), sorted(got)
    if rule == "stop":
        ref, st = reference.stop_identity(net, net.params, x, y, masks=masks)
        for name, rate in reference.spike_rates(net, st).items():
            assert 0 < rate < 1, f"{name}: spike rate {rate}"
        for k in got:
            assert np.abs(ref[k]).max() > 0, k
            assert rel_err(got[k], ref[k]) < 1e-10, (k, rel_err(got[k], ref[k]))
        return
    st = reference.forward(net, net.params, x, masks=masks)
    for name, rate in reference.spike_rates(net, st).items():
        assert 0 < rate < 1, f"{name}: spike rate {rate}"
    f = lambda: reference.loss_of(net, net.params, x, y, smooth_spikes=True, masks=masks)  # noqa: E731
    for k, g in got.items():
        assert np.abs(g).max() > 0, k
        ok, err = check_grad(f, net.params[k], g, rtol=1e-6)
        assert ok, f"{k}: rel err {err:.2e}"
    assert not check_grad(f, net.params["fc1.weight"], got["fc1.weight"] * 1.01)[0]  # the check bites


@pytest.mark.parametrize("rule", ["stop", "bptt"])
@pytest.mark.parametrize("net_fn", [mlp3, convnet])
def test_bn_stats_are_step_means_of_batch_statistics(rule, net_fn):
    """Result.bn_stats["<syn>.bn"] = (1/T Σ_t mean[t], 1/T Σ_t var[t]): this step's batch mean and biased
    variance of z = W ⊛ x per channel (over batch and positions), recomputed here with NumPy."""
    net = net_fn(bn=True)
    randomize_bn(net)
    x, y = data(net, T=4, B=4, scale=1.2)
    res = stopnp.run_batch(net, x, y, rule)
    st = reference.forward(net, net.params, x, bn_train=True)
    for name, rate in reference.spike_rates(net, st).items():
        assert 0 < rate < 1, f"{name}: spike rate {rate}"
    bn_syns = [syn for layer in net.layers for syn in layer.synapses if syn.bn]
    assert bn_syns and set(res.bn_stats) == {f"{syn.name}.bn" for syn in bn_syns}
    for syn in bn_syns:
        W = net.params[f"{syn.name}.weight"]
        zs = [a @ W.T if syn.op == "linear" else reference.conv(a, W, syn.stride, syn.pad)
              for a in st["x"][syn.name]]
        z3 = [z.reshape(z.shape[0], z.shape[1], -1) for z in zs]
        mean = np.mean([z.mean(axis=(0, 2)) for z in z3], axis=0)
        var = np.mean([z.var(axis=(0, 2)) for z in z3], axis=0)
        got_mean, got_var = res.bn_stats[f"{syn.name}.bn"]
        assert rel_err(got_mean, mean) < 1e-12, syn.name
        assert rel_err(got_var, var) < 1e-10, syn.name
        assert np.abs(mean).min() > 0 and np.abs(var).min() > 0
    assert stopnp.run_batch(net, x, y, rule, bn_mode="eval").bn_stats == {}  # eval: nothing recorded


@pytest.mark.parametrize("rule", ["stop", "bptt"])
@pytest.mark.parametrize("bn", [False, True])
def test_conv_bands_of_one_row_give_the_same_gradients(rule, bn, monkeypatch):
    """The fast conv path lowers each sample in bands of output rows sized by TILE_BYTES; a 1-byte
    budget forces one row per GEMM, which must give the same gradients (float64, up to rounding)."""
    from stopnp.kernels import conv as kconv
    net = convnet(bn=bn)
    x, y = data(net, T=4, B=5, scale=1.2)
    whole = _grads(net, x, y, rule)
    assert kconv.band_rows((5, *net.input_shape), 3, 3, 1, 1) == net.input_shape[1]  # default: one band
    monkeypatch.setattr(kconv, "TILE_BYTES", 1)
    assert kconv.band_rows((5, *net.input_shape), 3, 3, 1, 1) == 1
    banded = _grads(net, x, y, rule)
    for k in whole:
        np.testing.assert_allclose(banded[k], whole[k], rtol=1e-9, atol=1e-12 * np.abs(whole[k]).max(),
                                   err_msg=k)


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


@pytest.mark.parametrize("rule", ["stop", "bptt"])
def test_event_driven_conv_forward_gives_the_same_gradients(rule, monkeypatch):
    """conv → conv: the second conv's input is the first one's spikes. Every sample by the event-driven
    sum (EVENT_DENSITY = 1) or every one by the GEMM (-1): the same gradients as the loop kernels."""
    from stopnp.kernels import conv as kconv
    cfg = {"model": {"name": "custom", "input_shape": [2, 8, 8], "n_classes": 3,
                     "layers": [{"type": "conv", "out": 4, "k": 3, "pad": 1},
                                {"type": "conv", "out": 4, "k": 3, "pad": 1},
                                {"type": "flatten"}, {"type": "linear", "out": 3}]},
           "neuron": {"alpha_init": 0.6}, "run": {"seed": 0}}
    net = stopnp.build(cfg).astype(np.float64)
    x, y = data(net, T=4, B=5, scale=1.2)
    rec = stop.run(net, net.params, x, None, resolve_options(net, "stop", {}), record=("s",)).records
    rate = rec[f"{net.layers[0].name}.s"].mean()
    assert 0 < rate < 1, rate  # spikes happened: the event path has events to sum
    loop = _grads(net, x, y, rule, kernels="loop")
    for density in (1.0, -1.0):
        monkeypatch.setattr(kconv, "EVENT_DENSITY", density)
        fast = _grads(net, x, y, rule, kernels="blas")
        for k in loop:
            np.testing.assert_allclose(fast[k], loop[k], rtol=1e-9, atol=1e-12 * np.abs(loop[k]).max(),
                                       err_msg=f"{k} at EVENT_DENSITY={density}")


def _two_convs(input_shape):
    """conv 3×3 pad 1 → conv 3×3 pad 1 → linear: both convs Winograd-eligible once MIN_CHANNELS is 1."""
    return {"model": {"name": "custom", "input_shape": input_shape, "n_classes": 3,
                      "layers": [{"type": "conv", "out": 4, "k": 3, "pad": 1},
                                 {"type": "conv", "out": 3, "k": 3, "pad": 1},
                                 {"type": "flatten"}, {"type": "linear", "out": 3}]},
            "neuron": {"alpha_init": 0.6}, "run": {"seed": 0}}


@pytest.mark.parametrize("rule", ["stop", "bptt"])
def test_winograd_convs_give_the_same_gradients(rule, monkeypatch):
    """conv → conv, both 3×3 pad 1: with the Winograd threshold lowered, both run by Winograd in the
    forward, the input gradient and the weight gradient, and the network's gradients equal the loop
    kernels' (float64), odd image size included."""
    from stopnp.kernels import winograd as kwino
    from stopnp.engine.state import Workspace
    monkeypatch.setattr(kwino, "MIN_CHANNELS", 1)
    net = stopnp.build(_two_convs([2, 7, 9])).astype(np.float64)
    ws = Workspace(net, 5, np.dtype(np.float64), backend="blas")
    assert {n for n, op in ws.synapses.items() if op.kernels == "winograd"} == {"conv1", "conv2"}
    x, y = data(net, T=4, B=5, scale=1.2)
    loop = _grads(net, x, y, rule, kernels="loop")
    fast = _grads(net, x, y, rule, kernels="blas")
    for k in loop:
        np.testing.assert_allclose(fast[k], loop[k], rtol=1e-9, atol=1e-12 * np.abs(loop[k]).max(), err_msg=k)


def test_winograd_filters_follow_online_updates(monkeypatch):
    """The transformed filters are reused within a sequence; an online update changes W between steps,
    so the next step must transform again: Winograd and loop kernels end with the same parameters."""
    from stopnp.kernels import winograd as kwino
    from stopnp.rules import runner
    monkeypatch.setattr(kwino, "MIN_CHANNELS", 1)
    cfg = _two_convs([2, 6, 6])
    x, y = None, None
    final = {}
    for kernels in ("loop", "blas"):
        net = stopnp.build(cfg).astype(np.float64)
        if x is None:
            x, y = data(net, T=4, B=3, scale=1.2)

        def on_step(t, grads, P=net.params):
            for k, g in grads.items():
                P[k] -= 0.5 * g
                g.fill(0)

        res = runner("stop")(net, net.params, x, y, resolve_options(net, "stop", {"kernels": kernels}),
                             record=("s",), on_step=on_step)
        assert 0 < res.records["conv2.s"].mean() < 1
        final[kernels] = net.params
    for k in final["loop"]:
        np.testing.assert_allclose(final["blas"][k], final["loop"][k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert not np.allclose(final["blas"]["conv2.weight"], stopnp.build(cfg).params["conv2.weight"])


def test_linear_gemms_run_in_numbas_pool():
    """LeNet-5 and the bench MLP alike: the linear GEMMs run in numba's pool (fixed row parts, never a
    multi-threaded BLAS), so the results never depend on the thread count; the loop backend: its own
    kernels."""
    from stopnp.tools import bench
    lenet = stopnp.build(bench.config_for("lenet", "stop"))
    mlp = stopnp.build(bench.config_for("mlp", "stop"))
    opts = resolve_options(lenet, "stop", {})
    def kernels(ws, name):
        return ws.synapses[name].kernels

    assert kernels(stop.workspace(lenet, 32, np.float32, opts), "fc1") == "linear-pool"
    assert kernels(stop.workspace(mlp, 64, np.float32, resolve_options(mlp, "stop", {})), "fc1") == "linear-pool"
    assert kernels(stop.workspace(lenet, 32, np.float32, dict(opts, kernels="loop")), "fc1") == "linear-loop"
