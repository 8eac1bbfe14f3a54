"""The analysis report (issue #6) on a real temporary MLflow store with known metric values."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from qcxr.report import stats

HEADS = ("cdl", "dqc")
SEEDS = (0, 1, 2)
LABELS = ("Pleural Thickening", "Effusion", "Calcification of the Aorta")
POSITIVES = {"Effusion": 50, "Pleural Thickening": 20, "Calcification of the Aorta": 5}
MACRO = {
    ("cdl", "test"): [0.80, 0.78, 0.83],
    ("dqc", "test"): [0.74, 0.75, 0.73],
    ("cdl", "external"): [0.70, 0.69, 0.72],
    ("dqc", "external"): [0.68, 0.70, 0.69],
}
EPOCHS = {"cdl": [3, 4, 3], "dqc": [5, 6, 5]}
T0 = 1_700_000_000_000  # ms; runs get increasing start times so "most recent" is well defined


def label_auroc(head: str, split: str, label: str, seed: int) -> float:
    """A fixed, seed-dependent per-label AUROC (different per head, label and split)."""
    base = {"cdl": 0.80, "dqc": 0.72}[head] - 0.05 * LABELS.index(label)
    wobble = {"cdl": 0.013, "dqc": -0.009}[head] * seed * (seed - 1.1) + 0.004 * seed * (
        LABELS.index(label) - 1
    )
    return round(base - (0.04 if split == "external" else 0.0) + wobble, 6)


def has_label(split: str, label: str, seed: int) -> bool:
    """Calcification has no positives in the external split, nor in seed 2's internal split."""
    if label != "Calcification of the Aorta":
        return True
    return split == "test" and seed != 2


def log_training_run(client, experiment_id, head, seed, start, status="FINISHED", macro=None):
    from mlflow.entities import Metric, Param

    run = client.create_run(
        experiment_id,
        start_time=start,
        run_name=f"{head}-s{seed}",
        tags={
            "head": head,
            "task": "synthetic",
            "seed": str(seed),
            "ansatz": "ry_cnot_ring",
            "backbone": "tiny",
            "git_commit": "abc123",
        },
    )
    metrics = []
    idx = SEEDS.index(seed) if seed in SEEDS else 0
    for split in ("test", "external"):
        value = macro if macro is not None else MACRO[(head, split)][idx]
        metrics.append(Metric(f"{split}/auroc_macro", value, start, 0))
        for label in LABELS:
            if has_label(split, label, seed):
                v = label_auroc(head, split, label, seed)
                metrics.append(Metric(f"{split}/auroc/{label}", v, start, 0))
    # Training-set counts are params since issue 11 (the report reads metrics of older runs too).
    params = [Param(f"data/train_positives/{label}", str(n)) for label, n in POSITIVES.items()]
    epochs = EPOCHS[head][idx]
    for e in range(1, epochs + 1):
        metrics += [
            Metric("train/epoch_loss", 0.7 / e + 0.01 * seed, start + e, e),
            Metric("val/loss", 0.6 / e + 0.02 * seed + 0.01 * e, start + e, e),
            Metric(
                "time/step_s", (5.0 if e == 1 else 0.1) * (2 if head == "dqc" else 1), start + e, e
            ),
            Metric("time/epoch_s", (50.0 if e == 1 else 1.0 + 0.1 * e), start + e, e),
        ]
        for step in range(2):
            metrics.append(Metric("train/loss", 0.7 / e, start + e, 2 * (e - 1) + step))
    metrics += [
        Metric("train/epochs_run", epochs, start + 99, 0),
        Metric("train/best_epoch", epochs - 1, start + 99, 0),
    ]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.set_terminated(run.info.run_id, status=status, end_time=start + 1000)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite MLflow store with cdl/dqc × 3 seeds, a re-run, an unpaired and a FAILED run."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlstore")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("synthetic", artifact_location=(root / "art").as_uri())
    ids = {}
    start = T0
    # An older cdl seed-0 run, superseded by the later one.
    ids["old_cdl_0"] = log_training_run(client, exp, "cdl", 0, start, macro=0.5)
    for head in HEADS:
        for seed in SEEDS:
            start += 10_000
            ids[(head, seed)] = log_training_run(client, exp, head, seed, start)
    start += 10_000
    ids["unpaired"] = log_training_run(client, exp, "cdl", 3, start, macro=0.81)
    ids["failed"] = log_training_run(client, exp, "dqc", 3, start + 1, status="FAILED", macro=0.1)
    untagged = client.create_run(exp, tags={"task": "synthetic"})
    client.set_terminated(untagged.info.run_id)
    return {"uri": uri, "root": root, "ids": ids, "client": client}


