"""Fixed-point network: inference and the STOP learning step exactly as the exported C computes them.

``quantize(net)`` turns a float network into integer parameters (formats in formats.py; BN folded into
W and a per-channel bias); ``run`` performs one sequence on integer int64 arrays. Every operation below
is an integer product or sum followed by one ``rshift``/``rdiv`` (round half away from zero) and a
saturation, in the same order as export/templates/engine.c, so the two agree bit for bit.

Per layer l and step t (a spike is ONE_X = 2^x_frac at the next layer's input, 1 in I's units):

    x[t]   = pre(s^src[t])               avgpool: rdiv(Σ window, k²); maxpool: max; flatten
    I[t]   = sat(rshift(W ⊛ x[t], w_frac + x_frac - v_frac)) + bias      (w_frac: this layer's)
    U[t]   = sat(rshift(α·V[t-1], a_frac) + I[t])
    s[t]   = U[t] >= θ
    V[t]   = U[t] - θ·s[t]  (soft)   or   U[t]·(1 - s[t])  (hard)
    readout (non-spiking output layer): o[t] = I[t]

STOP (learned layers only; soft reset; traces first, from V[t-1], s[t-1]):

    w~[t]  = sat(rshift(α·w~[t-1], a_frac) + x[t])                    (x_frac; readout: w~ = x)
    th~[t] = sat(rshift(α·(th~[t-1] - ONE_V·s[t-1]), a_frac))          (v_frac)
    al~[t] = sat(rshift(α·al~[t-1], a_frac) + V[t-1])                  (v_frac)
    φ      = exp: exp_neg(-|U - θ|) | triangle: max(0, ONE_P - |U - θ|) | rectangle: ONE_P·1{2|U-θ| < ONE_V}
    g^L    = rdiv(to_e(softmax(o) - onehot), B)                         (softmax in p_frac, integer exp)
    δ^L    = g^L (readout)  or  rshift(g^L·φ, p_frac)
    g^l    = pre_backward(rshift(Wᵀ δ^{l+1}, w_frac))                   avgpool: rdiv(g, k²) to each input
    δ^l    = rshift(g^l·φ^l, p_frac)
    ΔW    += rshift(Σ_b δ ⊗ w~, e_frac + x_frac - g_frac)               per step, saturated to int32
    Δθ    += rshift(Σ_b Σ_shared δ·(th~ - ONE_V), e_frac + v_frac - g_frac)
    Δα    += rshift(rdiv(Σ_b Σ_j δ·al~, N), e_frac + v_frac - g_frac)   (alpha_reduce "sum": no rdiv)

Update after the batch (plain SGD; momentum and weight decay need buffers an MCU rarely spares):

    W  = sat_w(W - rshift(lr_w·ΔW, lr_frac + g_frac - w_frac))
    θ  = max(θ_min, θ - rshift(lr_θ·Δθ, lr_frac + g_frac - v_frac))
    α  = clip(α - rshift(lr_α·Δα, lr_frac + g_frac - a_frac), 0, ONE_A)

Online (``lrq`` given): the same update after every step with that step's ΔW, Δθ, Δα alone (each
saturated to int32, as a sum starting from 0 would be), layer by layer from the top, each layer's
update after its error has been sent down through its old W. No accumulators; with T = 1 it is the
batch update.

Supported: chains of conv/linear layers (one synapse each) with avgpool, maxpool, global pooling,
flatten and p = 0 dropout; spiking or membrane readout. Learning also needs: loss "ce" summed over
steps, the soft reset, surrogates exp, triangle or rectangle, no BN. Everything else is refused with
a message naming the setting.
"""
from dataclasses import dataclass

import numpy as np

from . import formats as nm
from ..config import ConfigError
from ..kernels.norm import bn_fold
from ..engine.network import theta_shape
from ..engine.synapse import BN_EPS

SURROGATES = ("exp", "triangle", "rectangle")


