"""The engine under NUMBA_BOUNDSCHECK=1: numba then checks every index, so a kernel that reads or writes
past an array raises instead of corrupting memory. test_shapes_random.py (every kernel family: conv
direct/lowered/Winograd, pooling with rectangular windows, linear GEMMs, LIF, BN, elementwise, the BPTT,
SLTT, OTTT and BPSTA paths, on odd and non-square shapes) runs in a subprocess with the flag set before
numba compiles, and with its own NUMBA_CACHE_DIR so that no cached code compiled without checks is
reused. A negative control first proves the checks are on: an out-of-bounds pooling window raises."""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

CONTROL = """
import numpy as np
from stopnp.kernels import pool
x, out = np.zeros((1, 1, 6, 4)), np.zeros((1, 1, 1, 1))
try:
    pool.avgpool2d_forward(out, x, 6, 6)  # a 6 x 6 window on a 6 x 4 map: reads past each row
except Exception as e:  # IndexError (SystemError wrapping it inside a parallel loop)
    chain = [e, e.__cause__, e.__context__]
    assert any(isinstance(c, IndexError) for c in chain), repr(e)
    print("bounds checked")
else:
    raise SystemExit("NUMBA_BOUNDSCHECK=1 did not catch an out-of-bounds read")
"""


def _env():
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=os.path.join(
        tempfile.gettempdir(), f"stopnp-numba-boundscheck-{os.getuid() if hasattr(os, 'getuid') else 0}"))
    env.pop("NUMBA_DISABLE_JIT", None)
    return env


def test_engine_under_numba_boundscheck():
    r = subprocess.run([sys.executable, "-c", CONTROL], env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "bounds checked" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        os.path.join(HERE, "test_shapes_random.py")], env=_env(), capture_output=True, text=True,
                       timeout=1500, cwd=os.path.dirname(HERE))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "failed" not in r.stdout, r.stdout[-2000:]