@pytest.fixture(scope="module")
def report(store):
    from qcxr.report import build_report

    return build_report(store["uri"], store["root"] / "report", heads=HEADS)


def row(report, split, label):
    frame = report.comparisons
    match = frame[(frame["split"] == split) & (frame["label"] == label)]
    assert len(match) == 1
    return match.iloc[0]


def test_percent_difference_and_stars_match_the_paper():
    # The paper's CXR-8 internal result: CDL 0.77 vs DQC 0.70 is a 9.5% difference.
    assert round(stats.percent_difference(0.77, 0.70), 1) == 9.5
    assert stats.percent_difference(0.70, 0.77) < 0
    assert [stats.stars(p) for p in (0.2, 0.05, 0.049, 0.009, 0.0009, math.nan)] == [
        "ns", "ns", "*", "**", "***", "n/a",
    ]  # fmt: skip
    assert math.isnan(stats.paired_ttest([0.7], [0.6]))
    assert math.isnan(stats.paired_ttest([0.7, 0.8], [0.7, 0.8]))


@pytest.mark.parametrize("split", ["test", "external"])
def test_macro_table_equals_hand_computation(report, split):
    a, b = MACRO[("cdl", split)], MACRO[("dqc", split)]
    r = row(report, split, "(macro)")
    assert r["n"] == 3 and tuple(r["seeds"]) == SEEDS
    assert r["mean_a"] == pytest.approx(np.mean(a)) and r["sd_a"] == pytest.approx(
        np.std(a, ddof=1)
    )
    assert r["mean_b"] == pytest.approx(np.mean(b)) and r["sd_b"] == pytest.approx(
        np.std(b, ddof=1)
    )
    expected_p = sps.ttest_rel(a, b).pvalue
    assert r["p"] == pytest.approx(expected_p, rel=1e-12)
    ma, mb = np.mean(a), np.mean(b)
    assert r["pct_diff"] == pytest.approx(100 * 2 * (ma - mb) / (ma + mb), rel=1e-12)
    assert r["stars"] == stats.stars(expected_p)
    text = report.markdown.read_text()
    formatted = f"{expected_p:.2e}" if expected_p < 0.001 else f"{expected_p:.4f}"
    assert f"| {100 * 2 * (ma - mb) / (ma + mb):+.2f}% | {formatted} |" in text


def test_per_label_rows_equal_hand_computation_and_follow_training_frequency(report):
    for split in ("test", "external"):
        for label in LABELS:
            seeds = [s for s in SEEDS if has_label(split, label, s)]
            if not seeds:
                assert not (
                    (report.comparisons["split"] == split) & (report.comparisons["label"] == label)
                ).any()
                continue
            a = [label_auroc("cdl", split, label, s) for s in seeds]
            b = [label_auroc("dqc", split, label, s) for s in seeds]
            r = row(report, split, label)
            assert r["n"] == len(seeds) and r["n_missing"] == len(SEEDS) - len(seeds)
            assert r["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-9)
            ma, mb = np.mean(a), np.mean(b)
            assert r["pct_diff"] == pytest.approx(200 * (ma - mb) / (ma + mb), rel=1e-12)
    internal = report.comparisons[report.comparisons["split"] == "test"].sort_values("order")
    assert list(internal["label"]) == [
        "(macro)", "Effusion", "Pleural Thickening", "Calcification of the Aorta",
    ]  # fmt: skip


def test_missing_partners_reruns_and_failed_runs_are_listed(report, store):
    ids = store["ids"]
    sel = report.selection
    assert sel.unpaired[["task", "seed", "head", "missing_head", "run_id"]].values.tolist() == [
        ["synthetic", 3, "cdl", "dqc", ids["unpaired"]]
    ]
    assert sel.superseded["run_id"].tolist() == [ids["old_cdl_0"]]
    assert sel.superseded["kept_run_id"].tolist() == [ids[("cdl", 0)]]
    assert sel.excluded[["run_id", "reason"]].values.tolist() == [[ids["failed"], "status FAILED"]]
    assert set(sel.pairs["seed"]) == set(SEEDS)
    text = report.markdown.read_text()
    assert f"| synthetic | 3 | cdl | dqc | {ids['unpaired']} |" in text
    assert "| synthetic | status FAILED | 1 |" in text
    assert ids["old_cdl_0"] in text
    assert "Ignored 1 run(s)" in text


def test_training_and_timing_tables(report):
    training = report.training.set_index(["head", "seed"])
    for head in HEADS:
        for i, seed in enumerate(SEEDS):
            epochs = EPOCHS[head][i]
            r = training.loc[(head, seed)]
            assert r["epochs_run"] == epochs and r["best_epoch"] == epochs - 1
            # Epoch 1 (JIT compilation) is excluded from the steady-state times.
            assert r["step_s"] == pytest.approx(0.1 * (2 if head == "dqc" else 1))
            assert r["epoch_s"] == pytest.approx(
                np.mean([1 + 0.1 * e for e in range(2, epochs + 1)])
            )
            assert r["first_epoch_s"] == pytest.approx(50.0)
            val = [0.6 / e + 0.02 * seed + 0.01 * e for e in range(1, epochs + 1)]
            assert r["best_val_loss"] == pytest.approx(min(val))
    text = report.markdown.read_text()
    assert "### Timing" in text and "### Training" in text


def test_every_figure_is_written_and_linked(report):
    names = {p.relative_to(report.out_dir).as_posix() for p in report.figures}
    assert names == {
        "figures/macro_auroc.png",
        "figures/auroc_synthetic_test.png",
        "figures/auroc_synthetic_external.png",
        "figures/loss_synthetic.png",
        "figures/early_stop.png",
        "figures/volcano_test.png",
        "figures/volcano_external.png",
    }
    for path in report.figures:
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.markdown.read_text())
    assert sorted(links) == sorted(names)
    for table in ("auroc_comparisons", "training_per_run", "runs_used", "unpaired", "excluded"):
        assert (report.out_dir / "tables" / f"{table}.csv").stat().st_size > 0


