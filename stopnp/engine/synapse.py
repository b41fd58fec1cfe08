"""Synapse ops: one step of every synapse, forward and backward, with its kernels chosen once.

For one step t and one layer l (engine/network.py gives the records):

    x   = pre(s^src[t])                 pooling / flatten / dropout on the source spikes
    z   = W ⊛ x                         linear or conv (no bias); identity shortcut: z = x
    y   = BN(z)                         batch statistics of this step (train) or running ones (eval)
    I^l = Σ_synapses y

and backward, given the error δ on I^l (δ for STOP, SLTT and OTTT; the full eU for BPTT) and the array
w~ the weight gradient correlates it with (STOP: the trace w~[t]; SLTT, BPTT: x[t]; OTTT: â[t]):

    δ̂    = BN-backward(δ)               γ, β gradients accumulate here (instantaneous, per step)
    ΔW  += δ̂ ⊗ w~
    g^src[t] += pre-backward( Wᵀ δ̂ )    only when the rule sends the error down

Each synapse of a workspace is a ``SynapseOp``: its buffers (pre-op outputs per slot, z, y, BN cache,
δ̂) and its kernels, chosen once when the workspace is built (``choose_kernels``):

    linear-loop, conv-loop   the C-portable references (kernels = "loop")
    linear-pool              the linear GEMMs in numba's pool, in row parts fixed by the shape (a
                             multi-threaded BLAS GEMM would sum differently from a one-thread one)
    conv-gemm                im2col + GEMM in numba's pool, event-driven on sparse (spiking) input
    winograd                 F(2×2, 3×3) for 3×3 stride-1 pad-1 convs with enough channels

In data-parallel training BN can use the statistics of the whole batch (``BnSync``, run.sync_bn): the
per-channel sums Σx, Σ(x - μ)² forward and Σδ, Σδ·x̂ backward are summed over the shares.

Every kernel pair has the same interface: ``forward(z, x, W)`` and ``backward(gx, gW, δ, W, w~)``
(gx += Wᵀ δ when gx is given, gW += δ ⊗ w~ when gW is given).
"""
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
from numba import config

from ..kernels import conv as kconv
from ..kernels import elementwise as kel
from ..kernels import linear as klin
from ..kernels import norm as knorm
from ..kernels import pool as kpool
from ..kernels import winograd as kwino

BN_EPS = 1e-5


def flat(a):
    """(B, ...) -> (B, M) view (no copy: every workspace array is C-contiguous)."""
    return a.reshape(a.shape[0], -1)


def choose_kernels(syn, backend) -> str:
    """The kernels of synapse ``syn`` for ``backend`` ("blas" | "loop")."""
    if syn.op == "identity":
        return "identity"
    if backend == "loop":
        return f"{syn.op}-loop"
    if syn.op == "linear":
        return "linear-pool"
    return "winograd" if kwino.eligible(syn.in_shape, syn.out_shape[0], syn.k, syn.stride, syn.pad) else "conv-gemm"


class _Winograd:
    """The Winograd kernels of one conv over its scratch. The transformed filters are reused while W is
    unchanged: within a sequence, until an online update (``changed``)."""

    def __init__(self, scratch):
        self.scratch, self.fresh = scratch, set()

    def forward(self, z, x, w):
        kwino.conv3x3_forward(z, x, w, self.scratch, transformed="forward" in self.fresh)
        self.fresh.add("forward")

    def backward(self, gx, gw, delta, w, w_trace):
        kwino.conv3x3_backward(gx, gw, delta, w, w_trace, self.scratch, transformed="input" in self.fresh)
        if gx is not None:
            self.fresh.add("input")

    def changed(self):
        self.fresh.clear()


@dataclass
class BnSync:
    """Synchronized BN (data-parallel training): ``sum(a, weighted)`` sums per-channel arrays in place over
    every share of the batch (weighted: each share's error scaled to the whole batch's loss); None: this
    batch alone. ``count[synapse]``: the whole batch's samples per channel."""
    sum: Callable = None
    count: dict = field(default_factory=dict)


