"""Multiclass tasks (issue 13, item 3): softmax cross-entropy and the multiclass metrics against
scikit-learn, one class per row checked at load, the synthetic multiclass task, and runs where
the loss follows the task for the CDL and DQC heads alike.

Tolerances: losses in float32 vs scikit-learn's float64, 1e-5 relative; scores are exact counts
(1e-12).
"""

from __future__ import annotations

import csv

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from qcxr import metrics
from qcxr import run as run_module
from qcxr.data import DataError, synthetic
from qcxr.data.index import SplitIndex
from qcxr.data.labels import SYNTHETIC_MC
from qcxr.data.module import ArrayImages, DataModule
from qcxr.train import loop, steps
from tests.train_helpers import compose_run, mlflow_client

RTOL = 1e-5


def _random_problem(seed=0, n=40, c=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, c)).astype(np.float32)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)  # every class present
    return logits, y, np.eye(c, dtype=bool)[y]


def test_softmax_ce_matches_sklearn_log_loss_with_mask_and_class_weights():
    logits, y, onehot = _random_problem()
    mask = np.ones(len(y), bool)
    mask[-7:] = False  # padding must not count
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    got = float(
        metrics.masked_softmax_ce(jnp.asarray(logits), jnp.asarray(onehot), jnp.asarray(mask))
    )
    want = skm.log_loss(y[mask], probs[mask], labels=range(5))
    np.testing.assert_allclose(got, want, rtol=RTOL)
    weights = np.array([0.5, 1.0, 2.0, 3.0, 0.25])
    got_w = float(
        metrics.masked_softmax_ce(
            jnp.asarray(logits), jnp.asarray(onehot), jnp.asarray(mask), jnp.asarray(weights)
        )
    )
    want_w = skm.log_loss(y[mask], probs[mask], labels=range(5), sample_weight=weights[y[mask]])
    np.testing.assert_allclose(got_w, want_w, rtol=RTOL)
    assert abs(got_w - got) > 1e-3  # the weights matter


def test_multiclass_scores_and_ovr_auroc_match_sklearn():
    logits, y, onehot = _random_problem(1, n=60, c=4)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cm = metrics.confusion_matrix(onehot, probs)
    pred = probs.argmax(1)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=range(4)))
    scores = metrics.multiclass_scores(cm)
    np.testing.assert_allclose(scores["accuracy"], skm.accuracy_score(y, pred), atol=1e-12)
    np.testing.assert_allclose(
        scores["balanced_accuracy"], skm.balanced_accuracy_score(y, pred), atol=1e-12
    )
    np.testing.assert_allclose(
        scores["f1_macro"],
        skm.f1_score(y, pred, average="macro", labels=range(4), zero_division=0),
        atol=1e-12,
    )
    per_class, undefined = metrics.auroc_per_label(onehot, probs, ["a", "b", "c", "d"])
    assert not undefined
    np.testing.assert_allclose(
        metrics.macro_auroc(per_class),
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"),
        atol=1e-12,
    )


