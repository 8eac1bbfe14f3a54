"""Optimizers (`conf/optimizer/*.yaml`): Optax transformations with schedule, accumulation and a
freeze mask.

Each factory is a Hydra target with `_partial_: true`: the config gives the hyperparameters, and
the run supplies `total_steps` and `steps_per_epoch` (for schedules) and `trainable` (the freeze
labels) when it knows the data size and the model. Freezing is an optimizer option
(docs/style.md): parameter subtrees labelled "frozen" get zero updates and no optimizer state;
the model itself never branches on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import optax

FROZEN = "frozen"
TRAINABLE = "trainable"
SCHEDULES = ("constant", "cosine", "warmup_cosine", "multistep")


def make_schedule(
    learning_rate: float,
    name: str = "constant",
    warmup_steps: int = 0,
    total_steps: int = 1,
    *,
    boundaries: Sequence[int] = (),
    gamma: float = 0.1,
) -> optax.Schedule:
    """A learning-rate schedule.

    Args:
        learning_rate: the peak (and constant) rate.
        name: constant (with optional linear warm-up), cosine (decay to 0 over total_steps),
            warmup_cosine (linear warm-up from 0, then cosine decay to 0) or multistep (the rate
            times gamma once per boundary passed: PyTorch's MultiStepLR).
        warmup_steps: optimizer steps of linear warm-up (not with multistep).
        total_steps: optimizer steps of the whole run (warm-up included).
        boundaries: multistep only: the optimizer steps (0-based update counts) from which the
            rate is multiplied by gamma once more, increasing (none: a constant rate, as
            MultiStepLR with no milestones).
        gamma: multistep only: the factor per boundary.

    Returns:
        step -> learning rate.

    Raises:
        ValueError: an unknown name; multistep with boundaries that do not increase, or with
            warm-up.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    if name == "multistep":
        return _multistep(learning_rate, warmup_steps, boundaries, gamma)
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


def _multistep(
    learning_rate: float, warmup_steps: int, boundaries: Sequence[int], gamma: float
) -> optax.Schedule:
    bounds = [int(b) for b in boundaries]
    if any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)) or min(bounds, default=0) < 0:
        raise ValueError(f"multistep boundaries must increase from 0 or more, got {bounds}")
    if int(warmup_steps) > 0:
        raise ValueError("schedule=multistep has no warm-up: set optimizer.warmup_steps=0")
    # optax: the product of the scales of every boundary b with step >= b.
    return optax.piecewise_constant_schedule(learning_rate, {b: float(gamma) for b in bounds})


def epoch_milestones(max_epochs: int, fractions: Sequence[float]) -> list[int]:
    """MedMNIST v2's milestones: fractions of the run's epochs (its code: 0.5 and 0.75 x
    num_epochs), kept only where the product is a whole epoch.

    Its MultiStepLR compares the integer epoch count with the float milestones, so a milestone
    like 7.5 (0.75 x 10 epochs) never fires; keeping only whole ones reproduces that. The Hydra
    resolver `${qcxr.milestones:${trainer.max_epochs},[0.5,0.75]}` calls this.

    Args:
        max_epochs: the run's epochs.
        fractions: fractions of max_epochs.

    Returns:
        The milestones in epochs: [50, 75] for 100 epochs, [5] for 10.
    """
    products = (float(f) * int(max_epochs) for f in fractions)
    return [int(x) for x in products if x.is_integer() and x >= 1]


def milestone_steps(
    milestones: Sequence[int], steps_per_epoch: int, accumulation_steps: int = 1
) -> list[int]:
    """Epoch milestones as optimizer-update boundaries.

    Milestone e: once e epochs are done the rate drops, so epochs e + 1, e + 2, ... (counted from
    1) run at the lower rate, as PyTorch's MultiStepLR(milestones=[e]) stepped once per epoch
    does (MedMNIST v2: [50, 75] of 100). Update u (0-based) takes the rate of the epoch its first
    micro-batch belongs to, so a milestone's boundary is the first u with
    u * accumulation_steps >= e * steps_per_epoch.

    Args:
        milestones: epochs, increasing and at least 1.
        steps_per_epoch: train micro-batch steps per epoch.
        accumulation_steps: micro-batches per optimizer update.

    Returns:
        The update counts from which the rate is multiplied by gamma once more.

    Raises:
        ValueError: milestones not increasing or below 1, or two on one update (more
            accumulation steps than batches per epoch).
    """
    epochs = [int(e) for e in milestones]
    if any(e < 1 for e in epochs) or any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)):
        raise ValueError(f"optimizer.milestones must be increasing epochs >= 1, got {epochs}")
    k = max(1, int(accumulation_steps))
    bounds = [math.ceil(e * int(steps_per_epoch) / k) for e in epochs]
    if len(set(bounds)) != len(bounds):
        raise ValueError(
            f"optimizer.milestones {epochs} fall on the same optimizer update with "
            f"{steps_per_epoch} steps per epoch and accumulation_steps={k}: space them further"
        )
    return bounds


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


