"""Optimizers (`conf/optimizer/*.yaml`): Optax transformations with schedule, accumulation and a
freeze mask.

Each factory is a Hydra target with `_partial_: true`: the config gives the hyperparameters, and
the run supplies `total_steps` (for schedules) and `trainable` (the freeze labels) when it knows
the data size and the model. Freezing is an optimizer option (docs/style.md): parameter subtrees
labelled "frozen" get zero updates and no optimizer state; the model itself never branches on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

FROZEN = "frozen"
TRAINABLE = "trainable"
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_schedule(
    learning_rate: float, name: str = "constant", warmup_steps: int = 0, total_steps: int = 1
) -> optax.Schedule:
    """A learning-rate schedule.

    Args:
        learning_rate: the peak (and constant) rate.
        name: constant (with optional linear warm-up), cosine (decay to 0 over total_steps) or
            warmup_cosine (linear warm-up from 0, then cosine decay to 0).
        warmup_steps: optimizer steps of linear warm-up.
        total_steps: optimizer steps of the whole run (warm-up included).

    Returns:
        step -> learning rate.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    warmup_steps = max(0, int(warmup_steps))
    total_steps = max(int(total_steps), warmup_steps + 1)
    if name == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(learning_rate)
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, learning_rate, warmup_steps),
                optax.constant_schedule(learning_rate),
            ],
            [warmup_steps],
        )
    if name == "cosine" and warmup_steps == 0:
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    return optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, max(warmup_steps, 1), total_steps, end_value=0.0
    )


def _finish(
    inner: optax.GradientTransformation,
    trainable: Any,
    accumulation_steps: int,
    grad_clip: float | None,
) -> optax.GradientTransformation:
    if grad_clip is not None:
        inner = optax.chain(optax.clip_by_global_norm(float(grad_clip)), inner)
    if trainable is not None:
        inner = optax.multi_transform({TRAINABLE: inner, FROZEN: optax.set_to_zero()}, trainable)
    if int(accumulation_steps) > 1:
        # The update is applied every k micro-batches with the mean of their gradients.
        inner = optax.MultiSteps(inner, every_k_schedule=int(accumulation_steps))
    return inner


