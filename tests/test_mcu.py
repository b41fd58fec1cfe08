"""The exported C on Cortex-M: bit-exact under QEMU, within real memory maps, and fast enough.

Each program is cross-compiled with arm-none-eabi-gcc (C99, every warning an error) from the unchanged
generated engine and templates/harness.c, with examples/mcu's startup.c and cortexm.ld, and run on
QEMU's mps2-an385 (Cortex-M3) and mps2-an386 (Cortex-M4); ARMv6-M (Cortex-M0) code runs on the M3
board. The harness compares every output, membrane, spike and learned parameter with the Python
integer model (fixed/integer.py) and exits 1 on any difference (see the negative control).

Tools: gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm. Outside CI a missing tool skips
these tests; under CI (env CI or STOPNP_CI) it fails them.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import stopnp
from stopnp import data
from stopnp.fixed import integer as fixed
from stopnp.export import c as cexp

from nets import convnet, mlp3
from tools_needed import missing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "mcu"))
import cortexm as cm  # noqa: E402

LR_Q16 = 3277   # 0.05 in Q(lr_frac = 16): the learning rate of device.c's learning builds


@pytest.fixture(scope="module", autouse=True)
def _tools():
    absent = cm.missing_tools()
    if absent:
        missing(f"not installed: {', '.join(absent)} (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi "
                "qemu-system-arm)")


def _lenet():
    return stopnp.build("lenet5", model__readout="membrane")


def _digits(n_seq, T, B):
    """Built-in test digits as (n_seq, T, B, 1, 28, 28) and labels (n_seq, B)."""
    src = data.load("mnist-builtin", "test")
    xs, ys = [], []
    for x, y in data.batches(src, B, T, shuffle=False, dtype=np.float32):
        xs.append(np.ascontiguousarray(x))
        ys.append(y)
        if len(xs) == n_seq:
            break
    return np.stack(xs), np.stack(ys)


def _random(net, n_seq, T, B, seed=0):
    rng = np.random.default_rng(seed)
    x = (1.5 * rng.random((n_seq, T, B) + tuple(net.input_shape))).astype(np.float32)
    return x, rng.integers(0, net.n_classes, (n_seq, B))


def _export(path, net, x, y, learn, learn_last=0, online=False, lr=(0.1, 0.1, 0.1)):
    info = cexp.export(net, path, learn="stop" if learn else None, learn_last=learn_last, online=online,
                       batch=x.shape[2])
    q = cexp.write_vectors(os.path.join(path, "vectors.bin"), net, x, y if learn else None, learn_last=learn_last,
                           online=online, lr=lr)
    return info, q


def _harness(path, cpu, opt="-O2"):
    elf = cm.build(os.path.join(path, f"harness-{cpu}{opt}.elf"), [os.path.join(path, "stopnp.c"),
                   os.path.join(path, "harness.c")], cpu=cpu, opt=opt, stdio=True, heap="64K")
    return cm.run(elf, cpu, args=["vectors.bin"], cwd=path)


CASES = {   # name: (network, inputs, learn, learn_last, online)
    "conv-infer": (lambda: stopnp.build(convnet().config), "random", False, 0, False),
    "conv-learn": (lambda: stopnp.build(convnet(pool="maxpool", theta_mode="channel").config), "random", True, 0,
                   False),
    "conv-online": (lambda: stopnp.build(convnet(theta_mode="layer", surrogate="triangle").config), "random", True,
                    0, True),
    "mlp-last1": (lambda: stopnp.build(mlp3(readout="membrane").config), "random", True, 1, False),
    "lenet-infer": (_lenet, "digits", False, 0, False),
    "lenet-learn": (_lenet, "random", True, 0, False),
    "lenet-online": (_lenet, "random", True, 0, True),
    "lenet-last2": (_lenet, "random", True, 2, True),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (folder, info, QNet after the run), each exported once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            make, inputs, learn, last, online = CASES[name]
            net = make()
            small = not name.startswith("lenet")
            if inputs == "digits":
                x, y = _digits(2, 3, 1)
            else:
                x, y = _random(net, 3 if small else 2, 4 if small else 2, 2 if small else 1)
            path = str(tmp_path_factory.mktemp(name))
            info, q = _export(path, net, x, y, learn, last, online)
            cache[name] = (path, info, q, net)
        return cache[name]
    return get


@pytest.mark.parametrize("name, cpu, opt", [
    ("conv-infer", "cortex-m3", "-O2"), ("conv-infer", "cortex-m0", "-O0"), ("conv-learn", "cortex-m3", "-Os"),
    ("conv-learn", "cortex-m4", "-O3"), ("conv-learn", "cortex-m0", "-O2"), ("conv-online", "cortex-m4", "-O2"),
    ("mlp-last1", "cortex-m3", "-O2"),
    ("lenet-infer", "cortex-m3", "-O2"), ("lenet-infer", "cortex-m4", "-O2"), ("lenet-infer", "cortex-m0", "-Os"),
    ("lenet-learn", "cortex-m3", "-O2"), ("lenet-online", "cortex-m4", "-O2"), ("lenet-last2", "cortex-m3", "-O2"),
    ("lenet-last2", "cortex-m0", "-O2"),
])
def test_bit_exact_on_cortex_m(exported, name, cpu, opt):
    path, info, q, net = exported(name)
    rc, out = _harness(path, cpu, opt)
    assert rc == 0 and re.search(r"\b0 mismatches", out), out
    n = int(re.search(r"(\d+) values compared", out).group(1))
    per_step = sum(2 * ql.size for ql in q.layers) + q.layers[-1].size
    assert n >= per_step * 2 * 2, out      # every step's V and s of every layer were compared
    if info["learn"]:   # the parameters moved, so comparing them after the updates is not vacuous
        q0 = fixed.quantize(net)
        moved = [k for k in q.params if k.endswith(".weight") and not np.array_equal(q.params[k], q0.params[k])]
        assert len(moved) == len(net.layers) - info["learn_from"]


def test_negative_control_one_lsb(exported, tmp_path):
    """One expected membrane value changed by one LSB: the Cortex-M harness exits 1 and names it."""
    path, info, q, net = exported("conv-learn")
    raw = bytearray(open(os.path.join(path, "vectors.bin"), "rb").read())
    B = 2
    pos = 4 * (8 + len(net.layers)) + 4 * (B + 3)                 # header, labels, learning rates
    pos += 4 * (B * int(np.prod(net.input_shape)) + B * net.n_classes) + 4 * 5   # x, outputs, V of layer 0 [5]
    val = int.from_bytes(raw[pos:pos + 4], "little", signed=True)
    raw[pos:pos + 4] = (val + 1).to_bytes(4, "little", signed=True)
    (tmp_path / "vectors.bin").write_bytes(bytes(raw))
    elf = cm.build(str(tmp_path / "h.elf"), [os.path.join(path, "stopnp.c"), os.path.join(path, "harness.c")],
                   stdio=True, heap="64K")
    rc, out = cm.run(elf, "cortex-m3", args=["vectors.bin"], cwd=str(tmp_path))
    assert rc == 1 and "mismatch: membrane seq 0 step 0 layer 0 index 5" in out and "1 mismatches" in out, out
    rc, out = cm.run(elf, "cortex-m3", args=["missing.bin"], cwd=str(tmp_path))
    assert rc == 2 and "cannot open" in out


# ---------------------------------------------------------------------------------------------
# memory: LeNet-5 linked into the memory of real parts

FITS = {   # name: (export options, flash, RAM)
    "inference": (dict(), "256K", "32K"),
    "learn-last-two": (dict(learn="stop", learn_last=2, online=True), "256K", "64K"),
    "learn-all": (dict(learn="stop", online=True), "1M", "256K"),
}


def _device(path, net, cpu="cortex-m3", flash="4M", ram="4M", stack="1K", profile=False, passes=1, **kw):
    """Export ``net`` with a test digit as sample.h and link device.c for the memory map."""
    info = cexp.export(net, path, harness=False, **kw)
    x, y = _digits(1, net.config["data"]["T"], 1)
    cexp.write_sample(os.path.join(path, "sample.h"), net, x[0][:, 0], y[0][0])
    defines = {"DEVICE_LR": LR_Q16, "DEVICE_LEARN_PASSES": passes}
    if profile:
        defines["STOPNP_PROFILE"] = "device_profile"
    sources = [os.path.join(path, "stopnp.c"), os.path.join(cm.HERE, "device.c")]
    elf = cm.build(os.path.join(path, "device.elf"), sources, cpu=cpu, flash=flash, ram=ram, stack=stack,
                   defines=defines)
    return elf, info


@pytest.mark.parametrize("name", list(FITS))
def test_lenet5_fits_the_memory_map(tmp_path, name):
    opts, flash, ram = FITS[name]
    net = _lenet()
    elf, info = _device(str(tmp_path), net, flash=flash, ram=ram, **opts)   # ld fails if it does not fit
    linked = cm.linked_bytes(elf, info)
    hdr = (tmp_path / "stopnp.h").read_text()
    for key in ("const", "data", "bss"):
        assert f"#define STOPNP_BYTES_{key.upper()} {linked[key]}\n" in hdr, (key, linked)
    size = cm.sizes(elf)
    assert size["data"] >= linked["data"] and size["bss"] >= linked["bss"]
    if name != "learn-all":
        assert linked["data"] == info["footprint"]["data"] and "const sn_w sn_w0" in (tmp_path / "stopnp.c").read_text()
    rc, out = cm.run(elf, "cortex-m3", icount=True)
    assert rc == 0 and re.search(r"predicted class \d label \d", out), out
    if opts:
        assert "instructions per learning step" in out
    print(f"{name}: {size} flash {flash} RAM {ram}; {out.strip()}")


def test_memory_maps_refuse_what_does_not_fit(tmp_path):
    """Negative controls: the same links fail with less memory, or with the batch accumulators."""
    net = _lenet()
    with pytest.raises(RuntimeError, match="region `RAM' overflowed"):
        _device(str(tmp_path / "a"), net, flash="256K", ram="24K")
    with pytest.raises(RuntimeError, match="region `FLASH' overflowed"):
        _device(str(tmp_path / "b"), net, flash="128K", ram="32K")
    with pytest.raises(RuntimeError, match="region `RAM' overflowed"):
        _device(str(tmp_path / "c"), net, flash="1M", ram="256K", learn="stop")   # ΔW accumulators: no


# ---------------------------------------------------------------------------------------------
# speed: executed instructions (QEMU -icount), a deterministic figure

def _profile(out):
    """{layer: (instructions per step, dense MACs)} from device.c's profile lines."""
    rows = re.findall(r"layer (\d+) instructions (\d+) macs (\d+)", out)
    return {int(a): (int(b), int(c)) for a, b, c in rows}


