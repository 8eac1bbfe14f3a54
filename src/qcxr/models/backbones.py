"""Image backbones: ResNet and MobileNetV2 in the Hugging Face layout, a tiny CNN, weight loading.

transformers 5 has no Flax models, so `ResNet` and `MobileNetV2` are our Flax modules whose
variables map one-to-one to a Hugging Face state dict (`ResNetModel`: `microsoft/resnet-50`,
`microsoft/resnet-18`; `MobileNetV2Model`: `google/mobilenet_v2_1.0_224`): the HF module path
`encoder.stages.0.layers.1.layer.2` is the Flax submodule path `encoder/stages_0/layers_1/layer_2`,
a convolution's `weight` (OIHW) is its `kernel` (HWIO), and a batch norm's `weight`, `bias`,
`running_mean`, `running_var` are `params/scale`, `params/bias`, `batch_stats/mean`,
`batch_stats/var`.

`resnet` (with `resnet50` and `resnet18`, the same factory with the depth bound), `mobilenet_v2`
and `tiny` are the Hydra targets of `conf/backbone/*.yaml`; each returns a `Backbone`, which also
says how its images are prepared (`Preprocessing`). Weights come from a local folder or file, then
the Hugging Face cache, then (only with `allow_download=True`) the Hub; nothing else is ever tried,
and random weights only ever come from `pretrained=False`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import huggingface_hub
import huggingface_hub.constants
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
RANDOM_INIT_ID = "random-init"
RESNET50_REPO = "microsoft/resnet-50"
RESNET18_REPO = "microsoft/resnet-18"
MOBILENET_V2_REPO = "google/mobilenet_v2_1.0_224"

# The architecture fields of transformers' ResNetConfig, as in the Hub checkpoints' config.json.
RESNET50_ARCH: dict[str, Any] = {
    "depths": (3, 4, 6, 3),
    "hidden_sizes": (256, 512, 1024, 2048),
    "layer_type": "bottleneck",
    "embedding_size": 64,
    "downsample_in_first_stage": False,
    "downsample_in_bottleneck": False,
}
RESNET18_ARCH: dict[str, Any] = {
    "depths": (2, 2, 2, 2),
    "hidden_sizes": (64, 128, 256, 512),
    "layer_type": "basic",
    "embedding_size": 64,
    "downsample_in_first_stage": False,
    "downsample_in_bottleneck": False,
}
# depth -> (architecture, Hub repository); `resnet(depth)` accepts exactly these depths.
RESNET_DEPTHS: dict[int, tuple[dict[str, Any], str]] = {
    18: (RESNET18_ARCH, RESNET18_REPO),
    50: (RESNET50_ARCH, RESNET50_REPO),
}
# What transformers assumes for a key that a checkpoint's config.json leaves out.
_HF_CONFIG_DEFAULTS: dict[str, Any] = {**RESNET50_ARCH, "num_channels": 3, "hidden_act": "relu"}

# MobileNetV2 variants: the fields of transformers' MobileNetV2Config that differ between them.
# "hf" is google/mobilenet_v2_1.0_224 (a TF-trained checkpoint: TF "SAME" padding, BN eps 1e-3);
# "paper" is the torchvision-style MobileNetV2 of arXiv 2501.06225's code (PyTorch symmetric
# padding, BatchNorm2d's default eps 1e-5), which has the same layers and parameter tree.
MOBILENET_V2_VARIANTS: dict[str, dict[str, Any]] = {
    "hf": {"tf_padding": True, "layer_norm_eps": 1e-3},
    "paper": {"tf_padding": False, "layer_norm_eps": 1e-5},
}
# The rest of MobileNetV2Config, fixed here; transformers' defaults are these values, and they are
# what the google/mobilenet_v2_1.0_224 config.json holds.
_MOBILENET_V2_CONFIG: dict[str, Any] = {
    "num_channels": 3,
    "depth_multiplier": 1.0,
    "depth_divisible_by": 8,
    "min_depth": 8,
    "expand_ratio": 6.0,
    "output_stride": 32,
    "first_layer_is_expansion": True,
    "finegrained_output": True,
    "hidden_act": "relu6",
}
_MOBILENET_V2_CONFIG_DEFAULTS = {**_MOBILENET_V2_CONFIG, **MOBILENET_V2_VARIANTS["hf"]}
# Sandler et al. 2018, Table 2, width 1.0: (expansion t, channels c, repeats n, first stride s).
# The first row is the stem's block; transformers and torchvision build the same 17 blocks.
_MOBILENET_V2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_MOBILENET_V2_STEM = 32
_MOBILENET_V2_FEATURES = 1280

# Image statistics (transformers.utils.constants): IMAGENET_DEFAULT_* for the ResNets and the
# paper's MobileNetV2, IMAGENET_STANDARD_* (i.e. [-1, 1]) for google/mobilenet_v2_1.0_224.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
# PIL.Image.Resampling codes, as transformers' preprocessor configs store them.
BILINEAR = 2
BICUBIC = 3
RESIZE_MODES = ("shortest_side", "square")

# torch.nn.BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Flax counts momentum the other way round).
_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9
# kaiming_normal_(fan_out) with ReLU gain: transformers' ResNet init.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# MobileNetV2 draws He (fan_in) instead of torchvision's and the paper code's fan_out: a depthwise
# 3×3's fan_out is 9·C, so fan_out shrinks the signal by ~sqrt(C) per block, which train-mode
# batch norm undoes in PyTorch but our batch norm, on fixed statistics, does not. Measured at
# 128 px: pooled features ~1e-9 with fan_out (a dead network), ~1.5 with fan_in.
_MOBILENET_V2_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# The networks are fully convolutional with a global pool, so variable shapes do not depend on
# the image size: random init traces a small image instead of a 224 px one.
_INIT_IMAGE_SIZE = 32


class CheckpointNotFoundError(FileNotFoundError):
    """No pretrained weights where we were told (or allowed) to look."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors or config do not match the backbone's architecture."""


