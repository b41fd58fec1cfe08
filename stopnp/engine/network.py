"""Layer records, parameter containers, and building a network from a config.

A network is a tuple of ``Layer`` records (neuron populations, in topological order). Each layer
receives one or more ``Synapse`` records; a synapse reads the spikes of a source layer (or the
network input, ``src = -1``), applies its pre-ops (pooling, flatten, dropout), then a weight op:

    x^l[t]  = pre( s^src[t] )                         pooled / flattened / dropped-out spikes
    I^l[t]  = Σ_synapses BN( W ⊛ x^l[t] )             + identity shortcuts (ResNet)
    U, s, V as in kernels/lif.py

Containers are plain ``dict[str, ndarray]`` with documented names:

    params : "<layer>.weight", "<layer>.theta", "<layer>.alpha", "<layer>.bn.gamma|beta|running_mean|
             running_var", "<layer>.shortcut.weight", "<layer>.shortcut.bn.*"
    grads  : the same names, for the parameters a rule learns
"""
import math
import os
from dataclasses import dataclass

import numpy as np

from .. import config as config_mod
from . import models


class ShapeError(ValueError):
    """An input array has the wrong shape, dtype, layout or values; the message says which."""


@dataclass(frozen=True)
class PreOp:
    kind: str           # 'avgpool' | 'maxpool' | 'gap' | 'flatten' | 'dropout'
    in_shape: tuple
    out_shape: tuple
    k: int = 0          # pooling window rows (= stride)
    p: float = 0.0
    kw: int = 0         # pooling window columns; 0: k (square). gap: (k, kw) = (H, W)

    @property
    def window(self) -> tuple:
        """(kh, kw) of a pooling op."""
        return (self.k, self.kw or self.k)


@dataclass(frozen=True)
class Synapse:
    name: str           # parameter prefix, e.g. "conv1" or "block1.conv2.shortcut"
    src: int            # source layer index; -1 = network input
    pre: tuple          # PreOps applied to the source spikes
    op: str             # 'linear' | 'conv' | 'identity'
    in_shape: tuple     # per-sample shape of x (after the pre-ops)
    out_shape: tuple    # per-sample shape of W ⊛ x
    k: int = 0
    stride: int = 1
    pad: int = 0
    bn: bool = False


@dataclass(frozen=True)
class Layer:
    name: str
    index: int
    shape: tuple        # per-sample neuron shape: (C, H, W) or (N,)
    synapses: tuple
    spiking: bool       # False only for a non-spiking readout (o[t] = I[t])
    theta_mode: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class Network:
    """Structure (``layers``), options (``config``) and parameters (``params``: name -> array).

    The network holds no run state: membranes, traces and gradients live in containers that the
    rules allocate and return.
    """

    def __init__(self, layers, params, config):
        check_layers(layers, config["model"]["input_shape"])
        self.layers = tuple(layers)
        self.params = params
        self.config = config
        self.input_shape = tuple(config["model"]["input_shape"])
        self.n_classes = config["model"]["n_classes"]

    @property
    def neuron(self) -> dict:
        return self.config["neuron"]

    @property
    def output(self) -> Layer:
        return self.layers[-1]

    def synapses(self):
        for layer in self.layers:
            yield from layer.synapses

    def trainable(self, learn="WTL") -> list:
        """Names of the parameters a rule with these learn flags updates (W always; BN γ, β with W)."""
        names = []
        for layer in self.layers:
            for syn in layer.synapses:
                if syn.op != "identity":
                    names.append(f"{syn.name}.weight")
                if syn.bn:
                    names += [f"{syn.name}.bn.gamma", f"{syn.name}.bn.beta"]
            if layer.spiking:
                if "T" in learn:
                    names.append(f"{layer.name}.theta")
                if "L" in learn:
                    names.append(f"{layer.name}.alpha")
        return names

    def param_count(self) -> int:
        return int(sum(self.params[n].size for n in self.trainable("WTL")))

    def astype(self, dtype) -> "Network":
        """A copy whose parameters have ``dtype``: float32, or float64 for checks."""
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            pass
        if dtype not in (np.float32, np.float64):
            raise config_mod.ConfigError(f"Network.astype({dtype}): the parameters are float32 or float64 "
                                         f"(np.float64 for checks)")
        return Network(self.layers, {k: v.astype(dtype) for k, v in self.params.items()}, self.config)

    def copy(self) -> "Network":
        return Network(self.layers, {k: v.copy() for k, v in self.params.items()}, self.config)

    def __repr__(self):
        rows = [f"Network({self.config['model']['name']}, input {self.input_shape}, "
                f"{self.param_count()} parameters)"]
        for layer in self.layers:
            syn = ", ".join(f"{s.op}{'+bn' if s.bn else ''}<-"
                            f"{'input' if s.src < 0 else self.layers[s.src].name}" for s in layer.synapses)
            kind = "LIF" if layer.spiking else "readout"
            rows.append(f"  {layer.name:<24} {kind:<7} {str(layer.shape):<16} {syn}")
        return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# building

