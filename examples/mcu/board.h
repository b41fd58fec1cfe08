/* What the Cortex-M example programs need from the board (QEMU mps2-an385/an386, semihosting):
 * print, exit with a status, read a host file, and count executed instructions.
 *
 * Instruction counter: QEMU's -icount shift=0 advances the virtual clock by exactly 1 ns per executed
 * instruction, and the board's CMSDK timer 0 counts down at 25 MHz of that clock, one tick per 40
 * instructions. board_instructions() therefore returns the instructions executed since
 * board_counter_start() to within 40, and the same number on every run of the same program (without
 * -icount the clock is the host's and the figure means nothing). On a real part, use the DWT cycle
 * counter instead.
 */
#ifndef BOARD_H
#define BOARD_H
#include <stdint.h>

static inline int board_semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static inline void board_print(const char *s) { board_semihost(0x04, (void *)s); }   /* SYS_WRITE0 */

static inline void board_exit(int status)
{
    uint32_t block[2] = { 0x20026u, (uint32_t)status };   /* ADP_Stopped_ApplicationExit, status */
    board_semihost(0x20, block);                          /* SYS_EXIT_EXTENDED */
    for (;;) board_semihost(0x18, (void *)0x20026u);      /* SYS_EXIT (status 0) if unsupported */
}

/* open a host file for binary reading: a handle >= 0, or -1 */
static inline int board_open(const char *path)
{
    uint32_t block[3];
    const char *p = path;
    while (*p) p++;
    block[0] = (uint32_t)path; block[1] = 1; block[2] = (uint32_t)(p - path);   /* mode "rb" */
    return board_semihost(0x01, block);
}

/* read n bytes: 0 when all were read */
static inline int board_read(int fd, void *buf, uint32_t n)
{
    uint32_t block[3];
    block[0] = (uint32_t)fd; block[1] = (uint32_t)buf; block[2] = n;
    return board_semihost(0x06, block);
}

/* move to byte position pos of an open file: 0 on success */
static inline int board_seek(int fd, uint32_t pos)
{
    uint32_t block[2];
    block[0] = (uint32_t)fd; block[1] = pos;
    return board_semihost(0x0A, block);
}

static inline void board_print_int(const char *label, long v)
{
    char buf[24];
    int i = sizeof buf - 1;
    unsigned long u = v < 0 ? 0ul - (unsigned long)v : (unsigned long)v;
    buf[i] = 0;
    do { buf[--i] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) buf[--i] = '-';
    board_print(label);
    board_print(buf + i);
}

#define BOARD_TIMER0 ((volatile uint32_t *)0x40000000u)   /* CTRL, VALUE, RELOAD */

static inline void board_counter_start(void)
{
    BOARD_TIMER0[0] = 0;
    BOARD_TIMER0[2] = 0xFFFFFFFFu;
    BOARD_TIMER0[1] = 0xFFFFFFFFu;
    BOARD_TIMER0[0] = 1;
}

static inline uint32_t board_ticks(void) { return 0xFFFFFFFFu - BOARD_TIMER0[1]; }
#define BOARD_INSTRUCTIONS_PER_TICK 40u
#endif