class SynapseOp:
    """One synapse (``syn``, a network.Synapse) over one workspace: its buffers and its kernels.

    ``kernels`` names the kernels (``choose_kernels``); ``shared``: the views of the scratch the
    convolutions share (built by the workspace).
    """

    def __init__(self, syn, layer, ws, kernels, shared):
        self.syn, self.kernels, self.weight, self.B = syn, kernels, f"{syn.name}.weight", ws.B
        self.bn_sync = ws.bn_sync
        z = lambda *shape: np.zeros(shape, ws.dtype)  # noqa: E731
        B, T_store = ws.B, ws.T_store
        self.src_s = ws.state.s[syn.src] if syn.src >= 0 else None   # where x comes from
        self.g_src = ws.scratch.g[syn.src] if syn.src >= 0 else None  # where the error goes down
        self.w_trace = ws.traces.w_trace.get(syn.name)                # STOP's w~ (online rules)
        self.static_sum = ws.sums.static.get(syn.name)
        self.bn_mean_sum, self.bn_var_sum = ws.sums.bn_mean.get(syn.name), ws.sums.bn_var.get(syn.name)
        # pre-ops: outputs per slot (flatten is a view), maxpool's argmax, dropout's mask (one per
        # sequence), and the gradient on each pre-op's input
        self.pre_out, self.argmax, self.mask, self.pre_grad = [], [], [], []
        for op in syn.pre:
            self.pre_out.append(z(T_store, B, *op.out_shape) if op.kind != "flatten" else None)
            self.argmax.append(np.zeros((T_store, B, *op.out_shape), np.int64) if op.kind == "maxpool" else None)
            self.mask.append(z(B, *op.out_shape) if op.kind == "dropout" else None)
            self.pre_grad.append(z(B, *op.in_shape))
        # a layer's only weighted synapse writes straight into I (W ⊛ x without BN, else BN(z))
        self.direct = len(layer.synapses) == 1 and syn.op != "identity"
        i_in, out = ws.state.i_in[layer.index], syn.out_shape
        self.z = self.y = self.gx = self.delta_hat = self.bn_cache = self.bn_mean = self.bn_invstd = None
        if syn.op != "identity":
            self.z = i_in if (self.direct and not syn.bn) else z(B, *out)
            if syn.pre and syn.src >= 0:  # without pre-ops the input gradient is g^src itself (backward)
                self.gx = z(B, *syn.in_shape)
        if syn.bn:
            c = out[0]
            self.y = i_in if self.direct else z(B, *out)
            self.bn_cache = z(T_store, B, c, int(np.prod(out[1:])))
            self.bn_mean, self.bn_invstd = z(T_store, c), z(T_store, c)
            self.delta_hat = z(B, *out)
        self.winograd, self.kernel_scratch = None, []
        self.kernel_forward = self.kernel_backward = None
        if kernels != "identity":
            self._bind(kernels, shared, z, ws.dtype)

    def _bind(self, kernels, shared, z, dtype):
        """forward(z, x, W) and backward(gx, gW, δ, W, w~) of these kernels, their scratch bound in."""
        syn, B = self.syn, self.B
        s, p = syn.stride, syn.pad
        if kernels == "linear-loop":
            self.kernel_forward, self.kernel_backward = klin.linear_forward_loop, klin.linear_backward_loop
        elif kernels == "linear-pool":
            self.kernel_scratch = [z(B, syn.in_shape[0]), z(syn.out_shape[0], syn.in_shape[0]),
                                   z(syn.out_shape[0], B)]
            self.kernel_forward = klin.linear_forward_pool
            self.kernel_backward = partial(klin.linear_backward_pool, gx_scratch=self.kernel_scratch[0],
                                           gw_scratch=self.kernel_scratch[1], delta_t=self.kernel_scratch[2])
        elif kernels == "conv-loop":
            self.kernel_forward = partial(kconv.conv2d_forward, stride=s, pad=p)
            self.kernel_backward = partial(kconv.conv2d_backward, stride=s, pad=p)
        elif kernels == "conv-gemm":
            _, wshape = kconv.fast_scratch_shapes((B, *syn.in_shape), syn.out_shape[0], syn.k, syn.k, s, p,
                                                  dtype.itemsize)
            cols = shared["cols"]
            self.kernel_scratch = [z(wshape[1], wshape[2]), z(*wshape)]  # W₂ᵀ (event-driven forward), ΔW groups
            self.kernel_forward = partial(kconv.conv2d_forward_fast, stride=s, pad=p, cols=cols,
                                          wt=self.kernel_scratch[0])
            self.kernel_backward = partial(kconv.conv2d_backward_fast, stride=s, pad=p, cols=cols,
                                           scratch=self.kernel_scratch[1])
        elif kernels == "winograd":
            sh = kwino.scratch_shapes(B, syn.in_shape[0], syn.out_shape[0], *syn.in_shape[1:],
                                      config.NUMBA_NUM_THREADS)
            self.kernel_scratch = [z(*sh[5]), z(*sh[6]), z(*sh[7])]  # this conv's transformed filters
            self.winograd = _Winograd((*shared["winograd"], *self.kernel_scratch))
            self.kernel_forward, self.kernel_backward = self.winograd.forward, self.winograd.backward
        else:
            raise ValueError(f"unknown kernels {kernels!r}")

    def arrays(self) -> list:
        """Every array this op holds (``Workspace.nbytes``)."""
        return [a for a in (*self.pre_out, *self.argmax, *self.mask, *self.pre_grad, self.z, self.y, self.gx,
                            self.delta_hat, self.bn_cache, self.bn_mean, self.bn_invstd, *self.kernel_scratch)
                if a is not None]

    def draw_masks(self, rng):
        """One dropout mask per sequence: keep with probability 1-p, scaled by 1/(1-p); all ones without
        ``rng`` (evaluation)."""
        for op, m in zip(self.syn.pre, self.mask):
            if m is None:
                continue
            if rng is not None:
                keep = rng.random(m.shape) >= op.p
                m[...] = keep / (1.0 - op.p)
            else:
                m.fill(1.0)

    def weights_changed(self):
        if self.winograd is not None:
            self.winograd.changed()

    # --- forward ------------------------------------------------------------------------------------

    def source(self, x_t, slot):
        return x_t if self.syn.src < 0 else self.src_s[slot]

    def pre_forward(self, a, slot):
        """The pre-ops on the source spikes ``a`` into slot ``slot``; returns x (B, *in_shape)."""
        for k, op in enumerate(self.syn.pre):
            if op.kind == "flatten":
                a = a.reshape(a.shape[0], -1)
                continue
            out = self.pre_out[k][slot]
            if op.kind == "avgpool" or op.kind == "gap":
                kpool.avgpool2d_forward(out, a, *op.window)
            elif op.kind == "maxpool":
                kpool.maxpool2d_forward(out, self.argmax[k][slot], a, *op.window)
            elif op.kind == "dropout":
                kel.mul_into(flat(out), flat(a), flat(self.mask[k]))
            a = out
        return a

    def input(self, x_t, slot):
        """x at slot ``slot`` without recomputing (the forward already filled the pre-op outputs)."""
        pre = self.syn.pre
        if not pre:
            return self.source(x_t, slot)
        k = len(pre) - 1
        if pre[k].kind == "flatten":
            prev = self.source(x_t, slot) if k == 0 else self.pre_out[k - 1][slot]
            return prev.reshape(prev.shape[0], -1)
        return self.pre_out[k][slot]

    def forward(self, params, x):
        """z = W ⊛ x."""
        self.kernel_forward(self.z, x, params[self.weight])
        return self.z

    def bn_forward(self, params, z, slot, bn_train):
        """y = BN(z): this step's batch statistics (summed for the running ones) or the running ones."""
        p = f"{self.syn.name}.bn"
        y, cache = self.y, self.bn_cache[slot]
        z3, y3 = z.reshape(self.B, z.shape[1], -1), y.reshape(self.B, z.shape[1], -1)
        gamma, beta = params[f"{p}.gamma"], params[f"{p}.beta"]
        if bn_train:
            mean, invstd = self.bn_mean[slot], self.bn_invstd[slot]
            if self.bn_sync.sum is None:
                knorm.bn_forward_train(y3, cache, mean, invstd, z3, gamma, beta, BN_EPS)
            else:
                _bn_forward_synced(self.bn_sync, self.syn.name, y3, cache, mean, invstd, z3, gamma, beta)
            self.bn_mean_sum += mean
            knorm.add_var_from_invstd(self.bn_var_sum, invstd, BN_EPS)  # σ² = 1/invstd² - ε, no temporaries
        else:
            cache[...] = z3  # eval-mode backward needs the BN input
            knorm.bn_forward_eval(y3, z3, gamma, beta, params[f"{p}.running_mean"], params[f"{p}.running_var"],
                                  BN_EPS)
        return y

    # --- backward -----------------------------------------------------------------------------------

    def backward(self, params, grads, delta, w_trace, slot, send_down, bn_train, static_coef=None):
        """δ on this synapse's share of I^l -> BN's γ, β gradients, ΔW += δ̂ ⊗ w~, and (``send_down``)
        g^src += pre-backward(Wᵀ δ̂).

        ``w_trace``: what ΔW correlates δ̂ with (STOP: w~[t]; SLTT, BPTT: x[t]; OTTT: â[t]).
        ``static_coef`` c: a static-input synapse sums c·δ̂ instead (GradSums.static, ``flush_static``).
        """
        syn = self.syn
        delta_hat = self.bn_backward(params, grads, delta, slot, bn_train) if syn.bn else delta
        if syn.op == "identity":
            gx = delta_hat
        else:
            if static_coef is not None:
                kel.axpy(flat(self.static_sum), flat(delta_hat), delta_hat.dtype.type(static_coef))
            gw = grads[self.weight] if static_coef is None else None
            into_src = send_down and not syn.pre  # no pre-ops: gx accumulates straight into g^src
            gx = (self.g_src if into_src else self.gx) if send_down else None
            if send_down and not into_src:
                gx.fill(0)
            if gx is not None or gw is not None:
                self.kernel_backward(gx, gw, delta_hat, params[self.weight], w_trace)
            if into_src:
                return
        if send_down:
            self.pre_backward(gx, slot)

    def bn_backward(self, params, grads, delta, slot, bn_train):
        """δ̂ = ∂E/∂z from δ = ∂E/∂y, into ``delta_hat``; γ, β gradients accumulate."""
        p = f"{self.syn.name}.bn"
        delta_hat = self.delta_hat
        delta_hat.fill(0)
        dh3, d3 = delta_hat.reshape(self.B, delta_hat.shape[1], -1), delta.reshape(self.B, delta_hat.shape[1], -1)
        gg, gb = grads.get(f"{p}.gamma"), grads.get(f"{p}.beta")
        if gg is None:  # BN parameters not learned: still need the input gradient
            gg, gb = np.zeros_like(params[f"{p}.gamma"]), np.zeros_like(params[f"{p}.beta"])
        if bn_train and self.bn_sync.sum is not None:
            _bn_backward_synced(self.bn_sync, self.syn.name, dh3, gg, gb, d3, self.bn_cache[slot],
                                params[f"{p}.gamma"], self.bn_invstd[slot])
        elif bn_train:
            knorm.bn_backward_train(dh3, gg, gb, d3, self.bn_cache[slot], params[f"{p}.gamma"], self.bn_invstd[slot])
        else:
            knorm.bn_backward_eval(dh3, gg, gb, d3, self.bn_cache[slot], params[f"{p}.gamma"],
                                   params[f"{p}.running_mean"], params[f"{p}.running_var"], BN_EPS)
        return delta_hat

    def pre_backward(self, grad, slot):
        """Route ∂E/∂x back through the pre-ops into g^src (accumulating)."""
        pre = self.syn.pre
        for k in range(len(pre) - 1, -1, -1):
            op = pre[k]
            if op.kind == "flatten":
                grad = grad.reshape(grad.shape[0], *op.in_shape)
                continue
            tgt = self.g_src if k == 0 else self.pre_grad[k]
            if k != 0:
                tgt.fill(0)
            if op.kind == "avgpool" or op.kind == "gap":
                kpool.avgpool2d_backward(tgt, grad, *op.window)
            elif op.kind == "maxpool":
                kpool.maxpool2d_backward(tgt, grad, self.argmax[k][slot])
            elif op.kind == "dropout":
                kel.mul_add(flat(tgt), flat(grad), flat(self.mask[k]))
            grad = tgt
            if k == 0:
                return
        kel.add_into(flat(self.g_src), flat(grad))

    def flush_static(self, grads, x0):
        """Static input: ΔW += Σ_t δ̂[t] ⊗ (c_t·x) = (Σ_t c_t·δ̂[t]) ⊗ x, one correlation per batch."""
        x = self.input(x0, 0)
        self.kernel_backward(None, grads[self.weight], self.static_sum, None,
                             x if self.syn.op == "conv" else flat(x))


