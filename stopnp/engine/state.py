"""Run-state containers: every buffer one (network, batch size, dtype, T_store) needs, allocated once.

A rule runs its batches over a ``Workspace``, which groups its arrays by what they hold. Lists are
indexed by layer, dicts keyed by synapse name; arrays the backward reads from the forward have a
leading T_store axis (slot t): T_store = 1 for the online rules, whose memory is then independent of
T, and T for the stored ones (BPTT, BPSTA).

    State      the neurons' variables (docs/algorithms.md §1)
                 u        U^l[t]            (T_store, B, *shape)
                 s        s^l[t]            (T_store, B, *shape)   online: holds s[t-1] until the layer fires
                 v        V^l[t]            (B, *shape)
                 v_prev   V^l[t-1]          (T_store, B, *shape)   stored rules only, else None
                 i_in     I^l[t]            (B, *shape)
                 theta    θ^l per neuron    (N,)   expanded from the parameter once per sequence
    Traces     STOP's eligibility traces, carried from step to step (§4)
                 w_trace  w~[t]  = λ·w~[t-1] + x[t]          per weighted synapse, (B, *in_shape)  [Eq. 20]
                 th_trace th~[t] = α·(th~[t-1] - s[t-1])     per layer, (B, *shape)              [Eq. 26]
                 al_trace al~[t] = α·al~[t-1] + V[t-1]       per layer, (B, *shape)              [Eq. 30]
    GradSums   what a sequence sums before it becomes named gradients
                 dtheta   Σ_t Σ_b δ·(th~ - 1) per neuron, (N,)   [Eq. 24]  (BPTT: its own Δθ terms)
                 dalpha   Σ_t Σ_b δ·al~ per neuron, (N,)         [Eq. 27]  (BPTT: Σ eU·V[t-1])
                 static   Σ_t c_t·δ̂[t] per static-input synapse, then ΔW = static ⊗ x once per batch
                 bn_mean, bn_var, bn_steps   BN batch statistics summed over the steps
    Scratch    per-step buffers
                 g        ∂E[t]/∂s^l[t] arriving from above, (B, *shape)
                 delta    δ^l[t], the error on I^l[t], (B, *shape)   (BPTT: the full eU, carried from t+1)
                 nspk     spikes per sample of one layer, (B,)
    LayerView  one layer's (B, N) views of slot 0 (u, s, v, th_trace, al_trace, i_in, g, delta): what the
               online rules pass to the LIF kernels at every step, made once

and one ``engine.synapse.SynapseOp`` per synapse (``Workspace.synapses``): its pre-op, weight and BN
buffers and its kernels, chosen once here. ``bn_sync`` (``engine.synapse.BnSync``): synchronized BN
across the shares of a data-parallel batch (set by run/distributed.py; off by default).
"""
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
from numba import config

from ..config import ConfigError
from ..kernels import conv as kconv
from ..kernels import lif as klif
from ..kernels import winograd as kwino
from .synapse import BnSync, SynapseOp, choose_kernels, flat
from .threads import inner_blas_single


@dataclass
class State:
    u: list
    s: list
    v: list
    v_prev: list
    i_in: list
    theta: list


@dataclass
class Traces:
    w_trace: dict
    th_trace: list
    al_trace: list


@dataclass
class GradSums:
    dtheta: list
    dalpha: list
    static: dict
    bn_mean: dict
    bn_var: dict
    bn_steps: int = 0

    def zero(self):
        """A new sequence: nothing summed yet."""
        for group in (self.dtheta, self.dalpha, self.static.values(), self.bn_mean.values(), self.bn_var.values()):
            for a in group:
                a.fill(0)
        self.bn_steps = 0

    def zero_layer_sums(self):
        """After an online update: Δθ, Δα start again (W's and BN's go straight into the named gradients)."""
        for a in self.dtheta + self.dalpha:
            a.fill(0)

    def add_layer_grads(self, net, grads, learn, alpha_reduce, layers=None):
        """grads["<layer>.theta"] += Δθ summed over the neurons sharing a θ; grads["<layer>.alpha"] += Δα as the
        mean (or sum) over the layer's neurons; for every layer, or those in ``layers``."""
        for layer in net.layers if layers is None else layers:
            if not layer.spiking:
                continue
            if "T" in learn:
                klif.add_reduced_theta_grad(grads[f"{layer.name}.theta"], self.dtheta[layer.index], layer.shape,
                                            layer.theta_mode)
            if "L" in learn:
                ga = self.dalpha[layer.index]
                red = ga.sum() if alpha_reduce == "sum" else ga.sum() / ga.size
                grads[f"{layer.name}.alpha"] += red

    def bn_stats(self):
        """"<synapse>.bn" -> (mean, var): the batch statistics averaged over the sequence's steps."""
        steps = max(self.bn_steps, 1)
        return {f"{n}.bn": (self.bn_mean[n] / steps, self.bn_var[n] / steps) for n in self.bn_mean}


