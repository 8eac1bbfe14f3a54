"""HAM10000 in its official layout (issue 13, item 4), on the 49 real images of
../shared/data/ham10000-sample and on copies of it with one defect each: split by lesion_id,
one-hot classes in the release's order, and clear errors for an unknown dx, a duplicate image_id
and a missing image.
"""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from qcxr.data import DataError, ham10000
from qcxr.data.labels import HAM10000

pytestmark = pytest.mark.realdata
TINY = dict(image_size=8, resize_size=8, batch_size=4, num_threads=1, augment=False)


@pytest.fixture
def sample(shared_data):
    root = shared_data / "ham10000-sample"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


def _metadata(root):
    with open(root / "HAM10000_metadata.csv") as f:
        return list(csv.DictReader(f))


def _copy(sample, tmp_path, edit):
    """A copy of the sample (images linked) whose metadata rows pass through `edit`."""
    root = tmp_path / "ham"
    (root / "HAM10000_images_part_1").mkdir(parents=True)
    for p in (sample / "HAM10000_images_part_1").iterdir():
        (root / "HAM10000_images_part_1" / p.name).symlink_to(p)
    rows = edit(_metadata(sample))
    with open(root / "HAM10000_metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_sample_loads_in_class_order_split_by_lesion(sample, tmp_path):
    dm = ham10000(root=sample, cache_dir=tmp_path, **TINY)
    assert dm.label_names == HAM10000 and dm.kind == "multiclass"
    rows = {r["image_id"]: r for r in _metadata(sample)}
    assert sum(dm.num_examples(s) for s in dm.splits) == len(rows) == 49
    lesions = {}
    for split in dm.splits:
        y = dm.labels(split)
        assert (y.sum(1) == 1).all() and (y.sum(0) >= 1).all()  # every class in every split
        for image_id, label, lesion in zip(dm.image_ids(split), y, dm.patients(split), strict=True):
            assert HAM10000[int(np.argmax(label))] == rows[image_id]["dx"]
            assert lesion == rows[image_id]["lesion_id"]
            lesions.setdefault(lesion, set()).add(split)
    assert all(len(s) == 1 for s in lesions.values())
    batch = next(iter(dm.batches("val")))  # real JPEGs decode and batch
    assert batch["image"].shape == (4, 8, 8, 3) and np.isfinite(batch["image"]).all()


def test_images_of_one_lesion_stay_together(sample, tmp_path):
    """Give 12 images 4 shared lesions: each lesion lands in one split only."""

    def edit(rows):
        for i, r in enumerate(rows[:12]):
            r["lesion_id"] = f"HAM_SHARED_{i % 4}"
        return rows

    dm = ham10000(
        root=_copy(sample, tmp_path, edit), cache_dir=tmp_path / "c", min_positives=0, **TINY
    )
    where = {}
    for split in dm.splits:
        for lesion in dm.patients(split):
            where.setdefault(lesion, set()).add(split)
    assert all(len(where[f"HAM_SHARED_{k}"]) == 1 for k in range(4))


def test_unknown_dx_is_named(sample, tmp_path):
    def edit(rows):
        rows[3]["dx"] = "melanoma"
        return rows

    with pytest.raises(DataError, match=r"(?s)unknown dx .*line 5: dx 'melanoma'.*Fix"):
        ham10000(root=_copy(sample, tmp_path, edit), **TINY)


def test_duplicate_image_id_is_named(sample, tmp_path):
    def edit(rows):
        return [*rows, dict(rows[0], lesion_id="HAM_OTHER")]

    image_id = _metadata(sample)[0]["image_id"]
    with pytest.raises(DataError, match=rf"(?s)more than once.*{image_id}: lines 2, 51"):
        ham10000(root=_copy(sample, tmp_path, edit), **TINY)


def test_missing_image_is_named_or_skipped(sample, tmp_path):
    root = _copy(sample, tmp_path, lambda rows: rows)
    gone = _metadata(sample)[10]["image_id"]
    (root / "HAM10000_images_part_1" / f"{gone}.jpg").unlink()
    with pytest.raises(DataError, match=rf"(?s)absent .*line 12: {gone}\.jpg.*on_missing=skip"):
        ham10000(root=root, **TINY)
    dm = ham10000(root=root, on_missing="skip", cache_dir=tmp_path / "c", min_positives=0, **TINY)
    assert sum(dm.num_examples(s) for s in dm.splits) == 48


def test_layout_and_task_errors(sample, tmp_path):
    with pytest.raises(DataError, match=r"data\.root=.*HAM10000_ROOT"):
        ham10000(root=None, **TINY)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no HAM10000_metadata.csv"):
        ham10000(root=empty, **TINY)
    shutil.copy(sample / "HAM10000_metadata.csv", empty)
    with pytest.raises(DataError, match="no image folder HAM10000_images_part_1"):
        ham10000(root=empty, **TINY)
    with pytest.raises(DataError, match="Fix: task=ham10000"):
        ham10000("cxr8", root=sample, **TINY)
    with pytest.raises(DataError, match="multiclass dataset"):
        ham10000(root=sample, kind="multilabel", **TINY)


def _dermamnist_npz(sample, path, drop_class=None):
    """A MedMNIST-layout npz (uint8 [N,28,28,3] images, uint8 [N,1] labels) from the real sample:
    per class 5 train, 1 val, 1 test images, label = the class's index in HAM10000's order."""
    from PIL import Image

    by_class = {}
    for r in _metadata(sample):
        by_class.setdefault(r["dx"], []).append(r["image_id"])
    arrays = {s: ([], []) for s in ("train", "val", "test")}
    for k, dx in enumerate(HAM10000):
        if k == drop_class:
            continue
        for j, image_id in enumerate(sorted(by_class[dx])):
            split = "train" if j < 5 else ("val" if j == 5 else "test")
            im = Image.open(sample / "HAM10000_images_part_1" / f"{image_id}.jpg").resize((28, 28))
            arrays[split][0].append(np.asarray(im))
            arrays[split][1].append([k])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        **{f"{s}_images": np.stack(a[0]).astype(np.uint8) for s, a in arrays.items()},
        **{f"{s}_labels": np.array(a[1], np.uint8) for s, a in arrays.items()},
    )
    return path