def _lr(learning_rate, schedule, warmup_steps, total_steps, accumulation_steps):
    steps = max(1, int(total_steps) // max(1, int(accumulation_steps)))
    return make_schedule(learning_rate, schedule, warmup_steps, steps)


def step_learning_rates(
    learning_rate: float,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int = 1,
    accumulation_steps: int = 1,
) -> Callable[[int], float]:
    """The learning rate the optimizer applies at each train step (what `train/lr` logs).

    Args:
        learning_rate, schedule, warmup_steps, total_steps, accumulation_steps: as the optimizer
            factories take them (the same schedule is built).

    Returns:
        step -> learning rate, for the 0-based train (micro-batch) step; with accumulation the
        k micro-batches of one update share its rate.
    """
    sched = _lr(learning_rate, schedule, warmup_steps, total_steps, accumulation_steps)
    k = max(1, int(accumulation_steps))
    return lambda step: float(sched(int(step) // k))


def adam(
    learning_rate: float = 1e-4,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    schedule: str = "constant",
    warmup_steps: int = 0,
    accumulation_steps: int = 1,
    grad_clip: float | None = None,
    *,
    total_steps: int = 1,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """Adam (the paper's optimizer, learning rate 1e-4; section III-D).

    Args:
        learning_rate: peak learning rate.
        b1, b2, eps: Adam's moment decays and epsilon.
        schedule: constant, cosine or warmup_cosine (see `make_schedule`).
        warmup_steps: optimizer steps of linear warm-up.
        accumulation_steps: micro-batches per update (gradient accumulation).
        grad_clip: global-norm clip, or None.
        total_steps: micro-batch steps of the whole run (given by the run).
        trainable: pytree of "trainable"/"frozen" labels matching the params, or None.

    Returns:
        The optax transformation.
    """
    lr = _lr(learning_rate, schedule, warmup_steps, total_steps, accumulation_steps)
    return _finish(optax.adam(lr, b1, b2, eps), trainable, accumulation_steps, grad_clip)


def adamw(
    learning_rate: float = 1e-4,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    schedule: str = "constant",
    warmup_steps: int = 0,
    accumulation_steps: int = 1,
    grad_clip: float | None = None,
    *,
    total_steps: int = 1,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay). Arguments as `adam`, plus `weight_decay`."""
    lr = _lr(learning_rate, schedule, warmup_steps, total_steps, accumulation_steps)
    opt = optax.adamw(lr, b1, b2, eps, weight_decay=weight_decay)
    return _finish(opt, trainable, accumulation_steps, grad_clip)


def sgd(
    learning_rate: float = 1e-2,
    momentum: float = 0.9,
    nesterov: bool = False,
    schedule: str = "constant",
    warmup_steps: int = 0,
    accumulation_steps: int = 1,
    grad_clip: float | None = None,
    *,
    total_steps: int = 1,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum. Arguments as `adam`, plus `momentum`, `nesterov`."""
    lr = _lr(learning_rate, schedule, warmup_steps, total_steps, accumulation_steps)
    opt = optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)
    return _finish(opt, trainable, accumulation_steps, grad_clip)


def lion(
    learning_rate: float = 3e-5,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: float = 1e-3,
    schedule: str = "constant",
    warmup_steps: int = 0,
    accumulation_steps: int = 1,
    grad_clip: float | None = None,
    *,
    total_steps: int = 1,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """Lion (sign-based; use a rate 3-10x below Adam's). Arguments as `adam`."""
    lr = _lr(learning_rate, schedule, warmup_steps, total_steps, accumulation_steps)
    opt = optax.lion(lr, b1, b2, weight_decay=weight_decay)
    return _finish(opt, trainable, accumulation_steps, grad_clip)


def lamb(
    learning_rate: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    warmup_steps: int = 0,
    accumulation_steps: int = 1,
    grad_clip: float | None = None,
    *,
    total_steps: int = 1,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """LAMB (layer-wise adaptive large-batch). Arguments as `adam`, plus `weight_decay`."""
    lr = _lr(learning_rate, schedule, warmup_steps, total_steps, accumulation_steps)
    opt = optax.lamb(lr, b1, b2, eps, weight_decay=weight_decay)
    return _finish(opt, trainable, accumulation_steps, grad_clip)


def adafactor(
    learning_rate: float = 1e-3,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    clipping_threshold: float | None = 1.0,
    schedule: str = "constant",
    warmup_steps: int = 0,
    accumulation_steps: int = 1,
    grad_clip: float | None = None,
    *,
    total_steps: int = 1,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """Adafactor (factored second moments: low optimizer memory). Arguments as `adam`."""
    lr = _lr(learning_rate, schedule, warmup_steps, total_steps, accumulation_steps)
    opt = optax.adafactor(
        lr,
        min_dim_size_to_factor=min_dim_size_to_factor,
        decay_rate=decay_rate,
        clipping_threshold=clipping_threshold,
    )
    return _finish(opt, trainable, accumulation_steps, grad_clip)


def freeze_labels(params: Any, frozen: dict[str, bool]) -> Any:
    """The optimizer's freeze labels: every leaf of a top-level subtree gets that subtree's label.

    Args:
        params: {"backbone": ..., "head": ...} (any top-level keys).
        frozen: top-level key -> whether that subtree is frozen (missing keys train).

    Returns:
        A pytree like params with "frozen" or "trainable" leaves.
    """
    import jax

    return {
        key: jax.tree.map(lambda _, k=key: FROZEN if frozen.get(k, False) else TRAINABLE, sub)
        for key, sub in params.items()
    }
