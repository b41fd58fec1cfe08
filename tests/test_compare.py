"""The comparison command runs end to end on a tiny budget and writes its table and figures."""
import json
import os

from stopnp.tools.compare import compare, rule_config


def test_rule_recipes_apply_their_defaults(tmp_path):
    cfg = rule_config("sltt", 1, 0, str(tmp_path))
    assert cfg["neuron"]["surrogate"] == "triangle" and abs(cfg["neuron"]["alpha_init"] - (1 - 1 / 1.1)) < 1e-12
    assert cfg["loss"]["kind"] == "ce_mse" and cfg["loss"]["reduce"] == "mean" and cfg["rule"]["learn"] == "W"
    assert cfg["model"]["name"] == "lenet5"
    assert rule_config("ottt", 1, 0, str(tmp_path))["neuron"]["surrogate"] == "sigmoid"


def test_compare_tiny(tmp_path):
    import pytest
    pytest.importorskip("stopnp.data")
    extra = ("data.limit_train=256", "data.limit_test=64", "data.batch_size=64")
    rows, mem = compare(("stop", "sltt"), epochs=1, out_dir=str(tmp_path / "runs"), plots_dir=str(tmp_path / "p"),
                        memory=False, extra=extra)
    assert [r["rule"] for r in rows] == ["stop", "sltt"]
    for r in rows:
        assert 0 <= r["test_acc"] <= 1 and r["train_seconds"] > 0 and r["peak_rss_mib"] > 10
        # training time: the epochs' training passes only, so less than the whole call (compile, evaluation)
        assert len(r["epoch_seconds"]) == 1 and r["train_seconds"] == sum(r["epoch_seconds"])
        assert r["train_seconds"] < r["wall_seconds"]
        assert -1 <= r["cos_to_bptt"] <= 1
    table = (tmp_path / "p" / "compare.md").read_text()
    assert "| stop |" in table and "| sltt |" in table
    assert json.loads((tmp_path / "p" / "compare.json").read_text())["rows"][0]["rule"] == "stop"
    assert os.path.getsize(tmp_path / "p" / "compare_accuracy.png") > 1000


def test_compare_cli_parses_and_rejects_unknown_rules(capsys):
    import pytest
    from stopnp import cli
    args = cli.build_parser().parse_args(["compare", "--rules", "stop, ottt", "--epochs", "2", "--no-memory",
                                          "--set", "data.limit_train=64"])
    assert args.rules == ["stop", "ottt"] and args.epochs == 2 and args.no_memory
    assert args.overrides == ["data.limit_train=64"]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["compare", "--rules", "stop,backprop"])
    assert "unknown rule(s) backprop" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["compare", "--help"])
    out = capsys.readouterr().out
    assert "compare_memory_vs_T.png" in out and "cosine" in out