def test_a_never_predicted_class_counts_zero_in_macro_f1():
    cm = np.array([[3, 0, 0], [1, 0, 0], [0, 0, 2]])  # class 1 never predicted
    y = np.repeat([0, 1, 2], cm.sum(1))
    pred = np.array([0, 0, 0, 0, 2, 2])
    scores = metrics.multiclass_scores(cm)
    assert scores["f1_macro"] == pytest.approx(
        skm.f1_score(y, pred, average="macro", zero_division=0)
    )
    assert scores["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_task_loss_follows_the_kind():
    logits, _, onehot = _random_problem(2, n=8, c=3)
    mask = jnp.ones(8, bool)
    ml_loss, _, ml_link = steps.task_loss("multilabel")
    mc_loss, _, mc_link = steps.task_loss("multiclass")
    z = jnp.asarray(logits)
    assert float(ml_loss(z, onehot, mask)) == pytest.approx(
        float(metrics.masked_bce(z, onehot, mask))
    )
    assert float(mc_loss(z, onehot, mask)) == pytest.approx(
        float(metrics.masked_softmax_ce(z, onehot, mask))
    )
    np.testing.assert_allclose(np.asarray(mc_link(z)).sum(1), 1.0, rtol=1e-6)
    assert not np.allclose(np.asarray(ml_link(z)).sum(1), 1.0)
    with pytest.raises(ValueError, match="task kind must be one of"):
        steps.task_loss("multiclas")
    with pytest.raises(ValueError, match="multiclass tasks only"):
        steps.task_loss("multilabel", [1.0, 2.0])


def _module(labels, kind):
    images = np.zeros((len(labels), 8, 8), np.uint8)
    ids = [f"img{i}" for i in range(len(labels))]
    index = SplitIndex(ids, list(range(len(labels))), np.asarray(labels, bool), ids, source="t.csv")
    splits = {s: (index, ArrayImages(images, s)) for s in ("train", "val", "test")}
    return DataModule(
        splits, ["a", "b", "c"], batch_size=2, seed=0, image_size=8, min_positives=0, kind=kind
    )


def test_multiclass_rows_must_hold_one_class():
    good = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert _module(good, "multiclass").kind == "multiclass"
    bad = [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    _module(bad, "multilabel")  # fine for a multilabel task
    with pytest.raises(DataError, match=r"2 of 3 rows have no class or several classes") as err:
        _module(bad, "multiclass")
    assert "img0: a, b" in str(err.value) and "img2: none" in str(err.value)
    assert "t.csv" in str(err.value) and "Fix:" in str(err.value)


def test_synthetic_multiclass_task(tmp_path):
    kw = dict(
        num_train=60,
        num_val=20,
        num_test=20,
        num_external=20,
        batch_size=4,
        image_size=8,
        resize_size=8,
        cache_dir=tmp_path,
        num_threads=1,
    )
    mc = synthetic("synthetic_mc", kind="multiclass", **kw)
    assert mc.label_names == SYNTHETIC_MC
    for split in mc.splits:
        y = mc.labels(split)
        assert (y.sum(1) == 1).all()
        counts = y.sum(0)
        assert (counts >= 2).all() and counts[0] == counts.max()  # long-tailed, all present
    # Same seed and sizes as a multilabel set: other labels, so never the same cache entries.
    ml = synthetic(["Cardiomegaly", "Effusion", "Mass", "Pneumothorax"], **kw)
    assert not set(mc.image_keys("train")) & set(ml.image_keys("train"))
    with pytest.raises(ValueError, match="unknown"):
        synthetic(["No Finding", "Cardiomegaly"], **kw)  # "No Finding" needs multiclass


def _read_predictions(path, classes):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    y = np.array([[int(r[f"true/{c}"]) for c in classes] for r in rows]).argmax(1)
    p = np.array([[float(r[f"prob/{c}"]) for c in classes] for r in rows])
    return y, p


@pytest.mark.slow
@pytest.mark.parametrize("head", ["cdl", "dqc"])
def test_multiclass_run_logs_multiclass_metrics(tmp_path, head):
    """CDL and DQC on task=synthetic_mc: softmax CE, the multiclass metrics as scikit-learn
    computes them from the logged predictions, a confusion matrix, optimized_metric on them."""
    cfg = compose_run(
        tmp_path,
        [
            "task=synthetic_mc",
            f"head={head}",
            "data.num_train=40",
            "data.num_val=20",
            "data.num_test=20",
            "optimized_metric=val/balanced_accuracy",
        ],
    )
    objective = run_module.run(cfg)
    client = mlflow_client(tmp_path)
    exp = client.get_experiment_by_name("synthetic_mc")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.status == "FINISHED"
    m = r.data.metrics
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro", "loss"):
        assert np.isfinite(m[f"test/{key}"]), key
    history = client.get_metric_history(r.info.run_id, "val/balanced_accuracy")
    best = int(m["train/best_epoch"])
    assert objective == pytest.approx(next(h.value for h in history if h.step == best))
    root = r.info.artifact_uri.removeprefix("file://")
    y, p = _read_predictions(f"{root}/predictions_test.csv", SYNTHETIC_MC)
    pred = p.argmax(1)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)  # softmax, not sigmoid
    assert m["test/accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["test/balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["test/f1_macro"] == pytest.approx(
        skm.f1_score(y, pred, average="macro", labels=range(5), zero_division=0)
    )
    assert m["test/auroc_macro"] == pytest.approx(
        skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-4
    )
    for k, name in enumerate(SYNTHETIC_MC):
        assert m[f"test/auroc/{name}"] == pytest.approx(
            skm.roc_auc_score(y == k, p[:, k]), abs=1e-4
        )
    files = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"confusion_test.png", "confusion_test.csv", "confusion_val.png"} <= files
    with open(f"{root}/confusion_test.csv") as f:
        table = np.array([row[1:] for row in list(csv.reader(f))[1:]], int)
    np.testing.assert_array_equal(table, skm.confusion_matrix(y, pred, labels=range(5)))


def test_evaluate_multiclass_scores_come_from_the_batches():
    """loop.evaluate on a tiny source: padding excluded, scores equal scikit-learn's."""
    logits, y, onehot = _random_problem(3, n=10, c=3)

    class Source:
        def num_batches(self, split):
            return 3

        def batches(self, split, epoch):
            for b in range(3):
                rows = np.arange(4 * b, 4 * b + 4)
                mask = rows < 10
                rows = np.where(mask, rows, -1)
                take = np.where(mask, rows, 0)
                yield {
                    "logits": logits[take],
                    "labels": onehot[take] & mask[:, None],
                    "mask": mask,
                    "index": rows,
                }

    eval_step = steps.make_eval_step(lambda params, batch: batch["logits"], "multiclass")
    ev = loop.evaluate(eval_step, None, Source(), "val", ["a", "b", "c"], kind="multiclass")
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert ev.scores["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert ev.loss == pytest.approx(skm.log_loss(y, probs, labels=range(3)), rel=RTOL)
    out = ev.as_metrics("val")
    assert {"val/accuracy", "val/balanced_accuracy", "val/f1_macro", "val/auroc_macro"} <= set(out)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("task.class_weights=[1.0,2.0]", r"class_weights has 2 values for 5 classes"),
        ("task.kind=multiclas", r"task kind must be one of"),
    ],
)
def test_bad_task_settings_fail_before_any_data_is_read(tmp_path, override, match):
    cfg = compose_run(tmp_path, ["task=synthetic_mc", "head=cdl", override])
    with pytest.raises(run_module.RunError, match=match):
        run_module.run(cfg)
    assert not (tmp_path / "cache" / "images").exists()  # nothing was preprocessed


def test_class_weights_on_a_multilabel_task_fail_at_start(tmp_path):
    cfg = compose_run(tmp_path, ["head=cdl", "task.class_weights=[1,1,1,1,1,1,1,1]"])
    with pytest.raises(run_module.RunError, match="multiclass tasks only"):
        run_module.run(cfg)