def test_medmnist_multiclass_flavour_has_named_classes(sample, tmp_path):
    from qcxr.data import medmnist

    npz = _dermamnist_npz(sample, tmp_path / "dermamnist.npz")
    dm = medmnist(npz=npz, cache_dir=tmp_path / "c", kind="multiclass", **TINY)
    assert dm.label_names == HAM10000
    assert [dm.num_examples(s) for s in dm.splits] == [35, 7, 7]
    with np.load(npz) as f:
        np.testing.assert_array_equal(dm.labels("val").argmax(1), f["val_labels"][:, 0])
    assert medmnist("dermamnist", npz=npz, cache_dir=tmp_path / "c", **TINY).label_names == HAM10000
    with pytest.raises(DataError, match="Fix: task=null .* or task=dermamnist"):
        medmnist("cxr8", npz=npz, **TINY)
    # A copy lacking the last class keeps all 7 named columns (the flavour's), vasc empty.
    partial = _dermamnist_npz(sample, tmp_path / "p" / "dermamnist.npz", drop_class=6)
    dm = medmnist(npz=partial, cache_dir=tmp_path / "c", min_positives=0, **TINY)
    assert dm.label_names == HAM10000 and dm.labels("train")[:, 6].sum() == 0


# ---- ISIC 2017 Part 3, official layout, built from the real sample's JPEGs ---------------------
def _isic(sample, tmp_path, edit=None, test_part="Test_v2"):
    """Three official folders + Part 3 ground truth: train 9, val 6, test 6 real images.
    mel -> melanoma, bkl -> seborrheic_keratosis, nv -> nevus (the diagnoses they are)."""
    by_class = {}
    for r in _metadata(sample):
        by_class.setdefault(r["dx"], []).append(r["image_id"])
    root = tmp_path / "isic"
    plan = {"Training": range(0, 3), "Validation": range(3, 5), test_part: range(5, 7)}
    rows_of = {}
    for part, take in plan.items():
        folder = root / f"ISIC-2017_{part}_Data"
        folder.mkdir(parents=True)
        rows = []
        for dx, mel, sk in (("mel", 1, 0), ("bkl", 0, 1), ("nv", 0, 0)):
            for j in take:
                image_id = sorted(by_class[dx])[j]
                (folder / f"{image_id}.jpg").symlink_to(
                    sample / "HAM10000_images_part_1" / f"{image_id}.jpg"
                )
                (folder / f"{image_id}_superpixels.png").write_bytes(b"not an image")
                rows.append([image_id, f"{float(mel)}", f"{float(sk)}"])
        rows_of[part] = rows
    if edit:
        edit(rows_of)
    for part, rows in rows_of.items():
        with open(root / f"ISIC-2017_{part}_Part3_GroundTruth.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "melanoma", "seborrheic_keratosis"])
            w.writerows(rows)
    return root


def test_isic2017_official_layout(sample, tmp_path):
    from qcxr.data import isic2017
    from qcxr.data.labels import ISIC2017

    for test_part in ("Test_v2", "Test"):
        root = _isic(sample, tmp_path / test_part, test_part=test_part)
        dm = isic2017(root=root, cache_dir=tmp_path / "c", **TINY)
        assert dm.label_names == ISIC2017 == ("melanoma", "seborrheic_keratosis", "nevus")
        assert [dm.num_examples(s) for s in dm.splits] == [9, 6, 6]  # superpixels ignored
        dx = {r["image_id"]: r["dx"] for r in _metadata(sample)}
        for split in dm.splits:
            for image_id, y in zip(dm.image_ids(split), dm.labels(split), strict=True):
                assert {"mel": 0, "bkl": 1, "nv": 2}[dx[image_id]] == int(y.argmax())
                assert y.sum() == 1
        assert np.isfinite(next(iter(dm.batches("test")))["image"]).all()


def test_isic2017_bad_rows_and_layout(sample, tmp_path):
    from qcxr.data import isic2017

    def both(rows):
        rows["Validation"][0][1:] = ["1.0", "1.0"]
        rows["Training"][2][2] = "0.5"

    root = _isic(sample, tmp_path / "a", both)
    with pytest.raises(DataError, match=r"(?s)line 4: seborrheic_keratosis = '0.5'"):
        isic2017(root=root, **TINY)
    root = _isic(sample, tmp_path / "b", lambda rows: rows["Training"][2].__setitem__(2, "0"))
    (root / "ISIC-2017_Validation_Part3_GroundTruth.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\nISIC_x,1.0,1.0\n"
    )
    with pytest.raises(DataError, match="both melanoma and seborrheic_keratosis are 1"):
        isic2017(root=root, **TINY)
    root = _isic(sample, tmp_path / "c")
    gone = next((root / "ISIC-2017_Test_v2_Data").glob("*.jpg"))
    gone.unlink()
    with pytest.raises(DataError, match=rf"(?s)absent .*{gone.stem}.*on_missing=skip"):
        isic2017(root=root, **TINY)
    (root / "ISIC-2017_Validation_Part3_GroundTruth.csv").unlink()
    with pytest.raises(DataError, match="ISIC-2017_Validation_Part3_GroundTruth.csv in .* val"):
        isic2017(root=root, **TINY)
    with pytest.raises(DataError, match="Fix: task=isic2017"):
        isic2017("ham10000", root=root, **TINY)
