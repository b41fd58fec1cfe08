/* Run the exported network on one test input (build/sample.h) and print the predicted class.
 * prediction = argmax over classes of the output summed over the time steps (spike counts, or the
 * readout currents), as stopnp.predict does. */
#include <stdio.h>
#include "stopnp.h"
#include "sample.h"

#if STOPNP_BATCH != 1
#error "main.c runs one sample: export with --batch 1"
#endif

int main(void)
{
    static sn_val out[STOPNP_N_OUT];
    double sum[STOPNP_N_OUT] = {0};
    int t, c, best = 0;
    stopnp_init();
    stopnp_reset();
    for (t = 0; t < SAMPLE_T; t++) {
        stopnp_step(sample_x + t * STOPNP_N_IN, out);
        for (c = 0; c < STOPNP_N_OUT; c++) sum[c] += (double)out[c];
    }
    for (c = 1; c < STOPNP_N_OUT; c++)
        if (sum[c] > sum[best]) best = c;
    printf("predicted class %d (label %d); memory %d B parameters + %d B state\n", best, SAMPLE_LABEL,
           STOPNP_BYTES_PARAMS, STOPNP_BYTES_STATE);
    return 0;
}
