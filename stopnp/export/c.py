"""Export to self-contained C99: one header (stopnp.h) and one source file (stopnp.c).

The source holds the parameters as static arrays and the engine of templates/engine.c; all buffers are
static and sized at export (batch ``STOPNP_BATCH``), there is no malloc, and the fixed-point build uses
no floating point and no libm. API (see the generated header):

    void stopnp_init(void);                              state to zero
    void stopnp_reset(void);                             start of a sequence: V, s, traces to zero
    void stopnp_step(const sn_val *x, sn_val *out);      one time step: input frame -> output (B, n_out)
    void stopnp_learn_step(const sn_val *x, const int32_t *label, sn_val *out)    (--learn stop)
    void stopnp_apply(sn_lr lr_w, sn_lr lr_theta, sn_lr lr_alpha)                (--learn stop)

Numbers: fixed point (``sn_val`` = int32 in the formats of numerics.py, inputs in Q(x_frac)) or float32.
The output is the readout's current I[t] (Q(v_frac)) or the output spikes (0/1).

Test vectors (``write_vectors``), little-endian, read by templates/harness.c:

    u32 magic 0x56504E53 ("SNPV"), u32 version = 1, u32 mode (bit 0 learn, bit 1 float),
    u32 n_seq, T, B, n_layers, n_in, n_layers × u32 layer size
    per sequence: [learn: B × i32 label, 3 × val lr (weights, θ, α)]
                  per step: B·n_in × val x, B·n_out × val output,
                            per layer: B·size × val V, B·size × val s
                  [learn: per learned layer: n_w × val W, and for a LIF layer n_θ × val θ, 1 × val α]
    val = i32 (fixed) or f32 (float)
"""
import os
import struct

import numpy as np

from .. import fixed as fx
from .. import numerics as nm
from .._version import __version__
from ..config import ConfigError
from ..fsutil import atomic_write

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
MAGIC, VERSION = 0x56504E53, 1
SURROGATE_CODE = {"exp": 0, "triangle": 1, "rectangle": 2}
W_TYPES = {8: "int8_t", 16: "int16_t", 32: "int32_t"}


def _template(name):
    with open(os.path.join(TEMPLATES, name)) as f:
        return f.read()


def plan(qnet):
    """Per-layer C descriptors: sizes, pooling, and which arrays exist. One pooling op per layer."""
    rows = []
    src_shape = tuple(qnet.input_shape)
    for i, ql in enumerate(qnet.layers):
        pools = [p for p in ql.pre if p[0] != "flatten"]
        if len(pools) > 1:
            raise ConfigError(f"export c: layer {ql.name!r} has {len(pools)} pooling steps before it; the C "
                              f"engine supports one (avgpool, maxpool or global) per layer")
        pool, pk = 0, 1
        sc = src_shape if len(src_shape) == 3 else (int(np.prod(src_shape)), 1, 1)
        in3 = sc
        if pools:
            kind, in_shape, out_shape, k = pools[0]
            pool, pk = (2 if kind == "maxpool" else 1), k
            in3 = tuple(out_shape)
        out3 = ql.shape if len(ql.shape) == 3 else (ql.shape[0], 1, 1)
        rows.append(dict(op=0 if ql.op == "linear" else 1, spiking=int(ql.spiking), pool=pool, pk=pk,
                         sc=sc[0], sh=sc[1], sw=sc[2], ic=in3[0], ih=in3[1], iw=in3[2],
                         n_in=int(np.prod(in3)), oc=out3[0], oh=out3[1], ow=out3[2], n_out=ql.size,
                         k=max(ql.k, 1), stride=max(ql.stride, 1), pad=ql.pad,
                         n_theta=int(np.prod(ql.theta_shape)) if ql.spiking else 1,
                         n_w=int(qnet.params[f"{ql.name}.weight"].size), w_frac=ql.w_frac))
        src_shape = ql.shape
    return rows