def test_instruction_counter_is_exact(tmp_path):
    """board.h's counter under -icount: a loop of 3 instructions run 10^6 times reads 3·10^6 (to the
    40-instruction tick); without -icount the figure is the host's time and means nothing."""
    src = tmp_path / "cal.c"
    src.write_text('#include "board.h"\n'
                   'int main(void)\n{\n    unsigned n = 1000000u;\n    uint32_t t0, ins;\n    char b[12];\n'
                   '    int i = 11;\n    board_counter_start();\n    t0 = board_ticks();\n'
                   '    __asm__ volatile("1: nop\\n subs %0, %0, #1\\n bne 1b\\n" : "+r"(n));\n'
                   '    ins = (board_ticks() - t0) * BOARD_INSTRUCTIONS_PER_TICK;\n    b[i] = 0;\n'
                   '    do { b[--i] = (char)(48 + ins % 10); ins /= 10; } while (ins);\n'
                   '    board_print(b + i);\n    return 0;\n}\n')
    elf = cm.build(str(tmp_path / "cal.elf"), [str(src)], warnings=False)
    for cpu in ("cortex-m3", "cortex-m4"):
        rc, out = cm.run(elf, cpu, icount=True)
        assert rc == 0 and 3000000 - 40 <= int(out) <= 3000000 + 40, out