def _bn_forward_synced(sync, n, y3, xhat, mean, invstd, x3, gamma, beta):
    """``bn_forward_train`` with the statistics of the whole batch, whose shares ``sync.sum`` sums:
    μ = Σx / n, σ² = Σ(x - μ)² / n (two passes, as the kernel), n = Σ B·S over the shares."""
    dt = x3.dtype
    s1 = np.append(x3.sum(axis=(0, 2)), dt.type(x3.shape[0] * x3.shape[2]))
    sync.sum(s1, False)
    count = s1[-1]
    sync.count[n] = count
    mean[...] = s1[:-1] / count
    np.subtract(x3, mean[None, :, None], out=xhat)
    s2 = np.einsum("bcs,bcs->c", xhat, xhat)
    sync.sum(s2, False)
    invstd[...] = dt.type(1) / np.sqrt(s2 / count + dt.type(BN_EPS))
    xhat *= invstd[None, :, None]
    np.multiply(xhat, gamma[None, :, None], out=y3)
    y3 += beta[None, :, None]


def _bn_backward_synced(sync, n, gx, ggamma, gbeta, gy, xhat, gamma, invstd):
    """``bn_backward_train`` through the whole batch's statistics: Σ gy and Σ gy·x̂ summed over the shares
    (each share's error weighted to the whole batch's loss); γ, β get this share's own sums (the
    gradient sum over the ranks adds the rest)."""
    sg, sgx = gy.sum(axis=(0, 2)), np.einsum("bcs,bcs->c", gy, xhat)
    ggamma += sgx
    gbeta += sg
    both = np.concatenate([sg, sgx])
    sync.sum(both, True)
    C, count = len(sg), sync.count[n]
    k = gamma * invstd / count
    gx += k[None, :, None] * (count * gy - both[:C][None, :, None] - xhat * both[C:][None, :, None])


