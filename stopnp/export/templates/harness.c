/* stopnp test harness: runs the exported network on test vectors written by Python
 * (stopnp.export.c.write_vectors; format in export/c.py: magic "SNPV", version 2) and compares every
 * step's outputs, membranes and spikes, and the learned parameters after each sequence.
 *
 *   harness VECTORS [ACTUAL]     exit 0: all equal (fixed point: bit for bit); 1: a mismatch; 2: bad file
 *
 * Float builds compare nothing bit-exactly: they report spike agreement and the largest membrane
 * difference, and write what they computed to ACTUAL (same layout) for Python to judge.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "stopnp.h"

static FILE *fin, *fout;
static long n_checked, n_bad;
#if !STOPNP_FIXED
static double max_dv;
#endif

static void die(const char *msg)
{
    fprintf(stderr, "harness: %s\n", msg);
    exit(2);
}

static uint32_t read_u32(void)
{
    unsigned char b[4];
    if (fread(b, 1, 4, fin) != 4) die("truncated vector file");
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

/* one value of the file's number type (int32 or float32, little-endian) as a double */
static double read_val(void)
{
    uint32_t u = read_u32();
#if STOPNP_FIXED
    return (double)(int32_t)u;
#else
    float f;
    memcpy(&f, &u, 4);
    return (double)f;
#endif
}

static void write_val(double v)
{
    unsigned char b[4];
    uint32_t u;
#if STOPNP_FIXED
    u = (uint32_t)(int32_t)v;
#else
    float f = (float)v;
    memcpy(&u, &f, 4);
#endif
    b[0] = (unsigned char)u; b[1] = (unsigned char)(u >> 8); b[2] = (unsigned char)(u >> 16); b[3] = (unsigned char)(u >> 24);
    if (fout && fwrite(b, 1, 4, fout) != 4) die("cannot write the output file");
}

static void check(const char *what, int seq, int t, int layer, int i, double got, int is_state)
{
    double want = read_val();
    write_val(got);
    n_checked++;
#if STOPNP_FIXED
    (void)is_state;
    if (got != want) {
        if (n_bad < 10)
            fprintf(stderr, "mismatch: %s seq %d step %d layer %d index %d: C %.0f, Python %.0f\n",
                    what, seq, t, layer, i, got, want);
        n_bad++;
    }
#else
    (void)what; (void)seq; (void)t; (void)layer; (void)i;
    if (is_state) { if (got - want > max_dv) max_dv = got - want; if (want - got > max_dv) max_dv = want - got; }
    else if (got != want) n_bad++;
#endif
}

int main(int argc, char **argv)
{
    static sn_val x[STOPNP_BATCH * STOPNP_N_IN], out[STOPNP_BATCH * STOPNP_N_OUT];
    static const int sizes[STOPNP_N_LAYERS] = STOPNP_LAYER_SIZES;
    uint32_t version, mode, n_seq, T, B, n_layers, n_in;
    int seq, t, l, i;
    if (argc < 2) die("usage: harness VECTORS [ACTUAL]");
    fin = fopen(argv[1], "rb");
    if (!fin) die("cannot open the vector file");
    fout = argc > 2 ? fopen(argv[2], "wb") : 0;
    if (read_u32() != 0x56504E53u) die("not a stopnp vector file (magic SNPV missing)");
    version = read_u32();
    if (version != 2) die("unsupported vector file version (this harness reads version 2)");
    mode = read_u32();
    n_seq = read_u32(); T = read_u32(); B = read_u32(); n_layers = read_u32(); n_in = read_u32();
    if ((int)(mode & 1) != STOPNP_LEARN || (int)((mode >> 1) & 1) != !STOPNP_FIXED
        || (int)((mode >> 2) & 1) != (STOPNP_LEARN && STOPNP_ONLINE))
        die("vector file mode (learn/float/online) does not match this build");
    if (B != STOPNP_BATCH || n_layers != STOPNP_N_LAYERS || n_in != STOPNP_N_IN)
        die("vector file sizes do not match this build");
    for (l = 0; l < STOPNP_N_LAYERS; l++) if ((int)read_u32() != sizes[l]) die("layer sizes differ");
    stopnp_init();
    for (seq = 0; seq < (int)n_seq; seq++) {
#if STOPNP_LEARN
        int32_t label[STOPNP_BATCH];
        sn_lr lr[3];
        for (i = 0; i < STOPNP_BATCH; i++) label[i] = (int32_t)read_u32();
        for (i = 0; i < 3; i++) lr[i] = (sn_lr)read_val();
#if STOPNP_ONLINE
        stopnp_set_rates(lr[0], lr[1], lr[2]);
#endif
#endif
        stopnp_reset();
        for (t = 0; t < (int)T; t++) {
            for (i = 0; i < STOPNP_BATCH * STOPNP_N_IN; i++) x[i] = (sn_val)read_val();
#if STOPNP_LEARN
            stopnp_learn_step(x, label, out);
#else
            stopnp_step(x, out);
#endif
            for (i = 0; i < STOPNP_BATCH * STOPNP_N_OUT; i++) check("output", seq, t, -1, i, out[i], !STOPNP_READOUT_SPIKING);
            for (l = 0; l < STOPNP_N_LAYERS; l++) {
                const sn_val *v = stopnp_membrane(l);
                for (i = 0; i < STOPNP_BATCH * sizes[l]; i++) check("membrane", seq, t, l, i, v[i], 1);
                for (i = 0; i < STOPNP_BATCH * sizes[l]; i++) check("spike", seq, t, l, i, stopnp_spike(l, i), 0);
            }
        }
#if STOPNP_LEARN
#if !STOPNP_ONLINE
        stopnp_apply(lr[0], lr[1], lr[2]);
#endif
        for (l = STOPNP_LEARN_FROM; l < STOPNP_N_LAYERS; l++) {
            int n = stopnp_n_weights(l);
            for (i = 0; i < n; i++) check("weight", seq, (int)T, l, i, stopnp_weight(l, i), 1);
            if (stopnp_theta(l, &n)) {
                const sn_val *th = stopnp_theta(l, &n);
                for (i = 0; i < n; i++) check("theta", seq, (int)T, l, i, th[i], 1);
                check("alpha", seq, (int)T, l, 0, stopnp_alpha(l)[0], 1);
            }
        }
#endif
    }
    if (fout) fclose(fout);
    fclose(fin);
#if STOPNP_FIXED
    printf("harness: %ld values compared, %ld mismatches (bit-exact check)\n", n_checked, n_bad);
    return n_bad ? 1 : 0;
#else
    printf("harness: %ld values, %ld spike/output mismatches, max |state difference| %.3g (float)\n",
           n_checked, n_bad, max_dv);
    return 0;
#endif
}
