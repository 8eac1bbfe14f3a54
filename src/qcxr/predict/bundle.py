"""A trained run's model as a folder: what `qcxr.predict` and the MLflow pyfunc model load.

A bundle is written into the run folder as `model/` at the end of every finished run and logged
with the MLflow model (`qcxr.predict.pyfunc`). It holds:

- `config.yaml`: the run's resolved config (the `config.yaml` artifact). Loading rebuilds the
  classifier from it with `qcxr.run.rebuild_model`, the rebuild `qcxr.robustness` uses, so the
  backbone's preprocessing, the head and the task's labels come from the same code as in training;
  no Hydra config is asked of the user.
- `variables.safetensors`: the best checkpoint's variables, every array of its train state but the
  optimizer's (`params`, and `model_state` where the state has one: batch norm's running
  statistics), plus the backbone's constants the run evaluated with (`constants/...`: e.g. the
  statistics a `backbone.init_from` source gave it), keys joined with "/".
- `model.json`: the format version, the task's kind and labels, the backbone's name, weights
  fingerprint and whether its weights are referenced, the run id and the best epoch.

A frozen pretrained backbone is referenced, not copied (a decision, docs/predict.md): its weights
are bit-identical to the checkpoint it was loaded from (the optimizer's freeze mask,
train/optim.py), so the bundle keeps only its fingerprint (`weights_id`, the SHA-256 of the
`model.safetensors` file). Loading finds the file where the run's config says (backbone.weights,
else the Hugging Face cache), never downloads, and refuses a file with another fingerprint. For
ResNet-50 that keeps 94 MB out of every run's model. A backbone that trained, was randomly
initialised or came from an earlier run (`backbone.init_from`) is copied, constants included: no
other copy of its weights exists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from qcxr.data.preprocess import PreprocessConfig, normalisation_table, preprocess_from_mapping
from qcxr.train.steps import task_loss

log = logging.getLogger(__name__)

FORMAT = 1  # bump when a bundle written today could not be read by the loader of the day
CONFIG_FILE = "config.yaml"
VARIABLES_FILE = "variables.safetensors"
META_FILE = "model.json"
OPTIMIZER_KEYS = ("opt_state", "step")  # train-state entries a prediction never reads
BACKBONE_PARAMS = "params/backbone/"
CONSTANTS = "constants"  # the backbone's non-trainable collections the run evaluated with
MODEL_STATE = "model_state"  # the train state's non-trainable variables (qcxr.run.MODEL_STATE_KEY)
# What a referenced backbone's bundle leaves out (rebuilt from its checkpoint file on load): its
# parameters and its batch-norm statistics.
REFERENCED = (BACKBONE_PARAMS, f"{MODEL_STATE}/backbone/")


class BundleError(ValueError):
    """A model folder that cannot be loaded; the message names the file and the fix."""


def inference_variables(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of a train state that a prediction reads, flattened to "/"-joined keys.

    Args:
        state: a train state ({"params", "opt_state", "step"}, and "model_state" where batch
            norm trains).

    Returns:
        {"params/head/Dense_0/kernel": f32[...], ...}: every entry but the optimizer's.
    """
    return _flat({k: v for k, v in state.items() if k not in OPTIMIZER_KEYS})


def references_backbone(backbone: Any) -> bool:
    """Whether a bundle references the backbone's weights instead of copying them: pretrained
    (loaded from a checkpoint file), frozen (never changed by training) and not replaced by an
    earlier run's (`backbone.init_from`)."""
    return bool(
        backbone.pretrained and backbone.freeze and getattr(backbone, "init_from", None) is None
    )