def footprint(qnet, rows, B, learn_from, numerics):
    """Bytes of parameters, run state and learning buffers, as the C arrays declare them."""
    wb = qnet.fmt.w_bits // 8 if numerics == "fixed" else 4
    n_layers = len(rows)
    params = sum(r["n_w"] * wb + r["oc"] * 4 + (r["n_theta"] * 4 + 4 if r["spiking"] else 0) for r in rows)
    maxn = max(r["n_out"] for r in rows)
    state = sum(B * (r["n_in"] * 4 + r["n_out"] * 5) for r in rows) + B * maxn * 4
    learn = 0
    if learn_from < n_layers:
        for r in rows[learn_from:]:
            learn += B * r["n_in"] * 4 + r["n_w"] * 4
            if r["spiking"]:
                learn += B * r["n_out"] * 12 + r["n_theta"] * 4 + 4
        learn += B * maxn * 4 + B * max(r["n_in"] for r in rows) * 4 + rows[-1]["n_out"] * 8
    return {"params": params, "state": state, "learn": learn, "total": params + state + learn}


def _fmt_array(values, numerics, per_line=12):
    v = np.asarray(values).ravel()
    if numerics == "fixed":
        items = [str(int(a)) for a in v]
    else:
        items = [f"{float(a):.9g}f" if np.isfinite(a) else "0.0f" for a in v.astype(np.float32)]
        items = [s if ("." in s or "e" in s) else s.replace("f", ".0f") for s in items]
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


