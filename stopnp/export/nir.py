"""Export to NIR (Neuromorphic Intermediate Representation, https://neuroir.org), read it back, and
re-simulate it in plain NumPy.

    export_nir(net, path, dt=1e-4, pool="avg", unit_threshold=False) -> summary dict   (writes HDF5)
    to_nir_graph(net, ...) -> nir.NIRGraph          the same graph in memory (e.g. for an importer)
    read_nir(path) -> [ {name, type, input, output, params, metadata, next}, ... ]   topological order
    nir_forward(path_or_graph, x) -> {"<node>.s", "<node>.u", "output"}   (T, B, ...) NumPy arrays

Needs the optional extra ``pip install 'stopnp[nir]'`` (the ``nir`` package); without it every
function raises ``NIRMissing`` (an ImportError): "NIR export needs the optional extra: ...".

stopnp's neuron (docs/algorithms.md §1), discrete time t = 1..T, per layer:

    I[t] = BN(W ⊛ x[t])          U[t] = α·V[t-1] + I[t]          s[t] = H(U[t] - θ)   (U >= θ fires)
    V[t] = U[t] - θ·s[t]  (soft reset, default)      or      V[t] = U[t]·(1 - s[t])  (hard reset)

NIR's neurons are continuous-time ODEs. Every NIR importer we know (snntorch 1.0 and later,
SpikingJelly 2.0, Norse) turns them into discrete steps with forward Euler at a fixed step dt:

    LIF:  τ dv/dt = (v_leak - v) + R·I   ->   v[t] = v[t-1] + (dt/τ)·(v_leak - v[t-1] + R·I[t])
    IF :    dv/dt = R·I                  ->   v[t] = v[t-1] + dt·R·I[t]
    z[t] = H(v[t] - v_threshold) (NIR: strictly greater);  v[t] <- v_reset where z = 1

The mapping (one graph node per operation, named after the stopnp layer):

    weight op   Conv2d (always with a bias) or Affine (when BN gave a bias) / Linear (no bias).
                BN (eval mode: running statistics, ε = engine.synapse.BN_EPS) is folded into W and b
                (kernels/norm.py ``bn_fold``): W' ⊛ x + b = BN(W ⊛ x).
    0 < α < 1   LIF with τ = dt/(1 - α), R = 1, v_leak = 0, v_reset = 0, and the gain 1/(1 - α) folded
                into the weight op in front of it (W'' = W'/(1-α), b'' = b/(1-α)). Euler then gives
                v[t] = α·v[t-1] + (1-α)·I[t]/(1-α) = α·v[t-1] + I[t]: v is stopnp's U exactly.
    α = 0       the same LIF with τ = dt (no gain).        α = 1: IF with R = 1/dt, weights as they are.
    θ           v_threshold = θ broadcast to the layer shape (per neuron, channel or layer).
                ``unit_threshold=True`` folds 1/θ into the weight op instead (v_threshold = 1, v = U/θ,
                exact for both resets): importers that need one threshold per layer (snntorch,
                SpikingJelly) then accept dense layers with per-neuron θ and conv layers with θ per
                channel or layer; conv layers with θ per neuron are refused in that mode.
    readout     a non-spiking last layer (o[t] = I[t]) is its Affine/Linear node feeding Output directly
                (not an LI node: o[t] has no memory, and snntorch/SpikingJelly import no LI).
    avgpool     AvgPool2d(k, stride k) (imported by snntorch and SpikingJelly); ``pool="sum"`` writes
                SumPool2d and folds 1/k² into the next weight op (Norse imports SumPool2d only).
                Global average pooling is AvgPool2d over the whole map. Flatten: start_dim 0, end_dim -1
                (NIR shapes have no batch axis). Dropout is the identity at inference and is dropped.
    metadata    neuron nodes: reset ("subtract" | "zero"), alpha, stopnp_layer, input_gain (1/(1-α),
                already folded into the weight op); the graph: producer, model, dt, reset, pool,
                unit_threshold, output ("spikes" or "readout current I[t]").
    refused     maxpool (NIR 1.0 has no max pooling) and ResNet shortcuts (a layer fed by two synapses)
                raise ``NIRUnsupported`` (a ConfigError and NotImplementedError).

Why this mapping: R = 1 with the leak gain in the weights is the one choice that the three importers
reproduce exactly: Norse ignores R (and warns when R != 1) and scales the input by dt/τ; SpikingJelly
maps R = 1 to LIFNode(decay_input=True), H = V + (X - V)/τ; snntorch maps LIF to Leaky(β = 1 - dt/τ)
and, as the input gain R·dt/τ = 1 - α is not 1, divides the threshold by it (its membrane is then
U/(1-α), its spikes are stopnp's). The snntorch/SpikingJelly exporters' own convention (R = τ/dt,
weights unscaled) is exact in those two but not in Norse. dt defaults to 1e-4 s because snntorch 1.0
hard-codes it and SpikingJelly defaults to it; import with the same dt (Norse: ``from_nir(g, dt=1e-4)``;
dt is stored in the graph metadata). τ/dt = 1/(1-α) does not depend on dt, so any dt works as long as
exporter and importer agree. Edge cases: SpikingJelly refuses τ/dt <= 1 (α = 0); snntorch 1.0 refuses
IF with R != 1 (α = 1) and needs one threshold per layer, as does SpikingJelly.

Checked by importing exported mlp/lenet5 graphs (θ per layer, channel or neuron, both resets, α = 1)
into snntorch 1.0.0, SpikingJelly 2.0.0 and Norse 1.1.0 (nir 1.0.8, nirtorch 2.6) and comparing with
stopnp's forward: SpikingJelly and Norse gave stopnp's spikes exactly in every graph they accept
(Norse after setting the subtractive reset by hand, see below); snntorch exactly with the hard reset.
snntorch and Norse map NIR's Flatten(0, -1) to torch's Flatten(0, -1), which also flattens the batch
axis: feed them one unbatched sample at a time.

What NIR cannot carry
    * The soft (subtractive) reset. NIR's LIF/IF reset to v_reset; stopnp's default is V = U - θ·s.
      The hard reset V = U·(1-s) is NIR's reset with v_reset = 0 and is exact. For the soft reset the
      graph is written with v_reset = 0 and every neuron node has metadata ``reset = "subtract"``
      (``"zero"`` for the hard reset); importers ignore metadata, so after importing set the reset
      yourself: SpikingJelly ``v_reset = None`` on each node (exact); Norse 1.1's from_nir passes its
      ``reset_method`` to CubaLIF only, so set ``cell.p = cell.p._replace(reset_method=reset_subtract)``
      on each LIFBoxCell (exact); snntorch's ``reset_mechanism="subtract"`` is not the same reset (it
      subtracts θ again at the next step while the membrane stays >= θ after a reset), so only the
      hard reset is exact there.
    * The firing condition at equality: stopnp fires at U = θ, NIR at v > θ only (measure zero for
      real-valued inputs; ``nir_forward`` follows NIR).
    * Learning state: θ, α and W are exported as values; traces, surrogate, optimizer are not.
    * Training-mode BN (batch statistics): only the eval-mode fold is exported.

``nir_forward`` simulates the file with exactly the Euler equations above (reset from the node's
``reset`` metadata; NIR's v_reset when absent), so a test can compare it with ``stopnp.simulate``.
No pickle: NIR files are HDF5 written by ``nir.write``.
"""
import numpy as np

