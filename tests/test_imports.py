"""Package boundaries of docs/style.md, checked on the source (an import-rule test).

Exceptions, stated: `qcxr.report.load` reads MLflow (the report reads runs back; accepted by the
lead), and so does `qcxr.robustness.load` (it fetches trained runs' checkpoints and logs child
runs); `qcxr.bench` may import anything (benchmarks wire pieces like run.py does, without
configs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "qcxr"
STDLIB_OK = {
    "__future__",
    "dataclasses",
    "functools",
    "math",
    "typing",
    "collections",
    "os",
    "logging",
    "itertools",
    "re",
    "warnings",
    "enum",
    "abc",
}


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
    if rel in ("tracking/mlflow.py", "report/load.py", "robustness/load.py", "predict/pyfunc.py"):
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
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        ]
        assert not calls, path


# Layers of qcxr.quantum (docs/design.md, docs/style.md) are folders: representation -> kernels
# -> methods (cutting beside them, on top of the methods) -> dispatch; reference.py and the
# package's __init__ sit above. A module imports only from its own folder or a lower one, and the
# module graph has no cycles, not even lazy ones.
QUANTUM_FOLDERS = {
    "representation": 0,  # gates, circuits as data, ansatz library, noise models
    "kernels": 1,
    "methods": 2,  # statevector, split, mps, density, trajectories, shots
    "cutting": 3,  # wire cuts and the QCNN, built on the statevector method
    "dispatch": 4,  # expvals, method choosers, memory model
    "reference": 5,  # PennyLane builds of the representation, for cross-checks
    "__init__": 6,
}
QUANTUM = SRC / "quantum"


def _folder(module: str) -> str:
    """The layer folder of a dotted qcxr.quantum module ("reference"/"__init__" for top-level)."""
    parts = module.removeprefix("qcxr.quantum").strip(".").split(".")
    return parts[0] if parts[0] else "__init__"


def _dotted(path: Path) -> str:
    rel = path.relative_to(QUANTUM).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["qcxr.quantum", *parts])


def _quantum_deps(path: Path) -> list[tuple[str, list[str]]]:
    """(imported qcxr.quantum module, names taken from it) for every import in the file."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if _under(a.name, "qcxr.quantum")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not _under(node.module, "qcxr.quantum"):
                continue
            folder = QUANTUM.joinpath(*node.module.split(".")[2:])
            if folder.is_dir():  # `from qcxr.quantum.methods import split`: modules
                out += [(f"{node.module}.{a.name}", []) for a in node.names]
            else:
                out.append((node.module, [a.name for a in node.names]))
    return out


def test_every_quantum_module_sits_in_a_layer_folder():
    for path in _modules("quantum"):
        assert _folder(_dotted(path)) in QUANTUM_FOLDERS, path.relative_to(QUANTUM)
    flat = {p.stem for p in QUANTUM.glob("*.py")}
    assert flat == {"__init__", "reference"}, f"modules outside the layer folders: {flat}"


@pytest.mark.parametrize(
    "path", _modules("quantum"), ids=lambda p: str(p.relative_to(SRC / "quantum"))
)
def test_quantum_imports_run_one_way_without_private_names(path):
    here = _folder(_dotted(path))
    for module, names in _quantum_deps(path):
        dep = _folder(module)
        assert dep in QUANTUM_FOLDERS, (path.name, module)
        assert QUANTUM_FOLDERS[dep] <= QUANTUM_FOLDERS[here], (
            f"{path.relative_to(QUANTUM)} imports {module}: against the layer order"
        )
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{path.name} imports private names {private} from {module}"


def test_quantum_module_graph_has_no_cycles():
    graph = {_dotted(p): {m for m, _ in _quantum_deps(p)} for p in _modules("quantum")}
    done: set[str] = set()

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join((*stack, node))}"
        if node in done:
            return
        for dep in graph.get(node, ()):
            visit(dep, (*stack, node))
        done.add(node)

    for node in graph:
        visit(node, ())
