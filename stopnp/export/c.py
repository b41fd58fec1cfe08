"""Export to self-contained C99: one header (stopnp.h) and one source file (stopnp.c).

The source holds the parameters as static arrays and the engine of templates/engine.c; all buffers are
static and sized at export (batch ``STOPNP_BATCH``), there is no malloc, and the fixed-point build uses
no floating point and no libm. Frozen parameters are ``const`` (flash); only learned layers have
parameters, traces and error buffers in RAM. API (see the generated header):

    void stopnp_init(void);                              state to zero
    void stopnp_reset(void);                             start of a sequence: V, s, traces to zero
    void stopnp_step(const sn_val *x, sn_val *out);      one time step: input frame -> output (B, n_out)
    void stopnp_learn_step(const sn_val *x, const int32_t *label, sn_val *out)    (--learn stop)
    void stopnp_apply(sn_lr lr_w, sn_lr lr_theta, sn_lr lr_alpha)    update after a sequence (batch)
    void stopnp_set_rates(sn_lr lr_w, sn_lr lr_theta, sn_lr lr_alpha)    --online: every step updates

Numbers: fixed point (``sn_val`` = int32 in the formats of fixed/formats.py, inputs in Q(x_frac)) or float32.
The output is the readout's current I[t] (Q(v_frac)) or the output spikes (0/1).

Memory (``footprint``): every array the source declares, by category (parameters, state, learning,
scratch) and by where it lives (const: flash; data: RAM with its initial values in flash; bss: RAM),
written to the header as STOPNP_BYTES_* (the layer table, n_layers small structs, comes on top).

Test vectors (``write_vectors``), little-endian, read by templates/harness.c:

    u32 magic 0x56504E53 ("SNPV"), u32 version = 2, u32 mode (bit 0 learn, bit 1 float, bit 2 online),
    u32 n_seq, T, B, n_layers, n_in, n_layers × u32 layer size
    per sequence: [learn: B × i32 label, 3 × val lr (weights, θ, α)]
                  per step: B·n_in × val x, B·n_out × val output,
                            per layer: B·size × val V, B·size × val s
                  [learn: per learned layer: n_w × val W, and for a LIF layer n_θ × val θ, 1 × val α]
    val = i32 (fixed) or f32 (float)
"""
import os
import struct
from dataclasses import dataclass

import numpy as np

from ..fixed import integer as fx
from ..fixed import formats as nm
from .._version import __version__
from ..config import ConfigError
from ..fsutil import atomic_write

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
MAGIC, VERSION = 0x56504E53, 2
SURROGATE_CODE = {"exp": 0, "triangle": 1, "rectangle": 2}
W_TYPES = {8: "int8_t", 16: "int16_t", 32: "int32_t"}
IN_INPUT, IN_DENSE, IN_EVENT = 0, 1, 2     # the layer reads: the network input; pooled values; spike counts


def _template(name):
    with open(os.path.join(TEMPLATES, name)) as f:
        return f.read()