def _lr(
    learning_rate,
    schedule,
    warmup_steps,
    total_steps,
    accumulation_steps,
    *,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    steps_per_epoch: int | None = None,
):
    steps = max(1, int(total_steps) // max(1, int(accumulation_steps)))
    boundaries: list[int] = []
    if schedule == "multistep":
        if steps_per_epoch is None:
            raise ValueError(
                "schedule=multistep converts optimizer.milestones (epochs) to steps: the caller "
                "must pass steps_per_epoch (run.py passes the train batches per epoch)"
            )
        boundaries = milestone_steps(milestones, steps_per_epoch, accumulation_steps)
    return make_schedule(
        learning_rate, schedule, warmup_steps, steps, boundaries=boundaries, gamma=gamma
    )


def step_learning_rates(
    learning_rate: float,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int = 1,
    accumulation_steps: int = 1,
    *,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    steps_per_epoch: int | None = None,
) -> Callable[[int], float]:
    """The learning rate the optimizer applies at each train step (what `train/lr` logs).

    Args:
        learning_rate, schedule, warmup_steps, total_steps, accumulation_steps, milestones,
            gamma, steps_per_epoch: as the optimizer factories take them (the same schedule is
            built).

    Returns:
        step -> learning rate, for the 0-based train (micro-batch) step; with accumulation the
        k micro-batches of one update share its rate.
    """
    sched = _lr(
        learning_rate,
        schedule,
        warmup_steps,
        total_steps,
        accumulation_steps,
        milestones=milestones,
        gamma=gamma,
        steps_per_epoch=steps_per_epoch,
    )
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
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    *,
    total_steps: int = 1,
    steps_per_epoch: int | None = None,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """Adam (the paper's optimizer, learning rate 1e-4; section III-D).

    Args:
        learning_rate: peak learning rate.
        b1, b2, eps: Adam's moment decays and epsilon.
        schedule: constant, cosine, warmup_cosine or multistep (see `make_schedule`).
        warmup_steps: optimizer steps of linear warm-up.
        accumulation_steps: micro-batches per update (gradient accumulation).
        grad_clip: global-norm clip, or None.
        milestones: multistep only: epochs (1-based counts of epochs done) after which the rate
            is multiplied by gamma, e.g. [50, 75] (MedMNIST v2); see `milestone_steps`.
        gamma: multistep only: the factor per milestone.
        total_steps: micro-batch steps of the whole run (given by the run).
        steps_per_epoch: micro-batch steps per epoch (given by the run; multistep needs it).
        trainable: pytree of "trainable"/"frozen" labels matching the params, or None.

    Returns:
        The optax transformation.
    """
    lr = _lr(
        learning_rate,
        schedule,
        warmup_steps,
        total_steps,
        accumulation_steps,
        milestones=milestones,
        gamma=gamma,
        steps_per_epoch=steps_per_epoch,
    )
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
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    *,
    total_steps: int = 1,
    steps_per_epoch: int | None = None,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay). Arguments as `adam`, plus `weight_decay`."""
    lr = _lr(
        learning_rate,
        schedule,
        warmup_steps,
        total_steps,
        accumulation_steps,
        milestones=milestones,
        gamma=gamma,
        steps_per_epoch=steps_per_epoch,
    )
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
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    *,
    total_steps: int = 1,
    steps_per_epoch: int | None = None,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum. Arguments as `adam`, plus `momentum`, `nesterov`."""
    lr = _lr(
        learning_rate,
        schedule,
        warmup_steps,
        total_steps,
        accumulation_steps,
        milestones=milestones,
        gamma=gamma,
        steps_per_epoch=steps_per_epoch,
    )
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
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    *,
    total_steps: int = 1,
    steps_per_epoch: int | None = None,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """Lion (sign-based; use a rate 3-10x below Adam's). Arguments as `adam`."""
    lr = _lr(
        learning_rate,
        schedule,
        warmup_steps,
        total_steps,
        accumulation_steps,
        milestones=milestones,
        gamma=gamma,
        steps_per_epoch=steps_per_epoch,
    )
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
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    *,
    total_steps: int = 1,
    steps_per_epoch: int | None = None,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """LAMB (layer-wise adaptive large-batch). Arguments as `adam`, plus `weight_decay`."""
    lr = _lr(
        learning_rate,
        schedule,
        warmup_steps,
        total_steps,
        accumulation_steps,
        milestones=milestones,
        gamma=gamma,
        steps_per_epoch=steps_per_epoch,
    )
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
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    *,
    total_steps: int = 1,
    steps_per_epoch: int | None = None,
    trainable: Any = None,
) -> optax.GradientTransformation:
    """Adafactor (factored second moments: low optimizer memory). Arguments as `adam`."""
    lr = _lr(
        learning_rate,
        schedule,
        warmup_steps,
        total_steps,
        accumulation_steps,
        milestones=milestones,
        gamma=gamma,
        steps_per_epoch=steps_per_epoch,
    )
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
