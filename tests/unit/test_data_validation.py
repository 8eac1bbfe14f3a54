"""Sharp edges of issue 11, item 7: bad input fails at start, naming file, place, count and fix.

Each test reproduces what a new user ran into: a ragged CSV row (an IndexError before), a
duplicated image in train and test with conflicting labels (accepted silently before), a ref
outside the image folder (silently loaded `<image_dir>/X.png` before), an unreadable test image
(found after training before), an image over Pillow's decompression-bomb limit (a joblib traceback
without the file name before).
"""

import os

import numpy as np
import pytest
from PIL import Image

from qcxr.data import LABEL_SETS, DataError, folder_csv
from tests.unit.data_fixtures import gray_in_batch, gray_of, write_csv, write_image

SMALL = dict(batch_size=2, image_size=8, num_threads=1, min_positives=0)


def _folder(tmp_path, n=9):
    """n images 0.png .. with distinct gray levels and rows image,Cardiomegaly,split."""
    for k in range(n):
        write_image(tmp_path / "img" / f"{k}.png", k)
    return [f"{k}.png,{k % 2},{('train', 'val', 'test')[k % 3]}" for k in range(n)]


def _load(tmp_path, rows, header="image,Cardiomegaly,split", **kw):
    (tmp_path / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    kw = {"image_dir": tmp_path / "img", "cache_dir": tmp_path / "c", **SMALL, **kw}
    return folder_csv(["Cardiomegaly"], label_dir=tmp_path / "labels.csv", **kw)


def _grays(dm, split):
    return [
        gray_in_batch(im)
        for b in dm.batches(split)
        for im, m in zip(b["image"], b["mask"], strict=True)
        if m
    ]


# ---- ragged rows --------------------------------------------------------------------------------
def test_ragged_row_names_file_line_and_columns(tmp_path):
    rows = _folder(tmp_path)
    rows.insert(4, "9.png,1")  # its split field is missing (an IndexError before)
    with pytest.raises(DataError) as err:
        _load(tmp_path, rows)
    msg = str(err.value)
    assert "labels.csv" in msg and "1 row(s)" in msg and "line 6: 2 field(s)" in msg
    assert "3 column(s) (image, Cardiomegaly, split)" in msg and "Fix:" in msg


def test_extra_values_fail_but_trailing_commas_are_accepted(tmp_path):
    rows = _folder(tmp_path)
    with pytest.raises(DataError, match="line 2: 4 field"):  # an unquoted comma shifts columns
        _load(tmp_path, ["0.png,1,0,train", *rows[1:]])
    from qcxr.data.index import read_csv_lines

    path = tmp_path / "trailing.csv"
    path.write_text("image,Cardiomegaly,split,\n0.png,1,train,\n1.png,0,val\n")
    header, parsed, lines = read_csv_lines(path)
    assert header == ["image", "Cardiomegaly", "split"]
    assert parsed == [["0.png", "1", "train"], ["1.png", "0", "val"]] and lines == [2, 3]


# ---- duplicates ---------------------------------------------------------------------------------
def test_image_in_train_and_test_with_conflicting_labels_is_rejected(tmp_path):
    rows = _folder(tmp_path)  # 2.png is a test image with Cardiomegaly=0
    with pytest.raises(DataError) as err:
        _load(tmp_path, [*rows, "2.png,1,train"])
    msg = str(err.value)
    assert "1 image(s)" in msg and "'2.png': lines 4, 11, splits test, train; labels differ" in msg
    assert "leaks test data into training" in msg


def test_two_refs_to_one_file_are_rejected(tmp_path):
    rows = _folder(tmp_path)
    os.makedirs(tmp_path / "img" / "sub")
    os.replace(tmp_path / "img" / "4.png", tmp_path / "img" / "sub" / "4.png")
    # "4.png" finds sub/4.png (nested folders are searched); "sub/4.png" names it exactly.
    with pytest.raises(DataError) as err:
        _load(tmp_path, [*rows, "sub/4.png,1,test"])
    msg = str(err.value)
    assert "listed more than once" in msg and "sub/4.png" in msg
    assert "val '4.png'" in msg and "test 'sub/4.png'" in msg


# ---- refs that leave the image folder or match several files ----------------------------------
def test_ref_outside_the_image_folder_is_rejected(tmp_path):
    rows = _folder(tmp_path)
    write_image(tmp_path / "outside" / "X.png", 50)
    write_image(tmp_path / "img" / "X.png", 51)  # the file the basename fallback used to load
    for ref in ("../outside/X.png", str(tmp_path / "outside" / "X.png")):
        with pytest.raises(DataError) as err:
            _load(tmp_path, [*rows, f"{ref},1,train"])
        msg = str(err.value)
        assert "point outside the image folder" in msg and ref in msg and "split 'train'" in msg
    inside = str(tmp_path / "img" / "X.png")  # an absolute path inside the folder is fine
    dm = _load(tmp_path, [*rows, f"{inside},1,train"])
    assert gray_of(51) in _grays(dm, "train")


def test_ref_never_falls_back_to_a_file_in_another_folder(tmp_path):
    rows = _folder(tmp_path)
    write_image(tmp_path / "img" / "val" / "Y.png", 52)
    with pytest.raises(DataError, match="(?s)1 of 4 images listed for split 'train'.*train/Y.png"):
        _load(tmp_path, [*rows, "train/Y.png,1,train"])  # before: loaded img/val/Y.png


def test_ref_matching_several_files_is_rejected(tmp_path):
    rows = _folder(tmp_path)
    write_image(tmp_path / "img" / "a" / "Z.png", 53)
    write_image(tmp_path / "img" / "b" / "Z.png", 54)
    with pytest.raises(DataError) as err:
        _load(tmp_path, [*rows, "Z.png,1,train"])
    assert "match several files" in str(err.value) and "a/Z.png, b/Z.png" in str(err.value)
    dm = _load(tmp_path, [*rows, "b/Z.png,1,train"])
    assert gray_of(54) in _grays(dm, "train")


def test_image_folder_inside_the_refs_tree(tmp_path):
    # MIMIC-style refs files/p10/x.png with data.image_dir pointing at .../files: accepted only
    # where the dropped folder names are the image folder's own.
    for k in range(3):
        write_image(tmp_path / "files" / "p10" / f"{k}.png", k)
        write_image(tmp_path / "other" / "p10" / f"{k}.png", k)
    rows = [f"files/p10/{k}.png,{k % 2},{('train', 'val', 'test')[k]}" for k in range(3)]
    dm = _load(tmp_path, rows, image_dir=tmp_path / "files")
    assert _grays(dm, "val") == [gray_of(1)]
    with pytest.raises(DataError, match="missing from"):
        _load(tmp_path, rows, image_dir=tmp_path / "other")


# ---- images that cannot be read: every split, before training ---------------------------------
def test_prepare_checks_every_split_and_names_each(tmp_path):
    rows = _folder(tmp_path)
    (tmp_path / "img" / "2.png").write_bytes(b"not an image")  # a test image
    (tmp_path / "img" / "4.png").write_bytes(b"")  # a val image
    dm = _load(tmp_path, rows)
    with pytest.raises(DataError) as err:
        dm.prepare()
    msg = str(err.value)
    assert "1 of 3 images of split 'val'" in msg and str(tmp_path / "img" / "4.png") in msg
    assert "1 of 3 images of split 'test'" in msg and str(tmp_path / "img" / "2.png") in msg
    assert "Fix: re-download or replace" in msg
    assert "train" not in msg.split("Fix")[0]  # train's images are fine and now cached
    assert all(k in dm.cache for k in dm.image_keys("train"))


def test_decompression_bomb_names_the_file_and_the_limit(tmp_path, monkeypatch):
    rows = _folder(tmp_path)
    big = tmp_path / "img" / "5.png"
    Image.new("L", (60, 60), 7).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3600 px > 2 x 1000: refused
    dm = _load(tmp_path, rows, num_threads=2)
    with pytest.raises(DataError) as err:
        dm.prepare()
    msg = str(err.value)
    assert "1 of 3 images of split 'test'" in msg and str(big) in msg
    assert "decompression-bomb limit (Image.MAX_IMAGE_PIXELS = 1000" in msg
    assert "downsample it" in msg and "raise PIL.Image.MAX_IMAGE_PIXELS" in msg
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    dm.prepare()  # with the limit raised it is read
    assert np.isfinite(next(dm.batches("test"))["image"]).all()


# ---- the run checks every split before any time is spent on features or training -------------
@pytest.mark.parametrize("freeze", ["true", "false"])
def test_run_fails_on_a_bad_test_image_before_features_and_training(tmp_path, monkeypatch, freeze):
    from qcxr import run as run_module
    from qcxr.train import features, loop
    from tests.train_helpers import compose_run

    _folder(tmp_path, n=12)
    (tmp_path / "img" / "5.png").write_bytes(b"not an image")  # a test image
    header = ["image", "split", *(n.replace(" ", "_") for n in LABEL_SETS["cxr8"])]
    rows = [[f"{k}.png", ("train", "val", "test")[k % 3], *[k % 2] * 8] for k in range(12)]
    write_csv(tmp_path / "labels.csv", header, rows)

    def never(*args, **kwargs):
        raise AssertionError("reached features or training with a bad test image")

    monkeypatch.setattr(features, "cached_features", never)
    monkeypatch.setattr(loop, "fit", never)
    overrides = [
        "backbone=tiny",
        "backbone.image_size=8",
        "backbone.feature_dim=4",
        f"backbone.freeze={freeze}",
        "head=cdl",
        "task=cxr8",
        "data=folder_csv",
        f"data.image_dir={tmp_path / 'img'}",
        f"data.label_dir={tmp_path / 'labels.csv'}",
        "data.min_positives=0",
        "data.num_threads=1",
        "data.external_image_dir=null",
        "data.external_label_dir=null",
        "trainer.batch_size=2",
        "trainer.progress=false",
        "trainer.compilation_cache=false",
        "tracker=none",
    ]
    cfg = compose_run(tmp_path, overrides, tiny=False)
    with pytest.raises(DataError) as err:
        run_module.run(cfg)
    msg = str(err.value)
    assert "1 of 4 images of split 'test'" in msg and str(tmp_path / "img" / "5.png") in msg


def _short_split():
    from qcxr.data.index import SplitIndex

    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], bool)  # the third label has no example
    ids = ["a.jpg", "b.jpg", "c.jpg"]
    return SplitIndex(ids, ids, labels, ids, source="HAM10000_metadata.csv")


def test_too_few_positives_fix_fits_a_multiclass_task():
    # A HAM10000 split short of a class was told to try task=cxr8 / cxr14 (issue 20 item 6).
    from qcxr.data.index import DataError, check_split

    names = ["akiec", "bcc", "bkl"]
    with pytest.raises(DataError, match="more images per class") as err:
        check_split("val", _short_split(), names, 1, kind="multiclass")
    assert "cxr8" not in str(err.value) and "bkl: 0" in str(err.value)
    with pytest.raises(DataError, match="task=cxr8 / cxr14"):
        check_split("val", _short_split(), names, 1, kind="multilabel")
