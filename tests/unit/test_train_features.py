"""Frozen backbone: features computed once and cached; the cached path equals the image path."""

import jax
import numpy as np
import pytest

from qcxr.data import synthetic
from qcxr.models.backbones import tiny
from qcxr.models.classifier import Classifier
from qcxr.models.heads import cdl_head
from qcxr.train import features, optim, steps


def _data(tmp_path):
    return synthetic("cxr8", num_train=10, num_val=6, num_test=6, num_external=0, batch_size=4,
                     seed=3, image_size=8, resize_size=8, cache_dir=tmp_path / "img",
                     augment=False, min_positives=0, num_threads=1)


@pytest.mark.slow
def test_cache_is_reused_and_matches_image_path(tmp_path):
    data = _data(tmp_path)
    model = Classifier(tiny(feature_dim=4, image_size=8, freeze=True), cdl_head(8))
    params, consts = model.init(jax.random.key(0))
    calls = []

    def featurize(images):
        calls.append(1)
        return model.features(params, consts, images)

    ident = {"backbone": "tiny", "weights": features.tree_fingerprint(params["backbone"])}
    first = features.cached_features(data, featurize, ident, tmp_path / "f")
    n = len(calls)
    assert n > 0
    second = features.cached_features(data, featurize, ident, tmp_path / "f")
    assert len(calls) == n  # second run: nothing recomputed
    for s in data.splits:
        np.testing.assert_array_equal(first[s], second[s])
    other = features.cached_features(data, featurize, {**ident, "weights": "x"}, tmp_path / "f")
    assert len(calls) > n and set(other) == set(first)  # another backbone: recomputed

    source = features.FeatureBatches(data, first)
    labels = optim.freeze_labels(params, {"backbone": True})
    tx = optim.adam(1e-2, total_steps=10, trainable=labels)
    img_step = steps.make_train_step(lambda p, b: model.logits(p, consts, b["image"]), tx)
    feat_step = steps.make_train_step(lambda p, b: model.head_logits(p, b["features"]), tx)
    s_img = steps.init_state(params, tx)
    s_feat = steps.init_state(jax.tree.map(lambda x: x.copy(), params), tx)
    for epoch in range(2):
        for b_img, b_feat in zip(data.batches("train", epoch), source.batches("train", epoch),
                                 strict=True):
            np.testing.assert_array_equal(b_img["index"], b_feat["index"])
            s_img, l_img = img_step(s_img, {k: v for k, v in b_img.items() if k != "index"})
            s_feat, l_feat = feat_step(s_feat, {k: v for k, v in b_feat.items() if k != "index"})
            np.testing.assert_allclose(float(l_img), float(l_feat), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s_img["params"]["head"]),
                    jax.tree.leaves(s_feat["params"]["head"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
