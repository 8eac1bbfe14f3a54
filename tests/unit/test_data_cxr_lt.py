"""CXR-LT 2024 (issue 14): its label sets, its label files with MIMIC-like images, synthetic40."""

import csv

import numpy as np
import pytest
from PIL import Image

from qcxr.data import LABEL_SETS, DataError, cxr_lt_2024, resolve_labels, synthetic
from qcxr.data.labels import CXR19, CXR26, CXR40, label_key
from qcxr.data.synthetic import EXTRA_LABELS, SYNTHETIC_LABELS, render

SMALL = dict(batch_size=4, image_size=8, num_threads=1, min_positives=0)
# The label files' own spellings where they differ from ours (qcxr.data.labels).
FILE_NAME = {"Effusion": "Pleural Effusion"}
IDS = ("subject_id", "study_id", "dicom_id")  # identifier columns before fpath, as released


# ---- label sets ---------------------------------------------------------------------------------
def test_label_sets_sizes_order_and_subsets():
    assert len(CXR40) == 40 and len(CXR26) == 26
    for names in (CXR40, CXR26):
        assert len({label_key(n) for n in names}) == len(names)  # no duplicates, any spelling
    assert set(CXR26) <= set(CXR40) and set(CXR19) <= set(CXR40)
    assert CXR40[:3] == ("Adenopathy", "Atelectasis", "Azygos Lobe")  # the files' column order
    assert CXR40[-3:] == ("Support Devices", "Tortuous Aorta", "Tuberculosis")
    assert CXR26[13:16] == ("Mass", "Normal", "Nodule")  # task 2 keeps CXR-LT 2023's order
    assert LABEL_SETS["cxr_lt_2024_task1"] == resolve_labels("cxr40") == CXR40
    assert LABEL_SETS["cxr_lt_2024_task2"] == resolve_labels("cxr26") == CXR26
    assert resolve_labels(["Pleural Effusion", "Rounded Atelectasis", "Normal"]) == (
        "Effusion",
        "Round(ed) Atelectasis",
        "Normal",
    )


