"""2-D convolution kernels (cross-correlation, no bias), NCHW, kernel KH×KW, stride s, zero pad p.

Shapes: x (B,Ci,H,W), W (Co,Ci,KH,KW), out (B,Co,Ho,Wo) with Ho = (H + 2p - KH)//s + 1,
Wo = (W + 2p - KW)//s + 1; x[.., h, w] = 0 outside 0 <= h < H, 0 <= w < W (zero padding).

    forward          out[b,o,i,j]   = Σ_{c,u,v} W[o,c,u,v]·x[b,c, s·i+u-p, s·j+v-p]
    input gradient   gx[b,c,h,w]   += Σ_{o,u,v,i,j: s·i+u-p = h, s·j+v-p = w} δ[b,o,i,j]·W[o,c,u,v]
    weight gradient  gW[o,c,u,v]   += Σ_{b,i,j} δ[b,o,i,j]·w~[b,c, s·i+u-p, s·j+v-p]

δ (``delta``) is the error on W ⊛ x (after BN's backward when there is one); w~ (``w_trace``) is what
the weight gradient correlates it with: STOP's trace map, x itself for SLTT and BPTT, â for OTTT.

``conv2d_*`` are the C-portable loop references: prange over the output block an iteration owns
((b,o) planes, (b,c) planes, (o,c) filters), every sum in a fixed serial order inside it, so the
results are bitwise identical for any thread count. Accumulators have the arrays' dtype.

The ``*_fast`` functions lower the same sums to GEMMs through im2col, one sample at a time:

    cols_b[(c·KH + u)·KW + v, i·Wo + j] = x[b, c, s·i+u-p, s·j+v-p]            (im2col)
    out[b]  = W₂ · cols_b                       W₂ = W.reshape(Co, Ci·KH·KW)
    gx[b]  += col2im(W₂ᵀ · δ[b])                col2im = adjoint of im2col (scatter-add)
    gW₂ᵀ   += Σ_g A_g,   A_g = Σ_{b in group g} cols(w~)_b · δ[b]ᵀ

with δ[b] viewed as (Co, Ho·Wo). Stride 1 uses the wide lowering instead: with x̄ the zero-padded
image (Hp = H + 2p, Wp = W + 2p) flattened,

    cols_b[(c·KH + u)·KW + v, i·Wp + j] = x̄[c·Hp·Wp + (i+u)·Wp + j + v]       (im2col_wide)

so each row is one contiguous run of x̄ (one vectorized copy instead of Ho short runs of Wo). Columns
j >= Wo run on into the next image row: the forward drops them, the backward gives them δ = 0, so for
finite inputs they add exact zeros to gW and gx (an infinite input gives NaN there where the direct sum
gives ±Inf; training's NaN guard stops on either). The GEMMs grow by Wp/Wo (LeNet's 5×5 conv on 14×14:
1.4×) but the lowering, the larger cost at these sizes, shrinks more. The whole step runs inside one numba
parallel loop over samples (or over the fixed sample groups g of the weight gradient): each iteration
lowers its sample into its thread's slot of ``cols`` while it is hot in that core's cache and calls
single-threaded BLAS (``np.dot``, through SciPy's BLAS) on it. So the GEMMs, im2col and col2im share
numba's one thread pool and no second pool spins against it. A sample whose lowered matrix exceeds a byte
budget is lowered in bands of output rows (``band_rows``; the forward uses a smaller budget, which its
GEMM prefers), each band's GEMMs done before the next is lowered. The groups are fixed by B alone
(``wgrad_groups``), and each is summed serially in order of b, then the groups in order of g: the results
are bitwise the same for any thread count.

Event-driven forward (``events_rows``): a sample whose input has at most ``EVENT_DENSITY`` nonzeros
per element (spikes at a usual rate; each sample is judged alone) skips the lowering and the GEMM:
every nonzero x[c, h, w] adds x·W₂ᵀ[(c,u,v), :] to the outputs (i, j) it reaches,

    out[b, :, i, j] += x[b, c, h, w] · W₂ᵀ[(c·KH + u)·KW + v, :]    for s·i + u - p = h, s·j + v - p = w

with W₂ᵀ (Ci·KH·KW, Co) contiguous, so each event is a short vector add over the output channels. Per
output the terms arrive in order of (c, u, v) and the skipped terms are exact zeros: the result is
bitwise that of ``conv2d_forward``. Its cost is proportional to the nonzeros; it beats the GEMM below
about 15-20 % density (measured, AVX-512 GEMM, VGG-sized layers).
"""
import numpy as np
from numba import config, get_thread_id, njit, prange


