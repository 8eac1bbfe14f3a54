"""Train state and jitted train/eval steps over an apply function.

The trainer sees the model only as `apply(params, batch) -> logits f32[B, L]`: the image path
(backbone + head) and the cached-feature path (head only) are two apply functions, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from qcxr import metrics

ApplyFn = Callable[[Any, dict], jax.Array]
TrainState = dict  # {"params": pytree, "opt_state": pytree, "step": int32[]}


def init_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    """A fresh train state.

    Args:
        params: the model's parameter tree.
        tx: the optimizer.

    Returns:
        {"params", "opt_state", "step" (int32 0)}; the optimizer state is built in one jit.
    """
    return {
        "params": params,
        "opt_state": jax.jit(tx.init)(params),
        "step": jnp.zeros((), jnp.int32),
    }


def make_train_step(apply: ApplyFn, tx: optax.GradientTransformation):
    """One optimizer step (or micro-step under gradient accumulation), jitted.

    Args:
        apply: (params, batch) -> logits f32[B, L].
        tx: the optimizer (freeze mask and accumulation included).

    Returns:
        step(state, batch) -> (state, loss f32[]): the masked mean BCE before the update.
    """

    def loss_fn(params, batch):
        return metrics.masked_bce(apply(params, batch), batch["labels"], batch["mask"])

    def step(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss

    return jax.jit(step, donate_argnums=0)


def make_eval_step(apply: ApplyFn):
    """Probabilities and per-example loss of a batch, jitted.

    Args:
        apply: (params, batch) -> logits f32[B, L].

    Returns:
        step(params, batch) -> (probabilities f32[B, L], per-example BCE f32[B]).
    """

    def step(params, batch):
        logits = apply(params, batch)
        return jax.nn.sigmoid(logits), metrics.per_example_bce(logits, batch["labels"])

    return jax.jit(step)
