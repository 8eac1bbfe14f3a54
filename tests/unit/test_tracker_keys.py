"""Label names MLflow would refuse as param/metric names (CXR-LT 2024's "Round(ed) Atelectasis")
are logged under a sanitised name, and two names that would collide are refused."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from qcxr.tracking.mlflow import MLflowTracker, mlflow_key


def test_label_names_with_parentheses_are_logged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker(uri, "keys", artifact_root=str(tmp_path / "art"))
    run_id = tracker.start("r", {})
    tracker.log_params({"data/train_positives/Round(ed) Atelectasis": 172, "plain": 1})
    tracker.log_metrics({"test/auroc/Round(ed) Atelectasis": 0.75}, step=3)
    tracker.end()
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params == {"data/train_positives/Round_ed_ Atelectasis": "172", "plain": "1"}
    assert run.data.metrics == {"test/auroc/Round_ed_ Atelectasis": 0.75}
    assert mlflow_key("val/auroc_macro") == "val/auroc_macro"


def test_keys_that_would_collide_are_refused(tmp_path):
    tracker = MLflowTracker(f"sqlite:///{tmp_path / 'm.db'}", "keys")
    with pytest.raises(ValueError, match=r"'a\(b\)' and 'a_b_' both become 'a_b_'"):
        tracker.log_metrics({"a(b)": 1.0, "a_b_": 2.0}, step=0)
