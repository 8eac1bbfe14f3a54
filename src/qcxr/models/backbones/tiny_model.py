"""The tiny CNN: the CPU default and the tests' backbone, always randomly initialised."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class TinyCNN(nn.Module):
    """A small CNN for the CPU default and tests: 3×3 convs with ReLU, then a global average pool.

    The first conv keeps the resolution and each later one halves it ("SAME" padding), so any
    image size works; 8 px is the smallest the tests use. No batch norm, so its only collection
    is `params`, and `train` (the backbones' common signature) changes nothing.

    Attributes:
        feature_dim: channels of the last conv, i.e. the feature size.
        widths: channels of the convs before the last one.
    """

    feature_dim: int = 64
    widths: tuple[int, ...] = (16, 32)

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Pooled features of a batch of images.

        Args:
            images: f32[B, H, W, C].
            train: unused (no batch norm).

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
