"""Typed, validated run configuration.

A config is a plain nested dict with the sections below (a TOML/JSON file on disk). ``resolve``
fills defaults, applies ``section.key=value`` overrides, and refuses unknown keys and bad values
with a one-line ``ConfigError`` that names the field and lists the valid choices.
"""
import json
import math
import os
import tomllib
from dataclasses import dataclass
from typing import Any, Callable


class ConfigError(ValueError):
    """A config field is unknown or has a bad value; the message names the field."""


@dataclass(frozen=True)
class Field:
    default: Any
    kind: type | tuple            # accepted Python type(s)
    choices: tuple | Callable | None = None  # the valid values, or a function returning them
    check: Callable | None = None  # extra predicate on the value
    hint: str = ""                 # what a valid value looks like

    def allowed(self) -> tuple | None:
        """The valid values (``choices`` called when it is a function: the rules come from their registry)."""
        return self.choices() if callable(self.choices) else self.choices


def _pos(v):
    return v > 0


def _nonneg(v):
    return v >= 0


def _unit(v):
    return 0.0 <= v <= 1.0


def _posint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _shape(v):
    return len(v) in (1, 3) and all(map(_posint, v))


MAX_T = 1_000_000  # time steps: beyond any event stream; 2**62 would overflow the loops' counters


def _rules():
    from .rules import RULES  # the one registry of rules (rules/__init__.py); imported when first needed
    return tuple(RULES)


MODELS = ("mlp", "lenet5", "vgg11", "resnet18", "custom")

