"""Masked mean BCE, masked softmax cross-entropy, per-label / macro AUROC (scikit-learn) and
multiclass scores (accuracy, balanced accuracy, macro-F1, confusion matrix).

The loss is the paper's (section III-D): binary cross-entropy averaged over every label, then over
the real (unmasked) examples of a fixed-size batch, so padding never contributes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.metrics import roc_auc_score

log = logging.getLogger(__name__)


def masked_bce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean binary cross-entropy over labels and unmasked examples.

    Args:
        logits: f32[B, L] pre-sigmoid scores.
        labels: bool or f32[B, L] targets.
        mask: bool[B], True for real examples (padding False).

    Returns:
        f32[] the mean BCE over the real examples (0 when none is real).
    """
    per_example = per_example_bce(logits, labels)
    weights = mask.astype(per_example.dtype)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def per_example_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """BCE averaged over labels, one value per example.

    Args:
        logits: f32[B, L] pre-sigmoid scores.
        labels: bool or f32[B, L] targets.

    Returns:
        f32[B] mean over labels of -y log sigmoid(z) - (1 - y) log(1 - sigmoid(z)).
    """
    logits = logits.astype(jnp.float32)
    y = labels.astype(jnp.float32)
    # log sigmoid(z) and log(1 - sigmoid(z)) = log sigmoid(-z), both stable for large |z|.
    loss = -(y * jax.nn.log_sigmoid(logits) + (1.0 - y) * jax.nn.log_sigmoid(-logits))
    return jnp.mean(loss, axis=-1)


def auroc_per_label(
    labels: np.ndarray, scores: np.ndarray, label_names: Sequence[str]
) -> tuple[dict[str, float], list[str]]:
    """AUROC of each label; labels with no positives (or no negatives) are undefined.

    Args:
        labels: bool[N, L] targets of the real examples.
        scores: f[N, L] predicted probabilities (or logits: AUROC is rank-based).
        label_names: L names, in column order.

    Returns:
        (label name -> AUROC for the defined labels, names of the undefined labels).
    """
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    defined, undefined = {}, []
    for j, name in enumerate(label_names):
        column = labels[:, j]
        if column.all() or not column.any():
            undefined.append(name)
            continue
        defined[name] = float(roc_auc_score(column, scores[:, j]))
    return defined, undefined


def macro_auroc(per_label: dict[str, float]) -> float:
    """Mean of the defined per-label AUROCs (NaN when none is defined).

    Args:
        per_label: label name -> AUROC, undefined labels already left out.

    Returns:
        The unweighted mean.
    """
    return float(np.mean(list(per_label.values()))) if per_label else float("nan")


# ---- multiclass (one class per example; labels one-hot bool[B, C]) -------------------------------
def per_example_softmax_ce(
    logits: jax.Array, labels: jax.Array, class_weights: jax.Array | None = None
) -> jax.Array:
    """Softmax cross-entropy of each example against its one-hot class.

    Args:
        logits: f32[B, C] pre-softmax scores.
        labels: bool or f32[B, C] one-hot targets (all-False rows, i.e. padding, give 0).
        class_weights: optional f32[C]; example b is weighted by class_weights[its class].

    Returns:
        f32[B] w_y * -log softmax(z)_y (w_y = 1 without class weights).
    """
    y = labels.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    loss = -jnp.sum(y * logp, axis=-1)
    if class_weights is not None:
        loss = loss * (y @ jnp.asarray(class_weights, jnp.float32))
    return loss


def masked_softmax_ce(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    class_weights: jax.Array | None = None,
) -> jax.Array:
    """Mean softmax cross-entropy over the unmasked examples (weighted mean with class weights).

    With class weights the mean is sum_b w_yb CE_b / sum_b w_yb, PyTorch's and scikit-learn's
    weighted mean, so the loss stays on the scale of the unweighted one.

    Args:
        logits: f32[B, C] pre-softmax scores.
        labels: bool or f32[B, C] one-hot targets.
        mask: bool[B], True for real examples.
        class_weights: optional f32[C].

    Returns:
        f32[] the (weighted) mean over real examples (0 when none is real).
    """
    per_example = per_example_softmax_ce(logits, labels, class_weights)
    weights = mask.astype(jnp.float32)
    if class_weights is not None:
        weights = weights * (labels.astype(jnp.float32) @ jnp.asarray(class_weights, jnp.float32))
    return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(weights), 1e-12)


