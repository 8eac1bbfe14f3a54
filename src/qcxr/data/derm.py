"""Dermoscopy sources: HAM10000 and ISIC 2017 (Part 3) in their official layouts, multiclass.

Both return a `DataModule` with one-hot labels (one class per image) and take the loader
settings unchanged, like every source (`qcxr.data.common.LOADER_SETTINGS`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qcxr.data.common import check_loader, require
from qcxr.data.index import (
    SPLITS,
    DataError,
    SplitIndex,
    _listing,
    patient_split,
    read_csv_lines,
    require_columns,
)
from qcxr.data.labels import HAM10000, ISIC2017, resolve_labels
from qcxr.data.mimic import build_module
from qcxr.data.module import DataModule

log = logging.getLogger(__name__)

HAM10000_METADATA = "HAM10000_metadata.csv"
HAM10000_IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2")


def _multiclass_loader(source: str, task, classes: tuple[str, ...], loader: dict) -> dict:
    """Check the task is the dataset's class list and the kind is multiclass."""
    if tuple(resolve_labels(task)) != classes:
        raise DataError(
            f"data source {source!r} has the classes {list(classes)}; task {task!r} asks for "
            f"{list(resolve_labels(task))}. Fix: task={source}."
        )
    loader = check_loader(source, loader)
    if loader.setdefault("kind", "multiclass") != "multiclass":
        raise DataError(
            f"{source} is a multiclass dataset (one diagnosis per image), but the task's kind is "
            f"{loader['kind']!r}. Fix: task={source} (kind: multiclass)."
        )
    return loader


def _rows_problem(path: Path, what: str, items: list[str], fix: str) -> DataError:
    return DataError(f"{path}: {len(items)} {what}:{_listing(items)}\nFix: {fix}")


def ham10000(
    task: str | Sequence[str] = "ham10000",
    *,
    root: str | os.PathLike | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    split_seed: int = 0,
    on_missing: str = "error",
    external_image_dir: str | os.PathLike | None = None,
    external_label_dir: str | os.PathLike | None = None,
    **loader: Any,
) -> DataModule:
    """HAM10000 (Tschandl et al. 2018) as released: 7 diagnoses, split by lesion, never by image.

    `root` holds `HAM10000_metadata.csv` (`lesion_id,image_id,dx,dx_type,age,sex,localization`)
    and `HAM10000_images_part_1/`, `HAM10000_images_part_2/` with `<image_id>.jpg`. One lesion
    can have several images, so whole lesions go to train, val or test (stratified by `dx`, so
    every class reaches every split where it has enough lesions); splitting by image would leak.

    Args:
        task: the class list; must be `ham10000` (akiec, bcc, bkl, df, mel, nv, vasc).
        root: the dataset folder.
        fractions: train/val/test fractions of the lesion-wise split.
        split_seed: seed of that split.
        on_missing: "error" (default) or "skip" for metadata rows whose image is absent.
        external_image_dir: MIMIC-CXR-JPG root for an external split (rarely useful here).
        external_label_dir: its labels.
        **loader: the DataModule's loader settings (`qcxr.data.common.LOADER_SETTINGS`).

    Returns:
        A DataModule with train, val and test; labels one-hot bool[N, 7].

    Raises:
        DataError: a missing metadata file or image folder, a row with an unknown `dx`, a
            duplicate `image_id`, or (on_missing="error") a missing image, each naming the rows.
    """
    root = Path(require(root, "root", "HAM10000_ROOT", "ham10000"))
    loader = _multiclass_loader("ham10000", task, HAM10000, loader)
    meta = root / HAM10000_METADATA
    if not meta.is_file():
        raise DataError(
            f"no {HAM10000_METADATA} in {root}; fix: point data.root (HAM10000_ROOT) at the "
            f"folder holding it and {', '.join(HAM10000_IMAGE_DIRS)}/ as released"
        )
    folders = [root / d for d in HAM10000_IMAGE_DIRS if (root / d).is_dir()]
    if not folders:
        raise DataError(
            f"no image folder {' or '.join(HAM10000_IMAGE_DIRS)} in {root}; fix: unpack the "
            "release's image archives there"
        )
    files = {p.stem: p for f in folders for p in f.iterdir() if p.suffix.lower() == ".jpg"}
    header, rows, lines = read_csv_lines(meta)
    cols = require_columns(
        meta, header, {"lesion_id": ("lesion_id",), "image_id": ("image_id",), "dx": ("dx",)}
    )
    dx = [r[cols["dx"]].strip().lower() for r in rows]
    unknown = [f"line {ln}: dx {d!r}" for ln, d in zip(lines, dx, strict=True) if d not in HAM10000]
    if unknown:
        raise _rows_problem(
            meta,
            f"row(s) with an unknown dx (known: {', '.join(HAM10000)})",
            unknown,
            "correct or remove these rows",
        )
    image_ids = [r[cols["image_id"]].strip() for r in rows]
    seen: dict[str, list[int]] = {}
    for ln, i in zip(lines, image_ids, strict=True):
        seen.setdefault(i, []).append(ln)
    dups = [f"{i}: lines {', '.join(map(str, ls))}" for i, ls in seen.items() if len(ls) > 1]
    if dups:
        raise _rows_problem(
            meta,
            "image_id(s) listed more than once",
            dups,
            "keep one row per image (a duplicate weighs an image twice or leaks it across splits)",
        )
    present = np.array([i in files for i in image_ids])
    if not present.all():
        missing = [
            f"line {ln}: {i}.jpg"
            for ln, i, ok in zip(lines, image_ids, present, strict=True)
            if not ok
        ]
        if on_missing != "skip":
            raise _rows_problem(
                meta,
                f"image(s) listed but absent from {', '.join(map(str, folders))}",
                missing,
                "restore the images, or set data.on_missing=skip to drop these rows",
            )
        log.warning(
            "ham10000: %d listed images are absent; skipped (data.on_missing=skip)", len(missing)
        )
    keep = np.flatnonzero(present)
    onehot = np.array(dx)[:, None] == np.array(HAM10000)[None, :]
    lesions = [rows[i][cols["lesion_id"]].strip() for i in keep]
    full = SplitIndex(
        [image_ids[i] for i in keep],
        [str(files[image_ids[i]]) for i in keep],
        onehot[keep],
        lesions,
        source=str(meta),
    )
    part = patient_split(full.patients, full.labels, fractions, split_seed)
    splits = {s: full.take(part == k) for k, s in enumerate(SPLITS)}
    log.info(
        "ham10000: %s images, split by lesion_id (%d lesions)",
        ", ".join(f"{s} {len(ix)}" for s, ix in splits.items()),
        len(set(lesions)),
    )
    return build_module(
        "ham10000",
        splits,
        HAM10000,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **loader,
    )


# ISIC 2017 Part 3 (lesion classification): official folder and ground-truth names per split;
# the test set was re-released as "Test_v2", and both spellings are accepted.
ISIC2017_PARTS = {"train": ("Training",), "val": ("Validation",), "test": ("Test_v2", "Test")}


