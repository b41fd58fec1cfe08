/* ---- stopnp engine (template: export/templates/engine.c) -------------------------------------
 * The same arithmetic as stopnp/fixed/integer.py, operation for operation (see its docstring for the
 * equations). Fixed point: every product is exact in int64 (or in int32 where export/c.py has proven
 * that no sum can overflow), then one NARROW (shift right rounded half away from zero) and a
 * saturation; no libm, no malloc, no recursion; stopnp_step divides in 64 bits only to average-pool
 * the network input itself. Float: the same code with NARROW/SAT as identities and expf.
 *
 * Integer sums are exact, so their order is free: the loops below are written for a small core.
 *   - The first layer, and any layer whose input is not a whole number of spikes, gathers Σ W·x per
 *     neuron (sn_conv_gather, sn_linear_dense): the sum stays in registers, kernel rows run
 *     unrolled, two neighbouring outputs share each weight load.
 *   - A layer fed by spikes (directly, through max pooling, or through average pooling where
 *     2^x_frac / k² is a whole number) counts the spikes n_i of each input (0 .. k²) and adds
 *     n_i·(column i of W) where n_i > 0, skipping silent inputs (sn_conv_event, sn_linear_event);
 *     I = x_scale·Σ.
 *   - Conv layers run with their shapes as constants: the generated sn_conv (end of stopnp.c) calls
 *     the inline kernels once per layer.
 *   - Spikes are stored as bits; the membrane V is the only per-neuron state of inference.
 *   - Learning recomputes φ(U - θ) from V, s and θ (U = V + θ·s under the soft reset) instead of
 *     storing it, keeps δ and Wᵀδ in one scratch area shared with the forward pass, passes the error
 *     through the pooling where it is read, and (--online) updates the parameters in place.
 */
#if defined(__GNUC__) || defined(__clang__)
#define SN_INLINE static inline __attribute__((always_inline))
#else
#define SN_INLINE static inline
#endif

#if STOPNP_FIXED
SN_INLINE int64_t sn_rshift(int64_t a, int n)
{
    int64_t h;
    if (n <= 0) return a * ((int64_t)1 << (-n));
    h = (int64_t)1 << (n - 1);
    if (a >= 0) return (a + h) >> n;
    return -((-a + h) >> n);
}
/* a / d rounded half away from zero, 32-bit (d > 0) */
static int32_t sn_rdiv32(int32_t a, int32_t d)
{
    uint32_t m;
    if (d == 1) return a;
    m = a < 0 ? 0u - (uint32_t)a : (uint32_t)a;
    m = (m + (uint32_t)(d / 2)) / (uint32_t)d;
    return a < 0 ? -(int32_t)m : (int32_t)m;
}
#if STOPNP_NEEDS_RDIV64
static int64_t sn_rdiv64(int64_t a, int64_t d)
{
    return a >= 0 ? (a + d / 2) / d : -((-a + d / 2) / d);
}
#endif
SN_INLINE int32_t sn_sat32(int64_t a)
{
    if ((uint64_t)(a - INT32_MIN) <= UINT32_MAX) return (int32_t)a;   /* fits: one test */
    return a < 0 ? INT32_MIN : INT32_MAX;
}
#if STOPNP_LEARN
static sn_w sn_satw(int64_t a)
{
    return (sn_w)(a > STOPNP_W_MAX ? STOPNP_W_MAX : (a < STOPNP_W_MIN ? STOPNP_W_MIN : a));
}
/* exp(z) for z <= 0 in Q(zf), result in Q(of): 2^(z log2 e) = 2^r / 2^k, 2^r by a cubic in Q16. */
static int64_t sn_exp_neg(int64_t z, int zf, int of)
{
    int64_t y, k, r, p;
    int n;
    if (z > 0) z = 0;
    y = sn_rshift(z * 94548, zf);
    if (y < -((int64_t)40 << 16)) y = -((int64_t)40 << 16);
    k = (-y + 65535) >> 16;                      /* -floor(y / 2^16), without >> of a negative */
    r = y + k * 65536;
    p = 5184;
    p = 14752 + sn_rshift(r * p, 16);
    p = 45600 + sn_rshift(r * p, 16);
    p = 65536 + sn_rshift(r * p, 16);
    n = (int)k + 16 - of;
    if (n > 62) return 0;
    return sn_rshift(p, n);
}
#endif
#define NARROW(a, n) sn_rshift((a), (n))
#define SAT(a) sn_sat32(a)
#define SATW(a) sn_satw(a)
#define RDIV32(a, d) sn_rdiv32((a), (d))
#define RDIV64(a, d) sn_rdiv64((a), (d))
#define EXPN(z) sn_exp_neg((z), STOPNP_V_FRAC, STOPNP_P_FRAC)
#define ABS(a) ((a) < 0 ? -(a) : (a))
#else
#define NARROW(a, n) ((void)(n), (a))
#define SAT(a) (a)
#define SATW(a) (a)
#define RDIV32(a, d) ((a) / (float)(d))
#define RDIV64(a, d) ((a) / (float)(d))
#define EXPN(z) expf(z)
#define ABS(a) fabsf(a)
#endif

#define ONE_X STOPNP_ONE(STOPNP_X_FRAC)
#define ONE_V STOPNP_ONE(STOPNP_V_FRAC)
#define ONE_P STOPNP_ONE(STOPNP_P_FRAC)
#define ONE_A STOPNP_ONE(STOPNP_A_FRAC)
#define B_ STOPNP_BATCH

#define SN_BIT(s, i) (((s)[(i) >> 3] >> ((i) & 7)) & 1)

