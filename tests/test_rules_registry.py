"""The one registry of rules (stopnp/rules/__init__.py): every list of rules reads it, and its flags are
the behaviour (a stored rule refuses online updates, a weights-only rule refuses θ/α learning)."""
import numpy as np
import pytest

import stopnp
from stopnp import config as C
from stopnp.rules import RULES, rule, runner
from stopnp.rules.common import resolve_options
from nets import mlp3


def test_config_and_cli_choices_are_the_registry():
    assert C.SCHEMA["rule"]["name"].allowed() == tuple(RULES) == ("stop", "bptt", "sltt", "sltt-k", "ottt", "bpsta")
    from stopnp import cli
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    compare = sub.choices["compare"]
    assert next(a for a in compare._actions if a.dest == "rules").default == list(RULES)
    with pytest.raises(stopnp.ConfigError, match="valid choices are stop, bptt, sltt, sltt-k, ottt, bpsta"):
        C.resolve({"rule": {"name": "backprop"}})
    with pytest.raises(stopnp.ConfigError, match="available: stop, bptt"):
        rule("backprop")


def test_flags_are_the_behaviour():
    net = mlp3()
    for name, r in RULES.items():
        assert r.name == name and runner(name) is r.run
        learn = "W" if r.weights_only else "WTL"
        if r.weights_only:
            with pytest.raises(stopnp.ConfigError, match="learns weights only"):
                resolve_options(net, name, {"learn": "WTL"})
        if r.stored:
            with pytest.raises(stopnp.ConfigError, match="rule.online"):
                resolve_options(net, name, {"learn": learn, "online": True})
        else:
            resolve_options(net, name, {"learn": learn, "online": True})
        opts = resolve_options(net, name, {"learn": learn})
        ws = r.workspace(net, 2, np.dtype(np.float64), opts, 7)
        assert ws.T_store == (7 if r.stored else 1)
    assert {n for n, r in RULES.items() if r.stored} == {"bptt", "bpsta"}
    assert {n for n, r in RULES.items() if r.weights_only} == {"sltt", "sltt-k", "ottt", "bpsta"}
    assert RULES["bpsta"].forward == "bpsta" and all(r.forward == "stop" for n, r in RULES.items() if n != "bpsta")


@pytest.mark.parametrize("name", list(RULES))
def test_a_callers_workspace_and_gradients_must_fit_the_batch(name):
    """The kernels index the workspace and the gradient arrays without bounds checks: a workspace built for
    another batch size or dtype, or a gradient of another shape, dtype or layout, is refused before any
    kernel runs; the arrays that fit run (the positive control)."""
    net = mlp3()
    r = RULES[name]
    opts = resolve_options(net, name, {"learn": "W" if r.weights_only else "WTL"})
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 4, *net.input_shape)).astype(np.float32)
    y = np.arange(4) % net.n_classes
    good = {n: np.zeros(net.params[n].shape, np.float32) for n in net.trainable(opts["learn"])}
    params = {k: v.astype(np.float32) for k, v in net.params.items()}
    assert r.run(net, params, x, y, opts, ws=r.workspace(net, 4, np.float32, opts, 3), grads=good,
                 rng=np.random.default_rng(1)).loss > 0
    for B, dtype in ((8, np.float32), (2, np.float32), (4, np.float64)):
        with pytest.raises(ValueError, match=f"workspace for batches of {B} in {np.dtype(dtype)}, but x holds 4"):
            r.run(net, params, x, y, opts, ws=r.workspace(net, B, dtype, opts, 3), rng=np.random.default_rng(1))
    w = next(iter(good))
    bad = [np.zeros(good[w].shape[:-1] + (good[w].shape[-1] + 1,), np.float32),   # too long
           np.zeros(good[w].shape, np.float64),                                     # another dtype
           np.zeros(good[w].shape[::-1], np.float32).T]                             # not C-contiguous
    for g in bad:
        with pytest.raises(ValueError, match=rf"grads\['{w}'\] is"):
            r.run(net, params, x, y, opts, grads=dict(good, **{w: g}), rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match=rf"grads\['{w}'\] is NoneType"):
        r.run(net, params, x, y, opts, grads={k: v for k, v in good.items() if k != w}, rng=np.random.default_rng(1))
