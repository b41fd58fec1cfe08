"""Per-step synaptic forward and backward shared by every rule, over a preallocated workspace.

For one step t and one layer l (network.py gives the records):

    x   = pre(s^src[t])                 pooling / flatten / dropout on the source spikes
    z   = W ⊛ x                         linear or conv (no bias); identity shortcut: z = x
    y   = BN(z)                         batch statistics of this step (train) or running ones (eval)
    I^l = Σ_synapses y

and backward, given the error e on I^l (δ for STOP/SLTT/OTTT, the full eU for BPTT) and the array
``a`` the weight gradient correlates with (STOP: the trace w~; BPTT: x[t]):

    ĝ    = BN-backward(e)               γ, β gradients accumulate here (instantaneous, per step)
    ΔW  += ĝ ⊗ a
    g^src[t] += pre-backward( Wᵀ ĝ )    only when the rule sends the error down

With kernels = "blas", a 3×3 stride-1 pad-1 conv with enough channels runs by Winograd F(2×2, 3×3)
(kernels/winograd.py), every other conv by im2col + GEMM (kernels/conv.py, event-driven on spikes).

The ``Workspace`` holds every buffer, allocated once per batch shape; arrays that backward needs
from the forward are ``(T_store, B, ...)`` with T_store = 1 for the online rules (memory independent
of T) and T for BPTT.
"""
import numpy as np
from numba import config

from ..kernels import conv as kconv
from ..kernels import elementwise as kel
from ..kernels import linear as klin
from ..kernels import lif as klif
from ..kernels import norm as knorm
from ..kernels import pool as kpool
from ..kernels import winograd as kwino
from ..config import ConfigError
from .threads import inner_blas_single

BN_EPS = 1e-5


def flat(a):
    """(B, ...) -> (B, M) view (no copy: every workspace array is C-contiguous)."""
    return a.reshape(a.shape[0], -1)


