"""MobileNetV2 in the Hugging Face `MobileNetV2Model` layout (`google/mobilenet_v2_1.0_224`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcxr.models.backbones.layers import ConvLayer

MOBILENET_V2_REPO = "google/mobilenet_v2_1.0_224"
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
# The convolutions' init. The paper's variant starts as torchvision's MobileNetV2 and the paper's
# code: He normal, fan_out. A depthwise 3×3's fan_out is 9·C, so fan_out shrinks the signal by
# ~sqrt(C) per block before batch norm; train-mode batch norm (what a backbone that trains runs)
# renormalises it, exactly as in PyTorch: at 64 px the random network's pooled features in train
# mode are ~0.41 with fan_out and with fan_in alike. On the initial statistics (eval mode: a
# frozen random backbone, or the fixed statistics of the trainer before issue 22) fan_out leaves
# them ~1e-9, fan_in ~1.3, so the "hf" variant's random init (only ever a stand-in for its
# pretrained weights) stays fan_in.
MOBILENET_V2_CONV_INIT_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
MOBILENET_V2_CONV_INIT_FAN_IN = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


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
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(
            ConvLayer,
            activation=nn.relu6,
            tf_padding=self.tf_padding,
            epsilon=self.epsilon,
            kernel_init=self.kernel_init,
        )
        if self.stem_features:
            x = conv(self.stem_features, kernel_size=3, stride=2, name="first_conv")(x, train)
        expanded = x.shape[-1] * self.expansion
        h = x
        if self.expansion != 1:
            h = conv(expanded, kernel_size=1, name="expand_1x1")(h, train)
        h = conv(expanded, stride=self.stride, groups=expanded, name="conv_3x3")(h, train)
        h = conv(self.features, kernel_size=1, activation=None, name="reduce_1x1")(h, train)
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

    Batch norm runs on the running statistics (`batch_stats`) by default, and on the batch's
    statistics, updating the running ones, with `train=True` and `mutable=["batch_stats"]` (as
    in `ResNet`; `layers.BatchNorm`).

    Attributes:
        tf_padding: TensorFlow "SAME" padding (google/mobilenet_v2_1.0_224); False pads
            symmetrically as PyTorch (torchvision, the paper's code).
        layer_norm_eps: batch-norm epsilon (transformers' name): 1e-3 for the Google checkpoint,
            1e-5 (BatchNorm2d's default) for torchvision's model.
        kernel_init: the convolutions' random init: He fan_in (default) or fan_out
            (`MOBILENET_V2_CONV_INIT_FAN_OUT`: torchvision's, the paper variant's).
    """

    tf_padding: bool = True
    layer_norm_eps: float = 1e-3
    kernel_init: Callable[..., jax.Array] = MOBILENET_V2_CONV_INIT_FAN_IN

    @property
    def feature_dim(self) -> int:
        """Size of the pooled features: 1280."""
        return _MOBILENET_V2_FEATURES

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Pooled features of a batch of images.

        Args:
            images: f32[B, H, W, 3], normalised as the weights expect (H, W >= 1; five stride-2
                steps, so 32 px gives a 1×1 final map).
            train: batch norm on the batch's statistics (apply with mutable=["batch_stats"]).

        Returns:
            f32[B, 1280]: the global average of the last 1×1 conv's activations, equal to
            transformers' `pooler_output`.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images f32[B, H, W, 3], got shape {images.shape}")
        options = {
            "tf_padding": self.tf_padding,
            "epsilon": self.layer_norm_eps,
            "kernel_init": self.kernel_init,
        }
        (_, stem_out, _, _), *blocks = _MOBILENET_V2_BLOCKS
        x = _InvertedResidual(
            stem_out, 1, 1, stem_features=_MOBILENET_V2_STEM, name="conv_stem", **options
        )(images.astype(jnp.float32), train)
        index = 0
        for expansion, features, repeats, stride in blocks:
            for i in range(repeats):
                x = _InvertedResidual(
                    features, expansion, stride if i == 0 else 1, name=f"layer_{index}", **options
                )(x, train)
                index += 1
        x = ConvLayer(
            _MOBILENET_V2_FEATURES, kernel_size=1, activation=nn.relu6, name="conv_1x1", **options
        )(x, train)
        return jnp.mean(x, axis=(1, 2))