from ..config import ConfigError

MISSING = "NIR export needs the optional extra: pip install 'stopnp[nir]'"


class NIRMissing(ImportError, ConfigError):
    """The optional ``nir`` package is not installed."""


class NIRUnsupported(ConfigError, NotImplementedError):
    """The network uses something NIR (or this exporter) cannot express; the message says what."""


def _nir():
    try:
        import nir
    except ImportError:
        raise NIRMissing(MISSING) from None
    return nir


# ---------------------------------------------------------------------------------------------
# export

def _check(net):
    if net.config["rule"]["name"] == "bpsta":
        raise NIRUnsupported("NIR export: a BPSTA network (ReLU input current, λ leak, voting readout) is not "
                             "the LIF network NIR export writes")
    for i, layer in enumerate(net.layers):
        if len(layer.synapses) != 1 or layer.synapses[0].op not in ("conv", "linear"):
            raise NIRUnsupported(f"NIR export: layer {layer.name!r} has a shortcut or several synapses "
                                 f"(ResNet); NIR export supports chains (mlp, lenet5, vgg11)")
        syn = layer.synapses[0]
        if syn.src != i - 1:
            raise NIRUnsupported(f"NIR export: layer {layer.name!r} does not read the layer before it")
        for p in syn.pre:
            if p.kind == "maxpool":
                raise NIRUnsupported(f"NIR export: maxpool before {layer.name!r}; NIR 1.0 has no max "
                                     f"pooling (build with model.pool = 'avg')")


