"""Compose the run config for tests: tiny shapes, a temporary MLflow store and output folder."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

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


def compose_run(
    tmp_path: Path, overrides: list[str], run_dir: str = "run", tiny: bool = True
) -> object:
    """The composed config with paths and the MLflow store under tmp_path."""
    register_configs()
    paths = [
        f"paths.root_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / run_dir}",
    ]
    if "tracker=none" not in overrides:
        paths.append(f"tracker.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=[*(TINY if tiny else []), *paths, *overrides])


def mlflow_client(tmp_path: Path):
    """A client on the test store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
