"""ResNet in the Hugging Face `ResNetModel` layout (microsoft/resnet-50, microsoft/resnet-18)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcxr.models.backbones.layers import ConvLayer

RESNET50_REPO = "microsoft/resnet-50"
RESNET18_REPO = "microsoft/resnet-18"

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
            residual = ConvLayer(
                self.features, kernel_size=1, stride=self.stride, activation=None, name="shortcut"
            )(x)
        if self.layer_type == "basic":
            h = ConvLayer(self.features, stride=self.stride, name="layer_0")(x)
            h = ConvLayer(self.features, activation=None, name="layer_1")(h)
        else:
            reduced = self.features // self.reduction
            first, middle = (self.stride, 1) if self.downsample_in_bottleneck else (1, self.stride)
            h = ConvLayer(reduced, kernel_size=1, stride=first, name="layer_0")(x)
            h = ConvLayer(reduced, stride=middle, name="layer_1")(h)
            h = ConvLayer(self.features, kernel_size=1, activation=None, name="layer_2")(h)
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
        x = ConvLayer(self.embedding_size, kernel_size=7, stride=2, name="embedder")(x)
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