def build(cfg=None, **overrides) -> Network:
    """Build a network from a config dict, a TOML/JSON file path, a model name or a packaged recipe name.

    ``overrides`` are ``section__key=value`` keywords or ``"section.key"`` names via a dict, e.g.
    ``build("mlp", model__hidden=[100], neuron__reset="hard")``; the seed is ``run.seed``.
    """
    if cfg is None:
        base = {}
    elif isinstance(cfg, dict):
        base = cfg
    elif isinstance(cfg, (str, os.PathLike)) and (os.path.sep in str(cfg) or str(cfg).endswith(
            (".toml", ".json"))):
        base = config_mod.read(cfg)
    elif isinstance(cfg, str) and cfg not in config_mod.MODELS:
        from ..recipes import names, path
        if cfg not in names():
            raise config_mod.ConfigError(f"unknown model {cfg!r}; valid: {', '.join(config_mod.MODELS)}, a "
                                         f"packaged recipe ({', '.join(names())}) or a config file path")
        base = config_mod.read(path(cfg))
    elif isinstance(cfg, str):
        base = {"model": {"name": cfg}}
    else:
        raise config_mod.ConfigError(f"config must be a dict, a file path or a model name, not {type(cfg)}")
    ov = []
    for key, value in overrides.items():
        sec, _, name = key.partition("__")
        if not name:
            raise config_mod.ConfigError(f"override {key!r}: use section__key=value, e.g. optim__lr=0.05")
        ov.append((sec, name, value))
    resolved = config_mod.resolve(base, ov)
    return from_config(resolved)


def from_config(cfg: dict) -> Network:
    m = cfg["model"]
    spec = models.spec_from_config(m)
    try:
        layers = build_layers(spec, tuple(m["input_shape"]), cfg)
    except config_mod.ConfigError as e:
        if m["name"] == "custom":
            raise
        # a named model's layer list is internal: say which input it cannot take
        raise config_mod.ConfigError(f"model.name = {m['name']!r} does not fit model.input_shape = "
                                     f"{list(m['input_shape'])} ({e})") from None
    want = m["n_classes"] * m["vote"]
    if layers[-1].size != want:
        votes = f" x model.vote = {m['vote']}" if want != m["n_classes"] else ""
        raise config_mod.ConfigError(f"model: the output layer has {layers[-1].size} neurons but model.n_classes = "
                                     f"{m['n_classes']}{votes}")
    from . import memory
    memory.check(memory.network_bytes(layers), f"model {m['name']!r} (its parameters)",
                 "lower model.hidden or the layer widths (out)")
    rng = np.random.default_rng(cfg["run"]["seed"])
    params = init_params(layers, cfg, rng)  # drawn in float32: the same start for either run.dtype
    dtype = np.dtype(cfg["run"]["dtype"])
    return Network(layers, {k: v.astype(dtype, copy=False) for k, v in params.items()}, cfg)


def _conv_out(h, k, stride, pad):
    return (h + 2 * pad - k) // stride + 1


