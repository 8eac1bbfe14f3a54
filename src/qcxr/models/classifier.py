"""Classifier = backbone + head, as pure apply functions over one parameter tree.

Parameters are `{"backbone": ..., "head": ...}`; the backbone's non-trainable collections (its
batch-norm running statistics) are held apart as the model state `{"backbone": {"batch_stats":
...}}` (`{"backbone": {}}` for a backbone without batch norm), which the train state carries.
Whether the backbone's weights train is the optimizer's business (its freeze mask, docs/style.md);
the classifier reads `backbone.freeze` only to keep a frozen backbone's batch norm in eval mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from qcxr.models.backbones import Backbone

COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A backbone and a head.

    Attributes:
        backbone: the image feature extractor.
        head: a Flax module mapping features f32[B, D] to logits f32[B, L].
        compute_dtype: "float32", or "bfloat16" to run the backbone's convolutions in bf16
            (parameters stay float32; the head and the loss always run in float32).
    """

    backbone: Backbone
    head: nn.Module
    compute_dtype: str = "float32"

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}"
            )

    def init(self, key: jax.Array) -> tuple[dict[str, Any], dict[str, Any]]:
        """Initial parameters and model state.

        The backbone and the head draw from different sub-keys (fold_in 0 and 1), so two runs
        with the same key and different heads start from the same random backbone.

        Args:
            key: the init stream's key.

        Returns:
            (params {"backbone", "head"}, model state {"backbone": non-param collections}).
        """
        variables = self.backbone.init(jax.random.fold_in(key, 0))
        features = jnp.zeros((1, self.backbone.feature_dim), jnp.float32)
        # One compiled program for the head's init: eagerly, every shape compiles its own kernel.
        head_vars = jax.jit(self.head.init)(jax.random.fold_in(key, 1), features)
        params = {"backbone": variables["params"], "head": head_vars["params"]}
        model_state = {"backbone": {k: v for k, v in variables.items() if k != "params"}}
        return params, model_state

    @property
    def trains_batch_norm(self) -> bool:
        """Whether a train step runs the backbone's batch norm on batch statistics: the backbone
        trains (not frozen). A frozen backbone stays in eval mode, its statistics unchanged."""
        return not self.backbone.freeze

    def features(
        self, params: dict, model_state: dict, images: jax.Array, train: bool = False
    ) -> jax.Array | tuple[jax.Array, dict]:
        """Backbone features.

        Args:
            params: the parameter tree (only "backbone" is read).
            model_state: the model state of `init` (or of the train state).
            images: f32[B, S, S, 3].
            train: a train step's call: batch norm of a backbone that trains normalises by the
                batch's statistics and updates the running ones (`trains_batch_norm`).

        Returns:
            f32[B, D]; with train, (f32[B, D], the new model state), whose leaves keep their
            dtypes (a frozen backbone's, or one without batch norm, is `model_state` itself).
        """
        backbone = params["backbone"]
        if self.compute_dtype == "bfloat16":
            backbone = jax.tree.map(lambda x: x.astype(jnp.bfloat16), backbone)
            images = images.astype(jnp.bfloat16)
        variables = {"params": backbone, **model_state["backbone"]}
        module = self.backbone.module
        if not train:
            return module.apply(variables, images).astype(jnp.float32)
        if not (self.trains_batch_norm and model_state["backbone"]):
            return module.apply(variables, images).astype(jnp.float32), model_state
        out, updated = module.apply(
            variables, images, train=True, mutable=list(model_state["backbone"])
        )
        new = jax.tree.map(
            lambda new, old: new.astype(old.dtype), dict(updated), model_state["backbone"]
        )
        return out.astype(jnp.float32), {**model_state, "backbone": new}

    @property
    def sows(self) -> bool:
        """Whether the head sows diagnostics (the DQC head's MPS discarded weight, when its
        native simulation truncates: head.max_bond set)."""
        return (
            getattr(getattr(self.head, "sim", None), "max_bond", None) is not None
            and getattr(self.head, "simulator", "native") == "native"
        )

    def head_logits(
        self,
        params: dict,
        features: jax.Array,
        dropout_key: jax.Array | None = None,
        noise_key: jax.Array | None = None,
        aux: bool = False,
    ):
        """Logits of the head on features (reads params["head"]).

        Args:
            params: the parameter tree.
            features: f32[B, D].
            dropout_key: None (deterministic: evaluation), or the train step's dropout key: the
                head then runs with `train=True` and `rngs={"dropout": dropout_key}`.
            noise_key: None, or the train step's key of the "noise" stream (a noisy or
                finite-shot DQC's trajectories and shots; other heads ignore it). Without it
                such a head uses its evaluation key (heads.eval_noise_key).
            aux: also return what the head sows (see `sows`), as {name: f32[] mean}.

        Returns:
            f32[B, L]; with aux, (f32[B, L], {name: f32[]}) (empty where the head sows nothing).
        """
        rngs = {}
        if dropout_key is not None:
            rngs["dropout"] = dropout_key
        if noise_key is not None:
            rngs["noise"] = noise_key
        kwargs = {}
        if rngs:
            kwargs = {"train": dropout_key is not None, "rngs": rngs}
        if not (aux and self.sows):
            out = self.head.apply({"params": params["head"]}, features, **kwargs)
            out = out.astype(jnp.float32)
            return (out, {}) if aux else out
        out, sown = self.head.apply(
            {"params": params["head"]}, features, mutable=["intermediates"], **kwargs
        )
        flat = traverse_util.flatten_dict(sown.get("intermediates", {}), sep="/")
        metrics = {k: jnp.mean(jnp.stack(v)).astype(jnp.float32) for k, v in flat.items()}
        return out.astype(jnp.float32), metrics

    def logits(
        self,
        params: dict,
        model_state: dict,
        images: jax.Array,
        dropout_key: jax.Array | None = None,
        noise_key: jax.Array | None = None,
        aux: bool = False,
        train: bool = False,
    ):
        """Logits f32[B, L] of images f32[B, S, S, 3]; the keys and `aux` as in `head_logits`.

        With train (a train step), returns (what `head_logits` returns, the new model state):
        see `features`.
        """
        if not train:
            feats = self.features(params, model_state, images)
            return self.head_logits(params, feats, dropout_key, noise_key, aux)
        feats, new_state = self.features(params, model_state, images, train=True)
        return self.head_logits(params, feats, dropout_key, noise_key, aux), new_state
