"""Run-level behaviour: NaN loss -> FAILED, memory guard -> FAILED, resume == uninterrupted."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from qcxr import metrics
from qcxr import run as run_module
from qcxr.train import NonFiniteLossError
from qcxr.train.checkpoint import Checkpoints
from tests.train_helpers import compose_run, mlflow_client


def _runs(tmp_path):
    client = mlflow_client(tmp_path)
    exp = client.get_experiment_by_name("synthetic")
    return client, client.search_runs([exp.experiment_id])


@pytest.mark.slow
def test_nan_loss_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "masked_bce", lambda logits, labels, mask: jnp.nan * logits.sum())
    cfg = compose_run(tmp_path, ["head=cdl"])
    with pytest.raises(NonFiniteLossError, match="non-finite train loss"):
        run_module.run(cfg)
    _, (r,) = _runs(tmp_path)
    assert r.info.status == "FAILED"


@pytest.mark.slow
def test_memory_guard_refuses_before_any_tracker_run(tmp_path, monkeypatch):
    # The simulation's shapes are static: the refusal comes before the MLflow run is created
    # (issue 20 item 7: it used to leave a FAILED run with no metrics).
    monkeypatch.setenv("QCXR_MEMORY_BUDGET_GB", "0.0000001")
    cfg = compose_run(tmp_path, ["head=dqc"])
    with pytest.raises(run_module.RunError, match="does not fit in memory"):
        run_module.run(cfg)
    client = mlflow_client(tmp_path)
    exp = client.get_experiment_by_name("synthetic")
    assert exp is None or not client.search_runs([exp.experiment_id])
    assert not (tmp_path / "run" / run_module.RUN_ID_FILE).exists()


@pytest.mark.slow
@pytest.mark.parametrize("head", ["dqc", "qcnn"])  # qcnn: dropout keys follow the restored step
def test_resume_matches_uninterrupted(tmp_path, monkeypatch, head):
    overrides = [f"head={head}", "trainer.max_epochs=3", "trainer.patience=5"]
    full = run_module.run(compose_run(tmp_path, overrides, run_dir="full"))

    original = Checkpoints.save_latest

    def crash_after_second(self, epoch, state, meta):
        original(self, epoch, state, meta)
        if epoch == 2:
            raise KeyboardInterrupt  # the "interruption", right after epoch 2's checkpoint

    monkeypatch.setattr(Checkpoints, "save_latest", crash_after_second)
    with pytest.raises(KeyboardInterrupt):
        run_module.run(compose_run(tmp_path, overrides, run_dir="again"))
    monkeypatch.setattr(Checkpoints, "save_latest", original)
    resumed = run_module.run(compose_run(tmp_path, overrides, run_dir="again"))
    assert resumed == full

    client, runs = _runs(tmp_path)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    a, b = runs
    keys = [k for k in a.data.metrics if k.startswith(("test/", "val/", "train/epoch"))]
    assert keys
    for k in keys:
        assert a.data.metrics[k] == b.data.metrics[k], k


@pytest.mark.slow
def test_frozen_backbone_params_say_augmentation_was_off(tmp_path):
    # Cached features force augmentation off (a warning says so): the params must say what ran
    # (issue 20 item 3; they said data.augment=True).
    cfg = compose_run(tmp_path, ["head=cdl", "backbone.freeze=true", "trainer.max_epochs=1"])
    assert cfg.data.augment is True
    run_module.run(cfg)
    client, (r,) = _runs(tmp_path)
    assert r.data.params["data.augment"] == "False"
    assert r.data.tags["features"] == "cached"
    config_yaml = client.download_artifacts(r.info.run_id, "config.yaml", str(tmp_path))
    assert "augment: false" in open(config_yaml).read()


@pytest.mark.slow
def test_train_lr_is_logged_per_step_and_follows_the_cosine(tmp_path):
    # train/lr per step, what Lightning's LearningRateMonitor gives (issue 20 item 2); checked
    # against the cosine written out by hand, not against the code that logs it.
    import math

    overrides = ["head=cdl", "optimizer.schedule=cosine", "optimizer.learning_rate=0.01"]
    run_module.run(compose_run(tmp_path, overrides))
    client, (r,) = _runs(tmp_path)
    history = sorted(client.get_metric_history(r.info.run_id, "train/lr"), key=lambda m: m.step)
    total = 2 * 24 // 4  # max_epochs x batches of the tiny train split
    assert [m.step for m in history] == list(range(1, total + 1))
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    assert [m.value for m in history] == pytest.approx(expected, rel=1e-5, abs=1e-9)


@pytest.mark.slow
def test_resuming_a_cosine_run_with_more_epochs_is_refused_naming_the_schedule(tmp_path):
    # Issue 20's must-show pair: max_epochs=2 under cosine, then max_epochs=4 in the same run dir.
    # max_epochs shapes the cosine, so the resumed run would follow another LR curve.
    overrides = ["head=cdl", "optimizer.schedule=cosine"]
    run_module.run(compose_run(tmp_path, [*overrides, "trainer.max_epochs=2"]))
    with pytest.raises(run_module.RunError, match=r"cosine.*max_epochs|max_epochs.*cosine"):
        run_module.run(compose_run(tmp_path, [*overrides, "trainer.max_epochs=4"]))
    client, (r,) = _runs(tmp_path)  # nothing was appended to the finished run
    assert r.info.status == "FINISHED"
    assert max(m.step for m in client.get_metric_history(r.info.run_id, "train/lr")) == 2 * 6


@pytest.mark.slow
def test_ideal_dqc_params_say_trajectories_unused(tmp_path):
    # An ideal DQC draws no trajectories: its params said head.trajectories=64 (issue 20 item 6).
    run_module.run(compose_run(tmp_path, ["head=dqc", "trainer.max_epochs=1"]))
    _, (r,) = _runs(tmp_path)
    assert r.data.params["head.trajectories"] == "unused"
    assert r.data.params["head.method_resolved"] == "statevector"


@pytest.mark.slow
def test_train_lr_follows_the_multistep_milestones_in_epochs(tmp_path):
    # MultiStepLR written out by hand: 6 batches per epoch, the rate halves after epoch 1.
    overrides = [
        "head=cdl",
        "optimizer.schedule=multistep",
        "optimizer.milestones=[1]",
        "optimizer.gamma=0.5",
        "optimizer.learning_rate=0.01",
    ]
    run_module.run(compose_run(tmp_path, overrides))
    client, (r,) = _runs(tmp_path)
    history = sorted(client.get_metric_history(r.info.run_id, "train/lr"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, 13))
    assert [m.value for m in history] == pytest.approx([0.01] * 6 + [0.005] * 6, rel=1e-6)


@pytest.mark.slow
def test_monitor_max_keeps_the_best_val_auroc_epoch_and_patience_null_trains_every_epoch(tmp_path):
    overrides = [
        "head=cdl",
        "trainer.max_epochs=3",
        "trainer.patience=null",
        "trainer.monitor=val/auroc_macro",
        "trainer.monitor_mode=max",
        "optimized_metric=val/auroc_macro",
    ]
    objective = run_module.run(compose_run(tmp_path, overrides))
    client, (r,) = _runs(tmp_path)
    aurocs = sorted(
        client.get_metric_history(r.info.run_id, "val/auroc_macro"), key=lambda m: m.step
    )
    values = [m.value for m in aurocs]
    best = 1 + values.index(max(values))  # the first epoch of the highest val AUROC
    assert r.data.metrics["train/best_epoch"] == best and r.data.metrics["train/epochs_run"] == 3
    assert objective == max(values)
    assert [p.name for p in (tmp_path / "run" / "checkpoints" / "best").iterdir()] == [str(best)]


@pytest.mark.slow
def test_init_from_a_run_id_or_its_folder_starts_from_its_best_backbone(tmp_path):
    import jax
    import numpy as np
    import yaml

    from qcxr.train import features

    run_module.run(compose_run(tmp_path, ["head=cdl"], run_dir="source"))
    client, (source,) = _runs(tmp_path)
    best = Checkpoints(tmp_path / "source" / "checkpoints").restore_best(None)[0]
    trained = best["params"]["backbone"]
    frozen = ["head=cdl", "backbone.freeze=true", "trainer.max_epochs=1"]
    for spec, run_dir in ((source.info.run_id, "by_id"), ("source", "by_folder")):
        cfg = compose_run(tmp_path, [*frozen, f"backbone.init_from={spec}"], run_dir=run_dir)
        run_module.run(cfg)
        restored = Checkpoints(tmp_path / run_dir / "checkpoints").restore_best(None)[0]
        got = restored["params"]["backbone"]
        assert jax.tree.structure(got) == jax.tree.structure(trained)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(trained), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # exactly
    _, runs = _runs(tmp_path)
    started = [r for r in runs if r.info.run_id != source.info.run_id]
    assert len(started) == 2
    fingerprint = features.tree_fingerprint({"params": trained})
    for r in started:
        assert r.data.tags[run_module.INIT_FROM_TAG] == source.info.run_id
        assert r.data.params["backbone.freeze"] == "True"
        (lineage,) = [d for d in r.inputs.dataset_inputs if d.dataset.name.startswith("backbone-")]
        assert lineage.dataset.digest == fingerprint[: len(lineage.dataset.digest)]
        assert {t.value for t in lineage.tags} == {"backbone"}
    # The features cached for them are keyed by the source's weights, not by a fresh init's.
    path = client.download_artifacts(started[0].info.run_id, "config.yaml", str(tmp_path))
    rebuilt = run_module.rebuild_for_evaluation(yaml.safe_load(open(path)))
    fresh, _ = rebuilt.classifier.init(jax.random.key(0))
    keys = features.feature_keys(
        rebuilt.data, rebuilt.classifier, {"backbone": trained}, rebuilt.model_state
    )
    other = features.feature_keys(rebuilt.data, rebuilt.classifier, fresh, rebuilt.model_state)
    cached = {p.stem for p in (tmp_path / "cache" / "features").iterdir()}
    assert set(keys.values()) <= cached and not set(other.values()) & cached
    # Another architecture is refused before any tracker run, naming both backbones.
    wider = [*frozen, f"backbone.init_from={source.info.run_id}", "backbone.feature_dim=16"]
    with pytest.raises(run_module.RunError, match=r"backbone \(tiny, run .*backbone=tiny \("):
        run_module.run(compose_run(tmp_path, wider, run_dir="wider"))
    with pytest.raises(run_module.RunError, match="neither a folder nor a run id"):
        run_module.run(compose_run(tmp_path, [*frozen, "backbone.init_from=0123abc"], run_dir="x"))
    assert len(_runs(tmp_path)[1]) == 3


@pytest.mark.slow
@pytest.mark.realdata
def test_medmnist_preset_end_to_end_on_the_real_npz(tmp_path, shared_data):
    # The protocol's wiring on the real PneumoniaMNIST (the tiny backbone, one epoch): MedMNIST's
    # AUC and ACC beside the usual metrics, both classes' AUROC, the monitored val AUC.
    npz = shared_data / "medmnist" / "pneumoniamnist.npz"
    overrides = [
        "experiment=medmnist_pneumonia",
        f"data.npz={npz}",
        "backbone=tiny",
        "backbone.image_size=28",
        "backbone.feature_dim=8",
        "trainer.max_epochs=1",
        "trainer.progress=false",
        "trainer.compilation_cache=false",
        "data.num_threads=1",
    ]
    objective = run_module.run(compose_run(tmp_path, overrides, tiny=False))
    client = mlflow_client(tmp_path)
    exp = client.get_experiment_by_name("pneumoniamnist")
    (r,) = client.search_runs([exp.experiment_id])
    m = r.data.metrics
    for split in ("val", "test"):
        assert 0.0 <= m[f"{split}/medmnist_auc"] <= 1.0
        assert m[f"{split}/medmnist_acc"] == m[f"{split}/accuracy"]  # 2 classes: "> .5" = arg-max
        assert m[f"{split}/medmnist_auc"] == pytest.approx(m[f"{split}/auroc/pneumonia"], abs=1e-6)
    assert {"test/auroc_macro", "test/auroc/normal", "test/balanced_accuracy"} <= set(m)
    assert objective == pytest.approx(m["val/medmnist_auc"])
    assert r.data.params["optimizer.milestones"] == "[]"  # 0.5 and 0.75 of one epoch: none whole
    lr = client.get_metric_history(r.info.run_id, "train/lr")
    assert len(lr) == 31  # ceil(3,882 / 128) steps
    assert all(x.value == pytest.approx(1e-3) for x in lr)


def test_trained_batch_norm_statistics_are_checkpointed_and_evaluated(tmp_path):
    # Issue 22 item 1, end to end: a backbone that trains updates its running statistics in the
    # train state, the best checkpoint holds them, and the logged test metrics are computed with
    # them (not with the initial statistics, which the fixed-statistics trainer used).
    import jax
    import numpy as np
    from omegaconf import OmegaConf

    from qcxr.train import loop, steps
    from tests.train_helpers import TINY

    overrides = [o for o in TINY if not o.startswith("backbone.")]
    overrides += ["backbone=resnet18_28", "backbone.image_size=8", "backbone.resize_size=8"]
    overrides += ["head=cdl", "trainer.max_epochs=1"]
    cfg = compose_run(tmp_path, overrides, tiny=False)
    run_module.run(cfg)
    _, (r,) = _runs(tmp_path)
    rebuilt = run_module.rebuild_for_evaluation(OmegaConf.to_container(cfg, resolve=True))
    ckpt = Checkpoints(tmp_path / "run" / "checkpoints")
    best, _ = ckpt.restore_best(rebuilt.state_template)
    ckpt.close()
    trained = jax.tree.map(np.asarray, best["model_state"])
    initial = jax.tree.map(np.asarray, rebuilt.model_state)
    assert not jax.tree.all(jax.tree.map(np.array_equal, trained, initial))

    def apply(p, batch, *, model_state, train=False):
        return rebuilt.classifier.logits(p, model_state, batch["image"], train=train)

    eval_step = steps.make_eval_step(apply, rebuilt.kind, stateful=True)

    def test_loss(model_state):
        ev = loop.evaluate(
            eval_step,
            best["params"],
            rebuilt.data,
            "test",
            rebuilt.label_names,
            kind=rebuilt.kind,
            model_state=model_state,
        )
        return ev.loss

    assert test_loss(best["model_state"]) == pytest.approx(r.data.metrics["test/loss"], rel=1e-5)
    assert test_loss(rebuilt.model_state) != pytest.approx(r.data.metrics["test/loss"], rel=1e-3)
