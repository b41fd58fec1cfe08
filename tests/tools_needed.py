"""A test whose outside tool is missing (a compiler, QEMU, MPI, an optional extra): skipped with the reason,
except under CI (CI or STOPNP_CI set), which installs every tool, so there a missing one fails the test."""
import os

import pytest

CI = bool(os.environ.get("CI") or os.environ.get("STOPNP_CI"))


def missing(reason):
    """Skip (fail under CI) the calling test: ``reason`` names the tool and how to install it."""
    if CI:
        pytest.fail(reason)
    pytest.skip(reason)
