"""Bad input: each case fails with a message naming the file(s), the count and the fix."""

import logging

import numpy as np
import pytest

from qcxr.data import DataError, folder_csv, medmnist, mimic_cxr_lt, nih_cxr_lt, synthetic
from qcxr.data.index import read_csv
from tests.unit.data_fixtures import mimic_fixture, nih_cxr_lt_fixture, write_csv

SMALL = dict(batch_size=4, image_size=8, num_threads=1, min_positives=0)


def _nih(tmp_path, **kw):
    image_dir, label_dir = nih_cxr_lt_fixture(tmp_path)
    return image_dir, label_dir, {**SMALL, "cache_dir": tmp_path / "c", **kw}


def _rewrite(path, edit):
    header, rows = read_csv(path)
    header, rows = edit(header, rows)
    write_csv(path, header, rows)


def test_missing_images_error_and_skip(tmp_path, caplog):
    image_dir, label_dir, kw = _nih(tmp_path)
    for p in sorted(image_dir.rglob("0000000[13]_000.png")):
        p.unlink()
    with pytest.raises(DataError) as err:
        nih_cxr_lt("cxr8", image_dir=image_dir, label_dir=label_dir, **kw)
    msg = str(err.value)
    assert "2 of 8 images" in msg and "00000001_000.png" in msg and "00000003_000.png" in msg
    assert "data.on_missing=skip" in msg and "labels_train.csv" in msg
    with caplog.at_level(logging.WARNING):
        dm = nih_cxr_lt("cxr8", image_dir=image_dir, label_dir=label_dir, on_missing="skip", **kw)
    assert dm.num_examples("train") == 6
    assert any("skipped 2 of 8" in r.getMessage() for r in caplog.records)


def test_unreadable_image_names_files_and_caches_nothing(tmp_path):
    image_dir, label_dir, kw = _nih(tmp_path)
    bad = sorted(image_dir.rglob("00000009_000.png"))[0]
    bad.write_bytes(b"not an image")
    dm = nih_cxr_lt("cxr8", image_dir=image_dir, label_dir=label_dir, **kw)
    with pytest.raises(DataError) as err:
        list(dm.batches("val"))
    msg = str(err.value)
    assert "1 of 4 images of split 'val'" in msg and str(bad) in msg and "Fix:" in msg
    keys = dm._split_keys("val")
    assert [k in dm.cache for k in keys] == [True, False, True, True]  # no entry for the bad one


def test_missing_label_columns(tmp_path):
    image_dir, label_dir, kw = _nih(tmp_path)
    path = label_dir / "miccai2023_nih-cxr-lt_labels_val.csv"
    _rewrite(path, lambda h, r: ([c for c in h if c != "Hernia"], [x[:8] + x[9:] for x in r]))
    nih_cxr_lt("cxr8", image_dir=image_dir, label_dir=label_dir, **kw)  # cxr8 needs no Hernia
    with pytest.raises(DataError) as err:
        nih_cxr_lt("cxr14", image_dir=image_dir, label_dir=label_dir, **kw)
    msg = str(err.value)
    assert str(path) in msg and "1 required column(s): Hernia" in msg and "Fix:" in msg


@pytest.mark.parametrize("value", ["-1", "", "2", "yes"])
def test_non_binary_label_values(tmp_path, value):
    image_dir, label_dir, kw = _nih(tmp_path)
    path = label_dir / "miccai2023_nih-cxr-lt_labels_train.csv"

    def edit(h, rows):
        col = h.index("Mass")
        rows[2][col] = value
        rows[5][col] = value
        return h, rows

    _rewrite(path, edit)
    with pytest.raises(DataError) as err:
        nih_cxr_lt("cxr8", image_dir=image_dir, label_dir=label_dir, **kw)
    msg = str(err.value)
    assert str(path) in msg and "'Mass': 2 row(s)" in msg and "0 or 1" in msg


def test_empty_split(tmp_path):
    image_dir, label_dir, kw = _nih(tmp_path)
    _rewrite(label_dir / "miccai2023_nih-cxr-lt_labels_test.csv", lambda h, r: (h, []))
    with pytest.raises(DataError, match=r"split 'test' is empty \(labels from .*labels_test.csv\)"):
        nih_cxr_lt("cxr8", image_dir=image_dir, label_dir=label_dir, **kw)


def test_label_without_positives(tmp_path):
    image_dir, label_dir, kw = _nih(tmp_path, min_positives=1)

    def edit(h, rows):
        for name in ("Nodule", "Mass"):
            for r in rows:
                r[h.index(name)] = "0"
        return h, rows

    _rewrite(label_dir / "miccai2023_nih-cxr-lt_labels_val.csv", edit)
    with pytest.raises(DataError) as err:
        nih_cxr_lt("cxr8", image_dir=image_dir, label_dir=label_dir, **kw)
    msg = str(err.value)
    assert "split 'val' (4 images" in msg and "2 label(s)" in msg
    assert "Mass: 0" in msg and "Nodule: 0" in msg and "min_positives=0" in msg


def test_unset_locations_name_key_and_env(tmp_path):
    with pytest.raises(DataError, match=r"data.image_dir=.*NIH_CXR_LT_IMAGES"):
        nih_cxr_lt("cxr8", image_dir=None, label_dir=tmp_path)
    with pytest.raises(DataError, match=r"data.npz=.*MEDMNIST_NPZ"):
        medmnist(npz=None)
    with pytest.raises(DataError, match="does not exist"):
        medmnist(npz=tmp_path / "nope.npz")
    with pytest.raises(DataError, match="no NIH label files"):
        nih_cxr_lt("cxr8", image_dir=tmp_path, label_dir=tmp_path)
    with pytest.raises(DataError, match="needs both"):
        synthetic(num_train=4, external_image_dir=tmp_path, **SMALL)


def test_mimic_without_view_information(tmp_path):
    image_dir, label_dir = mimic_fixture(tmp_path)
    (label_dir / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DataError, match="lateral views cannot be dropped.*frontal_only=false"):
        mimic_cxr_lt("cxr8", image_dir=image_dir, label_dir=label_dir, cache_dir=tmp_path, **SMALL)
    dm = mimic_cxr_lt(
        "cxr8",
        image_dir=image_dir,
        label_dir=label_dir,
        frontal_only=False,
        cache_dir=tmp_path,
        **SMALL,
    )
    assert dm.num_examples("test") == 11


def test_folder_csv_bad_split_values_and_no_image_column(tmp_path):
    write_csv(tmp_path / "a" / "labels.csv", ["file_name", "Mass"], [["x.png", "1"]])
    with pytest.raises(DataError, match="no image column.*data.image_column"):
        folder_csv("cxr8", image_dir=tmp_path, label_dir=tmp_path / "a", **SMALL)
    write_csv(
        tmp_path / "b" / "labels.csv", ["image", "split", "Mass"], [["x.png", "training", "1"]]
    )
    with pytest.raises(DataError, match="values \\['training'\\]"):
        folder_csv(["Mass"], image_dir=tmp_path, label_dir=tmp_path / "b", **SMALL)


def test_medmnist_wrong_task(tmp_path):
    arrays = {}
    for s in ("train", "val", "test"):
        arrays[f"{s}_images"] = np.zeros((4, 28, 28), np.uint8)
        arrays[f"{s}_labels"] = np.array([[0], [1], [0], [1]], np.uint8)
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    with pytest.raises(DataError, match="single-label task"):
        medmnist("cxr8", npz=tmp_path / "pneumoniamnist.npz", **SMALL)