def _gain(net, layer, unit_threshold):
    """Per-output-unit factor folded into the weight op: 1/(1-α) for a LIF (0 < α < 1), times 1/θ
    with ``unit_threshold``; returns (gain as (C_out,) or scalar, α)."""
    if not layer.spiking:
        return 1.0, None
    p = net.params
    alpha = float(p[f"{layer.name}.alpha"][0])
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"NIR export: {layer.name}.alpha = {alpha} is outside [0, 1]")
    gain = 1.0 / (1.0 - alpha) if 0.0 < alpha < 1.0 else 1.0
    if unit_threshold:
        theta = np.asarray(p[f"{layer.name}.theta"], np.float64)
        syn = layer.synapses[0]
        if syn.op == "conv" and theta.shape == layer.shape and theta.size > 1:
            raise NIRUnsupported(f"NIR export: unit_threshold cannot fold a per-neuron θ into conv layer "
                                 f"{layer.name!r} (θ per channel or layer can); export with "
                                 f"unit_threshold=False")
        gain = gain / (theta if theta.size > 1 else theta[0])
    return gain, alpha


def to_nir_graph(net, *, dt=1e-4, pool="avg", unit_threshold=False):
    """The network as a ``nir.NIRGraph`` (see the module docstring for the mapping)."""
    nir = _nir()
    from .._version import __version__
    from ..kernels.norm import bn_fold
    from ..engine.synapse import BN_EPS
    if pool not in ("avg", "sum"):
        raise ConfigError(f"NIR export: pool must be 'avg' or 'sum', not {pool!r}")
    if not 0 < dt < float("inf"):
        raise ConfigError(f"NIR export: dt must be finite and > 0, got {dt}")
    _check(net)
    reset = "zero" if net.neuron["reset"] == "hard" else "subtract"
    shape = tuple(net.input_shape)
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges, prev = [], "input"

    def add(name, node):
        nonlocal prev
        base, n = name, 1
        while name in nodes:  # e.g. two pools before one layer
            n += 1
            name = f"{base}{n}"
        nodes[name] = node
        edges.append((prev, name))
        prev = name

    p = net.params
    for layer in net.layers:
        syn = layer.synapses[0]
        scale = 1.0  # 1/k² of sum pools, folded into this layer's weight op
        for op in syn.pre:
            if op.kind in ("avgpool", "gap"):
                k = (op.in_shape[1], op.in_shape[2]) if op.kind == "gap" else (op.k, op.k)
                cls = nir.AvgPool2d if pool == "avg" else nir.SumPool2d
                add(f"{layer.name}_{op.kind}", cls(kernel_size=np.array(k), stride=np.array(k),
                                              padding=np.array([0, 0])))
                if pool == "sum":
                    scale /= k[0] * k[1]
            elif op.kind == "flatten":
                add(f"{layer.name}_flatten", nir.Flatten(input_type={"input": np.array(op.in_shape)},
                                                         start_dim=0, end_dim=-1))
            # dropout: identity at inference
        w = np.asarray(p[f"{syn.name}.weight"])
        dtype = w.dtype
        w = w.astype(np.float64)
        b = np.zeros(w.shape[0])
        if syn.bn:
            bn = {k: np.asarray(p[f"{syn.name}.bn.{k}"], np.float64)
                  for k in ("gamma", "beta", "running_mean", "running_var")}
            w, b = bn_fold(w, bn["gamma"], bn["beta"], bn["running_mean"], bn["running_var"], BN_EPS)
        gain, alpha = _gain(net, layer, unit_threshold)
        g = np.broadcast_to(np.asarray(gain, np.float64), (w.shape[0],))
        w = (w * scale * g.reshape((-1,) + (1,) * (w.ndim - 1))).astype(dtype)
        b = (b * g).astype(dtype)
        if syn.op == "conv":
            add(layer.name, nir.Conv2d(input_shape=tuple(syn.in_shape[1:]), weight=w, stride=syn.stride,
                                       padding=syn.pad, dilation=1, groups=1, bias=b))
        elif syn.bn:
            add(layer.name, nir.Affine(weight=w, bias=b))
        else:
            add(layer.name, nir.Linear(weight=w))
        if not layer.spiking:
            continue
        theta = np.asarray(p[f"{layer.name}.theta"], np.float64)
        if syn.op == "conv" and theta.ndim == 1 and theta.size > 1:
            theta = theta.reshape(-1, 1, 1)  # per channel
        vth = np.ones(layer.shape) if unit_threshold else np.broadcast_to(theta, layer.shape).copy()
        zeros = np.zeros(layer.shape)
        meta = {"reset": reset, "alpha": alpha, "stopnp_layer": layer.name}
        if alpha == 1.0:
            node = nir.IF(r=np.full(layer.shape, 1.0 / dt), v_threshold=vth, v_reset=zeros, metadata=meta)
        else:
            meta["input_gain"] = 1.0 / (1.0 - alpha)
            node = nir.LIF(tau=np.full(layer.shape, dt / (1.0 - alpha)), r=np.ones(layer.shape),
                           v_leak=zeros, v_threshold=vth, v_reset=zeros.copy(), metadata=meta)
        add(f"{layer.name}_neuron", node)
    add("output", nir.Output(output_type={"output": np.array(net.layers[-1].shape)}))
    meta = {"producer": f"stopnp {__version__}", "model": net.config["model"]["name"], "dt": float(dt),
            "reset": reset, "pool": pool, "unit_threshold": bool(unit_threshold),
            "output": "spikes" if net.layers[-1].spiking else "readout current I[t]"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def export_nir(net, path, *, dt=1e-4, pool="avg", unit_threshold=False) -> dict:
    """Write ``net`` as a NIR graph (HDF5) to ``path`` atomically; returns a short summary."""
    nir = _nir()
    from ..fsutil import atomic_write
    graph = to_nir_graph(net, dt=dt, pool=pool, unit_threshold=unit_threshold)
    with atomic_write(path, suffix=".nir") as tmp:
        nir.write(tmp, graph)
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    return {"nodes": len(kinds), "neurons": {k: kinds.count(k) for k in ("LIF", "IF") if k in kinds},
            "dt": dt, "reset": graph.metadata["reset"], "pool": pool, "unit_threshold": unit_threshold}


# ---------------------------------------------------------------------------------------------
# reading and re-simulation

def _graph(src):
    nir = _nir()
    return src if isinstance(src, nir.NIRGraph) else nir.read(src)


def _order(graph):
    """Node names in topological order (Kahn); refuses cycles."""
    preds = {n: [] for n in graph.nodes}
    succ = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
        succ[a].append(b)
    ready = [n for n in graph.nodes if not preds[n]]
    deg = {n: len(v) for n, v in preds.items()}
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            deg[m] -= 1
            if deg[m] == 0:
                ready.append(m)
    if len(order) != len(graph.nodes):
        raise NIRUnsupported("NIR graph has a cycle (recurrence); nir_forward runs feed-forward graphs")
    return order, preds, succ


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 4 else f"array{tuple(v.shape)}"
    if isinstance(v, np.generic):
        return v.item()
    return v


def _shape(types):
    """The single shape of a NIR input_type/output_type dict as a list, or None when unknown."""
    shape = next(iter(types.values()), None) if types else None
    return None if shape is None else [int(s) for s in np.atleast_1d(shape)]


def read_nir(path) -> list:
    """One dict per node, in topological order: name, type, input/output shapes (lists or None),
    params (field -> shape, or the value when small), metadata, next (successor names)."""
    graph = _graph(path)
    order, _, succ = _order(graph)
    rows = []
    for name in order:
        node = graph.nodes[name]
        d = node.to_dict()
        params = {k: _plain(v) for k, v in d.items() if k not in ("type", "metadata", "input_type", "output_type")}
        rows.append({"name": name, "type": d["type"], "input": _shape(getattr(node, "input_type", None)),
                     "output": _shape(getattr(node, "output_type", None)), "params": params,
                     "metadata": {k: _plain(v) for k, v in (d.get("metadata") or {}).items()},
                     "next": list(succ[name])})
    return rows


def _pair(v):
    v = np.atleast_1d(np.asarray(v)).astype(int)
    return (int(v[0]), int(v[-1]))


def _windows(x, k, stride):
    from numpy.lib.stride_tricks import sliding_window_view
    return sliding_window_view(x, k, axis=(2, 3))[:, :, ::stride[0], ::stride[1]]


def _conv2d(x, node):
    if isinstance(node.padding, str):
        if node.padding != "valid":
            raise NIRUnsupported("nir_forward: Conv2d padding 'same' is not supported")
        pad = (0, 0)
    else:
        pad = _pair(node.padding)
    if int(np.max(node.dilation)) != 1 or int(node.groups) != 1:
        raise NIRUnsupported("nir_forward: Conv2d with dilation or groups is not supported")
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    win = _windows(x, node.weight.shape[2:], _pair(node.stride))
    return np.einsum("bchwij,ocij->bohw", win, node.weight) + node.bias.reshape(1, -1, 1, 1)


def _pool(x, node, mean):
    if np.any(np.asarray(node.padding) != 0):
        raise NIRUnsupported("nir_forward: pooling with padding is not supported")
    win = _windows(x, _pair(node.kernel_size), _pair(node.stride))
    return win.mean(axis=(4, 5)) if mean else win.sum(axis=(4, 5))


def _flatten(x, node):
    dims = x.shape[1:]
    s, e = int(node.start_dim) % len(dims), int(node.end_dim) % len(dims)
    return x.reshape((x.shape[0],) + dims[:s] + (int(np.prod(dims[s:e + 1])),) + dims[e + 1:])


def nir_forward(src, x, *, dt=None) -> dict:
    """Simulate a NIR graph (path or ``nir.NIRGraph``) on time-major ``x`` (T, B, *input shape) with
    the forward-Euler steps of the module docstring. Returns ``"<node>.u"`` (membrane after
    integration, before reset) and ``"<node>.s"`` (spikes) for every LIF/IF node, ``"<node>.v"`` for
    LI nodes, and ``"output"`` (T, B, ...). dt: the graph's metadata ``dt``, else 1e-4."""
    nir = _nir()
    graph = _graph(src)
    if dt is None:
        dt = float((graph.metadata or {}).get("dt", 1e-4))
    order, preds, _ = _order(graph)
    x = np.asarray(x)
    T, B = x.shape[:2]
    state, rec = {}, {}
    for t in range(T):
        out = {}
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                out[name] = x[t]
                continue
            i = sum(out[p] for p in preds[name])
            if isinstance(node, nir.Output):
                y = i
            elif isinstance(node, nir.Conv2d):
                y = _conv2d(i, node)
            elif isinstance(node, nir.Affine):
                y = i @ node.weight.T + node.bias
            elif isinstance(node, nir.Linear):
                y = i @ node.weight.T
            elif isinstance(node, nir.Scale):
                y = i * node.scale
            elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
                y = _pool(i, node, isinstance(node, nir.AvgPool2d))
            elif isinstance(node, nir.Flatten):
                y = _flatten(i, node)
            elif isinstance(node, (nir.LIF, nir.IF, nir.LI)):
                v = state.get(name, np.zeros_like(i, dtype=np.result_type(i, np.float64)))
                if isinstance(node, nir.IF):
                    u = v + dt * node.r * i
                else:
                    u = v + (dt / node.tau) * (node.v_leak - v + node.r * i)
                if isinstance(node, nir.LI):
                    state[name] = y = u
                    rec.setdefault(f"{name}.v", []).append(u)
                else:
                    s = (u > node.v_threshold).astype(u.dtype)
                    if (node.metadata or {}).get("reset") == "subtract":
                        state[name] = u - node.v_threshold * s
                    else:
                        state[name] = u * (1 - s) + node.v_reset * s
                    rec.setdefault(f"{name}.u", []).append(u)
                    rec.setdefault(f"{name}.s", []).append(s)
                    y = s
            else:
                raise NIRUnsupported(f"nir_forward: node {name!r} of type {type(node).__name__} is not "
                                     f"supported")
            out[name] = y
        for name, node in graph.nodes.items():
            if isinstance(node, nir.Output):
                rec.setdefault("output", []).append(out[name])
    return {k: np.stack(v) for k, v in rec.items()}