/* acc + Σ w[j]·x[j], j < n: a row of a kernel (n <= 8: unrolled) or a whole linear row */
SN_INLINE sn_acc sn_row(sn_acc acc, const sn_w *w, const sn_val *x, int n)
{
    while (n > 8) {
        acc += (sn_acc)w[0] * x[0];
        acc += (sn_acc)w[1] * x[1];
        acc += (sn_acc)w[2] * x[2];
        acc += (sn_acc)w[3] * x[3];
        w += 4; x += 4; n -= 4;
    }
    switch (n) {
    case 8: acc += (sn_acc)w[7] * x[7]; /* fall through */
    case 7: acc += (sn_acc)w[6] * x[6]; /* fall through */
    case 6: acc += (sn_acc)w[5] * x[5]; /* fall through */
    case 5: acc += (sn_acc)w[4] * x[4]; /* fall through */
    case 4: acc += (sn_acc)w[3] * x[3]; /* fall through */
    case 3: acc += (sn_acc)w[2] * x[2]; /* fall through */
    case 2: acc += (sn_acc)w[1] * x[1]; /* fall through */
    case 1: acc += (sn_acc)w[0] * x[0]; /* fall through */
    default: break;
    }
    return acc;
}

/* acc + Σ over a k×k window (rows iw apart): straight-line code for a constant k <= 8 */
SN_INLINE sn_acc sn_kernel(sn_acc acc, const sn_w *w, const sn_val *x, int iw, int k)
{
    if (k > 8) {
        int ky;
        for (ky = 0; ky < k; ky++) acc = sn_row(acc, w + ky * k, x + ky * iw, k);
        return acc;
    }
    switch (k) {
    case 8: acc = sn_row(acc, w + 7 * k, x + 7 * iw, k); /* fall through */
    case 7: acc = sn_row(acc, w + 6 * k, x + 6 * iw, k); /* fall through */
    case 6: acc = sn_row(acc, w + 5 * k, x + 5 * iw, k); /* fall through */
    case 5: acc = sn_row(acc, w + 4 * k, x + 4 * iw, k); /* fall through */
    case 4: acc = sn_row(acc, w + 3 * k, x + 3 * iw, k); /* fall through */
    case 3: acc = sn_row(acc, w + 2 * k, x + 2 * iw, k); /* fall through */
    case 2: acc = sn_row(acc, w + k, x + iw, k); /* fall through */
    case 1: acc = sn_row(acc, w, x, k); /* fall through */
    default: break;
    }
    return acc;
}

/* two neighbouring outputs at once (stride 1): a[0] += Σ w[j]·x[j], a[1] += Σ w[j]·x[j + 1] over a
 * k×k window, each weight loaded once; straight-line code for a constant k <= 8 */
#define SN_MAC2(j) a0 += (sn_acc)w[j] * x[j]; a1 += (sn_acc)w[j] * x[(j) + 1]
SN_INLINE void sn_kernel2(sn_acc *a, const sn_w *w, const sn_val *x, int iw, int k)
{
    sn_acc a0 = a[0], a1 = a[1];
    int ky, kx;
    for (ky = 0; ky < k; ky++, w += k, x += iw) {
        if (k > 8) {
            for (kx = 0; kx < k; kx++) { a0 += (sn_acc)w[kx] * x[kx]; a1 += (sn_acc)w[kx] * x[kx + 1]; }
            continue;
        }
        switch (k) {
        case 8: SN_MAC2(7); /* fall through */
        case 7: SN_MAC2(6); /* fall through */
        case 6: SN_MAC2(5); /* fall through */
        case 5: SN_MAC2(4); /* fall through */
        case 4: SN_MAC2(3); /* fall through */
        case 3: SN_MAC2(2); /* fall through */
        case 2: SN_MAC2(1); /* fall through */
        case 1: SN_MAC2(0); /* fall through */
        default: break;
        }
    }
    a[0] = a0;
    a[1] = a1;
}
#undef SN_MAC2

/* the θ of neurons j, j+1, ... of channel o: th[0], th[step], th[2·step] ... */
static const sn_val *sn_theta_from(const sn_layer *L, int o, int j, int *step)
{
    *step = L->th_span == 1;
    if (!L->spiking) return 0;
    return L->th_span == 1 ? L->theta + j : (L->th_span == L->n_out ? L->theta : L->theta + o);
}

/* I = sat(narrow(acc, sh)) + bias, sh = w_frac + x_frac - v_frac of the layer */
SN_INLINE sn_val sn_current(sn_acc acc, int sh, sn_val bias)
{
    sn_acc cur = SAT(NARROW(acc, sh));
    return bias ? (sn_val)SAT(cur + bias) : (sn_val)cur;
}

/* charge, fire, reset of neurons i0 .. i0+n-1 (state index b·n_out + j) from their currents; the θ
 * of neuron i0 + j is th[j·th_step]. A readout keeps V = I. */
static void sn_neurons(const sn_layer *L, int i0, const sn_val *cur, int n, const sn_val *th, int th_step)
{
    sn_val *v = L->v + i0;
    uint8_t *s = L->s;
    sn_val alpha;
    int j;
    if (!L->spiking) {
        for (j = 0; j < n; j++) v[j] = cur[j];
        return;
    }
    alpha = L->alpha[0];
    for (j = 0; j < n; j++) {
        const sn_acc u = SAT(NARROW((sn_acc)alpha * v[j], STOPNP_A_FRAC) + cur[j]);
        const sn_val t = th[j * th_step];
        const int i = i0 + j;
        if (u >= t) {
            s[i >> 3] = (uint8_t)(s[i >> 3] | (1u << (i & 7)));
#if STOPNP_RESET_HARD
            v[j] = 0;
#else
            v[j] = (sn_val)(u - t);   /* t <= u: no overflow (fixed/integer.py's saturation never acts) */
#endif
        } else {
            s[i >> 3] = (uint8_t)(s[i >> 3] & ~(1u << (i & 7)));
            v[j] = (sn_val)u;
        }
    }
}

/* value of the source map at flat index i of batch element b: the network input or a spike */
static sn_val sn_src(const sn_val *in, const uint8_t *s, int b, int ns, int i)
{
    return in ? in[b * ns + i] : (SN_BIT(s, b * ns + i) ? (sn_val)ONE_X : (sn_val)0);
}