def confusion_matrix(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Counts of (true class, predicted class) with the prediction the arg-max probability.

    Args:
        labels: bool[N, C] one-hot true classes.
        probabilities: f[N, C] predicted class probabilities.

    Returns:
        int64[C, C], rows true classes, columns predictions.
    """
    labels = np.asarray(labels, bool)
    num_classes = labels.shape[1]
    true = labels.argmax(axis=1)
    pred = np.asarray(probabilities).argmax(axis=1)
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (true, pred), 1)
    return out


def multiclass_scores(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 from a confusion matrix.

    Balanced accuracy averages the recall of the classes present (scikit-learn's definition);
    macro-F1 averages F1 over every class, an absent and never-predicted class counting 0
    (scikit-learn's `zero_division=0` over the classes given).

    Args:
        confusion: int[C, C], rows true, columns predicted.

    Returns:
        {"accuracy", "balanced_accuracy", "f1_macro"}.
    """
    cm = np.asarray(confusion, np.float64)
    support, predicted, hits = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    present = support > 0
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(hits), where=denom > 0)
    return {
        "accuracy": float(hits.sum() / max(cm.sum(), 1.0)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "f1_macro": float(f1.mean()),
    }


# ---- MedMNIST v2's evaluator (Yang et al., Sci. Data 10:41, 2023; medmnist/evaluator.py) --------
EXTRA_METRICS = ("medmnist",)  # task.extra_metrics: metric sets logged beside the usual ones


def medmnist_task(kind: str, num_labels: int) -> str:
    """MedMNIST's name for a task: what its evaluator's getAUC / getACC branch on.

    Args:
        kind: "multilabel" or "multiclass".
        num_labels: logits per example.

    Returns:
        "binary-class" (2 softmax classes, or one sigmoid label), "multi-class" or
        "multi-label, binary-class".
    """
    if (kind == "multiclass" and num_labels == 2) or (kind == "multilabel" and num_labels == 1):
        return "binary-class"
    return "multi-class" if kind == "multiclass" else "multi-label, binary-class"


def medmnist_scores(labels: np.ndarray, probabilities: np.ndarray, kind: str) -> dict[str, float]:
    """AUC and ACC as MedMNIST v2's evaluator computes them (the numbers of its benchmark table).

    - binary-class: AUC = ROC AUC of the class-1 score (the last column), ACC = accuracy of
      (class-1 score > 0.5);
    - multi-class: AUC = mean over every class of its one-vs-rest ROC AUC, ACC = accuracy of the
      arg-max class;
    - multi-label: AUC = mean per-label ROC AUC, ACC = mean per-label accuracy of (score >= 0.5).

    Unlike `auroc_per_label`, nothing is left out: a class without positives makes the AUC
    undefined (NaN here; scikit-learn raises in MedMNIST's code).

    Args:
        labels: bool[N, L] targets (one-hot for multiclass).
        probabilities: f[N, L] softmax (multiclass) or sigmoid (multilabel) probabilities.
        kind: "multilabel" or "multiclass".

    Returns:
        {"medmnist_auc", "medmnist_acc"}.
    """
    y = np.asarray(labels, bool)
    p = np.asarray(probabilities, np.float64)
    task = medmnist_task(kind, y.shape[1])

    def auc(column: np.ndarray, score: np.ndarray) -> float:
        if column.all() or not column.any():
            return float("nan")
        return float(roc_auc_score(column, score))

    if task == "binary-class":
        score = p[:, -1]
        return {
            "medmnist_auc": auc(y[:, -1], score),
            "medmnist_acc": float(np.mean((score > 0.5) == y[:, -1])),
        }
    aucs = [auc(y[:, j], p[:, j]) for j in range(y.shape[1])]
    if task == "multi-class":
        acc = float(np.mean(p.argmax(axis=1) == y.argmax(axis=1)))
    else:
        acc = float(np.mean((p >= 0.5) == y))
    return {"medmnist_auc": float(np.mean(aucs)), "medmnist_acc": acc}
