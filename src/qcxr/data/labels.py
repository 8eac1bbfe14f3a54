"""Label sets of the paper's tasks (section III-C): the one source of truth for label lists.

Canonical spellings are those of the NIH-CXR-LT label files (`Pleural Thickening`, `Effusion`, ...).
Each set extends the previous one in the paper's order, so CXR-8 is a prefix of CXR-14, which is a
prefix of CXR-19: column `i` of a CXR-8 model is the same finding as column `i` of a CXR-19 model.
The CXR-LT 2024 sets (CXR-40, CXR-26) keep the challenge's own column order instead (see below).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CXR8 = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
CXR14 = CXR8 + (
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural Thickening",
    "Hernia",
)
CXR19 = CXR14 + (
    "Calcification of the Aorta",
    "Pneumomediastinum",
    "Pneumoperitoneum",
    "Subcutaneous Emphysema",
    "Tortuous Aorta",
)

# CXR-LT 2024 (MICCAI 2024 challenge on MIMIC-CXR-JPG; Lin, Holste et al., "CXR-LT 2024: A MICCAI
# challenge on long-tailed, multi-label, and zero-shot disease classification from chest X-ray",
# arXiv:2506.07984; https://bionlplab.github.io/2024_MICCAI_CXRLT/; labels on PhysioNet as
# "cxr-lt-iccv-workshop-cvamd" 2.0.0, folder cxr-lt-2024/). 45 labels: task 1 scores 40 on
# train_labeled.csv / development_labeled_task1.csv / test_labeled_task1.csv; task 2 scores 26 on a
# hand-labelled gold-standard test set (test_labeled_task2.csv); task 3's 5 zero-shot labels
# (Bulla, Cardiomyopathy, Hilum, Osteopenia, Scoliosis) have no training labels and are not here.
# Names and order are the label files' column order (alphabetical for task 1; task 2 keeps
# CXR-LT 2023's order, where "Normal" stands in 2023's "No Finding" slot). We could not open the
# PhysioNet files themselves (credentialed access): the lists below are as written, identically, by
# several public participants' code that reads those files (e.g. pamessina/medvqa
# medvqa/utils/constants.py CXRLT2024_TASK{1,2}_CLASSES, citing the challenge website). Spellings
# differ from ours in one place: the files' "Pleural Effusion" is NIH's "Effusion" (an alias below,
# so the column still matches). "Normal" (no finding of the 40) is its own label: it is defined
# by the challenge's labeller, not as CXR-LT 2023's "No Finding", so it is not aliased to it.
CXR_LT_2024_TASK1 = (
    "Adenopathy",
    "Atelectasis",
    "Azygos Lobe",
    "Calcification of the Aorta",
    "Cardiomegaly",
    "Clavicle Fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fissure",
    "Fracture",
    "Granuloma",
    "Hernia",
    "Hydropneumothorax",
    "Infarction",
    "Infiltration",
    "Kyphosis",
    "Lobar Atelectasis",
    "Lung Lesion",
    "Lung Opacity",
    "Mass",
    "Nodule",
    "Normal",
    "Effusion",  # "Pleural Effusion" in the files
    "Pleural Other",
    "Pleural Thickening",
    "Pneumomediastinum",
    "Pneumonia",
    "Pneumoperitoneum",
    "Pneumothorax",
    "Pulmonary Embolism",
    "Pulmonary Hypertension",
    "Rib Fracture",
    "Round(ed) Atelectasis",
    "Subcutaneous Emphysema",
    "Support Devices",
    "Tortuous Aorta",
    "Tuberculosis",
)
CXR_LT_2024_TASK2 = (
    "Atelectasis",
    "Calcification of the Aorta",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fracture",
    "Hernia",
    "Infiltration",
    "Lung Lesion",
    "Lung Opacity",
    "Mass",
    "Normal",
    "Nodule",
    "Effusion",  # "Pleural Effusion" in the files
    "Pleural Other",
    "Pleural Thickening",
    "Pneumomediastinum",
    "Pneumonia",
    "Pneumoperitoneum",
    "Pneumothorax",
    "Subcutaneous Emphysema",
    "Support Devices",
    "Tortuous Aorta",
)
CXR40, CXR26 = CXR_LT_2024_TASK1, CXR_LT_2024_TASK2

# Multiclass tasks (one class per image). HAM10000's seven diagnoses (`dx` of
# HAM10000_metadata.csv, Tschandl et al. 2018), in the release's alphabetical order, which is also
# DermaMNIST's class order.
HAM10000 = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
# ISIC 2017 Part 3: melanoma, seborrheic keratosis, and nevus (= neither, as the challenge defines).
ISIC2017 = ("melanoma", "seborrheic_keratosis", "nevus")
# The synthetic multiclass task: one finding (or none) per generated image, long-tailed.
SYNTHETIC_MC = ("No Finding", "Cardiomegaly", "Effusion", "Mass", "Pneumothorax")

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "cxr8": CXR8,
    "cxr14": CXR14,
    "cxr19": CXR19,
    "cxr40": CXR40,
    "cxr26": CXR26,
    "cxr_lt_2024_task1": CXR_LT_2024_TASK1,
    "cxr_lt_2024_task2": CXR_LT_2024_TASK2,
    "ham10000": HAM10000,
    "isic2017": ISIC2017,
    "synthetic_mc": SYNTHETIC_MC,
}

# Class names of the MedMNIST v2 flavours, in label-index order (medmnist's INFO). A two-class
# flavour (pneumoniamnist) is binary by default (one label, its class 1) and two softmax classes
# when its task asks for them (task=pneumoniamnist: MedMNIST's own 2-class cross-entropy).
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "dermamnist": HAM10000,
    "bloodmnist": (
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ),
    "pathmnist": (
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
}
_ORGAN = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)
MEDMNIST_CLASSES.update({f: _ORGAN for f in ("organamnist", "organcmnist", "organsmnist")})
LABEL_SETS.update(MEDMNIST_CLASSES)  # task=dermamnist, bloodmnist, ...

# Positives per label in the NIH-CXR-LT train split (paper, Table II, column "NIH Train"); the
# synthetic task draws its long-tailed label frequencies in these proportions.
NIH_CXR_LT_TRAIN_COUNTS: dict[str, int] = {
    "Infiltration": 12739,
    "Effusion": 7919,
    "Atelectasis": 7587,
    "Nodule": 4359,
    "Mass": 3689,
    "Pneumothorax": 2432,
    "Consolidation": 2626,
    "Pleural Thickening": 1998,
    "Cardiomegaly": 1590,
    "Emphysema": 1327,
    "Edema": 1283,
    "Subcutaneous Emphysema": 957,
    "Fibrosis": 1138,
    "Pneumonia": 806,
    "Tortuous Aorta": 598,
    "Calcification of the Aorta": 368,
    "Pneumoperitoneum": 214,
    "Pneumomediastinum": 88,
    "Hernia": 130,
}
NIH_CXR_LT_TRAIN_SIZE = 78605  # images in the NIH-CXR-LT train split (paper, section IV-B)

# Positives per label in the MIMIC-CXR-LT test set (paper, Table II, column "MIMIC"), frontal views
# only; the synthetic task's external split draws its label frequencies in these proportions.
MIMIC_CXR_LT_TEST_COUNTS: dict[str, int] = {
    "Infiltration": 1781,
    "Effusion": 14586,
    "Atelectasis": 14014,
    "Nodule": 1309,
    "Mass": 1006,
    "Pneumothorax": 3282,
    "Consolidation": 3232,
    "Pleural Thickening": 590,
    "Cardiomegaly": 14703,
    "Emphysema": 649,
    "Edema": 8444,
    "Subcutaneous Emphysema": 572,
    "Fibrosis": 271,
    "Pneumonia": 8242,
    "Tortuous Aorta": 547,
    "Calcification of the Aorta": 704,
    "Pneumoperitoneum": 136,
    "Pneumomediastinum": 176,
    "Hernia": 739,
}
MIMIC_CXR_LT_TEST_SIZE = 48860  # frontal images in the MIMIC-CXR-LT test split (section IV-B)

# Positives per label in CXR-LT 2024's train_labeled.csv (258,871 images), for the labels of
# CXR-40 that CXR-19 lacks; the synthetic task draws those labels in these proportions. Not from
# the challenge's paper: tabulated from the file by a public third party (a DiCaP adaptation plan
# found with the search tool) and not re-counted here, so read them as approximate.
CXR_LT_2024_TRAIN_COUNTS: dict[str, int] = {
    "Support Devices": 86079,
    "Lung Opacity": 77482,
    "Normal": 34292,
    "Enlarged Cardiomediastinum": 29628,
    "Fracture": 11568,
    "Rib Fracture": 8919,
    "Adenopathy": 3409,
    "Granuloma": 2965,
    "Fissure": 2803,
    "Lung Lesion": 2338,
    "Tuberculosis": 2078,
    "Pulmonary Embolism": 1631,
    "Pulmonary Hypertension": 903,
    "Kyphosis": 778,
    "Infarction": 727,
    "Hydropneumothorax": 646,
    "Pleural Other": 616,
    "Azygos Lobe": 199,
    "Round(ed) Atelectasis": 172,
    "Clavicle Fracture": 168,
    "Lobar Atelectasis": 129,
}
CXR_LT_2024_TRAIN_SIZE = 258871

# Spellings found in the wild, after normalisation (lower case, `_`/`-` as spaces, single spaces).
# NIH ChestX-ray14 writes `Pleural_Thickening`; MIMIC-CXR (CheXpert labeller) writes
# `Pleural Effusion` for NIH's `Effusion`.
_ALIASES: dict[str, str] = {
    "pleural effusion": "Effusion",
    "effusions": "Effusion",
    "infiltrate": "Infiltration",
    "infiltrates": "Infiltration",
    "aortic calcification": "Calcification of the Aorta",
    "calcification of aorta": "Calcification of the Aorta",
    "aorta calcification": "Calcification of the Aorta",
    "aortic tortuosity": "Tortuous Aorta",
    "subcutaneous emphysema": "Subcutaneous Emphysema",
    "no findings": "No Finding",
    "rounded atelectasis": "Round(ed) Atelectasis",
    "round atelectasis": "Round(ed) Atelectasis",
}
_CANONICAL: dict[str, str] = {}


def _normalise(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", name)).strip().casefold()


# "Normal" stays out: it would also capture user and MedMNIST classes spelled "normal" (octmnist);
# it still matches a file's "Normal" column through `label_key`'s normalised spelling.
for _name in CXR19 + ("No Finding",) + tuple(n for n in CXR40 if n != "Normal"):
    _CANONICAL[_normalise(_name)] = _name
for _alias, _name in _ALIASES.items():
    _CANONICAL[_normalise(_alias)] = _name


def canonical_label(name: str) -> str:
    """The canonical (NIH-CXR-LT) spelling of a label name.

    Args:
        name: a label as spelled in some file, e.g. `Pleural_Thickening` or `Pleural Effusion`.

    Returns:
        The canonical spelling, e.g. `Pleural Thickening` or `Effusion`.

    Raises:
        ValueError: the name is not a known chest X-ray label.
    """
    try:
        return _CANONICAL[_normalise(name)]
    except KeyError:
        raise ValueError(
            f"unknown chest X-ray label {name!r}; known labels: {', '.join(CXR19)}, CXR-LT "
            f"2024's {', '.join(n for n in CXR40 if n not in CXR19 and n != 'Normal')} (plus "
            "'No Finding' and aliases such as 'Pleural_Thickening', 'Pleural Effusion')"
        ) from None


def label_key(name: str) -> str:
    """A spelling-insensitive key for matching a label to a file's column.

    Args:
        name: a label or a column header.

    Returns:
        The canonical label for known chest X-ray labels, else the normalised name, so that
        user-defined labels (folder_csv) still match across case and `_`/space differences.
    """
    return _CANONICAL.get(_normalise(name), _normalise(name))


def resolve_labels(task: str | Sequence[str]) -> tuple[str, ...]:
    """The ordered label names of a task.

    Args:
        task: a label-set name (`cxr8`, `cxr14`, `cxr19`, `cxr40`, `cxr26`, ...) or a sequence of
            label names.

    Returns:
        The label names; known chest X-ray labels in their canonical spelling.

    Raises:
        ValueError: unknown label-set name, empty or duplicated labels.
    """
    if isinstance(task, str):
        key = task.strip().lower().replace("-", "")
        key = key if key in LABEL_SETS else key.replace("_", "")
        if key not in LABEL_SETS:
            raise ValueError(
                f"unknown label set {task!r}; choose one of {sorted(LABEL_SETS)} or pass a list "
                "of label names"
            )
        return LABEL_SETS[key]
    labels = tuple(_CANONICAL.get(_normalise(str(n)), str(n)) for n in task)
    if not labels:
        raise ValueError("the task has no labels; pass a label-set name or a non-empty list")
    if len(set(map(label_key, labels))) != len(labels):
        raise ValueError(f"duplicated labels in task {list(task)}")
    return labels
