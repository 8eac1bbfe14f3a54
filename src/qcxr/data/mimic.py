"""MIMIC-CXR-LT (its test split is every source's optional `external` split: `build_module`)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qcxr.data.common import (
    FRONTAL_VIEWS,
    VIEW_COLUMNS,
    check_loader,
    find_label_file,
    label_columns,
    reject_shared_files,
    require,
)
from qcxr.data.index import (
    SPLITS,
    DataError,
    SplitIndex,
    find_column,
    index_images,
    parse_binary,
    read_csv,
    require_columns,
    resolve_images,
)
from qcxr.data.labels import resolve_labels
from qcxr.data.module import DataModule, FileImages

log = logging.getLogger(__name__)


def _read_views(metadata_file: Path) -> dict[str, str]:
    header, rows = read_csv(metadata_file)
    cols = require_columns(
        metadata_file, header, {"dicom_id": ("dicom_id",), "ViewPosition": VIEW_COLUMNS}
    )
    return {r[cols["dicom_id"]]: r[cols["ViewPosition"]] for r in rows}


def _is_frontal(view: str) -> bool:
    v = view.strip().upper()
    return any(v == f or v.startswith(f + " ") for f in FRONTAL_VIEWS)


def mimic_split(
    split, path, image_dir, label_dir, labels, on_missing, *, frontal_only, metadata_file
) -> SplitIndex:
    header, rows = read_csv(path)
    cols = require_columns(path, header, {"image": ("path", "fpath")})
    label_cols = label_columns(path, header, labels)
    refs = [r[cols["image"]] for r in rows]
    pcol = find_column(header, ("subject_id",))
    if pcol is not None:
        patients = [r[pcol] for r in rows]
    else:
        patients = [
            (re.search(r"/(p\d+)/", "/" + p) or re.search(r"(.*)", p)).group(1) for p in refs
        ]
    index = SplitIndex(
        list(refs),
        list(refs),
        parse_binary(path, header, rows, label_cols),
        patients,
        source=str(path),
    )
    if frontal_only:
        vcol = find_column(header, VIEW_COLUMNS)
        if vcol is not None:
            views = [r[vcol] for r in rows]
        else:
            meta = Path(metadata_file) if metadata_file else None
            if meta is None:
                for folder in (Path(label_dir), Path(image_dir)):
                    folder = folder if folder.is_dir() else folder.parent
                    hits = sorted(folder.glob("mimic-cxr-2.0.0-metadata.csv*"))
                    if hits:
                        meta = hits[0]
                        break
            if meta is None:
                raise DataError(
                    f"{path} has no view column ({', '.join(VIEW_COLUMNS)}) and no "
                    "mimic-cxr-2.0.0-metadata.csv(.gz) lies in the label or image folder, so "
                    "lateral views cannot be dropped. Fix: copy MIMIC-CXR-JPG's "
                    "mimic-cxr-2.0.0-metadata.csv.gz into the label folder, or set "
                    "data.frontal_only=false."
                )
            dcol = find_column(header, ("dicom_id",))
            view_of = _read_views(meta)
            dicoms = [
                r[dcol] if dcol is not None else Path(p).stem
                for r, p in zip(rows, refs, strict=True)
            ]
            views = [view_of.get(d, "") for d in dicoms]
        keep = np.array([_is_frontal(v) for v in views], bool)
        log.info(
            "MIMIC %s: kept %d frontal of %d images (lateral and other views dropped)",
            split,
            int(keep.sum()),
            len(keep),
        )
        index = index.take(keep)
    return resolve_images(split, index, index_images(image_dir), image_dir, on_missing)


def mimic_cxr_lt(
    task: str | Sequence[str] = "cxr19",
    *,
    image_dir: str | os.PathLike | None = None,
    label_dir: str | os.PathLike | None = None,
    on_missing: str = "error",
    frontal_only: bool = True,
    metadata_file: str | os.PathLike | None = None,
    external_image_dir: str | os.PathLike | None = None,
    external_label_dir: str | os.PathLike | None = None,
    **loader: Any,
) -> DataModule:
    """MIMIC-CXR-LT: MIMIC-CXR-JPG folders plus the CXR-LT MIMIC label files, frontal views only.

    `label_dir` holds `*mimic-cxr-lt_labels_{train,val,test}.csv` (a `path` column relative to
    the MIMIC-CXR-JPG root, labels spelled as MIMIC, e.g. `Pleural Effusion`); whichever splits
    exist are read. Lateral views are dropped (paper, section IV-B) using a view column when the
    file has one, else MIMIC-CXR-JPG's `mimic-cxr-2.0.0-metadata.csv.gz` found beside the labels
    or images (or `metadata_file`). As an external test set beside another source, use that
    source's `external_image_dir` / `external_label_dir` instead.

    Args:
        task: label-set name or label names.
        image_dir: MIMIC-CXR-JPG root (holding `files/p10/...`).
        label_dir: folder of the label files (or one label file, read as the test split).
        on_missing: "error" or "skip".
        frontal_only: drop lateral (non PA/AP) views.
        metadata_file: MIMIC-CXR-JPG metadata CSV, if not beside the labels or images.
        external_image_dir: another external set's images (rarely useful here).
        external_label_dir: its labels.
        **loader: the DataModule's loader settings (see `LOADER_SETTINGS`).

    Returns:
        A DataModule with the splits found.
    """
    labels = resolve_labels(task)
    image_dir = require(image_dir, "image_dir", "MIMIC_CXR_LT_IMAGES", "mimic_cxr_lt")
    label_dir = require(label_dir, "label_dir", "MIMIC_CXR_LT_LABELS", "mimic_cxr_lt")
    root = Path(label_dir)
    if root.is_file():
        files = {"test": root}
    elif root.is_dir():
        files = {}
        for s in SPLITS:
            hits = sorted(root.rglob(f"*mimic-cxr-lt_labels_{s}.csv"))
            if hits:
                files[s] = hits[0]
    else:
        raise DataError(f"label folder {root} does not exist; check data.label_dir")
    if not files:
        raise DataError(f"no *mimic-cxr-lt_labels_{{train,val,test}}.csv under {root}")
    splits = {
        s: mimic_split(
            s,
            p,
            image_dir,
            label_dir,
            labels,
            on_missing,
            frontal_only=frontal_only,
            metadata_file=metadata_file,
        )
        for s, p in files.items()
    }
    return build_module(
        "mimic_cxr_lt",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **check_loader("mimic_cxr_lt", loader),
    )


def build_module(name, splits, labels, *, external_image_dir, external_label_dir, on_missing, **kw):
    """Attach the external split, turn refs into image stores, build the DataModule."""
    splits = dict(splits)
    if (external_image_dir is None) != (external_label_dir is None):
        raise DataError(
            "an external test set needs both data.external_image_dir and "
            "data.external_label_dir (MIMIC_CXR_LT_IMAGES and MIMIC_CXR_LT_LABELS); one is unset"
        )
    if external_image_dir is not None:
        test_file = find_label_file(external_label_dir, "*mimic-cxr-lt_labels_test.csv", "test")
        splits["external"] = mimic_split(
            "external",
            test_file,
            external_image_dir,
            external_label_dir,
            labels,
            on_missing,
            frontal_only=True,
            metadata_file=None,
        )
    stores = {}
    for s, index in splits.items():
        store = index.extra.get("store") or FileImages(index.refs)
        stores[s] = (index, store)
    reject_shared_files(stores)
    return DataModule(stores, labels, name=name, **kw)
