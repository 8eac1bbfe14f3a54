"""Commit tags name qcxr's own repository, not the caller's folder (issue 20 item 5: qcxr.robustness
tagged `git_commit(Path.cwd())`, the commit of whatever folder it was started from)."""

import subprocess
from pathlib import Path

import pytest

from qcxr.run import git_commit, project_root


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)


def test_commit_is_the_projects_from_another_git_folder(tmp_path, monkeypatch):
    root = project_root()
    assert (root / "src" / "qcxr" / "run.py").is_file()
    if not (root / ".git").exists():
        pytest.skip("qcxr is not imported from a git checkout")
    other = tmp_path / "elsewhere"
    other.mkdir()
    _git(other, "init", "-q")
    (other / "f.txt").write_text("x")
    _git(other, "add", "f.txt")
    _git(other, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "other")
    monkeypatch.chdir(other)
    head = _git(root, "rev-parse", "HEAD").stdout.strip()
    assert git_commit(project_root()).removesuffix("-dirty") == head
    assert git_commit(Path.cwd()).removesuffix("-dirty") != head
