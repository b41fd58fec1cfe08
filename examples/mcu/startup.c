/* Minimal Cortex-M startup (ARMv6-M and ARMv7-M) for QEMU's MPS2 boards with semihosting; linker
 * script cortexm.ld. Reset copies .data from flash, zeroes .bss, reads the command line from the
 * debugger (semihosting SYS_GET_CMDLINE: `qemu ... -semihosting-config enable=on,arg=prog,arg=file`),
 * calls main(argc, argv) and reports its return value as the exit status (SYS_EXIT_EXTENDED: QEMU
 * exits with it). A fault exits with status 3. Programs that use stdio link newlib's semihosting
 * library (--specs=rdimon.specs -nostartfiles): its stdin/stdout handles are opened here, and
 * malloc's heap is the __heap_size bytes that cortexm.ld reserves.
 */
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include "board.h"

extern uint32_t __data_load__[], __data_start__[], __data_end__[], __bss_start__[], __bss_end__[];
extern char __heap_start__[], __heap_end__[], __stack_top__[];
extern void initialise_monitor_handles(void) __attribute__((weak));
int main(int argc, char **argv);
void Reset_Handler(void);
void Fault_Handler(void);

__attribute__((section(".vectors"), used))
static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top__, Reset_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,   /* NMI .. usage */
    0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler,   /* SVC .. SysTick */
};

void Fault_Handler(void)
{
    board_print("fault: hard fault or unexpected exception\n");
    board_exit(3);
}

/* malloc's memory: the heap region of cortexm.ld and no more (newlib's own _sbrk grows toward sp) */
void *_sbrk(ptrdiff_t incr)
{
    static char *brk = __heap_start__;
    char *prev = brk;
    if (incr > __heap_end__ - brk || incr < __heap_start__ - brk) {
        errno = ENOMEM;
        return (void *)-1;
    }
    brk += incr;
    return prev;
}

/* newlib's exit() runs the destructor list and then _fini (crti.o, left out with -nostartfiles) */
void _init(void) {}
void _fini(void) {}

#define MAX_ARGS 8
static char cmdline[256];
static char *argv_[MAX_ARGS + 1];

static int read_args(void)
{
    struct { char *buf; uint32_t len; } block = { cmdline, sizeof cmdline - 1 };
    int argc = 0;
    char *p = cmdline;
    if (board_semihost(0x15, &block) != 0) return 0;    /* SYS_GET_CMDLINE */
    cmdline[block.len] = 0;
    while (*p && argc < MAX_ARGS) {
        while (*p == ' ') *p++ = 0;
        if (!*p) break;
        argv_[argc++] = p;
        while (*p && *p != ' ') p++;
    }
    argv_[argc] = 0;
    return argc;
}

void Reset_Handler(void)
{
    uint32_t *src = __data_load__, *dst = __data_start__;
    int argc;
    while (dst < __data_end__) *dst++ = *src++;
    for (dst = __bss_start__; dst < __bss_end__; dst++) *dst = 0;
    if (initialise_monitor_handles) initialise_monitor_handles();
    argc = read_args();
    board_exit(main(argc, argv_));
}