/* input kind 1: the pooled input x of batch element b, written to x (n_in values) */
static void sn_pool_dense(const sn_layer *L, const sn_val *in, const uint8_t *s, int b, sn_val *x)
{
    int c, y, xx, dy, dx, k = L->pk;
    int ns = L->sc * L->sh * L->sw;
    for (c = 0; c < L->ic; c++)
        for (y = 0; y < L->ih; y++)
            for (xx = 0; xx < L->iw; xx++) {
                sn_acc sum = 0;
                sn_val m = 0;
                for (dy = 0; dy < k; dy++)
                    for (dx = 0; dx < k; dx++) {
                        sn_val v = sn_src(in, s, b, ns, (c * L->sh + y * k + dy) * L->sw + xx * k + dx);
                        sum += v;
                        if ((dy == 0 && dx == 0) || v > m) m = v;
                    }
                if (L->pool == 2) x[(c * L->ih + y) * L->iw + xx] = m;
#if STOPNP_NEEDS_RDIV64
                else if (in) x[(c * L->ih + y) * L->iw + xx] = (sn_val)RDIV64(sum, k * k);
#endif
                else x[(c * L->ih + y) * L->iw + xx] = (sn_val)RDIV32((sn_val)sum, k * k);
            }
}

/* input kind 2: spikes per input n_i (no pool: the spike; average: Σ over the window; max: any). A
 * window row of k <= 8 bits is read as one 16-bit piece (spike arrays have a spare byte at the end). */
static void sn_counts(const sn_layer *L, const uint8_t *s, int b, uint8_t *cnt)
{
    static const uint8_t ones[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};
    const int k = L->pk, ih = L->ih, iw = L->iw, sh = L->sh, sw = L->sw;
    const int base = b * L->sc * sh * sw;
    const unsigned mask = (1u << (k < 8 ? k : 8)) - 1u;
    int c, y, x, dy, dx;
    if (L->pool == 0) {
        for (c = 0; c < L->n_in; c++) cnt[c] = (uint8_t)SN_BIT(s, base + c);
        return;
    }
    for (c = 0; c < L->ic; c++)
        for (y = 0; y < ih; y++)
            for (x = 0; x < iw; x++) {
                int n = 0;
                for (dy = 0; dy < k; dy++) {
                    const int i = base + (c * sh + y * k + dy) * sw + x * k;
                    if (k <= 8) {
                        unsigned bits = ((unsigned)s[i >> 3] | ((unsigned)s[(i >> 3) + 1] << 8)) >> (i & 7) & mask;
                        n += ones[bits & 15] + ones[bits >> 4];
                    } else {
                        for (dx = 0; dx < k; dx++) n += SN_BIT(s, i + dx);
                    }
                }
                cnt[(c * ih + y) * iw + x] = (uint8_t)(L->pool == 2 ? n > 0 : n);
            }
}

/* Conv layers: the generated sn_conv (end of stopnp.c) calls these with the layer's shape as
 * constants (k, ic, ih, iw, oh, ow, stride, pad), so that each layer gets loops with fixed bounds
 * and offsets, and a kernel inside the input is straight-line code. */

/* conv by gathering, output row by output row into cur (ow values), each row's neurons updated
 * when it is complete */
SN_INLINE void sn_conv_gather(const sn_layer *L, int b, const sn_val *xb, sn_val *cur, const int k, const int ic,
                              const int ih, const int iw, const int oh, const int ow, const int st, const int pad)
{
    const int kk = k * k, in_plane = ih * iw;
    const int sh = L->w_frac + STOPNP_X_FRAC - STOPNP_V_FRAC;
    int o, y, x, c, ky, ts;
    for (o = 0; o < L->oc; o++) {
        const int j0 = o * oh * ow;
        const sn_w *wo = L->w + o * ic * kk;
        const sn_val bo = L->bias ? L->bias[o] : 0;
        const sn_val *th = sn_theta_from(L, o, j0, &ts);
        for (y = 0; y < oh; y++) {
            const int iy0 = y * st - pad;
            const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = ih - iy0 < k ? ih - iy0 : k;
            const sn_w *wy = wo + ky0 * k;
            const sn_val *xy = xb + (iy0 + ky0) * iw;
            for (x = 0; x < ow; x++) {
                const int ix0 = x * st - pad;
                const int kx0 = ix0 < 0 ? -ix0 : 0, kx1 = iw - ix0 < k ? iw - ix0 : k;
                const sn_w *wc = wy + kx0;
                const sn_val *xc = xy + ix0 + kx0;
                sn_acc acc = 0;
                if (st == 1 && ky0 == 0 && ky1 == k && kx0 == 0 && ix0 + 1 + k <= iw && x + 1 < ow) {
                    sn_acc a[2] = {0, 0};   /* this output and the next: both kernels inside */
                    for (c = 0; c < ic; c++, wc += kk, xc += in_plane) sn_kernel2(a, wc, xc, iw, k);
                    cur[x] = sn_current(a[0], sh, bo);
                    cur[++x] = sn_current(a[1], sh, bo);
                    continue;
                }
                if (ky0 == 0 && ky1 == k && kx0 == 0 && kx1 == k) {   /* the whole kernel is inside */
                    for (c = 0; c < ic; c++, wc += kk, xc += in_plane) acc = sn_kernel(acc, wc, xc, iw, k);
                } else {
                    for (c = 0; c < ic; c++, wc += kk, xc += in_plane) {
                        const sn_w *wr = wc;
                        const sn_val *xr = xc;
                        for (ky = ky0; ky < ky1; ky++, wr += k, xr += iw) acc = sn_row(acc, wr, xr, kx1 - kx0);
                    }
                }
                cur[x] = sn_current(acc, sh, bo);
            }
            sn_neurons(L, b * L->n_out + j0 + y * ow, cur, ow, th ? th + y * ow * ts : 0, ts);
        }
    }
}

/* E[e - kx] += n·w[kx] for kx < k: (part of) one kernel row of an input spike count, straight-line
 * code for k <= 8 */
