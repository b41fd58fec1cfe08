"""The wheel works on its own: built from the sources, installed into a fresh virtual environment (its
dependencies resolved by pip from the configured index), and run from an unrelated folder with the data
folder in a temporary STOPNP_DATA. The default `stopnp train` (LeNet-5, STOP-WTL, built-in MNIST) runs one
epoch and learns; the recipes and the built-in set come from the installed package; datasets and caches
land in the data folder; site-packages gains nothing but numba's and Python's compiled caches."""
import os
import re
import shutil
import subprocess
import sys
import venv

import pytest

from test_data_formats import write_mnist_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CI = bool(os.environ.get("CI") or os.environ.get("STOPNP_CI"))
COMPILED = (".pyc", ".nbi", ".nbc")


def _run(cmd, cwd, env, timeout=900):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _unavailable(what, proc):
    """Outside CI a machine without the package index skips; under CI that is a failure."""
    msg = f"{what} failed: {(proc.stderr or proc.stdout)[-1500:]}"
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def _files(folder):
    return {os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs}


@pytest.mark.slow
def test_wheel_in_a_fresh_venv(tmp_path):
    src = tmp_path / "src"  # only what a wheel is built from: no checkout state, no data/ folder
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(os.path.join(ROOT, "stopnp"), src / "stopnp",
                    ignore=shutil.ignore_patterns("__pycache__", *(f"*{e}" for e in COMPILED)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STOPNP_DATA", "VIRTUAL_ENV")}
    build = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                  str(src)], tmp_path, env)
    if build.returncode != 0:
        _unavailable("pip wheel", build)
    wheel = next((tmp_path / "dist").glob("stopnp-*.whl"))

    vdir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(vdir)
    bindir = vdir / ("Scripts" if os.name == "nt" else "bin")
    py, stopnp = str(bindir / "python"), str(bindir / "stopnp")
    install = _run([py, "-m", "pip", "install", "-q", "--no-compile", str(wheel)], tmp_path, env)
    if install.returncode != 0:
        _unavailable("pip install of the wheel and its dependencies", install)
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
    site = site.stdout.strip()
    before = _files(site)

    home = tmp_path / "elsewhere"  # an unrelated working folder: nothing of the checkout is reachable
    home.mkdir()
    env["STOPNP_DATA"] = str(tmp_path / "userdata")
    where = _run([py, "-c", "import stopnp, stopnp.recipes as r, stopnp.data.paths as p; "
                            "print(stopnp.__file__); print(p.builtin_path()); print(r.path('mnist-lenet5'))"],
                 home, env)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(site + os.sep), (line, site)  # the installed copy, not the sources

    v = _run([stopnp, "--version"], home, env)
    assert v.returncode == 0 and re.match(r"stopnp \d+\.\d+\.\d+ \(python .*numba", v.stdout), v.stdout
    for argv, words in ((["compare", "--help"], "rule-<rule>"), (["recipes"], "fashion-lenet5"),
                        (["train", "fashion-lenet5", "--print-config"], '"fashion-mnist"')):
        r = _run([stopnp, *argv], home, env)
        assert r.returncode == 0 and words in r.stdout, (argv, r.stdout, r.stderr)
    r = _run([py, "-c", "from stopnp.tools.compare import rule_config; print(rule_config('bptt', 1, 0, 'x')['rule'])"],
             home, env)
    assert r.returncode == 0 and "'name': 'bptt'" in r.stdout, r.stderr

    # data convert / get: caches and downloads go to the data folder
    raw = tmp_path / "idx"
    raw.mkdir()
    write_mnist_folder(str(raw))
    r = _run([stopnp, "data", "convert", "mnist", str(raw)], home, env)
    assert r.returncode == 0 and r.stdout.strip() == f"wrote {tmp_path}/userdata/cache/mnist.h5", r.stderr
    r = _run([stopnp, "data", "info", "mnist"], home, env)
    assert r.returncode == 0 and '"n": 7' in r.stdout, r.stderr
    r = _run([stopnp, "data", "get", "fashion-mnist", "--url", "http://127.0.0.1:9/"], home, env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Offline?" in r.stderr, r.stderr
    assert f"by hand into {tmp_path}/userdata/raw/fashion-mnist/" in r.stderr, r.stderr

    # the default run, one epoch, as a new user types it
    r = _run([stopnp, "train", "--epochs", "1", "--set", "data.limit_train=2000", "--set", "data.limit_test=500",
              "--quiet"], home, env)
    assert r.returncode == 0, r.stderr[-2000:]
    acc = float(re.search(r"best test accuracy ([\d.]+)%", r.stdout).group(1))
    assert acc > 50.0, r.stdout  # 10 classes: chance is 10 %
    assert (home / "runs" / "default" / "best.h5").is_file()

    gained = _files(site) - before
    assert all(f.endswith(COMPILED) and "__pycache__" in f for f in gained), sorted(gained)[:10]
    assert {f for f in _files(os.path.join(site, "stopnp")) if f.endswith(".h5")} == {"resources/mnist_builtin.h5"}
    assert _files(tmp_path / "userdata") == {os.path.join("cache", "mnist.h5")}


def test_version_names_stopnp_and_its_libraries(capsys):
    from importlib import metadata

    import stopnp
    from stopnp.cli import main
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"stopnp {stopnp.__version__} (python ")
    assert f"numba {metadata.version('numba')}" in out and f"numpy {metadata.version('numpy')}" in out
