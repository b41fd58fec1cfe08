"""Cross-compile an exported network (stopnp export c) for a Cortex-M and run it under QEMU.

QEMU's MPS2 boards stand in for the part: mps2-an385 (Cortex-M3) and mps2-an386 (Cortex-M4) map
4 MiB at 0x00000000 (flash here) and 4 MiB at 0x20000000 (RAM); ARMv6-M (Cortex-M0) code runs on the
M3 board. startup.c and cortexm.ld (this folder) make the program; the memory map of the real part
is given to the linker, which fails when the program does not fit it. Programs talk to the host by
semihosting (stdout, files, the exit status).

    elf = build("out/net.elf", ["out/stopnp.c", HERE/"device.c"], cpu="cortex-m3", flash="256K", ram="32K")
    rc, out = run(elf, "cortex-m3", icount=True)
    sizes(elf)      {"text": ..., "data": ..., "bss": ...}  (arm-none-eabi-size)
    symbols(elf)    {name: (bytes, section)} of the data objects

Instruction counts: with ``icount=True`` QEMU runs with ``-icount shift=0``, where the virtual clock
advances exactly 1 ns per executed instruction; the program reads a 25 MHz timer of that clock
(board.h), so it counts instructions to within 40, the same on every run.
"""
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
BOARDS = {"cortex-m3": "mps2-an385", "cortex-m4": "mps2-an386", "cortex-m0": "mps2-an385"}
CC, SIZE, NM, QEMU = "arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm"
TOOLS = (CC, SIZE, NM, QEMU)
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Wconversion", "-Wshadow", "-Werror"]


def missing_tools():
    """The tools of this module that are not installed (Debian: gcc-arm-none-eabi,
    libnewlib-arm-none-eabi, qemu-system-arm)."""
    return [t for t in TOOLS if shutil.which(t) is None]


def _bytes(v):
    """'256K' / '1M' / 4096 -> int."""
    if isinstance(v, int):
        return v
    v = str(v).strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20}.get(v[-1:], 1)
    return int(v.rstrip("KM")) * mult


def build(elf, sources, *, cpu="cortex-m3", opt="-O2", flash="4M", ram="4M", stack="2K", heap=0, stdio=False,
          include=(), defines=None, warnings=True):
    """Compile and link ``sources`` (with startup.c) into ``elf`` for the memory map flash/ram.

    ``stdio``: link newlib with semihosting (fopen, printf: the test harness) and give malloc ``heap``
    bytes. Returns the path; raises RuntimeError with the compiler's or linker's message."""
    flags = [f"-mcpu={cpu}", "-mthumb", opt, "-g"] + (WARNINGS if warnings else ["-std=c99"])
    incs = [f"-I{d}" for d in list(include) + [HERE]]
    incs += [f"-I{os.path.dirname(os.path.abspath(s))}" for s in sources]
    defs = [f"-D{k}={v}" for k, v in (defines or {}).items()]
    link = ["-T", os.path.join(HERE, "cortexm.ld"), "-nostartfiles",
            f"-Wl,--defsym=__flash_size={_bytes(flash)}", f"-Wl,--defsym=__ram_size={_bytes(ram)}",
            f"-Wl,--defsym=__stack_size={_bytes(stack)}", f"-Wl,--defsym=__heap_size={_bytes(heap)}",
            "-Wl,--gc-sections", f"-Wl,-Map={os.path.splitext(elf)[0]}.map"]
    if stdio:
        link.append("--specs=rdimon.specs")
    else:
        link.append("--specs=nano.specs")
    # startup.c uses GNU asm and attributes: not under -Wpedantic
    cmd = [CC, *flags, "-ffunction-sections", "-fdata-sections", *incs, *defs, *[str(s) for s in sources],
           "-x", "c", "-std=gnu99", "-Wno-pedantic", os.path.join(HERE, "startup.c"), "-x", "none", *link, "-o", elf]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{r.stderr}")
    return elf


def run(elf, cpu="cortex-m3", args=(), *, icount=False, timeout=300, cwd=None):
    """Run ``elf`` on the QEMU board for ``cpu``; returns (exit status, stdout + stderr)."""
    semi = "enable=on,target=native" + "".join(f",arg={a}" for a in ["prog", *args])
    cmd = [QEMU, "-M", BOARDS[cpu], "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", semi, "-kernel", os.path.abspath(elf)]
    if icount:
        cmd[1:1] = ["-icount", "shift=0,align=off,sleep=off"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return r.returncode, r.stdout + r.stderr


def sizes(elf):
    """text, data, bss of ``elf`` as arm-none-eabi-size reports them (Berkeley format)."""
    out = subprocess.run([SIZE, elf], capture_output=True, text=True, check=True).stdout.split("\n")[1].split()
    return {"text": int(out[0]), "data": int(out[1]), "bss": int(out[2])}


def symbols(elf):
    """{name: (bytes, section letter)} of the sized data objects of ``elf`` (nm -S)."""
    out = subprocess.run([NM, "-S", elf], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].lower() in "rdb":
            syms[parts[3]] = (int(parts[1], 16), parts[2].lower())
    return syms


def linked_bytes(elf, info):
    """Bytes of the exported arrays as linked in ``elf``, summed by where they live (const, data, bss):
    what the header's STOPNP_BYTES_CONST/DATA/BSS state. ``info``: export's return value."""
    syms = symbols(elf)
    where = {"r": "const", "d": "data", "b": "bss"}
    got = {"const": 0, "data": 0, "bss": 0}
    for name in info["arrays"]:
        nbytes, sec = syms[name]
        got[where[sec]] += nbytes
    return got
