"""Each source reads a tiny fixture in its real on-disk format, labels aligned to images."""

import numpy as np
import pytest

from qcxr.data import LABEL_SETS, folder_csv, medmnist, mimic_cxr_lt, nih_cxr_lt
from qcxr.data.labels import CXR19
from tests.unit.data_fixtures import (
    gray_in_batch,
    gray_of,
    label_row,
    mimic_fixture,
    nih_cxr_lt_fixture,
    write_csv,
    write_image,
)

SMALL = dict(batch_size=4, image_size=8, num_threads=1, min_positives=0)


def _check_aligned(dm, split, labels_of_gray):
    """Every row's labels are those of the image in that row (eval splits: no augmentation)."""
    seen = 0
    for b in dm.batches(split):
        for j in np.flatnonzero(b["mask"]):
            g = gray_in_batch(b["image"][j])
            np.testing.assert_array_equal(b["labels"][j], labels_of_gray[g])
            seen += 1
    assert seen == dm.num_examples(split)


def _gray_table(labels, count=120):
    names = list(CXR19)
    cols = [names.index(n) for n in labels]
    return {gray_of(k): label_row(k)[cols] for k in range(count)}


@pytest.mark.parametrize("task", ["cxr8", "cxr19"])
def test_nih_cxr_lt_release_files(tmp_path, task):
    image_dir, label_dir = nih_cxr_lt_fixture(tmp_path)
    dm = nih_cxr_lt(
        task, image_dir=image_dir, label_dir=label_dir, cache_dir=tmp_path / "c", **SMALL
    )
    assert dm.label_names == LABEL_SETS[task]
    assert [dm.num_examples(s) for s in dm.splits] == [8, 4, 4]
    assert dm.image_ids("val")[0] == "00000008_000.png"
    table = _gray_table(dm.label_names)
    for split in ("val", "test"):
        _check_aligned(dm, split, table)
    np.testing.assert_array_equal(
        dm.labels("train"), np.stack([table[gray_of(k)] for k in range(8)])
    )


