"""data/ never imports models/, train/, hydra or omegaconf (docs/style.md, package boundaries)."""

import ast
from pathlib import Path

import qcxr.data

FORBIDDEN = (
    "qcxr.models",
    "qcxr.train",
    "qcxr.tracking",
    "qcxr.run",
    "hydra",
    "omegaconf",
    "mlflow",
)


def test_data_imports_stay_inside_the_boundary():
    root = Path(qcxr.data.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"


def test_package_is_this_worktree():
    assert Path(qcxr.data.__file__).resolve().parents[2].name == "src"
