"""The MLflow tracking server going away mid-run, with a real `mlflow server` (127.0.0.1, a free
port, SQLite backend and served artifacts in tmp, stopped at the end: the `mlflow_server`
fixture of tests/conftest.py) and a real `train.py`.

- Restarted a few seconds later on the same port and backend: the run retries its writes, ends
  FINISHED, and holds every epoch's val/loss and every train/loss step exactly once.
- Down for longer than `tracker.retry_s`: the run fails with an error naming the server and the
  fix; the server holds every metric up to the latest checkpoint and nothing after it; started
  again in the same folder, the run resumes into the same MLflow run and ends FINISHED with each
  step once.

MLflow's own per-request retries (about 4 minutes by default) are switched off here
(`MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`), so what is tested is the tracker's budget, not MLflow's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from qcxr import run as run_module
from tests.train_helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 40  # ~0.2 s per epoch: the outage lands well before the end
STEPS_PER_EPOCH = 6  # data.num_train=24 / trainer.batch_size=4 (TINY)


def _command(tmp_path: Path, url: str, retry_s: float) -> tuple[list[str], dict]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # the tracker's budget alone (module docstring)
    }
    cmd = [
        sys.executable,
        "train.py",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "head=cdl",
        *TINY,
        f"trainer.max_epochs={EPOCHS}",
        f"trainer.patience={EPOCHS}",
        f"tracker.retry_s={retry_s}",
    ]
    return cmd, env


def _steps(url: str, run_id: str, key: str) -> list[int]:
    query = urlencode({"run_id": run_id, "metric_key": key, "max_results": 25000})
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/metrics/get-history?{query}") as response:
        return sorted(m["step"] for m in json.loads(response.read()).get("metrics", []))


def _status(url: str, run_id: str) -> str:
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/runs/get?run_id={run_id}") as response:
        return json.loads(response.read())["run"]["info"]["status"]


def _start_and_wait_for_epoch_1(cmd, env, run_dir: Path, url: str) -> tuple:
    """Start train.py; return (process, run id) once epoch 1's val/loss is on the server."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    id_file = run_dir / run_module.RUN_ID_FILE
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited early:\n{proc.stderr.read()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("epoch 1 did not reach the server within 300 s")
        if id_file.is_file() and id_file.read_text().strip():
            run_id = id_file.read_text().strip()
            if _steps(url, run_id, "val/loss"):
                return proc, run_id
        time.sleep(0.05)


def _checkpointed_epoch(run_dir: Path) -> int:
    latest = run_dir / "checkpoints" / "latest"
    steps = [int(p.name) for p in latest.iterdir() if p.name.isdigit()] if latest.is_dir() else []
    return max(steps, default=0)


def _assert_complete(url: str, run_id: str) -> None:
    assert _status(url, run_id) == "FINISHED"
    assert _steps(url, run_id, "val/loss") == list(range(1, EPOCHS + 1))
    assert _steps(url, run_id, "train/loss") == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))


@pytest.mark.slow
def test_server_restarted_mid_run_loses_no_metric(tmp_path, mlflow_server):
    server = mlflow_server
    run_dir = tmp_path / "run"
    cmd, env = _command(tmp_path, server.url, retry_s=180)
    proc, run_id = _start_and_wait_for_epoch_1(cmd, env, run_dir, server.url)
    try:
        server.stop()
        assert proc.poll() is None, "the outage must land before the run ends"
        time.sleep(3)
        server.start()
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    log_text = (run_dir / "train.log").read_text()
    assert f"MLflow server {server.url} unreachable" in log_text  # the retries did the work
    _assert_complete(server.url, run_id)


@pytest.mark.slow
def test_server_down_past_the_budget_fails_clearly_and_resumes(tmp_path, mlflow_server):
    server = mlflow_server
    run_dir = tmp_path / "run"
    cmd, env = _command(tmp_path, server.url, retry_s=3)
    proc, run_id = _start_and_wait_for_epoch_1(cmd, env, run_dir, server.url)
    try:
        server.stop()
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    text = stderr + (run_dir / "train.log").read_text()
    assert f"the MLflow tracking server {server.url} did not answer" in text, stderr[-4000:]
    assert "tracker.retry_s=" in text and f"hydra.run.dir={run_dir}" in text
    state = json.loads((run_dir / run_module.STATE_FILE).read_text())
    assert state["status"] == "FAILED" and state["run_id"] == run_id
    checkpointed = _checkpointed_epoch(run_dir)
    assert 1 <= checkpointed < EPOCHS

    # Nothing silently half-logged: the server holds exactly what the checkpoint covers, and the
    # run is not marked ended (its process could not tell the server).
    server.start()
    assert _status(server.url, run_id) == "RUNNING"
    assert _steps(server.url, run_id, "val/loss") == list(range(1, checkpointed + 1))
    assert _steps(server.url, run_id, "train/loss") == list(
        range(1, checkpointed * STEPS_PER_EPOCH + 1)
    )

    # The fix the message names: the same command in the same folder resumes the same run.
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (run_dir / run_module.RUN_ID_FILE).read_text().strip() == run_id
    _assert_complete(server.url, run_id)