class Workspace:
    """Buffers for one (network, batch size, dtype, T_store). Plain arrays in dicts keyed by name."""

    def __init__(self, net, B, dtype, T_store=1, backend="blas", keep_vprev=False, traces=False,
                 trace_theta=True):
        self.B, self.dtype, self.T_store, self.backend = B, np.dtype(dtype), T_store, backend
        z = lambda *shape: np.zeros(shape, self.dtype)  # noqa: E731
        L = net.layers
        self._flat = None  # see flat_views
        self.i_in = [z(B, *l.shape) for l in L]
        self.u = [z(T_store, B, *l.shape) for l in L]
        self.s = [z(T_store, B, *l.shape) for l in L]
        self.v = [z(B, *l.shape) for l in L]
        self.v_prev = [z(T_store, B, *l.shape) if keep_vprev else None for l in L]
        self.g = [z(B, *l.shape) for l in L]
        self.e = [z(B, *l.shape) for l in L]
        self.theta = [None] * len(L)
        self.gtheta = [z(l.size) for l in L]
        self.galpha = [z(l.size) for l in L]
        # STOP traces (persistent across steps): th~, al~ per layer; w~ per weighted synapse
        self.th_trace = [z(B, *l.shape) if traces and trace_theta else None for l in L]
        self.al_trace = [z(B, *l.shape) if traces and trace_theta else None for l in L]
        self.w_trace, self.pre_out, self.argmax, self.mask, self.pre_grad = {}, {}, {}, {}, {}
        self.z, self.y, self.gz, self.gx, self.direct, self.gacc = {}, {}, {}, {}, {}, {}
        self.bn_cache, self.bn_mean, self.bn_invstd, self.bn_mean_sum, self.bn_var_sum = {}, {}, {}, {}, {}
        # synchronized BN (data-parallel training): bn_sum(a, weighted) sums per-channel arrays in place over
        # every share of the batch (weighted: each share's error scaled to the whole batch's loss); None:
        # this batch alone. The global sample count per channel is bn_count[synapse].
        self.bn_sum, self.bn_count = None, {}
        self.lin_gx, self.lin_gw, self.conv_gw, self.conv_cols, self.conv_wt = {}, {}, {}, {}, {}
        self.lin_gt = {}
        # the linear GEMMs run in numba's pool, in row parts fixed by the shape (kernels/linear.py): a
        # multi-threaded BLAS GEMM sums differently from a one-thread one (OpenBLAS picks other kernels),
        # so that the results never depend on the thread count
        self.linear_pool = backend == "blas"
        self.wino, wino_shapes = {}, {}
        self.wino_fresh = set()  # (name, direction) whose transformed filters hold this sequence's W
        cols_shapes = {}
        for layer in L:
            single = len(layer.synapses) == 1
            for syn in layer.synapses:
                n = syn.name
                self.pre_out[n], self.argmax[n], self.mask[n], self.pre_grad[n] = [], [], [], []
                for op in syn.pre:
                    keep = op.kind != "flatten"
                    self.pre_out[n].append(z(T_store, B, *op.out_shape) if keep else None)
                    self.argmax[n].append(np.zeros((T_store, B, *op.out_shape), np.int64)
                                          if op.kind == "maxpool" else None)
                    self.mask[n].append(z(B, *op.out_shape) if op.kind == "dropout" else None)
                    self.pre_grad[n].append(z(B, *op.in_shape))
                self.direct[n] = single and syn.op != "identity"
                out = syn.out_shape
                if syn.op != "identity":
                    self.z[n] = self.i_in[layer.index] if (self.direct[n] and not syn.bn) else z(B, *out)
                    if syn.src < 0:  # static input: Σ_t c_t·ĝ[t], correlated with x once per batch
                        self.gacc[n] = z(B, *out)
                    if syn.pre and syn.src >= 0:  # without pre-ops gx is g^src itself (synapse_backward)
                        self.gx[n] = z(B, *syn.in_shape)
                    if traces:
                        self.w_trace[n] = z(B, *syn.in_shape)
                if syn.bn:
                    c = out[0]
                    self.y[n] = self.i_in[layer.index] if self.direct[n] else z(B, *out)
                    self.bn_cache[n] = z(T_store, B, c, int(np.prod(out[1:])))
                    self.bn_mean[n], self.bn_invstd[n] = z(T_store, c), z(T_store, c)
                    self.bn_mean_sum[n], self.bn_var_sum[n] = z(c), z(c)
                    self.gz[n] = z(B, *out)
                if syn.op == "conv" and backend == "blas" and kwino.eligible(syn.in_shape, out[0], syn.k,
                                                                             syn.stride, syn.pad):
                    wino_shapes[n] = kwino.scratch_shapes(B, syn.in_shape[0], out[0], *syn.in_shape[1:],
                                                          config.NUMBA_NUM_THREADS)
                elif syn.op == "conv" and backend == "blas":
                    cshape, wshape = kconv.fast_scratch_shapes((B, *syn.in_shape), out[0], syn.k, syn.k,
                                                               syn.stride, syn.pad, self.dtype.itemsize)
                    self.conv_gw[n] = z(*wshape)
                    self.conv_wt[n] = z(wshape[1], wshape[2])  # W₂ᵀ for the event-driven forward
                    cols_shapes[n] = cshape
                elif syn.op == "linear" and backend == "blas":
                    self.lin_gx[n] = z(B, syn.in_shape[0])
                    self.lin_gw[n] = z(out[0], syn.in_shape[0])
                    self.lin_gt[n] = z(out[0], B)
        # one scratch shared by every conv (they run one at a time); each gets its view once, here
        size = max([int(np.prod(sh)) for sh in cols_shapes.values()] + [0])
        self.cols = np.zeros(size, self.dtype) if backend == "blas" else None
        for n, sh in cols_shapes.items():
            self.conv_cols[n] = self.cols[:int(np.prod(sh))].reshape(sh)
        # Winograd: the per-thread planes, the weight-gradient accumulators (overwritten by each call)
        # and the padded images shared the same way; the transformed filters (cached per sequence) and
        # their scratch are per conv
        shared_idx = (0, 1, 2, 3, 4)
        shared = [max([int(np.prod(w[i])) for w in wino_shapes.values()] + [0]) for i in shared_idx]
        self.wino_flat = [np.zeros(n, self.dtype) for n in shared]
        for n, sh in wino_shapes.items():
            v = [f[:int(np.prod(sh[i]))].reshape(sh[i]) for f, i in zip(self.wino_flat, shared_idx)]
            self.wino[n] = (*v, z(*sh[5]), z(*sh[6]), z(*sh[7]))
        self.nspk = np.zeros(B, np.int64)  # per-sample spike counts of one layer (``spike_count``)
        if backend == "blas":
            if self.conv_gw or self.wino or self.linear_pool:
                _need_scipy_blas()
            inner_blas_single()
        self.bn_steps = 0

    def flat_views(self):
        """Per layer, the (B, N) views of slot 0 that a one-slot rule (STOP) passes to its kernels every
        step: u, s, v, th~, al~, I, g, δ (None where absent), made once."""
        if self._flat is None:
            f = lambda a: None if a is None else flat(a)  # noqa: E731
            self._flat = [tuple(f(a) for a in (self.u[i][0], self.s[i][0], self.v[i], self.th_trace[i],
                                               self.al_trace[i], self.i_in[i], self.g[i], self.e[i]))
                          for i in range(len(self.u))]
        return self._flat

    def nbytes(self, persistent_only=False) -> int:
        """Bytes held by the workspace (``persistent_only``: state and traces carried across steps)."""
        seen, total = set(), 0
        groups = [self.v, self.s, self.th_trace, self.al_trace, list(self.w_trace.values())]
        if not persistent_only:
            groups += [self.i_in, self.u, self.v_prev, self.g, self.e, self.gtheta, self.galpha,
                       [a for v in self.pre_out.values() for a in v],
                       [a for v in self.argmax.values() for a in v],
                       [a for v in self.mask.values() for a in v],
                       [a for v in self.pre_grad.values() for a in v],
                       list(self.z.values()), list(self.y.values()), list(self.gz.values()),
                       list(self.gx.values()), list(self.bn_cache.values()), list(self.lin_gx.values()),
                       list(self.lin_gw.values()), list(self.lin_gt.values()), list(self.conv_gw.values()),
                       list(self.conv_wt.values()),
                       list(self.gacc.values()), [self.cols], self.wino_flat,
                       [a for v in self.wino.values() for a in v]]
        for group in groups:
            for a in group:
                if a is not None and id(a) not in seen:
                    seen.add(id(a))
                    total += a.nbytes
        return total

    def refresh_theta(self, net, params):
        """Per-neuron θ from ``params`` again, in place (online update: θ changed within the sequence)."""
        for layer in net.layers:
            if layer.spiking:
                klif.expand_theta_into(self.theta[layer.index], params[f"{layer.name}.theta"], layer.shape,
                                       layer.theta_mode)

    def weights_changed(self):
        """W may differ from the last call's (a new sequence, an online update): transform again."""
        self.wino_fresh.clear()

    def reset_sequence(self, net, params, rng=None, train=True):
        """Zero membranes, spikes and traces; draw one dropout mask per sequence (train only)."""
        self.weights_changed()
        for group in (self.v, self.s, self.th_trace, self.al_trace, list(self.w_trace.values())):
            for a in group:
                if a is not None:
                    a.fill(0)
        for layer in net.layers:
            if layer.spiking:
                self.theta[layer.index] = klif.expand_theta(
                    params[f"{layer.name}.theta"].astype(self.dtype, copy=False), layer.shape,
                    layer.theta_mode)
            for syn in layer.synapses:
                for op, m in zip(syn.pre, self.mask[syn.name]):
                    if m is None:
                        continue
                    if train and rng is not None:
                        keep = rng.random(m.shape) >= op.p
                        m[...] = keep / (1.0 - op.p)
                    else:
                        m.fill(1.0)

    def gtheta_zero(self):
        for a in self.gtheta + self.galpha:
            a.fill(0)

    def zero_grad_buffers(self):
        self.gtheta_zero()
        for n in self.bn_mean_sum:
            self.bn_mean_sum[n].fill(0)
            self.bn_var_sum[n].fill(0)
        self.bn_steps = 0


