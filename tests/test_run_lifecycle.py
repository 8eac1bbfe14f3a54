"""A run's life in its folder, with real `train.py` processes and a real SQLite MLflow store.

- SIGKILL right after a checkpoint: every epoch that checkpoint covers is already in MLflow, and
  the resumed run's history holds each epoch (and each train step) exactly once.
- SIGTERM (what SLURM sends): the run ends KILLED with its metrics flushed, the process dies of
  the signal (status -15, i.e. 143 in a shell), and the run resumes to FINISHED.
- Re-running a finished run's folder: a changed config is refused before anything is built and
  the old run is left as it was; a larger `trainer.max_epochs` trains on and says so in params;
  nothing left to train, or `trainer.resume=false` over an old run, is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qcxr import run as run_module
from tests.train_helpers import TINY, compose_run, mlflow_client

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 30  # long enough that the kill lands well before the end (~0.2 s per epoch)
STEPS_PER_EPOCH = 6  # data.num_train=24 / trainer.batch_size=4 (TINY)


def _command(tmp_path: Path, run_dir: Path) -> tuple[list[str], dict]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
    }
    cmd = [
        sys.executable,
        "train.py",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "head=cdl",
        *TINY,
        f"trainer.max_epochs={EPOCHS}",
        f"trainer.patience={EPOCHS}",
    ]
    return cmd, env


def _checkpointed_epoch(run_dir: Path) -> int:
    latest = run_dir / "checkpoints" / "latest"
    steps = [int(p.name) for p in latest.iterdir() if p.name.isdigit()] if latest.is_dir() else []
    return max(steps, default=0)


def _start_and_wait_for_checkpoint(cmd, env, run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while _checkpointed_epoch(run_dir) < 1:
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited early:\n{proc.stderr.read()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint within 300 s")
        time.sleep(0.02)
    return proc


def _the_run(tmp_path: Path):
    client = mlflow_client(tmp_path)
    (r,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    return client, r


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _resume_and_check_history(tmp_path: Path, cmd, env) -> None:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    client, r = _the_run(tmp_path)  # the same run, reopened: still exactly one
    assert r.info.status == "FINISHED"
    # every epoch and every train step exactly once, from epoch 1 on
    assert _steps(client, r.info.run_id, "val/loss") == list(range(1, EPOCHS + 1))
    assert _steps(client, r.info.run_id, "train/epoch_loss") == list(range(1, EPOCHS + 1))
    assert _steps(client, r.info.run_id, "train/loss") == list(
        range(1, EPOCHS * STEPS_PER_EPOCH + 1)
    )
    assert r.data.metrics["train/epochs_run"] == EPOCHS


@pytest.mark.slow
def test_sigkill_after_checkpoint_keeps_history_and_resumes_once_per_epoch(tmp_path):
    run_dir = tmp_path / "run"
    cmd, env = _command(tmp_path, run_dir)
    proc = _start_and_wait_for_checkpoint(cmd, env, run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = _checkpointed_epoch(run_dir)
    assert 1 <= killed_at < EPOCHS, "the kill must land before the run finishes"

    client, r = _the_run(tmp_path)
    assert r.info.status == "RUNNING"  # SIGKILL cannot be handled; the resume ends it
    # everything the checkpoint covers reached MLflow when the checkpoint was written
    logged = _steps(client, r.info.run_id, "val/loss")
    assert logged[:killed_at] == list(range(1, killed_at + 1))
    assert _steps(client, r.info.run_id, "train/loss")[: killed_at * STEPS_PER_EPOCH] == list(
        range(1, killed_at * STEPS_PER_EPOCH + 1)
    )

    _resume_and_check_history(tmp_path, cmd, env)


@pytest.mark.slow
def test_sigterm_ends_the_run_killed_with_metrics_flushed(tmp_path):
    run_dir = tmp_path / "run"
    cmd, env = _command(tmp_path, run_dir)
    proc = _start_and_wait_for_checkpoint(cmd, env, run_dir)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, stderr[-4000:]  # died of the signal: 143
    assert "interrupted (received SIGTERM): marked KILLED" in (run_dir / "train.log").read_text()
    killed_at = _checkpointed_epoch(run_dir)
    assert 1 <= killed_at < EPOCHS

    client, r = _the_run(tmp_path)
    assert r.info.status == "KILLED" and r.info.end_time is not None
    assert _steps(client, r.info.run_id, "val/loss")[:killed_at] == list(range(1, killed_at + 1))
    assert '"status": "KILLED"' in (run_dir / run_module.STATE_FILE).read_text()

    # Steps of the interrupted epoch were flushed by the handler and are run again on resume:
    # the store keeps one value per step.
    _resume_and_check_history(tmp_path, cmd, env)


@pytest.mark.slow
def test_rerunning_a_finished_folder(tmp_path):
    base = ["head=dqc", "trainer.max_epochs=2", "trainer.patience=5"]
    run_module.run(compose_run(tmp_path, base))
    client, before = _the_run(tmp_path)
    assert before.info.status == "FINISHED"
    run_id = before.info.run_id

    # another head in the same folder: refused before anything is built; the run is untouched
    with pytest.raises(run_module.RunError, match=r"another config \(head\._target_.*Fix:"):
        run_module.run(compose_run(tmp_path, [*base, "head=cdl"]))
    # the same config: nothing is left to train
    with pytest.raises(run_module.RunError, match="nothing is left to train"):
        run_module.run(compose_run(tmp_path, base))
    # resume=false would overwrite the folder's checkpoints
    with pytest.raises(run_module.RunError, match="trainer.resume=false"):
        run_module.run(compose_run(tmp_path, [*base, "trainer.resume=false"]))
    _, after = _the_run(tmp_path)
    assert after.info.status == "FINISHED" and after.info.end_time == before.info.end_time
    assert after.data.metrics == before.data.metrics and after.data.params == before.data.params

    # a larger max_epochs trains on, in the same run, and the params say so
    run_module.run(compose_run(tmp_path, [*base, "trainer.max_epochs=3"]))
    _, longer = _the_run(tmp_path)
    assert longer.info.run_id == run_id and longer.info.status == "FINISHED"
    assert longer.data.params["trainer.max_epochs"] == "2"  # immutable: the value at start
    assert longer.data.params["resume.1.trainer.max_epochs"] == "3"
    assert longer.data.metrics["train/epochs_run"] == 3
    assert _steps(client, run_id, "val/loss") == [1, 2, 3]
    assert _steps(client, run_id, "train/loss") == list(range(1, 3 * STEPS_PER_EPOCH + 1))
