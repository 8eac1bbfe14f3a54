"""An MLflowTracker whose server does not answer: it retries for `retry_s`, then raises an error
naming the server and the fix, keeps every unwritten metric, and does not wait again to end the
run. (The real server restarted or gone mid-run: tests/test_mlflow_restart.py.)"""

from __future__ import annotations

import socket
import time

import pytest
from mlflow.tracking import MlflowClient

from qcxr.tracking import TrackerUnavailable
from qcxr.tracking.mlflow import MLflowTracker


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens: connections are refused


def test_unreachable_server_fails_clearly_after_the_budget_and_keeps_the_buffer(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the tracker's budget alone
    url = _closed_port_url()
    tracker = MLflowTracker(url, "synthetic", retry_s=1.0)
    tracker._client = MlflowClient(tracking_uri=url)  # building it would already need the server
    tracker.run_id = "0" * 32
    tracker.log_metrics({"train/loss": 0.5, "val/loss": 0.7}, step=1)

    started = time.monotonic()
    with pytest.raises(
        TrackerUnavailable, match=rf"{url} did not answer .*Fix: .*tracker\.retry_s"
    ):
        tracker.flush()
    assert 1.0 <= time.monotonic() - started < 10  # retried for the budget, then gave up
    assert [(m.key, m.step) for m in tracker._buffer] == [("train/loss", 1), ("val/loss", 1)]

    started = time.monotonic()
    tracker.end("FAILED")  # the server is known to be gone: no second wait, no second error
    with pytest.raises(TrackerUnavailable):
        tracker.log_params({"a": 1})
    assert time.monotonic() - started < 1