#define SN_SC(j) E[e - (j)] += n * w[j]
SN_INLINE void sn_scatter_row(sn_eacc *E, int e, const sn_w *w, sn_eacc n, int k)
{
    int kx;
    if (k > 8) {
        for (kx = 0; kx < k; kx++) SN_SC(kx);
        return;
    }
    switch (k) {
    case 8: SN_SC(7); /* fall through */
    case 7: SN_SC(6); /* fall through */
    case 6: SN_SC(5); /* fall through */
    case 5: SN_SC(4); /* fall through */
    case 4: SN_SC(3); /* fall through */
    case 3: SN_SC(2); /* fall through */
    case 2: SN_SC(1); /* fall through */
    case 1: SN_SC(0); /* fall through */
    default: break;
    }
}
#undef SN_SC

/* the n sums Σ n_i·W of E as currents in cur (cur may be E itself) */
static void sn_event_currents(const sn_layer *L, const sn_eacc *E, sn_val *cur, int n, sn_val bias)
{
    const int sh = L->w_frac + STOPNP_X_FRAC - STOPNP_V_FRAC;
    int i;
    for (i = 0; i < n; i++) cur[i] = sn_current((sn_acc)E[i] * L->x_scale, sh, bias);
}

/* conv from spike counts: n_i·(the kernel of input i) added to the outputs it reaches where n_i > 0;
 * one output channel at a time, its sums in E, then its currents in cur (cur may be E) */
SN_INLINE void sn_conv_event(const sn_layer *L, int b, const uint8_t *cnt, sn_eacc *E, sn_val *cur, const int k,
                             const int ic, const int ih, const int iw, const int oh, const int ow, const int st,
                             const int pad)
{
    const int plane = oh * ow;
    int o, c, py, px, i, ky, kx, ts;
    for (o = 0; o < L->oc; o++) {
        const sn_w *wo = L->w + o * ic * k * k;
        const sn_val *th = sn_theta_from(L, o, o * plane, &ts);
        for (i = 0; i < plane; i++) E[i] = 0;
        for (c = 0; c < ic; c++)
            for (py = 0; py < ih; py++) {
                const uint8_t *crow = cnt + (c * ih + py) * iw;
                if (st == 1) {   /* input (py, px) reaches outputs (py + pad - ky, px + pad - kx) */
                    const int ky0 = py + pad - (oh - 1) > 0 ? py + pad - (oh - 1) : 0;
                    const int ky1 = py + pad < k - 1 ? py + pad : k - 1;
                    const sn_w *wc = wo + (c * k + ky0) * k;
                    const int ec = (py + pad - ky0) * ow + pad;   /* output index of (ky0, kx = 0) */
                    for (px = 0; px < iw; px++) {
                        while (px < iw && !crow[px]) px++;   /* silent inputs: skipped */
                        if (px < iw) {
                            const sn_eacc n = (sn_eacc)crow[px];
                            const sn_w *wr = wc;
                            int e = ec + px;
                            if (px + pad >= k - 1 && px + pad < ow) {   /* whole kernel rows */
                                for (ky = ky0; ky <= ky1; ky++, e -= ow, wr += k) sn_scatter_row(E, e, wr, n, k);
                            } else {   /* taps kx0 .. kx1 of each row */
                                const int kx0 = px + pad - (ow - 1) > 0 ? px + pad - (ow - 1) : 0;
                                const int kx1 = px + pad < k - 1 ? px + pad : k - 1;
                                for (ky = ky0; ky <= ky1; ky++, e -= ow, wr += k)
                                    sn_scatter_row(E, e - kx0, wr + kx0, n, kx1 - kx0 + 1);
                            }
                        }
                    }
                    continue;
                }
                for (px = 0; px < iw; px++) {
                    const sn_eacc n = (sn_eacc)crow[px];
                    if (!crow[px]) continue;
                    for (ky = 0; ky < k; ky++) {
                        const int ty = py + pad - ky;
                        const sn_w *wr = wo + (c * k + ky) * k;
                        if (ty < 0) break;
                        if (ty % st || ty / st >= oh) continue;
                        for (kx = 0; kx < k; kx++) {
                            const int tx = px + pad - kx;
                            if (tx < 0) break;
                            if (tx % st || tx / st >= ow) continue;
                            E[(ty / st) * ow + tx / st] += n * wr[kx];
                        }
                    }
                }
            }
        sn_event_currents(L, E, cur, plane, L->bias ? L->bias[o] : 0);
        sn_neurons(L, b * L->n_out + o * plane, cur, plane, th, ts);
    }
}

/* linear layer by gathering (the first layer, or pooled values): cur holds n_out currents */
static void sn_linear_dense(const sn_layer *L, int b, const sn_val *xb, sn_val *cur)
{
    const int n_in = L->n_in, n_out = L->n_out, sh = L->w_frac + STOPNP_X_FRAC - STOPNP_V_FRAC;
    int o, ts;
    const sn_val *th = sn_theta_from(L, 0, 0, &ts);
    for (o = 0; o < n_out; o++)
        cur[o] = sn_current(sn_row(0, L->w + o * n_in, xb, n_in), sh, L->bias ? L->bias[o] : 0);
    sn_neurons(L, b * n_out, cur, n_out, th, ts);
}

/* linear layer from spike counts: n_i·(column i of W) added where n_i > 0 (W stored input-major) */
static void sn_linear_event(const sn_layer *L, int b, const uint8_t *cnt, sn_eacc *E, sn_val *cur)
{
    const int n_out = L->n_out;
    int o, i, ts;
    const sn_val *th = sn_theta_from(L, 0, 0, &ts);
    for (o = 0; o < n_out; o++) E[o] = 0;
    for (i = 0; i < L->n_in; i++) {
        const sn_w *wc = L->w + i * n_out;
        const sn_eacc n = (sn_eacc)cnt[i];
        if (!cnt[i]) continue;
        for (o = 0; o + 4 <= n_out; o += 4) {
            E[o] += n * wc[o];
            E[o + 1] += n * wc[o + 1];
            E[o + 2] += n * wc[o + 2];
            E[o + 3] += n * wc[o + 3];
        }
        for (; o < n_out; o++) E[o] += n * wc[o];
    }
    if (L->bias) {
        for (o = 0; o < n_out; o++) sn_event_currents(L, E + o, cur + o, 1, L->bias[o]);
    } else {
        sn_event_currents(L, E, cur, n_out, 0);
    }
    sn_neurons(L, b * n_out, cur, n_out, th, ts);
}

