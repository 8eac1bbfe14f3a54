"""Label sets (paper, section III-C) and their aliases."""

import pytest

from qcxr.data import LABEL_SETS, canonical_label, resolve_labels
from qcxr.data.labels import NIH_CXR_LT_TRAIN_COUNTS


def test_label_sets_as_the_paper():
    assert LABEL_SETS["cxr8"] == (
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
    )
    assert LABEL_SETS["cxr14"][:8] == LABEL_SETS["cxr8"]
    assert LABEL_SETS["cxr14"][8:] == (
        "Consolidation",
        "Edema",
        "Emphysema",
        "Fibrosis",
        "Pleural Thickening",
        "Hernia",
    )
    assert LABEL_SETS["cxr19"][:14] == LABEL_SETS["cxr14"]
    assert set(LABEL_SETS["cxr19"][14:]) == {
        "Calcification of the Aorta",
        "Pneumomediastinum",
        "Pneumoperitoneum",
        "Subcutaneous Emphysema",
        "Tortuous Aorta",
    }
    assert [len(LABEL_SETS[k]) for k in ("cxr8", "cxr14", "cxr19")] == [8, 14, 19]
    assert set(NIH_CXR_LT_TRAIN_COUNTS) == set(LABEL_SETS["cxr19"])


@pytest.mark.parametrize(
    "alias, name",
    [
        ("Pleural_Thickening", "Pleural Thickening"),
        ("pleural thickening", "Pleural Thickening"),
        ("Pleural Effusion", "Effusion"),
        ("Subcutaneous_Emphysema", "Subcutaneous Emphysema"),
        ("calcification of the aorta", "Calcification of the Aorta"),
        ("No_Finding", "No Finding"),
    ],
)
def test_aliases(alias, name):
    assert canonical_label(alias) == name


def test_unknown_label_and_set():
    with pytest.raises(ValueError, match="unknown chest X-ray label"):
        canonical_label("Broken Arm")
    with pytest.raises(ValueError, match="unknown label set"):
        resolve_labels("cxr9")
    with pytest.raises(ValueError, match="duplicated"):
        resolve_labels(["Effusion", "Pleural Effusion"])


def test_resolve_lists_canonicalise_known_and_keep_user_labels():
    assert resolve_labels(["Pleural_Thickening", "my finding"]) == (
        "Pleural Thickening",
        "my finding",
    )
    assert resolve_labels("CXR-14") == LABEL_SETS["cxr14"]