SCHEMA: dict[str, dict[str, Field]] = {
    "model": {
        "name": Field("lenet5", str, MODELS),
        "input_shape": Field([1, 28, 28], list, check=_shape, hint="[C, H, W] or [N]"),
        "n_classes": Field(10, int, check=_pos, hint="> 0"),
        "hidden": Field([800], list, check=lambda v: all(map(_posint, v)),
                        hint="list of positive ints (mlp)"),
        "bn": Field(None, (bool, type(None)), hint="true/false (default: per model)"),
        "readout": Field("spiking", str, ("spiking", "membrane")),
        "pool": Field("avg", str, ("avg", "max")),
        "dropout": Field(0.0, float, check=lambda v: 0.0 <= v < 1.0, hint="0 <= p < 1"),
        "width": Field(1.0, float, check=_pos, hint="channel multiplier > 0 (vgg11, resnet18)"),
        "layers": Field(None, (list, type(None)), hint="layer spec list (model.name = custom)"),
        "vote": Field(1, int, check=_pos, hint=">= 1: output neurons per class, votes averaged (BPSTA: 10)"),
        "init_gain": Field(2.0, float, check=_pos,
                           hint="> 0: weight-init gain of layers fed by spikes (sparse binary input)"),
    },
    "neuron": {
        "reset": Field("soft", str, ("soft", "hard")),
        "surrogate": Field("exp", str, ("exp", "triangle", "sigmoid", "atan", "rectangle")),
        "theta_init": Field(1.0, float, check=_pos, hint="> 0"),
        "theta_mode": Field("neuron", str, ("neuron", "channel", "layer")),
        "theta_min": Field(1e-3, float, check=_pos, hint="> 0"),
        "alpha_init": Field(0.5, float, check=_unit, hint="0 <= alpha <= 1"),
    },
    "rule": {
        "name": Field("stop", str, _rules),
        "learn": Field("WTL", str, check=lambda v: set(v) <= set("WTL") and "W" in v,
                       hint="letters from W, T, L, with W (e.g. W, WT, WL, WTL)"),
        "alpha_reduce": Field("mean", str, ("mean", "sum")),
        "detach_reset": Field(True, bool),
        "online": Field(False, bool),
        "k": Field(2, int, check=_pos, hint=">= 1 steps with a backward (sltt-k)"),
        "ottt_lambda": Field(0.5, float, check=_unit, hint="0 <= lambda <= 1"),
        "bpsta_lambda": Field(0.9, float, check=_unit, hint="0 <= lambda <= 1 (BPSTA membrane decay)"),
        "bpsta_beta": Field(0.2, float, check=_nonneg, hint=">= 0 (BPSTA temporal-adjustment gain)"),
        "warmup_epochs": Field(0, int, check=_nonneg, hint=">= 0 (BPSTA: first epochs as a ReLU ANN)"),
    },
    "loss": {
        "kind": Field("ce", str, ("ce", "ce_mse", "mse")),
        "reduce": Field("sum", str, ("sum", "mean")),
        "mix": Field(0.05, float, check=_unit, hint="0 <= lambda <= 1"),
    },
    "optim": {
        "kind": Field("sgd", str, ("sgd", "adam")),
        "lr": Field(0.1, float, check=_pos, hint="> 0"),
        "momentum": Field(0.9, float, check=lambda v: 0.0 <= v < 1.0, hint="0 <= m < 1"),
        "nesterov": Field(False, bool),
        "weight_decay": Field(5e-5, float, check=_nonneg, hint=">= 0"),
        "theta_lr_scale": Field(1.0, float, check=_nonneg, hint=">= 0"),
        "alpha_lr_scale": Field(1.0, float, check=_nonneg, hint=">= 0"),
        "betas": Field([0.9, 0.999], list, check=lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
                       hint="[beta1, beta2] in [0, 1)"),
        "eps": Field(1e-8, float, check=_pos, hint="> 0"),
        "schedule": Field("cosine", str, ("cosine", "constant")),
        "grad_clip": Field(0.0, float, check=_nonneg, hint=">= 0 (0 = off)"),
    },
    "data": {
        "name": Field("mnist-builtin", str, hint="dataset name or HDF5 cache path"),
        "T": Field(4, int, check=lambda v: 0 < v <= MAX_T, hint=f"time steps, 1 to {MAX_T:,}"),
        "batch_size": Field(128, int, check=_pos, hint="> 0"),
        "test_batch_size": Field(500, int, check=_pos, hint="> 0"),
        "augment": Field("none", str, ("none", "shift", "cifar", "dvs")),
        "limit_train": Field(0, int, check=_nonneg, hint=">= 0 (0 = all samples)"),
        "limit_test": Field(0, int, check=_nonneg, hint=">= 0 (0 = all samples)"),
    },
    "numerics": {
        "kind": Field("float", str, ("float", "fixed"),
                      hint="float (run.dtype) or fixed (integer arithmetic of the C export; fixed/formats.py)"),
        "w_bits": Field(16, int, (8, 16, 32)),
        "w_frac": Field(12, int, check=lambda v: 0 <= v <= 24,
                        hint="0..24 fractional bits of the weights (w_scale global; < w_bits)"),
        "w_scale": Field("layer", str, ("layer", "global"),
                         hint="layer: each layer's weights get the most fractional bits that hold max|W|"),
        "w_headroom": Field(1, int, check=lambda v: 0 <= v <= 8,
                            hint="0..8 spare integer bits per layer (w_scale layer) for weights to grow"),
        "x_frac": Field(8, int, check=lambda v: 0 <= v <= 24, hint="0..24 (inputs, spikes, weight traces)"),
        "v_frac": Field(12, int, check=lambda v: 0 <= v <= 24, hint="0..24 (I, U, V, theta)"),
        "a_frac": Field(15, int, check=lambda v: 0 <= v <= 24, hint="0..24 (alpha)"),
        "p_frac": Field(14, int, check=lambda v: 0 <= v <= 16, hint="0..16 (surrogate, softmax)"),
        "e_frac": Field(16, int, check=lambda v: 0 <= v <= 24, hint="0..24 (errors)"),
        "g_frac": Field(16, int, check=lambda v: 0 <= v <= 24, hint="0..24 (gradient accumulators)"),
        "lr_frac": Field(16, int, check=lambda v: 0 <= v <= 24, hint="0..24 (learning rate)"),
        "learn_last": Field(0, int, check=_nonneg, hint=">= 0: fixed-point STOP trains the last N layers (0 = all)"),
    },
    "run": {
        "epochs": Field(10, int, check=_pos, hint="> 0"),
        "seed": Field(0, int, check=_nonneg, hint=">= 0"),
        "threads": Field(0, int, check=_nonneg,
                         hint=(">= 0 (0 = auto: numba on all cores, every GEMM inside its pool, BLAS 1; "
                               "n = numba on n cores, BLAS 1)")),
        "out_dir": Field("runs/default", str),
        "kernels": Field("blas", str, ("blas", "loop")),
        "dtype": Field("float32", str, ("float32", "float64")),
        "quiet": Field(False, bool),
        "distributed": Field("auto", str, ("auto", "none", "mpi"),
                             hint="auto: data-parallel over MPI when launched by mpiexec -n N > 1 (docs/distributed.md)"),
        "sync_bn": Field(False, bool),
        "mpi_timeout": Field(300.0, float, check=_pos,
                             hint="> 0 seconds a rank waits for the others in a sum before it ends the job"),
        "mpi_overlap": Field(True, bool, hint=("true: the gradient sum of a data-parallel run overlaps the last "
                                               "backward pass; false: one blocking sum after it")),
        "mpi_bucket_kib": Field(256, int, check=_nonneg,
                                hint=">= 0 KiB of final gradients per non-blocking sum (0 = one per layer)"),
    },
}


# What `stopnp train` runs with no config file (= the packaged recipe mnist-lenet5): LeNet-5, STOP-WTL,
# built-in MNIST subset, tuned to pass 98.5 % test accuracy (docs/results-accuracy.md). The library
# defaults above follow docs/algorithms.md (e.g. a spiking output layer); this recipe departs from them where
# measured better: a non-spiking membrane readout, batches of 32, lr 0.05, ±2-px shifts, 40 epochs.
DEFAULT_TRAIN = {
    "model": {"name": "lenet5", "input_shape": [1, 28, 28], "n_classes": 10, "readout": "membrane"},
    "rule": {"name": "stop", "learn": "WTL"},
    "optim": {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-5, "schedule": "cosine"},
    "data": {"name": "mnist-builtin", "T": 4, "batch_size": 32, "augment": "shift"},
    "run": {"epochs": 40, "seed": 0, "out_dir": "runs/default"},
}


def defaults() -> dict:
    return {sec: {k: _copy(f.default) for k, f in fields.items()} for sec, fields in SCHEMA.items()}


def _copy(v):
    return json.loads(json.dumps(v))


def read(path) -> dict:
    """Read a TOML or JSON config file; a missing or malformed file is a one-line ConfigError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a folder, not a config file" if os.path.isdir(path) else "config file not found"
        raise ConfigError(f"{path}: {what}; pass a TOML or JSON recipe file, or a packaged recipe name "
                          f"(stopnp recipes list)")
    try:
        with open(path, "rb") as f:
            cfg = json.load(f) if path.endswith(".json") else tomllib.load(f)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a valid {'JSON' if path.endswith('.json') else 'TOML'} "
                          f"config ({e}); fix the file there") from None
    _check_top(cfg, path)
    return cfg


def _check_top(cfg, where):
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: the top level must be a table/object of sections "
                          f"({', '.join(SCHEMA)}), not {type(cfg).__name__}")


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"optim.lr=0.05"`` -> ("optim", "lr", 0.05); values are parsed as TOML scalars/arrays."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r}: expected SECTION.KEY=VALUE, e.g. optim.lr=0.05")
    key, raw = text.split("=", 1)
    sec, name = key.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare word: a string
    return sec, name, value


def resolve(cfg: dict | None = None, overrides=()) -> dict:
    """Defaults <- ``cfg`` <- ``overrides``; validated. Returns a new, complete dict."""
    out = defaults()
    items = []
    cfg = {} if cfg is None else cfg
    _check_top(cfg, "config")
    for sec, body in cfg.items():
        if sec not in SCHEMA:
            raise ConfigError(f"unknown config section {sec!r}; valid: {', '.join(SCHEMA)} (fix the name)")
        if not isinstance(body, dict):
            raise ConfigError(f"config section {sec!r} must be a table of key = value")
        items += [(sec, k, v) for k, v in body.items()]
    for o in overrides:
        items.append(parse_override(o) if isinstance(o, str) else tuple(o))
    for sec, key, value in items:
        out[sec][key] = validate_field(sec, key, value)
    return out


def validate_field(sec, key, value, name=None):
    """``value`` checked against SCHEMA[sec][key]; errors name ``name`` (default ``sec.key``)."""
    if sec not in SCHEMA:
        raise ConfigError(f"unknown config section {sec!r}; valid: {', '.join(SCHEMA)}")
    fields = SCHEMA[sec]
    if key not in fields:
        raise ConfigError(f"unknown config key {sec}.{key}; valid keys of [{sec}]: {', '.join(fields)} (fix the name)")
    f = fields[key]
    name = name or f"{sec}.{key}"
    if isinstance(value, tuple):
        value = list(value)
    if float in _kinds(f.kind) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in _kinds(f.kind):
        raise ConfigError(f"{name} = {value!r}: expected {_kind_name(f)}")
    if not isinstance(value, f.kind):
        raise ConfigError(f"{name} = {value!r}: expected {_kind_name(f)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} = {value!r}: expected a finite number, {_kind_name(f)}")
    choices = f.allowed()
    if choices is not None and value not in choices:
        raise ConfigError(f"{name} = {value!r}: valid choices are {', '.join(map(str, choices))}")
    if value is not None and f.check is not None:
        ok = False
        try:
            ok = bool(f.check(value))
        except Exception:
            pass
        if not ok:
            raise ConfigError(f"{name} = {value!r}: expected {f.hint or _kind_name(f)}; set {name} to such a value")
    return _copy(value)


def _kinds(kind):
    return kind if isinstance(kind, tuple) else (kind,)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               type(None): "nothing"}


def _kind_name(f):
    """The expected type in words, then the field's hint: 'an integer (time steps > 0)'."""
    kinds = " or ".join(_TYPE_WORDS.get(k, k.__name__) for k in _kinds(f.kind))
    return f"{kinds} ({f.hint})" if f.hint else kinds


def dumps_toml(cfg: dict, comments=False) -> str:
    """Write a resolved config as TOML (scalars and flat lists only; ``layers`` as inline tables).

    ``comments``: each key's valid values as a trailing comment, and unset keys (TOML has no null) as
    commented-out lines, so the printed config documents itself for editing."""
    lines = []
    for sec, body in cfg.items():
        lines.append(f"[{sec}]")
        for k, v in body.items():
            f = SCHEMA.get(sec, {}).get(k)
            note = ""
            if comments and f is not None:
                note = ", ".join(map(str, f.allowed())) if f.choices else (f.hint or _kind_name(f))
            if v is None:
                if comments:
                    lines.append(f"# {k} =   (unset) {note}".rstrip())
                continue
            text = f"{k} = {_toml_value(v)}"
            lines.append(f"{text:<32} # {note}" if note else text)
        lines.append("")
    return "\n".join(lines)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {v!r} to TOML")