def generate(net, *, numerics="fixed", learn=None, learn_last=0, batch=1, fmt=None, source=""):
    """(header text, source text, info) for ``net``. ``learn='stop'`` adds the STOP learning step for the
    last ``learn_last`` layers (0 = all)."""
    if numerics not in ("fixed", "float"):
        raise ConfigError(f"export c: numerics {numerics!r}; valid: fixed, float")
    if learn not in (None, "stop"):
        raise ConfigError(f"export c: --learn {learn!r}; the on-device rule is 'stop'")
    if batch < 1:
        raise ConfigError("export c: --batch must be >= 1")
    qnet = fx.quantize(net, fmt)
    if learn:
        fx.check_supported(net, learn=True)
    f = qnet.fmt
    rows = plan(qnet)
    n = len(rows)
    learn_from = fx.learned_layers(qnet, learn_last)[0] if learn else n
    P = qnet.params if numerics == "fixed" else float_params(net)
    fp = footprint(qnet, rows, batch, learn_from, numerics)
    info = {"layers": n, "footprint": fp, "formats": f.as_dict(), "numerics": numerics, "learn": bool(learn),
            "learn_from": learn_from, "batch": batch, "n_in": rows[0]["sc"] * rows[0]["sh"] * rows[0]["sw"],
            "n_out": rows[-1]["n_out"]}
    wtype = W_TYPES[f.w_bits]
    lo, hi = f.w_range
    theta_min = qnet.theta_min if numerics == "fixed" else f"{net.config['neuron']['theta_min']:.9g}f"
    sizes = ", ".join(str(r["n_out"]) for r in rows)
    names = ", ".join(ql.name for ql in qnet.layers)
    hdr = f"""/* stopnp.h: generated by stopnp {__version__}{' from ' + source if source else ''}.
 * Network: {net.config['model']['name']} ({names}); {'fixed point' if numerics == 'fixed' else 'float32'};
 * {'on-device STOP learning for layers ' + str(learn_from) + '..' + str(n - 1) if learn else 'inference only'}.
 * Memory: parameters {fp['params']} B, state {fp['state']} B, learning {fp['learn']} B, total {fp['total']} B.
 * Formats (fractional bits): w {', '.join(str(ql.w_frac) for ql in qnet.layers)} per layer (int{f.w_bits}), x {f.x_frac}, v {f.v_frac}, alpha {f.a_frac},
 * surrogate/probabilities {f.p_frac}, errors {f.e_frac}, gradients {f.g_frac}, learning rate {f.lr_frac}.
 */
#ifndef STOPNP_H
#define STOPNP_H
#include <stdint.h>

#define STOPNP_FIXED {1 if numerics == 'fixed' else 0}
#define STOPNP_LEARN {1 if learn else 0}
#define STOPNP_LEARN_FROM {learn_from}
#define STOPNP_BATCH {batch}
#define STOPNP_N_LAYERS {n}
#define STOPNP_N_IN {info['n_in']}
#define STOPNP_N_OUT {info['n_out']}
#define STOPNP_LAYER_SIZES {{{sizes}}}
#define STOPNP_READOUT_SPIKING {rows[-1]['spiking']}
#define STOPNP_RESET_HARD {1 if qnet.reset == 'hard' else 0}
#define STOPNP_SURROGATE {SURROGATE_CODE[qnet.surrogate]}
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

#if STOPNP_FIXED
typedef int32_t sn_val;            /* I, U, V, θ (Q{f.v_frac}), inputs and traces (Q{f.x_frac}), α (Q{f.a_frac}) */
typedef int64_t sn_acc;            /* exact products and sums */
typedef {wtype} sn_w;              /* weights, fractional bits per layer (sn_layer.w_frac) */
typedef int32_t sn_grad;           /* gradient accumulators, Q{f.g_frac} */
typedef int32_t sn_lr;             /* learning rates, Q{f.lr_frac} */
#define STOPNP_ONE(frac) ((sn_acc)1 << (frac))
#else
typedef float sn_val;
typedef float sn_acc;
typedef float sn_w;
typedef float sn_grad;
typedef float sn_lr;
#define STOPNP_ONE(frac) 1.0f
#endif

void stopnp_init(void);
void stopnp_reset(void);
void stopnp_step(const sn_val *x, sn_val *out);
const sn_val *stopnp_membrane(int layer);
const uint8_t *stopnp_spikes(int layer);
const sn_w *stopnp_weights(int layer, int *n);
const sn_val *stopnp_theta(int layer, int *n);
const sn_val *stopnp_alpha(int layer);
#if STOPNP_LEARN
void stopnp_learn_step(const sn_val *x, const int32_t *label, sn_val *out);
void stopnp_apply(sn_lr lr_w, sn_lr lr_theta, sn_lr lr_alpha);
#endif
#endif
"""
    q = "" if learn else "const "
    parts = [f"/* stopnp.c: generated by stopnp {__version__}; parameters and engine. */",
             '#include "stopnp.h"',
             "#if !STOPNP_FIXED\n#include <math.h>\n#endif",
             """typedef struct {
    int op, spiking, pool, pk;           /* op 0 linear, 1 conv; pool 0 none, 1 average, 2 max (k = pk) */
    int sc, sh, sw;                      /* source map: the input or the layer below */
    int ic, ih, iw, n_in;                /* layer input after pooling */
    int oc, oh, ow, n_out;               /* neurons */
    int k, stride, pad, n_theta, n_w, w_frac;   /* w_frac: this layer's weight format */
    %ssn_w *w;
    const sn_val *bias;
    %ssn_val *theta;
    %ssn_val *alpha;
    sn_val *x, *v;
    uint8_t *s;
    sn_val *w_tr, *th_tr, *al_tr, *phi;  /* learning only */
    sn_grad *gw, *gth, *gal;
} sn_layer;""" % (q, q, q)]
    layer_inits = []
    for i, (ql, r) in enumerate(zip(qnet.layers, rows)):
        nm_ = ql.name
        parts.append(f"/* layer {i}: {nm_} ({'conv' if r['op'] else 'linear'}, "
                     f"{'LIF' if r['spiking'] else 'readout'}) */")
        parts.append(f"static {q}sn_w sn_w{i}[{r['n_w']}] = {_fmt_array(P[f'{nm_}.weight'], numerics)};")
        parts.append(f"static const sn_val sn_b{i}[{r['oc']}] = {_fmt_array(P[f'{nm_}.bias'], numerics)};")
        th = al = "0"
        if r["spiking"]:
            parts.append(f"static {q}sn_val sn_th{i}[{r['n_theta']}] = "
                         f"{_fmt_array(P[f'{nm_}.theta'], numerics)};")
            parts.append(f"static {q}sn_val sn_a{i}[1] = {_fmt_array(P[f'{nm_}.alpha'], numerics)};")
            th, al = f"sn_th{i}", f"sn_a{i}"
        parts.append(f"static sn_val sn_x{i}[{batch * r['n_in']}];\nstatic sn_val sn_v{i}[{batch * r['n_out']}];\n"
                     f"static uint8_t sn_s{i}[{batch * r['n_out']}];")
        lrn = ["0"] * 7
        if learn and i >= learn_from:
            parts.append(f"static sn_val sn_wtr{i}[{batch * r['n_in']}];\nstatic sn_grad sn_gw{i}[{r['n_w']}];")
            lrn[0], lrn[4] = f"sn_wtr{i}", f"sn_gw{i}"
            if r["spiking"]:
                parts.append(f"static sn_val sn_thtr{i}[{batch * r['n_out']}], sn_altr{i}[{batch * r['n_out']}], "
                             f"sn_phi{i}[{batch * r['n_out']}];\n"
                             f"static sn_grad sn_gth{i}[{r['n_theta']}], sn_gal{i}[1];")
                lrn[1:4], lrn[5:7] = [f"sn_thtr{i}", f"sn_altr{i}", f"sn_phi{i}"], [f"sn_gth{i}", f"sn_gal{i}"]
        fields = ", ".join(str(r[k]) for k in ("op", "spiking", "pool", "pk", "sc", "sh", "sw", "ic", "ih", "iw",
                                               "n_in", "oc", "oh", "ow", "n_out", "k", "stride", "pad",
                                               "n_theta", "n_w", "w_frac"))
        layer_inits.append(f"    {{{fields}, sn_w{i}, sn_b{i}, {th}, {al}, sn_x{i}, sn_v{i}, sn_s{i}, "
                           f"{', '.join(lrn)}}}")
    maxn = max(r["n_out"] for r in rows)
    maxin = max(r["n_in"] for r in rows)
    parts.append("static sn_layer sn_layers[STOPNP_N_LAYERS] = {\n" + ",\n".join(layer_inits) + "\n};")
    parts.append(f"static sn_val sn_cur[{batch * maxn}];")
    if learn:
        parts.append(f"static sn_val sn_g[{batch * maxn}], sn_gx[{batch * maxin}];\n"
                     f"static sn_acc sn_exp[{rows[-1]['n_out']}];")
    src = "\n\n".join(parts) + "\n\n" + _template("engine.c")
    return hdr, src, info


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


