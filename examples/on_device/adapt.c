/* On-device adaptation on a Cortex-M: the exported network learns from a labelled stream, one sample
 * at a time (batch 1, STOP applied after every step: export with --learn stop --online), and is
 * evaluated on a test set before it starts and after every EVAL samples. Built without --learn it
 * only evaluates (the no-learning baseline). No stdio, no malloc: samples come from a host file by
 * semihosting, as they would come from a sensor.
 *
 *   qemu-system-arm -M mps2-an385 -icount shift=0 -nographic -monitor none -serial none \
 *       -semihosting-config enable=on,target=native,arg=adapt,arg=stream.bin -kernel adapt.elf
 *
 * stream.bin (written by adapt.py), little-endian int32: "SNAD", version 1, T, n_in, n_stream, n_test,
 * eval_every, lr_w, lr_theta, lr_alpha (Q(lr_frac)); then n_stream samples, then n_test samples, each
 * a label and one input frame of n_in values in Q(x_frac) (static input: the same frame every step).
 *
 * Prints "seen N correct C of M" at every evaluation, the instructions per learning step and per
 * inference step (QEMU -icount, board.h), and a checksum of the learned parameters (31 bits).
 */
#include "stopnp.h"
#include "board.h"

#if STOPNP_BATCH != 1 || (STOPNP_LEARN && !STOPNP_ONLINE)
#error "adapt.c learns one sample at a time: export with --batch 1 (and --learn stop --online)"
#endif

static sn_val x[STOPNP_N_IN], out[STOPNP_N_OUT];
static int fd;
static int32_t hdr[10];
static uint32_t infer_ticks, infer_steps;
#if STOPNP_LEARN
static uint32_t learn_ticks, learn_steps;
#endif

static void fail(const char *msg)
{
    board_print(msg);
    board_print("\n");
    board_exit(2);
}

/* the next sample of the file: its label, its frame in x */
static int32_t next_sample(void)
{
    int32_t label;
    if (board_read(fd, &label, 4) || board_read(fd, x, sizeof x)) fail("adapt: truncated stream file");
    return label;
}

static int predict(int T)
{
    long sum[STOPNP_N_OUT] = {0};
    int t, c, best = 0;
    uint32_t t0 = board_ticks();
    stopnp_reset();
    for (t = 0; t < T; t++) {
        stopnp_step(x, out);
        for (c = 0; c < STOPNP_N_OUT; c++) sum[c] += (long)out[c];
    }
    infer_ticks += board_ticks() - t0;
    infer_steps += (uint32_t)T;
    for (c = 1; c < STOPNP_N_OUT; c++)
        if (sum[c] > sum[best]) best = c;
    return best;
}

static void evaluate(long seen, uint32_t test_pos)
{
    int i, correct = 0;
    if (board_seek(fd, test_pos)) fail("adapt: cannot seek in the stream file");
    for (i = 0; i < hdr[5]; i++) {
        int32_t label = next_sample();
        correct += predict(hdr[2]) == label;
    }
    board_print_int("seen ", seen);
    board_print_int(" correct ", correct);
    board_print_int(" of ", hdr[5]);
    board_print("\n");
}

/* Σ over the learned layers of W_i·(i mod 251 + 1), θ_i·(i mod 251 + 1) and α, modulo 2^32 */
static uint32_t checksum(void)
{
    uint32_t sum = 0;
    int l, i, n;
    for (l = STOPNP_LEARN_FROM; l < STOPNP_N_LAYERS; l++) {
        const sn_val *th;
        for (i = 0; i < stopnp_n_weights(l); i++)
            sum += (uint32_t)(int32_t)stopnp_weight(l, i) * (uint32_t)(i % 251 + 1);
        th = stopnp_theta(l, &n);
        if (!th) continue;
        for (i = 0; i < n; i++) sum += (uint32_t)th[i] * (uint32_t)(i % 251 + 1);
        sum += (uint32_t)stopnp_alpha(l)[0];
    }
    return sum;
}

int main(int argc, char **argv)
{
    uint32_t test_pos, sample_bytes = 4 + sizeof x;
    long i;
    if (argc < 2) fail("usage: adapt STREAM_FILE");
    fd = board_open(argv[1]);
    if (fd < 0) fail("adapt: cannot open the stream file");
    if (board_read(fd, hdr, sizeof hdr) || hdr[0] != 0x44414E53 || hdr[1] != 1) fail("adapt: not a stream file");
    if (hdr[3] != STOPNP_N_IN) fail("adapt: the stream's input size differs from this network's");
    test_pos = (uint32_t)sizeof hdr + (uint32_t)hdr[4] * sample_bytes;
    board_counter_start();
    stopnp_init();
    evaluate(0, test_pos);
#if STOPNP_LEARN
    stopnp_set_rates(hdr[7], hdr[8], hdr[9]);
    for (i = 0; i < hdr[4]; i++) {
        int32_t label[1];
        int t;
        uint32_t t0;
        if (board_seek(fd, (uint32_t)sizeof hdr + (uint32_t)i * sample_bytes)) fail("adapt: cannot seek");
        label[0] = next_sample();
        t0 = board_ticks();
        stopnp_reset();
        for (t = 0; t < hdr[2]; t++) stopnp_learn_step(x, label, out);
        learn_ticks += board_ticks() - t0;
        learn_steps += (uint32_t)hdr[2];
        if ((i + 1) % hdr[6] == 0 || i + 1 == hdr[4]) evaluate(i + 1, test_pos);
    }
    board_print_int("instructions per learning step ", (long)(learn_ticks / learn_steps * BOARD_INSTRUCTIONS_PER_TICK));
    board_print("\n");
#else
    (void)i;
#endif
    board_print_int("instructions per inference step ",
                    (long)(infer_ticks / infer_steps * BOARD_INSTRUCTIONS_PER_TICK));
    board_print_int("\nchecksum ", (long)(checksum() & 0x7FFFFFFFu));
    board_print("\n");
    return 0;
}
