"""Real `python train.py` runs and multiruns (issue 11): the launcher is a config choice, a value
with ":" no longer wastes a multirun, tags are an open mapping, bad values fail before any work.

Each command runs train.py from a temporary working directory with tiny shapes, one epoch and an
MLflow store under the test's folder (passed as `tracker.tracking_uri=sqlite:////...`, the value
with ":" that used to break the job folders).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_helpers import TINY

ROOT = Path(__file__).resolve().parents[1]


def _train(tmp_path: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        *args,
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracker.tracking_uri=sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
        *TINY,
        "trainer.max_epochs=1",
    ]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def _runs(tmp_path: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("synthetic")
    return client.search_runs([experiment.experiment_id])


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir())


@pytest.mark.slow
def test_default_launcher_runs_two_jobs_with_a_colon_value_and_an_open_tag(tmp_path):
    """joblib with 2 workers by default; the jobs' checkpoints land in their own folders."""
    sweep = tmp_path / "mr"
    done = _train(tmp_path, "-m", f"hydra.sweep.dir={sweep}", "seed=0-1", "tags.note=2024-05")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "Joblib.Parallel(n_jobs=2," in log
    runs = _runs(tmp_path)
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["note"] == "2024-05" for r in runs)
    jobs = _job_dirs(sweep)
    assert [p.name[:2] for p in jobs] == ["0_", "1_"]  # one folder level per job, nothing else
    assert not [p for p in sweep.rglob("*") if "\\" in p.name]  # Hydra's escaped ":" is gone
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        assert r"tracker.tracking_uri=sqlite\:////" in overrides  # the value with ":", escaped
        (step,) = (job / "checkpoints" / "best").iterdir()
        arrays = [p for p in (step / "state").rglob("*") if p.is_file()]
        assert arrays, f"no checkpoint data under {step / 'state'}"
        run_id = (job / "tracker_run_id.txt").read_text().strip()
        assert run_id in {r.info.run_id for r in runs}


@pytest.mark.slow
def test_basic_launcher_runs_two_jobs_and_a_string_range_stays_one_value(tmp_path):
    sweep = tmp_path / "mr"
    done = _train(
        tmp_path,
        "-m",
        "hydra/launcher=basic",
        f"hydra.sweep.dir={sweep}",
        "seed=0-1",
        "tags.ticket=12-15",
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "Launching 2 jobs locally" in log
    runs = _runs(tmp_path)
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and r.data.tags["ticket"] == "12-15" for r in runs)
    assert len(_job_dirs(sweep)) == 2


def test_a_bad_job_fails_the_multirun_before_any_job_starts(tmp_path):
    sweep = tmp_path / "mr"
    done = _train(tmp_path, "-m", f"hydra.sweep.dir={sweep}", "seed=0,-1", timeout=300)
    assert done.returncode != 0
    assert "seed=-1 is out of range" in done.stderr
    assert "no job of this multirun was launched" in done.stderr
    assert not sweep.exists() or not _job_dirs(sweep)
    assert not (tmp_path / "store").exists() and not (tmp_path / "cache").exists()


def test_a_bad_value_fails_a_run_before_any_work(tmp_path):
    done = _train(tmp_path, "trainer.patience=0", "hydra.run.dir=run", timeout=300)
    assert done.returncode != 0
    assert "trainer.patience=0 must be at least 1" in done.stderr
    assert "no epoch finished" not in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "store").exists() and not (tmp_path / "cache").exists()
