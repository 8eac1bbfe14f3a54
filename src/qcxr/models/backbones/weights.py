"""Hugging Face checkpoints: state dict <-> Flax variables, and finding or downloading the files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import huggingface_hub
import huggingface_hub.constants
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from qcxr.models.backbones.base import INIT_IMAGE_SIZE
from qcxr.models.backbones.mobilenet_v2_model import MobileNetV2
from qcxr.models.backbones.resnet_model import ResNet

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointNotFoundError(FileNotFoundError):
    """No pretrained weights where we were told (or allowed) to look."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors or config do not match the backbone's architecture."""


# ----------------------------------------------------------------------------------------------
# Hugging Face state dict <-> Flax variables

# HF batch-norm tensor name -> (Flax collection, leaf name).
_NORM_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
_NORM_LEAVES_INVERSE = {v: k for k, v in _NORM_LEAVES.items()}
# The Hub holds ResNetForImageClassification and MobileNetV2ForImageClassification: the bare model
# nested under `resnet.` / `mobilenet_v2.` (transformers' base_model_prefix), plus an ImageNet
# `classifier.`, which a backbone does not use.
_HF_BACKBONE_PREFIXES: dict[type[nn.Module], str] = {
    ResNet: "resnet.",
    MobileNetV2: "mobilenet_v2.",
}
_HF_HEAD_PREFIX = "classifier."
# BatchNorm2d's counter of training batches: bookkeeping, no effect on inference.
_HF_IGNORED_SUFFIX = ".num_batches_tracked"

_FlaxLeaf = tuple[str, tuple[str, ...]]  # (collection, path inside the collection)


def _hf_key_to_flax(key: str) -> _FlaxLeaf | None:
    """`encoder.stages.0.layers.1.layer.2.convolution.weight` -> ("params", (..., "kernel"))."""
    *modules, leaf = key.split(".")
    path: list[str] = []
    for part in modules:
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    if not path:
        return None
    if path[-1] == "convolution" and leaf == "weight":
        return "params", (*path, "kernel")
    if path[-1] == "normalization" and leaf in _NORM_LEAVES:
        collection, name = _NORM_LEAVES[leaf]
        return collection, (*path, name)
    return None


def _flax_to_hf_key(collection: str, path: tuple[str, ...]) -> str:
    *modules, leaf = path
    modules = [re.sub(r"_(\d+)$", r".\1", part) for part in modules]
    name = "weight" if leaf == "kernel" else _NORM_LEAVES_INVERSE[(collection, leaf)]
    return ".".join([*modules, name])


def _expected_leaves(module: nn.Module) -> dict[_FlaxLeaf, tuple[int, ...]]:
    """Every variable of `module` with its shape, without computing anything."""
    images = jax.ShapeDtypeStruct((1, INIT_IMAGE_SIZE, INIT_IMAGE_SIZE, 3), jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.key(0), images)
    return {
        (collection, path): tuple(leaf.shape)
        for collection, tree in shapes.items()
        for path, leaf in traverse_util.flatten_dict(tree).items()
    }


