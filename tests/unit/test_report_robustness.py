"""The report's robustness section (issue 16) from robustness runs with known values in a real
temporary MLflow store: the figure, the level x shots table of mean ± sd over seeds, the latest
robustness run per trained run, and no section without robustness runs of the selected training
runs (the figure list of tests/unit/test_report.py checks that a store without any gets none)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.unit.test_report import HEADS, SEEDS, T0, log_training_run

# macro AUROC per (level, shots) for seeds 0, 1, 2
VALUES = {
    (0.0, "exact"): [0.74, 0.75, 0.73],
    (0.0, "100"): [0.70, 0.72, 0.69],
    (0.01, "exact"): [0.71, 0.70, 0.72],
    (0.01, "100"): [0.66, 0.61, 0.65],
}


def log_robustness_run(client, experiment_id, source_id, seed, start, shift=0.0):
    from mlflow.entities import Metric

    run = client.create_run(
        experiment_id,
        start_time=start,
        run_name=f"robustness-dqc-s{seed}",
        tags={
            "robustness": "run",
            "robustness_of": source_id,
            "mlflow.parentRunId": source_id,
            "seed": str(seed),
            "channel": "depolarizing",
        },
    )
    metrics = [
        Metric(
            f"robust/depolarizing/{level!r}/shots_{shots}/test/auroc_macro",
            values[SEEDS.index(seed)] + shift,
            start,
            0,
        )
        for (level, shots), values in VALUES.items()
    ]
    metrics.append(Metric("robust/depolarizing/0.0/shots_exact/test/auroc/Effusion", 0.9, start, 0))
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id, end_time=start + 10)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("robust_report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("synthetic", artifact_location=(root / "art").as_uri())
    start = T0
    ids = {}
    for head in HEADS:
        for seed in SEEDS:
            start += 10_000
            ids[(head, seed)] = log_training_run(client, exp, head, seed, start)
    for seed in SEEDS:
        start += 10_000
        if seed == 0:  # an older re-evaluation of seed 0, superseded by the next one
            log_robustness_run(client, exp, ids[("dqc", 0)], 0, start - 5_000, shift=-0.3)
        log_robustness_run(client, exp, ids[("dqc", seed)], seed, start)
    return {"uri": uri, "root": root}


def test_robustness_section_has_the_figure_and_the_mean_sd_table(store):
    from qcxr.report.load import load_runs
    from qcxr.report.markdown import robustness_section as _robustness_section

    out = store["root"] / "report"
    md, figures = _robustness_section(
        store["uri"], load_runs(store["uri"]), out / "figures", out / "tables", out
    )
    text = "\n".join(md)
    assert text.startswith("## Robustness to noise and finite shots")
    figure = "figures/robustness_synthetic_depolarizing_test.png"
    assert [p.relative_to(out).as_posix() for p in figures] == [figure]
    assert figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| depolarizing level | exact ⟨Z⟩ | 100 shots |" in text
    for (level, shots), values in VALUES.items():
        cell = f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} (n=3)"
        row = next(line for line in text.splitlines() if line.startswith(f"| {level:g} |"))
        column = 1 if shots == "exact" else 2
        assert row.split(" | ")[column].strip(" |") == cell, (level, shots)
    assert (out / "tables" / "robustness.csv").is_file()
    # Only robustness runs of the report's training runs count: none selected, no section.
    data = load_runs(store["uri"], filter_string="tags.head = 'cdl'")
    assert _robustness_section(store["uri"], data, out / "f2", out / "t2", out) == ([], [])
