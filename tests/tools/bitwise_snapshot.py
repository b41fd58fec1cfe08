"""Snapshot of everything the engine computes on fixed reference cases, to prove a refactoring changes
no number: run it before and after, then compare the two files bitwise.

    python tests/tools/bitwise_snapshot.py OUT.npz          write the snapshot of the stopnp on sys.path
    python tests/tools/bitwise_snapshot.py --compare A.npz B.npz

Run it from a folder outside the repository so that ``PYTHONPATH`` picks the package, e.g. for another
commit: ``git worktree add /tmp/base COMMIT`` then ``cd /tmp && PYTHONPATH=/tmp/base python .../
bitwise_snapshot.py base.npz`` (it prints which stopnp it imported).

Cases (public API only): an MLP (small: linear GEMMs in numba's pool; large: on NumPy's BLAS), a conv
net with average and max pooling, a conv net whose 16-channel 3×3 convs run by Winograd, a ResNet-style
net (identity and conv shortcuts, global pooling), each with and without BN (BN in train and eval
mode), dropout with a seeded mask; every rule (stop, bptt, sltt, sltt-k, ottt, bpsta); kernels "blas"
and "loop"; float32 and float64; static (stride-0) and per-step input. Per case: every gradient, the
loss, Σ_t o[t], spike counts and BN statistics of ``run_batch``; STOP's ``simulate`` records; and short
training runs (online STOP/OTTT/SLTT updates, BPTT, BPSTA with its ANN warm-up, fixed point) whose final
parameters and metrics are stored.
"""
import os
import sys
import tempfile

import numpy as np

RULES = ("stop", "bptt", "sltt", "sltt-k", "ottt", "bpsta")


def _layers(kind, bn, vote=1, n_out=4):
    out = n_out * vote
    if kind == "mlp":
        return [1, 8, 8], [{"type": "flatten"}, {"type": "linear", "out": 24, "bn": bn},
                        {"type": "linear", "out": 16, "bn": bn}, {"type": "linear", "out": out}]
    if kind == "mlp_big":  # B·in·out >= 4M multiply-adds: the GEMMs on NumPy's BLAS
        return [784], [{"type": "linear", "out": 100, "bn": bn}, {"type": "linear", "out": out}]
    if kind == "conv":
        return [2, 12, 12], [{"type": "conv", "out": 6, "k": 3, "pad": 1, "bn": bn}, {"type": "avgpool", "k": 2},
                             {"type": "conv", "out": 8, "k": 3, "bn": bn}, {"type": "maxpool", "k": 2},
                             {"type": "flatten"}, {"type": "linear", "out": out}]
    if kind == "wino":
        return [3, 8, 8], [{"type": "conv", "out": 16, "k": 3, "pad": 1, "bn": bn},
                           {"type": "conv", "out": 16, "k": 3, "pad": 1, "bn": bn}, {"type": "avgpool", "k": 2},
                           {"type": "conv", "out": 16, "k": 3, "stride": 2, "pad": 1, "bn": bn},
                           {"type": "flatten"}, {"type": "linear", "out": out}]
    if kind == "resnet":
        return [4, 8, 8], [{"type": "resblock", "out": 4, "stride": 1, "bn": bn},
                           {"type": "resblock", "out": 8, "stride": 2, "bn": bn}, {"type": "gap"},
                           {"type": "flatten"}, {"type": "linear", "out": out}]
    if kind == "dropout":
        return [1, 8, 8], [{"type": "flatten"}, {"type": "linear", "out": 24}, {"type": "dropout", "p": 0.3},
                        {"type": "linear", "out": out}]
    raise ValueError(kind)