def _format_keys(title: str, keys: list[str], limit: int = 20) -> str:
    shown = "\n".join(f"    {k}" for k in sorted(keys)[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"  {title} ({len(keys)}):\n{shown}{more}"


def hf_to_variables(
    state_dict: Mapping[str, np.ndarray], module: ResNet | MobileNetV2
) -> dict[str, dict[str, Any]]:
    """Converts a Hugging Face state dict into the Flax variables of `module`, one-to-one.

    Accepts a bare model's state dict (`ResNetModel`, `MobileNetV2Model`) or an image
    classification one (keys prefixed `resnet.` / `mobilenet_v2.`; its `classifier.*` tensors are
    dropped). `*.num_batches_tracked` counters are dropped. Every other tensor must fill exactly
    one Flax leaf, and every leaf must be filled.

    Args:
        state_dict: HF tensor name -> array (float, any precision); convolution weights OIHW.
        module: the `ResNet` or `MobileNetV2` whose variables to fill.

    Returns:
        {"params": ..., "batch_stats": ...} of float32 arrays, convolution kernels HWIO.

    Raises:
        CheckpointMismatchError: listing missing keys, unexpected keys and shape mismatches.
    """
    backbone_prefix = _HF_BACKBONE_PREFIXES[type(module)]
    tensors: dict[str, np.ndarray] = {}
    unexpected: list[str] = []
    prefixed = any(k.startswith(backbone_prefix) for k in state_dict)
    for key, value in state_dict.items():
        if key.endswith(_HF_IGNORED_SUFFIX):
            continue
        if prefixed:
            if key.startswith(_HF_HEAD_PREFIX):
                continue
            if not key.startswith(backbone_prefix):
                unexpected.append(key)
                continue
            key = key[len(backbone_prefix) :]
        tensors[key] = value

    expected = _expected_leaves(module)
    filled: dict[_FlaxLeaf, np.ndarray] = {}
    bad_shapes: list[str] = []
    bad_leaves: set[_FlaxLeaf] = set()
    for key, value in tensors.items():
        leaf = _hf_key_to_flax(key)
        if leaf is None or leaf not in expected:
            unexpected.append(key)
            continue
        array = np.asarray(value, dtype=np.float32)
        if leaf[1][-1] == "kernel" and array.ndim == 4:
            array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if array.shape != expected[leaf]:
            bad_shapes.append(
                f"{key}: checkpoint {tuple(np.shape(value))}, "
                f"backbone expects {_hf_shape(leaf, expected[leaf])}"
            )
            bad_leaves.add(leaf)
            continue
        filled[leaf] = array
    missing = [
        _flax_to_hf_key(*leaf) for leaf in expected if leaf not in filled and leaf not in bad_leaves
    ]

    if missing or unexpected or bad_shapes:
        parts = [f"checkpoint does not match {_describe(module)}:"]
        if missing:
            parts.append(_format_keys("missing keys", missing))
        if unexpected:
            parts.append(_format_keys("unexpected keys", unexpected))
        if bad_shapes:
            parts.append(_format_keys("shape mismatches", bad_shapes))
        raise CheckpointMismatchError("\n".join(parts))

    variables: dict[str, dict[str, Any]] = {}
    for collection in sorted({c for c, _ in expected}):
        flat = {path: jnp.asarray(a) for (c, path), a in filled.items() if c == collection}
        variables[collection] = traverse_util.unflatten_dict(flat)
    return variables


def _hf_shape(leaf: _FlaxLeaf, shape: tuple[int, ...]) -> tuple[int, ...]:
    if leaf[1][-1] == "kernel" and len(shape) == 4:
        h, w, i, o = shape
        return (o, i, h, w)
    return shape


def _describe(module: ResNet | MobileNetV2) -> str:
    if isinstance(module, MobileNetV2):
        return (
            f"MobileNetV2(tf_padding={module.tf_padding}, layer_norm_eps={module.layer_norm_eps})"
        )
    return (
        f"ResNet(depths={tuple(module.depths)}, hidden_sizes={tuple(module.hidden_sizes)}, "
        f"layer_type={module.layer_type!r}, embedding_size={module.embedding_size})"
    )


def variables_to_hf(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Converts `ResNet` or `MobileNetV2` variables back to a Hugging Face state dict.

    The inverse of `hf_to_variables`: a bare `ResNetModel` / `MobileNetV2Model` state dict (no
    `num_batches_tracked` counters, no prefix); save it with `safetensors.numpy.save_file` to
    export fine-tuned weights.

    Args:
        variables: {"params": ..., "batch_stats": ...} of a `ResNet` or a `MobileNetV2`.

    Returns:
        HF tensor name -> float32 numpy array, convolution weights OIHW.
    """
    state: dict[str, np.ndarray] = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in traverse_util.flatten_dict(dict(variables[collection])).items():
            array = np.asarray(leaf, dtype=np.float32)
            if path[-1] == "kernel":
                array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            state[_flax_to_hf_key(collection, path)] = np.ascontiguousarray(array)
    return state


# The ResNet names the tests and earlier code use; the conversion is the same for every backbone.
hf_to_resnet_variables = hf_to_variables
resnet_variables_to_hf = variables_to_hf


# ----------------------------------------------------------------------------------------------
# Finding checkpoint files


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """Where a checkpoint was found.

    Attributes:
        weights: the `.safetensors` file.
        config: its `config.json`, or None where there is none (a direct file path).
        source: "local", "hf-cache" or "download".
    """

    weights: Path
    config: Path | None
    source: str


def locate_checkpoint(
    repo_id: str, weights: str | Path | None = None, allow_download: bool = False
) -> CheckpointFiles:
    """Finds a Hugging Face checkpoint: `weights`, else the HF cache, else (if allowed) the Hub.

    Args:
        repo_id: Hub repository, e.g. "microsoft/resnet-50".
        weights: a folder holding `model.safetensors` (and normally `config.json`), or a
            `.safetensors` file. When given, it is the only place looked at.
        allow_download: fetch `repo_id` from the Hub into the HF cache when it is not cached.

    Returns:
        The files found.

    Raises:
        CheckpointNotFoundError: nothing found; the message names where it looked and the fixes.
    """
    if weights is not None:
        return _locate_local(Path(weights).expanduser())

    cache_dir = huggingface_hub.constants.HF_HUB_CACHE
    cached = huggingface_hub.try_to_load_from_cache(repo_id, WEIGHTS_NAME)
    if isinstance(cached, str):
        config = huggingface_hub.try_to_load_from_cache(repo_id, CONFIG_NAME)
        return CheckpointFiles(
            Path(cached), Path(config) if isinstance(config, str) else None, "hf-cache"
        )

    if allow_download:
        logger.info("downloading %s/%s from the Hugging Face Hub", repo_id, WEIGHTS_NAME)
        try:
            path = huggingface_hub.hf_hub_download(repo_id, WEIGHTS_NAME)
            config = huggingface_hub.hf_hub_download(repo_id, CONFIG_NAME)
        except Exception as error:  # any Hub/network failure: say what we tried, keep the cause
            raise CheckpointNotFoundError(
                f"could not download {repo_id}/{WEIGHTS_NAME} from the Hugging Face Hub "
                f"({type(error).__name__}: {error}). Without network, copy the checkpoint folder "
                "to this machine and pass backbone.weights=/path/to/folder."
            ) from error
        return CheckpointFiles(Path(path), Path(config), "download")

    raise CheckpointNotFoundError(
        f"no pretrained weights for {repo_id}: backbone.weights is not set, {WEIGHTS_NAME} is not "
        f"in the Hugging Face cache ({cache_dir}, set by HF_HUB_CACHE or HF_HOME), and "
        "downloading is off. Fix one of:\n"
        f"  backbone.weights=/path/to/folder  a folder with {WEIGHTS_NAME} and {CONFIG_NAME} "
        "(a Hub snapshot or save_pretrained output), or a .safetensors file\n"
        f"  backbone.allow_download=true      fetch {repo_id} from the Hub into the cache\n"
        "  backbone.pretrained=false         random init (not the paper's ImageNet weights)"
    )


def _locate_local(path: Path) -> CheckpointFiles:
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            found = sorted(p.name for p in path.iterdir())[:10]
            raise CheckpointNotFoundError(
                f"backbone.weights={path} is a folder without {WEIGHTS_NAME} (it holds {found}). "
                "Point it at a folder saved by save_pretrained or downloaded from the Hub, "
                "or at a .safetensors file."
            )
        config = path / CONFIG_NAME
        return CheckpointFiles(weights, config if config.is_file() else None, "local")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointNotFoundError(
                f"backbone.weights={path} is not a .safetensors file (PyTorch .bin/.pt files are "
                "not read; convert with safetensors or re-save with save_pretrained)"
            )
        return CheckpointFiles(path, None, "local")
    raise CheckpointNotFoundError(f"backbone.weights={path} does not exist")


def _check_hf_config(
    path: Path,
    model_type: str,
    wanted: Mapping[str, Any],
    defaults: Mapping[str, Any],
    name: str,
) -> None:
    """Fails when a checkpoint's config.json describes another architecture.

    The tensor shapes catch most mismatches; this also catches what changes no shape: the
    ResNet stride placement flags (`downsample_in_*`), MobileNetV2's padding rule and batch-norm
    epsilon.

    Args:
        path: the config.json.
        model_type: transformers' model type, e.g. "resnet"; a config without one is taken as it.
        wanted: config key -> the value this backbone needs.
        defaults: config key -> what transformers assumes when the file leaves the key out.
        name: the backbone's name, for the message.
    """
    config = json.loads(path.read_text())
    differences = []
    if config.get("model_type", model_type) != model_type:
        differences.append(
            f"model_type: checkpoint {config['model_type']!r}, expected {model_type!r}"
        )
    for key, want in wanted.items():
        got = config.get(key, defaults[key])
        got = tuple(got) if isinstance(got, list) else got
        if got != want:
            differences.append(f"{key}: checkpoint {got!r}, {name} expects {want!r}")
    if differences:
        raise CheckpointMismatchError(
            f"{path} describes another architecture than {name}:\n  "
            + "\n  ".join(differences)
            + f"\nPoint backbone.weights at a {name} checkpoint or choose the matching backbone."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
