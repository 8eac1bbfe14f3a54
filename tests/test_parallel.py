"""Runs launched in parallel (joblib launcher, n_jobs=2) all land in one SQLite MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_helpers import TINY, mlflow_client

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_parallel_runs_all_land(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
    }
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "head=cdl,dqc",
        "seed=0-1",
        *TINY,
        "trainer.max_epochs=1",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    client = mlflow_client(tmp_path)
    exp = client.get_experiment_by_name("synthetic")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {(r.data.tags["head"], r.data.tags["seed"]) for r in runs} == {
        ("cdl", "0"),
        ("cdl", "1"),
        ("dqc", "0"),
        ("dqc", "1"),
    }
    for r in runs:  # every run landed whole: each of its 6 steps, its epoch, its test AUROCs
        steps = [h.step for h in client.get_metric_history(r.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(1, 7)), (r.data.tags["head"], steps)
        assert [h.step for h in client.get_metric_history(r.info.run_id, "val/loss")] == [1]
        per_label = [v for k, v in r.data.metrics.items() if k.startswith("test/auroc/")]
        assert len(per_label) == 8  # the synthetic task puts positives of every label in test
        assert r.data.metrics["test/auroc_macro"] == pytest.approx(sum(per_label) / 8)
