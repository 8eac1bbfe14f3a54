"""CXR-LT 2024 (MICCAI 2024): the challenge's label files with MIMIC-CXR-JPG images as a DataModule.

The challenge (PhysioNet "cxr-lt-iccv-workshop-cvamd" 2.0.0, folder `cxr-lt-2024/`) releases one
CSV per split: `train_labeled.csv`, `development_labeled_task1.csv`, `test_labeled_task1.csv`
(40 labels) and, for task 2's gold-standard labels, `development_labeled_task2.csv`,
`test_labeled_task2.csv` (26 labels). Each has an `fpath` column relative to the MIMIC-CXR-JPG
root (`files/p10/p10000032/s50414267/<dicom_id>.jpg`), identifier columns (`subject_id`,
`study_id`, `dicom_id`, ...) and one 0/1 column per label. The validation applied to every
source applies here too: the same checks, messages and image-file identities as
`qcxr.data.common` and `qcxr.data.mimic`, whose helpers this module reuses.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qcxr.data.common import check_loader, reject_duplicate_rows, require
from qcxr.data.index import (
    DataError,
    SplitIndex,
    find_column,
    index_images,
    parse_binary,
    read_csv_lines,
    resolve_images,
)
from qcxr.data.labels import label_key, resolve_labels
from qcxr.data.mimic import build_module
from qcxr.data.module import DataModule

log = logging.getLogger(__name__)

_PATH_COLUMNS = ("fpath", "path")
_PATIENT_COLUMNS = ("subject_id",)
# Where the released files spell a label otherwise than qcxr.data.labels (named in messages).
_FILE_SPELLING = {"Effusion": "Pleural Effusion"}


def _read_split(path: Path, labels: Sequence[str], split: str) -> SplitIndex:
    """One CXR-LT 2024 label file as a split: refs are the `fpath` values, as written."""
    header, rows, lines = read_csv_lines(path)
    path_col = find_column(header, _PATH_COLUMNS)
    wanted = {label_key(h) for h in header}
    missing = [
        f"{n} (column {_FILE_SPELLING[n]!r})" if n in _FILE_SPELLING else n
        for n in labels
        if label_key(n) not in wanted
    ]
    if path_col is None or missing:
        parts = ([] if path_col is not None else ["the image column 'fpath'"]) + (
            [f"{len(missing)} label column(s): {', '.join(missing)}"] if missing else []
        )
        task2 = "task2" in path.name
        raise DataError(
            f"CXR-LT 2024 {split} file {path} lacks {' and '.join(parts)}.\n"
            f"Its header is: {', '.join(header)}.\n"
            "Fix: use the file as released (cxr-lt-2024/ on PhysioNet), or pick a task whose "
            "labels it has: "
            + (
                "task 2's files have CXR-26's labels only: task=cxr26 (or point data.val_file / "
                "data.test_file at the task-1 files)."
                if task2
                else "task=cxr40 (task 1) or task=cxr26 (task 2)."
            )
        )
    cols = [find_column(header, (n,)) for n in labels]
    y = parse_binary(path, header, rows, cols)
    reject_duplicate_rows(path, header, path_col, lines, y, None, rows)
    refs = [r[path_col] for r in rows]
    pcol = find_column(header, _PATIENT_COLUMNS)
    if pcol is not None:
        patients = [r[pcol] for r in rows]
    else:  # MIMIC-CXR-JPG paths name the patient: files/p10/p10000032/...
        patients = [
            (re.search(r"(?:^|/)(p\d+)/s\d+/", p) or re.search(r"(.*)", p)).group(1) for p in refs
        ]
    return SplitIndex(list(refs), list(refs), y, patients, source=str(path))


def cxr_lt_2024(
    task: str | Sequence[str] = "cxr40",
    *,
    image_dir: str | os.PathLike | None = None,
    label_dir: str | os.PathLike | None = None,
    train_file: str = "train_labeled.csv",
    val_file: str | None = "development_labeled_task1.csv",
    test_file: str | None = "test_labeled_task1.csv",
    on_missing: str = "error",
    external_image_dir: str | os.PathLike | None = None,
    external_label_dir: str | os.PathLike | None = None,
    **loader: Any,
) -> DataModule:
    """CXR-LT 2024: MIMIC-CXR-JPG images with the challenge's label files, one file per split.

    The challenge trains on `train_labeled.csv`, selects models on the development set and scores
    on the test set, so: train_file -> train, val_file -> val, test_file -> test. Task 1 (40
    labels, task=cxr40) uses `development_labeled_task1.csv` / `test_labeled_task1.csv`; task 2
    (26 gold-standard labels, task=cxr26) uses `development_labeled_task2.csv` /
    `test_labeled_task2.csv` (406 hand-labelled images). All views are kept, as the challenge
    scores them. Extra columns are ignored; labels match their columns by spelling-insensitive
    name (the files' `Pleural Effusion` is our `Effusion`).

    Args:
        task: label-set name (cxr40, cxr26, or any subset's label names).
        image_dir: MIMIC-CXR-JPG root (holding `files/p10/...`); `fpath` is relative to it.
        label_dir: folder of the label files (the challenge's `cxr-lt-2024/`).
        train_file: train split's file name in `label_dir` (or a path).
        val_file: val split's file (None: no val split).
        test_file: test split's file (None: no test split).
        on_missing: "error" or "skip" for images listed but absent.
        external_image_dir: another external test set's images (optional).
        external_label_dir: its labels (MIMIC-CXR-LT layout).
        **loader: the DataModule's loader settings (`qcxr.data.common.LOADER_SETTINGS`).

    Returns:
        A DataModule with train (and val, test, external where configured).

    Raises:
        DataError: an unset location, a missing file, a file without `fpath` or without some of
            the task's label columns (naming the file, the columns and the fix), values other
            than 0/1, duplicated images, missing images (with on_missing="error").
    """
    labels = resolve_labels(task)
    image_dir = require(image_dir, "image_dir", "MIMIC_CXR_LT_IMAGES", "cxr_lt_2024")
    label_dir = require(label_dir, "label_dir", "CXR_LT_2024_LABELS", "cxr_lt_2024")
    root = Path(label_dir)
    if not root.is_dir():
        raise DataError(
            f"CXR-LT 2024 label folder {root} does not exist; fix: set data.label_dir "
            "(CXR_LT_2024_LABELS) to the challenge's cxr-lt-2024/ folder"
        )
    wanted = {"train": train_file, "val": val_file, "test": test_file}
    files = {s: root / str(f) for s, f in wanted.items() if f is not None}
    absent = [f"{s}: {p}" for s, p in files.items() if not p.is_file()]
    if absent:
        raise DataError(
            f"CXR-LT 2024 label file(s) missing: {'; '.join(absent)}. Fix: point data.label_dir "
            "at the folder holding them, or set data.train_file / data.val_file / "
            "data.test_file to the files' names (null drops a split)."
        )
    splits = {s: _read_split(p, labels, s) for s, p in files.items()}
    images = index_images(image_dir)
    splits = {s: resolve_images(s, ix, images, image_dir, on_missing) for s, ix in splits.items()}
    for s, ix in splits.items():
        log.info("CXR-LT 2024 %s: %d images from %s", s, len(ix), files[s].name)
    return build_module(
        "cxr_lt_2024",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **check_loader("cxr_lt_2024", loader),
    )
