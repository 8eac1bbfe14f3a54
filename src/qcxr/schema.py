"""Typed config schemas: plain dataclasses, registered in Hydra's ConfigStore by `qcxr.run`.

Types and required-ness only: every field is MISSING here and its value lives in the option's YAML
(one source of truth, issue 11), so a schema can never disagree with its YAML. A wrong type fails
at compose time (e.g. `seed=abc`, `trainer.max_epochs=1.5`), and so does an option YAML that
forgets a key its schema declares. Each option of every group pulls its schema in through its
defaults list (`/schema/<group>/<option>@_here_`, before `_self_`); the top level's schema is
merged after config.yaml's `_self_`.
This module imports neither hydra nor omegaconf.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

MISSING = "???"


# ---- model groups -------------------------------------------------------------------------------
@dataclass
class TaskSchema:
    name: str = MISSING
    labels: str = MISSING
    num_labels: int = MISSING
    kind: str = MISSING  # multilabel (sigmoid, BCE) or multiclass (softmax CE, one class each)
    class_weights: list[float] | None = MISSING  # type: ignore[assignment]  # multiclass only
    # metric sets logged beside the usual ones (qcxr.metrics.EXTRA_METRICS: "medmnist")
    extra_metrics: list[str] = MISSING  # type: ignore[assignment]


@dataclass
class AnsatzSchema:
    _target_: str = MISSING
    name: str = MISSING
    num_qubits: int = MISSING
    num_layers: int = MISSING
    init: str = MISSING
    encoding: str = MISSING


@dataclass
class CDLHeadSchema:
    _target_: str = MISSING
    num_labels: int = MISSING


@dataclass
class DQCNNHeadSchema:
    _target_: str = MISSING
    num_labels: int = MISSING


@dataclass
class NoiseSchema:
    """`head.noise`: channel -> level; 0 means no channel (qcxr.models.heads.NOISE_CHANNELS)."""

    depolarizing: float = MISSING
    bit_flip: float = MISSING
    phase_flip: float = MISSING
    amplitude_damping: float = MISSING
    phase_damping: float = MISSING
    readout: float = MISSING


@dataclass
class DQCHeadSchema:
    _target_: str = MISSING
    num_labels: int = MISSING
    ansatz: Any = MISSING
    simulator: str = MISSING
    block_size: int = MISSING
    remat: bool = MISSING
    chunk_size: Any = MISSING  # an int, "auto" or null
    method: str = MISSING
    max_bond: int | None = MISSING  # type: ignore[assignment]  # MPS bond limit; null = exact
    noise: NoiseSchema = MISSING
    noisy_encoding: bool = MISSING
    trajectories: int = MISSING
    shots: int | None = MISSING  # type: ignore[assignment]


@dataclass
class QCNNHeadSchema:
    _target_: str = MISSING
    num_labels: int = MISSING
    cut: str = MISSING
    angle_scale: str = MISSING
    dropout: float = MISSING
    init: str = MISSING


@dataclass
class ResNetSchema:
    _target_: str = MISSING
    pretrained: bool = MISSING
    weights: str | None = MISSING  # type: ignore[assignment]
    allow_download: bool = MISSING
    freeze: bool = MISSING
    repo_id: str = MISSING
    image_size: int = MISSING
    resize_size: int | None = MISSING  # type: ignore[assignment]
    init_from: str | None = MISSING  # type: ignore[assignment]  # a run id or folder


@dataclass
class ResNet28Schema:
    _target_: str = MISSING
    pretrained: bool = MISSING
    freeze: bool = MISSING
    image_size: int = MISSING
    resize_size: int | None = MISSING  # type: ignore[assignment]
    num_channels: int = MISSING
    init_from: str | None = MISSING  # type: ignore[assignment]  # a run id or folder


@dataclass
class MobileNetV2Schema:
    _target_: str = MISSING
    pretrained: bool = MISSING
    weights: str | None = MISSING  # type: ignore[assignment]
    allow_download: bool = MISSING
    freeze: bool = MISSING
    repo_id: str = MISSING
    variant: str = MISSING
    image_size: int | None = MISSING  # type: ignore[assignment]
    resize_size: int | None = MISSING  # type: ignore[assignment]
    init_from: str | None = MISSING  # type: ignore[assignment]  # a run id or folder


@dataclass
class TinySchema:
    _target_: str = MISSING
    feature_dim: int = MISSING
    image_size: int = MISSING
    freeze: bool = MISSING
    init_from: str | None = MISSING  # type: ignore[assignment]  # a run id or folder


@dataclass
class _OptimizerCommon:
    _target_: str = MISSING
    _partial_: bool = MISSING
    learning_rate: float = MISSING
    schedule: str = MISSING
    warmup_steps: int = MISSING
    accumulation_steps: int = MISSING
    grad_clip: float | None = MISSING  # type: ignore[assignment]
    milestones: list[int] = MISSING  # type: ignore[assignment]  # multistep: epochs
    gamma: float = MISSING


@dataclass
class AdamSchema(_OptimizerCommon):
    b1: float = MISSING
    b2: float = MISSING
    eps: float = MISSING


@dataclass
class AdamWSchema(AdamSchema):
    weight_decay: float = MISSING


@dataclass
class SGDSchema(_OptimizerCommon):
    momentum: float = MISSING
    nesterov: bool = MISSING


@dataclass
class LionSchema(_OptimizerCommon):
    b1: float = MISSING
    b2: float = MISSING
    weight_decay: float = MISSING


@dataclass
class LambSchema(AdamWSchema):
    pass


@dataclass
class AdafactorSchema(_OptimizerCommon):
    min_dim_size_to_factor: int = MISSING
    decay_rate: float = MISSING
    clipping_threshold: float | None = MISSING  # type: ignore[assignment]


# ---- data ---------------------------------------------------------------------------------------
@dataclass
class _DataCommon:
    _target_: str = MISSING
    _partial_: bool = MISSING
    cache_dir: str | None = MISSING  # type: ignore[assignment]
    num_threads: int = MISSING
    augment: bool = MISSING
    augment_on: str = MISSING
    min_positives: int = MISSING


@dataclass
class _ExternalData(_DataCommon):
    external_image_dir: str | None = MISSING  # type: ignore[assignment]
    external_label_dir: str | None = MISSING  # type: ignore[assignment]


@dataclass
class SyntheticDataSchema(_DataCommon):
    num_train: int = MISSING
    num_val: int = MISSING
    num_test: int = MISSING
    num_external: int = MISSING
    resolution: int | None = MISSING  # type: ignore[assignment]
    data_seed: int = MISSING


@dataclass
class NIHCXRLTDataSchema(_ExternalData):
    image_dir: str | None = MISSING  # type: ignore[assignment]
    label_dir: str | None = MISSING  # type: ignore[assignment]
    on_missing: str = MISSING
    split_seed: int = MISSING


@dataclass
class MIMICCXRLTDataSchema(_DataCommon):
    image_dir: str | None = MISSING  # type: ignore[assignment]
    label_dir: str | None = MISSING  # type: ignore[assignment]
    metadata_file: str | None = MISSING  # type: ignore[assignment]
    frontal_only: bool = MISSING
    on_missing: str = MISSING


@dataclass
class CXRLT2024DataSchema(_ExternalData):
    image_dir: str | None = MISSING  # type: ignore[assignment]
    label_dir: str | None = MISSING  # type: ignore[assignment]
    train_file: str = MISSING
    val_file: str | None = MISSING  # type: ignore[assignment]
    test_file: str | None = MISSING  # type: ignore[assignment]
    on_missing: str = MISSING


@dataclass
class FolderCSVDataSchema(_ExternalData):
    image_dir: str | None = MISSING  # type: ignore[assignment]
    label_dir: str | None = MISSING  # type: ignore[assignment]
    image_column: str | None = MISSING  # type: ignore[assignment]
    patient_column: str | None = MISSING  # type: ignore[assignment]
    split_column: str | None = MISSING  # type: ignore[assignment]
    fractions: list[float] = MISSING  # type: ignore[assignment]
    split_seed: int = MISSING
    on_missing: str = MISSING


@dataclass
class MedMNISTDataSchema(_ExternalData):
    npz: str | None = MISSING  # type: ignore[assignment]
    flavor: str | None = MISSING  # type: ignore[assignment]
    download: bool = MISSING


@dataclass
class HAM10000DataSchema(_ExternalData):
    root: str | None = MISSING  # type: ignore[assignment]
    fractions: list[float] = MISSING  # type: ignore[assignment]
    split_seed: int = MISSING
    on_missing: str = MISSING


@dataclass
class ISIC2017DataSchema(_ExternalData):
    root: str | None = MISSING  # type: ignore[assignment]
    on_missing: str = MISSING


# ---- support groups -----------------------------------------------------------------------------
@dataclass
class TrainerSchema:
    max_epochs: int = MISSING
    patience: int | None = MISSING  # type: ignore[assignment]  # null: no early stopping
    monitor: str = MISSING  # the val metric that picks the best checkpoint (val/loss)
    monitor_mode: str = MISSING  # min | max
    batch_size: int = MISSING
    resume: bool = MISSING
    compute_dtype: str = MISSING
    cache_features: bool = MISSING
    compilation_cache: bool = MISSING
    progress: str = MISSING  # auto | true | false (qcxr.train.loop.show_progress)


@dataclass
class MLflowTrackerSchema:
    _target_: str = MISSING
    tracking_uri: str | None = MISSING  # type: ignore[assignment]
    experiment: str = MISSING
    artifact_root: str | None = MISSING  # type: ignore[assignment]
    flush_every: int = MISSING
    retry_s: float = MISSING


@dataclass
class NullTrackerSchema:
    _target_: str = MISSING


@dataclass
class PathsSchema:
    root_dir: str = MISSING
    cache_dir: str = MISSING
    mlruns_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class RunSchema:
    """The top level; config.yaml gives the values.

    `tags` is the one field with a value: an empty mapping that `qcxr.run.register_configs`
    leaves open (not struct), so `tags.note=baseline` adds a tag without a `+`.
    """

    seed: int = MISSING
    tags: dict[str, str] = field(default_factory=dict)
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
    "head": {
        "cdl": CDLHeadSchema,
        "dqc": DQCHeadSchema,
        "dqc_nn": DQCNNHeadSchema,
        "qcnn": QCNNHeadSchema,
    },
    "backbone": {
        "resnet": ResNetSchema,
        "resnet18_28": ResNet28Schema,
        "mobilenet_v2": MobileNetV2Schema,
        "tiny": TinySchema,
    },
    "optimizer": {
        "adam": AdamSchema,
        "adamw": AdamWSchema,
        "sgd": SGDSchema,
        "lion": LionSchema,
        "lamb": LambSchema,
        "adafactor": AdafactorSchema,
    },
    "data": {
        "synthetic": SyntheticDataSchema,
        "nih_cxr_lt": NIHCXRLTDataSchema,
        "mimic_cxr_lt": MIMICCXRLTDataSchema,
        "cxr_lt_2024": CXRLT2024DataSchema,
        "folder_csv": FolderCSVDataSchema,
        "medmnist": MedMNISTDataSchema,
        "ham10000": HAM10000DataSchema,
        "isic2017": ISIC2017DataSchema,
    },
    "trainer": {"trainer": TrainerSchema},
    "tracker": {"mlflow": MLflowTrackerSchema, "none": NullTrackerSchema},
    "paths": {"paths": PathsSchema},
}


def _is_int(annotation: Any) -> bool:
    """`int` or `int | None` (bool is not an int here)."""
    if annotation is int:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args == [int]
    return False


def _field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in fields(schema)}


def int_keys() -> frozenset[str]:
    """The dotted config keys that the schemas type as integers (`seed`, `trainer.max_epochs`, ...).

    A group key counts when every option of the group that declares it types it `int` (or
    `int | None`). The range syntax `key=a-b` expands for these keys only.

    Returns:
        Keys such as "seed", "trial", "trainer.batch_size", "ansatz.num_layers".
    """
    keys = {name for name, hint in _field_types(RunSchema).items() if _is_int(hint)}
    for group, options in GROUP_SCHEMAS.items():
        verdicts: dict[str, set[bool]] = {}
        for node in options.values():
            for name, hint in _field_types(node).items():
                verdicts.setdefault(name, set()).add(_is_int(hint))
        keys.update(f"{group}.{name}" for name, seen in verdicts.items() if seen == {True})
    return frozenset(keys)
