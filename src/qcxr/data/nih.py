"""NIH-CXR-LT (and the NIH ChestX-ray14 Data_Entry file) as a DataModule."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qcxr.data.common import (
    check_loader,
    label_columns,
    require,
)
from qcxr.data.index import (
    SPLITS,
    DataError,
    SplitIndex,
    index_images,
    parse_binary,
    patient_split,
    read_csv,
    require_columns,
    resolve_images,
)
from qcxr.data.labels import CXR14, label_key, resolve_labels
from qcxr.data.mimic import build_module
from qcxr.data.module import DataModule

log = logging.getLogger(__name__)


def _nih_lt_split(path: Path, labels) -> SplitIndex:
    header, rows = read_csv(path)
    cols = require_columns(path, header, {"image": ("id",), "patient": ("subj_id",)})
    label_cols = label_columns(path, header, labels)
    return SplitIndex(
        ids=[r[cols["image"]] for r in rows],
        refs=[r[cols["image"]] for r in rows],
        labels=parse_binary(path, header, rows, label_cols),
        patients=[r[cols["patient"]] for r in rows],
        source=str(path),
    )


def _nih_data_entry(path: Path, labels, split_seed: int) -> dict[str, SplitIndex]:
    extra = [n for n in labels if n not in CXR14]
    if extra:
        raise DataError(
            f"{path} (the original NIH layout) has only the 14 ChestX-ray14 labels; the task also "
            f"needs {extra}. Fix: use the NIH-CXR-LT label files (miccai2023_nih-cxr-lt_labels_"
            "{train,val,test}.csv) for CXR-19, or task=cxr8 / cxr14."
        )
    header, rows = read_csv(path)
    cols = require_columns(
        path,
        header,
        {
            "Image Index": ("Image Index",),
            "Finding Labels": ("Finding Labels",),
            "Patient ID": ("Patient ID",),
        },
    )
    keys = [label_key(n) for n in labels]
    found = [{label_key(f) for f in r[cols["Finding Labels"]].split("|")} for r in rows]
    y = np.array([[k in f for k in keys] for f in found], bool).reshape(len(rows), len(keys))
    names = [r[cols["Image Index"]] for r in rows]
    patients = [r[cols["Patient ID"]] for r in rows]
    full = SplitIndex(names, list(names), y, patients, source=str(path))
    test_list = path.parent / "test_list.txt"
    if test_list.is_file():
        official = set(test_list.read_text().split())
        is_test = np.array([n in official for n in names])
        trainval = full.take(~is_test)
        part = patient_split(trainval.patients, trainval.labels, (7 / 8, 1 / 8), split_seed)
        out = {
            "train": trainval.take(part == 0),
            "val": trainval.take(part == 1),
            "test": full.take(is_test),
        }
        log.info("NIH: official test list %s; train/val split by patient", test_list)
    else:
        part = patient_split(patients, y, (0.7, 0.1, 0.2), split_seed)
        out = {s: full.take(part == k) for k, s in enumerate(SPLITS)}
        log.info("NIH: no test_list.txt beside %s: 70/10/20 split by patient", path)
    return out


def nih_cxr_lt(
    task: str | Sequence[str] = "cxr19",
    *,
    image_dir: str | os.PathLike | None = None,
    label_dir: str | os.PathLike | None = None,
    on_missing: str = "error",
    split_seed: int = 0,
    external_image_dir: str | os.PathLike | None = None,
    external_label_dir: str | os.PathLike | None = None,
    **loader: Any,
) -> DataModule:
    """NIH-CXR-LT: NIH's image folder plus the NIH-CXR-LT label files as released.

    `label_dir` holds `miccai2023_nih-cxr-lt_labels_{train,val,test}.csv` (header `id, <19
    labels>, No Finding, subj_id`), or else the original `Data_Entry_2017.csv` (`Image Index`,
    `Finding Labels` joined by `|`, `Patient ID`; CXR-8/14 only), split by patient (with NIH's
    `test_list.txt` as the test split when it lies beside it).

    Args:
        task: label-set name (cxr8, cxr14, cxr19) or label names.
        image_dir: NIH `images/` (nested folders such as `images_001/images/` allowed).
        label_dir: folder of the label files (or the Data_Entry CSV itself).
        on_missing: "error" or "skip" for images listed but absent.
        split_seed: seed of the patient-wise split (Data_Entry layout only).
        external_image_dir: MIMIC-CXR-JPG root for the external test split (optional).
        external_label_dir: folder of the MIMIC-CXR-LT label files (optional).
        **loader: the DataModule's loader settings (see `LOADER_SETTINGS`).

    Returns:
        A DataModule with train, val, test (and external).
    """
    labels = resolve_labels(task)
    image_dir = require(image_dir, "image_dir", "NIH_CXR_LT_IMAGES", "nih_cxr_lt")
    label_dir = require(label_dir, "label_dir", "NIH_CXR_LT_LABELS", "nih_cxr_lt")
    root = Path(label_dir)
    lt_files = {}
    if root.is_dir():
        for s in SPLITS:
            hits = sorted(root.rglob(f"*nih-cxr-lt_labels_{s}.csv"))
            if hits:
                lt_files[s] = hits[0]
    if len(lt_files) == 3:
        splits = {s: _nih_lt_split(p, labels) for s, p in lt_files.items()}
    else:
        entry = (
            root if root.is_file() else next(iter(sorted(root.rglob("Data_Entry_2017*.csv"))), None)
        )
        if entry is None:
            have = ", ".join(str(p) for p in lt_files.values()) or "none"
            raise DataError(
                f"no NIH label files under {root}: expected miccai2023_nih-cxr-lt_labels_"
                f"{{train,val,test}}.csv (found: {have}) or Data_Entry_2017.csv. Fix: point "
                "data.label_dir (NIH_CXR_LT_LABELS) at the folder of the files as released."
            )
        splits = _nih_data_entry(entry, labels, split_seed)
    files = index_images(image_dir)
    splits = {s: resolve_images(s, ix, files, image_dir, on_missing) for s, ix in splits.items()}
    return build_module(
        "nih_cxr_lt",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **check_loader("nih_cxr_lt", loader),
    )
