"""Run artifacts: test predictions (CSV), per-label AUROC table (CSV), learning curves, ROC curves
and confusion matrices (PNG)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def write_predictions(
    path: Path,
    image_ids: Sequence[str],
    label_names: Sequence[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
) -> Path:
    """One row per image: id, then the true label and the probability of each label.

    Args:
        path: the CSV to write.
        image_ids: N ids in index order.
        label_names: L names.
        labels: bool[N, L].
        probabilities: f[N, L].

    Returns:
        path.
    """
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["image_id", *(f"true/{n}" for n in label_names), *(f"prob/{n}" for n in label_names)]
        )
        for i, image in enumerate(image_ids):
            w.writerow(
                [image, *labels[i].astype(int).tolist(), *(f"{p:.6g}" for p in probabilities[i])]
            )
    return path


def write_auroc_table(
    path: Path,
    label_names: Sequence[str],
    results: Mapping[str, tuple[dict[str, float], np.ndarray]],
) -> Path:
    """Per-label AUROC of every evaluated split, with positives; undefined labels say so.

    Args:
        path: the CSV to write.
        label_names: the task's labels.
        results: split -> (label -> AUROC for the defined labels, labels bool[N, L]).

    Returns:
        path.
    """
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "label", "positives", "examples", "auroc"])
        for split, (auroc, labels) in results.items():
            for j, name in enumerate(label_names):
                value = auroc.get(name)
                w.writerow(
                    [
                        split,
                        name,
                        int(labels[:, j].sum()),
                        len(labels),
                        "undefined" if value is None else f"{value:.6f}",
                    ]
                )
            if auroc:
                w.writerow(
                    [split, "macro", "", len(labels), f"{float(np.mean(list(auroc.values()))):.6f}"]
                )
    return path


def plot_curves(
    path: Path, history: Sequence[Mapping[str, float]], best_epoch: int, title: str
) -> Path:
    """Train and val loss, and val macro AUROC, per epoch (best epoch marked).

    Args:
        path: the PNG to write.
        history: per-epoch entries with epoch, train/epoch_loss, val/loss, val/auroc_macro.
        best_epoch: the epoch to mark.
        title: figure title.

    Returns:
        path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train/epoch_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val/loss"] for h in history], label="val")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [h.get("val/auroc_macro", math.nan) for h in history], color="C2")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("val mean AUROC")
    for ax in (ax1, ax2):
        ax.axvline(best_epoch, color="grey", linestyle=":", label="best")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_confusion(
    path: Path, class_names: Sequence[str], confusion: np.ndarray, title: str
) -> tuple[Path, Path]:
    """A multiclass confusion matrix as a CSV and a PNG figure (counts and row-normalised).

    Args:
        path: the PNG to write; the CSV goes beside it with the suffix .csv.
        class_names: C names, in column order.
        confusion: int[C, C], rows true classes, columns predicted classes.
        title: figure title.

    Returns:
        (the PNG path, the CSV path).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    csv_path = path.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\predicted", *class_names])
        for name, row in zip(class_names, cm, strict=True):
            w.writerow([name, *row.tolist()])
    support = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
    size = max(4.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in ticks:
        for j in ticks:  # the count, coloured for contrast against the row share
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, csv_path


def plot_roc_curves(
    path: Path,
    label_names: Sequence[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
    title: str,
) -> Path:
    """ROC curve of every label with positives and negatives (AUROC in the legend).

    Args:
        path: the PNG to write.
        label_names: L names.
        labels: bool[N, L] (multiclass: one-hot, one-vs-rest curves).
        probabilities: f[N, L].
        title: figure title.

    Returns:
        path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.asarray(labels, bool)
    fig, ax = plt.subplots(figsize=(6, 6))
    for j, name in enumerate(label_names):
        column = labels[:, j]
        if column.all() or not column.any():
            continue
        fpr, tpr, _ = roc_curve(column, probabilities[:, j])
        ax.plot(fpr, tpr, lw=1, label=f"{name} ({roc_auc_score(column, probabilities[:, j]):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
