"""Dataset sources: NIH-CXR-LT, MIMIC-CXR-LT, MedMNIST and any folder + CSV, as `DataModule`s.

Each factory reads the labels as released, checks them (columns, 0/1 values, missing images,
empty splits, labels without positives) before anything is preprocessed, and returns a
`DataModule`. Every factory can add MIMIC-CXR-LT's test split as the `external` split
(`external_image_dir`, `external_label_dir`), the paper's external test set (section IV-B).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qcxr.data.index import (
    SPLITS,
    DataError,
    SplitIndex,
    _listing,
    find_column,
    index_images,
    parse_binary,
    patient_split,
    read_csv,
    read_csv_lines,
    require_columns,
    resolve_images,
)
from qcxr.data.labels import CXR14, LABEL_SETS, MEDMNIST_CLASSES, label_key, resolve_labels
from qcxr.data.module import ArrayImages, DataModule, FileImages

log = logging.getLogger(__name__)

_IMAGE_COLUMNS = ("Image Index", "id", "image", "path", "fpath", "file", "filename", "image_path")
_PATIENT_COLUMNS = ("Patient ID", "subj_id", "subject_id", "patient_id", "patient")
_VIEW_COLUMNS = ("ViewPosition", "view", "view_position", "View Position")
_FRONTAL_VIEWS = ("PA", "AP")  # MIMIC-CXR ViewPosition; AP/PA variants (e.g. "AP AXIAL") too


def _require(value, key: str, env: str, source: str):
    if value is None or str(value).strip() in ("", "???"):
        raise DataError(
            f"data source {source!r} needs {key}: pass data.{key}=... on the command line or set "
            f"the environment variable {env} (see docs/data.md)"
        )
    return value


def _module(name, splits, labels, *, external_image_dir, external_label_dir, on_missing, **kw):
    """Attach the external split, turn refs into image stores, build the DataModule."""
    splits = dict(splits)
    if (external_image_dir is None) != (external_label_dir is None):
        raise DataError(
            "an external test set needs both data.external_image_dir and "
            "data.external_label_dir (MIMIC_CXR_LT_IMAGES and MIMIC_CXR_LT_LABELS); one is unset"
        )
    if external_image_dir is not None:
        test_file = _find_label_file(external_label_dir, "*mimic-cxr-lt_labels_test.csv", "test")
        splits["external"] = _mimic_split(
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
    _reject_shared_files(stores)
    return DataModule(stores, labels, name=name, **kw)


def _reject_shared_files(stores) -> None:
    """Fail when one image file is listed twice (in one split or across splits): a duplicate
    weighs an image twice, and one in train and test leaks test data into training."""
    seen: dict[str, list[str]] = {}
    for s, (index, store) in stores.items():
        if not isinstance(store, FileImages):
            continue
        for image_id, path in zip(index.ids, store.paths, strict=True):
            seen.setdefault(os.path.realpath(path), []).append(f"{s} {image_id!r}")
    shared = [f"{path}: {', '.join(uses)}" for path, uses in seen.items() if len(uses) > 1]
    if shared:
        raise DataError(
            f"{len(shared)} image file(s) are listed more than once:{_listing(shared)}\n"
            "Fix: keep one row per image in the label files (an image in two splits leaks "
            "test data into training)."
        )


def _find_label_file(label_dir, pattern: str, what: str) -> Path:
    root = Path(label_dir)
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataError(f"label folder {root} does not exist; check data.label_dir")
    hits = sorted(root.rglob(pattern))
    if not hits:
        raise DataError(
            f"no {what} label file matching {pattern!r} under {root}; fix: point the label "
            "folder at the files as released (see docs/data.md)"
        )
    return hits[0]


def _label_columns(path, header, labels: Sequence[str]) -> list[int]:
    cols = require_columns(path, header, {n: (n,) for n in labels})
    return [cols[n] for n in labels]


# How batches are made, passed to `DataModule` unchanged: a source only says which images,
# labels and splits exist; the loader settings (and the backbone's preprocessing) are the same
# for every source.
LOADER_SETTINGS = (
    "batch_size",
    "seed",
    "preprocessing",
    "image_size",
    "resize_size",
    "cache_dir",
    "num_threads",
    "augment",
    "augment_on",
    "min_positives",
    "kind",
)


def _check_loader(source: str, loader: dict) -> dict:
    """Name a misspelt loader setting before anything is read."""
    unknown = sorted(set(loader) - set(LOADER_SETTINGS))
    if unknown:
        raise TypeError(
            f"data source {source!r} got unknown setting(s) {unknown}; its own settings are in its "
            f"docstring and the loader's are {list(LOADER_SETTINGS)}"
        )
    return {"batch_size": 32, "seed": 0, **loader}


# ---- NIH-CXR-LT --------------------------------------------------------------------------------
def _nih_lt_split(path: Path, labels) -> SplitIndex:
    header, rows = read_csv(path)
    cols = require_columns(path, header, {"image": ("id",), "patient": ("subj_id",)})
    label_cols = _label_columns(path, header, labels)
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
    image_dir = _require(image_dir, "image_dir", "NIH_CXR_LT_IMAGES", "nih_cxr_lt")
    label_dir = _require(label_dir, "label_dir", "NIH_CXR_LT_LABELS", "nih_cxr_lt")
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
    return _module(
        "nih_cxr_lt",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **_check_loader("nih_cxr_lt", loader),
    )


# ---- MIMIC-CXR-LT ------------------------------------------------------------------------------
def _read_views(metadata_file: Path) -> dict[str, str]:
    header, rows = read_csv(metadata_file)
    cols = require_columns(
        metadata_file, header, {"dicom_id": ("dicom_id",), "ViewPosition": _VIEW_COLUMNS}
    )
    return {r[cols["dicom_id"]]: r[cols["ViewPosition"]] for r in rows}


def _is_frontal(view: str) -> bool:
    v = view.strip().upper()
    return any(v == f or v.startswith(f + " ") for f in _FRONTAL_VIEWS)


def _mimic_split(
    split, path, image_dir, label_dir, labels, on_missing, *, frontal_only, metadata_file
) -> SplitIndex:
    header, rows = read_csv(path)
    cols = require_columns(path, header, {"image": ("path", "fpath")})
    label_cols = _label_columns(path, header, labels)
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
        vcol = find_column(header, _VIEW_COLUMNS)
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
                    f"{path} has no view column ({', '.join(_VIEW_COLUMNS)}) and no "
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
    image_dir = _require(image_dir, "image_dir", "MIMIC_CXR_LT_IMAGES", "mimic_cxr_lt")
    label_dir = _require(label_dir, "label_dir", "MIMIC_CXR_LT_LABELS", "mimic_cxr_lt")
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
        s: _mimic_split(
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
    return _module(
        "mimic_cxr_lt",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **_check_loader("mimic_cxr_lt", loader),
    )


# ---- folder + CSV ------------------------------------------------------------------------------
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
    image_dir = _require(image_dir, "image_dir", "QCXR_IMAGES", "folder_csv")
    label_dir = _require(label_dir, "label_dir", "QCXR_LABELS", "folder_csv")
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
    image_col = find_column(header, (image_column,) if image_column else _IMAGE_COLUMNS)
    if image_col is None:
        raise DataError(
            f"label file {path} has no image column ({image_column or ', '.join(_IMAGE_COLUMNS)}); "
            f"its header is {', '.join(header)}. Fix: set data.image_column."
        )
    patient_col = find_column(header, (patient_column,) if patient_column else _PATIENT_COLUMNS)
    if patient_column and patient_col is None:
        raise DataError(f"label file {path} has no patient column {patient_column!r}")
    split_col = find_column(header, (split_column or "split",))
    if task is None:
        used = {image_col, patient_col, split_col}
        labels = tuple(h for i, h in enumerate(header) if i not in used)
        labels = resolve_labels(labels)
    else:
        labels = resolve_labels(task)
    label_cols = _label_columns(path, header, labels)
    y = parse_binary(path, header, rows, label_cols)
    names = [r[image_col] for r in rows]
    _reject_duplicate_rows(path, header, image_col, lines, y, split_col, rows)
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
    return _module(
        "folder_csv",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **_check_loader("folder_csv", loader),
    )


def _reject_duplicate_rows(path, header, image_col, lines, labels, split_col, rows) -> None:
    """Fail naming every image listed on more than one line of a label file."""
    where: dict[str, list[int]] = {}
    for i, name in enumerate(r[image_col] for r in rows):
        where.setdefault(posixpath.normpath(name.strip().replace("\\", "/")), []).append(i)
    dups = {n: rows_ for n, rows_ in where.items() if len(rows_) > 1}
    if not dups:
        return
    parts = []
    for name, at in dups.items():
        splits = (
            f", splits {', '.join(rows[i][split_col].strip() for i in at)}"
            if split_col is not None
            else ""
        )
        differ = len({labels[i].tobytes() for i in at}) > 1
        parts.append(
            f"{name!r}: lines {', '.join(str(lines[i]) for i in at)}{splits}"
            + ("; labels differ" if differ else "")
        )
    raise DataError(
        f"label file {path} lists {len(dups)} image(s) (column {header[image_col]!r}) on more "
        f"than one line:{_listing(parts)}\nFix: keep one line per image (an image in two splits "
        "leaks test data into training; conflicting labels make the result depend on row order)."
    )


# ---- MedMNIST ----------------------------------------------------------------------------------
MEDMNIST_URL = "https://zenodo.org/records/10519652/files/{flavor}.npz?download=1"
# Names of MedMNIST v2 classes where the loader knows them (the npz itself has none).
_MEDMNIST_BINARY = {"pneumoniamnist": "Pneumonia", "breastmnist": "Malignant"}


def download_medmnist(flavor: str, directory: str | os.PathLike) -> Path:
    """Download a MedMNIST v2 npz (28 px) into a folder; only when the user asks for it.

    Args:
        flavor: e.g. "chestmnist", "pneumoniamnist".
        directory: target folder.

    Returns:
        The npz path.
    """
    target = Path(directory) / f"{flavor}.npz"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        log.info("downloading %s to %s", MEDMNIST_URL.format(flavor=flavor), target)
        urllib.request.urlretrieve(MEDMNIST_URL.format(flavor=flavor), tmp)  # noqa: S310
        tmp.replace(target)
    return target


def medmnist(
    task: str | Sequence[str] | None = None,
    *,
    npz: str | os.PathLike | None = None,
    flavor: str | None = None,
    download: bool = False,
    on_missing: str = "error",
    external_image_dir: str | os.PathLike | None = None,
    external_label_dir: str | os.PathLike | None = None,
    **loader: Any,
) -> DataModule:
    """A MedMNIST npz (`{train,val,test}_images`, `{train,val,test}_labels`), read with NumPy.

    `chestmnist` carries the 14 ChestX-ray14 labels in CXR-14 order and serves task cxr8/cxr14.
    Single-label sets give a binary task (one label, e.g. `Pneumonia` for pneumoniamnist) or a
    multiclass task with one-hot labels named as the flavour's classes
    (`qcxr.data.labels.MEDMNIST_CLASSES`: dermamnist, bloodmnist, pathmnist, octmnist,
    organ{a,c,s}mnist; `class 0..K-1` for others); pass task=None or the flavour's task
    (task=dermamnist, ...). A two-class flavour gives its two classes one-hot (`normal`,
    `pneumonia`: MedMNIST's 2-class softmax) when the task is the flavour's own
    (task=pneumoniamnist), and the one binary label with task=None.

    Args:
        task: for chestmnist a label-set name or names; else None (or the set's own labels).
        npz: the npz file (or the folder to download into with download=True).
        flavor: dataset name; default the npz file's stem.
        download: fetch the npz from Zenodo into `npz`'s folder if it is missing.
        on_missing: unused (arrays cannot be missing); accepted for a uniform interface.
        external_image_dir: MIMIC-CXR-JPG root for an external test split (optional).
        external_label_dir: MIMIC-CXR-LT label folder (optional).
        **loader: the DataModule's loader settings (see `LOADER_SETTINGS`).

    Returns:
        A DataModule with train, val, test (and external).
    """
    npz = Path(_require(npz, "npz", "MEDMNIST_NPZ", "medmnist"))
    flavor = (flavor or npz.stem).lower()
    if download and not npz.is_file():
        npz = download_medmnist(flavor, npz if npz.suffix != ".npz" else npz.parent)
    if not npz.is_file():
        raise DataError(
            f"MedMNIST file {npz} does not exist. Fix: set data.npz (MEDMNIST_NPZ) to a MedMNIST "
            "npz, or data.download=true to fetch it."
        )
    st = npz.stat()
    with np.load(npz) as f:
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in f]
        if missing:
            raise DataError(f"{npz} lacks keys {missing}; it has {sorted(f.files)}")
        arrays = {s: (f[f"{s}_images"], f[f"{s}_labels"]) for s in SPLITS}
    raw = {s: np.asarray(y).reshape(len(y), -1) for s, (_, y) in arrays.items()}
    if flavor == "chestmnist" or raw["train"].shape[1] > 1:
        names = (
            CXR14
            if flavor == "chestmnist"
            else tuple(f"label {i}" for i in range(raw["train"].shape[1]))
        )
        labels = resolve_labels(task) if task is not None else names
        keys = [label_key(n) for n in names]
        absent = [n for n in labels if label_key(n) not in keys]
        if absent:
            raise DataError(f"{npz} ({flavor}) has no label(s) {absent}; it has {list(names)}")
        cols = [keys.index(label_key(n)) for n in labels]
        onehot = {s: y[:, cols].astype(bool) for s, y in raw.items()}
    else:
        seen_max = int(max(y.max() for y in raw.values()))
        known = MEDMNIST_CLASSES.get(flavor)
        num_classes = len(known) if known else seen_max + 1
        if seen_max >= num_classes or int(min(y.min() for y in raw.values())) < 0:
            raise DataError(
                f"{npz} ({flavor}) has label values outside 0..{num_classes - 1} (the flavour's "
                f"{num_classes} classes: {', '.join(known or ())}); fix: check the file or its "
                "name (data.flavor)"
            )
        asked = tuple(resolve_labels(task)) if task is not None else None
        # A two-class flavour is binary (one label) unless the task names its two classes.
        if num_classes == 2 and not (known is not None and asked == known):
            labels = (_MEDMNIST_BINARY.get(flavor, "class 1"),)
            onehot = {s: (y[:, :1] == 1) for s, y in raw.items()}
        else:
            # Named classes where the flavour is known (a class absent from this copy still
            # keeps its column), else "class k".
            labels = known or tuple(f"class {k}" for k in range(num_classes))
            onehot = {s: y[:, :1] == np.arange(num_classes)[None, :] for s, y in raw.items()}
        if asked is not None and asked != labels:
            raise DataError(
                f"{npz} ({flavor}) is a single-label task with labels {list(labels)}; "
                f"task {task!r} does not match it. Fix: task=null (its own labels)"
                + (f" or task={flavor}." if flavor in LABEL_SETS else ".")
            )
    splits = {}
    for s, (images, _) in arrays.items():
        ids = [f"{s}/{i}" for i in range(len(images))]
        index = SplitIndex(ids, list(range(len(images))), onehot[s], list(ids), source=str(npz))
        prefix = f"npz:{npz.resolve()}:{st.st_size}:{st.st_mtime_ns}:{s}"
        index.extra["store"] = ArrayImages(images, prefix)
        splits[s] = index
    return _module(
        f"medmnist/{flavor}",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **_check_loader("medmnist", loader),
    )