def plan(qnet, numerics="fixed", events=True):
    """Per-layer C descriptors: sizes, pooling, how the layer reads its input (``in_kind``), the weight
    storage order and the dense multiply-accumulates per step and sample (``macs``). One pooling
    step per layer (pools of one element, as VGG's global pool of a 1×1 map, are dropped).
    ``events=False``: every layer gathers from its input values (the dense reference for benchmarks)."""
    rows = []
    src_shape = tuple(qnet.input_shape)
    one_x = 1 << qnet.fmt.x_frac
    for i, ql in enumerate(qnet.layers):
        pools = [p for p in ql.pre if p[0] != "flatten" and not (p[3] == 1 and tuple(p[1]) == tuple(p[2]))]
        if len(pools) > 1:
            raise ConfigError(f"export c: layer {ql.name!r} has {len(pools)} pooling steps before it "
                              f"({', '.join(p[0] for p in pools)}); the C engine supports one per layer "
                              f"(avgpool, maxpool or global)")
        pool, pk = 0, 1
        sc = src_shape if len(src_shape) == 3 else (int(np.prod(src_shape)), 1, 1)
        in3 = sc
        if pools:
            kind, in_shape, out_shape, k = pools[0]
            pool, pk = (2 if kind == "maxpool" else 1), k
            in3 = tuple(out_shape)
        out3 = ql.shape if len(ql.shape) == 3 else (ql.shape[0], 1, 1)
        n_in, n_out = int(np.prod(in3)), ql.size
        if i == 0:
            in_kind = IN_DENSE if pool else IN_INPUT
        elif not events or (pool == 1 and numerics == "fixed" and one_x % (pk * pk)):
            in_kind = IN_DENSE            # the average of spikes is not a whole number in Q(x_frac)
        else:
            in_kind = IN_EVENT
        if numerics == "fixed":
            x_scale = one_x // (pk * pk) if pool == 1 else one_x
        else:
            x_scale = 1.0 / (pk * pk) if pool == 1 else 1.0
        op = 0 if ql.op == "linear" else 1
        k, stride, pad = max(ql.k, 1), max(ql.stride, 1), ql.pad
        if op == 0:
            macs = n_in * n_out
            w_os, w_is = (1, n_out) if in_kind == IN_EVENT else (n_in, 1)   # event: columns contiguous
        else:
            ty = sum(1 for y in range(out3[1]) for ky in range(k) if 0 <= y * stride + ky - pad < in3[1])
            tx = sum(1 for x in range(out3[2]) for kx in range(k) if 0 <= x * stride + kx - pad < in3[2])
            macs = out3[0] * in3[0] * ty * tx
            w_os = w_is = 0
        n_theta = int(np.prod(ql.theta_shape)) if ql.spiking else 1
        rows.append(dict(op=op, spiking=int(ql.spiking), in_kind=in_kind, pool=pool, pk=pk,
                         sc=sc[0], sh=sc[1], sw=sc[2], ic=in3[0], ih=in3[1], iw=in3[2], n_in=n_in,
                         oc=out3[0], oh=out3[1], ow=out3[2], n_out=n_out, k=k, stride=stride, pad=pad,
                         n_theta=n_theta, th_span=n_out // n_theta if ql.spiking else 1,
                         n_w=int(qnet.params[f"{ql.name}.weight"].size), w_frac=ql.w_frac, w_os=w_os, w_is=w_is,
                         x_scale=x_scale, macs=macs, chunk=n_out if op == 0 else out3[1] * out3[2],
                         taps=n_in if op == 0 else in3[0] * k * k, max_n=pk * pk if pool == 1 else 1))
        src_shape = ql.shape
    return rows


@dataclass
class CArray:
    """One static array of the generated source."""
    name: str
    ctype: str
    count: int
    category: str        # params | state | learn | scratch
    storage: str         # const (flash) | data (RAM, initial values in flash) | bss (RAM, zeroed)
    values: object = None

    def nbytes(self, sizes):
        return self.count * sizes[self.ctype]


def type_sizes(fmt, numerics):
    fixed = numerics == "fixed"
    return {"sn_val": 4, "sn_w": fmt.w_bits // 8 if fixed else 4, "sn_grad": 4, "sn_acc": 8 if fixed else 4,
            "uint8_t": 1}


def event_acc_wide(rows, fmt, numerics):
    """True when a spike-count sum Σ n_i·W might leave int32 (then the event path sums in int64)."""
    if numerics != "fixed":
        return False
    w_max = 1 << (fmt.w_bits - 1)
    return any(r["taps"] * r["max_n"] * w_max >= 1 << 31 for r in rows if r["in_kind"] == IN_EVENT)