# ---- the challenge's label files with MIMIC-CXR-JPG-like images ---------------------------------
def _fixture(tmp_path, shared_data, sizes=(12, 4, 4), task2=False, drop=(), extra_rows=()):
    """Label files in the released format and a MIMIC-CXR-JPG tree of real (NIH) JPEGs.

    Returns:
        (image_dir, label_dir, {file name: bool[N, 40] as written}).
    """
    source = sorted((shared_data / "nih-cxr14-64px" / "images").iterdir())
    image_dir, label_dir = tmp_path / "mimic-cxr-jpg", tmp_path / "cxr-lt-2024"
    label_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["train_labeled.csv", "development_labeled_task1.csv", "test_labeled_task1.csv"]
    if task2:
        names[1:] = ["development_labeled_task2.csv", "test_labeled_task2.csv"]
    written, k = {}, 0
    for name, n in zip(names, sizes, strict=True):
        labels = CXR26 if "task2" in name else CXR40
        columns = [c for c in labels if c not in drop]
        y = rng.random((n, len(labels))) < 0.3
        rows = []
        for i in range(n):
            subject, study, dicom = f"1{k:07d}", f"5{k:07d}", f"d{k:04d}"
            fpath = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"
            target = image_dir / fpath
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(source[k]).convert("L").save(target, "JPEG")
            row = dict(zip(labels, y[i].astype(int).tolist(), strict=True))
            rows.append(
                [subject, study, dicom, fpath]
                + [row[c] for c in columns]
                + ["AP", "note, with comma"]
            )
            k += 1
        rows += [list(r) for r in extra_rows if name.startswith("test")]
        header = [*IDS, "fpath", *(FILE_NAME.get(c, c) for c in columns), "ViewPosition", "x"]
        with open(label_dir / name, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
        written[name] = y
    return image_dir, label_dir, written


@pytest.mark.realdata
def test_task1_files_give_splits_labels_and_images(shared_data, tmp_path):
    image_dir, label_dir, written = _fixture(tmp_path, shared_data)
    dm = cxr_lt_2024(
        "cxr40", image_dir=image_dir, label_dir=label_dir, cache_dir=tmp_path / "c", **SMALL
    )
    assert dm.label_names == CXR40 and dm.splits == ("train", "val", "test")
    assert [dm.num_examples(s) for s in dm.splits] == [12, 4, 4]
    for split, name in zip(
        dm.splits,
        ("train_labeled.csv", "development_labeled_task1.csv", "test_labeled_task1.csv"),
        strict=True,
    ):
        np.testing.assert_array_equal(dm.labels(split), written[name])
    assert dm.image_ids("val")[0] == "files/p10/p10000012/s50000012/d0012.jpg"
    # A subset of the labels (task 2's, here from the task-1 files) picks its own columns.
    sub = cxr_lt_2024(
        "cxr26", image_dir=image_dir, label_dir=label_dir, cache_dir=tmp_path / "c", **SMALL
    )
    cols = [CXR40.index(n) for n in CXR26]
    np.testing.assert_array_equal(sub.labels("test"), written["test_labeled_task1.csv"][:, cols])
    batch = next(dm.batches("test"))
    assert batch["image"].shape == (4, 8, 8, 3) and np.isfinite(batch["image"]).all()
    assert batch["image"].std() > 0.05  # real pixels, not a blank
    # The image cache is keyed by the image files: another file under the same name, another key.
    before = dm.image_keys("train")[0]
    target = image_dir / dm.image_ids("train")[0]
    Image.open(sorted((shared_data / "nih-cxr14-64px" / "images").iterdir())[100]).convert(
        "L"
    ).save(target, "JPEG")
    again = cxr_lt_2024(
        "cxr40", image_dir=image_dir, label_dir=label_dir, cache_dir=tmp_path / "c", **SMALL
    )
    assert again.image_keys("train")[0] != before
    assert again.image_keys("train")[1:] == dm.image_keys("train")[1:]


@pytest.mark.realdata
def test_task2_files(shared_data, tmp_path):
    image_dir, label_dir, written = _fixture(tmp_path, shared_data, sizes=(6, 3, 3), task2=True)
    files = dict(val_file="development_labeled_task2.csv", test_file="test_labeled_task2.csv")
    dm = cxr_lt_2024(
        "cxr26",
        image_dir=image_dir,
        label_dir=label_dir,
        cache_dir=tmp_path / "c",
        **files,
        **SMALL,
    )
    np.testing.assert_array_equal(dm.labels("test"), written["test_labeled_task2.csv"])
    with pytest.raises(DataError, match=r"development_labeled_task2\.csv lacks 14 label") as err:
        cxr_lt_2024("cxr40", image_dir=image_dir, label_dir=label_dir, **files, **SMALL)
    assert "Adenopathy" in str(err.value) and "task=cxr26" in str(err.value)


@pytest.mark.realdata
def test_missing_label_columns_are_named_with_the_file_and_fix(shared_data, tmp_path):
    image_dir, label_dir, _ = _fixture(
        tmp_path, shared_data, sizes=(4, 2, 2), drop=("Kyphosis", "Effusion")
    )
    with pytest.raises(DataError) as err:
        cxr_lt_2024("cxr40", image_dir=image_dir, label_dir=label_dir, **SMALL)
    msg = str(err.value)
    assert (
        "train_labeled.csv lacks 2 label column(s): Kyphosis, Effusion (column 'Pleural Effusion')"
        in msg
    )
    assert "task=cxr40" in msg and "Its header is: subject_id" in msg
    # A task without those labels reads the same files.
    ok = [n for n in CXR40 if n not in ("Kyphosis", "Effusion")]
    dm = cxr_lt_2024(ok, image_dir=image_dir, label_dir=label_dir, cache_dir=tmp_path, **SMALL)
    assert dm.num_labels == 38


@pytest.mark.realdata
def test_missing_and_duplicated_images_fail_before_training(shared_data, tmp_path):
    image_dir, label_dir, _ = _fixture(tmp_path, shared_data, sizes=(4, 2, 2))
    gone = next(image_dir.rglob("d0007.jpg"))  # the last test image
    gone.unlink()
    with pytest.raises(DataError, match=r"(?s)1 of 2 images listed for split 'test'.*d0007\.jpg"):
        cxr_lt_2024("cxr40", image_dir=image_dir, label_dir=label_dir, **SMALL)
    dm = cxr_lt_2024(
        "cxr40",
        image_dir=image_dir,
        label_dir=label_dir,
        on_missing="skip",
        cache_dir=tmp_path / "c",
        **SMALL,
    )
    assert dm.num_examples("test") == 1
    # A train image listed again in the test file: named with its line, before anything is read.
    header = (label_dir / "train_labeled.csv").read_text().splitlines()
    image_dir2, label_dir2, _ = _fixture(
        tmp_path / "dup", shared_data, sizes=(4, 2, 2), extra_rows=[next(csv.reader(header[1:2]))]
    )
    with pytest.raises(DataError, match=r"listed more than once"):
        cxr_lt_2024("cxr40", image_dir=image_dir2, label_dir=label_dir2, **SMALL)


def test_unset_or_wrong_locations_name_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"data\.image_dir=.*MIMIC_CXR_LT_IMAGES"):
        cxr_lt_2024("cxr40", label_dir=tmp_path, **SMALL)
    with pytest.raises(DataError, match=r"data\.label_dir=.*CXR_LT_2024_LABELS"):
        cxr_lt_2024("cxr40", image_dir=tmp_path, **SMALL)
    with pytest.raises(DataError, match=r"train: .*train_labeled\.csv.*data\.train_file"):
        cxr_lt_2024("cxr40", image_dir=tmp_path, label_dir=tmp_path, **SMALL)


