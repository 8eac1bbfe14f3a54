"""Re-evaluate a trained DQC over a grid of noise levels and shot counts.

The trained parameters stay fixed; only the head's circuit simulation changes
(`qcxr.models.heads.noisy_variant`: the same parameter tree under another noise model). Every grid
point runs the ordinary evaluation (`qcxr.train.loop.evaluate`) on the split; its randomness
(trajectories, shot sampling) is the head's evaluation key (`heads.eval_noise_key`: from
EVAL_NOISE_SEED and the batch), so a re-evaluation is deterministic. Level 0 with exact
expectations is the ideal circuit: it reproduces the trained run's own test metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from qcxr.models.heads import NOISE_CHANNELS, noisy_variant
from qcxr.train import loop, steps

log = logging.getLogger(__name__)

EXACT = "exact"  # the shots value of exact expectations, in metric keys and tables
MACRO = "macro"  # the label of the mean (macro) AUROC in tables


def parse_levels(text: str) -> list[float]:
    """`0,1e-4,1e-3` -> [0.0, 0.0001, 0.001].

    Raises:
        ValueError: a value that is not a number in [0, 1], or an empty list.
    """
    levels = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            level = float(part)
        except ValueError as err:
            raise ValueError(f"--levels: {part!r} is not a number") from err
        if not 0.0 <= level <= 1.0 or math.isnan(level):
            raise ValueError(f"--levels: {level} is outside [0, 1]")
        levels.append(level)
    if not levels:
        raise ValueError("--levels is empty: give e.g. 0,1e-4,1e-3,1e-2")
    return levels


def parse_shots(text: str) -> list[int | None]:
    """`none,100,1000` -> [None, 100, 1000] (None: exact expectations).

    Raises:
        ValueError: a value that is neither `none` nor a positive integer, or an empty list.
    """
    shots: list[int | None] = []
    for part in (p.strip().lower() for p in str(text).split(",")):
        if not part:
            continue
        if part in ("none", "null", EXACT):
            shots.append(None)
            continue
        try:
            value = int(float(part))
        except ValueError as err:
            raise ValueError(f"--shots: {part!r} is neither none nor an integer") from err
        if value < 1 or value != float(part):
            raise ValueError(f"--shots: {part} must be a positive integer or none")
        shots.append(value)
    if not shots:
        raise ValueError("--shots is empty: give e.g. none,100,1000,10000")
    return shots


def shots_name(shots: int | None) -> str:
    """The shot count as written in metric keys and tables: `exact` or the integer."""
    return EXACT if shots is None else str(int(shots))


def metric_key(channel: str, level: float, shots: int | None, split: str, label: str) -> str:
    """The MLflow metric key of one grid point's AUROC.

    `robust/<channel>/<level>/shots_<N|exact>/<split>/auroc_macro` for the mean and
    `.../<split>/auroc/<label>` per label (level written by Python's repr of the float).
    """
    name = "auroc_macro" if label == MACRO else f"auroc/{label}"
    return f"robust/{channel}/{float(level)!r}/shots_{shots_name(shots)}/{split}/{name}"


@dataclasses.dataclass
class GridResult:
    """AUROC of one trained run over the grid.

    Attributes:
        table: one row per (level, shots, label): columns channel, level, shots (the
            `shots_name`), label (a task label or MACRO), auroc, loss (the split's mean loss,
            same on every label row), seconds (evaluation time of the grid point).
        channel: the noise channel.
        split: the evaluated split.
    """

    table: pd.DataFrame
    channel: str
    split: str

    def metrics(self) -> dict[str, float]:
        """Every AUROC as {metric_key: value}."""
        return {
            metric_key(
                self.channel,
                r.level,
                None if r.shots == EXACT else int(r.shots),
                self.split,
                r.label,
            ): float(r.auroc)
            for r in self.table.itertuples(index=False)
        }


def evaluate_grid(
    rebuilt: Any,
    params: Any,
    channel: str,
    levels: Sequence[float],
    shots: Sequence[int | None],
    *,
    trajectories: int | None = None,
    method: str | None = None,
    split: str = "test",
    progress: bool = True,
    bar: Any = None,
    model_state: Any = None,
) -> GridResult:
    """Evaluate one trained run at every (level, shots) of the grid.

    Args:
        rebuilt: the run's pieces (`qcxr.run.rebuild_for_evaluation`).
        params: the restored parameter tree (the run's best checkpoint).
        channel: one of NOISE_CHANNELS; the other channels stay off.
        levels: the channel's levels (0: no channel).
        shots: shot counts; None for exact expectations.
        trajectories: trajectories per sample for method=trajectories (default: the run's).
        method: the engine method (default: the run's head.method; "auto" lets the engine pick
            density_matrix or trajectories under noise).
        split: the split to evaluate.
        progress: show a progress bar over the grid (unless `bar` is given).
        bar: an outer tqdm bar to advance once per grid point instead.
        model_state: the restored model state (batch-norm running statistics of the same
            checkpoint); None gives the run's initial one (`rebuilt.model_state`).

    Returns:
        The GridResult.

    Raises:
        ValueError: an unknown channel, a split the data lacks, or a level the head refuses.
    """
    if channel not in NOISE_CHANNELS:
        raise ValueError(f"unknown noise channel {channel!r}; choose one of {NOISE_CHANNELS}")
    if split not in rebuilt.data.splits:
        raise ValueError(f"the run's data has no {split!r} split (splits: {rebuilt.data.splits})")
    model_state = rebuilt.model_state if model_state is None else model_state
    source = rebuilt.batch_source(params, progress=progress, model_state=model_state)
    grid = [(lv, sh) for lv in levels for sh in shots]
    own_bar = None
    if bar is None:
        own_bar = bar = tqdm(total=len(grid), desc="noise grid", disable=not progress)
    rows = []
    try:
        for level, n_shots in grid:
            head = noisy_variant(
                rebuilt.classifier.head,
                {channel: level},
                n_shots,
                trajectories=trajectories,
                method=method,
            )
            classifier = dataclasses.replace(rebuilt.classifier, head=head)
            if rebuilt.use_features:

                def apply(p, batch, clf=classifier):
                    return clf.head_logits(p, batch["features"])
            else:

                def apply(p, batch, clf=classifier):
                    return clf.logits(p, model_state, batch["image"])

            start = time.perf_counter()
            ev = loop.evaluate(
                steps.make_eval_step(apply, rebuilt.kind),
                params,
                source,
                split,
                rebuilt.label_names,
                kind=rebuilt.kind,
            )
            seconds = time.perf_counter() - start
            for label, auroc in [(MACRO, ev.auroc_macro), *ev.auroc.items()]:
                rows.append(
                    (channel, float(level), shots_name(n_shots), label, auroc, ev.loss, seconds)
                )
            bar.set_postfix_str(f"{channel}={level:g} shots={shots_name(n_shots)}")
            bar.update(1)
            log.debug(
                "%s=%g shots=%s: %s AUROC %.4f",
                channel,
                level,
                shots_name(n_shots),
                split,
                ev.auroc_macro,
            )
    finally:
        if own_bar is not None:
            own_bar.close()
    table = pd.DataFrame(
        rows, columns=["channel", "level", "shots", "label", "auroc", "loss", "seconds"]
    )
    return GridResult(table, channel, split)


def summarize(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean and sd over runs of each (level, shots, label).

    Args:
        tables: the GridResult tables of several runs, each with a `run_id` and `seed` column.

    Returns:
        Columns channel, level, shots, label, mean, sd (ddof 1; NaN for one run), n, sorted by
        level, shots (exact first, then by count) and label.
    """
    frame = pd.concat(tables, ignore_index=True)
    out = (
        frame.groupby(["channel", "level", "shots", "label"], sort=False)["auroc"]
        .agg(mean="mean", sd="std", n="count")
        .reset_index()
    )
    order = out["shots"].map(lambda s: -1 if s == EXACT else int(s))
    return (
        out.assign(_o=order)
        .sort_values(["level", "_o", "label"])
        .drop(columns="_o")
        .reset_index(drop=True)
    )
