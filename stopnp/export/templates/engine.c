/* ---- stopnp engine (template: export/templates/engine.c) -------------------------------------
 * The same arithmetic as stopnp/fixed.py, operation for operation (see its docstring for the
 * equations). Fixed point: every product is exact in int64, then one NARROW (shift right rounded
 * half away from zero) and a saturation; no libm, no malloc, no recursion. Float: the same code with
 * NARROW/SAT as identities and expf for the exponential.
 */
#if STOPNP_FIXED
static int64_t sn_rshift(int64_t a, int n)
{
    int64_t h;
    if (n <= 0) return a * ((int64_t)1 << (-n));
    h = (int64_t)1 << (n - 1);
    if (a >= 0) return (a + h) >> n;
    return -((-a + h) >> n);
}
static int64_t sn_rdiv(int64_t a, int64_t d)
{
    return a >= 0 ? (a + d / 2) / d : -((-a + d / 2) / d);
}
static int32_t sn_sat32(int64_t a)
{
    return a > INT32_MAX ? INT32_MAX : (a < INT32_MIN ? INT32_MIN : (int32_t)a);
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
#define RDIV(a, d) sn_rdiv((a), (d))
#define EXPN(z) sn_exp_neg((z), STOPNP_V_FRAC, STOPNP_P_FRAC)
#define ABS(a) ((a) < 0 ? -(a) : (a))
#else
#define NARROW(a, n) ((void)(n), (a))
#define SAT(a) (a)
#define SATW(a) (a)
#define RDIV(a, d) ((a) / (float)(d))
#define EXPN(z) expf(z)
#define ABS(a) fabsf(a)
#endif

#define ONE_X STOPNP_ONE(STOPNP_X_FRAC)
#define ONE_V STOPNP_ONE(STOPNP_V_FRAC)
#define ONE_P STOPNP_ONE(STOPNP_P_FRAC)
#define ONE_A STOPNP_ONE(STOPNP_A_FRAC)

#if STOPNP_LEARN
static sn_val sn_phi(sn_acc z)
{
    sn_acc az = ABS(z);
#if STOPNP_SURROGATE == 0
    return (sn_val)EXPN(-az);
#elif STOPNP_SURROGATE == 1
    sn_acc p = ONE_P - NARROW(az, STOPNP_V_FRAC - STOPNP_P_FRAC);
    return (sn_val)(p > 0 ? p : 0);
#else
    return (sn_val)(2 * az < ONE_V ? ONE_P : 0);
#endif
}
#endif

/* value of the source map at flat index i: the network input, or a spike of the layer below */
static sn_val sn_src(const sn_val *in, const uint8_t *s, int i)
{
    return in ? in[i] : (s[i] ? (sn_val)ONE_X : (sn_val)0);
}

/* x = pool(source) (or a copy), for the whole batch */
static void sn_layer_input(sn_layer *L, const sn_val *in, const uint8_t *s)
{
    int b, c, y, x, dy, dx, k = L->pk;
    int ns = L->sc * L->sh * L->sw;
    for (b = 0; b < STOPNP_BATCH; b++) {
        const sn_val *ib = in ? in + b * ns : 0;
        const uint8_t *sb = in ? 0 : s + b * ns;
        sn_val *xb = L->x + b * L->n_in;
        if (L->pool == 0) {
            for (c = 0; c < L->n_in; c++) xb[c] = sn_src(ib, sb, c);
            continue;
        }
        for (c = 0; c < L->ic; c++)
            for (y = 0; y < L->ih; y++)
                for (x = 0; x < L->iw; x++) {
                    sn_acc acc = 0;
                    sn_val m = 0;
                    for (dy = 0; dy < k; dy++)
                        for (dx = 0; dx < k; dx++) {
                            sn_val v = sn_src(ib, sb, (c * L->sh + y * k + dy) * L->sw + x * k + dx);
                            acc += v;
                            if ((dy == 0 && dx == 0) || v > m) m = v;
                        }
                    xb[(c * L->ih + y) * L->iw + x] = L->pool == 2 ? m : (sn_val)RDIV(acc, k * k);
                }
    }
}

/* I = sat(narrow(W ⊛ x)) + bias, written into cur (B, n_out) */
static void sn_current(const sn_layer *L, sn_val *cur)
{
    int b, o, c, y, x, ky, kx;
    for (b = 0; b < STOPNP_BATCH; b++) {
        const sn_val *xb = L->x + b * L->n_in;
        sn_val *cb = cur + b * L->n_out;
        if (L->op == 0) {
            for (o = 0; o < L->n_out; o++) {
                sn_acc acc = 0;
                const sn_w *w = L->w + o * L->n_in;
                for (c = 0; c < L->n_in; c++) acc += (sn_acc)w[c] * xb[c];
                cb[o] = (sn_val)SAT((sn_acc)SAT(NARROW(acc, L->w_frac + STOPNP_X_FRAC - STOPNP_V_FRAC)) + L->bias[o]);
            }
            continue;
        }
        for (o = 0; o < L->oc; o++)
            for (y = 0; y < L->oh; y++)
                for (x = 0; x < L->ow; x++) {
                    sn_acc acc = 0;
                    for (c = 0; c < L->ic; c++)
                        for (ky = 0; ky < L->k; ky++) {
                            int iy = y * L->stride + ky - L->pad;
                            if (iy < 0 || iy >= L->ih) continue;
                            for (kx = 0; kx < L->k; kx++) {
                                int ix = x * L->stride + kx - L->pad;
                                if (ix < 0 || ix >= L->iw) continue;
                                acc += (sn_acc)L->w[((o * L->ic + c) * L->k + ky) * L->k + kx]
                                       * xb[(c * L->ih + iy) * L->iw + ix];
                            }
                        }
                    cb[(o * L->oh + y) * L->ow + x] = (sn_val)SAT(
                        (sn_acc)SAT(NARROW(acc, L->w_frac + STOPNP_X_FRAC - STOPNP_V_FRAC)) + L->bias[o]);
                }
    }
}

static int sn_theta_index(const sn_layer *L, int j)
{
    return j / (L->n_out / L->n_theta);   /* per neuron, per channel (C,H,W order) or per layer */
}

#if STOPNP_LEARN
/* STOP traces from V[t-1], s[t-1] and x[t] (before the charge of step t) */
static void sn_traces(sn_layer *L)
{
    int i, n = STOPNP_BATCH * L->n_in;
    sn_acc a = L->spiking ? (sn_acc)L->alpha[0] : 0;
    for (i = 0; i < n; i++) L->w_tr[i] = (sn_val)SAT(NARROW(a * L->w_tr[i], STOPNP_A_FRAC) + L->x[i]);
    if (!L->spiking) return;
    n = STOPNP_BATCH * L->n_out;
    for (i = 0; i < n; i++) {
        L->th_tr[i] = (sn_val)SAT(NARROW(a * ((sn_acc)L->th_tr[i] - (L->s[i] ? ONE_V : 0)), STOPNP_A_FRAC));
        L->al_tr[i] = (sn_val)SAT(NARROW(a * L->al_tr[i], STOPNP_A_FRAC) + L->v[i]);
    }
}
#endif

/* charge, fire, reset (readout: v = I) */
static void sn_neurons(sn_layer *L, const sn_val *cur, int learn)
{
    int b, j;
    for (b = 0; b < STOPNP_BATCH; b++)
        for (j = 0; j < L->n_out; j++) {
            int i = b * L->n_out + j;
            sn_val th;
            sn_acc u;
            if (!L->spiking) { L->v[i] = cur[i]; continue; }
            th = L->theta[sn_theta_index(L, j)];
            u = SAT(NARROW((sn_acc)L->alpha[0] * L->v[i], STOPNP_A_FRAC) + cur[i]);
            L->s[i] = (uint8_t)(u >= th);
#if STOPNP_RESET_HARD
            L->v[i] = L->s[i] ? (sn_val)0 : (sn_val)u;
#else
            L->v[i] = L->s[i] ? (sn_val)SAT(u - th) : (sn_val)u;
#endif
#if STOPNP_LEARN
            if (learn) L->phi[i] = sn_phi(u - th);
#else
            (void)learn;
#endif
        }
}

static void sn_forward(const sn_val *input, int learn)
{
    int l;
    for (l = 0; l < STOPNP_N_LAYERS; l++) {
        sn_layer *L = &sn_layers[l];
        sn_layer_input(L, l == 0 ? input : 0, l == 0 ? 0 : sn_layers[l - 1].s);
#if STOPNP_LEARN
        if (learn && l >= STOPNP_LEARN_FROM) sn_traces(L);
#endif
        sn_current(L, sn_cur);
        sn_neurons(L, sn_cur, learn && l >= STOPNP_LEARN_FROM);
    }
}

static void sn_output(sn_val *out)
{
    const sn_layer *L = &sn_layers[STOPNP_N_LAYERS - 1];
    int i;
    for (i = 0; i < STOPNP_BATCH * L->n_out; i++)
        out[i] = L->spiking ? (sn_val)L->s[i] : L->v[i];
}

void stopnp_reset(void)
{
    int l, i;
    for (l = 0; l < STOPNP_N_LAYERS; l++) {
        sn_layer *L = &sn_layers[l];
        for (i = 0; i < STOPNP_BATCH * L->n_out; i++) { L->v[i] = 0; L->s[i] = 0; }
#if STOPNP_LEARN
        if (l < STOPNP_LEARN_FROM) continue;
        for (i = 0; i < STOPNP_BATCH * L->n_in; i++) L->w_tr[i] = 0;
        if (L->spiking)
            for (i = 0; i < STOPNP_BATCH * L->n_out; i++) { L->th_tr[i] = 0; L->al_tr[i] = 0; }
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
const uint8_t *stopnp_spikes(int layer) { return sn_layers[layer].s; }

#if STOPNP_LEARN
/* ∂E[t]/∂o = (softmax(o) - onehot(y)) / B into sn_g (B, n_out) */
static void sn_output_error(const int32_t *label)
{
    const sn_layer *L = &sn_layers[STOPNP_N_LAYERS - 1];
    int b, c, n = L->n_out;
    for (b = 0; b < STOPNP_BATCH; b++) {
        sn_acc m, sum = 0;
        const sn_val *o = L->spiking ? 0 : L->v + b * n;
        const uint8_t *s = L->s + b * n;
#define SN_O(c) (o ? (sn_acc)o[c] : (s[c] ? (sn_acc)ONE_V : 0))
        m = SN_O(0);
        for (c = 1; c < n; c++) if (SN_O(c) > m) m = SN_O(c);
        for (c = 0; c < n; c++) { sn_exp[c] = (sn_acc)EXPN(SN_O(c) - m); sum += sn_exp[c]; }
#undef SN_O
        for (c = 0; c < n; c++) {
#if STOPNP_FIXED
            sn_acc p = RDIV(sn_exp[c] * ONE_P, sum);
#else
            sn_acc p = sn_exp[c] / sum;
#endif
            if (c == label[b]) p -= ONE_P;
            sn_g[b * n + c] = (sn_val)RDIV(NARROW(p, STOPNP_P_FRAC - STOPNP_E_FRAC), STOPNP_BATCH);
        }
    }
}

static void sn_param_grads(sn_layer *L, const sn_val *d)
{
    int o, c, ky, kx, b, y, x, i, j, span;
    const int sh = STOPNP_E_FRAC + STOPNP_X_FRAC - STOPNP_G_FRAC;
    if (L->op == 0) {
        for (o = 0; o < L->n_out; o++)
            for (i = 0; i < L->n_in; i++) {
                sn_acc acc = 0;
                for (b = 0; b < STOPNP_BATCH; b++)
                    acc += (sn_acc)d[b * L->n_out + o] * L->w_tr[b * L->n_in + i];
                L->gw[o * L->n_in + i] = (sn_grad)SAT((sn_acc)L->gw[o * L->n_in + i] + NARROW(acc, sh));
            }
    } else {
        for (o = 0; o < L->oc; o++)
            for (c = 0; c < L->ic; c++)
                for (ky = 0; ky < L->k; ky++)
                    for (kx = 0; kx < L->k; kx++) {
                        sn_acc acc = 0;
                        int wi = ((o * L->ic + c) * L->k + ky) * L->k + kx;
                        for (b = 0; b < STOPNP_BATCH; b++)
                            for (y = 0; y < L->oh; y++) {
                                int iy = y * L->stride + ky - L->pad;
                                if (iy < 0 || iy >= L->ih) continue;
                                for (x = 0; x < L->ow; x++) {
                                    int ix = x * L->stride + kx - L->pad;
                                    if (ix < 0 || ix >= L->iw) continue;
                                    acc += (sn_acc)d[b * L->n_out + (o * L->oh + y) * L->ow + x]
                                           * L->w_tr[b * L->n_in + (c * L->ih + iy) * L->iw + ix];
                                }
                            }
                        L->gw[wi] = (sn_grad)SAT((sn_acc)L->gw[wi] + NARROW(acc, sh));
                    }
    }
    if (!L->spiking) return;
    span = L->n_out / L->n_theta;
    for (i = 0; i < L->n_theta; i++) {
        sn_acc acc = 0;
        for (b = 0; b < STOPNP_BATCH; b++)
            for (j = i * span; j < (i + 1) * span; j++)
                acc += (sn_acc)d[b * L->n_out + j] * ((sn_acc)L->th_tr[b * L->n_out + j] - ONE_V);
        L->gth[i] = (sn_grad)SAT((sn_acc)L->gth[i] + NARROW(acc, STOPNP_E_FRAC + STOPNP_V_FRAC - STOPNP_G_FRAC));
    }
    {
        sn_acc acc = 0;
        for (i = 0; i < STOPNP_BATCH * L->n_out; i++) acc += (sn_acc)d[i] * L->al_tr[i];
#if STOPNP_ALPHA_MEAN
        acc = RDIV(acc, L->n_out);
#endif
        L->gal[0] = (sn_grad)SAT((sn_acc)L->gal[0] + NARROW(acc, STOPNP_E_FRAC + STOPNP_V_FRAC - STOPNP_G_FRAC));
    }
}

/* sn_gx = sat(narrow(Wᵀ δ)) at the layer input, then through the pooling into sn_g at the layer below */
static void sn_backward_input(const sn_layer *L, const sn_val *d, const sn_layer *below)
{
    int b, c, i, o, y, x, ky, kx, dy, dx, k = L->pk;
    for (b = 0; b < STOPNP_BATCH; b++) {
        const sn_val *db = d + b * L->n_out;
        sn_val *gb = sn_gx + b * L->n_in;
        if (L->op == 0) {
            for (i = 0; i < L->n_in; i++) {
                sn_acc acc = 0;
                for (o = 0; o < L->n_out; o++) acc += (sn_acc)db[o] * L->w[o * L->n_in + i];
                gb[i] = (sn_val)SAT(NARROW(acc, L->w_frac));
            }
        } else {
            for (c = 0; c < L->ic; c++)
                for (y = 0; y < L->ih; y++)
                    for (x = 0; x < L->iw; x++) {
                        sn_acc acc = 0;
                        for (o = 0; o < L->oc; o++)
                            for (ky = 0; ky < L->k; ky++) {
                                int ty = y + L->pad - ky, oy;
                                if (ty < 0 || ty % L->stride) continue;
                                oy = ty / L->stride;
                                if (oy >= L->oh) continue;
                                for (kx = 0; kx < L->k; kx++) {
                                    int tx = x + L->pad - kx, ox;
                                    if (tx < 0 || tx % L->stride) continue;
                                    ox = tx / L->stride;
                                    if (ox >= L->ow) continue;
                                    acc += (sn_acc)db[(o * L->oh + oy) * L->ow + ox]
                                           * L->w[((o * L->ic + c) * L->k + ky) * L->k + kx];
                                }
                            }
                        gb[(c * L->ih + y) * L->iw + x] = (sn_val)SAT(NARROW(acc, L->w_frac));
                    }
        }
    }
    /* pooling backward into sn_g (δ, read above, is dead now): to the source map of `below` (spikes) */
    for (b = 0; b < STOPNP_BATCH; b++) {
        const sn_val *gb = sn_gx + b * L->n_in;
        {
            sn_val *g = sn_g + b * below->n_out;
            const uint8_t *s = below->s + b * below->n_out;
            if (L->pool == 0) {
                for (i = 0; i < L->n_in; i++) g[i] = gb[i];
                continue;
            }
            for (i = 0; i < below->n_out; i++) g[i] = 0;
            for (c = 0; c < L->ic; c++)
                for (y = 0; y < L->ih; y++)
                    for (x = 0; x < L->iw; x++) {
                        sn_val gv = gb[(c * L->ih + y) * L->iw + x];
                        int best = -1;
                        for (dy = 0; dy < k; dy++)
                            for (dx = 0; dx < k; dx++) {
                                int si = (c * L->sh + y * k + dy) * L->sw + x * k + dx;
                                if (L->pool == 1) g[si] = (sn_val)RDIV(gv, k * k);
                                else if (best < 0 || (s[si] && !s[best])) best = si;
                            }
                        if (L->pool == 2) g[best] = gv;
                    }
        }
    }
}

void stopnp_learn_step(const sn_val *x, const int32_t *label, sn_val *out)
{
    int l, i;
    sn_forward(x, 1);
    sn_output(out);
    sn_output_error(label);
    for (l = STOPNP_N_LAYERS - 1; l >= STOPNP_LEARN_FROM; l--) {
        sn_layer *L = &sn_layers[l];
        if (L->spiking)   /* δ = g ⊙ φ (a readout's δ is g itself) */
            for (i = 0; i < STOPNP_BATCH * L->n_out; i++)
                sn_g[i] = (sn_val)SAT(NARROW((sn_acc)sn_g[i] * L->phi[i], STOPNP_P_FRAC));
        sn_param_grads(L, sn_g);
        if (l > STOPNP_LEARN_FROM) sn_backward_input(L, sn_g, &sn_layers[l - 1]);
    }
}

void stopnp_apply(sn_lr lr_w, sn_lr lr_theta, sn_lr lr_alpha)
{
    int l, i;
    const int sv = STOPNP_LR_FRAC + STOPNP_G_FRAC - STOPNP_V_FRAC;
    const int sa = STOPNP_LR_FRAC + STOPNP_G_FRAC - STOPNP_A_FRAC;
    for (l = STOPNP_LEARN_FROM; l < STOPNP_N_LAYERS; l++) {
        sn_layer *L = &sn_layers[l];
        const int sw = STOPNP_LR_FRAC + STOPNP_G_FRAC - L->w_frac;
        for (i = 0; i < L->n_w; i++) {
            L->w[i] = SATW((sn_acc)L->w[i] - NARROW((sn_acc)lr_w * L->gw[i], sw));
            L->gw[i] = 0;
        }
        if (!L->spiking) continue;
        for (i = 0; i < L->n_theta; i++) {
            sn_acc t = SAT((sn_acc)L->theta[i] - NARROW((sn_acc)lr_theta * L->gth[i], sv));
            L->theta[i] = (sn_val)(t < STOPNP_THETA_MIN ? STOPNP_THETA_MIN : t);
            L->gth[i] = 0;
        }
        {
            sn_acc a = (sn_acc)L->alpha[0] - NARROW((sn_acc)lr_alpha * L->gal[0], sa);
            L->alpha[0] = (sn_val)(a < 0 ? 0 : (a > ONE_A ? ONE_A : a));
            L->gal[0] = 0;
        }
    }
}
#endif

const sn_w *stopnp_weights(int layer, int *n)
{
    *n = sn_layers[layer].n_w;
    return sn_layers[layer].w;
}
const sn_val *stopnp_theta(int layer, int *n)
{
    *n = sn_layers[layer].n_theta;
    return sn_layers[layer].spiking ? sn_layers[layer].theta : 0;
}
const sn_val *stopnp_alpha(int layer) { return sn_layers[layer].alpha; }
