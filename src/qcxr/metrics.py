"""Masked mean BCE and per-label / macro AUROC (scikit-learn).

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