@dataclass
class Scratch:
    g: list
    delta: list
    nspk: np.ndarray


class LayerView(NamedTuple):
    u: np.ndarray
    s: np.ndarray
    v: np.ndarray
    th_trace: np.ndarray
    al_trace: np.ndarray
    i_in: np.ndarray
    g: np.ndarray
    delta: np.ndarray


class Workspace:
    """Buffers for one (network, batch size, dtype, T_store); see the module docstring.

    ``backend``: "blas" (the fast kernels) or "loop" (the C-portable references); ``keep_vprev``: store
    V[t-1] per step (the stored rules); ``traces``: allocate STOP's traces (the online rules).
    """

    def __init__(self, net, B, dtype, T_store=1, backend="blas", keep_vprev=False, traces=False):
        self.B, self.dtype, self.T_store, self.backend = B, np.dtype(dtype), T_store, backend
        z = lambda *shape: np.zeros(shape, self.dtype)  # noqa: E731
        L = net.layers
        self.state = State(u=[z(T_store, B, *l.shape) for l in L], s=[z(T_store, B, *l.shape) for l in L],
                           v=[z(B, *l.shape) for l in L],
                           v_prev=[z(T_store, B, *l.shape) if keep_vprev else None for l in L],
                           i_in=[z(B, *l.shape) for l in L], theta=[None] * len(L))
        self.traces = Traces(w_trace={}, th_trace=[z(B, *l.shape) if traces else None for l in L],
                             al_trace=[z(B, *l.shape) if traces else None for l in L])
        self.sums = GradSums(dtheta=[z(l.size) for l in L], dalpha=[z(l.size) for l in L], static={}, bn_mean={},
                             bn_var={})
        self.scratch = Scratch(g=[z(B, *l.shape) for l in L], delta=[z(B, *l.shape) for l in L],
                               nspk=np.zeros(B, np.int64))
        self.bn_sync = BnSync()
        kinds = {syn.name: choose_kernels(syn, backend) for syn in net.synapses()}
        for layer in L:
            for syn in layer.synapses:
                if syn.op != "identity":
                    if traces:
                        self.traces.w_trace[syn.name] = z(B, *syn.in_shape)
                    if syn.src < 0:  # static input: Σ_t c_t·δ̂[t], correlated with x once per batch
                        self.sums.static[syn.name] = z(B, *syn.out_shape)
                if syn.bn:
                    self.sums.bn_mean[syn.name], self.sums.bn_var[syn.name] = z(syn.out_shape[0]), z(syn.out_shape[0])
        shared = self._shared_scratch(kinds, net)
        self.synapses = {syn.name: SynapseOp(syn, layer, self, kinds[syn.name], shared.get(syn.name, {}))
                         for layer in L for syn in layer.synapses}
        f = lambda a: None if a is None else flat(a)  # noqa: E731
        st, tr, sc = self.state, self.traces, self.scratch
        self.views = [LayerView(*(f(a) for a in (st.u[i][0], st.s[i][0], st.v[i], tr.th_trace[i], tr.al_trace[i],
                                                 st.i_in[i], sc.g[i], sc.delta[i])))
                      for i in range(len(L))]
        if backend == "blas":
            if any(k in ("conv-gemm", "winograd", "linear-pool") for k in kinds.values()):
                _need_scipy_blas()
            inner_blas_single()

    def _shared_scratch(self, kinds, net):
        """The kernels' scratch that the convolutions share (they run one at a time: one lowered band, one
        set of Winograd planes and padded images), as per-conv views of one allocation each."""
        z = lambda *shape: np.zeros(shape, self.dtype)  # noqa: E731
        B, out = self.B, {}
        cols, wino = {}, {}
        for syn in net.synapses():
            if kinds[syn.name] == "conv-gemm":
                cols[syn.name], _ = kconv.fast_scratch_shapes((B, *syn.in_shape), syn.out_shape[0], syn.k, syn.k,
                                                              syn.stride, syn.pad, self.dtype.itemsize)
            elif kinds[syn.name] == "winograd":
                wino[syn.name] = kwino.scratch_shapes(B, syn.in_shape[0], syn.out_shape[0], *syn.in_shape[1:],
                                                      config.NUMBA_NUM_THREADS)
        self.cols = z(max([int(np.prod(s)) for s in cols.values()] + [0]))
        for n, sh in cols.items():
            out[n] = {"cols": self.cols[:int(np.prod(sh))].reshape(sh)}
        # Winograd: the per-thread planes, the weight-gradient accumulators (overwritten by each call) and
        # the padded images are shared; the transformed filters (kept for a sequence) are each conv's own
        shared_idx = (0, 1, 2, 3, 4)
        self.wino_flat = [z(max([int(np.prod(w[i])) for w in wino.values()] + [0])) for i in shared_idx]
        for n, sh in wino.items():
            out[n] = {"winograd": [f[:int(np.prod(sh[i]))].reshape(sh[i]) for f, i in zip(self.wino_flat, shared_idx)]}
        return out

    def nbytes(self, persistent_only=False) -> int:
        """Bytes held by the workspace (``persistent_only``: the state and traces carried across steps)."""
        arrays = [*self.state.v, *self.state.s, *self.traces.th_trace, *self.traces.al_trace,
                  *self.traces.w_trace.values()]
        if not persistent_only:
            for box in (self.state, self.sums, self.scratch):
                for f in fields(box):
                    value = getattr(box, f.name)
                    arrays += list(value.values()) if isinstance(value, dict) else (
                        value if isinstance(value, list) else [value])
            arrays += [self.cols, *self.wino_flat]
            for op in self.synapses.values():
                arrays += op.arrays()
        seen, total = set(), 0
        for a in arrays:
            if not isinstance(a, np.ndarray):
                continue
            while isinstance(a.base, np.ndarray):  # a view: count the allocation it belongs to, once
                a = a.base
            if id(a) not in seen:
                seen.add(id(a))
                total += a.nbytes
        return total

    def reset_sequence(self, net, params, rng=None, train=True):
        """A new sequence: zero membranes, spikes and traces; θ per neuron from ``params``; one dropout mask
        per sequence (drawn from ``rng`` in training, all ones otherwise)."""
        self.weights_changed()
        tr = self.traces
        for group in (self.state.v, self.state.s, tr.th_trace, tr.al_trace, list(tr.w_trace.values())):
            for a in group:
                if a is not None:
                    a.fill(0)
        for layer in net.layers:
            if layer.spiking:
                self.state.theta[layer.index] = klif.expand_theta(
                    params[f"{layer.name}.theta"].astype(self.dtype, copy=False), layer.shape, layer.theta_mode)
            for syn in layer.synapses:
                self.synapses[syn.name].draw_masks(rng if train else None)

    def refresh_theta(self, net, params):
        """Per-neuron θ from ``params`` again, in place (online update: θ changed within the sequence)."""
        for layer in net.layers:
            if layer.spiking:
                klif.expand_theta_into(self.state.theta[layer.index], params[f"{layer.name}.theta"], layer.shape,
                                       layer.theta_mode)

    def weights_changed(self):
        """W may differ from the last call's (a new sequence, an online update): kernels that keep a
        transformed W (Winograd) transform it again."""
        for op in self.synapses.values():
            op.weights_changed()


def _need_scipy_blas():
    """numba's ``np.dot`` (the conv GEMMs) calls SciPy's BLAS: say so before numba fails to compile."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        raise ConfigError("run.kernels = 'blas' needs SciPy for the conv GEMMs: pip install scipy, "
                          "or set run.kernels = 'loop'") from None
