"""Config validation: defaults, overrides, unknown keys and bad values refused with the valid ones."""
import pytest

from stopnp import config as C
from stopnp.config import ConfigError


def test_defaults_are_valid_and_complete():
    cfg = C.resolve()
    assert cfg["rule"]["name"] == "stop" and cfg["rule"]["learn"] == "WTL"
    assert cfg["neuron"]["alpha_init"] == 0.5 and cfg["neuron"]["theta_init"] == 1.0
    assert cfg["optim"]["momentum"] == 0.9 and cfg["optim"]["weight_decay"] == 5e-5


def test_overrides_parse_toml_values():
    cfg = C.resolve({}, ["optim.lr=0.05", "model.hidden=[100, 50]", "rule.name=bptt", "run.quiet=true",
                         'run.out_dir="runs/x"'])
    assert cfg["optim"]["lr"] == 0.05 and cfg["model"]["hidden"] == [100, 50]
    assert cfg["rule"]["name"] == "bptt" and cfg["run"]["quiet"] is True and cfg["run"]["out_dir"] == "runs/x"


@pytest.mark.parametrize("override, match", [
    ("optim.lrr=0.1", "unknown config key optim.lrr; valid keys of \\[optim\\]: kind, lr"),
    ("optimizer.lr=0.1", "unknown config section 'optimizer'; valid: model"),
    ("rule.name=backprop", "valid choices are stop, bptt, sltt, sltt-k, ottt, bpsta"),
    ("optim.lr=-1", "optim.lr = -1.0: expected > 0"),
    ("neuron.alpha_init=1.5", "0 <= alpha <= 1"),
    ("data.T=0", "time steps, 1 to 1,000,000"),
    ("data.T=2.5", "data.T = 2.5"),
    ("rule.learn=TL", "with W"),
    ("run.quiet=3", "expected true or false"),
    ("run.mpi_overlap=\"yes\"", "run.mpi_overlap = 'yes': expected true or false \\(true: the gradient sum"),
    ("run.mpi_bucket_kib=-1", "run.mpi_bucket_kib = -1: expected >= 0 KiB .*; set run.mpi_bucket_kib to such"),
    ("data.T=2.0", "expected an integer \\(time steps, 1 to 1,000,000\\)"),
    ("optim.lr=\"abc\"", "expected a number"),
    ("optim.lr=nan", "optim.lr"),
    ("lr=3", "expected SECTION.KEY=VALUE"),
])
def test_bad_values_are_refused_with_choices(override, match):
    with pytest.raises(ConfigError, match=match):
        C.resolve({}, [override])


def test_file_round_trip(tmp_path):
    cfg = C.resolve({}, ["model.name=mlp", "optim.kind=adam"])
    p = tmp_path / "c.toml"
    p.write_text(C.dumps_toml(cfg))
    assert C.resolve(C.read(p)) == cfg


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        C.read(tmp_path / "missing.toml")
    p = tmp_path / "bad.toml"
    p.write_text("[model\nname = 1")
    with pytest.raises(ConfigError, match="bad.toml: not a valid TOML"):
        C.read(p)


def test_model_spec_errors_name_the_layer():
    import stopnp
    with pytest.raises(ConfigError, match=r"model.layers\[1\]: unknown type 'cnv'"):
        stopnp.build({"model": {"name": "custom", "input_shape": [1, 8, 8], "n_classes": 2,
                                "layers": [{"type": "flatten"}, {"type": "cnv"}]}})
    with pytest.raises(ConfigError, match="output layer has 10 neurons but model.n_classes = 3"):
        stopnp.build({"model": {"name": "custom", "input_shape": [4], "n_classes": 3,
                                "layers": [{"type": "linear", "out": 10}]}})
    with pytest.raises(ConfigError, match="does not fit"):
        stopnp.build({"model": {"name": "custom", "input_shape": [1, 3, 3], "n_classes": 2,
                                "layers": [{"type": "conv", "out": 2, "k": 5}, {"type": "linear", "out": 2}]}})
