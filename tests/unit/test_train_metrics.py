"""Masked BCE and AUROC vs scikit-learn; undefined labels are left out."""

import jax.numpy as jnp
import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from qcxr import metrics


def test_masked_bce_matches_sklearn():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    labels = rng.random((6, 3)) < 0.4
    mask = np.array([1, 1, 1, 1, 0, 0], bool)
    probs = 1 / (1 + np.exp(-logits[:4]))
    want = np.mean([log_loss(labels[:4, j], probs[:, j], labels=[0, 1]) for j in range(3)])
    got = float(metrics.masked_bce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask)))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_padding_does_not_count():
    logits = jnp.array([[1.0, -2.0], [1e6, 1e6]])
    labels = jnp.array([[True, False], [False, False]])
    only_first = metrics.masked_bce(logits[:1], labels[:1], jnp.array([True]))
    padded = metrics.masked_bce(logits, labels, jnp.array([True, False]))
    np.testing.assert_allclose(float(padded), float(only_first), rtol=1e-6)


def test_auroc_matches_sklearn_and_skips_undefined():
    rng = np.random.default_rng(1)
    labels = rng.random((50, 3)) < 0.3
    labels[:, 2] = False  # no positives: undefined
    scores = rng.random((50, 3))
    per_label, undefined = metrics.auroc_per_label(labels, scores, ["a", "b", "c"])
    assert undefined == ["c"] and set(per_label) == {"a", "b"}
    np.testing.assert_allclose(per_label["a"], roc_auc_score(labels[:, 0], scores[:, 0]))
    assert metrics.macro_auroc(per_label) == np.mean([per_label["a"], per_label["b"]])