# the keys of each layer type (models.py) with their defaults; None: required
LAYER_KEYS = {
    "conv": {"out": None, "k": 3, "stride": 1, "pad": 0, "bn": False},
    "linear": {"out": None, "bn": False},
    "resblock": {"out": None, "stride": 1, "bn": True},
    "avgpool": {"k": 2}, "maxpool": {"k": 2}, "gap": {}, "flatten": {},
    "dropout": {"p": 0.0},
}


def _int_from(lo):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


LAYER_CHECKS = {  # key: (predicate, what a valid value looks like)
    "out": (_int_from(1), "an integer >= 1"), "k": (_int_from(1), "an integer >= 1"),
    "stride": (_int_from(1), "an integer >= 1"), "pad": (_int_from(0), "an integer >= 0"),
    "bn": (lambda v: isinstance(v, bool), "true or false"),
    "p": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "0 <= p < 1"),
}


def layer_spec(i, item) -> dict:
    """``model.layers[i]`` with its defaults filled in; a bad type, key or value is a ConfigError."""
    where = f"model.layers[{i}]"
    if not isinstance(item, dict) or "type" not in item:
        raise config_mod.ConfigError(f"{where}: each layer is a table with a 'type'")
    kind = item["type"]
    if not isinstance(kind, str) or kind not in LAYER_KEYS:
        raise config_mod.ConfigError(f"{where}: unknown type {kind!r}; valid: {', '.join(LAYER_KEYS)} (fix the type)")
    keys = LAYER_KEYS[kind]
    unknown = [k for k in item if k != "type" and k not in keys]
    if unknown:
        raise config_mod.ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} for type {kind!r}; "
                                     f"valid keys: {', '.join(['type', *keys])}")
    out = {"type": kind, **keys, **item}
    for key in keys:
        v = out[key]
        ok, want = LAYER_CHECKS[key]
        if v is None:
            raise config_mod.ConfigError(f"{where}.{key}: missing; {kind} needs {key} = {want}")
        if not ok(v):
            raise config_mod.ConfigError(f"{where}.{key} = {v!r}: expected {want}")
    return out


