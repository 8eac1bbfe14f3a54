"""What the MLflow UI reads, checked through a real `mlflow server` (127.0.0.1, a free port,
stopped afterwards: the `mlflow_server` fixture of tests/conftest.py) and its REST API, after
one tiny run logged to it over HTTP:

- the experiment carries `mlflow.experimentKind = custom_model_development`, so the UI opens it in
  the model-training view, not the GenAI one (traces, token usage);
- the run carries MLflow's source tags (the runs table's Source column: script, git commit);
- every split is a dataset input with its own content digest and context (the Dataset column),
  and runs can be searched by that digest;
- dataset statistics are params, not metrics (as metrics they were the first charts).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from qcxr import run as run_module
from tests.train_helpers import compose_run

ROOT = Path(__file__).resolve().parents[1]


def _get(url: str, path: str, **query) -> dict:
    from urllib.parse import urlencode

    with urllib.request.urlopen(f"{url}{path}?{urlencode(query)}", timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_ui_facing_tags_datasets_and_source_through_a_server(tmp_path, mlflow_server):
    url = mlflow_server.url
    cfg = compose_run(
        tmp_path,
        [
            "head=cdl",
            "trainer.max_epochs=1",
            "data.num_external=8",
            f"tracker.tracking_uri={url}",
            f"paths.root_dir={ROOT}",
        ],
    )
    run_module.run(cfg)

    experiment = _get(url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="synthetic")[
        "experiment"
    ]
    experiment_tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert experiment_tags["mlflow.experimentKind"] == "custom_model_development"

    (run,) = _post(
        url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]}
    )["runs"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.type"] == "LOCAL"
    assert Path(tags["mlflow.source.name"]).is_absolute()
    assert tags["mlflow.user"]

    inputs = run["inputs"]["dataset_inputs"]
    by_context = {}
    for entry in inputs:
        (context,) = [t["value"] for t in entry["tags"] if t["key"] == "mlflow.data.context"]
        by_context[context] = entry["dataset"]
    assert sorted(by_context) == ["external", "test", "train", "val"]
    digests = {c: d["digest"] for c, d in by_context.items()}
    assert all(re.fullmatch(r"[0-9a-f]{32}", d) for d in digests.values()), digests
    assert len(set(digests.values())) == 4  # one dataset per split, each its own content
    sizes = {c: json.loads(d["profile"])["num_examples"] for c, d in by_context.items()}
    assert sizes == {"train": 24, "val": 12, "test": 12, "external": 8}
    assert by_context["train"]["name"] == "synthetic-train"

    # runs can be filtered by the data they read
    found = _post(
        url,
        "/api/2.0/mlflow/runs/search",
        {
            "experiment_ids": [experiment["experiment_id"]],
            "filter": f"dataset.digest = '{digests['train']}' AND dataset.context = 'train'",
        },
    )
    assert [r["info"]["run_id"] for r in found["runs"]] == [run["info"]["run_id"]]
    missing = _post(
        url,
        "/api/2.0/mlflow/runs/search",
        {
            "experiment_ids": [experiment["experiment_id"]],
            "filter": f"dataset.digest = '{'0' * 32}'",  # data no run read
        },
    )
    assert not missing.get("runs")

    metric_keys = {m["key"] for m in run["data"]["metrics"]}
    assert "val/auroc_macro" in metric_keys and "test/auroc_macro" in metric_keys
    assert not any(k.startswith("data/") for k in metric_keys)
    params = {p["key"] for p in run["data"]["params"]}
    assert sum(k.startswith("data/train_positives/") for k in params) == 8