# ---- synthetic40 --------------------------------------------------------------------------------
def test_synthetic40_labels_extend_the_19_label_task(tmp_path):
    sizes = dict(num_train=120, num_val=100, num_test=100, num_external=0)
    kw = dict(batch_size=4, image_size=8, cache_dir=tmp_path, num_threads=1, **sizes)
    dm40, dm19 = synthetic("cxr40", **kw), synthetic("cxr19", **kw)
    cols19 = [CXR40.index(n) for n in CXR19]
    normal = CXR40.index("Normal")
    for split in dm40.splits:
        y = dm40.labels(split)
        assert y.shape == (dm40.num_examples(split), 40)
        assert y.sum(axis=0).min() >= 2  # every label learnable in every split
        np.testing.assert_array_equal(y[:, cols19], dm19.labels(split))  # same CXR-19 draw
        others = np.delete(y, normal, axis=1)
        np.testing.assert_array_equal(y[:, normal], ~others.any(axis=1))
    # Images differ where an added finding is drawn, so caches never mix them.
    assert dm40.image_keys("train") != dm19.image_keys("train")
    assert SYNTHETIC_LABELS[:19] == CXR19 and set(SYNTHETIC_LABELS) == set(CXR40)


def test_every_added_finding_is_drawn_and_absent_ones_change_nothing():
    anatomy = np.random.default_rng(1).random(6)
    healthy = render(np.zeros(19, bool), anatomy, 32, np.random.default_rng(0))
    none = np.zeros(len(EXTRA_LABELS), bool)
    same = render(np.zeros(19, bool), anatomy, 32, np.random.default_rng(0), extra=none)
    np.testing.assert_array_equal(same, healthy)
    for j, name in enumerate(EXTRA_LABELS):
        one = none.copy()
        one[j] = True
        img = render(
            np.zeros(19, bool),
            anatomy,
            32,
            np.random.default_rng(0),
            extra=one,
            extra_rng=np.random.default_rng(2),
        )
        changed = int((np.abs(img.astype(int) - healthy.astype(int)) > 8).sum())
        assert (changed == 0) == (name == "Normal"), name  # Normal: the absence of findings


def test_synthetic_names_the_labels_it_can_draw(tmp_path):
    with pytest.raises(ValueError, match=r"CXR-40 labels.*unknown: \['Bulla'\]"):
        synthetic(["Bulla"], num_train=8, num_val=4, num_test=4, cache_dir=tmp_path)


@pytest.mark.slow  # about 16 s on 2 cores, mostly compilation
def test_synthetic40_trains_end_to_end_with_cdl(tmp_path):
    """`python train.py task=synthetic40 head=cdl`, shrunk; offline (DQC: the MPS method's)."""
    from qcxr.run import run
    from tests.train_helpers import compose_run

    sizes = ["data.num_train=100", "data.num_val=100", "data.num_test=100", "trainer.max_epochs=1"]
    cfg = compose_run(tmp_path, ["task=synthetic40", "head=cdl", "tracker=none", *sizes])
    assert cfg.task.num_labels == cfg.head.num_labels == 40 and cfg.task.labels == "cxr40"
    assert np.isfinite(run(cfg))