@dataclass
class QLayer:
    name: str
    shape: tuple          # neuron shape
    pre: tuple            # ((kind, in_shape, out_shape, k), ...)
    op: str               # 'linear' | 'conv'
    in_shape: tuple
    k: int
    stride: int
    pad: int
    spiking: bool
    theta_shape: tuple
    w_frac: int = 12      # this layer's weight format (numerics.weight_frac)

    @property
    def size(self):
        return int(np.prod(self.shape))


@dataclass
class QNet:
    """Integer parameters (int64 arrays holding values in their storage range) and the structure."""
    layers: list
    params: dict          # "<l>.weight" (w), "<l>.bias" (v), "<l>.theta" (v), "<l>.alpha" (a)
    fmt: nm.Formats
    input_shape: tuple
    n_classes: int
    reset: str
    surrogate: str
    theta_min: int
    alpha_reduce: str = "mean"


@dataclass
class QState:
    """What survives from one step to the next: V, s (per layer) and the STOP traces of learned layers."""
    v: list
    s: list
    w_tr: dict
    th_tr: dict
    al_tr: dict


# ---------------------------------------------------------------------------------------------
# conversion

def check_supported(net, learn=False, where="numerics.kind = 'fixed'"):
    """Refuse, with one line starting with ``where``, what the integer network (``learn``: its STOP
    step) cannot compute. The surrogate only matters when learning."""
    cfg = net.config
    if cfg["rule"]["name"] == "bpsta":
        raise ConfigError(f"{where}: a BPSTA network (ReLU input current, λ leak, voting readout) is not the "
                          f"LIF network that fixed point and the C export implement; evaluate it in float")
    prev = -1
    for layer in net.layers:
        if len(layer.synapses) != 1 or layer.synapses[0].op == "identity":
            raise ConfigError(f"{where}: layer {layer.name!r} has shortcuts; fixed point and the C export "
                              f"support chains of conv/linear layers (mlp, lenet5, vgg11)")
        syn = layer.synapses[0]
        if syn.src != prev:
            raise ConfigError(f"{where}: layer {layer.name!r} does not read the layer before it")
        for p in syn.pre:
            if p.kind == "dropout" and p.p > 0:
                raise ConfigError(f"{where}: dropout p = {p.p} in {layer.name!r}; fixed point has no "
                                  f"random masks, set model.dropout = 0")
            if p.kind == "gap" and p.in_shape[1] != p.in_shape[2]:
                raise ConfigError(f"{where}: global pooling of a non-square map in {layer.name!r}")
        if learn and syn.bn:
            raise ConfigError(f"{where}: training with BN ({layer.name!r}); BN is folded into W and a bias for "
                              f"inference only. Train without BN (model.bn = false) or in float")
        prev = layer.index
    if learn:
        if cfg["neuron"]["surrogate"] not in SURROGATES:
            raise ConfigError(f"{where}: learning with neuron.surrogate = {cfg['neuron']['surrogate']!r} needs "
                              f"floating point; use one of {', '.join(SURROGATES)}")
        if cfg["neuron"]["reset"] != "soft":
            raise ConfigError(f"{where}: STOP is defined with the soft reset; set neuron.reset = 'soft'")
        if cfg["loss"]["kind"] != "ce" or cfg["loss"]["reduce"] != "sum":
            raise ConfigError(f"{where}: on-device learning uses loss.kind = 'ce' with loss.reduce = 'sum'")


def folded_weights(net, layer):
    """(W, bias) of a layer's synapse in float64 with BN (eval mode) folded in; bias 0 without BN."""
    syn = layer.synapses[0]
    w = np.asarray(net.params[f"{syn.name}.weight"], np.float64)
    if not syn.bn:
        return w, np.zeros(syn.out_shape[0])
    p = {k: np.asarray(net.params[f"{syn.name}.bn.{k}"], np.float64)
         for k in ("gamma", "beta", "running_mean", "running_var")}
    return bn_fold(w, p["gamma"], p["beta"], p["running_mean"], p["running_var"], BN_EPS)


