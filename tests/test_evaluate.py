"""`python -m qcxr.evaluate` (issue 23, item 3): a trained run's model on another dataset, logged
as a child run. One tiny synthetic run (CXR-8 labels) is trained, then

- evaluated on its own data composed again: the child run's test metrics equal the run's own
  (the evaluation is training's, on the run's best variables);
- evaluated on the real NIH X-rays (`data=folder_csv`, 64 px, CXR-8 columns): a child run nested
  under the trained run with per-label and mean AUROC, predictions and ROC curves;
- a task with other labels is an error naming them, and nothing is logged.

Integration tier (tests/conftest.py TIERS): a training run and three evaluations, about 60 s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qcxr.data.labels import LABEL_SETS
from qcxr.evaluate.__main__ import main
from qcxr.run import run
from tests.train_helpers import compose_run, mlflow_client

SYNTHETIC = [
    "data=synthetic",
    "data.num_train=24",
    "data.num_val=12",
    "data.num_test=12",
    "data.num_external=0",
    "data.min_positives=0",
    "data.num_threads=1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(tmp folder, run id, tracking URI)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    run(compose_run(tmp, ["head=cdl", "trainer.max_epochs=1"]))
    client = mlflow_client(tmp)
    (found,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    return tmp, found.info.run_id, f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"


def _children(tmp, run_id):
    client = mlflow_client(tmp)
    experiment = client.get_run(run_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.evaluation_of = '{run_id}'")


def test_own_data_reproduces_the_run_test_metrics(trained, capsys):
    tmp, run_id, uri = trained
    assert main([run_id, *SYNTHETIC, "--tracking-uri", uri]) == 0
    assert "evaluation run" in capsys.readouterr().out
    (child,) = _children(tmp, run_id)
    own = mlflow_client(tmp).get_run(run_id).data.metrics
    assert child.data.tags["mlflow.parentRunId"] == run_id and "head" not in child.data.tags
    test_keys = [k for k in own if k.startswith("test/")]
    assert "test/auroc_macro" in test_keys
    for key in test_keys:
        np.testing.assert_allclose(child.data.metrics[key], own[key], rtol=1e-5, err_msg=key)


@pytest.mark.realdata
def test_real_xrays_give_a_child_run_with_auroc_predictions_and_curves(trained, shared_data):
    tmp, run_id, uri = trained
    root = shared_data / "nih-cxr14-64px"
    overrides = [
        "data=folder_csv",
        f"data.image_dir={root / 'images'}",
        f"data.label_dir={root / 'labels.csv'}",
        "data.min_positives=0",
        "data.num_threads=1",
    ]
    assert main([run_id, *overrides, "--tracking-uri", uri]) == 0
    (child,) = [c for c in _children(tmp, run_id) if c.data.tags["evaluation"] != "synthetic"]
    metrics = child.data.metrics
    labels = LABEL_SETS["cxr8"]
    defined = [n for n in labels if f"test/auroc/{n}" in metrics]
    assert len(defined) >= 6 and 0.0 <= metrics["test/auroc_macro"] <= 1.0
    np.testing.assert_allclose(
        metrics["test/auroc_macro"], np.mean([metrics[f"test/auroc/{n}"] for n in defined])
    )
    client = mlflow_client(tmp)
    files = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"predictions_test.csv", "auroc_per_label.csv", "roc_test.png"} <= files
    predictions = pd.read_csv(
        client.download_artifacts(child.info.run_id, "predictions_test.csv", str(tmp))
    )
    assert len(predictions) == int(child.data.params["num_examples"]) > 50
    assert predictions["image_id"].str.endswith(".png").all()


def test_other_labels_are_an_error_naming_them(trained, caplog):
    tmp, run_id, uri = trained
    before = len(_children(tmp, run_id))
    assert main([run_id, *SYNTHETIC, "task=cxr14", "--tracking-uri", uri]) == 1
    assert "missing []" in caplog.text and "'Emphysema'" in caplog.text
    assert main([run_id, *SYNTHETIC, "trainer.batch_size=2", "--tracking-uri", uri]) == 1
    assert "only data and task can change" in caplog.text
    assert len(_children(tmp, run_id)) == before
