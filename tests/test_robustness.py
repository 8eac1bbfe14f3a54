"""`python -m qcxr.robustness` end to end on tiny trained runs in a real temporary MLflow store:
child runs nested under the trained run with AUROC per grid point and a PNG, the ideal point
reproducing the run's own test AUROC, the experiment summary, the report's robustness section,
clear errors; and noise-aware training through the config keys (issue 16)."""

from __future__ import annotations

import logging

import pytest

from qcxr import run as run_module
from tests.train_helpers import compose_run, mlflow_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ideal DQC run (2 epochs), a DQC trained under depolarizing noise and a CDL run
    (1 epoch each), seed 0, in one store."""
    tmp = tmp_path_factory.mktemp("robust")
    runs = {}
    for name, overrides in {
        "dqc": ["head=dqc"],
        "noisy": [
            "head=dqc",
            "head.noise.depolarizing=0.05",
            "head.method=trajectories",
            "head.trajectories=2",
            "trainer.max_epochs=1",
        ],
        "cdl": ["head=cdl", "trainer.max_epochs=1"],
    }.items():
        cfg = compose_run(tmp, overrides, run_dir=f"run_{name}")
        run_module.run(cfg)
        runs[name] = (tmp / f"run_{name}" / run_module.RUN_ID_FILE).read_text().strip()
    return {"tmp": tmp, "uri": f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}", "ids": runs}


def test_noise_keys_are_logged_and_change_the_trained_model(trained):
    client = mlflow_client(trained["tmp"])
    noisy = client.get_run(trained["ids"]["noisy"])
    ideal = client.get_run(trained["ids"]["dqc"])
    assert noisy.data.params["head.noise.depolarizing"] == "0.05"
    assert ideal.data.params["head.noise.depolarizing"] == "0.0"
    assert noisy.data.tags["noise"] == "depolarizing=0.05" and "noise" not in ideal.data.tags
    assert noisy.info.run_name.endswith("-depolarizing=0.05")
    # After one identical epoch of batches, the noisy circuit gave other losses.
    first = {
        r: client.get_metric_history(trained["ids"][r], "train/loss")[0].value
        for r in ("dqc", "noisy")
    }
    assert first["dqc"] != first["noisy"]


def test_cli_logs_nested_runs_metrics_and_figures(trained, capsys):
    from qcxr.report import build_report
    from qcxr.robustness.__main__ import main

    uri = trained["uri"]
    # Two grid points per run (shots are covered by tests/unit/test_noise_head.py).
    args = ["--tracking-uri", uri, "--levels", "0,0.2", "--shots", "none", "--no-progress"]
    assert main(["synthetic", *args, "--method", "density_matrix"]) == 0
    assert "mean ± sd over 2 run(s)" in capsys.readouterr().out  # the two DQC runs, not the CDL
    client = mlflow_client(trained["tmp"])
    (exp,) = [e for e in client.search_experiments() if e.name == "synthetic"]
    children = client.search_runs([exp.experiment_id], "tags.robustness = 'run'")
    assert {c.data.tags["robustness_of"] for c in children} == {
        trained["ids"]["dqc"],
        trained["ids"]["noisy"],
    }
    for child in children:
        source = client.get_run(child.data.tags["robustness_of"])
        assert child.data.tags["mlflow.parentRunId"] == source.info.run_id  # nested in the UI
        assert child.info.status == "FINISHED" and "head" not in child.data.tags
        m = child.data.metrics
        base = "robust/depolarizing/{}/shots_{}/test/auroc_macro"
        assert {base.format(lv, "exact") for lv in ("0.0", "0.2")} <= set(m)
        labels = [k.split("/auroc/")[1] for k in source.data.metrics if k.startswith("test/auroc/")]
        for label in labels:
            assert f"robust/depolarizing/0.0/shots_exact/test/auroc/{label}" in m
        assert child.data.params["trained_noise"] == source.data.tags.get("noise", "none")
        if source.info.run_id == trained["ids"]["dqc"]:
            # level 0, exact <Z>: the computation the ideal run's own evaluation did
            assert m[base.format("0.0", "exact")] == pytest.approx(
                source.data.metrics["test/auroc_macro"], abs=1e-6
            )
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == {
            "robustness.csv",
            "robustness.png",
        }
    (summary,) = client.search_runs([exp.experiment_id], "tags.robustness = 'summary'")
    assert summary.data.params["num_runs"] == "2"
    assert "robust/depolarizing/0.2/shots_exact/test/auroc_macro_sd" in summary.data.metrics
    png = client.download_artifacts(summary.info.run_id, "robustness.png", str(trained["tmp"]))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    report = build_report(uri, trained["tmp"] / "report", heads=("cdl", "dqc"))
    text = report.markdown.read_text()
    assert "## Robustness to noise and finite shots" in text
    assert "figures/robustness_synthetic_depolarizing_test.png" in text
    assert (report.out_dir / "tables" / "robustness.csv").is_file()


def test_cli_errors_name_the_problem(trained, caplog):
    from qcxr.robustness.__main__ import main

    uri = trained["uri"]
    caplog.set_level(logging.ERROR)
    assert main(["no-such-run", "--tracking-uri", uri]) == 1
    assert "neither an experiment nor a run id" in caplog.text
    caplog.clear()
    assert main([trained["ids"]["cdl"], "--tracking-uri", uri]) == 1
    assert "head cdl is not a DQC" in caplog.text
    caplog.clear()
    client = mlflow_client(trained["tmp"])
    exp = client.get_experiment_by_name("synthetic").experiment_id
    bare = client.create_run(exp, tags={"head": "dqc", "seed": "9"})
    client.set_terminated(bare.info.run_id)
    assert main([bare.info.run_id, "--tracking-uri", uri]) == 1
    assert "no checkpoint_best artifact" in caplog.text
    caplog.clear()
    assert main(["synthetic", "--tracking-uri", uri, "--levels", "0,2"]) == 1
    assert "outside [0, 1]" in caplog.text


def test_a_run_whose_ideal_point_does_not_reproduce_is_failed_and_left_out(trained, capsys):
    """The trained run's logged test AUROC no longer matches what its checkpoint gives (as when
    its data or code changed since training): its robustness run ends FAILED with both numbers,
    the summary and the report leave it out and say so, the other run is still summarised."""
    from qcxr.report import build_report
    from qcxr.robustness.__main__ import main

    uri, client = trained["uri"], mlflow_client(trained["tmp"])
    dqc = trained["ids"]["dqc"]
    logged = client.get_run(dqc).data.metrics["test/auroc_macro"]
    tampered = logged - 0.01 if logged > 0.5 else logged + 0.01
    client.log_metric(dqc, "test/auroc_macro", tampered, step=10**6)
    try:
        args = ["--tracking-uri", uri, "--levels", "0", "--shots", "none", "--no-progress"]
        assert main(["synthetic", *args, "--method", "density_matrix"]) == 1
        out = capsys.readouterr().out
        assert "left out 1 run(s)" in out and dqc in out and f"logged {tampered:.6f}" in out
        exp = client.get_experiment_by_name("synthetic").experiment_id
        children = client.search_runs(
            [exp],
            f"tags.robustness = 'run' and tags.robustness_of = '{dqc}'",
            order_by=["attributes.start_time DESC"],
        )
        child = children[0]
        assert child.info.status == "FAILED" and child.data.tags["reproduced"] == "false"
        m = child.data.metrics
        assert m["reproduce/logged_test_auroc_macro"] == pytest.approx(tampered, abs=1e-12)
        assert m["reproduce/reevaluated_test_auroc_macro"] == pytest.approx(logged, abs=1e-5)
        assert "changed since training" in child.data.tags["failure"]
        (summary,) = client.search_runs(
            [exp],
            "tags.robustness = 'summary'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        assert summary.data.params["num_runs"] == "1"
        assert summary.data.tags["left_out"] == dqc
        text = build_report(uri, trained["tmp"] / "report_left_out", heads=("cdl", "dqc"))
        text = text.markdown.read_text()
        assert "Left out: 1 run(s)" in text and f"`{dqc}`" in text
        assert f"logged {tampered:.6f}, re-evaluated {logged:.6f}" in text
    finally:
        client.log_metric(dqc, "test/auroc_macro", logged, step=10**6 + 1)
