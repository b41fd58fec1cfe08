"""Dependency directions of docs/design.md, checked on the source: the kernels are leaves (numpy, numba
and the standard library only) and the engine never imports data, train, cli, plot or export."""
import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "stopnp"
ENGINE = ["engine", "optim.py", "fixed/formats.py", "rules"]
FORBIDDEN_FOR_ENGINE = {"data", "run", "tools", "cli", "export"}


def _imports(path):
    """(module, level) of every import in ``path``; ``from .. import a, b`` gives ("a", 2), ("b", 2)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                out.append((node.module, node.level))
            else:
                out += [(a.name, node.level) for a in node.names]
    return out


def _files(entry):
    p = PKG / entry
    return sorted(p.glob("*.py")) if p.is_dir() else [p]


@pytest.mark.parametrize("path", _files("kernels"), ids=lambda p: p.name)
def test_kernels_import_nothing_from_the_package(path):
    for module, level in _imports(path):
        assert level == 0, f"{path.name}: relative import of {module!r}"
        assert module.split(".")[0] in {"numpy", "numba", "math"}, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", [f for e in ENGINE for f in _files(e)], ids=lambda p: p.name)
def test_engine_knows_no_files_screens_or_formats(path):
    for module, level in _imports(path):
        if level == 0 and not module.startswith("stopnp"):
            continue
        parts = module.split(".")
        top = parts[1] if module.startswith("stopnp.") else parts[0]
        assert top not in FORBIDDEN_FOR_ENGINE, f"{path.relative_to(PKG)} imports {module}"


def test_checker_catches_a_bad_import(tmp_path):
    """Negative control: the parser sees both import forms the engine tests rely on."""
    bad = tmp_path / "bad.py"
    bad.write_text("from .. import data\nfrom ..threads import gemm_threads\nimport numpy as np\n")
    assert _imports(bad) == [("data", 2), ("threads", 2), ("numpy", 0)]