def _flat(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(jax.device_get(dict(tree)), sep="/")
    return {f"{prefix}{k}": np.ascontiguousarray(np.asarray(v)) for k, v in flat.items()}


def write_bundle(
    folder: Path,
    config: Mapping[str, Any],
    state: Mapping[str, Any],
    backbone: Any,
    label_names: Sequence[str],
    kind: str,
    run: Mapping[str, Any] | None = None,
    *,
    constants: Mapping[str, Any],
) -> Path:
    """Write a run's model folder.

    Args:
        folder: the folder to write (created; files in it are replaced).
        config: the run's resolved config (nested).
        state: the best checkpoint's train state.
        constants: the backbone's non-trainable collections the run evaluated with
            ({"backbone": {...}}), stored for a state without a model_state (older checkpoints);
            a state's own model_state is what the run evaluated with and is stored instead.
            Neither is kept for a referenced backbone (its checkpoint file's, rebuilt on load).
        backbone: the run's `Backbone` (its pretrained/freeze flags and weights_id are read).
        label_names: the task's labels, in logit order.
        kind: "multilabel" or "multiclass".
        run: extra facts for model.json (run_id, best_epoch).

    Returns:
        folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    variables = inference_variables(state)
    referenced = references_backbone(backbone)
    if referenced:
        variables = {k: v for k, v in variables.items() if not k.startswith(REFERENCED)}
    elif MODEL_STATE not in state:
        variables.update(_flat(constants, f"{CONSTANTS}/"))
    save_file(variables, str(folder / VARIABLES_FILE))
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(_plain(config), sort_keys=False))
    meta = {
        "format": FORMAT,
        "kind": str(kind),
        "labels": list(label_names),
        "backbone": {
            "name": backbone.name,
            "weights_id": backbone.weights_id,
            "referenced": referenced,
        },
        **dict(run or {}),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))
    return folder


def _plain(tree: Any) -> Any:
    """Tuples to lists, so that yaml.safe_dump writes plain YAML."""
    if isinstance(tree, Mapping):
        return {str(k): _plain(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_plain(v) for v in tree]
    return tree


@dataclass
class LoadedModel:
    """A model folder, rebuilt and ready to predict.

    Attributes:
        classifier: backbone + head (qcxr.run.rebuild_model).
        variables: the restored train-state entries ({"params": ..., and "model_state" where the
            checkpoint has one}).
        constants: the backbone's non-trainable collections the classifier applies with (the
            state's model_state where it has one, else the run's constants).
        label_names: the task's labels, in probability-column order.
        kind: "multilabel" (sigmoid per label) or "multiclass" (softmax over classes).
        preprocessing: the backbone's preprocessing (the data pipeline's PreprocessConfig).
        meta: model.json.
        config: the run's resolved config (config.yaml), as loaded.
    """

    classifier: Any
    variables: dict[str, Any]
    constants: Any
    label_names: list[str]
    kind: str
    preprocessing: PreprocessConfig
    meta: dict[str, Any]
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        link = task_loss(self.kind)[2]
        classifier = self.classifier

        def probabilities(variables, constants, images):
            logits = classifier.logits(variables["params"], constants, images)
            return link(logits)

        self._probabilities = jax.jit(probabilities)
        self.table = normalisation_table(self.preprocessing.mean, self.preprocessing.std)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Probabilities of a batch of normalised images.

        Args:
            images: f32[B, S, S, 3], S the backbone's image size (qcxr.predict.images).

        Returns:
            f32[B, L]: per label (multilabel) or per class (multiclass, rows sum to 1).
        """
        out = self._probabilities(self.variables, self.constants, np.asarray(images, np.float32))
        return np.asarray(out)


