"""Frozen backbone: features computed once and cached; the cached path equals the image path.

The cache key covers every input that determines a feature (issue 11, item 1): two datasets
that share image ids, or synthetic sets with another data_seed, never share features, while the
same input twice is read back from the cache. A damaged cache file is recomputed.
"""

import dataclasses
import logging

import jax
import numpy as np
import pytest
from PIL import Image, ImageOps
from safetensors.numpy import load_file, save_file

from qcxr.data import folder_csv, synthetic
from qcxr.models.backbones import tiny
from qcxr.models.classifier import Classifier
from qcxr.models.heads import cdl_head
from qcxr.train import features, optim, steps


def _data(tmp_path, **kw):
    args = dict(
        num_train=10,
        num_val=6,
        num_test=6,
        num_external=0,
        batch_size=4,
        seed=3,
        image_size=8,
        resize_size=8,
        cache_dir=tmp_path / "img",
        augment=False,
        min_positives=0,
        num_threads=1,
    )
    return synthetic("cxr8", **{**args, **kw})


@dataclasses.dataclass
class Counting:
    """A classifier whose feature function counts its traces: one per cached_features call that
    computes anything (a fresh jit each call), none when every split comes from the cache."""

    model: Classifier
    traces: int = 0

    @property
    def backbone(self):
        return self.model.backbone

    @property
    def compute_dtype(self):
        return self.model.compute_dtype

    def features(self, params, constants, images):
        self.traces += 1
        return self.model.features(params, constants, images)


@pytest.fixture(scope="module")
def tiny_model():
    """A frozen tiny backbone + CDL head, initialised once for the module (jit init is slow)."""
    model = Classifier(tiny(feature_dim=4, image_size=8, freeze=True), cdl_head(8))
    params, consts = model.init(jax.random.key(0))
    return model, params, consts


def test_synthetic_data_seed_changes_every_key_and_same_input_hits(tmp_path, tiny_model):
    model, params, consts = tiny_model
    counting = Counting(model)
    seed0 = _data(tmp_path, data_seed=0)
    seed1 = _data(tmp_path, data_seed=1)
    assert seed0.image_ids("train") == seed1.image_ids("train")  # same ids, other images
    k0 = features.feature_keys(seed0, model, params, consts)
    k1 = features.feature_keys(seed1, model, params, consts)
    assert all(k0[s] != k1[s] for s in seed0.splits)
    f0 = features.cached_features(seed0, counting, params, consts, tmp_path / "f")
    assert counting.traces == 1
    f1 = features.cached_features(seed1, counting, params, consts, tmp_path / "f")
    assert counting.traces == 2  # computed, not read from data_seed 0's files
    assert all(not np.array_equal(f0[s], f1[s]) for s in seed0.splits)
    again = _data(tmp_path, data_seed=0)  # a new module on the same input: a cache hit
    assert features.feature_keys(again, model, params, consts) == k0
    hit = features.cached_features(again, counting, params, consts, tmp_path / "f")
    assert counting.traces == 2
    assert all(hit[s].tobytes() == f0[s].tobytes() for s in seed0.splits)


def test_key_covers_backbone_weights_and_preprocessing(tmp_path, tiny_model):
    model, params, consts = tiny_model
    data = _data(tmp_path)
    base = features.feature_keys(data, model, params, consts)
    assert features.feature_keys(data, model, params, consts) == base  # deterministic
    other_params = {**params, "backbone": jax.tree.map(lambda x: x * 1.5, params["backbone"])}
    bf16 = dataclasses.replace(model, compute_dtype="bfloat16")
    wider = Classifier(tiny(feature_dim=5, image_size=8, freeze=True), cdl_head(8))
    wider_params, wider_consts = wider.init(jax.random.key(0))
    variants = {
        "weights": features.feature_keys(data, model, other_params, consts),
        "compute_dtype": features.feature_keys(data, bf16, params, consts),
        "module": features.feature_keys(data, wider, wider_params, wider_consts),
    }
    # The same weights under another preprocessing (what the backbone states, and the data
    # prepared accordingly): resize, normalisation, resize mode, filter.
    base_prep = model.backbone.preprocessing
    for what, change in {
        "resize": {"resize_size": 10},
        "mean": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
        "resize_mode": {"resize_mode": "square"},
        "resample": {"resample": 2},
    }.items():
        prep = dataclasses.replace(base_prep, **change)
        other = dataclasses.replace(
            model, backbone=dataclasses.replace(model.backbone, preprocessing=prep)
        )
        other_data = _data(
            tmp_path, preprocessing=dataclasses.asdict(prep), image_size=None, resize_size=None
        )
        variants[what] = features.feature_keys(other_data, other, params, consts)
    for what, keys in variants.items():
        assert all(keys[s] != base[s] for s in base), what


def test_data_prepared_for_another_backbone_is_refused(tmp_path, tiny_model):
    """Features of images prepared differently from what the backbone states are never made."""
    model, params, consts = tiny_model
    data = _data(tmp_path, resize_size=10)  # the backbone states resize_size 8
    with pytest.raises(ValueError, match=r"backbone 'tiny' expects .*'resize_size': 8"):
        features.feature_keys(data, model, params, consts)
    with pytest.raises(ValueError, match="preprocessing=dataclasses.asdict"):
        features.cached_features(data, model, params, consts, tmp_path / "f")


