"""Train state and jitted train/eval steps over an apply function.

The trainer sees the model only as `apply(params, batch[, dropout_key]) -> logits f32[B, L]`: the
image path (backbone + head) and the cached-feature path (head only) are two apply functions,
nothing more. Only the train step passes a dropout key (one per step); evaluation never does, so it
is deterministic.

A model with state (batch-norm running statistics) has a *stateful* apply: it also takes
`model_state=` and, in a train step (`train=True`), returns `(logits, new model state)`; the train
state carries the model state, train steps update it, and evaluation reads it (`stateful=True` in
`make_train_step` and `make_eval_step`). Under gradient accumulation every micro-step updates the
running statistics, as every forward pass of a PyTorch model in train mode does.
The loss follows the task's kind (multilabel: BCE; multiclass: softmax cross-entropy), never the
head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from qcxr import metrics

ApplyFn = Callable[..., jax.Array]  # (params, batch[, dropout_key]) -> logits
# {"params": pytree, "model_state": pytree ({} or {"backbone": {"batch_stats": ...}}),
#  "opt_state": pytree, "step": int32[]}
TrainState = dict
KINDS = ("multilabel", "multiclass")


def task_loss(kind: str, class_weights=None) -> tuple[Callable, Callable, Callable]:
    """The loss of a task kind: the task decides it, never the head.

    Args:
        kind: "multilabel" (sigmoid, mean BCE over labels) or "multiclass" (softmax
            cross-entropy against the one-hot class).
        class_weights: optional C weights (multiclass only), e.g. for class imbalance.

    Returns:
        (masked mean loss (logits, labels, mask) -> f32[], per-example loss (logits, labels) ->
        f32[B], link (logits f32[B, L]) -> probabilities f32[B, L]).

    Raises:
        ValueError: an unknown kind, or class weights for a multilabel task.
    """
    if kind not in KINDS:
        raise ValueError(f"task kind must be one of {KINDS}, got {kind!r}; fix: task.kind")
    if kind == "multilabel":
        if class_weights is not None:
            raise ValueError("task.class_weights applies to multiclass tasks only; set it to null")
        return metrics.masked_bce, metrics.per_example_bce, jax.nn.sigmoid
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

    def loss(logits, labels, mask):
        return metrics.masked_softmax_ce(logits, labels, mask, weights)

    def per_example(logits, labels):
        return metrics.per_example_softmax_ce(logits, labels, weights)

    return loss, per_example, lambda z: jax.nn.softmax(z, axis=-1)


def init_state(
    params: Any, tx: optax.GradientTransformation, model_state: Any = None
) -> TrainState:
    """A fresh train state.

    Args:
        params: the model's parameter tree.
        tx: the optimizer.
        model_state: the model's non-trainable variables (Classifier.init's second value: the
            backbone's batch-norm running statistics), or None for a model without any.

    Returns:
        {"params", "model_state" ({} for None), "opt_state", "step" (int32 0)}; the optimizer
        state is built in one jit.
    """
    return {
        "params": params,
        "model_state": {} if model_state is None else model_state,
        "opt_state": jax.jit(tx.init)(params),
        "step": jnp.zeros((), jnp.int32),
    }


def make_train_step(
    apply: ApplyFn,
    tx: optax.GradientTransformation,
    kind: str = "multilabel",
    class_weights=None,
    dropout_key: jax.Array | None = None,
    noise_key: jax.Array | None = None,
    aux: bool = False,
    stateful: bool = False,
):
    """One optimizer step (or micro-step under gradient accumulation), jitted.

    Args:
        apply: (params, batch) -> logits f32[B, L], or (params, batch, key) -> logits when
            `dropout_key` is given (the key turns the head's dropout on); with `noise_key` it is
            called as apply(params, batch, key, noise_key=...).
        tx: the optimizer (freeze mask and accumulation included).
        kind: the task's kind (see `task_loss`).
        class_weights: optional C class weights (multiclass).
        dropout_key: the run's dropout stream, or None (no dropout). Step s uses
            fold_in(dropout_key, s) with s = state["step"], a traced argument: every step (and
            micro-step) gets its own key, a resumed run continues the same sequence, and the step
            compiles once.
        noise_key: the run's noise stream (a noisy or finite-shot DQC's trajectories and shots),
            or None. Step s uses fold_in(noise_key, s), like the dropout stream; evaluation never
            gets it (the head's evaluation key, heads.eval_noise_key).
        aux: apply takes `aux=True` and returns (logits, {name: f32[]}), the model's diagnostics
            of the batch (e.g. the MPS head's `mps_discarded_weight`); the step returns them too.
        stateful: apply is called with `model_state=state["model_state"], train=True` and returns
            (what it returns otherwise, the new model state), which replaces the state's: the
            batch-norm running statistics of a backbone that trains.

    Returns:
        step(state, batch) -> (state, loss f32[]): the task's masked mean loss before the update;
        with aux, (state, loss, {name: f32[]}). State keys other than params, opt_state, step
        (and model_state when stateful) pass through unchanged.
    """
    masked_loss = task_loss(kind, class_weights)[0]

    def loss_fn(params, model_state, batch, key, nkey):
        kwargs = {"aux": True} if aux else {}
        if nkey is not None:
            kwargs["noise_key"] = nkey
        if stateful:
            kwargs.update(model_state=model_state, train=True)
        out = apply(params, batch, **kwargs) if key is None else apply(params, batch, key, **kwargs)
        out, new_model_state = out if stateful else (out, model_state)
        logits, metrics = out if aux else (out, {})
        return masked_loss(logits, batch["labels"], batch["mask"]), (metrics, new_model_state)

    def step(state, batch):
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, state["step"])
        nkey = None if noise_key is None else jax.random.fold_in(noise_key, state["step"])
        model_state = state.get("model_state", {})
        (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], model_state, batch, key, nkey
        )
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1}
        if stateful:
            new["model_state"] = model_state
        return (new, loss, metrics) if aux else (new, loss)

    return jax.jit(step, donate_argnums=0)


def make_eval_step(
    apply: ApplyFn, kind: str = "multilabel", class_weights=None, stateful: bool = False
):
    """Probabilities and per-example loss of a batch, jitted.

    Args:
        apply: (params, batch) -> logits f32[B, L]; with stateful, (params, batch,
            model_state=...) -> logits (batch norm on the running statistics it is given).
        kind: the task's kind (see `task_loss`): sigmoid or softmax probabilities.
        class_weights: optional C class weights (multiclass).
        stateful: pass the model state to apply.

    Returns:
        step(params, batch, model_state=None) -> (probabilities f32[B, L], per-example loss
        f32[B]); model_state is the train state's (read only when stateful).
    """
    _, per_example, link = task_loss(kind, class_weights)

    def step(params, batch, model_state=None):
        logits = apply(params, batch, model_state=model_state) if stateful else apply(params, batch)
        return link(logits), per_example(logits, batch["labels"])

    return jax.jit(step)
