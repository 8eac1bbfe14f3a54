"""`python -m qcxr.bench train-step-torch` and `python -m qcxr.bench batch-norm`
(docs/benchmarks.md) in a quick form: tiny batches, one round / one epoch on a few images."""

import json

import pytest

from qcxr.bench.__main__ import main


def test_train_step_torch_checks_agreement_then_times_both(tmp_path, capfd):
    out = tmp_path / "t.json"
    argv = ["train-step-torch", "--batch", "2", "--rounds", "1", "--steps", "1", "--warmup", "1"]
    assert main([*argv, "--threads", "1", "--out", str(out)]) == 0
    text = capfd.readouterr().out
    assert "| implementation | images/s (median) |" in text
    assert "| qcxr (JAX) |" in text and "| torch channels_last |" in text
    result = json.loads(out.read_text())
    agree = result["agreement"]
    assert agree["params_qcxr"] == agree["params_torch"] == 11_167_680 + 512 * 2 + 2
    assert abs(agree["loss_qcxr"] - agree["loss_torch"]) <= 1e-3 * abs(agree["loss_torch"])
    assert set(result["medians"]) == {"qcxr (JAX)", "torch", "torch channels_last"}
    assert all(v > 0 for v in result["medians"].values())


@pytest.mark.realdata
def test_batch_norm_ab_trains_both_arms(tmp_path, capfd, shared_data):
    out = tmp_path / "bn.json"
    npz = shared_data / "medmnist" / "pneumoniamnist.npz"
    argv = ["batch-norm", "--npz", str(npz), "--limit", "8", "--eval-limit", "16", "--batch", "4"]
    argv += ["--epochs", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "| batch norm | final train loss |" in capfd.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["arm"] for r in rows] == ["train-mode", "fixed"]
    assert all(0 <= r["test_auc"] <= 1 and 0 <= r["test_acc"] <= 1 for r in rows)