static void sn_conv(int l, int b, const sn_val *xb, const uint8_t *cnt, sn_eacc *E, sn_val *cur);

#if STOPNP_LEARN
/* θ of neuron j (channel o): per neuron, per channel or per layer */
static sn_val sn_theta_of(const sn_layer *L, int o, int j)
{
    return L->th_span == 1 ? L->theta[j] : (L->th_span == L->n_out ? L->theta[0] : L->theta[o]);
}

/* STOP traces of batch element b from V[t-1], s[t-1] and x[t] (before the charge of step t) */
static void sn_traces(const sn_layer *L, int b, const sn_val *xb, const uint8_t *cnt)
{
    int i;
    sn_acc a = L->spiking ? (sn_acc)L->alpha[0] : 0;
    sn_val *wt = L->w_tr + b * L->n_in;
    for (i = 0; i < L->n_in; i++) {
        sn_acc x = xb ? (sn_acc)xb[i] : (sn_acc)cnt[i] * L->x_scale;
        wt[i] = (sn_val)SAT(NARROW(a * wt[i], STOPNP_A_FRAC) + x);
    }
    if (!L->spiking) return;
    for (i = b * L->n_out; i < (b + 1) * L->n_out; i++) {
        L->th_tr[i] = (sn_val)SAT(NARROW(a * ((sn_acc)L->th_tr[i] - (SN_BIT(L->s, i) ? ONE_V : 0)), STOPNP_A_FRAC));
        L->al_tr[i] = (sn_val)SAT(NARROW(a * L->al_tr[i], STOPNP_A_FRAC) + L->v[i]);
    }
}
#endif

static void sn_forward(const sn_val *input, int learn)
{
    int l, b;
    for (l = 0; l < STOPNP_N_LAYERS; l++) {
        const sn_layer *L = &sn_layers[l];
        const uint8_t *below = l ? sn_layers[l - 1].s : 0;
#ifdef STOPNP_PROFILE
        STOPNP_PROFILE(l);
#endif
        for (b = 0; b < B_; b++) {
            const sn_val *xb = 0;
            const uint8_t *cnt = 0;
            if (L->in_kind == 0) xb = input + b * L->n_in;
            else if (L->in_kind == 1) { sn_pool_dense(L, l ? 0 : input, below, b, sn_sx); xb = sn_sx; }
            else { sn_counts(L, below, b, sn_sc); cnt = sn_sc; }
#if STOPNP_LEARN
            if (learn && l >= STOPNP_LEARN_FROM) sn_traces(L, b, xb, cnt);
#else
            (void)learn;
#endif
            if (L->op == 1) sn_conv(l, b, xb, cnt, SN_EVENT_ACC, L->in_kind == 1 ? sn_sx + L->n_in : sn_sx);
            else if (xb) sn_linear_dense(L, b, xb, L->in_kind == 1 ? sn_sx + L->n_in : sn_sx);
            else sn_linear_event(L, b, cnt, SN_EVENT_ACC, sn_sx);
        }
    }
#ifdef STOPNP_PROFILE
    STOPNP_PROFILE(STOPNP_N_LAYERS);
#endif
}

static void sn_output(sn_val *out)
{
    const sn_layer *L = &sn_layers[STOPNP_N_LAYERS - 1];
    int i;
    for (i = 0; i < B_ * L->n_out; i++)
        out[i] = L->spiking ? (sn_val)SN_BIT(L->s, i) : L->v[i];
}

void stopnp_reset(void)
{
    int l, i;
    for (l = 0; l < STOPNP_N_LAYERS; l++) {
        const sn_layer *L = &sn_layers[l];
        for (i = 0; i < B_ * L->n_out; i++) L->v[i] = 0;
        for (i = 0; i < (B_ * L->n_out + 7) / 8; i++) L->s[i] = 0;
#if STOPNP_LEARN
        if (l < STOPNP_LEARN_FROM) continue;
        for (i = 0; i < B_ * L->n_in; i++) L->w_tr[i] = 0;
        if (L->spiking)
            for (i = 0; i < B_ * L->n_out; i++) { L->th_tr[i] = 0; L->al_tr[i] = 0; }
#endif
    }
}

void stopnp_init(void)
{
    stopnp_reset();
}

void stopnp_step(const sn_val *x, sn_val *out)
{
    sn_forward(x, 0);
    sn_output(out);
}

const sn_val *stopnp_membrane(int layer) { return sn_layers[layer].v; }
int stopnp_spike(int layer, int i) { return SN_BIT(sn_layers[layer].s, i); }

#if STOPNP_LEARN
#if STOPNP_ONLINE
static sn_lr sn_lr_w, sn_lr_theta, sn_lr_alpha;
void stopnp_set_rates(sn_lr lr_w, sn_lr lr_theta, sn_lr lr_alpha)
{
    sn_lr_w = lr_w; sn_lr_theta = lr_theta; sn_lr_alpha = lr_alpha;
}
#endif