def write_vectors(path, net, x, y=None, *, lr=(0.05, 0.05, 0.05), learn_last=0, fmt=None):
    """Run the Python fixed-point engine on ``x`` (n_seq, T, B, *input) float frames (and labels ``y``
    (n_seq, B): a learning run, one SGD update per sequence) and write inputs and every expected value.

    Returns the QNet after the run (its parameters updated when learning)."""
    qnet = fx.quantize(net, fmt)
    learn = y is not None
    if learn:
        fx.check_supported(net, learn=True)
    f = qnet.fmt
    n_seq, T, B = x.shape[:3]
    learned = fx.learned_layers(qnet, learn_last) if learn else ()
    sizes = [ql.size for ql in qnet.layers]
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        w = _Writer(fh, "fixed")
        w.u32(MAGIC, VERSION, 1 if learn else 0, n_seq, T, B, len(sizes), int(np.prod(qnet.input_shape)), *sizes)
        for q in range(n_seq):
            xq = fx.quantize_input(qnet, x[q])
            if learn:
                w.u32(*y[q])
                lrq = [int(nm.quantize(v, f.lr_frac)) for v in lr]
                w.vals(lrq)
            st = fx.new_state(qnet, B, learned)
            grads = fx.zero_grads(qnet, learned) if learn else None
            for t in range(T):
                o = fx.step(qnet, st, xq[t], y[q] if learn else None, grads, learned)
                w.vals(xq[t])
                w.vals(o)
                for i in range(len(sizes)):
                    w.vals(st.v[i])
                    w.vals(st.s[i])
            if learn:
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


def compile_and_check(out_dir, vectors, cc="gcc", actual=None):
    """Build the harness with ``cc -std=c99 -Wall -Wextra -Werror -O2`` and run it on ``vectors``.

    Returns (returncode, output). Raises FileNotFoundError if the compiler is missing."""
    import shutil
    import subprocess
    if shutil.which(cc) is None:
        raise FileNotFoundError(f"C compiler {cc!r} not found; install gcc or pass another with --cc")
    exe = os.path.join(out_dir, "harness")
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-o", exe,
           os.path.join(out_dir, "stopnp.c"), os.path.join(out_dir, "harness.c"), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return r.returncode, "compile failed:\n" + r.stderr
    r = subprocess.run([exe, vectors] + ([actual] if actual else []), capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr
