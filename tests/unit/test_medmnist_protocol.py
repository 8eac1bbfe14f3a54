"""MedMNIST v2's protocol pieces (issue 22 item 2): its AUC/ACC against scikit-learn and hand
computation, the multistep schedule against the rates written out by hand, the monitor and patience
options, the two-class pneumoniamnist task, and the preset's values. Whole runs (train/lr per step,
the monitored best epoch, the real npz end to end) are in tests/unit/test_train_run.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from qcxr import metrics
from qcxr.data import medmnist
from qcxr.run import ConfigError, RunError, check_monitor, validate_config
from qcxr.train import loop, optim
from tests.train_helpers import CONF, compose_run

SMALL = {"batch_size": 4, "image_size": 8, "num_threads": 1}


# ---- MedMNIST's evaluator -----------------------------------------------------------------------
def test_binary_auc_and_acc_are_medmnists():
    # Two softmax classes: AUC of the class-1 column, ACC of (class-1 score > 0.5); 0.5 itself
    # counts as class 0 (MedMNIST's strict ">"), so the hand count differs from a ">=" rule.
    y = np.array([0, 1, 1, 0, 1, 0, 1])
    p1 = np.array([0.2, 0.5, 0.9, 0.6, 0.7, 0.1, 0.4])
    probs = np.stack([1 - p1, p1], axis=1)
    out = metrics.medmnist_scores(np.eye(2, dtype=bool)[y], probs, "multiclass")
    assert out["medmnist_auc"] == pytest.approx(roc_auc_score(y, p1), abs=1e-12)
    # predictions 0,0,1,1,1,0,0 against 0,1,1,0,1,0,1: right at 0, 2, 4, 5
    assert out["medmnist_acc"] == pytest.approx(4 / 7)
    assert out["medmnist_acc"] == pytest.approx(accuracy_score(y, p1 > 0.5))
    # One sigmoid label is MedMNIST's binary-class too.
    single = metrics.medmnist_scores(y[:, None].astype(bool), p1[:, None], "multilabel")
    assert single == out


def test_multiclass_and_multilabel_auc_and_acc_are_medmnists():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0, 2])
    logits = rng.normal(size=(10, 3))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = metrics.medmnist_scores(np.eye(3, dtype=bool)[y], probs, "multiclass")
    per_class = [roc_auc_score(y == k, probs[:, k]) for k in range(3)]
    assert out["medmnist_auc"] == pytest.approx(np.mean(per_class), abs=1e-12)
    assert out["medmnist_acc"] == pytest.approx(accuracy_score(y, probs.argmax(1)))
    labels = rng.random((10, 3)) < 0.5
    scores = rng.random((10, 3))
    scores[0, 0] = 0.5  # ">= 0.5" is positive for multi-label (MedMNIST: "< threshold" is 0)
    multi = metrics.medmnist_scores(labels, scores, "multilabel")
    aucs = [roc_auc_score(labels[:, j], scores[:, j]) for j in range(3)]
    accs = [accuracy_score(labels[:, j], scores[:, j] >= 0.5) for j in range(3)]
    assert multi == pytest.approx({"medmnist_auc": np.mean(aucs), "medmnist_acc": np.mean(accs)})


def test_evaluate_adds_the_medmnist_scores_only_when_asked():
    y = np.eye(2, dtype=bool)[[0, 1, 1, 0, 1, 0]]
    p1 = np.array([0.3, 0.8, 0.45, 0.2, 0.9, 0.6], np.float32)

    class Source:
        def num_batches(self, split):
            return 2

        def batches(self, split, epoch):
            for rows in (np.arange(4), np.array([4, 5, -1, -1])):
                mask = rows >= 0
                yield {"x": rows, "labels": y[rows] & mask[:, None], "mask": mask, "index": rows}

    def eval_step(params, batch, model_state=None):
        rows = np.where(batch["mask"], batch["x"], 0)
        return np.stack([1 - p1[rows], p1[rows]], 1), np.zeros(len(rows), np.float32)

    plain = loop.evaluate(
        eval_step, None, Source(), "test", ["normal", "pneumonia"], kind="multiclass"
    )
    ev = loop.evaluate(
        eval_step,
        None,
        Source(),
        "test",
        ["normal", "pneumonia"],
        kind="multiclass",
        extra_metrics=("medmnist",),
    )
    assert "test/medmnist_auc" not in plain.as_metrics("test")
    logged = ev.as_metrics("test")
    assert logged["test/medmnist_auc"] == pytest.approx(roc_auc_score(y[:, 1], p1))
    assert logged["test/medmnist_acc"] == pytest.approx(4 / 6)  # 0.45 and 0.6 are wrong
    assert logged["test/accuracy"] == logged["test/medmnist_acc"]  # 2 classes: arg-max = "> .5"


# ---- multistep ----------------------------------------------------------------------------------
def test_multistep_rates_are_the_ones_written_by_hand():
    # 3 batches per epoch, milestones after epochs 2 and 3: epochs 1-2 at 0.1, 3 at 0.01, 4 at
    # 0.001 (PyTorch's MultiStepLR([2, 3], gamma=0.1) stepped once per epoch).
    lr = optim.step_learning_rates(
        0.1, "multistep", total_steps=12, milestones=[2, 3], gamma=0.1, steps_per_epoch=3
    )
    expected = [0.1] * 6 + [0.01] * 3 + [0.001] * 3
    assert [lr(s) for s in range(12)] == pytest.approx(expected, rel=1e-6)
    # Accumulating 2 micro-batches per update: an update takes the rate of its first batch's
    # epoch (updates 0-2 cover epochs 1-2, update 3 starts at batch 6, epoch 3).
    acc = optim.step_learning_rates(
        0.1,
        "multistep",
        total_steps=12,
        accumulation_steps=2,
        milestones=[2, 3],
        gamma=0.5,
        steps_per_epoch=3,
    )
    assert [acc(s) for s in range(12)] == pytest.approx([0.1] * 6 + [0.05] * 4 + [0.025] * 2)
    assert optim.milestone_steps([2, 3], 3, 2) == [3, 5]


def test_multistep_reaches_the_optimizer_updates():
    # The optimizer's own updates follow the same rates (SGD without momentum: update = -lr * g).
    import jax.numpy as jnp

    tx = optim.sgd(1.0, momentum=0.0, schedule="multistep", milestones=[1], gamma=0.1,
                   total_steps=4, steps_per_epoch=2)  # fmt: skip
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    sizes = []
    for _ in range(4):
        update, state = tx.update({"w": jnp.ones(())}, state, params)
        sizes.append(-float(update["w"]))
    assert sizes == pytest.approx([1.0, 1.0, 0.1, 0.1], rel=1e-6)


def test_medmnist_milestones_scale_with_the_epochs_and_drop_fractional_ones():
    assert optim.epoch_milestones(100, [0.5, 0.75]) == [50, 75]
    assert optim.epoch_milestones(10, [0.5, 0.75]) == [5]  # 7.5 never fires in their code
    assert optim.epoch_milestones(1, [0.5, 0.75]) == []


def test_multistep_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        optim.adam(1e-3, schedule="multistep", milestones=[1], total_steps=4)
    with pytest.raises(ValueError, match="increasing epochs"):
        optim.milestone_steps([3, 2], 4)
    with pytest.raises(ValueError, match="same optimizer update"):
        optim.milestone_steps([1, 2], 1, accumulation_steps=4)
    with pytest.raises(ValueError, match="no warm-up"):
        optim.make_schedule(1.0, "multistep", warmup_steps=2, boundaries=[3])


# ---- monitor, patience and their validation -----------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("trainer.monitor=test/auroc_macro", "must be a val metric"),
        ("trainer.monitor_mode=maximum", "monitor_mode='maximum'"),
        ("task.extra_metrics=[sklearn]", "task.extra_metrics \\['sklearn'\\] unknown"),
        ("optimizer.milestones=[5,3]", "must be increasing epochs"),
    ],
)
def test_bad_monitor_and_schedule_values_fail_before_anything_is_built(tmp_path, bad, message):
    cfg = compose_run(tmp_path, ["optimizer.schedule=multistep", bad])
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_patience_null_is_valid_and_defaults_monitor_the_val_loss(tmp_path):
    cfg = compose_run(tmp_path, ["trainer.patience=null"])
    validate_config(cfg)
    assert (cfg.trainer.monitor, cfg.trainer.monitor_mode) == ("val/loss", "min")


def test_a_monitor_the_task_does_not_log_is_named_with_the_fix():
    with pytest.raises(RunError, match="task.extra_metrics=\\[medmnist\\]"):
        check_monitor("val/medmnist_auc", "multiclass", ["a", "b"], ())
    with pytest.raises(RunError, match="val/accuracy"):
        check_monitor("val/accuracy", "multilabel", ["a"], ())
    check_monitor("val/auroc/b", "multiclass", ["a", "b"], ())
    check_monitor("val/medmnist_acc", "multiclass", ["a", "b"], ("medmnist",))


class _History:
    """A source and eval step whose val scores follow a given sequence, one value per epoch."""

    def __init__(self, aucs):
        self.aucs, self.epoch = aucs, 0

    def num_batches(self, split):
        return 1

    def batches(self, split, epoch):
        if split == "train":
            self.epoch += 1
        y = np.array([[True], [False], [True], [False]])
        yield {"x": np.zeros(4), "labels": y, "mask": np.ones(4, bool), "index": np.arange(4)}

    def eval_step(self, params, batch, model_state=None):
        # Scores whose AUROC is aucs[epoch]: 1.0 ranks both positives first, 0.5 ties, 0.0 last.
        a = self.aucs[self.epoch - 1]
        scores = np.array([[a], [0.5], [a], [0.5]], np.float32)
        loss = np.full(4, self.epoch, np.float32)  # rising: val/loss would pick epoch 1
        return scores, loss


class _Checkpoints:
    def __init__(self):
        self.best = []

    def save_best(self, epoch, state, meta):
        self.best.append(epoch)

    def save_latest(self, epoch, state, meta):
        pass


@pytest.mark.parametrize(
    ("monitor", "mode", "patience", "best", "epochs"),
    [
        ("val/auroc_macro", "max", None, [1, 3], 5),  # AUCs .5 .4 .9 .9 .1: best 3, no stop
        ("val/auroc_macro", "max", 1, [1], 2),  # stops after one epoch without a better AUC
        ("val/loss", "min", 2, [1], 3),  # the paper's default picks the lowest loss
    ],
)
def test_fit_keeps_the_best_monitored_epoch(monitor, mode, patience, best, epochs):
    from qcxr.tracking.base import NullTracker

    source = _History([0.5, 0.4, 0.9, 0.9, 0.1])
    checkpoints = _Checkpoints()
    result = loop.fit(
        state={"params": {}, "model_state": {}, "step": 0},
        train_step=lambda state, batch: ({**state, "step": state["step"] + 1}, 0.1),
        eval_step=source.eval_step,
        source=source,
        label_names=["x"],
        tracker=NullTracker(),
        checkpoints=checkpoints,
        max_epochs=5,
        patience=patience,
        progress=False,
        monitor=monitor,
        monitor_mode=mode,
    )
    assert checkpoints.best == best and result.best_epoch == best[-1]
    assert result.epochs_run == epochs


# ---- data, task and preset ----------------------------------------------------------------------
def test_pneumoniamnist_task_gives_two_softmax_classes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 9), ("val", 6), ("test", 6)):
        arrays[f"{s}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    two = medmnist(
        "pneumoniamnist", npz=tmp_path / "pneumoniamnist.npz", cache_dir=tmp_path, **SMALL
    )
    assert two.label_names == ("normal", "pneumonia")
    y = two.labels("test")
    np.testing.assert_array_equal(y.argmax(1), arrays["test_labels"][:, 0])
    assert (y.sum(1) == 1).all()
    one = medmnist(npz=tmp_path / "pneumoniamnist.npz", cache_dir=tmp_path, **SMALL)
    assert one.label_names == ("Pneumonia",)  # task=None keeps the one binary label


def test_medmnist_preset_composes_with_the_protocols_values(tmp_path):
    overrides = ["experiment=medmnist_pneumonia"]
    if not (CONF / "backbone" / "resnet18_28.yaml").is_file():
        overrides.append("backbone=tiny")  # the network arrives from issue 22 item 2's other half
    cfg = compose_run(tmp_path, overrides, tiny=False)
    validate_config(cfg)
    assert (cfg.task.name, cfg.task.kind, cfg.task.num_labels) == (
        "pneumoniamnist",
        "multiclass",
        2,
    )
    assert list(cfg.task.extra_metrics) == ["medmnist"]
    assert cfg.data._target_ == "qcxr.data.medmnist" and cfg.data.augment is False
    assert cfg.head._target_ == "qcxr.models.heads.cdl_head"
    opt = cfg.optimizer
    assert opt._target_ == "qcxr.train.optim.adam" and opt.learning_rate == 1e-3
    assert (opt.b1, opt.b2, opt.eps, opt.schedule, opt.gamma) == (
        0.9,
        0.999,
        1e-8,
        "multistep",
        0.1,
    )
    assert list(opt.milestones) == [50, 75]
    trainer = cfg.trainer
    assert (trainer.max_epochs, trainer.batch_size, trainer.patience) == (100, 128, None)
    assert (trainer.monitor, trainer.monitor_mode) == ("val/medmnist_auc", "max")
    assert cfg.optimized_metric == "val/medmnist_auc"
    header = (CONF / "experiment" / "medmnist_pneumonia.yaml").read_text().splitlines()[:12]
    assert any("python train.py experiment=medmnist_pneumonia" in line for line in header)
    assert any("0.944 / 0.854" in line for line in header)
    short = compose_run(tmp_path, [*overrides, "trainer.max_epochs=10"], tiny=False)
    assert list(short.optimizer.milestones) == [5]
    if "backbone=tiny" not in overrides:
        assert cfg.backbone._target_.endswith("resnet18_28")


def test_backbone_factories_state_init_from():
    from qcxr.models.backbones import tiny

    assert tiny().init_from is None
    assert tiny(init_from="abc").init_from == "abc"
    assert "init_from" in {f.name for f in dataclasses.fields(tiny())}