def _need_scipy_blas():
    """numba's ``np.dot`` (the conv GEMMs) calls SciPy's BLAS: say so before numba fails to compile."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        raise ConfigError("run.kernels = 'blas' needs SciPy for the conv GEMMs: pip install scipy, "
                          "or set run.kernels = 'loop'") from None


def spike_count(ws, s, binary=True) -> float:
    """Σ s over a (B, N) view: a count of the nonzeros for 0/1 spikes (vectorized, exact), else the sum
    (the smooth spikes of finite-difference checks, BPSTA's ANN mode)."""
    if not binary:
        return float(s.sum())
    return float(kel.count_nonzero(ws.nspk, s))


def gemm_macs(syn, B) -> int:
    """Multiply-adds of one NumPy BLAS call of this synapse at batch B: linear B·in·out (the whole
    batch); 0 for conv (its per-sample GEMMs run inside numba's parallel loop, ``kernels.conv``) and
    for an identity synapse."""
    if syn.op == "linear":
        return B * syn.in_shape[0] * syn.out_shape[0]
    return 0


def max_gemm_macs(net, B) -> int:
    """The largest single NumPy BLAS call of a step at batch B, for the thread policy (``threads.fit``)."""
    return max([gemm_macs(s, B) for layer in net.layers for s in layer.synapses] + [0])


def conv_macs(net, B) -> int:
    """Multiply-adds of one step's conv forward at batch B: GEMM work that runs in numba's pool."""
    return B * sum(int(np.prod(s.out_shape)) * s.in_shape[0] * s.k * s.k
                   for layer in net.layers for s in layer.synapses if s.op == "conv")


def linear_macs(net, B) -> int:
    """Multiply-adds of one step's linear forward at batch B: GEMM work that runs on NumPy's BLAS."""
    return sum(gemm_macs(s, B) for layer in net.layers for s in layer.synapses if s.op == "linear")


def thread_workload(net, B):
    """``threads.fit`` arguments for this network at batch B: (largest NumPy GEMM, conv MACs, linear MACs)."""
    return max_gemm_macs(net, B), conv_macs(net, B), linear_macs(net, B)


# ------------------------------------------------------------------------------------------------
# forward

def source(ws, syn, x_t, ti):
    return x_t if syn.src < 0 else ws.s[syn.src][ti]


def pre_forward(ws, syn, src, ti):
    """Apply the synapse's pre-ops to the source spikes at slot ``ti``; returns x (B, *in_shape)."""
    a = src
    for k, op in enumerate(syn.pre):
        if op.kind == "flatten":
            a = a.reshape(a.shape[0], -1)
            continue
        out = ws.pre_out[syn.name][k][ti]
        if op.kind == "avgpool" or op.kind == "gap":
            kpool.avgpool2d_forward(out, a, *op.window)
        elif op.kind == "maxpool":
            kpool.maxpool2d_forward(out, ws.argmax[syn.name][k][ti], a, *op.window)
        elif op.kind == "dropout":
            kel.mul_into(flat(out), flat(a), flat(ws.mask[syn.name][k]))
        a = out
    return a


def syn_input(ws, syn, x_t, ti):
    """x at slot ``ti`` without recomputing (the forward already filled the pre-op outputs)."""
    if not syn.pre:
        return source(ws, syn, x_t, ti)
    k = len(syn.pre) - 1
    if syn.pre[k].kind == "flatten":
        prev = source(ws, syn, x_t, ti) if k == 0 else ws.pre_out[syn.name][k - 1][ti]
        return prev.reshape(prev.shape[0], -1)
    return ws.pre_out[syn.name][k][ti]


def weight_forward(ws, params, syn, x):
    w = params[f"{syn.name}.weight"]
    z = ws.z[syn.name]
    if syn.op == "linear":
        if ws.linear_pool:
            klin.linear_forward_pool(z, x, w)
        else:
            klin.linear_forward_loop(z, x, w)
    elif syn.name in ws.wino:
        key = (syn.name, "forward")
        kwino.conv3x3_forward(z, x, w, ws.wino[syn.name], transformed=key in ws.wino_fresh)
        ws.wino_fresh.add(key)
    elif ws.backend == "blas":
        kconv.conv2d_forward_fast(z, x, w, syn.stride, syn.pad, ws.conv_cols[syn.name], ws.conv_wt[syn.name])
    else:
        kconv.conv2d_forward(z, x, w, syn.stride, syn.pad)
    return z


def bn_forward(ws, params, syn, z, ti, bn_train):
    n, p = syn.name, f"{syn.name}.bn"
    y, cache = ws.y[n], ws.bn_cache[n][ti]
    z3, y3 = z.reshape(ws.B, z.shape[1], -1), y.reshape(ws.B, z.shape[1], -1)
    gamma, beta = params[f"{p}.gamma"], params[f"{p}.beta"]
    if bn_train:
        mean, invstd = ws.bn_mean[n][ti], ws.bn_invstd[n][ti]
        if ws.bn_sum is None:
            knorm.bn_forward_train(y3, cache, mean, invstd, z3, gamma, beta, BN_EPS)
        else:
            _bn_forward_synced(ws, n, y3, cache, mean, invstd, z3, gamma, beta)
        ws.bn_mean_sum[n] += mean
        knorm.add_var_from_invstd(ws.bn_var_sum[n], invstd, BN_EPS)  # σ² = 1/invstd² - ε, no temporaries
    else:
        cache[...] = z3  # eval-mode backward needs the BN input
        knorm.bn_forward_eval(y3, z3, gamma, beta, params[f"{p}.running_mean"],
                              params[f"{p}.running_var"], BN_EPS)
    return y


def _bn_forward_synced(ws, n, y3, xhat, mean, invstd, x3, gamma, beta):
    """``bn_forward_train`` with the statistics of the whole batch, whose shares ``ws.bn_sum`` sums:
    μ = Σx / n, σ² = Σ(x - μ)² / n (two passes, as the kernel), n = Σ B·S over the shares."""
    dt = x3.dtype
    s1 = np.append(x3.sum(axis=(0, 2)), dt.type(x3.shape[0] * x3.shape[2]))
    ws.bn_sum(s1, False)
    count = s1[-1]
    ws.bn_count[n] = count
    mean[...] = s1[:-1] / count
    np.subtract(x3, mean[None, :, None], out=xhat)
    s2 = np.einsum("bcs,bcs->c", xhat, xhat)
    ws.bn_sum(s2, False)
    invstd[...] = dt.type(1) / np.sqrt(s2 / count + dt.type(BN_EPS))
    xhat *= invstd[None, :, None]
    np.multiply(xhat, gamma[None, :, None], out=y3)
    y3 += beta[None, :, None]


def _bn_backward_synced(ws, n, gx, ggamma, gbeta, gy, xhat, gamma, invstd):
    """``bn_backward_train`` through the whole batch's statistics: Σ gy and Σ gy·x̂ summed over the shares
    (each share's error weighted to the whole batch's loss); γ, β get this share's own sums (the
    gradient sum over the ranks adds the rest)."""
    sg, sgx = gy.sum(axis=(0, 2)), np.einsum("bcs,bcs->c", gy, xhat)
    ggamma += sgx
    gbeta += sg
    both = np.concatenate([sg, sgx])
    ws.bn_sum(both, True)
    C, count = len(sg), ws.bn_count[n]
    k = gamma * invstd / count
    gx += k[None, :, None] * (count * gy - both[:C][None, :, None] - xhat * both[C:][None, :, None])


def layer_current(ws, params, layer, x_t, ti, bn_train, static=False, first_step=True):
    """I^l[t] into ws.i_in[l] (and every synapse's x into its cache slot ``ti``).

    ``static``: the network input is the same at every step, so the input synapses' x and W ⊛ x are
    computed at the first step only (slot 0) and reused.
    """
    i_in = ws.i_in[layer.index]
    first = True
    for syn in layer.synapses:
        if static and syn.src < 0:
            if first_step:
                x = pre_forward(ws, syn, x_t, 0)
                c = x if syn.op == "identity" else weight_forward(ws, params, syn, x)
            else:
                c = syn_input(ws, syn, x_t, 0) if syn.op == "identity" else ws.z[syn.name]
        else:
            x = pre_forward(ws, syn, source(ws, syn, x_t, ti), ti)
            c = x if syn.op == "identity" else weight_forward(ws, params, syn, x)
        if syn.bn:
            c = bn_forward(ws, params, syn, c, ti, bn_train)
        if ws.direct[syn.name]:
            continue  # wrote straight into I
        if first:
            np.copyto(i_in, c.reshape(i_in.shape))
        else:
            kel.add_into(flat(i_in), flat(c))
        first = False
    return i_in


# ------------------------------------------------------------------------------------------------
# backward

def synapse_backward(ws, params, grads, syn, e, a, ti, send_down, bn_train, learn_w=True,
                     static_coef=None):
    """Error ``e`` on this synapse's contribution to I -> ΔW (against ``a``), BN grads, g^src.

    ``static_coef`` c: static input synapse; accumulate G += c·ĝ instead (see ``flush_static``).
    """
    n = syn.name
    gz = e
    if syn.bn:
        gz = ws.gz[n]
        gz.fill(0)
        p = f"{n}.bn"
        gz3, e3 = gz.reshape(ws.B, gz.shape[1], -1), e.reshape(ws.B, gz.shape[1], -1)
        gg, gb = grads.get(f"{p}.gamma"), grads.get(f"{p}.beta")
        if gg is None:  # BN parameters not learned: still need the input gradient
            gg, gb = np.zeros_like(params[f"{p}.gamma"]), np.zeros_like(params[f"{p}.beta"])
        if bn_train and ws.bn_sum is not None:
            _bn_backward_synced(ws, n, gz3, gg, gb, e3, ws.bn_cache[n][ti], params[f"{p}.gamma"],
                                ws.bn_invstd[n][ti])
        elif bn_train:
            knorm.bn_backward_train(gz3, gg, gb, e3, ws.bn_cache[n][ti], params[f"{p}.gamma"],
                                    ws.bn_invstd[n][ti])
        else:
            knorm.bn_backward_eval(gz3, gg, gb, e3, ws.bn_cache[n][ti], params[f"{p}.gamma"],
                                   params[f"{p}.running_mean"], params[f"{p}.running_var"], BN_EPS)
    if syn.op == "identity":
        gx = gz
    else:
        w = params[f"{n}.weight"]
        if learn_w and static_coef is not None:
            kel.axpy(flat(ws.gacc[n]), flat(gz), gz.dtype.type(static_coef))
        own_w = learn_w and static_coef is None
        # no pre-ops: the input gradient accumulates straight into g^src (its kernels all add)
        into_src = send_down and not syn.pre
        gx = (ws.g[syn.src] if into_src else ws.gx[n]) if send_down else None
        if send_down and not into_src:
            gx.fill(0)
        if n in ws.wino:
            if own_w or send_down:
                key = (n, "input")
                kwino.conv3x3_backward(gx, grads[f"{n}.weight"] if own_w else None, gz, w, a, ws.wino[n],
                                       transformed=key in ws.wino_fresh)
                if send_down:
                    ws.wino_fresh.add(key)
        elif syn.op == "conv" and ws.backend == "blas":  # one pass over the batch for both GEMMs
            if own_w or send_down:
                kconv.conv2d_backward_fast(gx, grads[f"{n}.weight"] if own_w else None, gz, w, a, syn.stride,
                                           syn.pad, ws.conv_cols[n], ws.conv_gw[n])
        else:
            if own_w:
                weight_grad(ws, grads, syn, gz, a)
            if send_down:
                input_grad(ws, syn, gx, gz, w)
        if into_src:
            return
    if send_down:
        pre_backward(ws, syn, gx, ti)


def input_grad(ws, syn, gx, gz, w):
    """gx += Wᵀ ĝ: linear (BLAS or loop) and the conv loop reference (the BLAS conv input gradient
    runs fused with ΔW in ``synapse_backward``)."""
    if syn.op == "linear" and ws.linear_pool:
        klin.linear_backward_input_pool(gx, gz, w, ws.lin_gx[syn.name])
    elif syn.op == "linear":
        klin.linear_backward_input_loop(gx, gz, w)
    else:
        kconv.conv2d_backward_input(gx, gz, w, syn.stride, syn.pad)


def weight_grad(ws, grads, syn, gz, a):
    """ΔW += ĝ ⊗ a with the workspace's backend."""
    gw = grads[f"{syn.name}.weight"]
    if syn.op == "linear":
        if ws.linear_pool:
            klin.linear_backward_weight_pool(gw, gz, a, ws.lin_gw[syn.name], ws.lin_gt[syn.name])
        else:
            klin.linear_backward_weight_loop(gw, gz, a)
    elif syn.name in ws.wino:
        kwino.conv3x3_backward(None, gw, gz, None, a, ws.wino[syn.name])
    elif ws.backend == "blas":
        kconv.conv2d_backward_weight_fast(gw, gz, a, syn.stride, syn.pad, ws.conv_cols[syn.name],
                                          ws.conv_gw[syn.name])
    else:
        kconv.conv2d_backward_weight(gw, gz, a, syn.stride, syn.pad)


def static_begin(ws):
    for g in ws.gacc.values():
        g.fill(0)


def flush_static(net, ws, grads, x0):
    """Static input: Σ_t ĝ[t] ⊗ (c_t·x) = (Σ_t c_t·ĝ[t]) ⊗ x, one correlation per batch."""
    for syn in (s for layer in net.layers for s in layer.synapses):
        if syn.src < 0 and syn.op != "identity" and f"{syn.name}.weight" in grads:
            a = syn_input(ws, syn, x0, 0)
            weight_grad(ws, grads, syn, ws.gacc[syn.name], a if syn.op == "conv" else flat(a))


def pre_backward(ws, syn, grad, ti):
    """Route ∂E/∂x back through the pre-ops into g^src (accumulating)."""
    target_src = ws.g[syn.src]
    for k in range(len(syn.pre) - 1, -1, -1):
        op = syn.pre[k]
        if op.kind == "flatten":
            grad = grad.reshape(grad.shape[0], *op.in_shape)
            continue
        tgt = target_src if k == 0 else ws.pre_grad[syn.name][k]
        if k != 0:
            tgt.fill(0)
        if op.kind == "avgpool" or op.kind == "gap":
            kpool.avgpool2d_backward(tgt, grad, *op.window)
        elif op.kind == "maxpool":
            kpool.maxpool2d_backward(tgt, grad, ws.argmax[syn.name][k][ti])
        elif op.kind == "dropout":
            kel.mul_add(flat(tgt), flat(grad), flat(ws.mask[syn.name][k]))
        grad = tgt
        if k == 0:
            return
    kel.add_into(flat(target_src), flat(grad))


def layer_grads_out(net, ws, grads, learn, alpha_reduce):
    """Reduce per-neuron θ/α accumulators into the named gradients (after the time loop)."""
    for layer in net.layers:
        if not layer.spiking:
            continue
        if "T" in learn:
            klif.add_reduced_theta_grad(grads[f"{layer.name}.theta"], ws.gtheta[layer.index], layer.shape,
                                        layer.theta_mode)
        if "L" in learn:
            ga = ws.galpha[layer.index]
            red = ga.sum() if alpha_reduce == "sum" else ga.sum() / ga.size
            grads[f"{layer.name}.alpha"] += red
