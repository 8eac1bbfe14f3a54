"""Data: label sets, sources, preprocessing, cache and keyed, fixed-size masked batches.

Every batch is a dict: image f32[B, H, W, C], labels bool[B, L], mask bool[B], index int64[B].
This package never imports models/, train/, hydra or omegaconf.
"""

from qcxr.data.augment import AUGMENT_STREAM, DATA_ORDER_STREAM, augment_device
from qcxr.data.cxr_lt import cxr_lt_2024
from qcxr.data.derm import ham10000, isic2017
from qcxr.data.folder import folder_csv
from qcxr.data.index import DataError
from qcxr.data.labels import LABEL_SETS, canonical_label, resolve_labels
from qcxr.data.medmnist_npz import download_medmnist, medmnist
from qcxr.data.mimic import mimic_cxr_lt
from qcxr.data.module import DataModule
from qcxr.data.nih import nih_cxr_lt
from qcxr.data.synthetic import synthetic

__all__ = [
    "AUGMENT_STREAM",
    "DATA_ORDER_STREAM",
    "LABEL_SETS",
    "DataError",
    "DataModule",
    "augment_device",
    "canonical_label",
    "cxr_lt_2024",
    "download_medmnist",
    "folder_csv",
    "ham10000",
    "isic2017",
    "medmnist",
    "mimic_cxr_lt",
    "nih_cxr_lt",
    "resolve_labels",
    "synthetic",
]