def test_nih_data_entry_layout_patient_split(tmp_path):
    image_dir = tmp_path / "images"
    rows = []
    names = list(LABEL_SETS["cxr14"])
    for k in range(40):
        write_image(image_dir / f"{k:08d}_000.png", k)
        found = [n.replace(" ", "_") for n, y in zip(names, label_row(k, names), strict=True) if y]
        rows.append([f"{k:08d}_000.png", "|".join(found) or "No Finding", 0, str(k // 2)])
    write_csv(
        tmp_path / "Data_Entry_2017_v2020.csv",
        ["Image Index", "Finding Labels", "Follow-up #", "Patient ID"],
        rows,
    )
    dm = nih_cxr_lt(
        "cxr14", image_dir=image_dir, label_dir=tmp_path, cache_dir=tmp_path / "c", **SMALL
    )
    assert sum(dm.num_examples(s) for s in dm.splits) == 40
    patients = {s: set(dm.patients(s)) for s in dm.splits}
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    _check_aligned(dm, "test", _gray_table(dm.label_names))


@pytest.mark.parametrize("view_column", [False, True])
def test_mimic_cxr_lt_frontal_only_and_external(tmp_path, view_column):
    image_dir, label_dir = mimic_fixture(tmp_path, view_column=view_column)
    dm = mimic_cxr_lt(
        "cxr19", image_dir=image_dir, label_dir=label_dir, cache_dir=tmp_path / "c", **SMALL
    )
    assert dm.splits == ("test",)
    assert dm.num_examples("test") == 9  # 11 rows, 2 lateral dropped
    assert all("dcm" in i for i in dm.image_ids("test"))
    _check_aligned(dm, "test", _gray_table(dm.label_names))
    # Beside a training source: the MIMIC test set becomes the "external" split.
    nih_images, nih_labels = nih_cxr_lt_fixture(tmp_path / "nih")
    both = nih_cxr_lt(
        "cxr8",
        image_dir=nih_images,
        label_dir=nih_labels,
        external_image_dir=image_dir,
        external_label_dir=label_dir,
        cache_dir=tmp_path / "c",
        **SMALL,
    )
    assert both.splits == ("train", "val", "test", "external")
    _check_aligned(both, "external", _gray_table(both.label_names))


def test_medmnist_chestmnist_and_single_label(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 12), ("val", 5), ("test", 6)):
        arrays[f"{s}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = np.stack(
            [label_row(k, LABEL_SETS["cxr14"]) for k in range(n)]
        ).astype(np.uint8)
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    dm = medmnist("cxr8", npz=tmp_path / "chestmnist.npz", cache_dir=tmp_path / "c", **SMALL)
    assert dm.label_names == LABEL_SETS["cxr8"]
    np.testing.assert_array_equal(dm.labels("val"), arrays["val_labels"][:, :8].astype(bool))
    b = next(dm.batches("val"))
    from qcxr.data.preprocess import preprocess_reference

    np.testing.assert_allclose(
        b["image"][1], preprocess_reference(arrays["val_images"][1], 8), atol=1e-6
    )
    # Binary (pneumoniamnist) and an unnamed multiclass flavour (class 0..K-1).
    for name, classes in (("pneumoniamnist", 2), ("othermnist", 3)):
        arrays = {}
        for s, n in (("train", 9), ("val", 6), ("test", 6)):
            arrays[f"{s}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
            arrays[f"{s}_labels"] = (np.arange(n) % classes).astype(np.uint8)[:, None]
        np.savez(tmp_path / f"{name}.npz", **arrays)
        dm = medmnist(npz=tmp_path / f"{name}.npz", cache_dir=tmp_path / "c", **SMALL)
        assert dm.num_labels == (1 if classes == 2 else classes)
        y = dm.labels("test")
        if classes == 2:
            assert dm.label_names == ("Pneumonia",)
            np.testing.assert_array_equal(y[:, 0], arrays["test_labels"][:, 0] == 1)
        else:
            np.testing.assert_array_equal(y.argmax(1), arrays["test_labels"][:, 0])
            assert (y.sum(1) == 1).all()
        assert next(dm.batches("train"))["image"].shape == (4, 8, 8, 3)


def test_folder_csv_with_split_column_and_aliases(tmp_path):
    rows = []
    for k in range(24):
        write_image(tmp_path / "imgs" / "sub" / f"im{k}.png", k, mode="RGB")
        y = label_row(k, LABEL_SETS["cxr8"])
        rows.append(
            [f"im{k}.png", f"P{k // 3}", ("train", "val", "test")[(k // 3) % 3], *map(int, y)]
        )
    header = ["image", "patient", "split", *(n.replace(" ", "_") for n in LABEL_SETS["cxr8"])]
    csv = write_csv(tmp_path / "labels.csv", header, rows)
    dm = folder_csv(
        "cxr8", image_dir=tmp_path / "imgs", label_dir=csv, cache_dir=tmp_path / "c", **SMALL
    )
    assert [dm.num_examples(s) for s in dm.splits] == [9, 9, 6]
    _check_aligned(dm, "val", _gray_table(dm.label_names))
    every = folder_csv(
        None, image_dir=tmp_path / "imgs", label_dir=tmp_path, cache_dir=tmp_path / "c", **SMALL
    )
    assert every.label_names == LABEL_SETS["cxr8"]


@pytest.mark.realdata
def test_realdata_folder_csv_nih_64px(shared_data, tmp_path):
    root = shared_data / "nih-cxr14-64px"
    dm = folder_csv(
        ["Atelectasis", "Effusion", "Infiltration"],
        image_dir=root / "images",
        label_dir=root / "labels.csv",
        cache_dir=tmp_path,
        batch_size=8,
        image_size=56,
        num_threads=2,
    )
    assert sum(dm.num_examples(s) for s in dm.splits) == 618
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(dm.patients(a)) & set(dm.patients(b))
    b = next(dm.batches("test"))
    assert b["image"].shape == (8, 56, 56, 3) and np.isfinite(b["image"]).all()
    # Stored as RGB(A) with identical channels: loaded as grayscale broadcast to RGB.
    np.testing.assert_allclose(
        b["image"][..., 0] * 0.229 + 0.485, b["image"][..., 1] * 0.224 + 0.456, atol=1e-5
    )
    assert next(dm.batches("train", 0))["image"].std() > 0.1
    full = folder_csv(
        "cxr14",
        image_dir=root / "images",
        label_dir=root,
        cache_dir=tmp_path,
        batch_size=8,
        image_size=56,
        min_positives=0,
    )
    assert full.label_names[12] == "Pleural Thickening"  # file spells Pleural_Thickening
    assert sum(full.labels(s)[:, 12].sum() for s in full.splits) == 18


@pytest.mark.realdata
def test_realdata_medmnist_pneumonia(shared_data, tmp_path):
    dm = medmnist(
        npz=shared_data / "medmnist" / "pneumoniamnist.npz",
        cache_dir=tmp_path,
        batch_size=16,
        image_size=28,
        resize_size=28,
        num_threads=2,
    )
    assert dm.label_names == ("Pneumonia",)
    assert dm.num_examples("val") == 524 and dm.num_examples("test") == 624
    assert int(dm.labels("test").sum()) == 390
    b = next(dm.batches("val"))
    assert b["image"].shape == (16, 28, 28, 3)
