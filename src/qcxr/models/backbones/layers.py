"""What the Hugging Face-layout backbones share: batch norm, the conv + batch norm layer, its init.

Batch norm follows torch.nn.BatchNorm2d (what the checkpoints and the papers' code were trained
with): in train mode it normalises by the batch's mean and biased variance over (N, H, W) and
updates the running statistics as `running = (1 - 0.1) * running + 0.1 * batch`, with the
unbiased variance (n / (n - 1) times the biased one, n = N·H·W) for the running variance; in
eval mode it normalises by the running statistics. PyTorch's momentum 0.1 is `BN_MOMENTUM = 0.9`
here (Flax's convention: the weight of the old value). Epsilon 1e-5 (BatchNorm2d's default)
unless a checkpoint says otherwise (google/mobilenet_v2_1.0_224: 1e-3).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch.nn.BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Flax counts momentum the other way round).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
# kaiming_normal_(fan_out) with ReLU gain: transformers' ResNet init.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Conv2d's own default (reset_parameters: kaiming_uniform_(a=sqrt(5))): U(±1/sqrt(fan_in)),
# i.e. variance 1 / (3 fan_in). What a PyTorch model that never re-initialises starts from
# (MedMNIST's ResNet-18 (28), adapted from kuangliu/pytorch-cifar).
TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class BatchNorm(nn.Module):
    """torch.nn.BatchNorm2d over the last axis, with its variables in Flax's names.

    Variables: `params/scale` (BatchNorm2d's `weight`, init 1), `params/bias` (init 0),
    `batch_stats/mean` (`running_mean`, init 0), `batch_stats/var` (`running_var`, init 1): the
    names `weights.hf_to_variables` maps a Hugging Face state dict onto.

    Attributes:
        momentum: weight of the old running value (PyTorch's 1 - momentum): 0.9.
        epsilon: added to the variance.
    """

    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Normalise x f32|bf16[..., C]: by the batch's statistics (train) or the running ones.

        In train mode (apply with `mutable=["batch_stats"]`) the running statistics are updated;
        the statistics are reduced in float32 whatever x's dtype. Returns x's shape and dtype.
        """
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            mean = jnp.mean(xf, axes)
            # E[x²] - E[x]² (one pass, as Flax's BatchNorm), clipped at 0 against round-off.
            var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
            if not self.is_initializing():
                n = x.size // features
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * jax.lax.stop_gradient(mean)
                ra_var.value = m * ra_var.value + (1.0 - m) * jax.lax.stop_gradient(unbiased)
        else:
            mean, var = ra_mean.value, ra_var.value
        # One multiply-add per element: y = x·a + b with a = scale / sqrt(var + eps).
        a = scale * jax.lax.rsqrt(var + self.epsilon)
        b = bias - mean * a
        return (x * a.astype(x.dtype) + b.astype(x.dtype)).astype(x.dtype)


class ConvLayer(nn.Module):
    """Conv (no bias) → BatchNorm → optional activation: transformers' ResNetConvLayer and
    MobileNetV2ConvLayer.

    Padding is PyTorch's symmetric `(k - 1) // 2`, or with `tf_padding` TensorFlow's "SAME" (the
    extra pixel at the bottom/right when the total is odd), which is what transformers'
    `apply_tf_padding` computes for MobileNetV2 checkpoints converted from TensorFlow. Batch norm
    runs in train mode when called with `train=True` (see `BatchNorm`).
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
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
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
        x = BatchNorm(momentum=BN_MOMENTUM, epsilon=self.epsilon, name="normalization")(x, train)
        return self.activation(x) if self.activation is not None else x
