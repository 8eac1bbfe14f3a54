"""conf/data and conf/task: keys match the factories; each option instantiates with tiny values."""

import inspect
from pathlib import Path

import pytest

import qcxr.data
from qcxr.data import LABEL_SETS, DataError
from qcxr.data.common import LOADER_SETTINGS

CONF = Path(__file__).resolve().parents[2] / "conf"
omegaconf = pytest.importorskip("omegaconf")
hydra_utils = pytest.importorskip("hydra.utils")
RUNTIME = {"task", "batch_size", "seed", "preprocessing"}  # passed by run.py


def _load_option(option: str):
    """conf/data/<option>.yaml without its defaults list (Hydra's schema entry, not an argument)."""
    cfg = omegaconf.OmegaConf.load(CONF / "data" / f"{option}.yaml")
    assert list(cfg.pop("defaults")) == [f"/schema/data/{option}@_here_", "_self_"]
    return cfg


@pytest.mark.parametrize(
    "option",
    ["nih_cxr_lt", "mimic_cxr_lt", "medmnist", "folder_csv", "synthetic", "ham10000", "isic2017"],
)
def test_data_option_keys_match_factory(option, monkeypatch):
    for var in (
        "NIH_CXR_LT_IMAGES",
        "NIH_CXR_LT_LABELS",
        "MIMIC_CXR_LT_IMAGES",
        "MIMIC_CXR_LT_LABELS",
        "MEDMNIST_NPZ",
        "QCXR_IMAGES",
        "QCXR_LABELS",
        "QCXR_CACHE_DIR",
        "HAM10000_ROOT",
        "ISIC2017_ROOT",
    ):
        monkeypatch.delenv(var, raising=False)
    cfg = _load_option(option)
    assert cfg._target_ == f"qcxr.data.{option}" and cfg._partial_ is True
    factory = getattr(qcxr.data, option)
    # A source's own settings plus the loader settings every source hands to the DataModule.
    params = set(inspect.signature(factory).parameters) | set(LOADER_SETTINGS)
    keys = {k for k in cfg if not k.startswith("_")}
    assert keys <= params, keys - params
    assert RUNTIME <= params and not keys & RUNTIME
    build = hydra_utils.instantiate(cfg, _execution_whitelist_=["qcxr.*"])
    if option == "synthetic":
        dm = build(task="cxr8", batch_size=2, seed=0, image_size=8)
        assert dm.num_labels == 8 and dm.splits == ("train", "val", "test", "external")
    else:  # unset env vars: fails at start naming the key and the variable
        with pytest.raises(
            DataError, match=r"data\.(image_dir|npz|root)=.*set the environment variable"
        ):
            task = option if option in ("ham10000", "isic2017") else "cxr8"
            build(task=task, batch_size=2, seed=0, image_size=8)


def test_synthetic_config_with_tiny_overrides(tmp_path):
    cfg = omegaconf.OmegaConf.merge(
        _load_option("synthetic"),
        {
            "num_train": 8,
            "num_val": 4,
            "num_test": 4,
            "num_external": 0,
            "cache_dir": str(tmp_path),
            "min_positives": 0,
        },
    )
    dm = hydra_utils.instantiate(cfg, _execution_whitelist_=["qcxr.*"])(
        task="cxr19", batch_size=2, seed=0, image_size=8
    )
    assert next(dm.batches("train"))["image"].shape == (2, 8, 8, 3)


@pytest.mark.parametrize("option", ["cxr8", "cxr14", "cxr19", "synthetic"])
def test_task_options(option):
    cfg = omegaconf.OmegaConf.load(CONF / "task" / f"{option}.yaml")
    assert cfg.name == option
    assert cfg.num_labels == len(LABEL_SETS[cfg.labels])