def quantize(net, fmt=None, where="numerics.kind = 'fixed'") -> QNet:
    """Integer parameters of ``net`` (BN in eval mode folded into W and a per-channel bias)."""
    fmt = fmt or nm.formats_from_config(net.config)
    check_supported(net, where=where)
    layers, params = [], {}
    one_a = 1 << fmt.a_frac
    for layer in net.layers:
        syn = layer.synapses[0]
        pre = tuple((p.kind, p.in_shape, p.out_shape, p.k) for p in syn.pre if p.kind != "dropout")
        w, bias = folded_weights(net, layer)
        wf = nm.weight_frac(fmt, w)
        layers.append(QLayer(layer.name, layer.shape, pre, syn.op, syn.in_shape, syn.k, syn.stride, syn.pad,
                             layer.spiking, theta_shape(layer), wf))
        lo, hi = fmt.w_range
        params[f"{layer.name}.weight"] = nm.quantize(w, wf, lo, hi)
        params[f"{layer.name}.bias"] = nm.quantize(bias, fmt.v_frac)
        if layer.spiking:
            params[f"{layer.name}.theta"] = np.maximum(nm.quantize(net.params[f"{layer.name}.theta"], fmt.v_frac), 1)
            params[f"{layer.name}.alpha"] = np.clip(nm.quantize(net.params[f"{layer.name}.alpha"], fmt.a_frac),
                                                    0, one_a)
    cfg = net.config
    return QNet(layers, params, fmt, tuple(net.input_shape), net.n_classes, cfg["neuron"]["reset"],
                cfg["neuron"]["surrogate"], max(1, int(nm.quantize(cfg["neuron"]["theta_min"], fmt.v_frac))),
                cfg["rule"]["alpha_reduce"])


def to_float(qnet, net):
    """Write the integer parameters back into ``net.params`` as floats (exact: q / 2^frac)."""
    f = qnet.fmt
    for ql in qnet.layers:
        if np.any(qnet.params[f"{ql.name}.bias"]):
            raise ConfigError(f"layer {ql.name!r} has a folded BN bias; a BN network cannot be written back")
        w = net.params[f"{ql.name}.weight"]
        w[...] = nm.dequantize(qnet.params[f"{ql.name}.weight"], ql.w_frac).astype(w.dtype)
        if ql.spiking:
            for key, frac in (("theta", f.v_frac), ("alpha", f.a_frac)):
                p = net.params[f"{ql.name}.{key}"]
                p[...] = nm.dequantize(qnet.params[f"{ql.name}.{key}"], frac).astype(p.dtype)


def quantize_input(qnet, x):
    """Float frames (T, B, *input_shape) -> int64 in Q(x_frac), saturated to int32."""
    return nm.quantize(x, qnet.fmt.x_frac)


# ---------------------------------------------------------------------------------------------
# one layer, one step (int64 arrays, batch first)

def _windows(a, k, stride):
    """(B, C, H, W) -> (B, C, Ho, Wo, k, k) view of k×k windows."""
    v = np.lib.stride_tricks.sliding_window_view(a, (k, k), axis=(2, 3))
    return v[:, :, ::stride, ::stride]


def pre_forward(pre, s):
    """Pooling/flatten (``QLayer.pre``) of the source's spike map ``s`` (already in x units)."""
    x = s
    for kind, in_shape, out_shape, k in pre:
        if kind in ("avgpool", "maxpool", "gap"):
            win = _windows(x, k, k)[:, :, :out_shape[1], :out_shape[2]]
            x = win.max(axis=(4, 5)) if kind == "maxpool" else nm.rdiv(win.sum(axis=(4, 5)), k * k)
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)
    return x