def arrays(qnet, rows, P, *, batch, learn_from, online, numerics):
    """Every static array of the generated source (``CArray``), in declaration order."""
    B, n = batch, len(rows)
    learn = learn_from < n
    out = []
    for i, (ql, r) in enumerate(zip(qnet.layers, rows)):
        learned = learn and i >= learn_from
        mut = "data" if learned else "const"
        w = np.asarray(P[f"{ql.name}.weight"])
        if r["op"] == 0 and r["w_os"] == 1:
            w = w.reshape(r["n_out"], r["n_in"]).T         # input-major for the event path
        out.append(CArray(f"sn_w{i}", "sn_w", r["n_w"], "params", mut, w))
        bias = np.asarray(P[f"{ql.name}.bias"])
        if np.any(bias != 0):
            out.append(CArray(f"sn_b{i}", "sn_val", r["oc"], "params", "const", bias))
        if r["spiking"]:
            out.append(CArray(f"sn_th{i}", "sn_val", r["n_theta"], "params", mut, P[f"{ql.name}.theta"]))
            out.append(CArray(f"sn_a{i}", "sn_val", 1, "params", mut, P[f"{ql.name}.alpha"]))
    for i, r in enumerate(rows):
        out.append(CArray(f"sn_v{i}", "sn_val", B * r["n_out"], "state", "bss"))
        out.append(CArray(f"sn_s{i}", "uint8_t", (B * r["n_out"] + 7) // 8 + 1, "state", "bss"))   # + a spare byte
    if learn:
        for i in range(learn_from, n):
            r = rows[i]
            out.append(CArray(f"sn_wtr{i}", "sn_val", B * r["n_in"], "learn", "bss"))
            if r["spiking"]:
                out.append(CArray(f"sn_thtr{i}", "sn_val", B * r["n_out"], "learn", "bss"))
                out.append(CArray(f"sn_altr{i}", "sn_val", B * r["n_out"], "learn", "bss"))
            if not online:
                out.append(CArray(f"sn_gw{i}", "sn_grad", r["n_w"], "learn", "bss"))
                if r["spiking"]:
                    out.append(CArray(f"sn_gth{i}", "sn_grad", r["n_theta"], "learn", "bss"))
                    out.append(CArray(f"sn_gal{i}", "sn_grad", 1, "learn", "bss"))
        out.append(CArray("sn_g", "sn_val", B * rows[-1]["n_out"], "learn", "bss"))
        out.append(CArray("sn_exp", "sn_acc", rows[-1]["n_out"], "learn", "bss"))
    sx, sc, s64 = _scratch(rows, qnet.fmt, batch=B, learn_from=learn_from, numerics=numerics)
    out.append(CArray("sn_sx", "sn_val", max(1, sx["total"]), "scratch", "bss"))
    out.append(CArray("sn_sc", "uint8_t", max(1, sc), "scratch", "bss"))
    if s64:
        out.append(CArray("sn_s64", "sn_acc", s64, "scratch", "bss"))
    return out


def _scratch(rows, fmt, *, batch, learn_from, numerics):
    """Sizes of the shared temporaries: sn_sx (sn_val: pooled inputs, event sums, then δ and Wᵀδ),
    sn_sc (uint8 spike counts), sn_s64 (sn_acc: a conv layer's weight-gradient sums, wide event sums)."""
    wide = event_acc_wide(rows, fmt, numerics)
    # forward: [pooled input x (in_kind 1)] + currents: a linear layer's outputs, a gathered conv's
    # output row, or an event layer's sums (a linear layer's, one conv channel's) turned into currents
    def fwd_need(r):
        x = r["n_in"] if r["in_kind"] == IN_DENSE else 0
        return x + (r["ow"] if r["op"] == 1 and r["in_kind"] != IN_EVENT else r["chunk"])
    fwd = max(fwd_need(r) for r in rows)
    ev = [r["chunk"] for r in rows if r["in_kind"] == IN_EVENT]
    sc = max([r["n_in"] for r in rows if r["in_kind"] == IN_EVENT] + [0])
    s64 = max(ev) if wide and ev else 0
    d = gx = 0
    if learn_from < len(rows):
        upper = rows[learn_from + 1:]
        d = batch * max([r["n_out"] for r in upper] + [0])
        gx = batch * max([r["n_in"] for r in upper] + [0])
        s64 = max([s64, 1] + [r["ic"] * r["k"] * r["k"] for r in rows[learn_from:] if r["op"] == 1])
    return {"total": max(fwd, d + gx), "d_offset": 0, "gx_offset": d}, sc, s64


def footprint(arrs, sizes):
    """Bytes of the generated arrays by category and by storage (see the module docstring)."""
    fp = {k: 0 for k in ("params", "state", "learn", "scratch", "const", "data", "bss")}
    for a in arrs:
        fp[a.category] += a.nbytes(sizes)
        fp[a.storage] += a.nbytes(sizes)
    fp["total"] = fp["params"] + fp["state"] + fp["learn"] + fp["scratch"]
    fp["flash"] = fp["const"] + fp["data"]
    fp["ram"] = fp["data"] + fp["bss"]
    return fp


def _cfloat(a):
    """A float32 C literal."""
    if not np.isfinite(a):
        return "0.0f"
    s = f"{float(a):.9g}"
    return s + ("f" if ("." in s or "e" in s) else ".0f")


def _fmt_array(values, numerics, per_line=12):
    v = np.asarray(values).ravel()
    if numerics == "fixed":
        items = [str(int(a)) for a in v]
    else:
        items = [_cfloat(a) for a in v.astype(np.float32)]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "{\n    " + ",\n    ".join(lines) + "\n}"


def float_params(net):
    """Float parameters with BN folded (the float build's numbers), keyed like QNet.params."""
    out = {}
    for layer in net.layers:
        out[f"{layer.name}.weight"], out[f"{layer.name}.bias"] = fx.folded_weights(net, layer)
        if layer.spiking:
            out[f"{layer.name}.theta"] = np.asarray(net.params[f"{layer.name}.theta"], np.float64)
            out[f"{layer.name}.alpha"] = np.asarray(net.params[f"{layer.name}.alpha"], np.float64)
    return out


def check_options(net, *, numerics="fixed", learn=None, learn_last=0, batch=1, online=False):
    """Refuse export options that cannot work, before anything is computed or written."""
    if numerics not in ("fixed", "float"):
        raise ConfigError(f"export c: numerics {numerics!r}; valid: fixed, float")
    if learn not in (None, "stop"):
        raise ConfigError(f"export c: --learn {learn!r}; the on-device rule is 'stop'")
    if batch < 1:
        raise ConfigError("export c: --batch must be >= 1")
    n = len(net.layers)
    if learn_last and not learn:
        raise ConfigError(f"export c: --learn-last {learn_last} chooses the layers that learn; add --learn stop")
    if online and not learn:
        raise ConfigError("export c: --online is a way of learning; add --learn stop")
    if not 0 <= learn_last <= n:
        raise ConfigError(f"export c: --learn-last {learn_last}: the network has {n} layers; use 1..{n} "
                          f"(or 0 for all)")
    fx.check_supported(net, learn=bool(learn), where="export c")


def generate(net, *, numerics="fixed", learn=None, learn_last=0, batch=1, online=False, fmt=None, source="",
             events=True):
    """(header text, source text, info) for ``net``. ``learn='stop'`` adds the STOP learning step for the
    last ``learn_last`` layers (0 = all), updating after every step with ``online``. ``events=False``
    gathers every layer densely (a reference for benchmarks; the results are the same)."""
    check_options(net, numerics=numerics, learn=learn, learn_last=learn_last, batch=batch, online=online)
    qnet = fx.quantize(net, fmt, where="export c")
    f = qnet.fmt
    rows = plan(qnet, numerics, events)
    n = len(rows)
    learn_from = fx.learned_layers(qnet, learn_last)[0] if learn else n
    P = qnet.params if numerics == "fixed" else float_params(net)
    sizes = type_sizes(f, numerics)
    arrs = arrays(qnet, rows, P, batch=batch, learn_from=learn_from, online=online, numerics=numerics)
    fp = footprint(arrs, sizes)
    sx = _scratch(rows, f, batch=batch, learn_from=learn_from, numerics=numerics)[0]
    wide = event_acc_wide(rows, f, numerics)
    needs_rdiv64 = numerics == "fixed" and (rows[0]["pool"] == 1 or (
        bool(learn) and (qnet.alpha_reduce == "mean" or f.p_frac > 15)))
    info = {"layers": n, "footprint": fp, "formats": f.as_dict(), "numerics": numerics, "learn": bool(learn),
            "learn_from": learn_from, "online": bool(online and learn), "batch": batch,
            "n_in": rows[0]["sc"] * rows[0]["sh"] * rows[0]["sw"], "n_out": rows[-1]["n_out"],
            "macs": [r["macs"] for r in rows], "in_kind": [r["in_kind"] for r in rows],
            "arrays": {a.name: (a.category, a.storage, a.nbytes(sizes)) for a in arrs}}
    wtype = W_TYPES[f.w_bits]
    lo, hi = f.w_range
    theta_min = qnet.theta_min if numerics == "fixed" else _cfloat(net.config["neuron"]["theta_min"])
    layer_sizes = ", ".join(str(r["n_out"]) for r in rows)
    names = ", ".join(ql.name for ql in qnet.layers)
    how = ("inference only" if not learn else
           f"on-device STOP learning for layers {learn_from}..{n - 1}, "
           + ("updated after every step (online)" if online else "updated by stopnp_apply after a sequence"))
    hdr = f"""/* stopnp.h: generated by stopnp {__version__}{' from ' + source if source else ''}.
 * Network: {net.config['model']['name']} ({names}); {'fixed point' if numerics == 'fixed' else 'float32'};
 * {how}.
 * Memory (bytes): parameters {fp['params']}, state {fp['state']}, learning {fp['learn']}, scratch {fp['scratch']};
 * flash {fp['flash']} (const {fp['const']} + initial values {fp['data']}),
 * RAM {fp['ram']} (data {fp['data']} + bss {fp['bss']}), plus code and the layer table.
 * Formats (fractional bits): w {', '.join(str(ql.w_frac) for ql in qnet.layers)} per layer (int{f.w_bits}), x {f.x_frac}, v {f.v_frac}, alpha {f.a_frac},
 * surrogate/probabilities {f.p_frac}, errors {f.e_frac}, gradients {f.g_frac}, learning rate {f.lr_frac}.
 */
#ifndef STOPNP_H
#define STOPNP_H
#include <stdint.h>

#define STOPNP_FIXED {1 if numerics == 'fixed' else 0}
#define STOPNP_LEARN {1 if learn else 0}
#define STOPNP_LEARN_FROM {learn_from}
#define STOPNP_ONLINE {1 if online and learn else 0}
#define STOPNP_BATCH {batch}
#define STOPNP_N_LAYERS {n}
#define STOPNP_N_IN {info['n_in']}
#define STOPNP_N_OUT {info['n_out']}
#define STOPNP_LAYER_SIZES {{{layer_sizes}}}
#define STOPNP_MACS {sum(info['macs'])}           /* dense multiply-accumulates per step and sample */
#define STOPNP_LAYER_MACS {{{', '.join(str(m) for m in info['macs'])}}}
#define STOPNP_READOUT_SPIKING {rows[-1]['spiking']}
#define STOPNP_RESET_HARD {1 if qnet.reset == 'hard' else 0}
#define STOPNP_SURROGATE {SURROGATE_CODE.get(qnet.surrogate, -1)}
#define STOPNP_ALPHA_MEAN {1 if qnet.alpha_reduce == 'mean' else 0}
#define STOPNP_X_FRAC {f.x_frac}
#define STOPNP_V_FRAC {f.v_frac}
#define STOPNP_A_FRAC {f.a_frac}
#define STOPNP_P_FRAC {f.p_frac}
#define STOPNP_E_FRAC {f.e_frac}
#define STOPNP_G_FRAC {f.g_frac}
#define STOPNP_LR_FRAC {f.lr_frac}
#define STOPNP_W_MIN ({lo})
#define STOPNP_W_MAX ({hi})
#define STOPNP_THETA_MIN {theta_min}
#define STOPNP_BYTES_PARAMS {fp['params']}
#define STOPNP_BYTES_STATE {fp['state']}
#define STOPNP_BYTES_LEARN {fp['learn']}
#define STOPNP_BYTES_SCRATCH {fp['scratch']}
#define STOPNP_BYTES_CONST {fp['const']}
#define STOPNP_BYTES_DATA {fp['data']}
#define STOPNP_BYTES_BSS {fp['bss']}

#if STOPNP_FIXED
typedef int32_t sn_val;            /* I, U, V, θ (Q{f.v_frac}), inputs and traces (Q{f.x_frac}), α (Q{f.a_frac}) */
typedef int64_t sn_acc;            /* exact products and sums */
typedef {wtype} sn_w;              /* weights, fractional bits per layer */
typedef int32_t sn_grad;           /* gradient accumulators, Q{f.g_frac} */
typedef int32_t sn_lr;             /* learning rates, Q{f.lr_frac} */
typedef {'int64_t' if wide else 'int32_t'} sn_eacc;           /* spike-count sums Σ n·W (proven to fit) */
#define STOPNP_ONE(frac) ((sn_acc)1 << (frac))
#else
typedef float sn_val;
typedef float sn_acc;
typedef float sn_w;
typedef float sn_grad;
typedef float sn_lr;
typedef float sn_eacc;
#define STOPNP_ONE(frac) 1.0f
#endif

void stopnp_init(void);
void stopnp_reset(void);
void stopnp_step(const sn_val *x, sn_val *out);
const sn_val *stopnp_membrane(int layer);            /* V (B, size) after the last step */
int stopnp_spike(int layer, int i);                  /* s of neuron i = b·size + j after the last step */
int stopnp_n_weights(int layer);
sn_w stopnp_weight(int layer, int i);                /* i in (out, in) or (out, c, ky, kx) order */
const sn_val *stopnp_theta(int layer, int *n);
const sn_val *stopnp_alpha(int layer);
#if STOPNP_LEARN
void stopnp_learn_step(const sn_val *x, const int32_t *label, sn_val *out);
#if STOPNP_ONLINE
void stopnp_set_rates(sn_lr lr_w, sn_lr lr_theta, sn_lr lr_alpha);
#else
void stopnp_apply(sn_lr lr_w, sn_lr lr_theta, sn_lr lr_alpha);
#endif
#endif
#endif
"""
    parts = [f"/* stopnp.c: generated by stopnp {__version__}; parameters and engine. */",
             '#include "stopnp.h"',
             "#if !STOPNP_FIXED\n#include <math.h>\n#endif",
             f"#define STOPNP_NEEDS_RDIV64 {1 if needs_rdiv64 else 0}",
             "#ifdef STOPNP_PROFILE\nvoid STOPNP_PROFILE(int layer);   /* before each layer and after the last */\n"
             "#endif",
             """typedef struct {
    int op, spiking, in_kind, pool, pk;  /* op 0 linear, 1 conv; in_kind 0 input, 1 pooled values, 2 spike
                                            counts; pool 0 none, 1 average, 2 max (k = pk) */
    int sc, sh, sw;                      /* source map: the input or the layer below */
    int ic, ih, iw, n_in;                /* layer input after pooling */
    int oc, oh, ow, n_out;               /* neurons */
    int k, stride, pad, n_theta, th_span, n_w, w_frac;   /* th_span: neurons per θ */
    int w_os, w_is;                      /* linear: W[o][i] at w[o·w_os + i·w_is] */
    sn_val x_scale;                      /* in_kind 2: x = n·x_scale */
    const sn_w *w;
    sn_w *wl;                            /* the same arrays, writable (learned layers only) */
    const sn_val *bias, *theta, *alpha;
    sn_val *thl, *al;
    sn_val *v;
    uint8_t *s;                          /* spikes, one bit per neuron */
    sn_val *w_tr, *th_tr, *al_tr;        /* learning only */
    sn_grad *gw, *gth, *gal;
} sn_layer;"""]
    for a in arrs:
        q = "const " if a.storage == "const" else ""
        init = f" = {_fmt_array(a.values, numerics)}" if a.values is not None else ""
        parts.append(f"static {q}{a.ctype} {a.name}[{a.count}]{init};")
    have = {a.name for a in arrs}
    layer_inits = []
    for i, (ql, r) in enumerate(zip(qnet.layers, rows)):
        learned = bool(learn) and i >= learn_from
        ref = lambda name: name if name in have else "0"   # noqa: E731
        fields = ", ".join(str(r[k]) for k in ("op", "spiking", "in_kind", "pool", "pk", "sc", "sh", "sw", "ic", "ih",
                                               "iw", "n_in", "oc", "oh", "ow", "n_out", "k", "stride", "pad",
                                               "n_theta", "th_span", "n_w", "w_frac", "w_os", "w_is"))
        xs = str(r["x_scale"]) if numerics == "fixed" else _cfloat(r["x_scale"])
        ptrs = [f"sn_w{i}", f"sn_w{i}" if learned else "0", ref(f"sn_b{i}"), ref(f"sn_th{i}"), ref(f"sn_a{i}"),
                ref(f"sn_th{i}") if learned else "0", ref(f"sn_a{i}") if learned else "0", f"sn_v{i}", f"sn_s{i}",
                ref(f"sn_wtr{i}"), ref(f"sn_thtr{i}"), ref(f"sn_altr{i}"), ref(f"sn_gw{i}"), ref(f"sn_gth{i}"),
                ref(f"sn_gal{i}")]
        reads = ("the input", "pooled values", "spikes")[r["in_kind"]]
        layer_inits.append(f"    /* {i}: {ql.name} ({'conv' if r['op'] else 'linear'}, "
                           f"{'LIF' if r['spiking'] else 'readout'}, reads {reads}{', learned' if learned else ''}) */\n"
                           f"    {{{fields}, {xs}, {', '.join(ptrs)}}}")
    parts.append("static const sn_layer sn_layers[STOPNP_N_LAYERS] = {\n" + ",\n".join(layer_inits) + "\n};")
    parts.append("#define SN_EVENT_ACC " + ("sn_s64" if wide else "sn_sx"))
    if learn:
        parts.append(f"#define SN_D (sn_sx + {sx['d_offset']})\n#define SN_GX (sn_sx + {sx['gx_offset']})")
    src = "\n\n".join(parts) + "\n\n" + _template("engine.c") + "\n" + _conv_dispatch(rows, learn_from if learn else n)
    return hdr, src, info


def _conv_dispatch(rows, learn_from):
    """sn_conv (and, learning, sn_conv_wtap and sn_conv_back): every conv layer with its shape as
    constants (see engine.c)."""
    fwd, tap, back = [], [], []
    for i, r in enumerate(rows):
        if r["op"] != 1:
            continue
        shape = ", ".join(str(r[k]) for k in ("k", "ic", "ih", "iw", "oh", "ow", "stride", "pad"))
        if r["in_kind"] == IN_EVENT:
            fwd.append(f"    case {i}: sn_conv_event(&sn_layers[{i}], b, cnt, E, cur, {shape}); break;\n")
        else:
            fwd.append(f"    case {i}: sn_conv_gather(&sn_layers[{i}], b, xb, cur, {shape}); break;\n")
        if i >= learn_from:
            tshape = ", ".join(str(r[k]) for k in ("k", "ic", "ih", "iw", "ow", "stride", "pad"))
            tap.append(f"    case {i}: sn_conv_window_grad(&sn_layers[{i}], b, p, dv, acc, {tshape}); break;\n")
        if i > learn_from:
            back.append(f"    case {i}: sn_conv_backward(&sn_layers[{i}], d, gx, {shape}); break;\n")
    text = ("/* the conv layers, shapes as constants (generated) */\n"
            "static void sn_conv(int l, int b, const sn_val *xb, const uint8_t *cnt, sn_eacc *E, sn_val *cur)\n{\n"
            "    (void)b; (void)xb; (void)cnt; (void)E; (void)cur;\n"
            "    switch (l) {\n" + "".join(fwd) + "    default: break;\n    }\n}\n")
    if learn_from < len(rows):
        text += ("#if STOPNP_LEARN\n"
                 "static void sn_conv_wtap(int l, int b, int p, sn_val dv, sn_acc *acc)\n{\n"
                 "    (void)b; (void)p; (void)dv; (void)acc;\n"
                 "    switch (l) {\n" + "".join(tap) + "    default: break;\n    }\n}\n"
                 "static void sn_conv_back(int l, const sn_val *d, sn_val *gx)\n{\n"
                 "    (void)d; (void)gx;\n"
                 "    switch (l) {\n" + "".join(back) + "    default: break;\n    }\n}\n"
                 "#endif\n")
    return text


def export(net, out_dir, *, harness=True, **kw):
    """Write stopnp.h and stopnp.c (and harness.c) into ``out_dir``; returns ``info`` (footprint...)."""
    hdr, src, info = generate(net, **kw)
    os.makedirs(out_dir, exist_ok=True)
    files = {"stopnp.h": hdr, "stopnp.c": src}
    if harness:
        files["harness.c"] = _template("harness.c")
    for name, text in files.items():
        with atomic_write(os.path.join(out_dir, name)) as tmp, open(tmp, "w") as fh:
            fh.write(text)
    info["files"] = sorted(files)
    return info


# ---------------------------------------------------------------------------------------------
# test vectors

class _Writer:
    def __init__(self, fh, numerics):
        self.fh, self.fixed = fh, numerics == "fixed"

    def u32(self, *v):
        self.fh.write(struct.pack(f"<{len(v)}I", *[int(a) & 0xFFFFFFFF for a in v]))

    def vals(self, a):
        a = np.asarray(a).ravel()
        if self.fixed:
            if a.size and (a.min() < nm.INT32_MIN or a.max() > nm.INT32_MAX):
                raise ValueError("a value does not fit int32")
            self.fh.write(a.astype("<i4").tobytes())
        else:
            self.fh.write(a.astype("<f4").tobytes())


def write_vectors(path, net, x, y=None, *, lr=(0.05, 0.05, 0.05), learn_last=0, online=False, fmt=None):
    """Run the Python fixed-point engine on ``x`` (n_seq, T, B, *input) float frames (and labels ``y``
    (n_seq, B): a learning run, one SGD update per sequence, or per step with ``online``) and write
    inputs and every expected value.

    Returns the QNet after the run (its parameters updated when learning)."""
    qnet = fx.quantize(net, fmt)
    learn = y is not None
    if learn:
        fx.check_supported(net, learn=True)
    f = qnet.fmt
    n_seq, T, B = x.shape[:3]
    learned = fx.learned_layers(qnet, learn_last) if learn else ()
    sizes = [ql.size for ql in qnet.layers]
    mode = (1 if learn else 0) | (4 if learn and online else 0)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        w = _Writer(fh, "fixed")
        w.u32(MAGIC, VERSION, mode, n_seq, T, B, len(sizes), int(np.prod(qnet.input_shape)), *sizes)
        for q in range(n_seq):
            xq = fx.quantize_input(qnet, x[q])
            lrq = None
            if learn:
                w.u32(*y[q])
                lrq = [int(nm.quantize(v, f.lr_frac)) for v in lr]
                w.vals(lrq)
            st = fx.new_state(qnet, B, learned)
            grads = fx.zero_grads(qnet, learned) if learn and not online else None
            for t in range(T):
                o = fx.step(qnet, st, xq[t], y[q] if learn else None, grads, learned, lrq=lrq if online else None)
                w.vals(xq[t])
                w.vals(o)
                for i in range(len(sizes)):
                    w.vals(st.v[i])
                    w.vals(st.s[i])
            if learn:
                if not online:
                    fx.apply_q(qnet, grads, lrq)
                for i in learned:
                    ql = qnet.layers[i]
                    w.vals(qnet.params[f"{ql.name}.weight"])
                    if ql.spiking:
                        w.vals(qnet.params[f"{ql.name}.theta"])
                        w.vals(qnet.params[f"{ql.name}.alpha"])
    return qnet


def write_float_vectors(path, net, x, *, fmt=None):
    """Inputs for the float build (expected values from stopnp.simulate in float32: spikes and V)."""
    from ..api import simulate
    qnet = fx.quantize(net, fmt)
    n_seq, T, B = x.shape[:3]
    sizes = [ql.size for ql in qnet.layers]
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        w = _Writer(fh, "float")
        w.u32(MAGIC, VERSION, 2, n_seq, T, B, len(sizes), int(np.prod(qnet.input_shape)), *sizes)
        for q in range(n_seq):
            rec = simulate(net, np.ascontiguousarray(x[q], np.float32), record=("v", "s", "i"), bn_mode="eval",
                           numerics="float")
            for t in range(T):
                w.vals(x[q][t])
                last = net.layers[-1]
                w.vals(rec[f"{last.name}.s"][t] if last.spiking else rec[f"{last.name}.i"][t])
                for layer in net.layers:
                    if layer.spiking:
                        w.vals(rec[f"{layer.name}.v"][t])
                        w.vals(rec[f"{layer.name}.s"][t])
                    else:
                        w.vals(rec[f"{layer.name}.i"][t])
                        w.vals(np.zeros_like(rec[f"{layer.name}.i"][t]))
    return qnet


def read_actual(path, qnet, n_seq, T, B, numerics="fixed"):
    """Read a harness ACTUAL file (outputs, V and s of every step) into {"out", "v", "s"} arrays."""
    dt = "<i4" if numerics == "fixed" else "<f4"
    data = np.fromfile(path, dt)
    sizes = [ql.size for ql in qnet.layers]
    n_out = sizes[-1]
    per_step = B * n_out + sum(2 * B * s for s in sizes)
    if data.size != n_seq * T * per_step:
        raise ValueError(f"{path}: {data.size} values, expected {n_seq * T * per_step} (inference run)")
    out, v, s = [], [[] for _ in sizes], [[] for _ in sizes]
    pos = 0
    for _ in range(n_seq * T):
        out.append(data[pos:pos + B * n_out].reshape(B, n_out))
        pos += B * n_out
        for i, n in enumerate(sizes):
            v[i].append(data[pos:pos + B * n].reshape(B, n))
            pos += B * n
            s[i].append(data[pos:pos + B * n].reshape(B, n))
            pos += B * n
    return {"out": np.array(out), "v": [np.array(a) for a in v], "s": [np.array(a) for a in s]}


def write_sample(path, net, x, label, numerics="fixed", fmt=None):
    """A C header with one input sequence ``x`` (T, *input) and its label, for examples/mcu/main.c."""
    T = x.shape[0]
    if numerics == "fixed":
        qnet = fx.quantize(net, fmt)
        vals, unit = fx.quantize_input(qnet, x), f"Q{qnet.fmt.x_frac}"
    else:
        vals, unit = np.asarray(x, np.float32), "float"
    text = (f"/* one test input for the exported network: T = {T} frames of {int(np.prod(x.shape[1:]))} values "
            f"({unit}), label {int(label)} */\n"
            f"#define SAMPLE_T {T}\n#define SAMPLE_LABEL {int(label)}\n"
            f"static const sn_val sample_x[{vals.size}] = {_fmt_array(vals, numerics)};\n")
    with atomic_write(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
    return path


STRICT = ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Wconversion", "-Wshadow", "-Werror"]


def compile_and_check(out_dir, vectors, cc="gcc", actual=None, flags=("-O2",)):
    """Build the harness with ``cc`` (C99, every warning of STRICT an error, ``flags``) and run it on
    ``vectors``. Returns (returncode, output). Raises FileNotFoundError if the compiler is missing."""
    import shutil
    import subprocess
    if shutil.which(cc) is None:
        raise FileNotFoundError(f"C compiler {cc!r} not found; install gcc or pass another with --cc")
    exe = os.path.join(out_dir, "harness")
    cmd = [cc, *STRICT, *flags, "-o", exe, os.path.join(out_dir, "stopnp.c"), os.path.join(out_dir, "harness.c"),
           "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return r.returncode, "compile failed:\n" + r.stderr
    r = subprocess.run([exe, vectors] + ([actual] if actual else []), capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr
