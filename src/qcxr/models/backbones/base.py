"""The `Backbone` value every factory returns: a Flax module, its weights and how to feed it."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcxr.models.backbones.preprocessing import Preprocessing

RANDOM_INIT_ID = "random-init"
# The networks are fully convolutional with a global pool, so variable shapes do not depend on
# the image size: random init traces a small image instead of a 224 px one.
INIT_IMAGE_SIZE = 32


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
        init_from: an earlier run (MLflow run id, or its run or checkpoint folder) whose best
            checkpoint's backbone weights replace these at the start of training, or None. Only
            stated here: `qcxr.run` loads them (models/ never reads a tracking store).
    """

    name: str
    module: nn.Module
    variables: dict[str, Any] | None
    feature_dim: int
    preprocessing: Preprocessing
    freeze: bool
    weights_id: str
    init_from: str | None = None

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
        images = jnp.zeros((1, INIT_IMAGE_SIZE, INIT_IMAGE_SIZE, 3), jnp.float32)
        # One compiled program: eagerly, every parameter shape compiles its own RNG kernel.
        return jax.jit(self.module.init)(key, images)
