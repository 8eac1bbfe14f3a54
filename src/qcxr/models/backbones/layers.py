"""What the Hugging Face-layout backbones share: the conv + batch norm layer and its init."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

# torch.nn.BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Flax counts momentum the other way round).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
# kaiming_normal_(fan_out) with ReLU gain: transformers' ResNet init.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvLayer(nn.Module):
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
    epsilon: float = BN_EPSILON
    kernel_init: Callable[..., jax.Array] = CONV_INIT

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
            momentum=BN_MOMENTUM,
            epsilon=self.epsilon,
            name="normalization",
        )(x)
        return self.activation(x) if self.activation is not None else x