def test_instructions_per_mac(tmp_path):
    """The regression figures (docs/fixed-point-and-c.md): Cortex-M3, -O2, LeNet-5 on a test digit.

    Dense layers (the first conv; a linear layer on analog input) at most 8 instructions per
    multiply-accumulate (the engine before this test existed: 23), no 64-bit division in a step, and
    the spike-fed layers of LeNet-5 cheaper event-driven than gathered densely."""
    net = _lenet()
    elf, info = _device(str(tmp_path / "ev"), net, profile=True)
    rc, out = cm.run(elf, "cortex-m3", icount=True)
    assert rc == 0, out
    prof = _profile(out)
    step = int(re.search(r"instructions per time step (\d+)", out).group(1))
    conv1 = prof[0][0] / prof[0][1]
    assert conv1 <= 8.0, out
    nm = subprocess.run([cm.NM, elf], capture_output=True, text=True).stdout
    assert "__aeabi_ldivmod" not in nm and "__aeabi_uldivmod" not in nm
    elf_d, info_d = _device(str(tmp_path / "dense"), net, profile=True, events=False)
    rc, out_d = cm.run(elf_d, "cortex-m3", icount=True)
    prof_d = _profile(out_d)
    spiking = sum(prof[i][0] for i in range(1, 5))
    spiking_d = sum(prof_d[i][0] for i in range(1, 5))
    assert spiking < 0.8 * spiking_d, (out, out_d)
    assert step <= 5 * sum(info["macs"]), out            # 23 per dense MAC before
    mlp = stopnp.build({"model": {"name": "custom", "input_shape": [1, 28, 28], "n_classes": 10,
                                  "readout": "membrane", "layers": [{"type": "flatten"},
                                                                    {"type": "linear", "out": 100},
                                                                    {"type": "linear", "out": 10}]}})
    elf_m, _ = _device(str(tmp_path / "mlp"), mlp, profile=True)
    rc, out_m = cm.run(elf_m, "cortex-m3", icount=True)
    lin = _profile(out_m)[0]
    assert lin[0] / lin[1] <= 8.0, out_m
    print(f"LeNet-5 step {step} instructions ({step / sum(info['macs']):.2f} per dense MAC); conv1 {conv1:.2f}/MAC; "
          f"spike-fed layers {spiking} event-driven vs {spiking_d} dense; linear {lin[0] / lin[1]:.2f}/MAC")


