"""End-to-end: task=synthetic backbone=tiny, 2 train epochs of tiny batches + eval, into a
temporary MLflow store; CDL and DQC with the same seed see identical batches."""

from __future__ import annotations

import hashlib

import jax
import numpy as np
import pytest

from qcxr import run as run_module
from qcxr.train import loop
from qcxr.train.checkpoint import Checkpoints
from tests.train_helpers import compose_run, mlflow_client


def _record_batches(monkeypatch):
    seen: list[str] = []
    original = loop._device_batch

    def recording(batch):
        if "index" in batch and len(seen) < 10_000:
            h = hashlib.sha256(np.asarray(batch["index"]).tobytes())
            h.update(np.ascontiguousarray(np.asarray(batch.get("image", 0))).tobytes())
            seen.append(h.hexdigest())
        return original(batch)

    monkeypatch.setattr(loop, "_device_batch", recording)
    return seen


@pytest.mark.slow
def test_smoke_run_logs_and_checkpoints(tmp_path, monkeypatch):
    seen = _record_batches(monkeypatch)
    saved = []
    original = Checkpoints.save_best

    def recording_save(self, epoch, state, meta):
        saved.append((epoch, jax.tree.map(np.array, state)))
        original(self, epoch, state, meta)

    monkeypatch.setattr(Checkpoints, "save_best", recording_save)
    cfg = compose_run(tmp_path, ["head=dqc", "data.num_external=12"])
    objective = run_module.run(cfg)
    assert np.isfinite(objective)

    client = mlflow_client(tmp_path)
    (exp,) = [e for e in client.search_experiments() if e.name == "synthetic"]
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.status == "FINISHED"
    assert r.data.tags["head"] == "dqc" and r.data.tags["ansatz"] == "ry_cnot_ring"
    assert r.data.tags["seed"] == "0" and r.data.tags["backbone"] == "tiny"
    assert r.data.tags["task"] == "synthetic" and r.data.tags["git_commit"]
    assert r.data.params["trainer.batch_size"] == "4"
    assert r.data.params["head.method_resolved"] in ("statevector", "split", "mps")
    assert r.data.params["optimizer.learning_rate"] == "0.0001"
    m = r.data.metrics
    for key in (
        "train/loss",
        "train/epoch_loss",
        "val/loss",
        "test/loss",
        "time/step_s",
        "time/epoch_s",
        "memory/peak_rss_mb",
        "train/epochs_run",
        "train/best_epoch",
    ):
        assert key in m, key
    assert m["train/epochs_run"] == 2
    # dataset statistics are params (and dataset inputs), not metrics that chart as flat lines
    assert not any(k.startswith("data/") for k in m)
    positives = {k: v for k, v in r.data.params.items() if k.startswith("data/train_positives/")}
    assert len(positives) == 8 and all(int(v) >= 0 for v in positives.values())
    assert len(client.get_metric_history(r.info.run_id, "train/loss")) == 2 * 6
    artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {
        "config.yaml",
        "auroc_per_label.csv",
        "predictions_test.csv",
        "learning_curves.png",
        "checkpoint_best",
    } <= artifacts
    # the objective is the val AUROC of the best epoch (lowest val loss), not of the last one
    val_loss = {h.step: h.value for h in client.get_metric_history(r.info.run_id, "val/loss")}
    val_auroc = {
        h.step: h.value for h in client.get_metric_history(r.info.run_id, "val/auroc_macro")
    }
    assert sorted(val_auroc) == [1, 2]
    best_epoch = min(val_loss, key=val_loss.get)
    assert m["train/best_epoch"] == best_epoch
    assert objective == pytest.approx(val_auroc[best_epoch], abs=1e-12)

    # the best checkpoint restores to the params that were saved as best
    assert saved and saved[-1][0] == m["train/best_epoch"]
    ckpt = Checkpoints(tmp_path / "run" / "checkpoints")
    template = jax.tree.map(np.zeros_like, saved[-1][1])
    state, meta = ckpt.restore_best(template)
    ckpt.close()
    assert meta["best_epoch"] == saved[-1][0]
    for a, b in zip(jax.tree.leaves(saved[-1][1]), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(seen) > 2 * 6


@pytest.mark.slow
def test_same_seed_identical_and_heads_see_same_batches(tmp_path, monkeypatch):
    seen = _record_batches(monkeypatch)
    results = {}
    # The fourth: a DQC under depolarizing noise (trajectories), whose noise stream must not touch
    # the data streams (issue 16).
    noisy = "dqc head.noise.depolarizing=0.05 head.method=trajectories head.trajectories=2"
    for i, head in enumerate(["cdl", "dqc", "cdl", noisy]):
        start = len(seen)
        head, *extra = head.split()
        cfg = compose_run(
            tmp_path,
            [f"head={head}", *extra, "tracker=none", "trainer.max_epochs=1"],
            run_dir=f"run{i}",
        )
        results[i] = (run_module.run(cfg), seen[start:])
    assert results[0][1] == results[1][1]  # CDL and DQC: identical batches
    assert results[0] == results[2]  # same seed twice: same batches and same objective
    assert results[3][1] == results[0][1]  # a noisy DQC: identical batches too


@pytest.mark.slow
def test_mps_truncation_logs_discarded_weight_per_step(tmp_path):
    # 8 qubits (synthetic task), exact bond 16: max_bond 2 truncates after every ring.
    cfg = compose_run(
        tmp_path,
        ["head=dqc", "head.method=mps", "head.max_bond=2", "trainer.max_epochs=1"],
    )
    assert np.isfinite(run_module.run(cfg))
    client = mlflow_client(tmp_path)
    (exp,) = [e for e in client.search_experiments() if e.name == "synthetic"]
    (r,) = client.search_runs([exp.experiment_id])
    history = client.get_metric_history(r.info.run_id, "train/mps_discarded_weight")
    assert len(history) == 6  # one per train step
    assert all(0 < h.value < 1 for h in history)
