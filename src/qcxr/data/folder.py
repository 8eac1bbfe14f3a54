"""Any folder of images + a label CSV as a DataModule."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qcxr.data.common import (
    IMAGE_COLUMNS,
    PATIENT_COLUMNS,
    check_loader,
    label_columns,
    reject_duplicate_rows,
    require,
)
from qcxr.data.index import (
    SPLITS,
    DataError,
    SplitIndex,
    find_column,
    index_images,
    parse_binary,
    patient_split,
    read_csv_lines,
    resolve_images,
)
from qcxr.data.labels import resolve_labels
from qcxr.data.mimic import build_module
from qcxr.data.module import DataModule

log = logging.getLogger(__name__)


def folder_csv(
    task: str | Sequence[str] | None = None,
    *,
    image_dir: str | os.PathLike | None = None,
    label_dir: str | os.PathLike | None = None,
    on_missing: str = "error",
    image_column: str | None = None,
    patient_column: str | None = None,
    split_column: str | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    split_seed: int = 0,
    external_image_dir: str | os.PathLike | None = None,
    external_label_dir: str | os.PathLike | None = None,
    **loader: Any,
) -> DataModule:
    """Any image folder plus a CSV with an image column and 0/1 label columns (bring your data).

    The CSV (`label_dir` is the file, or a folder holding exactly one `.csv`) has an image column
    (`Image Index`, `id`, `image`, `path`, ...), optionally a patient column (`Patient ID`, ...)
    and a `split` column (train/val/test); without one, images are split by patient (each image
    its own patient when there is no patient column), stratified so rare labels reach every split.

    Args:
        task: label-set name, label names, or None for every other column of the CSV.
        image_dir: the image folder (nested folders allowed).
        label_dir: the CSV, or a folder holding exactly one CSV.
        on_missing: "error" or "skip".
        image_column: image column name (default: detected).
        patient_column: patient column name (default: detected, else none).
        split_column: split column name (default: `split` if present).
        fractions: train/val/test fractions of the patient-wise split.
        split_seed: seed of the patient-wise split.
        external_image_dir: MIMIC-CXR-JPG root for an external test split (optional).
        external_label_dir: MIMIC-CXR-LT label folder (optional).
        **loader: the DataModule's loader settings (see `LOADER_SETTINGS`).

    Returns:
        A DataModule with train, val, test (and external).
    """
    image_dir = require(image_dir, "image_dir", "QCXR_IMAGES", "folder_csv")
    label_dir = require(label_dir, "label_dir", "QCXR_LABELS", "folder_csv")
    path = Path(label_dir)
    if path.is_dir():
        csvs = sorted(path.glob("*.csv"))
        if len(csvs) != 1:
            raise DataError(
                f"{path} holds {len(csvs)} CSV files; fix: set data.label_dir to the label CSV "
                "itself"
            )
        path = csvs[0]
    header, rows, lines = read_csv_lines(path)
    image_col = find_column(header, (image_column,) if image_column else IMAGE_COLUMNS)
    if image_col is None:
        raise DataError(
            f"label file {path} has no image column ({image_column or ', '.join(IMAGE_COLUMNS)}); "
            f"its header is {', '.join(header)}. Fix: set data.image_column."
        )
    patient_col = find_column(header, (patient_column,) if patient_column else PATIENT_COLUMNS)
    if patient_column and patient_col is None:
        raise DataError(f"label file {path} has no patient column {patient_column!r}")
    split_col = find_column(header, (split_column or "split",))
    if task is None:
        used = {image_col, patient_col, split_col}
        labels = tuple(h for i, h in enumerate(header) if i not in used)
        labels = resolve_labels(labels)
    else:
        labels = resolve_labels(task)
    label_cols = label_columns(path, header, labels)
    y = parse_binary(path, header, rows, label_cols)
    names = [r[image_col] for r in rows]
    reject_duplicate_rows(path, header, image_col, lines, y, split_col, rows)
    if patient_col is None:
        log.warning(
            "%s has no patient column: splitting by image (each image its own patient)", path
        )
        patients = list(names)
    else:
        patients = [r[patient_col] for r in rows]
    full = SplitIndex(names, list(names), y, patients, source=str(path))
    if split_col is not None:
        split_of = np.array([r[split_col].strip().lower() for r in rows])
        bad = sorted(str(x) for x in set(split_of.tolist()) - set(SPLITS))
        if bad:
            count = int((~np.isin(split_of, SPLITS)).sum())
            raise DataError(
                f"{path}: column {header[split_col]!r} has values {bad} in {count} row(s); "
                f"fix: use only {', '.join(SPLITS)}"
            )
        splits = {s: full.take(split_of == s) for s in SPLITS}
    else:
        part = patient_split(patients, y, fractions, split_seed)
        splits = {s: full.take(part == k) for k, s in enumerate(SPLITS)}
    files = index_images(image_dir)
    splits = {s: resolve_images(s, ix, files, image_dir, on_missing) for s, ix in splits.items()}
    return build_module(
        "folder_csv",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **check_loader("folder_csv", loader),
    )