def out_size(h, k, stride, pad):
    """Output length of a strided, zero-padded correlation along one axis (floor)."""
    return (h + 2 * pad - k) // stride + 1


def im2col_shape(x_shape, KH, KW, stride, pad):
    """Shape (B, Ci·KH·KW, Ho·Wo) of the im2col matrix of an input of shape ``x_shape``."""
    B, C, H, W = x_shape
    return (B, C * KH * KW, out_size(H, KH, stride, pad) * out_size(W, KW, stride, pad))


# --- loop references ------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def conv2d_forward(out, x, w, stride, pad):
    """out = W ⊛ x (overwritten)."""
    B, Co, Ho, Wo = out.shape
    Ci, H, W = x.shape[1], x.shape[2], x.shape[3]
    KH, KW = w.shape[2], w.shape[3]
    zero = out.dtype.type(0)
    for bo in prange(B * Co):  # iteration owns the plane out[b, o]
        b, o = bo // Co, bo % Co
        for i in range(Ho):
            h0 = i * stride - pad
            u0, u1 = max(0, -h0), min(KH, H - h0)  # kernel rows that land inside the image
            for j in range(Wo):
                w0 = j * stride - pad
                v0, v1 = max(0, -w0), min(KW, W - w0)
                acc = zero
                for c in range(Ci):
                    for u in range(u0, u1):
                        for v in range(v0, v1):
                            acc += w[o, c, u, v] * x[b, c, h0 + u, w0 + v]
                out[b, o, i, j] = acc