def build_layers(spec, input_shape, cfg) -> tuple:
    """Turn a layer-spec list into Layer records, checking every shape on the way."""
    theta_mode = cfg["neuron"]["theta_mode"]
    spec = [layer_spec(i, item) for i, item in enumerate(spec)]
    weight_idx = [i for i, item in enumerate(spec) if item.get("type") in ("conv", "linear", "resblock")]
    if not weight_idx:
        raise config_mod.ConfigError("model: the network has no weight layer (conv or linear)")
    last = weight_idx[-1]
    if spec[last]["type"] != "linear":
        raise config_mod.ConfigError("model: the last weight layer must be linear (the output layer)")
    layers = []
    src, pre, shape = -1, [], tuple(input_shape)
    counts = {"conv": 0, "linear": 0, "resblock": 0}

    def where(i):
        return f"model.layers[{i}] ({spec[i].get('type')})"

    def add_layer(name, out_shape, synapses, spiking=True):
        layers.append(Layer(name, len(layers), tuple(out_shape), tuple(synapses), spiking, theta_mode))
        return len(layers) - 1

    def weight_synapse(name, item, src, pre, shape, i):
        kind = item["type"]
        if kind == "conv":
            if len(shape) != 3:
                raise config_mod.ConfigError(f"{where(i)}: conv needs a (C, H, W) input, got {shape}")
            k, st, pd = item["k"], item["stride"], item["pad"]
            ho, wo = _conv_out(shape[1], k, st, pd), _conv_out(shape[2], k, st, pd)
            if ho < 1 or wo < 1:
                raise config_mod.ConfigError(f"{where(i)}: kernel {k} does not fit input {shape}")
            return Synapse(name, src, tuple(pre), "conv", shape, (item["out"], ho, wo), k, st, pd, item["bn"])
        if len(shape) != 1:  # a linear layer flattens implicitly
            pre = list(pre) + [PreOp("flatten", shape, (int(np.prod(shape)),))]
            shape = (int(np.prod(shape)),)
        return Synapse(name, src, tuple(pre), "linear", shape, (item["out"],), bn=item["bn"])

    for i, item in enumerate(spec):
        kind = item["type"]
        if kind in ("avgpool", "maxpool"):
            k = item["k"]
            if len(shape) != 3 or shape[1] < k or shape[2] < k:
                raise config_mod.ConfigError(f"{where(i)}: cannot pool {shape} with k={k}")
            out = (shape[0], shape[1] // k, shape[2] // k)
            pre.append(PreOp(kind, shape, out, k=k))
            shape = out
        elif kind == "gap":
            if len(shape) != 3:
                raise config_mod.ConfigError(f"{where(i)}: global pooling needs (C, H, W), got {shape}; move gap before "
                                             f"the flatten and linear layers")
            out = (shape[0], 1, 1)
            pre.append(PreOp("gap", shape, out, k=shape[1], kw=shape[2]))
            shape = out
        elif kind == "flatten":
            out = (int(np.prod(shape)),)
            if out != shape:
                pre.append(PreOp("flatten", shape, out))
            shape = out
        elif kind == "dropout":
            p = float(item["p"])
            if p > 0:
                pre.append(PreOp("dropout", shape, shape, p=p))
        elif kind in ("conv", "linear"):
            counts[kind] += 1
            name = ("fc" if kind == "linear" else "conv") + str(counts[kind])
            syn = weight_synapse(name, item, src, pre, shape, i)
            spiking = not (i == last and cfg["model"]["readout"] == "membrane")
            src = add_layer(name, syn.out_shape, [syn], spiking)
            pre, shape = [], syn.out_shape
        elif kind == "resblock":
            counts[kind] += 1
            blk = f"block{counts[kind]}"
            out, stride, bn = item["out"], item["stride"], item["bn"]
            a = weight_synapse(f"{blk}.conv1", {"type": "conv", "out": out, "k": 3, "stride": stride,
                                                "pad": 1, "bn": bn}, src, pre, shape, i)
            ia = add_layer(f"{blk}.conv1", a.out_shape, [a])
            b = weight_synapse(f"{blk}.conv2", {"type": "conv", "out": out, "k": 3, "stride": 1, "pad": 1,
                                                "bn": bn}, ia, [], a.out_shape, i)
            if stride == 1 and shape[0] == out:
                sc = Synapse(f"{blk}.conv2.shortcut", src, tuple(pre), "identity", shape, shape)
            else:
                sc = weight_synapse(f"{blk}.conv2.shortcut", {"type": "conv", "out": out, "k": 1,
                                                              "stride": stride, "pad": 0, "bn": bn},
                                    src, pre, shape, i)
            if sc.out_shape != b.out_shape:
                raise config_mod.ConfigError(f"{where(i)}: shortcut shape {sc.out_shape} != {b.out_shape}")
            src = add_layer(f"{blk}.conv2", b.out_shape, [b, sc])
            pre, shape = [], b.out_shape
    if pre:
        raise config_mod.ConfigError("model: pooling/flatten/dropout after the output layer has no effect")
    return tuple(layers)


def _pre_out(op, shape):
    """The shape ``op`` makes of ``shape``, or a reason it cannot apply."""
    if op.kind in ("avgpool", "maxpool", "gap"):
        kh, kw = op.window
        if len(shape) != 3 or kh < 1 or kw < 1 or shape[1] < kh or shape[2] < kw:
            return f"a {kh}x{kw} {op.kind} window does not fit {shape}"
        if op.kind == "gap" and (kh, kw) != tuple(shape[1:]):
            return f"gap window {kh}x{kw} is not the whole map {shape[1]}x{shape[2]}"
        return (shape[0], shape[1] // kh, shape[2] // kw)
    if op.kind == "flatten":
        return (int(np.prod(shape)),)
    if op.kind == "dropout":
        return shape if 0 <= op.p < 1 else f"dropout p = {op.p} outside [0, 1)"
    return f"unknown pre-op {op.kind!r}"


def _syn_out(syn, shape):
    if syn.op == "conv":
        if len(shape) != 3 or syn.k < 1 or syn.stride < 1 or syn.pad < 0 or len(syn.out_shape) != 3:
            return f"conv k={syn.k} stride={syn.stride} pad={syn.pad} on {shape}"
        ho, wo = _conv_out(shape[1], syn.k, syn.stride, syn.pad), _conv_out(shape[2], syn.k, syn.stride, syn.pad)
        return (syn.out_shape[0], ho, wo) if ho >= 1 and wo >= 1 and syn.out_shape[0] >= 1 else \
            f"conv k={syn.k} does not fit {shape}"
    if syn.op == "linear":
        return syn.out_shape if len(shape) == 1 and len(syn.out_shape) == 1 and syn.out_shape[0] >= 1 else \
            f"linear on {shape}"
    if syn.op == "identity":
        return shape
    return f"unknown op {syn.op!r}"


def check_layers(layers, input_shape):
    """Every shape the kernels will index, checked once against its neighbours: a pre-op's input is what
    its source or the previous pre-op makes, its output what its window makes of that, a synapse's input
    the last pre-op's output, its output what its op makes, and the layer's shape that output. The kernels
    trust these shapes (numba does not check bounds), so a hand-made or edited layer list that breaks
    one is refused here, not read or written out of bounds."""
    shapes = []
    for i, layer in enumerate(layers):
        if layer.index != i or not layer.synapses:
            raise ShapeError(f"layer {layer.name!r}: index {layer.index} at position {i} or no synapse")
        for syn in layer.synapses:
            if not -1 <= syn.src < i:
                raise ShapeError(f"synapse {syn.name!r}: source {syn.src} is not an earlier layer")
            shape = tuple(input_shape) if syn.src < 0 else shapes[syn.src]
            for op in syn.pre:
                out = _pre_out(op, shape)
                if tuple(op.in_shape) != shape or isinstance(out, str) or tuple(op.out_shape) != out:
                    why = out if isinstance(out, str) else f"in {tuple(op.in_shape)} -> out {tuple(op.out_shape)}, " \
                                                          f"but the input is {shape} (-> {out})"
                    raise ShapeError(f"synapse {syn.name!r}: pre-op {op.kind}: {why}")
                shape = out
            out = _syn_out(syn, shape)
            if tuple(syn.in_shape) != shape or isinstance(out, str) or tuple(syn.out_shape) != out \
                    or out != tuple(layer.shape):
                why = out if isinstance(out, str) else f"in {tuple(syn.in_shape)} -> out {tuple(syn.out_shape)}, " \
                                                      f"but the input is {shape} (-> {out}; layer {tuple(layer.shape)})"
                raise ShapeError(f"synapse {syn.name!r} ({syn.op}): {why}")
        shapes.append(tuple(layer.shape))


def theta_shape(layer: Layer) -> tuple:
    if layer.theta_mode == "neuron":
        return layer.shape
    if layer.theta_mode == "channel":
        return (layer.shape[0],)
    return (1,)


def init_params(layers, cfg, rng) -> dict:
    """Weights: uniform(±g·sqrt(6/fan_in)) (He, g = 1 on the input, g = model.init_gain on spikes: a
    layer fed by sparse 0/1 spikes needs a larger gain for its membrane to reach θ, else the deep layers
    of an untrained net stay silent); θ = theta_init; α = alpha_init; BN γ = 1, β = 0."""
    params = {}
    neuron = cfg["neuron"]
    for layer in layers:
        for syn in layer.synapses:
            if syn.op == "linear":
                shape = (syn.out_shape[0], syn.in_shape[0])
            elif syn.op == "conv":
                shape = (syn.out_shape[0], syn.in_shape[0], syn.k, syn.k)
            else:
                shape = None
            if shape is not None:
                fan_in = int(np.prod(shape[1:]))
                gain = 1.0 if syn.src < 0 else cfg["model"].get("init_gain", 2.0)
                bound = gain * math.sqrt(6.0 / fan_in)
                params[f"{syn.name}.weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
            if syn.bn:
                c = syn.out_shape[0]
                params[f"{syn.name}.bn.gamma"] = np.ones(c, np.float32)
                params[f"{syn.name}.bn.beta"] = np.zeros(c, np.float32)
                params[f"{syn.name}.bn.running_mean"] = np.zeros(c, np.float32)
                params[f"{syn.name}.bn.running_var"] = np.ones(c, np.float32)
        if layer.spiking:
            params[f"{layer.name}.theta"] = np.full(theta_shape(layer), neuron["theta_init"], np.float32)
            params[f"{layer.name}.alpha"] = np.full((1,), neuron["alpha_init"], np.float32)
    return params


def check_input(net: Network, x, y=None, name="x"):
    """Validate a time-major input (T, B, *input_shape) and labels (B,) once, at the API boundary."""
    if not isinstance(x, np.ndarray):
        raise ShapeError(f"{name}: expected a numpy array (T, B, {', '.join(map(str, net.input_shape))}), "
                         f"got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise ShapeError(f"{name}: dtype {x.dtype}; use float32 (or float64 for checks), e.g. "
                         f"x.astype(np.float32)")
    if x.ndim != 2 + len(net.input_shape) or tuple(x.shape[2:]) != net.input_shape:
        raise ShapeError(f"{name}: shape {x.shape}; expected (T, B, {', '.join(map(str, net.input_shape))}) "
                         f"time-major")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ShapeError(f"{name}: shape {x.shape} has an empty time or batch axis")
    if not x[0].flags.c_contiguous:
        raise ShapeError(f"{name}: each step x[t] must be C-contiguous; pass np.ascontiguousarray(x)")
    if not np.isfinite(x).all():
        raise ShapeError(f"{name}: contains NaN or Inf")
    if y is not None:
        if not isinstance(y, np.ndarray) or y.ndim != 1 or y.shape[0] != x.shape[1]:
            raise ShapeError(f"y: expected integer labels of shape ({x.shape[1]},), got "
                             f"{getattr(y, 'shape', type(y).__name__)}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ShapeError(f"y: dtype {y.dtype}; labels must be integers")
        if y.size and (y.min() < 0 or y.max() >= net.n_classes):
            raise ShapeError(f"y: labels must be in [0, {net.n_classes}), got range "
                             f"[{y.min()}, {y.max()}]")


def check_params(net: Network):
    """Every parameter present, finite, with the shape the layers expect."""
    expected = init_shapes(net)
    for name, shape in expected.items():
        if name not in net.params:
            raise ShapeError(f"params: missing {name!r}")
        arr = net.params[name]
        if not isinstance(arr, np.ndarray) or arr.shape != shape:
            raise ShapeError(f"params[{name!r}]: shape {getattr(arr, 'shape', None)}, expected {shape}")
        if not np.isfinite(arr).all():
            raise ShapeError(f"params[{name!r}]: contains NaN or Inf")


def init_shapes(net: Network) -> dict:
    """name -> shape of every parameter the layers expect (what ``init_params`` creates)."""
    shapes = {}
    for layer in net.layers:
        for syn in layer.synapses:
            if syn.op == "linear":
                shapes[f"{syn.name}.weight"] = (syn.out_shape[0], syn.in_shape[0])
            elif syn.op == "conv":
                shapes[f"{syn.name}.weight"] = (syn.out_shape[0], syn.in_shape[0], syn.k, syn.k)
            if syn.bn:
                for k in ("gamma", "beta", "running_mean", "running_var"):
                    shapes[f"{syn.name}.bn.{k}"] = (syn.out_shape[0],)
        if layer.spiking:
            shapes[f"{layer.name}.theta"] = theta_shape(layer)
            shapes[f"{layer.name}.alpha"] = (1,)
    return shapes