def test_report_run_is_logged_and_ignored_by_the_next_report(report, store, tmp_path):
    from mlflow import MlflowClient

    from qcxr.report.load import load_runs

    client = MlflowClient(tracking_uri=store["uri"])
    run = client.get_run(report.run_id)
    assert run.info.run_name == "report" and run.data.tags["report"] == "true"
    assert client.get_experiment(run.info.experiment_id).name == "reports"
    top = {f.path for f in client.list_artifacts(report.run_id)}
    assert {"report.md", "figures", "tables"} <= top
    figures = {f.path for f in client.list_artifacts(report.run_id, "figures")}
    assert "figures/volcano_test.png" in figures

    # The report run now sits in the store; it must not count as a training run.
    data = load_runs(store["uri"])
    assert report.run_id not in set(data.runs["run_id"]) and data.ignored == 2
    assert data.experiments == ["synthetic"]


def test_cli_writes_a_report_and_fails_clearly(store, tmp_path):
    from qcxr.report.__main__ import main

    out = tmp_path / "cli"
    args = ["--tracking-uri", store["uri"], "--no-log", "--out", str(out)]
    # Seed 3 only: the unpaired cdl run and the FAILED dqc run, so no pair at all.
    assert main([*args, "--filter", "tags.seed = '3'"]) == 0
    text = (out / "report.md").read_text()
    assert "No complete (CDL, DQC) pair" in text
    assert f"| synthetic | 3 | cdl | dqc | {store['ids']['unpaired']} |" in text
    assert main(args) == 1  # report.md exists already
    assert main([*args[:3], "--experiment", "cxr99"]) == 1
    assert main([*args[:3], "--heads", "cdl", "cdl"]) == 1
    assert main([*args[:3], "--out", str(tmp_path / "bad"), "--filter", "tags.seed ==="]) == 1


