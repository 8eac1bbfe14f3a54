"""Tiny datasets in their real on-disk formats, written by the tests (helpers, not tests).

Every image is a constant gray level that encodes its row, so a test can check that the labels
of a batch row belong to the image in that row.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from qcxr.data.labels import CXR19
from qcxr.data.preprocess import normalisation_table

NIH_LT_HEADER_LABELS = (  # column order of miccai2023_nih-cxr-lt_labels_*.csv as released
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural Thickening",
    "Pneumonia",
    "Pneumothorax",
    "Pneumoperitoneum",
    "Pneumomediastinum",
    "Subcutaneous Emphysema",
    "Tortuous Aorta",
    "Calcification of the Aorta",
)


def gray_of(k: int) -> int:
    """Gray level of image number k (distinct for k < 120)."""
    return 10 + 2 * k


def label_row(k: int, labels=CXR19) -> np.ndarray:
    """Labels of image k: deterministic, every label positive somewhere in every 4 images."""
    return np.array([(k + j) % 4 == 0 for j in range(len(labels))], bool)


def gray_in_batch(image: np.ndarray) -> int:
    """Recover the gray level from a normalised (unaugmented) image: invert the red channel LUT."""
    table = normalisation_table()[0]
    return int(np.argmin(np.abs(table - image[image.shape[0] // 2, image.shape[1] // 2, 0])))


def write_image(path: Path, k: int, mode: str = "L", size=(12, 10)) -> None:
    """A constant image of gray level gray_of(k) in the given PIL mode (L, RGB, RGBA, I;16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = gray_of(k)
    w, h = size
    if mode == "I;16":
        Image.fromarray(np.full((h, w), g * 257, np.uint16)).save(path)
    elif mode == "RGBA":
        Image.fromarray(
            np.dstack([np.full((h, w), g, np.uint8)] * 3 + [np.full((h, w), 255, np.uint8)])
        ).save(path)
    else:
        Image.new(mode, (w, h), (g, g, g) if mode == "RGB" else g).save(path)


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def nih_cxr_lt_fixture(root: Path, per_split=(8, 4, 4)) -> tuple[Path, Path]:
    """NIH images in nested folders + miccai2023_nih-cxr-lt_labels_{train,val,test}.csv."""
    image_dir, label_dir = root / "images", root / "labels"
    k = 0
    for split, n in zip(("train", "val", "test"), per_split, strict=True):
        rows = []
        for _ in range(n):
            name = f"{k:08d}_000.png"
            write_image(
                image_dir / f"images_{k % 2 + 1:03d}" / "images" / name,
                k,
                mode=("L", "RGB", "RGBA", "I;16")[k % 4],
            )
            y = dict(zip(CXR19, label_row(k), strict=True))
            flags = [int(y[n_]) for n_ in NIH_LT_HEADER_LABELS]
            rows.append([name, *flags, int(not any(flags)), str(k // 2 + 100 * (split != "train"))])
            k += 1
        write_csv(
            label_dir / f"miccai2023_nih-cxr-lt_labels_{split}.csv",
            ["id", *NIH_LT_HEADER_LABELS, "No Finding", "subj_id"],
            rows,
        )
    return image_dir, label_dir


def mimic_fixture(
    root: Path, n: int = 8, view_column: bool = False, offset: int = 60
) -> tuple[Path, Path]:
    """MIMIC-CXR-JPG folders + a CXR-LT MIMIC label CSV (+ metadata), one lateral per 5 rows."""
    image_dir, label_dir = root / "mimic-cxr-jpg", root / "mimic-labels"
    mimic_spelling = {"Effusion": "Pleural Effusion"}
    names = [mimic_spelling.get(x, x) for x in CXR19]
    rows, meta = [], []
    for i in range(n + n // 4 + 1):
        k = offset + i
        subject, study, dicom = f"p1{k:07d}", f"s5{k:07d}", f"dcm{k:04d}"
        rel = f"files/p1{k % 10}/{subject}/{study}/{dicom}.jpg"
        path = image_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        g = gray_of(k)
        Image.new("L", (12, 10), g).save(path, quality=100)
        view = "LATERAL" if i % 5 == 4 else ("PA" if i % 2 else "AP")
        y = label_row(k)
        row = [rel, subject[1:], study[1:]] + [int(v) for v in y]
        rows.append(row + ([view] if view_column else []))
        meta.append([dicom, subject[1:], study[1:], view])
    header = ["path", "subject_id", "study_id", *names] + (["view"] if view_column else [])
    write_csv(label_dir / "miccai2023_mimic-cxr-lt_labels_test.csv", header, rows)
    if not view_column:
        write_csv(
            label_dir / "mimic-cxr-2.0.0-metadata.csv.gz",
            ["dicom_id", "subject_id", "study_id", "ViewPosition"],
            meta,
        )
    return image_dir, label_dir
