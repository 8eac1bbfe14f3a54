"""`global_tracking_uri` sets MLflow's global URI for a block and leaves the environment as it was.

MLflow's `_use_tracking_uri` unsets $MLFLOW_TRACKING_URI on exit when no global URI was set, so
the next run in a joblib worker logged to the repo's default store (tests/test_parallel.py saw
two of four runs land).
"""

from __future__ import annotations

import os

import mlflow
import pytest

from qcxr.tracking.mlflow import global_tracking_uri


@pytest.mark.parametrize("env", ["sqlite:////tmp/named/mlflow.db", None])
def test_the_block_sees_the_uri_and_the_environment_is_restored(monkeypatch, tmp_path, env):
    if env is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    inner = f"sqlite:///{tmp_path / 'inner.db'}"
    with global_tracking_uri(inner):
        assert mlflow.get_tracking_uri() == inner

    assert os.environ.get("MLFLOW_TRACKING_URI") == env
    if env is not None:
        assert mlflow.get_tracking_uri() == env


def test_the_environment_is_restored_when_the_block_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/named/mlflow.db")
    with pytest.raises(RuntimeError), global_tracking_uri(f"sqlite:///{tmp_path / 'x.db'}"):
        raise RuntimeError("boom")
    assert mlflow.get_tracking_uri() == "sqlite:////tmp/named/mlflow.db"