# ----------------------------------------------------------------------------------------------
# Modules


class _ConvLayer(nn.Module):
    """Conv (no bias) → BatchNorm → optional activation: transformers' ResNetConvLayer and
    MobileNetV2ConvLayer.

    Padding is PyTorch's symmetric `(k - 1) // 2`, or with `tf_padding` TensorFlow's "SAME" (the
    extra pixel at the bottom/right when the total is odd), which is what transformers'
    `apply_tf_padding` computes for MobileNetV2 checkpoints converted from TensorFlow.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    groups: int = 1
    activation: Callable[[jax.Array], jax.Array] | None = nn.relu
    tf_padding: bool = False
    epsilon: float = _BN_EPSILON
    kernel_init: Callable[..., jax.Array] = _CONV_INIT

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = (self.kernel_size - 1) // 2
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.stride, self.stride),
            # Explicit symmetric padding otherwise: "SAME" pads asymmetrically at stride 2 on even
            # sizes, which would not match PyTorch's Conv2d(padding=(k - 1) // 2).
            padding="SAME" if self.tf_padding else ((pad, pad), (pad, pad)),
            feature_group_count=self.groups,
            use_bias=False,
            kernel_init=self.kernel_init,
            name="convolution",
        )(x)
        x = nn.BatchNorm(
            use_running_average=True,
            momentum=_BN_MOMENTUM,
            epsilon=self.epsilon,
            name="normalization",
        )(x)
        return self.activation(x) if self.activation is not None else x


class _ResidualLayer(nn.Module):
    """transformers' ResNetBasicLayer (two 3×3) or ResNetBottleNeckLayer (1×1, 3×3, 1×1)."""

    features: int
    stride: int
    layer_type: str
    downsample_in_bottleneck: bool = False
    reduction: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        if x.shape[-1] != self.features or self.stride != 1:
            residual = _ConvLayer(
                self.features, kernel_size=1, stride=self.stride, activation=None, name="shortcut"
            )(x)
        if self.layer_type == "basic":
            h = _ConvLayer(self.features, stride=self.stride, name="layer_0")(x)
            h = _ConvLayer(self.features, activation=None, name="layer_1")(h)
        else:
            reduced = self.features // self.reduction
            first, middle = (self.stride, 1) if self.downsample_in_bottleneck else (1, self.stride)
            h = _ConvLayer(reduced, kernel_size=1, stride=first, name="layer_0")(x)
            h = _ConvLayer(reduced, stride=middle, name="layer_1")(h)
            h = _ConvLayer(self.features, kernel_size=1, activation=None, name="layer_2")(h)
        return nn.relu(h + residual)


