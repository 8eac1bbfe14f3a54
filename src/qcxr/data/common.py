"""What every dataset source shares: the loader settings, argument checks, label-file helpers and
the checks that reject an image listed twice.

One module per source: nih.py (NIH-CXR-LT), mimic.py (MIMIC-CXR-LT, and `build_module`, which
attaches its test split as any source's `external` split), folder.py (any folder + CSV),
medmnist_npz.py (MedMNIST npz files), derm.py (HAM10000, ISIC 2017), cxr_lt.py (CXR-LT 2024),
synthetic.py. Each factory reads the labels as released, checks them (columns, 0/1 values,
missing images, empty splits, labels without positives) before anything is preprocessed, and
returns a `DataModule`.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

from qcxr.data.index import (
    DataError,
    _listing,
    require_columns,
)
from qcxr.data.module import FileImages

log = logging.getLogger(__name__)


IMAGE_COLUMNS = ("Image Index", "id", "image", "path", "fpath", "file", "filename", "image_path")
PATIENT_COLUMNS = ("Patient ID", "subj_id", "subject_id", "patient_id", "patient")
VIEW_COLUMNS = ("ViewPosition", "view", "view_position", "View Position")
FRONTAL_VIEWS = ("PA", "AP")  # MIMIC-CXR ViewPosition; AP/PA variants (e.g. "AP AXIAL") too


def require(value, key: str, env: str, source: str):
    if value is None or str(value).strip() in ("", "???"):
        raise DataError(
            f"data source {source!r} needs {key}: pass data.{key}=... on the command line or set "
            f"the environment variable {env} (see docs/data.md)"
        )
    return value


def reject_shared_files(stores) -> None:
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


def find_label_file(label_dir, pattern: str, what: str) -> Path:
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


def label_columns(path, header, labels: Sequence[str]) -> list[int]:
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


def check_loader(source: str, loader: dict) -> dict:
    """Name a misspelt loader setting before anything is read."""
    unknown = sorted(set(loader) - set(LOADER_SETTINGS))
    if unknown:
        raise TypeError(
            f"data source {source!r} got unknown setting(s) {unknown}; its own settings are in its "
            f"docstring and the loader's are {list(LOADER_SETTINGS)}"
        )
    return {"batch_size": 32, "seed": 0, **loader}


def reject_duplicate_rows(path, header, image_col, lines, labels, split_col, rows) -> None:
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