def test_default_tracking_uri_is_the_repo_store(tmp_path, monkeypatch):
    from qcxr.report.load import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match="train first"):
        resolve_tracking_uri(None, start=tmp_path / "sub")
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").write_bytes(b"")
    assert resolve_tracking_uri(None, start=tmp_path / "sub") == (
        f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert resolve_tracking_uri(None, start=tmp_path) == "sqlite:///elsewhere.db"
    assert resolve_tracking_uri("http://x", start=tmp_path) == "http://x"


def test_pairing_and_label_order_on_plain_frames():
    """select_runs/auroc_comparisons without MLflow: fallbacks and partial metrics."""
    import pandas as pd

    from qcxr.report import analysis

    runs = pd.DataFrame(
        {
            "run_id": ["a0", "a1", "b0", "b1", "b1old", "c0"],
            "task": ["t"] * 6,
            "head": ["cdl", "cdl", "dqc", "dqc", "dqc", "dqc_nn"],
            "seed": pd.array([0, 1, 0, 1, 1, 0], dtype="Int64"),
            "seed_tag": ["0", "1", "0", "1", "1", "0"],
            "status": ["FINISHED"] * 6,
            "start_time": [1, 2, 3, 5, 4, 6],
        }
    )
    sel = analysis.select_runs(runs, ("cdl", "dqc"))
    assert sel.pairs[["seed", "run_a", "run_b"]].values.tolist() == [
        [0, "a0", "b0"],
        [1, "a1", "b1"],
    ]
    assert sel.superseded["run_id"].tolist() == ["b1old"] and sel.unpaired.empty
    assert sel.other_heads.values.tolist() == [["t", "dqc_nn", 1]]
    metrics = pd.DataFrame(
        [
            ("a0", "test/auroc/Zeta", 0.9), ("a1", "test/auroc/Zeta", 0.8),
            ("b0", "test/auroc/Zeta", 0.7), ("b1", "test/auroc/Zeta", 0.75),
            ("a0", "test/auroc/Alpha", 0.6), ("b0", "test/auroc/Alpha", 0.5),
            ("a1", "test/auroc/Alpha", 0.65),  # b1 lacks Alpha: one pair only
        ],
        columns=["run_id", "key", "value"],
    )  # fmt: skip
    table = analysis.auroc_comparisons(metrics, sel).set_index("label")
    # No data/train_positives: alphabetical order, flagged; no macro key: no macro row.
    assert list(table.index) == ["Alpha", "Zeta"] and not table["sorted_by_frequency"].any()
    assert table.loc["Alpha", "n"] == 1 and table.loc["Alpha", "n_missing"] == 1
    assert math.isnan(table.loc["Alpha", "p"]) and table.loc["Alpha", "stars"] == "n/a"
    assert table.loc["Zeta", "p"] == pytest.approx(sps.ttest_rel([0.9, 0.8], [0.7, 0.75]).pvalue)


ACCURACY = {"cdl": [0.61, 0.58, 0.60], "dqc": [0.55, 0.57, 0.52]}
BALANCED = {"cdl": [0.40, 0.41, 0.37], "dqc": [0.35, 0.36, 0.36]}


def test_multiclass_runs_get_paired_score_tests(tmp_path):
    """Runs of a multiclass task log test/accuracy, balanced accuracy, macro-F1: the report
    pairs them over seeds (paired t-test as scipy computes it) beside the AUROC comparisons."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from qcxr.report import build_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("ham10000", artifact_location=(tmp_path / "art").as_uri())
    start = T0
    for head in HEADS:
        for i, seed in enumerate(SEEDS):
            start += 10_000
            run_id = log_training_run(client, exp, head, seed, start)
            client.log_batch(
                run_id,
                metrics=[
                    Metric("test/accuracy", ACCURACY[head][i], start, 0),
                    Metric("test/balanced_accuracy", BALANCED[head][i], start, 0),
                ],
            )
    out = build_report(uri, tmp_path / "report", heads=HEADS)
    table = (tmp_path / "report" / "tables" / "score_comparisons.csv").read_text()
    assert "test,accuracy,3" in table and "test,balanced_accuracy,3" in table
    assert "f1_macro" not in table  # only what the runs logged
    text = out.markdown.read_text()
    assert "### Multiclass scores (arg-max class)" in text
    for score, values in (("accuracy", ACCURACY), ("balanced accuracy", BALANCED)):
        a, b = values["cdl"], values["dqc"]
        p = sps.ttest_rel(a, b).pvalue
        ma, mb = np.mean(a), np.mean(b)
        line = next(ln for ln in text.splitlines() if f"| {score} |" in ln)
        assert f"{ma:.3f} ± {np.std(a, ddof=1):.3f}" in line
        assert f"| {100 * 2 * (ma - mb) / (ma + mb):+.2f}% | {p:.4f} |" in line
    assert (out.comparisons["label"] == "(macro)").any()  # AUROC comparisons as before


def test_multilabel_report_has_no_score_section(report):
    assert "Multiclass scores" not in report.markdown.read_text()
    assert not (report.markdown.parent / "tables" / "score_comparisons.csv").exists()


def test_heads_default_to_the_two_the_runs_hold_with_cdl_first():
    from qcxr.report.build import infer_heads

    assert infer_heads(["qcnn", "cdl", "qcnn", "cdl"]) == ("cdl", "qcnn")
    assert infer_heads(["dqc", "qcnn"]) == ("dqc", "qcnn")
    assert infer_heads(["dqc", "cdl", "qcnn"]) == ("cdl", "dqc")
    with pytest.raises(ValueError, match="--heads"):
        infer_heads(["dqc", "qcnn", "dqc_nn"])
    with pytest.raises(ValueError, match="--heads"):
        infer_heads(["cdl"])