def load_bundle(folder: str | os.PathLike) -> LoadedModel:
    """Rebuild a model folder's classifier and restore its variables; no network is used.

    Args:
        folder: a folder written by `write_bundle` (a run folder's `model/`, or the `bundle`
            artifact of a downloaded MLflow model).

    Returns:
        The LoadedModel.

    Raises:
        BundleError: a missing file, another format, a referenced backbone whose weights are not
            found offline or have another fingerprint, or variables that do not fit the
            rebuilt model's tree (names and shapes listed).
    """
    from qcxr.run import rebuild_model  # run.py imports the trainer and Hydra: only when loading

    folder = Path(folder)
    for name in (CONFIG_FILE, VARIABLES_FILE, META_FILE):
        if not (folder / name).is_file():
            raise BundleError(
                f"{folder} is not a qcxr model folder: {name} is missing. Fix: pass a run "
                "folder whose run finished (it holds model/), a run id, or models:/<name>/<ver>"
            )
    meta = json.loads((folder / META_FILE).read_text())
    if int(meta.get("format", 0)) != FORMAT:
        raise BundleError(
            f"{folder / META_FILE} has format {meta.get('format')}; this qcxr reads format "
            f"{FORMAT}. Fix: load it with the qcxr of its run (tag git_commit)"
        )
    config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    if isinstance(config.get("backbone"), dict) and "allow_download" in config["backbone"]:
        config["backbone"]["allow_download"] = False  # loading never reaches the network
    try:
        model = rebuild_model(config)
    except FileNotFoundError as err:  # CheckpointNotFoundError: the referenced weights
        raise BundleError(
            f"the model in {folder} references its frozen backbone's weights "
            f"({meta['backbone']['weights_id']}) and they are not on this machine: {err}"
        ) from err
    backbone = model.classifier.backbone
    expected_id = meta["backbone"]["weights_id"]
    if meta["backbone"]["referenced"] and backbone.weights_id != expected_id:
        raise BundleError(
            f"the model in {folder} was trained on backbone weights {expected_id}, but the "
            f"checkpoint found for {backbone.name} is {backbone.weights_id}. Fix: put the "
            "run's checkpoint back (backbone.weights in its config.yaml, or the Hugging Face "
            "cache's snapshot of that revision)"
        )
    referenced = bool(meta["backbone"]["referenced"])
    template = inference_variables(model.state_template)
    stored = load_file(str(folder / VARIABLES_FILE))
    if not any(k.startswith(f"{MODEL_STATE}/") for k in stored):
        # A state without a model_state (older runs, or a referenced backbone's): the constants
        # stored beside the parameters, or the rebuilt ones.
        template = {k: v for k, v in template.items() if not k.startswith(f"{MODEL_STATE}/")}
        if not referenced:
            template.update(_flat(model.constants, f"{CONSTANTS}/"))
    flat = _restore(template, stored, REFERENCED if referenced else None, folder)
    variables = traverse_util.unflatten_dict(flat, sep="/")
    # What the run evaluated with: the state's model state (batch-norm running statistics; a
    # referenced backbone's rebuilt from its checkpoint), else the stored or rebuilt constants.
    constants = variables.pop(CONSTANTS, None) or variables.get(MODEL_STATE) or model.constants
    labels = list(meta["labels"])
    if labels != model.label_names:
        raise BundleError(
            f"{folder / META_FILE} lists the labels {labels}, but its config.yaml builds "
            f"{model.label_names}: the folder is damaged. Fix: download the model again"
        )
    return LoadedModel(
        classifier=model.classifier,
        variables=variables,
        constants=constants,
        label_names=labels,
        kind=model.kind,
        preprocessing=preprocess_from_mapping(dataclasses.asdict(backbone.preprocessing)),
        meta=meta,
        config=config,
    )


def _restore(
    template: Mapping[str, np.ndarray],
    stored: Mapping[str, np.ndarray],
    referenced: tuple[str, ...] | None,
    folder: Path,
) -> dict[tuple[str, ...] | str, Any]:
    """The template's leaves replaced by the stored ones, checked name by name and shape by shape
    (leaves under the `referenced` prefixes keep the rebuilt, referenced weights)."""
    needed = {k for k in template if referenced is None or not k.startswith(referenced)}
    missing = sorted(needed - set(stored))
    unexpected = sorted(set(stored) - set(template))
    shapes = sorted(
        f"{k}: stored {stored[k].shape}, model {template[k].shape}"
        for k in needed & set(stored)
        if stored[k].shape != template[k].shape
    )
    if missing or unexpected or shapes:
        parts = [
            f"{what} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shapes", shapes))
            if keys
        ]
        raise BundleError(
            f"{folder / VARIABLES_FILE} does not fit the model its config.yaml builds: "
            + "; ".join(parts)
            + ". Fix: load it with the qcxr of its run (tag git_commit)"
        )
    return {k: (stored[k] if k in needed else template[k]) for k in template}
