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