def pre_backward(ql, g, s):
    """Backward of the pre-ops: g at the layer input -> g at the source spikes ``s`` (x units)."""
    xs = [s]
    for kind, in_shape, out_shape, k in ql.pre[:-1]:
        xs.append(pre_forward(((kind, in_shape, out_shape, k),), xs[-1]))
    for (kind, in_shape, out_shape, k), x_in in zip(ql.pre[::-1], xs[::-1]):
        B = g.shape[0]
        if kind == "flatten":
            g = g.reshape((B,) + tuple(in_shape))
        else:
            C, H, W = in_shape
            Ho, Wo = out_shape[1], out_shape[2]
            up = np.zeros((B, C, H, W), np.int64)
            if kind == "maxpool":   # to the first maximum of each window (row-major), as the C code
                win = _windows(x_in, k, k)[:, :, :Ho, :Wo].reshape(B, C, Ho, Wo, k * k)
                idx = win.argmax(axis=4)
                bi, ci, yi, xi = np.indices((B, C, Ho, Wo))
                up[bi, ci, yi * k + idx // k, xi * k + idx % k] = g
            else:
                share = nm.rdiv(g, k * k)
                for dy in range(k):
                    for dx in range(k):
                        up[:, :, dy:Ho * k:k, dx:Wo * k:k] = share
            g = up
    return g


def _cols(ql, x):
    """im2col of x (B, C, H, W): (B, Ho, Wo, C·k·k) with zero padding."""
    p = ql.pad
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    win = _windows(xp, ql.k, ql.stride)[:, :, :ql.shape[1], :ql.shape[2]]   # (B, C, Ho, Wo, k, k)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(x.shape[0], ql.shape[1], ql.shape[2], -1)


EXACT = float(2 ** 53)   # float64 holds every integer below this exactly


def imatmul(a, b):
    """a @ b for int64 arrays, exact. Through float64 BLAS when no partial sum can reach 2^53 (then
    every product and sum is an exactly representable integer, so the result is identical), else in
    int64 (NumPy's integer loop). Both paths are tested equal."""
    if a.size and b.size:
        bound = float(np.abs(a).max()) * float(np.abs(b).max()) * a.shape[-1]
        if bound < EXACT:
            return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a @ b


def weight_forward(ql, w, x):
    """Σ W·x in int64 (w_frac + x_frac)."""
    if ql.op == "linear":
        return imatmul(x, w.T)
    cols = _cols(ql, x)                                       # (B, Ho, Wo, C·k·k)
    B, Ho, Wo, K = cols.shape
    out = imatmul(cols.reshape(-1, K), w.reshape(w.shape[0], -1).T)
    return out.reshape(B, Ho, Wo, -1).transpose(0, 3, 1, 2)


def weight_backward_input(ql, w, d):
    """Σ Wᵀ·δ in int64 (e_frac + w_frac), shaped as the layer input."""
    if ql.op == "linear":
        return imatmul(d, w)
    B = d.shape[0]
    C, H, W = ql.in_shape
    k, st, p = ql.k, ql.stride, ql.pad
    Co, Ho, Wo = ql.shape
    # col2im: every (ky, kx) tap of δ·W lands on the input positions it read
    dc = d.transpose(0, 2, 3, 1).reshape(-1, Co)
    taps = imatmul(dc, w.reshape(Co, -1)).reshape(B, Ho, Wo, C, k, k)
    gp = np.zeros((B, C, H + 2 * p, W + 2 * p), np.int64)
    for ky in range(k):
        for kx in range(k):
            gp[:, :, ky:ky + st * Ho:st, kx:kx + st * Wo:st] += taps[:, :, :, :, ky, kx].transpose(0, 3, 1, 2)
    return gp[:, :, p:p + H, p:p + W]


def weight_grad(ql, d, tr):
    """Σ_b δ ⊗ w~ in int64 (e_frac + x_frac), shaped as W."""
    if ql.op == "linear":
        return imatmul(np.ascontiguousarray(d.T), tr)
    cols = _cols(ql, tr)
    B, Ho, Wo, K = cols.shape
    Co = ql.shape[0]
    dc = d.transpose(1, 0, 2, 3).reshape(Co, -1)
    return imatmul(dc, cols.reshape(-1, K)).reshape(Co, ql.in_shape[0], ql.k, ql.k)


def phi(qnet, z):
    """Surrogate φ(z) in Q(p_frac) from z = U - θ in Q(v_frac)."""
    f = qnet.fmt
    az = np.abs(z)
    if qnet.surrogate == "exp":
        return nm.exp_neg(-az, f.v_frac, f.p_frac)
    if qnet.surrogate == "triangle":
        return np.maximum(0, (1 << f.p_frac) - nm.rshift(az, f.v_frac - f.p_frac))
    return np.where(2 * az < (1 << f.v_frac), 1 << f.p_frac, 0)


def softmax_grad(qnet, o, y):
    """∂E[t]/∂o = (softmax(o) - onehot)/B in Q(e_frac), o in Q(v_frac); integers only."""
    f = qnet.fmt
    B = o.shape[0]
    e = nm.exp_neg(o - o.max(axis=1, keepdims=True), f.v_frac, f.p_frac)
    p = nm.rdiv(e << f.p_frac, e.sum(axis=1, keepdims=True))
    p[np.arange(B), y] -= 1 << f.p_frac
    return nm.rdiv(nm.rshift(p, f.p_frac - f.e_frac), B)


def expand_theta(ql, theta):
    """θ broadcast to the layer shape (per neuron, per channel or per layer)."""
    if theta.shape == ql.shape:
        return theta
    if len(ql.shape) == 3 and theta.shape == (ql.shape[0],):
        return np.broadcast_to(theta.reshape(-1, 1, 1), ql.shape)
    return np.broadcast_to(theta.reshape((1,) * len(ql.shape)), ql.shape)


def reduce_theta(ql, g):
    """Sum a per-neuron (shape) gradient over the neurons that share a θ."""
    if ql.theta_shape == ql.shape:
        return g
    if len(ql.shape) == 3 and ql.theta_shape == (ql.shape[0],):
        return g.sum(axis=(1, 2))
    return g.sum().reshape(1)


# ---------------------------------------------------------------------------------------------
# sequences

def new_state(qnet, B, learned=()):
    z = lambda shape: np.zeros((B,) + tuple(shape), np.int64)  # noqa: E731
    st = QState([z(ql.shape) for ql in qnet.layers], [z(ql.shape) for ql in qnet.layers], {}, {}, {})
    for i in learned:
        ql = qnet.layers[i]
        st.w_tr[i] = z(ql.in_shape)
        st.th_tr[i] = z(ql.shape)
        st.al_tr[i] = z(ql.shape)
    return st


def zero_grads(qnet, learned):
    g = {}
    for i in learned:
        ql = qnet.layers[i]
        g[f"{ql.name}.weight"] = np.zeros_like(qnet.params[f"{ql.name}.weight"])
        if ql.spiking:
            g[f"{ql.name}.theta"] = np.zeros_like(qnet.params[f"{ql.name}.theta"])
            g[f"{ql.name}.alpha"] = np.zeros_like(qnet.params[f"{ql.name}.alpha"])
    return g


def learned_layers(qnet, last=0):
    """Indices of the last ``last`` layers (0, or the number of layers or more: all)."""
    n = len(qnet.layers)
    return tuple(range(n - last if 0 < last < n else 0, n))


def step(qnet, st, x_t, y=None, grads=None, learned=(), record=None, lrq=None):
    """One time step for the whole batch; with labels and ``grads`` also the STOP accumulation, or with
    labels and ``lrq`` (online) the update of this step applied at once (``grads`` unused).

    Returns the output o[t] (currents of a readout in Q(v_frac), or spikes 0/1)."""
    f, P = qnet.fmt, qnet.params
    one_x, one_v = 1 << f.x_frac, 1 << f.v_frac
    xs, phis = [], []
    src = x_t
    for i, ql in enumerate(qnet.layers):
        x = pre_forward(ql.pre, src)
        xs.append(x)
        w = P[f"{ql.name}.weight"]
        bias = P[f"{ql.name}.bias"]
        bshape = (1, -1) + (1,) * (len(ql.shape) - 1)
        cur = nm.sat(nm.sat(nm.rshift(weight_forward(ql, w, x), ql.w_frac + f.x_frac - f.v_frac)) + bias.reshape(bshape))
        if i in st.w_tr:   # STOP traces first (V, s still hold step t-1)
            a = int(P[f"{ql.name}.alpha"][0]) if ql.spiking else 0
            st.w_tr[i] = nm.sat(nm.rshift(a * st.w_tr[i], f.a_frac) + x)
            if ql.spiking:
                st.th_tr[i] = nm.sat(nm.rshift(a * (st.th_tr[i] - one_v * st.s[i]), f.a_frac))
                st.al_tr[i] = nm.sat(nm.rshift(a * st.al_tr[i], f.a_frac) + st.v[i])
        if ql.spiking:
            a = int(P[f"{ql.name}.alpha"][0])
            theta = expand_theta(ql, P[f"{ql.name}.theta"])[None]
            u = nm.sat(nm.rshift(a * st.v[i], f.a_frac) + cur)
            s = (u >= theta).astype(np.int64)
            v = nm.sat(u - theta * s) if qnet.reset == "soft" else u * (1 - s)
            phis.append(phi(qnet, u - theta) if y is not None and learned else None)
            st.v[i], st.s[i] = v, s
            src = s * one_x
            if record is not None:
                record.setdefault(f"{ql.name}.u", []).append(u)
                record.setdefault(f"{ql.name}.s", []).append(s)
                record.setdefault(f"{ql.name}.v", []).append(v)
        else:
            phis.append(None)
            st.v[i] = cur
            if record is not None:
                record.setdefault(f"{ql.name}.i", []).append(cur)
    out_layer = qnet.layers[-1]
    o = st.v[-1] if not out_layer.spiking else st.s[-1]
    if y is None or not learned:
        return o
    # spatial errors of step t, top-down, only through the learned layers
    o_v = o if not out_layer.spiking else o * one_v
    g = softmax_grad(qnet, o_v, y)
    lowest = min(learned)
    for i in range(len(qnet.layers) - 1, lowest - 1, -1):
        ql = qnet.layers[i]
        d = g if phis[i] is None else nm.sat(nm.rshift(g * phis[i], f.p_frac))
        name = ql.name
        inc = {f"{name}.weight": nm.rshift(weight_grad(ql, d, st.w_tr[i]), f.e_frac + f.x_frac - f.g_frac)}
        if ql.spiking:
            gth = reduce_theta(ql, (d * (st.th_tr[i] - one_v)).sum(axis=0))
            inc[f"{name}.theta"] = nm.rshift(gth, f.e_frac + f.v_frac - f.g_frac)
            gal = (d * st.al_tr[i]).sum()
            if qnet.alpha_reduce == "mean":
                gal = nm.rdiv(gal, ql.size)
            inc[f"{name}.alpha"] = nm.rshift(gal, f.e_frac + f.v_frac - f.g_frac).reshape(1)
        if record is not None:
            record.setdefault(f"{name}.delta", []).append(d)
        if i > lowest:   # sent down through the W of this step, before an online update changes it
            gx = nm.sat(nm.rshift(weight_backward_input(ql, P[f"{name}.weight"], d), ql.w_frac))
            g = pre_backward(ql, gx, st.s[i - 1] * one_x)
        for key, v in inc.items():
            if lrq is None:
                grads[key] = nm.sat(grads[key] + v)
            else:
                P[key] = _sgd(qnet, key, nm.sat(v), lrq)
    return o


def learning_rates(qnet, lr, theta_lr_scale=1.0, alpha_lr_scale=1.0):
    """(lr_w, lr_θ, lr_α) in Q(lr_frac), as passed to the C ``stopnp_apply``."""
    f = qnet.fmt.lr_frac
    return [int(nm.quantize(v, f)) for v in (lr, lr * theta_lr_scale, lr * alpha_lr_scale)]


def _sgd(qnet, name, g, lrq):
    """The parameter ``name`` after one SGD step with gradient ``g`` (Q(g_frac)) and integer rates
    ``lrq`` = (lr_w, lr_θ, lr_α): weights saturate, θ ≥ θ_min, 0 ≤ α ≤ 1."""
    f, P = qnet.fmt, qnet.params
    layer, kind = name.rsplit(".", 1)
    lr = dict(zip(("weight", "theta", "alpha"), lrq))[kind]
    frac = {"theta": f.v_frac, "alpha": f.a_frac}.get(kind)
    if kind == "weight":
        frac = next(ql.w_frac for ql in qnet.layers if ql.name == layer)
    new = P[name] - nm.rshift(lr * g, f.lr_frac + f.g_frac - frac)
    if kind == "weight":
        return nm.sat(new, *f.w_range)
    if kind == "theta":
        return np.maximum(nm.sat(new), qnet.theta_min)
    return np.clip(new, 0, 1 << f.a_frac)


def apply_q(qnet, grads, lrq):
    """Plain SGD on the integer parameters with integer rates ``lrq`` = (lr_w, lr_θ, lr_α); clamps
    θ ≥ θ_min and 0 ≤ α ≤ 1; zeroes ``grads``."""
    for name, g in grads.items():
        qnet.params[name] = _sgd(qnet, name, g, lrq)
        g[...] = 0


def apply(qnet, grads, lr, theta_lr_scale=1.0, alpha_lr_scale=1.0):
    """``apply_q`` with float learning rates (quantized to Q(lr_frac))."""
    lrq = learning_rates(qnet, lr, theta_lr_scale, alpha_lr_scale)
    apply_q(qnet, grads, lrq)
    return lrq


def run(qnet, xq, y=None, *, learn_last=0, record=None, lrq=None):
    """One sequence. xq: (T, B, *input) int64 in Q(x_frac). Returns (out_sum (B, C), grads or None, loss).

    With labels, the STOP accumulation for the learned layers (all, or the last ``learn_last``); with
    labels and integer rates ``lrq`` (``learning_rates``), online learning instead: every step updates
    the parameters (``grads`` is None). ``loss`` is Σ_t CE(softmax(o[t]), y) batch mean, computed in
    float64 for reporting only (NaN without labels).
    """
    T, B = xq.shape[:2]
    learned = learned_layers(qnet, learn_last) if y is not None else ()
    st = new_state(qnet, B, learned)
    grads = zero_grads(qnet, learned) if y is not None and lrq is None else None
    out = np.zeros((B,) + tuple(qnet.layers[-1].shape), np.int64)
    loss = 0.0 if y is not None else float("nan")
    readout = not qnet.layers[-1].spiking
    for t in range(T):
        o = step(qnet, st, xq[t], y, grads, learned, record, lrq)
        out += o
        if y is not None:
            of = nm.dequantize(o, qnet.fmt.v_frac) if readout else o.astype(np.float64)
            m = of.max(axis=1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(of - m).sum(axis=1))
            loss += float(np.mean(lse - of[np.arange(B), y]))
    return out, grads, loss


def check_training(cfg):
    """Refuse a fixed-point training config the integer STOP step cannot follow, naming the field."""
    if cfg["rule"]["name"] != "stop" or cfg["rule"]["online"]:
        raise ConfigError("numerics.kind = 'fixed' trains with STOP applied once per batch: set rule.name = "
                          "'stop' and rule.online = false")
    o = cfg["optim"]
    if o["kind"] != "sgd" or o["momentum"] != 0 or o["weight_decay"] != 0 or o["grad_clip"] != 0:
        raise ConfigError("numerics.kind = 'fixed' trains with plain SGD (what the MCU runs): set optim.kind = "
                          "'sgd', optim.momentum = 0, optim.weight_decay = 0, optim.grad_clip = 0")
    if cfg["run"]["dtype"] != "float32":
        raise ConfigError("numerics.kind = 'fixed': leave run.dtype = 'float32' (it only stores the parameters)")


def predict(qnet, x):
    """argmax of Σ_t o[t] for float frames x (T, B, ...) quantized to Q(x_frac)."""
    out, _, _ = run(qnet, quantize_input(qnet, x))
    return out.argmax(axis=1)


def accuracy(net, batches, qnet=None):
    """Fraction of correct predictions of the fixed-point network over (x, y) float batches."""
    qnet = qnet or quantize(net)
    correct = total = 0
    for x, y in batches:
        correct += int((predict(qnet, x) == y).sum())
        total += len(y)
    return correct / max(total, 1)