class _Stage(nn.Module):
    features: int
    depth: int
    stride: int
    layer_type: str
    downsample_in_bottleneck: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.depth):
            x = _ResidualLayer(
                self.features,
                stride=self.stride if i == 0 else 1,
                layer_type=self.layer_type,
                # transformers passes the flag to a stage's first layer only.
                downsample_in_bottleneck=self.downsample_in_bottleneck and i == 0,
                name=f"layers_{i}",
            )(x)
        return x


class _Encoder(nn.Module):
    depths: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    layer_type: str
    downsample_in_first_stage: bool
    downsample_in_bottleneck: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, (features, depth) in enumerate(zip(self.hidden_sizes, self.depths, strict=True)):
            stride = 2 if (i > 0 or self.downsample_in_first_stage) else 1
            x = _Stage(
                features,
                depth=depth,
                stride=stride,
                layer_type=self.layer_type,
                downsample_in_bottleneck=self.downsample_in_bottleneck,
                name=f"stages_{i}",
            )(x)
        return x


class _Embeddings(nn.Module):
    embedding_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _ConvLayer(self.embedding_size, kernel_size=7, stride=2, name="embedder")(x)
        # PyTorch's MaxPool2d pads with -inf, as lax.reduce_window does here.
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNet(nn.Module):
    """ResNet v1.5 with the module tree of transformers' `ResNetModel`; returns pooled features.

    The fields are those of transformers' `ResNetConfig` (ReLU, 3 input channels):
    `microsoft/resnet-50` is `RESNET50_ARCH`, `microsoft/resnet-18` is `RESNET18_ARCH`.

    Batch norm always runs in inference mode, on the running statistics in the `batch_stats`
    collection, which are never updated: the backbone is used frozen, or fine-tuned with frozen
    batch-norm statistics (its `params`, batch-norm scales and biases included, may train).
    Apply it as `module.apply(variables, images)`; no collection is mutable.

    Attributes:
        depths: residual layers per stage.
        hidden_sizes: output channels per stage; the feature size is `hidden_sizes[-1]`.
        layer_type: "bottleneck" (1×1, 3×3, 1×1) or "basic" (two 3×3).
        embedding_size: channels of the 7×7 stride-2 stem convolution.
        downsample_in_first_stage: stride 2 in the first stage too.
        downsample_in_bottleneck: stride on a bottleneck's first 1×1 instead of its 3×3.
    """

    depths: tuple[int, ...] = RESNET50_ARCH["depths"]
    hidden_sizes: tuple[int, ...] = RESNET50_ARCH["hidden_sizes"]
    layer_type: str = "bottleneck"
    embedding_size: int = 64
    downsample_in_first_stage: bool = False
    downsample_in_bottleneck: bool = False

    @property
    def feature_dim(self) -> int:
        """Size of the pooled features: the last stage's channel count."""
        return self.hidden_sizes[-1]

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """Pooled features of a batch of images.

        Args:
            images: f32[B, H, W, 3], ImageNet-normalised (H, W >= 32 for five stride-2 steps).

        Returns:
            f32[B, hidden_sizes[-1]]: the global average of the last stage's activations, equal
            to transformers' `pooler_output` flattened.
        """
        if self.layer_type not in ("basic", "bottleneck"):
            raise ValueError(f"layer_type={self.layer_type!r} is not 'basic' or 'bottleneck'")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images f32[B, H, W, 3], got shape {images.shape}")
        x = _Embeddings(self.embedding_size, name="embedder")(images.astype(jnp.float32))
        x = _Encoder(
            tuple(self.depths),
            tuple(self.hidden_sizes),
            self.layer_type,
            self.downsample_in_first_stage,
            self.downsample_in_bottleneck,
            name="encoder",
        )(x)
        return jnp.mean(x, axis=(1, 2))