@njit(cache=True, parallel=True)
def conv2d_backward_input(gx, delta, w, stride, pad):
    """gx += Wᵀ ⋆ δ, as a gather: each gx element sums its contributions, then adds once."""
    B, Co, Ho, Wo = delta.shape
    Ci, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    KH, KW = w.shape[2], w.shape[3]
    zero = gx.dtype.type(0)
    for bc in prange(B * Ci):  # iteration owns the plane gx[b, c]
        b, c = bc // Ci, bc % Ci
        for h in range(H):
            for ww in range(W):
                acc = zero
                for o in range(Co):
                    for u in range(KH):
                        ti = h + pad - u  # = s·i for the output row i that sees x row h via u
                        if ti < 0:
                            break  # ti decreases with u
                        if ti % stride != 0 or ti // stride >= Ho:
                            continue
                        i = ti // stride
                        for v in range(KW):
                            tj = ww + pad - v
                            if tj < 0:
                                break
                            if tj % stride != 0 or tj // stride >= Wo:
                                continue
                            acc += delta[b, o, i, tj // stride] * w[o, c, u, v]
                gx[b, c, h, ww] += acc


@njit(cache=True, parallel=True)
def conv2d_backward_weight(gw, delta, w_trace, stride, pad):
    """gW += Σ_b δ ⋆ w~ (w~: the trace map for STOP, x for BPTT)."""
    B, Co, Ho, Wo = delta.shape
    Ci, H, W = w_trace.shape[1], w_trace.shape[2], w_trace.shape[3]
    KH, KW = gw.shape[2], gw.shape[3]
    zero = gw.dtype.type(0)
    for oc in prange(Co * Ci):  # iteration owns the filter gw[o, c]
        o, c = oc // Ci, oc % Ci
        for u in range(KH):
            # output rows i with 0 <= s·i+u-p < H
            i0 = max(0, (pad - u + stride - 1) // stride)
            i1 = min(Ho, (H + pad - u + stride - 1) // stride)
            for v in range(KW):
                j0 = max(0, (pad - v + stride - 1) // stride)
                j1 = min(Wo, (W + pad - v + stride - 1) // stride)
                acc = zero
                for b in range(B):
                    for i in range(i0, i1):
                        h = i * stride + u - pad
                        for j in range(j0, j1):
                            acc += delta[b, o, i, j] * w_trace[b, c, h, j * stride + v - pad]
                gw[o, c, u, v] += acc


def conv2d_backward(gx, gw, delta, w, w_trace, stride, pad):
    """gW += Σ_b δ ⋆ w~ (when ``gw``) and gx += Wᵀ ⋆ δ (when ``gx``): the loop references, with the
    interface of ``conv2d_backward_fast``."""
    if gw is not None:
        conv2d_backward_weight(gw, delta, w_trace, stride, pad)
    if gx is not None:
        conv2d_backward_input(gx, delta, w, stride, pad)


# --- im2col lowering (one sample, a band of output rows; the batched forms prange over samples) ---

@njit(cache=True)
def im2col_rows(cols, x, KH, KW, stride, pad, i0, i1):
    """cols[(c·KH + u)·KW + v, (i-i0)·Wo + j] = x[c, s·i+u-p, s·j+v-p] for i0 <= i < i1 (0 outside)."""
    C, H, W = x.shape
    Wo = (W + 2 * pad - KW) // stride + 1
    zero = cols.dtype.type(0)
    for c in range(C):
        for u in range(KH):
            for v in range(KW):
                r = (c * KH + u) * KW + v
                for i in range(i0, i1):
                    h = i * stride + u - pad
                    q = (i - i0) * Wo
                    for j in range(Wo):
                        ww = j * stride + v - pad
                        if h < 0 or h >= H or ww < 0 or ww >= W:
                            cols[r, q + j] = zero
                        else:
                            cols[r, q + j] = x[c, h, ww]


@njit(cache=True)
def col2im_add_rows(gx, cols, KH, KW, stride, pad, i0, i1):
    """gx[c, s·i+u-p, s·j+v-p] += cols[(c,u,v), (i-i0)·Wo + j] for i0 <= i < i1 (adjoint of
    ``im2col_rows``; padding dropped; scatter order (c,u,v,i,j))."""
    C, H, W = gx.shape
    Wo = (W + 2 * pad - KW) // stride + 1
    for c in range(C):
        for u in range(KH):
            for v in range(KW):
                r = (c * KH + u) * KW + v
                for i in range(i0, i1):
                    h = i * stride + u - pad
                    if h < 0 or h >= H:
                        continue
                    q = (i - i0) * Wo
                    for j in range(Wo):
                        ww = j * stride + v - pad
                        if ww < 0 or ww >= W:
                            continue
                        gx[c, h, ww] += cols[r, q + j]


@njit(cache=True, parallel=True)
def im2col(cols, x, KH, KW, stride, pad):
    """cols[b] = im2col(x[b]) for every sample (cols of ``im2col_shape``)."""
    Ho = (x.shape[2] + 2 * pad - KH) // stride + 1
    for b in prange(x.shape[0]):  # iteration owns cols[b]
        im2col_rows(cols[b], x[b], KH, KW, stride, pad, 0, Ho)


@njit(cache=True, parallel=True)
def col2im_add(gx, cols, KH, KW, stride, pad):
    """gx[b] += col2im(cols[b]) for every sample."""
    Ho = (gx.shape[2] + 2 * pad - KH) // stride + 1
    for b in prange(gx.shape[0]):  # iteration owns gx[b]
        col2im_add_rows(gx[b], cols[b], KH, KW, stride, pad, 0, Ho)


# --- fast path: im2col + single-threaded BLAS, tile by tile, inside numba's parallel loop ----------

@njit(cache=True)
def _add_into(acc, s):
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            acc[i, j] += s[i, j]


@njit(cache=True)
def _tile(buf, off, rows, n):
    """A C-contiguous (rows, n) matrix over buf[off : off + rows·n] (the slot's flat scratch)."""
    return buf[off:off + rows * n].reshape((rows, n))


@njit(cache=True)
def _count_nonzero(x):
    n = 0
    for c in range(x.shape[0]):
        for h in range(x.shape[1]):
            for w in range(x.shape[2]):
                if x[c, h, w] != 0:
                    n += 1
    return n


@njit(cache=True)
def events_rows(acc, x, wt, KH, KW, stride, pad, i0, i1):
    """acc[i-i0, j, o] = Σ_{c,u,v} x[c, s·i+u-p, s·j+v-p]·W₂ᵀ[(c·KH+u)·KW+v, o] over the nonzero x only,
    for i0 <= i < i1 (event-driven: each nonzero input adds its weight columns to the outputs it reaches;
    per output the terms come in order of (c, u, v), as in ``conv2d_forward``)."""
    C, H, W = x.shape
    Wo, Co = acc.shape[1], acc.shape[2]
    zero = acc.dtype.type(0)
    for i in range(i1 - i0):
        for j in range(Wo):
            for o in range(Co):
                acc[i, j, o] = zero
    for i in range(i1 - i0):  # one output row at a time: its Wo×Co accumulators stay in L1
        a = acc[i]
        for c in range(C):
            for u in range(KH):
                h = (i0 + i) * stride + u - pad
                if h < 0 or h >= H:
                    continue
                r0 = (c * KH + u) * KW
                for w in range(W):
                    xv = x[c, h, w]
                    if xv == 0:
                        continue
                    # kernel columns v that put input column w on an output column j: s·j = w + p - v
                    for v in range(max(0, w + pad - (Wo - 1) * stride), min(KW, w + pad + 1)):
                        nj = w + pad - v
                        if stride != 1 and nj % stride != 0:
                            continue
                        j = nj // stride
                        for o in range(Co):
                            a[j, o] += xv * wt[r0 + v, o]


@njit(cache=True)
def _events_sample(out2, xb, wt, buf, KH, KW, stride, pad, band, Ho, Wo):
    """out2 (Co, Ho·Wo) = the event sum of one sparse sample (spikes), band by band in ``buf``:
    each nonzero input scatters its weight columns (``events_rows``)."""
    Co = out2.shape[0]
    for i0 in range(0, Ho, band):
        i1 = min(Ho, i0 + band)
        acc = _tile(buf, 0, (i1 - i0) * Wo * Co, 1).reshape((i1 - i0, Wo, Co))
        events_rows(acc, xb, wt, KH, KW, stride, pad, i0, i1)
        for oc in range(Co):
            for i in range(i1 - i0):
                for j in range(Wo):
                    out2[oc, (i0 + i) * Wo + j] = acc[i, j, oc]


@njit(cache=True, parallel=True)
def _forward_gemm(out3, x, w2, wt, cols, KH, KW, stride, pad, band, max_density):
    B, Co, P = out3.shape
    K = w2.shape[1]
    Ho = (x.shape[2] + 2 * pad - KH) // stride + 1
    Wo = P // Ho
    size = x.shape[1] * x.shape[2] * x.shape[3]
    for b in prange(B):  # iteration owns out[b]; cols[thread] is its scratch
        buf = cols[get_thread_id()]
        if _count_nonzero(x[b]) <= max_density * size:  # decided by this sample alone
            _events_sample(out3[b], x[b], wt, buf, KH, KW, stride, pad, band, Ho, Wo)
            continue
        for i0 in range(0, Ho, band):
            i1 = min(Ho, i0 + band)
            n, p0 = (i1 - i0) * Wo, i0 * Wo
            c = _tile(buf, 0, K, n)
            im2col_rows(c, x[b], KH, KW, stride, pad, i0, i1)
            if n == P:  # one band: straight into out[b]
                np.dot(w2, c, out3[b])
            else:
                o = _tile(buf, K * n, Co, n)
                np.dot(w2, c, o)
                for oc in range(Co):
                    for q in range(n):
                        out3[b, oc, p0 + q] = o[oc, q]


@njit(cache=True, parallel=True)
def _backward_gemm(gx, acc, tmp, delta3, w2t, w_trace, cols, KH, KW, stride, pad, band, do_gx, do_gw):
    B, Co, P = delta3.shape
    G, K = acc.shape[0], w_trace.shape[1] * KH * KW
    Ho = (w_trace.shape[2] + 2 * pad - KH) // stride + 1
    Wo = P // Ho
    for grp in prange(G):  # iteration owns acc[grp] and gx of its samples b0 <= b < b1
        t = get_thread_id()
        buf, s = cols[t], tmp[t]
        b0, b1 = grp * B // G, (grp + 1) * B // G
        for b in range(b0, b1):
            for i0 in range(0, Ho, band):
                i1 = min(Ho, i0 + band)
                n, p0 = (i1 - i0) * Wo, i0 * Wo
                c = _tile(buf, 0, K, n)
                if n == P:  # one band: δ[b] itself
                    dband = delta3[b]
                else:  # this band of δ[b], made contiguous for BLAS
                    dband = _tile(buf, K * n, Co, n)
                    for oc in range(Co):
                        for q in range(n):
                            dband[oc, q] = delta3[b, oc, p0 + q]
                if do_gw:  # A_grp = Σ_b Σ_bands cols(w~)_b · δ[b]ᵀ, in order
                    im2col_rows(c, w_trace[b], KH, KW, stride, pad, i0, i1)
                    if b == b0 and i0 == 0:
                        np.dot(c, dband.T, acc[grp])
                    else:
                        np.dot(c, dband.T, s)
                        _add_into(acc[grp], s)
                if do_gx:  # the input GEMM overwrites the lowered band: W₂ᵀ·δ, then scatter-add
                    np.dot(w2t, dband, c)
                    col2im_add_rows(gx[b], c, KH, KW, stride, pad, i0, i1)


# --- stride 1: the wide lowering (rows of the padded image, each one contiguous copy) ---------------

@njit(cache=True)
def pad_image(dst, x, pad):
    """dst[c·Hp·Wp + (h+p)·Wp + w+p] = x[c, h, w], the border (and any tail of dst) zero."""
    C, H, W = x.shape
    Hp, Wp = H + 2 * pad, W + 2 * pad
    zero = dst.dtype.type(0)
    for k in range(dst.shape[0]):
        dst[k] = zero
    for c in range(C):
        for h in range(H):
            row = dst[(c * Hp + h + pad) * Wp + pad:(c * Hp + h + pad) * Wp + pad + W]
            xr = x[c, h]
            for w in range(W):
                row[w] = xr[w]


@njit(cache=True)
def im2col_wide(cols, src, C, KH, KW, Hp, Wp, i0, i1):
    """cols[(c·KH + u)·KW + v, (i-i0)·Wp + j] = src[c·Hp·Wp + (i+u)·Wp + j+v] for i0 <= i < i1 and
    0 <= j < Wp, 0 past the end of src: with src the padded image, columns j < Wo are the im2col of a
    stride-1 conv and j >= Wo run on into the next row (finite, never used as a result)."""
    n, size = (i1 - i0) * Wp, src.shape[0]
    zero = cols.dtype.type(0)
    for c in range(C):
        for u in range(KH):
            for v in range(KW):
                off = (c * Hp + i0 + u) * Wp + v
                m = min(n, size - off)
                row, s = cols[(c * KH + u) * KW + v], src[off:off + m]
                for q in range(m):  # 1-D views: LLVM vectorizes this copy (2-D indexing it did not)
                    row[q] = s[q]
                for q in range(m, n):
                    row[q] = zero


@njit(cache=True)
def col2im_wide_add(dst, cols, C, KH, KW, Hp, Wp, i0, i1):
    """Adjoint of ``im2col_wide``: dst[c·Hp·Wp + (i+u)·Wp + j+v] += cols[(c,u,v), (i-i0)·Wp + j]."""
    n, size = (i1 - i0) * Wp, dst.shape[0]
    for c in range(C):
        for u in range(KH):
            for v in range(KW):
                off = (c * Hp + i0 + u) * Wp + v
                m = min(n, size - off)
                row, d = cols[(c * KH + u) * KW + v], dst[off:off + m]
                for q in range(m):
                    d[q] += row[q]


@njit(cache=True, parallel=True)
def _forward_wide(out3, x, w2, wt, cols, KH, KW, pad, band, max_density):
    B, Co, P = out3.shape
    K = w2.shape[1]
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Hp, Wp = H + 2 * pad, W + 2 * pad
    Ho, Wo = Hp - KH + 1, Wp - KW + 1
    S = C * Hp * Wp
    nmax = min(band, Ho) * Wp
    for b in prange(B):  # iteration owns out[b]; cols[thread] is its scratch
        buf = cols[get_thread_id()]
        if _count_nonzero(x[b]) <= max_density * C * H * W:  # sparse input: the event sum
            _events_sample(out3[b], x[b], wt, buf, KH, KW, 1, pad, band, Ho, Wo)
            continue
        if pad == 0:
            src = x[b].reshape(S)
        else:
            src = buf[(K + Co) * nmax:(K + Co) * nmax + S]
            pad_image(src, x[b], pad)
        for i0 in range(0, Ho, band):
            i1 = min(Ho, i0 + band)
            n = (i1 - i0) * Wp
            c, o = _tile(buf, 0, K, n), _tile(buf, K * n, Co, n)
            im2col_wide(c, src, C, KH, KW, Hp, Wp, i0, i1)
            np.dot(w2, c, o)
            for oc in range(Co):  # keep the columns j < Wo
                orow = o[oc]
                for i in range(i1 - i0):
                    dst, sr = out3[b, oc, (i0 + i) * Wo:(i0 + i + 1) * Wo], orow[i * Wp:i * Wp + Wo]
                    for j in range(Wo):
                        dst[j] = sr[j]


@njit(cache=True, parallel=True)
def _backward_wide(gx, acc, tmp, delta3, w2t, w_trace, cols, KH, KW, pad, band, do_gx, do_gw):
    B, Co, P = delta3.shape
    C, H, W = w_trace.shape[1], w_trace.shape[2], w_trace.shape[3]
    G, K = acc.shape[0], C * KH * KW
    Hp, Wp = H + 2 * pad, W + 2 * pad
    Ho, Wo = Hp - KH + 1, Wp - KW + 1
    S = C * Hp * Wp
    nmax = min(band, Ho) * Wp
    zero = delta3.dtype.type(0)
    for grp in prange(G):  # iteration owns acc[grp] and gx of its samples b0 <= b < b1
        t = get_thread_id()
        buf, s = cols[t], tmp[t]
        b0, b1 = grp * B // G, (grp + 1) * B // G
        for b in range(b0, b1):
            if pad == 0:
                src = w_trace[b].reshape(S)
            else:
                src = buf[(K + Co) * nmax:(K + Co) * nmax + S]
                if do_gw:
                    pad_image(src, w_trace[b], pad)
            gxd = buf[0:0]  # a placeholder unless do_gx (w_trace may be read-only)
            if do_gx:
                if pad == 0:
                    gxd = gx[b].reshape(S)
                else:  # the padded gradient, cropped into gx[b] after the last band
                    gxd = buf[(K + Co) * nmax + S:(K + Co) * nmax + 2 * S]
                    for k in range(S):
                        gxd[k] = zero
            for i0 in range(0, Ho, band):
                i1 = min(Ho, i0 + band)
                n = (i1 - i0) * Wp
                c, dband = _tile(buf, 0, K, n), _tile(buf, K * n, Co, n)
                for oc in range(Co):  # δ[b]'s band, widened: zero in the run-on columns j >= Wo
                    grow = dband[oc]
                    for i in range(i1 - i0):
                        sr = delta3[b, oc, (i0 + i) * Wo:(i0 + i + 1) * Wo]
                        for j in range(Wo):
                            grow[i * Wp + j] = sr[j]
                        for j in range(Wo, Wp):
                            grow[i * Wp + j] = zero
                if do_gw:  # A_grp = Σ_b Σ_bands cols(w~)_b · δ[b]ᵀ, in order (run-on columns · 0)
                    im2col_wide(c, src, C, KH, KW, Hp, Wp, i0, i1)
                    if b == b0 and i0 == 0:
                        np.dot(c, dband.T, acc[grp])
                    else:
                        np.dot(c, dband.T, s)
                        _add_into(acc[grp], s)
                if do_gx:  # W₂ᵀ·δ (its run-on columns are exact zeros), then the scatter-add
                    np.dot(w2t, dband, c)
                    col2im_wide_add(gxd, c, C, KH, KW, Hp, Wp, i0, i1)
            if do_gx and pad > 0:
                for ci in range(C):
                    for h in range(H):
                        d = gx[b, ci, h]
                        sr = gxd[(ci * Hp + h + pad) * Wp + pad:(ci * Hp + h + pad) * Wp + pad + W]
                        for w in range(W):
                            d[w] += sr[w]


@njit(cache=True, parallel=True)
def _add_groups_t(gw2, acc):
    """gW₂[o, k] += Σ_g acc[g, k, o], the groups in order."""
    G, K, Co = acc.shape
    for k in prange(K):  # iteration owns the column gW₂[:, k]
        for o in range(Co):
            v = acc[0, k, o]
            for g in range(1, G):
                v += acc[g, k, o]
            gw2[o, k] += v


WGRAD_GROUPS = 8  # fixed sample groups of the weight gradient: parallel, and the same for any thread count
TILE_BYTES = 4 << 20  # lowered band per GEMM: bounds the scratch for large images (VGG-sized layers: one band)
FWD_TILE_BYTES = 1 << 20  # the forward GEMM prefers narrower bands (stopnp bench, VGG)
EVENT_DENSITY = 0.15  # at most this fraction of nonzero inputs: the event-driven forward (crossover 0.17-0.2)


def wgrad_groups(B):
    return max(1, min(B, WGRAD_GROUPS))


def row_width(x_shape, KW, stride, pad):
    """Columns per output row in the lowered matrix: Wp = W + 2p for stride 1 (the wide lowering), else Wo."""
    return x_shape[3] + 2 * pad if stride == 1 else out_size(x_shape[3], KW, stride, pad)


def band_rows(x_shape, KH, KW, stride, pad, itemsize=4, budget=None):
    """Output rows per tile: the most whose lowered band (Ci·KH·KW × rows·``row_width``) fits ``budget``
    bytes (default TILE_BYTES), at least 1."""
    K = x_shape[1] * KH * KW
    Ho = out_size(x_shape[2], KH, stride, pad)
    width = row_width(x_shape, KW, stride, pad)
    return max(1, min(Ho, (TILE_BYTES if budget is None else budget) // (K * width * itemsize)))


def fast_scratch_shapes(x_shape, Co, KH, KW, stride, pad, itemsize=4, slots=None):
    """Shapes of the fast path's scratch: ``cols`` (slots, (K + Co)·rows·width, plus two padded images
    Ci·Hp·Wp for stride 1 with padding) and ``wscratch`` (G + slots, K, Co), K = Ci·KH·KW,
    rows = ``band_rows``, width = ``row_width`` (Wp for stride 1, Wo otherwise), G = ``wgrad_groups(B)``.

    ``slots`` defaults to numba's thread-pool size (``NUMBA_NUM_THREADS``): one slot for each thread that
    can run an iteration, whatever ``set_num_threads`` says later.
    """
    slots = config.NUMBA_NUM_THREADS if slots is None else slots
    B, K, _ = im2col_shape(x_shape, KH, KW, stride, pad)
    return (slots, _slot_width(x_shape, Co, KH, KW, stride, pad, itemsize)[1]), (wgrad_groups(B) + slots, K, Co)


def _slot_width(x_shape, Co, KH, KW, stride, pad, itemsize):
    """(rows per band, elements of one thread's slot: the lowered band K×n and one Co×n GEMM band, and
    for the wide lowering with padding two padded images: the input and the input gradient)."""
    rows = band_rows(x_shape, KH, KW, stride, pad, itemsize)
    K = x_shape[1] * KH * KW
    n = (K + Co) * rows * row_width(x_shape, KW, stride, pad)
    if stride == 1 and pad > 0:
        n += 2 * x_shape[1] * (x_shape[2] + 2 * pad) * (x_shape[3] + 2 * pad)
    return rows, n


def _flat_view(a, shape):
    """``a`` reshaped without a copy (a copy would silently drop the writes into it)."""
    v = a.reshape(shape)
    if not np.may_share_memory(v, a):  # a reshape copy never overlaps
        raise ValueError("output array must be reshapable without a copy (C-contiguous)")
    return v


def _check_cols(cols, x_shape, Co, KH, KW, stride, pad, dtype):
    """The band height the scratch was sized for; a readable error if ``cols`` does not fit."""
    band, n = _slot_width(x_shape, Co, KH, KW, stride, pad, np.dtype(dtype).itemsize)
    if (cols.ndim != 2 or cols.shape[1] != n or cols.shape[0] < config.NUMBA_NUM_THREADS
            or cols.dtype != dtype or not cols.flags.c_contiguous):
        raise ValueError(f"cols is {cols.dtype}{cols.shape}, expected a C-contiguous {np.dtype(dtype)}"
                         f"(n, {n}) with n >= {config.NUMBA_NUM_THREADS} numba threads "
                         f"(see fast_scratch_shapes)")
    return band


def _contig(a, dtype):
    if a.dtype != dtype:
        raise ValueError(f"array dtype {a.dtype} does not match {np.dtype(dtype)}")
    return np.ascontiguousarray(a)


def conv2d_forward_fast(out, x, w, stride, pad, cols, wt=None, max_density=None):
    """out[b] = W₂ · im2col(x)[b] (overwritten); ``cols`` is overwritten scratch (fast_scratch_shapes).

    A sample whose input has at most ``max_density`` (default EVENT_DENSITY) nonzeros per element is
    summed event-driven over its nonzeros instead (``events_rows``); ``wt`` (Ci·KH·KW, Co) is overwritten
    with W₂ᵀ for it (allocated here when not given). ``max_density=-1``: always the GEMM.
    """
    Co, Ci, KH, KW = w.shape
    B, dt, K = out.shape[0], out.dtype, Ci * KH * KW
    band = _check_cols(cols, x.shape, Co, KH, KW, stride, pad, dt)
    band = min(band, band_rows(x.shape, KH, KW, stride, pad, dt.itemsize, FWD_TILE_BYTES))
    out3 = _flat_view(out, (B, Co, out.shape[2] * out.shape[3]))
    dst = out3 if out3.flags.c_contiguous else np.empty(out3.shape, dt)  # BLAS writes contiguous rows
    w2 = _contig(w, dt).reshape(Co, K)
    max_density = EVENT_DENSITY if max_density is None else float(max_density)
    if wt is None:
        wt = np.empty((K, Co), dt)
    if wt.shape != (K, Co) or wt.dtype != dt or not wt.flags.c_contiguous:
        raise ValueError(f"wt is {wt.dtype}{wt.shape}, expected a C-contiguous {np.dtype(dt)}{(K, Co)}")
    if max_density >= 0:
        wt[...] = w2.T
    if stride == 1:
        _forward_wide(dst, _contig(x, dt), w2, wt, cols, KH, KW, pad, band, max_density)
    else:
        _forward_gemm(dst, _contig(x, dt), w2, wt, cols, KH, KW, stride, pad, band, max_density)
    if dst is not out3:
        out3[...] = dst


# stand-ins for the input-gradient operands when only the weight gradient runs (the first layer, every
# step): made once, never written (the kernel's do_gx flag skips them); numba types need the dtype
_UNUSED = {np.dtype(t): (np.zeros((2, 2), t).T, np.zeros((1, 1, 1, 1), t)) for t in (np.float32, np.float64)}


def conv2d_backward_fast(gx, gw, delta, w, w_trace, stride, pad, cols, scratch=None):
    """gW₂ += Σ_b δ[b] · im2col(w~)[b]ᵀ and gx += col2im(W₂ᵀ · δ[b]); ``gx`` or ``gw`` may be None.

    One parallel pass over the batch does both. ``scratch`` (G + slots, Ci·KH·KW, Co) holds the G group
    accumulators and one GEMM result per thread (allocated here when not given).
    """
    Co, Ci, KH, KW = (w if w is not None else gw).shape
    B, dt, K = delta.shape[0], delta.dtype, Ci * KH * KW
    x_shape = (w_trace if w_trace is not None else gx).shape
    band = _check_cols(cols, x_shape, Co, KH, KW, stride, pad, dt)
    delta3 = _contig(delta, dt).reshape(B, Co, delta.shape[2] * delta.shape[3])
    G, slots = wgrad_groups(B), cols.shape[0]
    if gw is not None:
        gw2 = _flat_view(gw, (Co, K))
        if scratch is None:
            scratch = np.empty((G + slots, K, Co), dt)
        if scratch.shape != (G + slots, K, Co) or scratch.dtype != dt or not scratch.flags.c_contiguous:
            raise ValueError(f"scratch is {scratch.dtype}{scratch.shape}, expected a C-contiguous "
                             f"{np.dtype(dt)}{(G + slots, K, Co)} (see fast_scratch_shapes)")
        w_trace = _contig(w_trace, dt)
    else:
        scratch, w_trace = np.empty((G + slots, 1, 1), dt), gx  # unused stand-ins (no input-sized allocation)
    if gx is not None and (gx.dtype != dt or not gx.flags.c_contiguous):
        raise ValueError(f"gx must be a C-contiguous {np.dtype(dt)} array, got {gx.dtype}")
    unused_w, unused_gx = _UNUSED[dt]
    w2t = _contig(w, dt).reshape(Co, K).T if gx is not None else unused_w
    if stride == 1:
        _backward_wide(gx if gx is not None else unused_gx, scratch[:G], scratch[G:], delta3, w2t,
                       w_trace, cols, KH, KW, pad, band, gx is not None, gw is not None)
    else:
        _backward_gemm(gx if gx is not None else unused_gx, scratch[:G], scratch[G:], delta3, w2t,
                       w_trace, cols, KH, KW, stride, pad, band, gx is not None, gw is not None)
    if gw is not None:
        _add_groups_t(gw2, scratch[:G])


def conv2d_backward_input_fast(gx, delta, w, stride, pad, cols):
    """gx += col2im(W₂ᵀ · δ[b]) (``conv2d_backward_fast`` without the weight gradient)."""
    conv2d_backward_fast(gx, None, delta, w, None, stride, pad, cols)


def conv2d_backward_weight_fast(gw, delta, w_trace, stride, pad, cols, scratch=None):
    """gW₂ += Σ_b δ[b] · im2col(w~)[b]ᵀ (``conv2d_backward_fast`` without the input gradient)."""
    conv2d_backward_fast(None, gw, delta, None, w_trace, stride, pad, cols, scratch)
