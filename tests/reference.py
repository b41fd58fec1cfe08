"""Slow, independent NumPy references for the tests (no numba, no stopnp kernels or rules).

They read only the *structure* of a network (its layer records) and its parameter dict, and
recompute everything with plain NumPy in float64:

    forward(...)          the LIF network of docs/algorithms.md §1 (hard/soft reset, BN train/eval,
                          smooth spikes for finite differences), storing every step
    loss_of(...)          Σ_t CE(softmax(o[t]), y) (batch mean), or mean over t
    stop_identity(...)    §4 identity: δ sent down per step; own-layer error e[t] = δ[t] + α e[t+1]
                          computed backward in time; ΔW = Σ e ⊗ x, Δθ = Σ(-δ - α s e[t+1]), Δα = Σ e V[t-1]
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

EPS_BN = 1e-5


# --- surrogates -------------------------------------------------------------------------------
def phi(z, kind):
    if kind == "exp":
        return np.exp(-np.abs(z))
    if kind == "triangle":
        return np.maximum(0.0, 1.0 - np.abs(z))
    if kind == "sigmoid":
        sg = 1.0 / (1.0 + np.exp(-4.0 * z))
        return 4.0 * sg * (1.0 - sg)
    if kind == "atan":
        return 1.0 / (1.0 + (np.pi * z) ** 2)
    return (np.abs(z) < 0.5).astype(float)


def smooth(z, kind):
    if kind == "exp":
        return np.where(z < 0, np.exp(np.minimum(z, 0)), 2.0 - np.exp(-np.maximum(z, 0)))
    if kind == "triangle":
        return np.where(z < -1, 0.0, np.where(z < 0, 0.5 * (z + 1) ** 2,
                                              np.where(z < 1, 1 - 0.5 * (1 - z) ** 2, 1.0)))
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-4.0 * z))
    if kind == "atan":
        return np.arctan(np.pi * z) / np.pi + 0.5
    return np.clip(z + 0.5, 0.0, 1.0)


# --- ops ------------------------------------------------------------------------------------------
def conv(x, w, stride, pad):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("bchwij,ocij->bohw", win, w)


def conv_grad_w(gout, a, wshape, stride, pad):
    ap = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(ap, wshape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("bchwij,bohw->ocij", win, gout)


def conv_grad_x(gout, w, xshape, stride, pad):
    B, C, H, W = xshape
    gxp = np.zeros((B, C, H + 2 * pad, W + 2 * pad))
    K = w.shape[2]
    Ho, Wo = gout.shape[2:]
    for i in range(K):
        for j in range(K):
            gxp[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += np.einsum(
                "bohw,oc->bchw", gout, w[:, :, i, j])
    return gxp[:, :, pad:pad + H, pad:pad + W]


def pool_fwd(op, a):
    if op.kind == "flatten":
        return a.reshape(a.shape[0], -1), None
    if op.kind == "dropout":
        raise NotImplementedError
    B, C, H, W = a.shape
    kh, kw = op.window
    r = a[:, :, :H // kh * kh, :W // kw * kw].reshape(B, C, H // kh, kh, W // kw, kw)
    if op.kind in ("avgpool", "gap"):
        return r.mean(axis=(3, 5)), None
    out = r.max(axis=(3, 5))
    # ties (frequent with binary spikes) route the gradient to the first maximum, row-major
    win = r.transpose(0, 1, 2, 4, 3, 5).reshape(B, C, H // kh, W // kw, kh * kw)
    first = np.eye(kh * kw)[win.argmax(axis=-1)].reshape(B, C, H // kh, W // kw, kh, kw)
    mask = first.transpose(0, 1, 2, 4, 3, 5)
    return out, mask


def pool_bwd(op, grad, in_shape, mask):
    if op.kind == "flatten":
        return grad.reshape(grad.shape[0], *in_shape)
    if op.kind == "dropout":
        return grad * mask  # mask: the fixed per-sequence mask, already divided by (1 - p)
    B = grad.shape[0]
    C, H, W = in_shape
    kh, kw = op.window
    g = np.zeros((B, C, H, W))
    if op.kind in ("avgpool", "gap"):
        r = np.broadcast_to(grad[:, :, :, None, :, None] / (kh * kw), (B, C, H // kh, kh, W // kw, kw))
    else:
        r = grad[:, :, :, None, :, None] * mask
    g[:, :, :H // kh * kh, :W // kw * kw] = r.reshape(B, C, H // kh * kh, W // kw * kw)
    return g


def bn_fwd(z, gamma, beta, rm, rv, train):
    B, C = z.shape[:2]
    z3 = z.reshape(B, C, -1)
    if train:
        mean = z3.mean(axis=(0, 2))
        var = z3.var(axis=(0, 2))
    else:
        mean, var = rm, rv
    xhat = (z3 - mean[None, :, None]) / np.sqrt(var[None, :, None] + EPS_BN)
    y = gamma[None, :, None] * xhat + beta[None, :, None]
    return y.reshape(z.shape), (xhat, var)


def bn_bwd(gy, cache, gamma, train):
    xhat, var = cache
    B, C = gy.shape[:2]
    g3 = gy.reshape(B, C, -1)
    ggamma = (g3 * xhat).sum(axis=(0, 2))
    gbeta = g3.sum(axis=(0, 2))
    inv = 1.0 / np.sqrt(var + EPS_BN)
    gxhat = g3 * gamma[None, :, None]
    if train:
        n = g3.shape[0] * g3.shape[2]
        gx = inv[None, :, None] / n * (n * gxhat - gxhat.sum(axis=(0, 2), keepdims=True)
                                       - xhat * (gxhat * xhat).sum(axis=(0, 2), keepdims=True))
    else:
        gx = gxhat * inv[None, :, None]
    return gx.reshape(gy.shape), ggamma, gbeta


# --- network forward --------------------------------------------------------------------------------
def expand_theta(theta, shape, mode):
    if mode == "neuron":
        return theta.reshape(shape)
    if mode == "layer":
        return np.full(shape, theta.reshape(-1)[0])
    return np.broadcast_to(theta.reshape((-1,) + (1,) * (len(shape) - 1)), shape)


def forward(net, P, x, *, reset="soft", surrogate="exp", smooth_spikes=False, bn_train=True, masks=None,
            reset_spikes=None):
    """Store everything. Returns dict of per-step lists keyed by layer / synapse names.

    ``masks``: {synapse name: {pre-op index: (B, ...) mask}} for dropout, the same at every step.
    ``reset_spikes``: {layer name: per-step spikes} used in the reset term instead of this run's own
    (constants: the forward whose derivative is BPTT with the reset path detached)."""
    T, B = x.shape[:2]
    masks_of = masks or {}
    st = {"x": {}, "pre": {}, "z": {}, "bn": {}, "I": {}, "U": {}, "s": {}, "V": {}}
    for layer in net.layers:
        st["U"][layer.name], st["s"][layer.name], st["I"][layer.name] = [], [], []
        st["V"][layer.name] = [np.zeros((B, *layer.shape))]
        for syn in layer.synapses:
            st["x"][syn.name], st["pre"][syn.name], st["bn"][syn.name] = [], [], []
    for t in range(T):
        for layer in net.layers:
            I = np.zeros((B, *layer.shape))
            for syn in layer.synapses:
                a = x[t] if syn.src < 0 else st["s"][net.layers[syn.src].name][t]
                pre_masks = []
                for k, op in enumerate(syn.pre):
                    if op.kind == "dropout":
                        m = masks_of[syn.name][k]
                        a = a * m
                    else:
                        a, m = pool_fwd(op, a)
                    pre_masks.append(m)
                st["pre"][syn.name].append(pre_masks)
                st["x"][syn.name].append(a)
                if syn.op == "identity":
                    z = a
                elif syn.op == "linear":
                    z = a @ P[f"{syn.name}.weight"].T
                else:
                    z = conv(a, P[f"{syn.name}.weight"], syn.stride, syn.pad)
                if syn.bn:
                    p = f"{syn.name}.bn"
                    z, cache = bn_fwd(z, P[f"{p}.gamma"], P[f"{p}.beta"], P[f"{p}.running_mean"],
                                      P[f"{p}.running_var"], bn_train)
                    st["bn"][syn.name].append(cache)
                I = I + z
            st["I"][layer.name].append(I)
            if not layer.spiking:
                st["U"][layer.name].append(I)
                st["s"][layer.name].append(I)
                continue
            alpha = P[f"{layer.name}.alpha"].reshape(-1)[0]
            th = expand_theta(P[f"{layer.name}.theta"], layer.shape, layer.theta_mode)
            U = alpha * st["V"][layer.name][-1] + I
            z = U - th
            s = smooth(z, surrogate) if smooth_spikes else (z >= 0).astype(float)
            sr = s if reset_spikes is None else reset_spikes[layer.name][t]
            V = U * (1 - sr) if reset == "hard" else U - th * sr
            st["U"][layer.name].append(U)
            st["s"][layer.name].append(s)
            st["V"][layer.name].append(V)
    return st


def outputs(net, st):
    out = net.output
    return [o.reshape(o.shape[0], -1) for o in st["s"][out.name]]


def ce_grad(o, y):
    B = o.shape[0]
    m = o.max(axis=1, keepdims=True)
    p = np.exp(o - m)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(B), y]).mean()
    g = p.copy()
    g[np.arange(B), y] -= 1
    return loss, g / B


def loss_of(net, P, x, y, reduce="sum", kind="ce", mix=0.05, **kw):
    """docs/algorithms.md §2: Σ_t [c_ce·CE + c_mse·MSE](o[t]) (MSE: mean over batch and classes), /T for mean."""
    st = forward(net, P, x, **kw)
    T = x.shape[0]
    c_ce, c_mse = {"ce": (1.0, 0.0), "ce_mse": (1.0 - mix, mix), "mse": (0.0, 1.0)}[kind]
    total = 0.0
    for o in outputs(net, st):
        hot = np.eye(o.shape[1])[y]
        total += c_ce * ce_grad(o, y)[0] + c_mse * ((o - hot) ** 2).mean()
    return total / T if reduce == "mean" else total


# --- STOP identity (backward in time, δ sent down) ----------------------------------------------------
def syn_backward_x(net, syn, P, gz, st, t):
    """Gradient w.r.t. the source spikes of ``syn`` given the gradient on z (after BN)."""
    if syn.op == "identity":
        gx = gz
    elif syn.op == "linear":
        gx = gz @ P[f"{syn.name}.weight"]
    else:
        gx = conv_grad_x(gz, P[f"{syn.name}.weight"], (gz.shape[0], *syn.in_shape), syn.stride, syn.pad)
    masks = st["pre"][syn.name][t]
    for k in range(len(syn.pre) - 1, -1, -1):
        gx = pool_bwd(syn.pre[k], gx, syn.pre[k].in_shape, masks[k])
    return gx


def syn_backward(net, syn, P, d, a, st, t, grads, g, bn_train):
    """One synapse's backward at step t: BN (γ, β into ``grads``), ΔW += gz ⊗ a (``a``: the input or a
    trace), and the input gradient added to ``g`` of the source layer."""
    B = d.shape[0]
    gz = d
    if syn.bn:
        gz, ggam, gbet = bn_bwd(d, st["bn"][syn.name][t], P[f"{syn.name}.bn.gamma"], bn_train)
        grads[f"{syn.name}.bn.gamma"] += ggam
        grads[f"{syn.name}.bn.beta"] += gbet
    if syn.op == "linear":
        grads[f"{syn.name}.weight"] += gz.reshape(B, -1).T @ a.reshape(B, -1)
    elif syn.op == "conv":
        grads[f"{syn.name}.weight"] += conv_grad_w(gz, a, P[f"{syn.name}.weight"].shape, syn.stride, syn.pad)
    if syn.src >= 0:
        g[net.layers[syn.src].name] += syn_backward_x(net, syn, P, gz, st, t)


def stop_identity(net, P, x, y, *, surrogate="exp", bn_train=False, alpha_reduce="mean", masks=None):
    """Own-layer gradients with e = δ + α e[t+1], computed backward in time; only δ is sent down."""
    st = forward(net, P, x, surrogate=surrogate, bn_train=bn_train, masks=masks)
    T, B = x.shape[:2]
    outs = outputs(net, st)
    L = net.layers
    # spatial errors per step (only δ sent down)
    delta = {layer.name: [None] * T for layer in L}
    gz_of = {}  # (syn, t) -> BN-backward of δ (used for ΔW with a per-step, instantaneous BN)
    for t in range(T):
        g = {layer.name: np.zeros((B, *layer.shape)) for layer in L}
        g[net.output.name] = ce_grad(outs[t], y)[1].reshape(B, *net.output.shape)
        for layer in reversed(L):
            if layer.spiking:
                th = expand_theta(P[f"{layer.name}.theta"], layer.shape, layer.theta_mode)
                d = g[layer.name] * phi(st["U"][layer.name][t] - th, surrogate)
            else:
                d = g[layer.name]
            delta[layer.name][t] = d
            for syn in layer.synapses:
                gz = d
                if syn.bn:
                    gz = bn_bwd(d, st["bn"][syn.name][t], P[f"{syn.name}.bn.gamma"], bn_train)[0]
                gz_of[(syn.name, t)] = gz
                if syn.src >= 0:
                    g[L[syn.src].name] += syn_backward_x(net, syn, P, gz, st, t)
    grads = {}
    for layer in L:
        n = layer.name
        alpha = P[f"{n}.alpha"].reshape(-1)[0] if layer.spiking else 0.0
        e = [None] * (T + 1)
        e[T] = np.zeros((B, *layer.shape))
        for t in range(T - 1, -1, -1):
            e[t] = delta[n][t] + alpha * e[t + 1]
        for syn in layer.synapses:
            if syn.op == "identity":
                continue
            gw = 0.0
            for t in range(T):
                # frozen BN is linear per channel, so BN-backward commutes with the time sum
                ez = e[t]
                if syn.bn:
                    ez = bn_bwd(e[t], st["bn"][syn.name][t], P[f"{syn.name}.bn.gamma"], bn_train)[0]
                a = st["x"][syn.name][t]
                if syn.op == "linear":
                    gw = gw + ez.reshape(B, -1).T @ a.reshape(B, -1)
                else:
                    gw = gw + conv_grad_w(ez, a, P[f"{syn.name}.weight"].shape, syn.stride, syn.pad)
            grads[f"{syn.name}.weight"] = gw
        if not layer.spiking:
            continue
        gth = np.zeros(layer.shape)
        ga = np.zeros(layer.shape)
        for t in range(T):
            s = st["s"][n][t]
            gth += (-delta[n][t] - alpha * s * e[t + 1]).sum(axis=0)
            ga += (e[t] * st["V"][n][t]).sum(axis=0)  # st["V"][n][t] is V[t-1]
        if layer.theta_mode == "neuron":
            grads[f"{n}.theta"] = gth
        elif layer.theta_mode == "channel":
            grads[f"{n}.theta"] = gth.reshape(layer.shape[0], -1).sum(axis=1)
        else:
            grads[f"{n}.theta"] = np.array([gth.sum()])
        grads[f"{n}.alpha"] = np.array([ga.sum() if alpha_reduce == "sum" else ga.mean()])
    return grads, st


def spike_rates(net, st):
    return {layer.name: float(np.mean(st["s"][layer.name])) for layer in net.layers if layer.spiking}
