"""Typed config schemas: plain dataclasses, registered in Hydra's ConfigStore by `qcxr.run`.

A wrong type fails at compose time (e.g. `seed=abc`, `trainer.max_epochs=1.5`). Each option of the
groups head, ansatz, optimizer, backbone, trainer, tracker and task pulls its schema in through its
defaults list (`/schema/<group>/<option>@_here_`); the top level's fields are all MISSING so that,
merged after `_self_`, it types the values of config.yaml without overriding them.
This module imports neither hydra nor omegaconf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MISSING = "???"


# ---- model groups -------------------------------------------------------------------------------
@dataclass
class TaskSchema:
    name: str = MISSING
    labels: str = MISSING
    num_labels: int = MISSING
    default_data: str | None = None


@dataclass
class AnsatzSchema:
    _target_: str = "qcxr.quantum.make_ansatz"
    name: str = MISSING
    num_qubits: int = MISSING
    num_layers: int = 3
    init: str = "normal_2pi"
    encoding: str = "h_ry"


@dataclass
class CDLHeadSchema:
    _target_: str = "qcxr.models.heads.cdl_head"
    num_labels: int = MISSING


@dataclass
class DQCNNHeadSchema:
    _target_: str = "qcxr.models.heads.dqc_nn_head"
    num_labels: int = MISSING


@dataclass
class DQCHeadSchema:
    _target_: str = "qcxr.models.heads.dqc_head"
    num_labels: int = MISSING
    ansatz: Any = MISSING
    simulator: str = "native"
    block_size: int = 5
    remat: bool = False
    chunk_size: Any = "auto"
    method: str = "auto"


@dataclass
class QCNNHeadSchema:
    _target_: str = "qcxr.models.heads.qcnn_head"
    num_labels: int = MISSING
    cut: str = "fragments"
    angle_scale: str = "none"
    dropout: float = 0.2
    init: str = "uniform_01"


@dataclass
class ResNetSchema:
    _target_: str = MISSING
    pretrained: bool = True
    weights: str | None = None
    allow_download: bool = False
    freeze: bool = True
    repo_id: str = MISSING
    image_size: int = 224
    resize_size: int | None = None


@dataclass
class TinySchema:
    _target_: str = "qcxr.models.backbones.tiny"
    feature_dim: int = 64
    image_size: int = 64
    freeze: bool = False


@dataclass
class _OptimizerCommon:
    _partial_: bool = True
    schedule: str = "constant"
    warmup_steps: int = 0
    accumulation_steps: int = 1
    grad_clip: float | None = None


@dataclass
class AdamSchema(_OptimizerCommon):
    _target_: str = "qcxr.train.optim.adam"
    learning_rate: float = 1e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


@dataclass
class AdamWSchema(_OptimizerCommon):
    _target_: str = "qcxr.train.optim.adamw"
    learning_rate: float = 1e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-4


@dataclass
class SGDSchema(_OptimizerCommon):
    _target_: str = "qcxr.train.optim.sgd"
    learning_rate: float = 1e-2
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class LionSchema(_OptimizerCommon):
    _target_: str = "qcxr.train.optim.lion"
    learning_rate: float = 3e-5
    b1: float = 0.9
    b2: float = 0.99
    weight_decay: float = 1e-3


@dataclass
class LambSchema(_OptimizerCommon):
    _target_: str = "qcxr.train.optim.lamb"
    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.0


@dataclass
class AdafactorSchema(_OptimizerCommon):
    _target_: str = "qcxr.train.optim.adafactor"
    learning_rate: float = 1e-3
    min_dim_size_to_factor: int = 128
    decay_rate: float = 0.8
    clipping_threshold: float | None = 1.0


# ---- support groups -----------------------------------------------------------------------------
@dataclass
class TrainerSchema:
    max_epochs: int = 50
    patience: int = 5
    batch_size: int = 32
    resume: bool = True
    compute_dtype: str = "float32"
    cache_features: bool = True
    compilation_cache: bool = True
    progress: bool = True


@dataclass
class MLflowTrackerSchema:
    _target_: str = "qcxr.tracking.mlflow_tracker"
    tracking_uri: str | None = None
    experiment: str = MISSING
    artifact_root: str | None = None
    flush_every: int = 500


@dataclass
class NullTrackerSchema:
    _target_: str = "qcxr.tracking.null_tracker"


@dataclass
class PathsSchema:
    root_dir: str = MISSING
    cache_dir: str = MISSING
    mlruns_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class RunSchema:
    """The top level. Every field is MISSING here; config.yaml gives the values."""

    seed: int = MISSING
    tags: dict[str, str] = MISSING  # type: ignore[assignment]
    optimized_metric: str = MISSING
    study: str | None = MISSING  # type: ignore[assignment]
    trial: int | None = MISSING  # type: ignore[assignment]
    backbone: Any = MISSING
    head: Any = MISSING
    ansatz: Any = MISSING
    task: Any = MISSING
    optimizer: Any = MISSING
    data: Any = MISSING
    trainer: Any = MISSING
    tracker: Any = MISSING
    paths: Any = MISSING


# group -> option -> schema; the ConfigStore names are schema/<group>/<option>.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "task": {"task": TaskSchema},
    "ansatz": {"ansatz": AnsatzSchema},
    "head": {"cdl": CDLHeadSchema, "dqc": DQCHeadSchema, "dqc_nn": DQCNNHeadSchema,
             "qcnn": QCNNHeadSchema},
    "backbone": {"resnet": ResNetSchema, "tiny": TinySchema},
    "optimizer": {
        "adam": AdamSchema,
        "adamw": AdamWSchema,
        "sgd": SGDSchema,
        "lion": LionSchema,
        "lamb": LambSchema,
        "adafactor": AdafactorSchema,
    },
    "trainer": {"trainer": TrainerSchema},
    "tracker": {"mlflow": MLflowTrackerSchema, "none": NullTrackerSchema},
    "paths": {"paths": PathsSchema},
}
