"""The layout of docs/design.md, checked on the source by folder: every module sits in a band (a folder)
or is one of the few public-face modules at the top, and the imports between bands go one way only.

    kernels   numba leaves: numpy, numba and math only
    engine    network records, run state, synapse ops, thread policy, memory estimates
    rules     the learning rules over the engine
    fixed     fixed-point formats and the integer network
    data      readers and batches: arrays only, never the engine
    export    C and NIR
    run       the training loop, checkpoints, history, the run lock, progress, distributed training
    tools     inspect, compare, bench, report, plot, scaling
    cli       argument parsing; nothing but ``__main__`` imports it
"""
import ast
import pathlib
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "stopnp"
BANDS = ("kernels", "engine", "rules", "fixed", "data", "export", "run", "tools", "cli")
TOP = {
    "__init__.py", "__main__.py", "_version.py",
    "api.py",      # gradients, simulate, predict, run_batch
    "config.py",   # the typed config every band reads
    "optim.py",    # the optimizer a library user applies to gradients (its kernels: kernels/optim.py)
    "train.py",    # stopnp.train.train, the public entry of run/train.py
    "recipes.py",  # the packaged recipes (resources/configs), read by build, train and compare
    "fsutil.py",   # atomic file writes, shared by data caches and checkpoints (a leaf: imports nothing)
}
# what a band must never import (docs/design.md: the engine and the rules know no files, screens or
# formats; data yields arrays and never imports the engine; the library never depends on its CLI)
FORBIDDEN = {
    "engine": {"rules", "fixed", "data", "export", "run", "tools", "cli", "api", "optim", "train"},
    "rules": {"fixed", "data", "export", "run", "tools", "cli", "api", "optim", "train"},
    "fixed": {"data", "export", "run", "tools", "cli", "train"},
    "data": {"kernels", "engine", "rules", "fixed", "export", "run", "tools", "cli", "api", "optim", "train"},
    "export": {"run", "tools", "cli", "train"},
    "run": {"tools", "cli"},
    "tools": {"cli"},
}


def _modules(path):
    """Absolute module names of every import in ``path`` (``from .. import a, b`` gives both)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])  # the package the module is in: stopnp, stopnp.engine, ...
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append(node.module)
                continue
            base = package[:len(package) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
            out += [prefix] if node.module else [f"{prefix}.{a.name}" for a in node.names]
    return out


def _band(module):
    """The band (or top-level module) of ``stopnp.x.y``; None outside the package."""
    parts = module.split(".")
    if parts[0] != "stopnp" or len(parts) < 2:
        return None
    return parts[1]


def _sources():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_is_in_a_band_or_the_public_face():
    top = {p.name for p in PKG.glob("*.py")}
    assert top == TOP, f"top-level modules {sorted(top - TOP)} belong in a band folder ({', '.join(BANDS)})"
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and p.name not in ("__pycache__", "resources")}
    assert folders == set(BANDS)
    for band in BANDS:
        assert (PKG / band / "__init__.py").is_file(), band
    for p in _sources():
        assert p.parent == PKG or p.relative_to(PKG).parts[0] in BANDS, p


@pytest.mark.parametrize("path", sorted((PKG / "kernels").glob("*.py")), ids=lambda p: p.name)
def test_kernels_import_nothing_from_the_package(path):
    for module in _modules(path):
        assert module.split(".")[0] in {"numpy", "numba", "math"}, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", [p for p in _sources() if p.relative_to(PKG).parts[0] in FORBIDDEN],
                         ids=lambda p: str(p.relative_to(PKG)))
def test_bands_import_one_way(path):
    band = path.relative_to(PKG).parts[0]
    for module in _modules(path):
        assert _band(module) not in FORBIDDEN[band], f"{path.relative_to(PKG)} ({band}) imports {module}"


def test_nothing_but_main_imports_the_cli():
    for path in _sources():
        if path.relative_to(PKG).parts[0] == "cli" or path.name == "__main__.py":
            continue
        assert not any(_band(m) == "cli" for m in _modules(path)), path.relative_to(PKG)


def test_checker_resolves_imports(tmp_path, monkeypatch):
    """Negative control: relative imports resolve to the band they reach, so a forbidden one is seen."""
    pkg = tmp_path / "stopnp"
    (pkg / "engine").mkdir(parents=True)
    bad = pkg / "engine" / "bad.py"
    bad.write_text("from .. import data\nfrom ..run.train import train\nfrom .threads import fit\n"
                   "from . import synapse\nimport numpy as np\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    assert _modules(bad) == ["stopnp.data", "stopnp.run.train", "stopnp.engine.threads", "stopnp.engine.synapse",
                             "numpy"]
    assert [_band(m) for m in _modules(bad)] == ["data", "run", "engine", "engine", None]
    assert {_band(m) for m in _modules(bad)} & FORBIDDEN["engine"] == {"data", "run"}


def test_every_import_of_the_package_resolves():
    """Each ``stopnp.x`` the package, its tests and its examples import, even inside a function or in the
    code string of a subprocess, exists (a module, or a name in one): a moved module leaves no import
    behind."""
    import importlib
    import importlib.util

    def found(module, name=None):
        if name is None:
            return importlib.util.find_spec(module) is not None
        try:
            if importlib.util.find_spec(f"{module}.{name}") is not None:
                return True
        except ModuleNotFoundError:  # ``module`` is a plain module, not a package
            pass
        return hasattr(importlib.import_module(module), name)

    for path in _sources():
        for module in _modules(path):
            if _band(module) is None and module != "stopnp" or found(module):
                continue
            parent, _, name = module.rpartition(".")
            assert found(parent, name), f"{path.relative_to(PKG)} imports {module}"
    others = [p for d in ("tests", "examples") for p in sorted((PKG.parent / d).rglob("*.py"))]
    for path in others:
        trees = [ast.parse(path.read_text())]
        trees += [ast.parse(c.value) for c in ast.walk(trees[0]) if isinstance(c, ast.Constant) and isinstance(
            c.value, str) and "stopnp" in c.value and "import" in c.value and _parses(c.value)]
        for node in (n for tree in trees for n in ast.walk(tree)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("stopnp"):
                for alias in node.names:
                    assert found(node.module, alias.name), f"{path.name} imports {alias.name} from {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("stopnp"):
                        assert found(alias.name), f"{path.name} imports {alias.name}"


def _parses(text):
    try:
        ast.parse(text)
        return True
    except SyntaxError:
        return False