class _InvertedResidual(nn.Module):
    """transformers' MobileNetV2InvertedResidual: 1×1 expand, 3×3 depthwise, 1×1 linear reduce.

    With `stem_features` it is transformers' MobileNetV2Stem instead: a 3×3 stride-2 `first_conv`
    to `stem_features` channels, then the block without the expansion (expansion ratio 1).
    """

    features: int
    expansion: int
    stride: int
    tf_padding: bool
    epsilon: float
    kernel_init: Callable[..., jax.Array]
    stem_features: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(
            _ConvLayer,
            activation=nn.relu6,
            tf_padding=self.tf_padding,
            epsilon=self.epsilon,
            kernel_init=self.kernel_init,
        )
        if self.stem_features:
            x = conv(self.stem_features, kernel_size=3, stride=2, name="first_conv")(x)
        expanded = x.shape[-1] * self.expansion
        h = x
        if self.expansion != 1:
            h = conv(expanded, kernel_size=1, name="expand_1x1")(h)
        h = conv(expanded, stride=self.stride, groups=expanded, name="conv_3x3")(h)
        h = conv(self.features, kernel_size=1, activation=None, name="reduce_1x1")(h)
        if self.stride == 1 and x.shape[-1] == self.features and not self.stem_features:
            return x + h
        return h


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with the module tree of transformers' `MobileNetV2Model`.

    The layers are those of Sandler et al. 2018 (Table 2), as transformers and torchvision build
    them: a stem (3×3 stride-2 conv to 32 channels plus the first block), 16 inverted-residual
    blocks `layer_0` … `layer_15`, a 1×1 conv to 1280 channels, ReLU6 after every conv but the
    blocks' last, then a global average pool. 2,223,872 parameters (`params`), plus the batch-norm
    statistics (`batch_stats`).

    Batch norm always runs in inference mode on the `batch_stats`, which are never updated (as in
    `ResNet`).

    Attributes:
        tf_padding: TensorFlow "SAME" padding (google/mobilenet_v2_1.0_224); False pads
            symmetrically as PyTorch (torchvision, the paper's code).
        layer_norm_eps: batch-norm epsilon (transformers' name): 1e-3 for the Google checkpoint,
            1e-5 (BatchNorm2d's default) for torchvision's model.
    """

    tf_padding: bool = True
    layer_norm_eps: float = 1e-3

    @property
    def feature_dim(self) -> int:
        """Size of the pooled features: 1280."""
        return _MOBILENET_V2_FEATURES

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """Pooled features of a batch of images.

        Args:
            images: f32[B, H, W, 3], normalised as the weights expect (H, W >= 1; five stride-2
                steps, so 32 px gives a 1×1 final map).

        Returns:
            f32[B, 1280]: the global average of the last 1×1 conv's activations, equal to
            transformers' `pooler_output`.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images f32[B, H, W, 3], got shape {images.shape}")
        options = {
            "tf_padding": self.tf_padding,
            "epsilon": self.layer_norm_eps,
            "kernel_init": _MOBILENET_V2_CONV_INIT,
        }
        (_, stem_out, _, _), *blocks = _MOBILENET_V2_BLOCKS
        x = _InvertedResidual(
            stem_out, 1, 1, stem_features=_MOBILENET_V2_STEM, name="conv_stem", **options
        )(images.astype(jnp.float32))
        index = 0
        for expansion, features, repeats, stride in blocks:
            for i in range(repeats):
                x = _InvertedResidual(
                    features, expansion, stride if i == 0 else 1, name=f"layer_{index}", **options
                )(x)
                index += 1
        x = _ConvLayer(
            _MOBILENET_V2_FEATURES, kernel_size=1, activation=nn.relu6, name="conv_1x1", **options
        )(x)
        return jnp.mean(x, axis=(1, 2))


class TinyCNN(nn.Module):
    """A small CNN for the CPU default and tests: 3×3 convs with ReLU, then a global average pool.

    The first conv keeps the resolution and each later one halves it ("SAME" padding), so any
    image size works; 8 px is the smallest the tests use. No batch norm, so its only collection
    is `params`.

    Attributes:
        feature_dim: channels of the last conv, i.e. the feature size.
        widths: channels of the convs before the last one.
    """

    feature_dim: int = 64
    widths: tuple[int, ...] = (16, 32)

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """Pooled features of a batch of images.

        Args:
            images: f32[B, H, W, C].

        Returns:
            f32[B, feature_dim].
        """
        if images.ndim != 4:
            raise ValueError(f"expected images f32[B, H, W, C], got shape {images.shape}")
        x = images.astype(jnp.float32)
        for i, features in enumerate((*self.widths, self.feature_dim)):
            stride = 1 if i == 0 else 2
            conv = nn.Conv(
                features, (3, 3), strides=(stride, stride), padding="SAME", name=f"conv_{i}"
            )
            x = nn.relu(conv(x))
        return jnp.mean(x, axis=(1, 2))


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
    images = jax.ShapeDtypeStruct((1, _INIT_IMAGE_SIZE, _INIT_IMAGE_SIZE, 3), jnp.float32)
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


# ----------------------------------------------------------------------------------------------
# Backbones, as Hydra builds them


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a backbone's images are prepared: resize, centre crop, rescale by 1/255, normalise.

    The backbone states it, because it is a property of its weights (the image processor its
    checkpoint was trained with); the data pipeline and the feature cache key take it from here.

    Attributes:
        image_size: side of the square crop fed to the backbone.
        resize_size: the resize target before the crop: the shortest side ("shortest_side") or
            both sides ("square"); >= image_size, and equal to it means no crop.
        mean: per-channel (RGB) mean subtracted after rescaling to [0, 1].
        std: per-channel (RGB) standard deviation divided by after that.
        resample: PIL resampling filter of the resize (2 bilinear, 3 bicubic), as transformers'
            preprocessor configs store it.
        resize_mode: "shortest_side" keeps the aspect ratio (transformers' processors);
            "square" resizes to resize_size × resize_size (torchvision `Resize((s, s))`).
    """

    image_size: int
    resize_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: int = BICUBIC
    resize_mode: str = "shortest_side"

    def __post_init__(self) -> None:
        problems = []
        if self.image_size < 1:
            problems.append(f"image_size must be positive, got {self.image_size}")
        if self.resize_size < self.image_size:
            problems.append(
                f"resize_size {self.resize_size} is smaller than image_size {self.image_size} "
                "(the crop would not fit): set backbone.resize_size >= backbone.image_size"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append(f"mean and std need 3 (RGB) values, got {self.mean} and {self.std}")
        elif min(self.std) <= 0:
            problems.append(f"std must be positive, got {self.std}")
        if self.resample not in (BILINEAR, BICUBIC):
            problems.append(f"resample must be {BILINEAR} (bilinear) or {BICUBIC} (bicubic)")
        if self.resize_mode not in RESIZE_MODES:
            problems.append(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if problems:
            raise ValueError("bad preprocessing: " + "; ".join(problems))


def _default_resize(image_size: int, resize_size: int | None) -> int:
    # ImageNet evaluation resizes 256 and crops 224 (the ResNet processors' crop_pct 0.875, the
    # MobileNetV2 processor's shortest_edge 256): keep that ratio by default.
    return resize_size if resize_size is not None else image_size * 8 // 7


@dataclasses.dataclass(frozen=True, eq=False)
class Backbone:
    """A feature extractor: a Flax module, its weights and how to feed it.

    Attributes:
        name: "resnet50", "resnet18", "mobilenet_v2", "mobilenet_v2_paper" or "tiny".
        module: Flax module, images f32[B, image_size, image_size, C] -> f32[B, feature_dim],
            applied as `module.apply(variables, images)`.
        variables: the loaded pretrained variables, or None for random init (see `init`).
        feature_dim: size of the features.
        preprocessing: how images are prepared for it (size, resize, crop, mean/std).
        freeze: train the backbone or not; the optimizer reads it (a freeze mask), the module
            does not.
        weights_id: "sha256:<hex>" of the checkpoint file, or "random-init" (then the weights
            depend on the init key, which a feature cache must add to its key).
    """

    name: str
    module: nn.Module
    variables: dict[str, Any] | None
    feature_dim: int
    preprocessing: Preprocessing
    freeze: bool
    weights_id: str

    @property
    def image_size(self) -> int:
        """Side of the square input the weights expect (the crop size)."""
        return self.preprocessing.image_size

    @property
    def resize_size(self) -> int:
        """Side to resize to before the centre crop to `image_size`."""
        return self.preprocessing.resize_size

    @property
    def pretrained(self) -> bool:
        """Whether the weights came from a checkpoint."""
        return self.variables is not None

    def init(self, key: jax.Array) -> dict[str, Any]:
        """The variables to start from: the checkpoint's, or a random init from `key`.

        Args:
            key: PRNG key for random init; unused when the weights are pretrained.

        Returns:
            The module's variables ({"params": ...} plus "batch_stats" for a ResNet or a
            MobileNetV2).
        """
        if self.variables is not None:
            return self.variables
        images = jnp.zeros((1, _INIT_IMAGE_SIZE, _INIT_IMAGE_SIZE, 3), jnp.float32)
        # One compiled program: eagerly, every parameter shape compiles its own RNG kernel.
        return jax.jit(self.module.init)(key, images)


def _hf_backbone(
    name: str,
    module: ResNet | MobileNetV2,
    preprocessing: Preprocessing,
    freeze: bool,
    pretrained: bool,
    weights: str | None,
    allow_download: bool,
    repo_id: str,
    check_config: Callable[[Path], None],
) -> Backbone:
    """A backbone in a Hugging Face layout: random init, or a checkpoint found and checked."""
    backbone = {
        "name": name,
        "module": module,
        "feature_dim": module.feature_dim,
        "preprocessing": preprocessing,
        "freeze": freeze,
    }
    if not pretrained:
        if weights is not None:
            raise ValueError(
                f"backbone.weights={weights} is set but backbone.pretrained=false; drop one of them"
            )
        logger.warning(
            "%s: pretrained=false, so the backbone starts from random weights "
            "(not ImageNet-pretrained weights)",
            name,
        )
        return Backbone(variables=None, weights_id=RANDOM_INIT_ID, **backbone)

    files = locate_checkpoint(repo_id, weights=weights, allow_download=allow_download)
    if files.config is not None:
        check_config(files.config)
    else:
        logger.warning(
            "%s: no %s beside %s; the tensor shapes are checked but what changes no shape "
            "(stride placement, padding rule, batch-norm epsilon) cannot be",
            name,
            CONFIG_NAME,
            files.weights,
        )
    variables = hf_to_variables(load_file(str(files.weights)), module)
    weights_id = f"sha256:{_sha256(files.weights)}"
    logger.info("%s: weights from %s (%s), %s", name, files.weights, files.source, weights_id)
    return Backbone(variables=variables, weights_id=weights_id, **backbone)


def resnet(
    depth: int = 50,
    pretrained: bool = True,
    weights: str | None = None,
    allow_download: bool = False,
    freeze: bool = True,
    repo_id: str | None = None,
    image_size: int = 224,
    resize_size: int | None = None,
) -> Backbone:
    """ResNet-`depth` in the `microsoft/resnet-<depth>` layout, ImageNet-pretrained unless told
    otherwise. `resnet50` and `resnet18` are this factory with the depth bound.

    Preprocessing is microsoft/resnet-50's processor: shortest side to `resize_size` (bicubic),
    centre crop `image_size`, ImageNet mean/std.

    Args:
        depth: 18 or 50 (`RESNET_DEPTHS`).
        pretrained: load a checkpoint; False gives random init (with a warning).
        weights: a folder with `model.safetensors` + `config.json`, or a `.safetensors` file;
            None looks in the Hugging Face cache for `repo_id`.
        allow_download: fetch `repo_id` from the Hub when it is not cached.
        freeze: keep the backbone's weights fixed in training (read by the optimizer).
        repo_id: Hub repository of the checkpoint; None gives microsoft/resnet-<depth>.
        image_size: input side (centre crop).
        resize_size: shortest side before the crop; None gives image_size * 8 // 7 (256 for 224).

    Returns:
        The backbone: features f32[B, 2048] (ResNet-50) or f32[B, 512] (ResNet-18).

    Raises:
        ValueError: a depth other than 18 or 50.
        CheckpointNotFoundError: pretrained, but no checkpoint found and downloading is off.
        CheckpointMismatchError: the checkpoint is not a ResNet of this depth.
    """
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"backbone depth={depth!r} is not one of {sorted(RESNET_DEPTHS)}")
    arch, default_repo = RESNET_DEPTHS[depth]
    name = f"resnet{depth}"
    wanted = {**arch, "num_channels": 3, "hidden_act": "relu"}
    return _hf_backbone(
        name,
        ResNet(**arch),
        Preprocessing(image_size, _default_resize(image_size, resize_size)),
        freeze,
        pretrained,
        weights,
        allow_download,
        repo_id if repo_id is not None else default_repo,
        lambda path: _check_hf_config(path, "resnet", wanted, _HF_CONFIG_DEFAULTS, name),
    )


resnet50 = functools.partial(resnet, 50)
resnet18 = functools.partial(resnet, 18)


def mobilenet_v2(
    pretrained: bool = True,
    weights: str | None = None,
    allow_download: bool = False,
    freeze: bool = True,
    repo_id: str = MOBILENET_V2_REPO,
    variant: str = "hf",
    image_size: int | None = None,
    resize_size: int | None = None,
) -> Backbone:
    """MobileNetV2 (width 1.0, 1280 features): the Google checkpoint, or the paper's model.

    `variant="hf"`: the `google/mobilenet_v2_1.0_224` layout and preprocessing (TF "SAME"
    padding, BN eps 1e-3; its image processor: shortest side 256 bilinear, crop 224, mean and std
    0.5), ImageNet-pretrained unless told otherwise.
    `variant="paper"`: the torchvision-style MobileNetV2 of arXiv 2501.06225's code (PyTorch
    padding, BN eps 1e-5), trained from scratch at 128×128 (resized to a square, no crop, ImageNet
    mean/std); there are no weights for it, so it needs `pretrained=False`. Both variants have
    the same 2,223,872 parameters in the same tree.

    Args:
        pretrained: load a checkpoint; False gives random init (with a warning).
        weights: a folder with `model.safetensors` + `config.json`, or a `.safetensors` file;
            None looks in the Hugging Face cache for `repo_id`.
        allow_download: fetch `repo_id` from the Hub when it is not cached.
        freeze: keep the backbone's weights fixed in training (read by the optimizer).
        repo_id: Hub repository of the checkpoint.
        variant: "hf" or "paper" (`MOBILENET_V2_VARIANTS`).
        image_size: input side (the crop); None gives 224 ("hf") or 128 ("paper").
        resize_size: resize target before the crop; None gives image_size * 8 // 7 for "hf"
            (256 for 224) and image_size for "paper" (no crop).

    Returns:
        The backbone: features f32[B, 1280].

    Raises:
        ValueError: an unknown variant, or variant "paper" with pretrained weights.
        CheckpointNotFoundError: pretrained, but no checkpoint found and downloading is off.
        CheckpointMismatchError: the checkpoint is not a google/mobilenet_v2_1.0_224-style model.
    """
    if variant not in MOBILENET_V2_VARIANTS:
        raise ValueError(
            f"backbone.variant={variant!r} is not one of {sorted(MOBILENET_V2_VARIANTS)}"
        )
    if variant == "paper":
        if pretrained:
            raise ValueError(
                "backbone.variant=paper is the paper's MobileNetV2, trained from scratch: there "
                "are no pretrained weights for it. Use backbone=mobilenet_v2_paper, or set "
                "backbone.pretrained=false (or variant=hf for the ImageNet-pretrained model)"
            )
        size = 128 if image_size is None else image_size
        # 128 px: the authors' upload (b43bd6f) sizes its MLP baseline for 3*128*128 inputs; the
        # square bilinear resize, no crop and ImageNet mean/std are code/preprocessing.py's
        # transforms.Resize((128, 128)) + Normalize, added to their repository later (977f8a9).
        preprocessing = Preprocessing(
            size,
            size if resize_size is None else resize_size,
            resample=BILINEAR,
            resize_mode="square",
        )
        name = "mobilenet_v2_paper"
    else:
        size = 224 if image_size is None else image_size
        # transformers' MobileNetV2ImageProcessor defaults (those of the Google checkpoint).
        preprocessing = Preprocessing(
            size,
            _default_resize(size, resize_size),
            mean=IMAGENET_STANDARD_MEAN,
            std=IMAGENET_STANDARD_STD,
            resample=BILINEAR,
        )
        name = "mobilenet_v2"
    options = MOBILENET_V2_VARIANTS[variant]
    wanted = {**_MOBILENET_V2_CONFIG, **options}
    return _hf_backbone(
        name,
        MobileNetV2(**options),
        preprocessing,
        freeze,
        pretrained,
        weights,
        allow_download,
        repo_id,
        lambda path: _check_hf_config(
            path, "mobilenet_v2", wanted, _MOBILENET_V2_CONFIG_DEFAULTS, name
        ),
    )


def tiny(feature_dim: int = 64, image_size: int = 64, freeze: bool = False) -> Backbone:
    """The tiny CNN backbone (CPU default and tests); always randomly initialised.

    Args:
        feature_dim: size of the features.
        image_size: input side; images are resized to it directly (resize_size == image_size),
            bicubic, with ImageNet mean/std (what the data pipeline has always given it).
        freeze: keep its weights fixed in training (read by the optimizer).

    Returns:
        The backbone: features f32[B, feature_dim], variables from `Backbone.init(key)`.
    """
    return Backbone(
        name="tiny",
        module=TinyCNN(feature_dim=feature_dim),
        variables=None,
        feature_dim=feature_dim,
        preprocessing=Preprocessing(image_size, image_size),
        freeze=freeze,
        weights_id=RANDOM_INIT_ID,
    )
