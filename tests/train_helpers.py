"""Compose the run config for tests: tiny shapes, a temporary MLflow store and output folder."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

from qcxr.run import register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"

# Batch 4 of 16x16 images, a few dozen examples, 8 labels (synthetic = CXR-8): seconds per run.
TINY = [
    "backbone=tiny",
    "backbone.image_size=16",
    "backbone.feature_dim=8",
    "data.num_train=24",
    "data.num_val=12",
    "data.num_test=12",
    "data.num_external=0",
    "data.min_positives=0",
    "data.num_threads=1",
    "trainer.batch_size=4",
    "trainer.max_epochs=2",
    "trainer.progress=false",
    "trainer.compilation_cache=false",
]


# The test's folder in the overrides is written as this stand-in, so that composes differing only
# by their tmp_path are one compose; the copy handed out has the real folder again.
TMP = "/qcxr-test-tmp"


@functools.cache
def _registered() -> None:
    """The structured-config schemas in Hydra's ConfigStore, registered once per session."""
    register_configs()


def compose_run(
    tmp_path: Path, overrides: list[str], run_dir: str = "run", tiny: bool = True
) -> object:
    """The composed config with paths and the MLflow store under tmp_path.

    Memoised per override tuple (tmp_path aside): a repeated compose is a copy of the first, with
    Hydra's runtime config (the group choices that run.py reads) set back to that compose's.
    Errors are not memoised: a failing compose fails again in full."""
    paths = [
        f"paths.root_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / run_dir}",
    ]
    if "tracker=none" not in overrides:
        paths.append(f"tracker.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    given = [*(TINY if tiny else []), *paths, *overrides]
    cfg, hydra_cfg = _compose(tuple(o.replace(str(tmp_path), TMP) for o in given))
    HydraConfig.instance().cfg = hydra_cfg
    cfg = copy.deepcopy(cfg)
    _replace_in_strings(cfg, TMP, str(tmp_path))
    return cfg


@functools.cache
def _compose(overrides: tuple[str, ...]) -> tuple[DictConfig, object]:
    """One compose of `config` (never to be changed: compose_run hands out copies) and the
    HydraConfig it set."""
    _registered()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=list(overrides))
    return cfg, HydraConfig.instance().cfg


def _replace_in_strings(node: DictConfig | ListConfig, old: str, new: str) -> None:
    """Replace `old` by `new` in every string value under node, interpolations left unresolved."""
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    for key in keys:
        child = node._get_node(key)  # the node, not its resolved value
        if isinstance(child, (DictConfig, ListConfig)):
            _replace_in_strings(child, old, new)
            continue
        value = child._value() if child is not None else None
        if isinstance(value, str) and old in value:
            node[key] = value.replace(old, new)


def mlflow_client(tmp_path: Path):
    """A client on the test store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
