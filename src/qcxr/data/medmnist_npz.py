"""MedMNIST v2 npz files as a DataModule (downloads only when asked)."""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qcxr.data.common import (
    check_loader,
    require,
)
from qcxr.data.index import (
    SPLITS,
    DataError,
    SplitIndex,
)
from qcxr.data.labels import CXR14, LABEL_SETS, MEDMNIST_CLASSES, label_key, resolve_labels
from qcxr.data.mimic import build_module
from qcxr.data.module import ArrayImages, DataModule

log = logging.getLogger(__name__)


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
    npz = Path(require(npz, "npz", "MEDMNIST_NPZ", "medmnist"))
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
    return build_module(
        f"medmnist/{flavor}",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **check_loader("medmnist", loader),
    )
