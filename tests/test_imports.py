"""Package boundaries of STYLE.md, checked on the source (an import-rule test).

Exceptions, stated: `qcxr.report.load` reads MLflow (the report reads runs back; accepted by the
lead), and `qcxr.bench` may import anything (benchmarks wire pieces like run.py does, without
configs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "qcxr"
STDLIB_OK = {"__future__", "dataclasses", "functools", "math", "typing", "collections", "os",
             "logging", "itertools", "re", "warnings", "enum", "abc"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(sub: str) -> list[Path]:
    return sorted((SRC / sub).rglob("*.py")) if sub else sorted(SRC.glob("*.py"))


def _top(name: str) -> str:
    return name.split(".")[0]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


ALL = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(SRC)))
def test_mlflow_only_in_tracking(path):
    rel = str(path.relative_to(SRC))
    if rel in ("tracking/mlflow.py", "report/load.py"):
        return
    assert not any(_top(n) == "mlflow" for n in _imports(path)), rel


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(SRC)))
def test_hydra_only_in_run(path):
    rel = str(path.relative_to(SRC))
    if rel == "run.py":
        return
    bad = {n for n in _imports(path) if _top(n) in ("hydra", "omegaconf")}
    assert not bad, (rel, bad)


@pytest.mark.parametrize("path", _modules("quantum"), ids=lambda p: p.name)
def test_quantum_imports_only_jax_numpy(path):
    allowed = {"jax", "numpy", "qcxr", "psutil"} | STDLIB_OK
    if path.name == "reference.py":
        allowed |= {"pennylane"}
    for name in _imports(path):
        assert _top(name) in allowed, (path.name, name)
        if _top(name) == "qcxr":
            assert _under(name, "qcxr.quantum"), (path.name, name)


@pytest.mark.parametrize("path", _modules("models"), ids=lambda p: p.name)
def test_models_never_import_data_train_tracking(path):
    for name in _imports(path):
        for banned in ("qcxr.data", "qcxr.train", "qcxr.tracking", "qcxr.run"):
            assert not _under(name, banned), (path.name, name)


@pytest.mark.parametrize("path", _modules("data"), ids=lambda p: p.name)
def test_data_never_imports_models_train(path):
    for name in _imports(path):
        for banned in ("qcxr.models", "qcxr.train", "qcxr.tracking", "qcxr.run"):
            assert not _under(name, banned), (path.name, name)


@pytest.mark.parametrize("path", _modules("train"), ids=lambda p: p.name)
def test_train_sees_no_data_internals_mlflow_hydra(path):
    for name in _imports(path):
        for banned in ("qcxr.data", "qcxr.models", "qcxr.run", "mlflow", "hydra", "omegaconf"):
            assert not _under(name, banned), (path.name, name)
        if _under(name, "qcxr.tracking"):
            assert name == "qcxr.tracking.base", (path.name, name)


@pytest.mark.parametrize("path", _modules("tracking"), ids=lambda p: p.name)
def test_tracking_is_self_contained(path):
    for name in _imports(path):
        if _top(name) == "qcxr":
            assert _under(name, "qcxr.tracking"), (path.name, name)


def test_no_print_calls():
    for path in ALL:
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, path
