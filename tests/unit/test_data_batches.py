"""Fixed-size masked batches, keyed order and augmentation, host vs device augmentation."""

import numpy as np
import pytest

from qcxr.data import LABEL_SETS, synthetic
from qcxr.data.augment import augment_device, augment_host, augment_params, epoch_order
from qcxr.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalisation_table, normalise

TINY = dict(
    num_train=10,
    num_val=6,
    num_test=5,
    num_external=3,
    image_size=8,
    batch_size=4,
    num_threads=2,
    min_positives=0,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _epoch(dm, split, epoch=0):
    return list(dm.batches(split, epoch))


def test_batch_contract(cache_dir):
    dm = synthetic(seed=0, cache_dir=cache_dir, **TINY)
    assert dm.splits == ("train", "val", "test", "external")
    assert dm.label_names == LABEL_SETS["cxr19"] and dm.num_labels == 19
    assert [dm.num_batches(s) for s in dm.splits] == [3, 2, 2, 1]
    for split in dm.splits:
        batches = _epoch(dm, split)
        assert len(batches) == dm.num_batches(split)
        for b in batches:
            assert b["image"].shape == (4, 8, 8, 3) and b["image"].dtype == np.float32
            assert b["labels"].shape == (4, 19) and b["labels"].dtype == np.bool_
            assert b["mask"].shape == (4,) and b["mask"].dtype == np.bool_
            assert b["index"].dtype == np.int64
            np.testing.assert_array_equal(b["mask"], b["index"] >= 0)
            assert not b["labels"][~b["mask"]].any()
        index = np.concatenate([b["index"] for b in batches])
        assert sorted(index[index >= 0]) == list(range(dm.num_examples(split)))
        assert (index < 0).sum() == dm.num_batches(split) * 4 - dm.num_examples(split)
        labels = dm.labels(split)
        for b in batches:
            np.testing.assert_array_equal(b["labels"][b["mask"]], labels[b["index"][b["mask"]]])
    assert len(dm.image_ids("test")) == 5
    assert sum(dm.train_label_counts().values()) == dm.labels("train").sum()


def test_same_seed_identical_batches_different_seed_differ(cache_dir, tmp_path):
    # Two "heads" with the same seed: separate modules, another cache folder, other threads.
    a = synthetic(seed=3, cache_dir=cache_dir, **TINY)
    b = synthetic(seed=3, cache_dir=tmp_path, **{**TINY, "num_threads": 1})
    c = synthetic(seed=4, cache_dir=cache_dir, **TINY)
    for epoch in (0, 1):
        ea, eb, ec = _epoch(a, "train", epoch), _epoch(b, "train", epoch), _epoch(c, "train", epoch)
        for x, y in zip(ea, eb, strict=True):
            for k in x:
                assert np.asarray(x[k]).tobytes() == np.asarray(y[k]).tobytes()
        assert any(not np.array_equal(x["index"], z["index"]) for x, z in zip(ea, ec, strict=True))
        assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(ea, ec, strict=True))
    e0, e1 = _epoch(a, "train", 0), _epoch(a, "train", 1)
    assert any(not np.array_equal(x["index"], y["index"]) for x, y in zip(e0, e1, strict=True))


def test_eval_splits_not_shuffled_nor_augmented(cache_dir):
    a = synthetic(seed=0, cache_dir=cache_dir, **TINY)
    b = synthetic(seed=9, cache_dir=cache_dir, **TINY)
    for split in ("val", "test", "external"):
        x, y = _epoch(a, split, 0), _epoch(b, split, 5)
        for p, q in zip(x, y, strict=True):
            assert p["image"].tobytes() == q["image"].tobytes()
        index = np.concatenate([p["index"] for p in x])
        assert list(index[index >= 0]) == list(range(a.num_examples(split)))