def build(stopnp, kind, bn, rule, dtype, readout="spiking"):
    vote = 3 if rule == "bpsta" else 1
    shape, layers = _layers(kind, bn, vote)
    cfg = {"model": {"name": "custom", "input_shape": shape, "n_classes": 4, "layers": layers, "vote": vote,
                     "readout": "spiking" if rule == "bpsta" else readout},
           "neuron": {"alpha_init": 0.6, "reset": "hard" if rule == "bpsta" else "soft",
                      "theta_init": 0.5 if rule == "bpsta" else 1.0},
           "run": {"seed": 3}}
    net = stopnp.build(cfg).astype(dtype)
    rng = np.random.default_rng(11)
    for name, arr in net.params.items():  # non-trivial BN, so that eval mode is not the identity
        if name.endswith("bn.gamma"):
            arr[...] = rng.uniform(0.8, 1.5, arr.shape)
        elif name.endswith("bn.beta"):
            arr[...] = rng.uniform(0.0, 0.4, arr.shape)
        elif name.endswith("bn.running_mean"):
            arr[...] = rng.uniform(-0.3, 0.3, arr.shape)
        elif name.endswith("bn.running_var"):
            arr[...] = rng.uniform(0.5, 2.0, arr.shape)
    return net


def inputs(net, static, T, B, dtype, seed=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, net.n_classes, B)
    if static:
        img = rng.uniform(0, 1.5, (B, *net.input_shape)).astype(dtype)
        return np.broadcast_to(img, (T, *img.shape)), y
    return rng.uniform(0, 1.5, (T, B, *net.input_shape)).astype(dtype), y


def batch_cases():
    for kind in ("mlp", "mlp_big", "conv", "wino", "resnet", "dropout"):
        for bn in ((False, True) if kind not in ("dropout",) else (False,)):
            for rule in RULES:
                for kernels in ("blas", "loop"):
                    for dtype in (np.float32, np.float64):
                        for static in (True, False):
                            if kind in ("mlp_big", "resnet") and (dtype == np.float64 or rule in ("sltt", "ottt")):
                                continue  # the larger nets: the float32 training paths only
                            yield kind, bn, rule, kernels, dtype, static


def snapshot_batches(stopnp, out):
    n = 0
    for kind, bn, rule, kernels, dtype, static in batch_cases():
        readout = "membrane" if kind == "conv" and rule in ("stop", "bptt") else "spiking"
        net = build(stopnp, kind, bn, rule, dtype, readout)
        B = 64 if kind == "mlp_big" else 5
        x, y = inputs(net, static, 4, B, dtype)
        learn = "WTL" if rule in ("stop", "bptt") else "W"
        for bn_mode in (("train", "eval") if bn else ("train",)):
            inp = "static" if static else "steps"
            key = f"{kind}/bn{int(bn)}/{rule}/{kernels}/{np.dtype(dtype).name}/{inp}/{bn_mode}"
            opts = dict(learn=learn, kernels=kernels, bn_mode=bn_mode)
            if rule == "stop" and kind == "mlp":
                opts["alpha_reduce"] = "sum" if static else "mean"
            res = stopnp.run_batch(net, x, y, rule, rng=np.random.default_rng(7), **opts)
            _put(out, key, res)
            n += 1
            if rule == "bptt" and not static:
                res = stopnp.run_batch(net, x, y, rule, rng=np.random.default_rng(7), detach_reset=False, **opts)
                _put(out, key + "/keep_reset", res)
            if rule == "bpsta" and bn_mode == "train":
                for extra in ({"bpsta_plain": True}, {"ann": True}):
                    res = stopnp.run_batch(net, x, y, rule, rng=np.random.default_rng(7), **extra, **opts)
                    _put(out, key + "/" + next(iter(extra)), res)
            if rule == "stop" and bn_mode == "train":
                rec = stopnp.simulate(net, x, record=("u", "s", "v", "i", "delta", "g", "w_trace", "th_trace",
                                                      "al_trace"), y=y, kernels=kernels)
                for k, v in rec.items():
                    out[f"{key}/simulate/{k}"] = v
                out[f"{key}/predict"] = stopnp.predict(net, x, kernels=kernels)
    return n


def _put(out, key, res):
    out[f"{key}/loss"] = np.array(res.loss)
    out[f"{key}/out_sum"] = res.out_sum
    for k, v in res.grads.items():
        out[f"{key}/grad/{k}"] = v
    for k, v in res.spike_counts.items():
        out[f"{key}/count/{k}"] = np.array(v)
    for k, (m, v) in res.bn_stats.items():
        out[f"{key}/bn/{k}/mean"] = m
        out[f"{key}/bn/{k}/var"] = v