/* ∂E[t]/∂o = (softmax(o) - onehot(y)) / B into sn_g (B, n_out) */
static void sn_output_error(const int32_t *label)
{
    const sn_layer *L = &sn_layers[STOPNP_N_LAYERS - 1];
    int b, c, n = L->n_out;
    for (b = 0; b < B_; b++) {
        sn_acc m, sum = 0;
        const sn_val *o = L->spiking ? 0 : L->v + b * n;
#define SN_O(c) (o ? (sn_acc)o[c] : (SN_BIT(L->s, b * n + (c)) ? (sn_acc)ONE_V : 0))
        m = SN_O(0);
        for (c = 1; c < n; c++) if (SN_O(c) > m) m = SN_O(c);
        for (c = 0; c < n; c++) { sn_exp[c] = (sn_acc)EXPN(SN_O(c) - m); sum += sn_exp[c]; }
#undef SN_O
        for (c = 0; c < n; c++) {
#if !STOPNP_FIXED
            sn_acc p = sn_exp[c] / sum;
#elif STOPNP_P_FRAC > 15
            sn_acc p = RDIV64(sn_exp[c] * ONE_P, sum);
#else
            sn_acc p = RDIV32((int32_t)(sn_exp[c] * ONE_P), (int32_t)sum);
#endif
            if (c == label[b]) p -= ONE_P;
            sn_g[b * n + c] = (sn_val)RDIV32((sn_val)NARROW(p, STOPNP_P_FRAC - STOPNP_E_FRAC), B_);
        }
    }
}

/* g at neuron j of layer l (batch element b): the output error, or Wᵀδ of the layer above (in sn_gx)
 * through that layer's pooling */
static sn_val sn_g_at(int l, int b, int j)
{
    const sn_layer *A;
    int c, y, x, k, py, px, dy, dx, base, best;
    if (l == STOPNP_N_LAYERS - 1) return sn_g[b * sn_layers[l].n_out + j];
    A = &sn_layers[l + 1];
    if (A->pool == 0) return SN_GX[b * A->n_in + j];
    k = A->pk;
    x = j % A->sw;
    y = (j / A->sw) % A->sh;
    c = j / (A->sw * A->sh);
    py = y / k;
    px = x / k;
    if (py >= A->ih || px >= A->iw) return 0;
    if (A->pool == 1) return (sn_val)RDIV32(SN_GX[b * A->n_in + (c * A->ih + py) * A->iw + px], k * k);
    /* max: the error goes to the window's first spike, or to its first position if none fired */
    base = b * A->sc * A->sh * A->sw + (c * A->sh + py * k) * A->sw + px * k;
    best = 0;
    for (dy = 0; dy < k && !best; dy++)
        for (dx = 0; dx < k; dx++)
            if (SN_BIT(sn_layers[l].s, base + dy * A->sw + dx)) { best = 1 + dy * k + dx; break; }
    if (best == 0) best = 1;
    return (best - 1 == (y - py * k) * k + (x - px * k)) ? SN_GX[b * A->n_in + (c * A->ih + py) * A->iw + px] : 0;
}

/* δ at neuron j of layer l (batch element b): g ⊙ φ(U - θ), with U - θ = V (fired) or V - θ */
static sn_val sn_delta_at(const sn_layer *L, int l, int b, int j, int o)
{
    sn_val g = sn_g_at(l, b, j), th;
    sn_acc z, az, phi;
    int i = b * L->n_out + j;
    if (!L->spiking) return g;
    th = sn_theta_of(L, o, j);
    z = SN_BIT(L->s, i) ? (sn_acc)L->v[i] : (sn_acc)L->v[i] - th;
    az = ABS(z);
#if STOPNP_SURROGATE == 0
    phi = (sn_acc)EXPN(-az);
#elif STOPNP_SURROGATE == 1
    phi = ONE_P - NARROW(az, STOPNP_V_FRAC - STOPNP_P_FRAC);
    if (phi < 0) phi = 0;
#else
    phi = 2 * az < ONE_V ? ONE_P : 0;
#endif
    return (sn_val)SAT(NARROW((sn_acc)g * phi, STOPNP_P_FRAC));
}

/* one parameter's gradient of this step (Q(g_frac), before saturation): applied now (online) or
 * added to its accumulator */
SN_INLINE void sn_grad_weight(const sn_layer *L, int idx, sn_acc gv)
{
    if (!gv) return;   /* nothing to add or subtract */
#if STOPNP_ONLINE
    L->wl[idx] = SATW((sn_acc)L->w[idx] - NARROW((sn_acc)sn_lr_w * SAT(gv),
                                                  STOPNP_LR_FRAC + STOPNP_G_FRAC - L->w_frac));
#else
    L->gw[idx] = (sn_grad)SAT((sn_acc)L->gw[idx] + gv);
#endif
}

static void sn_grad_theta(const sn_layer *L, int idx, sn_acc gv)
{
#if STOPNP_ONLINE
    sn_acc t = SAT((sn_acc)L->theta[idx] - NARROW((sn_acc)sn_lr_theta * SAT(gv),
                                                    STOPNP_LR_FRAC + STOPNP_G_FRAC - STOPNP_V_FRAC));
    L->thl[idx] = (sn_val)(t < STOPNP_THETA_MIN ? STOPNP_THETA_MIN : t);
#else
    L->gth[idx] = (sn_grad)SAT((sn_acc)L->gth[idx] + gv);
#endif
}

static void sn_grad_alpha(const sn_layer *L, sn_acc gv)
{
#if STOPNP_ONLINE
    sn_acc a = (sn_acc)L->alpha[0] - NARROW((sn_acc)sn_lr_alpha * SAT(gv),
                                            STOPNP_LR_FRAC + STOPNP_G_FRAC - STOPNP_A_FRAC);
    L->al[0] = (sn_val)(a < 0 ? 0 : (a > ONE_A ? ONE_A : a));
#else
    L->gal[0] = (sn_grad)SAT((sn_acc)L->gal[0] + gv);
#endif
}

/* E[e - j]·w[j] summed for j < n: a kernel row against a reversed row of δ (straight-line, n <= 8) */
#define SN_RV(j) acc += (sn_acc)d[e - (j)] * w[j]
SN_INLINE sn_acc sn_row_rev(sn_acc acc, const sn_w *w, const sn_val *d, int e, int n)
{
    int j;
    if (n > 8) {
        for (j = 0; j < n; j++) SN_RV(j);
        return acc;
    }
    switch (n) {
    case 8: SN_RV(7); /* fall through */
    case 7: SN_RV(6); /* fall through */
    case 6: SN_RV(5); /* fall through */
    case 5: SN_RV(4); /* fall through */
    case 4: SN_RV(3); /* fall through */
    case 3: SN_RV(2); /* fall through */
    case 2: SN_RV(1); /* fall through */
    case 1: SN_RV(0); /* fall through */
    default: break;
    }
    return acc;
}
#undef SN_RV