def _isic_split(root: Path, split: str, on_missing: str) -> SplitIndex:
    for part in ISIC2017_PARTS[split]:
        gt = root / f"ISIC-2017_{part}_Part3_GroundTruth.csv"
        folder = root / f"ISIC-2017_{part}_Data"
        if gt.is_file():
            break
    else:
        names = " or ".join(f"ISIC-2017_{p}_Part3_GroundTruth.csv" for p in ISIC2017_PARTS[split])
        raise DataError(
            f"no {names} in {root} (the {split} split); fix: point data.root (ISIC2017_ROOT) at "
            "the folder holding the official ISIC-2017_*_Data/ folders and Part 3 ground truth"
        )
    if not folder.is_dir():
        raise DataError(f"{gt} has no image folder {folder.name}/ beside it; fix: unpack it there")
    header, rows, lines = read_csv_lines(gt)
    cols = require_columns(
        gt,
        header,
        {
            "image_id": ("image_id",),
            "melanoma": ("melanoma",),
            "seborrheic_keratosis": ("seborrheic_keratosis",),
        },
    )
    bad, y = [], np.zeros((len(rows), 2), bool)
    for i, (row, ln) in enumerate(zip(rows, lines, strict=True)):
        for j, name in enumerate(("melanoma", "seborrheic_keratosis")):
            text = row[cols[name]].strip()
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if value not in (0.0, 1.0):
                bad.append(f"line {ln}: {name} = {text!r} (expected 0 or 1)")
            y[i, j] = value == 1.0
        if y[i].all():
            bad.append(f"line {ln}: both melanoma and seborrheic_keratosis are 1 (one class each)")
    if bad:
        raise _rows_problem(gt, "invalid ground-truth row(s)", bad, "correct these rows")
    # nevus is the third class: neither melanoma nor seborrheic keratosis (the challenge's rule).
    onehot = np.concatenate([y, ~y.any(axis=1, keepdims=True)], axis=1)
    ids = [r[cols["image_id"]].strip() for r in rows]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise _rows_problem(gt, "image_id(s) listed more than once", dups, "keep one row each")
    files = {
        p.stem: p
        for p in folder.iterdir()
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.stem.endswith("_superpixels")
    }
    present = np.array([i in files for i in ids], bool)
    if not present.all():
        missing = [
            f"line {ln}: {i}" for ln, i, ok in zip(lines, ids, present, strict=True) if not ok
        ]
        if on_missing != "skip":
            raise _rows_problem(
                gt,
                f"image(s) listed but absent from {folder}",
                missing,
                "restore the images, or set data.on_missing=skip",
            )
        log.warning("isic2017 %s: %d listed images are absent; skipped", split, len(missing))
    keep = np.flatnonzero(present)
    return SplitIndex(
        [ids[i] for i in keep],
        [str(files[ids[i]]) for i in keep],
        onehot[keep],
        [ids[i] for i in keep],
        source=str(gt),
    )


def isic2017(
    task: str | Sequence[str] = "isic2017",
    *,
    root: str | os.PathLike | None = None,
    on_missing: str = "error",
    external_image_dir: str | os.PathLike | None = None,
    external_label_dir: str | os.PathLike | None = None,
    **loader: Any,
) -> DataModule:
    """ISIC 2017 Part 3 as released: melanoma, seborrheic keratosis, nevus; the official splits.

    `root` holds `ISIC-2017_{Training,Validation,Test_v2}_Data/` (`<image_id>.jpg`; the
    `_superpixels.png` files are ignored) and `ISIC-2017_{...}_Part3_GroundTruth.csv`
    (`image_id,melanoma,seborrheic_keratosis`, 0/1 or 0.0/1.0). Nevus is neither, as the
    challenge defines it. ISIC 2017 has no patient ids, so each image is its own "patient".

    Args:
        task: the class list; must be `isic2017`.
        root: the dataset folder.
        on_missing: "error" (default) or "skip" for listed images that are absent.
        external_image_dir: MIMIC-CXR-JPG root for an external split (rarely useful here).
        external_label_dir: its labels.
        **loader: the DataModule's loader settings (`qcxr.data.common.LOADER_SETTINGS`).

    Returns:
        A DataModule with train, val and test; labels one-hot bool[N, 3].

    Raises:
        DataError: a missing ground-truth file or image folder, a value other than 0/1, a row
            with both classes, a duplicate image_id or (on_missing="error") a missing image.
    """
    root = Path(require(root, "root", "ISIC2017_ROOT", "isic2017"))
    loader = _multiclass_loader("isic2017", task, ISIC2017, loader)
    splits = {s: _isic_split(root, s, on_missing) for s in SPLITS}
    return build_module(
        "isic2017",
        splits,
        ISIC2017,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **loader,
    )


__all__ = ["HAM10000_METADATA", "ISIC2017_PARTS", "ham10000", "isic2017"]