def snapshot_training(stopnp, out):
    """Short training runs through the training loop: online updates, stored rules, ANN warm-up, fixed point."""
    import stopnp.train as tr
    base = {"model": {"name": "lenet5", "readout": "membrane"},
            "data": {"name": "mnist-builtin", "T": 2, "batch_size": 16, "limit_train": 48, "limit_test": 32,
                     "augment": "shift"},
            "optim": {"lr": 0.05}, "run": {"epochs": 2, "seed": 1, "quiet": True}}
    runs = {
        "stop-online": {"rule": {"name": "stop", "online": True}},
        "ottt-online": {"rule": {"name": "ottt", "learn": "W", "online": True}},
        "sltt-k": {"rule": {"name": "sltt-k", "learn": "W"}},
        "stop": {"rule": {"name": "stop"}, "model": {"name": "lenet5", "readout": "membrane", "bn": True}},
        "stop-loop": {"rule": {"name": "stop"}, "run": {"epochs": 1, "seed": 1, "quiet": True, "kernels": "loop"}},
        "bptt": {"rule": {"name": "bptt"}, "optim": {"lr": 0.05, "grad_clip": 1.0}},
        "bpsta": {"model": {"name": "lenet5", "vote": 10, "readout": "spiking", "bn": True, "init_gain": 1.0},
                  "neuron": {"reset": "hard", "theta_init": 0.5}, "loss": {"kind": "mse", "reduce": "mean"},
                  "rule": {"name": "bpsta", "learn": "W", "warmup_epochs": 1},
                  "optim": {"kind": "adam", "lr": 0.001, "weight_decay": 0.0}},
        "fixed": {"numerics": {"kind": "fixed"}, "optim": {"lr": 0.05, "momentum": 0.0, "weight_decay": 0.0},
                  "run": {"epochs": 1, "seed": 1, "quiet": True, "threads": 1}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in runs.items():
            cfg = {sec: dict(body) for sec, body in base.items()}
            for sec, body in extra.items():
                cfg[sec] = {**cfg.get(sec, {}), **body}
            cfg["run"]["out_dir"] = os.path.join(tmp, name)
            res = tr.train(cfg)
            for k, v in res.net.params.items():
                out[f"train/{name}/param/{k}"] = v
            for i, row in enumerate(res.metrics):
                for k in ("train_loss", "train_acc", "test_acc", "lr"):
                    out[f"train/{name}/epoch{i}/{k}"] = np.array(row[k])
            net = stopnp.load(os.path.join(tmp, name, "last.h5"))
            for k, v in net.params.items():
                out[f"train/{name}/loaded/{k}"] = v


def compare(a_path, b_path):
    a, b = np.load(a_path), np.load(b_path)
    keys_a, keys_b = set(a.files), set(b.files)
    only = sorted(keys_a ^ keys_b)
    common = sorted(keys_a & keys_b)
    equal = [k for k in common if a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
             and np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")]
    diff = sorted(set(common) - set(equal))
    grads = [k for k in common if "/grad/" in k]
    print(f"arrays compared: {len(common)}, bitwise equal: {len(equal)}, different: {len(diff)}, "
          f"in one file only: {len(only)}")
    print(f"  of which gradients: {len(grads)}, bitwise equal: {len([k for k in grads if k in set(equal)])}")
    for k in diff[:20]:
        print("  differs:", k)
    for k in only[:20]:
        print("  only in one:", k)
    return 0 if not diff and not only else 1


def main(argv):
    if argv[:1] == ["--compare"] and len(argv) == 3:
        return compare(argv[1], argv[2])
    if len(argv) != 1:
        sys.exit(__doc__)
    import stopnp
    print(f"stopnp from {stopnp.__file__}", flush=True)
    out = {}
    n = snapshot_batches(stopnp, out)
    snapshot_training(stopnp, out)
    np.savez(argv[0], **out)
    print(f"{n} batch cases, {len(out)} arrays -> {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