/* a[j] += dv·t[j] for j < n (a kernel row of weight-gradient sums; straight-line for n <= 8) */
#define SN_AT(j) a[j] += (sn_acc)dv * t[j]
SN_INLINE void sn_row_axpy(sn_acc *a, sn_val dv, const sn_val *t, int n)
{
    int j;
    if (n > 8) {
        for (j = 0; j < n; j++) SN_AT(j);
        return;
    }
    switch (n) {
    case 8: SN_AT(7); /* fall through */
    case 7: SN_AT(6); /* fall through */
    case 6: SN_AT(5); /* fall through */
    case 5: SN_AT(4); /* fall through */
    case 4: SN_AT(3); /* fall through */
    case 3: SN_AT(2); /* fall through */
    case 2: SN_AT(1); /* fall through */
    case 1: SN_AT(0); /* fall through */
    default: break;
    }
}
#undef SN_AT

/* conv weight-gradient sums of one output channel (acc, ic·k·k): += δ (at output position p of batch
 * element b) times the window of w~ that produced it. Shapes constant (generated sn_conv_wtap). */
SN_INLINE void sn_conv_window_grad(const sn_layer *L, int b, int p, sn_val dv, sn_acc *acc, const int k,
                                   const int ic, const int ih, const int iw, const int ow, const int st,
                                   const int pad)
{
    const int y = p / ow, x = p % ow;
    const int iy0 = y * st - pad, ix0 = x * st - pad;
    const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = ih - iy0 < k ? ih - iy0 : k;
    const int kx0 = ix0 < 0 ? -ix0 : 0, kx1 = iw - ix0 < k ? iw - ix0 : k;
    const sn_val *wt = L->w_tr + b * L->n_in;
    int c, ky;
    for (c = 0; c < ic; c++)
        for (ky = ky0; ky < ky1; ky++)
            sn_row_axpy(acc + (c * k + ky) * k + kx0, dv, wt + (c * ih + iy0 + ky) * iw + ix0 + kx0, kx1 - kx0);
}

/* Wᵀδ of a conv layer for one batch element into gx (n_in values): each input sums δ over the
 * outputs its taps reach, sat(narrow(·, w_frac)). Shapes constant (generated sn_conv_back). */
SN_INLINE void sn_conv_backward(const sn_layer *L, const sn_val *d, sn_val *gx, const int k, const int ic,
                                const int ih, const int iw, const int oh, const int ow, const int st,
                                const int pad)
{
    const int plane = oh * ow;
    int c, iy, ix, o, ky, kx;
    for (c = 0; c < ic; c++)
        for (iy = 0; iy < ih; iy++)
            for (ix = 0; ix < iw; ix++) {
                sn_acc acc = 0;
                if (st == 1) {   /* input (iy, ix) meets output (iy + pad - ky, ix + pad - kx) */
                    const int ky0 = iy + pad - (oh - 1) > 0 ? iy + pad - (oh - 1) : 0;
                    const int ky1 = iy + pad < k - 1 ? iy + pad : k - 1;
                    const int kx0 = ix + pad - (ow - 1) > 0 ? ix + pad - (ow - 1) : 0;
                    const int kx1 = ix + pad < k - 1 ? ix + pad : k - 1;
                    for (o = 0; o < L->oc; o++) {
                        const sn_w *wo = L->w + (o * ic + c) * k * k;
                        for (ky = ky0; ky <= ky1; ky++) {
                            const int e = o * plane + (iy + pad - ky) * ow + ix + pad - kx0;
                            acc = sn_row_rev(acc, wo + ky * k + kx0, d, e, kx1 - kx0 + 1);
                        }
                    }
                } else {
                    for (o = 0; o < L->oc; o++)
                        for (ky = 0; ky < k; ky++) {
                            const int ty = iy + pad - ky;
                            if (ty < 0) break;
                            if (ty % st || ty / st >= oh) continue;
                            for (kx = 0; kx < k; kx++) {
                                const int tx = ix + pad - kx;
                                if (tx < 0) break;
                                if (tx % st || tx / st >= ow) continue;
                                acc += (sn_acc)d[o * plane + (ty / st) * ow + tx / st]
                                       * L->w[((o * ic + c) * k + ky) * k + kx];
                            }
                        }
                }
                gx[(c * ih + iy) * iw + ix] = (sn_val)SAT(NARROW(acc, L->w_frac));
            }
}

static void sn_conv_wtap(int l, int b, int p, sn_val dv, sn_acc *acc);
static void sn_conv_back(int l, const sn_val *d, sn_val *gx);

/* ΔW, Δθ, Δα of layer l at this step, output channel by output channel. δ comes from d (stored by
 * the caller) or, for the lowest learned layer, is computed here, each exactly once. */