@pytest.mark.realdata
def test_realdata_same_ids_other_images_never_share_features(shared_data, tmp_path, tiny_model):
    # The case: one label CSV pointed at a folder of real X-rays, then at a folder of the
    # same files inverted. Same ids, same source name; the features must differ.
    src = shared_data / "nih-cxr14-64px"
    lines = (src / "labels.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [r.split(",") for r in lines[1:25]]
    out = ["image,split,Cardiomegaly,Effusion"]
    for k, r in enumerate(rows):
        name = r[0]
        image = Image.open(src / "images" / name).convert("L")
        for folder, im in (("plain", image), ("inverted", ImageOps.invert(image))):
            (tmp_path / folder).mkdir(exist_ok=True)
            im.save(tmp_path / folder / name)
        labels = [r[header.index(n)] for n in ("Cardiomegaly", "Effusion")]
        out.append(",".join([name, ("train", "val", "test")[k % 3], *labels]))
    (tmp_path / "labels.csv").write_text("\n".join(out) + "\n")

    def module(folder):
        return folder_csv(
            ["Cardiomegaly", "Effusion"],
            image_dir=tmp_path / folder,
            label_dir=tmp_path / "labels.csv",
            batch_size=4,
            image_size=8,
            resize_size=8,
            cache_dir=tmp_path / "img",
            augment=False,
            min_positives=0,
            num_threads=1,
        )

    model, params, consts = tiny_model
    counting = Counting(model)
    plain, inverted = module("plain"), module("inverted")
    assert plain.image_ids("test") == inverted.image_ids("test") and plain.name == inverted.name
    f_plain = features.cached_features(plain, counting, params, consts, tmp_path)
    f_inv = features.cached_features(inverted, counting, params, consts, tmp_path)
    assert counting.traces == 2
    for s in plain.splits:
        assert not np.array_equal(f_plain[s], f_inv[s]), s
    again = features.cached_features(module("plain"), counting, params, consts, tmp_path)
    assert counting.traces == 2  # the same input: read back, not recomputed
    assert all(again[s].tobytes() == f_plain[s].tobytes() for s in plain.splits)
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 2 * len(plain.splits)


def test_damaged_feature_files_are_recomputed(tmp_path, caplog, tiny_model):
    model, params, consts = tiny_model
    data = _data(tmp_path)
    clean = features.cached_features(data, model, params, consts, tmp_path / "f")
    keys = features.feature_keys(data, model, params, consts)
    path = {s: tmp_path / "f" / "features" / f"{keys[s]}.safetensors" for s in data.splits}
    path["train"].write_bytes(b"garbage")
    path["val"].write_bytes(path["val"].read_bytes()[:-9])  # truncated
    save_file({"features": np.zeros((2, 4), np.float32)}, str(path["test"]))  # wrong rows
    with caplog.at_level(logging.WARNING, logger="qcxr.train.features"):
        again = features.cached_features(data, model, params, consts, tmp_path / "f")
    warned = [
        r
        for r in caplog.records
        if r.name == "qcxr.train.features" and r.levelno >= logging.WARNING
    ]
    assert sum("recomputing" in r.getMessage() for r in warned) == 3
    for s in data.splits:
        assert again[s].tobytes() == clean[s].tobytes()
        assert load_file(str(path[s]))["features"].tobytes() == clean[s].tobytes()  # rewritten


def test_augmented_data_is_refused(tmp_path, tiny_model):
    model, params, consts = tiny_model
    with pytest.raises(ValueError, match="augment=False"):
        features.cached_features(_data(tmp_path, augment=True), model, params, consts, None)


@pytest.mark.slow
def test_cache_is_reused_and_matches_image_path(tmp_path):
    data = _data(tmp_path)
    model = Classifier(tiny(feature_dim=4, image_size=8, freeze=True), cdl_head(8))
    params, consts = model.init(jax.random.key(0))
    counting = Counting(model)
    first = features.cached_features(data, counting, params, consts, tmp_path / "f")
    n = counting.traces
    assert n > 0
    second = features.cached_features(data, counting, params, consts, tmp_path / "f")
    assert counting.traces == n  # second run: nothing recomputed
    for s in data.splits:
        np.testing.assert_array_equal(first[s], second[s])
    other_params, _ = model.init(jax.random.key(1))  # another random backbone
    other = features.cached_features(data, counting, other_params, consts, tmp_path / "f")
    assert counting.traces > n and set(other) == set(first)  # recomputed

    source = features.FeatureBatches(data, first)
    labels = optim.freeze_labels(params, {"backbone": True})
    tx = optim.adam(1e-2, total_steps=10, trainable=labels)
    img_step = steps.make_train_step(lambda p, b: model.logits(p, consts, b["image"]), tx)
    feat_step = steps.make_train_step(lambda p, b: model.head_logits(p, b["features"]), tx)
    s_img = steps.init_state(params, tx)
    s_feat = steps.init_state(jax.tree.map(lambda x: x.copy(), params), tx)
    for epoch in range(2):
        for b_img, b_feat in zip(
            data.batches("train", epoch), source.batches("train", epoch), strict=True
        ):
            np.testing.assert_array_equal(b_img["index"], b_feat["index"])
            s_img, l_img = img_step(s_img, {k: v for k, v in b_img.items() if k != "index"})
            s_feat, l_feat = feat_step(s_feat, {k: v for k, v in b_feat.items() if k != "index"})
            np.testing.assert_allclose(float(l_img), float(l_feat), rtol=1e-5, atol=1e-6)
    for a, b in zip(
        jax.tree.leaves(s_img["params"]["head"]),
        jax.tree.leaves(s_feat["params"]["head"]),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