def test_augmentation_depends_on_sample_not_batch():
    full = augment_params(1, 2, np.arange(50), 224, 256)
    part = augment_params(1, 2, np.array([7, 3, 42]), 224, 256)
    for field in ("flip", "angle", "top", "left"):
        np.testing.assert_array_equal(getattr(full, field)[[7, 3, 42]], getattr(part, field))
    assert 0.3 < full.flip.mean() < 0.7
    assert np.abs(full.angle).max() <= 15 and full.top.max() <= 32 and full.left.min() >= 0
    np.testing.assert_array_equal(epoch_order(1, 2, 9), epoch_order(1, 2, 9))
    assert sorted(epoch_order(1, 2, 9)) == list(range(9))


def test_host_and_device_augmentation_agree():
    y, x = np.mgrid[0:40, 0:40]
    image = (128 + 90 * np.sin(x / 4.0) * np.cos(y / 6.0)).clip(0, 255).astype(np.uint8)
    images = np.stack([np.dstack([image, image[::-1], image.T]), np.dstack([image] * 3)])
    params = augment_params(0, 0, np.arange(2), 32, 40)
    params = type(params)(
        np.array([True, False]), np.array([11.0, -7.5], np.float32), params.top, params.left
    )
    table = normalisation_table()
    host = np.stack(
        [
            normalise(
                augment_host(
                    images[j], params.flip[j], params.angle[j], params.top[j], params.left[j], 32
                ),
                table,
            )
            for j in range(2)
        ]
    )
    device = np.asarray(
        augment_device(
            images,
            params.flip,
            params.angle,
            params.top,
            params.left,
            np.asarray(IMAGENET_MEAN, np.float32),
            np.asarray(IMAGENET_STD, np.float32),
            size=32,
        )
    )
    diff = np.abs(host - device)
    # Interpolation tolerance: uint8 rounding (0.5/255/0.225 = 0.009) inside; the rotated border
    # (where Pillow fills with black and dm-pix blends with it) differs more.
    assert np.median(diff) < 0.01
    assert np.quantile(diff, 0.95) < 0.05
    assert diff.mean() < 0.05


def test_device_path_batches(cache_dir):
    host = synthetic(seed=1, cache_dir=cache_dir, augment_on="host", **TINY)
    device = synthetic(seed=1, cache_dir=cache_dir, augment_on="device", **TINY)
    for p, q in zip(_epoch(host, "train"), _epoch(device, "train"), strict=True):
        np.testing.assert_array_equal(p["index"], q["index"])
        np.testing.assert_array_equal(p["labels"], q["labels"])
        diff = np.abs(p["image"][p["mask"]] - np.asarray(q["image"])[p["mask"]])
        assert np.median(diff) < 0.05


def test_synthetic_default_task_properties(tmp_path):
    dm = synthetic(cache_dir=tmp_path, num_threads=1)  # the default sizes; labels only
    assert [dm.num_examples(s) for s in dm.splits] == [1500, 300, 300, 300]
    for split in dm.splits:
        assert dm.labels(split).sum(axis=0).min() >= 2, split
    counts = dm.train_label_counts()
    assert counts["Infiltration"] > counts["Effusion"] > counts["Mass"] > counts["Hernia"]
    y = dm.labels("train").astype(int)
    assert (y.sum(axis=1) >= 2).sum() > 50  # co-occurrence
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(dm.patients(a)) & set(dm.patients(b))
    sub = synthetic("cxr8", cache_dir=tmp_path, num_threads=1)
    np.testing.assert_array_equal(sub.labels("train"), dm.labels("train")[:, :8])
    assert sub._split_keys("train") == dm._split_keys("train")  # same images, shared cache


def test_synthetic_is_deterministic_and_findings_are_visible(tmp_path):
    from qcxr.data.labels import CXR19
    from qcxr.data.synthetic import render

    anatomy = np.full(6, 0.5)
    healthy = render(np.zeros(19, bool), anatomy, 64, np.random.default_rng(0))
    np.testing.assert_array_equal(
        healthy, render(np.zeros(19, bool), anatomy, 64, np.random.default_rng(0))
    )
    for j, name in enumerate(CXR19):
        labels = np.zeros(19, bool)
        labels[j] = True
        sick = render(labels, anatomy, 64, np.random.default_rng(0))
        assert np.abs(sick.astype(int) - healthy).mean() > 0.15, name
