/* The exported network on a Cortex-M, with nothing but the engine, this file and startup.c: no
 * stdio, no malloc. Runs test input sample.h (flash) for SAMPLE_T steps and prints the predicted class
 * and the instructions per time step (QEMU -icount; see board.h). A learning build (--learn stop) first
 * learns from the sample DEVICE_LEARN_PASSES times (stopnp_learn_step at every time step; a batch
 * build then calls stopnp_apply) with learning rate DEVICE_LR in Q(lr_frac), and also prints the
 * instructions per learning step. Built with -DSTOPNP_PROFILE=device_profile it prints the
 * instructions of every layer per inference step, and per dense multiply-accumulate.
 *
 *   qemu-system-arm -M mps2-an385 -icount shift=0 -nographic -monitor none -serial none \
 *       -semihosting-config enable=on,target=native -kernel device.elf
 */
#include "stopnp.h"
#include "sample.h"
#include "board.h"

#if STOPNP_BATCH != 1
#error "device.c runs one sample: export with --batch 1"
#endif
#ifndef DEVICE_LEARN_PASSES
#define DEVICE_LEARN_PASSES 1
#endif
#ifndef DEVICE_LR
#define DEVICE_LR 0
#endif

#define print_int board_print_int

#ifdef STOPNP_PROFILE
static uint32_t layer_ticks[STOPNP_N_LAYERS], last_ticks;
static int profiling;
void device_profile(int layer)
{
    uint32_t now = board_ticks();
    if (profiling && layer > 0) layer_ticks[layer - 1] += now - last_ticks;
    last_ticks = now;
}
#endif

static int predict(uint32_t *ticks)
{
    static sn_val out[STOPNP_N_OUT];
    long sum[STOPNP_N_OUT] = {0};
    int t, c, best = 0;
    uint32_t t0;
    stopnp_reset();
    t0 = board_ticks();
    for (t = 0; t < SAMPLE_T; t++) {
        stopnp_step(sample_x + t * STOPNP_N_IN, out);
        for (c = 0; c < STOPNP_N_OUT; c++) sum[c] += (long)out[c];
    }
    *ticks = board_ticks() - t0;
    for (c = 1; c < STOPNP_N_OUT; c++)
        if (sum[c] > sum[best]) best = c;
    return best;
}

int main(void)
{
    uint32_t ticks;
    int best;
    board_counter_start();
    stopnp_init();
#if STOPNP_LEARN
    {
        static sn_val out[STOPNP_N_OUT];
        const int32_t label[1] = { SAMPLE_LABEL };
        int pass, t;
        uint32_t t0 = board_ticks();
#if STOPNP_ONLINE
        stopnp_set_rates(DEVICE_LR, DEVICE_LR, DEVICE_LR);
#endif
        for (pass = 0; pass < DEVICE_LEARN_PASSES; pass++) {
            stopnp_reset();
            for (t = 0; t < SAMPLE_T; t++) stopnp_learn_step(sample_x + t * STOPNP_N_IN, label, out);
#if !STOPNP_ONLINE
            stopnp_apply(DEVICE_LR, DEVICE_LR, DEVICE_LR);
#endif
        }
        print_int("instructions per learning step ",
                  (long)((board_ticks() - t0) * BOARD_INSTRUCTIONS_PER_TICK / (DEVICE_LEARN_PASSES * SAMPLE_T)));
        board_print("\n");
    }
#endif
#ifdef STOPNP_PROFILE
    profiling = 1;
#endif
    best = predict(&ticks);
    print_int("predicted class ", best);
    print_int(" label ", SAMPLE_LABEL);
    print_int("\ninstructions per time step ", (long)(ticks * BOARD_INSTRUCTIONS_PER_TICK / SAMPLE_T));
    print_int(" dense MACs ", STOPNP_MACS);
    board_print("\n");
#ifdef STOPNP_PROFILE
    {
        static const long macs[STOPNP_N_LAYERS] = STOPNP_LAYER_MACS;
        int l;
        for (l = 0; l < STOPNP_N_LAYERS; l++) {
            long ins = (long)(layer_ticks[l] * BOARD_INSTRUCTIONS_PER_TICK / SAMPLE_T);
            print_int("layer ", l);
            print_int(" instructions ", ins);
            print_int(" macs ", macs[l]);
            print_int(" per-mac-x100 ", ins * 100 / macs[l]);
            board_print("\n");
        }
    }
#endif
    return 0;
}
