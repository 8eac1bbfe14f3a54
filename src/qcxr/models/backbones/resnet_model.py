"""ResNet in the Hugging Face `ResNetModel` layout (microsoft/resnet-50, microsoft/resnet-18)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcxr.models.backbones.layers import CONV_INIT, ConvLayer

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
    kernel_init: Callable[..., jax.Array] = CONV_INIT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvLayer, kernel_init=self.kernel_init)
        residual = x
        if x.shape[-1] != self.features or self.stride != 1:
            residual = conv(
                self.features, kernel_size=1, stride=self.stride, activation=None, name="shortcut"
            )(x, train)
        if self.layer_type == "basic":
            h = conv(self.features, stride=self.stride, name="layer_0")(x, train)
            h = conv(self.features, activation=None, name="layer_1")(h, train)
        else:
            reduced = self.features // self.reduction
            first, middle = (self.stride, 1) if self.downsample_in_bottleneck else (1, self.stride)
            h = conv(reduced, kernel_size=1, stride=first, name="layer_0")(x, train)
            h = conv(reduced, stride=middle, name="layer_1")(h, train)
            h = conv(self.features, kernel_size=1, activation=None, name="layer_2")(h, train)
        return nn.relu(h + residual)


class _Stage(nn.Module):
    features: int
    depth: int
    stride: int
    layer_type: str
    downsample_in_bottleneck: bool
    kernel_init: Callable[..., jax.Array] = CONV_INIT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in range(self.depth):
            x = _ResidualLayer(
                self.features,
                stride=self.stride if i == 0 else 1,
                layer_type=self.layer_type,
                # transformers passes the flag to a stage's first layer only.
                downsample_in_bottleneck=self.downsample_in_bottleneck and i == 0,
                kernel_init=self.kernel_init,
                name=f"layers_{i}",
            )(x, train)
        return x


class _Encoder(nn.Module):
    depths: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    layer_type: str
    downsample_in_first_stage: bool
    downsample_in_bottleneck: bool
    kernel_init: Callable[..., jax.Array] = CONV_INIT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, (features, depth) in enumerate(zip(self.hidden_sizes, self.depths, strict=True)):
            stride = 2 if (i > 0 or self.downsample_in_first_stage) else 1
            x = _Stage(
                features,
                depth=depth,
                stride=stride,
                layer_type=self.layer_type,
                downsample_in_bottleneck=self.downsample_in_bottleneck,
                kernel_init=self.kernel_init,
                name=f"stages_{i}",
            )(x, train)
        return x


class _Embeddings(nn.Module):
    embedding_size: int
    stem: str = "imagenet"
    kernel_init: Callable[..., jax.Array] = CONV_INIT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.stem == "cifar":  # 3×3 stride 1, no max-pool: 28/32 px inputs keep their size
            return ConvLayer(
                self.embedding_size, kernel_size=3, kernel_init=self.kernel_init, name="embedder"
            )(x, train)
        x = ConvLayer(
            self.embedding_size,
            kernel_size=7,
            stride=2,
            kernel_init=self.kernel_init,
            name="embedder",
        )(x, train)
        # PyTorch's MaxPool2d pads with -inf, as lax.reduce_window does here.
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


# The stems `ResNet.stem` accepts: ImageNet's 7×7 stride-2 conv + 3×3 stride-2 max-pool
# (transformers, torchvision), or CIFAR's 3×3 stride-1 conv (kuangliu/pytorch-cifar, MedMNIST v2's
# ResNet-18 (28)).
RESNET_STEMS = ("imagenet", "cifar")


class ResNet(nn.Module):
    """ResNet v1.5 with the module tree of transformers' `ResNetModel`; returns pooled features.

    The fields are those of transformers' `ResNetConfig` (ReLU): `microsoft/resnet-50` is
    `RESNET50_ARCH`, `microsoft/resnet-18` is `RESNET18_ARCH` (3 input channels, ImageNet stem).
    With `stem="cifar"` and `num_channels=1` it is MedMNIST v2's ResNet-18 (28) (their
    MedMNIST2D/models.py, adapted from kuangliu/pytorch-cifar): the same BasicBlocks and shortcuts
    (a 1×1 conv + batch norm where the shape changes), stage strides 1, 2, 2, 2, and a global
    average pool.

    Batch norm (`layers.BatchNorm`, torch.nn.BatchNorm2d's semantics) runs on the running
    statistics in the `batch_stats` collection by default:
    `module.apply(variables, images)`. A training step of a backbone that trains calls
    `module.apply(variables, images, train=True, mutable=["batch_stats"])`, which normalises by
    the batch's statistics and returns the updated running statistics beside the features.

    Attributes:
        depths: residual layers per stage.
        hidden_sizes: output channels per stage; the feature size is `hidden_sizes[-1]`.
        layer_type: "bottleneck" (1×1, 3×3, 1×1) or "basic" (two 3×3).
        embedding_size: channels of the stem convolution.
        downsample_in_first_stage: stride 2 in the first stage too.
        downsample_in_bottleneck: stride on a bottleneck's first 1×1 instead of its 3×3.
        stem: "imagenet" or "cifar" (`RESNET_STEMS`).
        num_channels: input channels the first conv takes: 3, or 1 (grey). A 1-channel network
            fed 3 channels (the data pipeline's grey replicated as RGB) takes their mean, which
            is the grey image again.
        kernel_init: the convolutions' initialiser (`layers.CONV_INIT`: transformers' He
            fan_out; `layers.TORCH_CONV_INIT`: torch.nn.Conv2d's default).
    """

    depths: tuple[int, ...] = RESNET50_ARCH["depths"]
    hidden_sizes: tuple[int, ...] = RESNET50_ARCH["hidden_sizes"]
    layer_type: str = "bottleneck"
    embedding_size: int = 64
    downsample_in_first_stage: bool = False
    downsample_in_bottleneck: bool = False
    stem: str = "imagenet"
    num_channels: int = 3
    kernel_init: Callable[..., jax.Array] = CONV_INIT

    @property
    def feature_dim(self) -> int:
        """Size of the pooled features: the last stage's channel count."""
        return self.hidden_sizes[-1]

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Pooled features of a batch of images.

        Args:
            images: f32[B, H, W, 3] (or f32[B, H, W, 1] when num_channels is 1), normalised as
                the weights expect (ImageNet stem: H, W >= 32 for five stride-2 steps).
            train: batch norm on the batch's statistics (apply with mutable=["batch_stats"]).

        Returns:
            f32[B, hidden_sizes[-1]]: the global average of the last stage's activations, equal
            to transformers' `pooler_output` flattened.
        """
        if self.layer_type not in ("basic", "bottleneck"):
            raise ValueError(f"layer_type={self.layer_type!r} is not 'basic' or 'bottleneck'")
        if self.stem not in RESNET_STEMS:
            raise ValueError(f"stem={self.stem!r} is not one of {RESNET_STEMS}")
        accepted = (3,) if self.num_channels == 3 else (self.num_channels, 3)
        if images.ndim != 4 or images.shape[-1] not in accepted:
            raise ValueError(
                f"expected images f32[B, H, W, C] with C in {accepted}, got shape {images.shape}"
            )
        x = images.astype(jnp.float32)
        if x.shape[-1] != self.num_channels:  # grey replicated as RGB -> grey
            x = jnp.mean(x, axis=-1, keepdims=True)
        x = _Embeddings(self.embedding_size, self.stem, self.kernel_init, name="embedder")(x, train)
        x = _Encoder(
            tuple(self.depths),
            tuple(self.hidden_sizes),
            self.layer_type,
            self.downsample_in_first_stage,
            self.downsample_in_bottleneck,
            self.kernel_init,
            name="encoder",
        )(x, train)
        return jnp.mean(x, axis=(1, 2))