# ---------------------------------------------------------------------------------------------
# host builds: every warning, and the sanitizers

def test_host_sanitizers_at_saturating_rates(tmp_path):
    """UBSan and ASan on the host harness, learning at a rate that drives weights into saturation."""
    net = stopnp.build(convnet().config)
    x, y = _random(net, 3, 3, 2)
    for online in (False, True):
        path = tmp_path / f"o{int(online)}"
        info, q = _export(str(path), net, x, y, True, online=online, lr=(2000.0, 2000.0, 2000.0))
        lo, hi = q.fmt.w_range
        assert any(np.any((q.params[k] == lo) | (q.params[k] == hi)) for k in q.params if k.endswith(".weight"))
        rc, out = cexp.compile_and_check(str(path), str(path / "vectors.bin"),
                                         flags=("-O1", "-g", "-fsanitize=address,undefined",
                                                "-fno-sanitize-recover=all"))
        assert rc == 0 and "0 mismatches" in out and "runtime error" not in out, out


# ---------------------------------------------------------------------------------------------
# the on-device adaptation example

def test_on_device_example_c_equals_python(tmp_path):
    """examples/on_device/adapt.py on a few samples: every way of learning runs on the Cortex-M3 in its
    memory map, and its accuracies and parameter checksum equal the Python integer model's."""
    sys.path.insert(0, os.path.join(ROOT, "examples", "on_device"))
    import adapt
    ckpt = tmp_path / "lenet.h5"
    stopnp.save(_lenet(), ckpt)
    out = tmp_path / "out"
    assert adapt.main(["--ckpt", str(ckpt), "--stream", "3", "--test", "6", "--every", "2", "--out", str(out),
                       "--lr", "0.2"]) == 0
    res = __import__("json").loads((out / "results.json").read_text())
    assert all(r["bit_exact"] for r in res["modes"].values())
    learned = [r for r in res["modes"].values() if r["learn_last"] is not None]
    assert all(r["checksum_c"] == r["checksum_python"] and len(r["curve"]) == 3 for r in learned)
    assert len({r["checksum_c"] for r in learned}) == 3       # each way of learning changed other parameters
    assert (out / "adaptation.png").stat().st_size > 0
