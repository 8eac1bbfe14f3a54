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
        for image_id, label, lesion in zip(dm.image_ids(split), y, dm.patients(split),
                                           strict=True):
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

    dm = ham10000(root=_copy(sample, tmp_path, edit), cache_dir=tmp_path / "c",
                  min_positives=0, **TINY)
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