static void sn_param_grads(int l, const sn_val *d)
{
    const sn_layer *L = &sn_layers[l];
    const int sw = STOPNP_E_FRAC + STOPNP_X_FRAC - STOPNP_G_FRAC;
    const int sv = STOPNP_E_FRAC + STOPNP_V_FRAC - STOPNP_G_FRAC;
    const int plane = L->oh * L->ow, n_out = L->n_out;
    const int per_channel = L->th_span != 1 && L->th_span != n_out;
    sn_acc acc_alpha = 0, acc_layer = 0;
    int o, b, p, i;
    for (o = 0; o < L->oc; o++) {
        sn_acc acc_channel = 0;
        if (L->op == 1)
            for (i = 0; i < L->ic * L->k * L->k; i++) sn_s64[i] = 0;
        for (p = 0; p < plane; p++) {
            const int j = o * plane + p;
            sn_acc acc_neuron = 0;
            sn_val db[B_];
            for (b = 0; b < B_; b++) {
                const int n = b * n_out + j;
                sn_val dv = d ? d[n] : sn_delta_at(L, l, b, j, o);
                db[b] = dv;
                if (L->spiking) {
                    sn_acc t = (sn_acc)dv * ((sn_acc)L->th_tr[n] - ONE_V);
                    acc_neuron += t;
                    acc_alpha += (sn_acc)dv * L->al_tr[n];
                }
                if (L->op == 1 && dv) sn_conv_wtap(l, b, p, dv, sn_s64);   /* δ·(its window of w~) */
            }
            if (L->op == 0) {   /* linear: ΔW[o, i] = Σ_b δ[b, o]·w~[b, i] */
                int any = 0;
                for (b = 0; b < B_; b++) any |= db[b] != 0;
                for (i = 0; i < L->n_in && any; i++) {   /* (none where every δ[b, o] is 0) */
                    sn_acc acc = 0;
                    for (b = 0; b < B_; b++) acc += (sn_acc)db[b] * L->w_tr[b * L->n_in + i];
                    sn_grad_weight(L, o * L->w_os + i * L->w_is, NARROW(acc, sw));
                }
            }
            if (L->spiking) {
                if (L->th_span == 1) sn_grad_theta(L, j, NARROW(acc_neuron, sv));
                else if (per_channel) acc_channel += acc_neuron;
                else acc_layer += acc_neuron;
            }
        }
        if (L->op == 1)
            for (i = 0; i < L->ic * L->k * L->k; i++)
                sn_grad_weight(L, o * L->ic * L->k * L->k + i, NARROW(sn_s64[i], sw));
        if (L->spiking && per_channel) sn_grad_theta(L, o, NARROW(acc_channel, sv));
    }
    if (!L->spiking) return;
    if (L->th_span == n_out) sn_grad_theta(L, 0, NARROW(acc_layer, sv));
#if STOPNP_ALPHA_MEAN
    acc_alpha = RDIV64(acc_alpha, n_out);
#endif
    sn_grad_alpha(L, NARROW(acc_alpha, sv));
}

/* sn_gx (B, n_in) = sat(narrow(Wᵀ δ, w_frac)) at the input of layer l */
static void sn_backward_input(int l, const sn_val *d)
{
    const sn_layer *L = &sn_layers[l];
    int b, i, o;
    for (b = 0; b < B_; b++) {
        const sn_val *db = d + b * L->n_out;
        sn_val *gb = SN_GX + b * L->n_in;
        if (L->op == 0) {
            for (i = 0; i < L->n_in; i++) {
                sn_acc acc = 0;
                for (o = 0; o < L->n_out; o++) acc += (sn_acc)db[o] * L->w[o * L->w_os + i * L->w_is];
                gb[i] = (sn_val)SAT(NARROW(acc, L->w_frac));
            }
            continue;
        }
        sn_conv_back(l, db, gb);
    }
}

void stopnp_learn_step(const sn_val *x, const int32_t *label, sn_val *out)
{
    int l, b, j;
    sn_forward(x, 1);
    sn_output(out);
    sn_output_error(label);
    for (l = STOPNP_N_LAYERS - 1; l >= STOPNP_LEARN_FROM; l--) {
        const sn_layer *L = &sn_layers[l];
        if (l == STOPNP_LEARN_FROM) {   /* nothing to send down: δ computed where it is used */
            sn_param_grads(l, 0);
            break;
        }
        for (b = 0; b < B_; b++)
            for (j = 0; j < L->n_out; j++)
                SN_D[b * L->n_out + j] = sn_delta_at(L, l, b, j, L->op ? j / (L->oh * L->ow) : j);
        sn_backward_input(l, SN_D);   /* with the W of this step, before an online update */
        sn_param_grads(l, SN_D);
    }
}

#if !STOPNP_ONLINE
void stopnp_apply(sn_lr lr_w, sn_lr lr_theta, sn_lr lr_alpha)
{
    int l, i;
    const int sv = STOPNP_LR_FRAC + STOPNP_G_FRAC - STOPNP_V_FRAC;
    const int sa = STOPNP_LR_FRAC + STOPNP_G_FRAC - STOPNP_A_FRAC;
    for (l = STOPNP_LEARN_FROM; l < STOPNP_N_LAYERS; l++) {
        const sn_layer *L = &sn_layers[l];
        const int sw = STOPNP_LR_FRAC + STOPNP_G_FRAC - L->w_frac;
        for (i = 0; i < L->n_w; i++) {
            L->wl[i] = SATW((sn_acc)L->w[i] - NARROW((sn_acc)lr_w * L->gw[i], sw));
            L->gw[i] = 0;
        }
        if (!L->spiking) continue;
        for (i = 0; i < L->n_theta; i++) {
            sn_acc t = SAT((sn_acc)L->theta[i] - NARROW((sn_acc)lr_theta * L->gth[i], sv));
            L->thl[i] = (sn_val)(t < STOPNP_THETA_MIN ? STOPNP_THETA_MIN : t);
            L->gth[i] = 0;
        }
        {
            sn_acc a = (sn_acc)L->alpha[0] - NARROW((sn_acc)lr_alpha * L->gal[0], sa);
            L->al[0] = (sn_val)(a < 0 ? 0 : (a > ONE_A ? ONE_A : a));
            L->gal[0] = 0;
        }
    }
}
#endif
#endif

int stopnp_n_weights(int layer) { return sn_layers[layer].n_w; }

/* weight i in (out, in) or (out, c, ky, kx) order, whatever the storage order */
sn_w stopnp_weight(int layer, int i)
{
    const sn_layer *L = &sn_layers[layer];
    if (L->op == 0) return L->w[(i / L->n_in) * L->w_os + (i % L->n_in) * L->w_is];
    return L->w[i];
}
const sn_val *stopnp_theta(int layer, int *n)
{
    *n = sn_layers[layer].n_theta;
    return sn_layers[layer].spiking ? sn_layers[layer].theta : 0;
}
const sn_val *stopnp_alpha(int layer) { return sn_layers[layer].alpha; }