def layer_current(ws, params, layer, x_t, slot, bn_train, static=False, first_step=True):
    """I^l[t] = Σ_synapses BN(W ⊛ pre(s^src[t])) into ``ws.state.i_in[l]`` (every synapse's x into its slot).

    ``static``: the network input is the same at every step, so the input synapses' x and W ⊛ x are
    computed at the first step only (slot 0) and reused.
    """
    i_in = ws.state.i_in[layer.index]
    first = True
    for syn in layer.synapses:
        op = ws.synapses[syn.name]
        if static and syn.src < 0:
            if first_step:
                x = op.pre_forward(x_t, 0)
                c = x if syn.op == "identity" else op.forward(params, x)
            else:
                c = op.input(x_t, 0) if syn.op == "identity" else op.z
        else:
            x = op.pre_forward(op.source(x_t, slot), slot)
            c = x if syn.op == "identity" else op.forward(params, x)
        if syn.bn:
            c = op.bn_forward(params, c, slot, bn_train)
        if op.direct:
            continue  # wrote straight into I
        if first:
            np.copyto(i_in, c.reshape(i_in.shape))
        else:
            kel.add_into(flat(i_in), flat(c))
        first = False
    return i_in


def flush_static(ws, grads, x0):
    """The input synapses' ΔW of a static input (``SynapseOp.flush_static``), after the time loop."""
    for op in ws.synapses.values():
        if op.syn.src < 0 and op.syn.op != "identity" and op.weight in grads:
            op.flush_static(grads, x0)
