"""Pair runs by (task, seed) and turn their metrics into the report's tables, as pandas frames.

Nothing here talks to MLflow or draws; the inputs are the frames of `qcxr.report.load`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from qcxr.report.load import FINISHED
from qcxr.report.stats import compare, mean_sd

SPLITS = ("test", "external")
MACRO = "(macro)"
POSITIVES_PREFIX = "data/train_positives/"
LOSS_KEYS = ("train/epoch_loss", "val/loss")


@dataclass
class Selection:
    """Which runs take part in the comparison, and why the others do not.

    Attributes:
        chosen: one run per (task, head, seed) of the compared heads: the most recent FINISHED
            run with an integer seed (columns of `RunData.runs`).
        pairs: task, seed, run_a, run_b for seeds where both heads have a chosen run.
        unpaired: chosen runs without a partner: task, seed, head, run_id, missing_head.
        superseded: older FINISHED re-runs replaced by a newer one: task, head, seed, run_id,
            kept_run_id.
        excluded: runs left out: task, head, seed_tag, status, run_id, reason (not FINISHED,
            seed tag not an integer).
        other_heads: FINISHED runs of heads not compared: task, head, count.
    """

    chosen: pd.DataFrame
    pairs: pd.DataFrame
    unpaired: pd.DataFrame
    superseded: pd.DataFrame
    excluded: pd.DataFrame
    other_heads: pd.DataFrame


def select_runs(runs: pd.DataFrame, heads: Sequence[str]) -> Selection:
    """Choose one run per (task, head, seed) and pair the two heads by (task, seed).

    Args:
        runs: `RunData.runs`.
        heads: the two heads compared, (a, b); a plays CDL's part in the percent difference.

    Returns:
        The Selection.
    """
    head_a, head_b = heads
    not_finished = runs["status"] != FINISHED
    bad_seed = ~not_finished & runs["seed"].isna()
    excluded = runs[not_finished | bad_seed].copy()
    excluded["reason"] = np.where(
        excluded["status"] != FINISHED,
        "status " + excluded["status"].astype(str),
        "seed tag is not an integer",
    )
    excluded = excluded[["task", "head", "seed_tag", "status", "run_id", "reason"]]

    ok = runs[~not_finished & ~bad_seed]
    compared = ok[ok["head"].isin([head_a, head_b])]
    others = ok[~ok["head"].isin([head_a, head_b])]
    other_heads = (
        others.groupby(["task", "head"]).size().rename("count").reset_index()
        if len(others)
        else pd.DataFrame(columns=["task", "head", "count"])
    )

    ordered = compared.sort_values(["start_time", "run_id"], ascending=[False, True])
    is_latest = ~ordered.duplicated(["task", "head", "seed"], keep="first")
    chosen = ordered[is_latest].sort_values(["task", "head", "seed"], ignore_index=True)
    older = ordered[~is_latest]
    keep = chosen.set_index(["task", "head", "seed"])["run_id"]
    superseded = older[["task", "head", "seed", "run_id"]].copy()
    superseded["kept_run_id"] = [
        keep[(t, h, s)] for t, h, s in older[["task", "head", "seed"]].itertuples(index=False)
    ]
    superseded = superseded.sort_values(["task", "head", "seed"], ignore_index=True)

    a = chosen[chosen["head"] == head_a][["task", "seed", "run_id"]]
    b = chosen[chosen["head"] == head_b][["task", "seed", "run_id"]]
    merged = a.merge(b, on=["task", "seed"], how="outer", suffixes=("_a", "_b"))
    complete = merged["run_id_a"].notna() & merged["run_id_b"].notna()
    pairs = (
        merged[complete]
        .rename(columns={"run_id_a": "run_a", "run_id_b": "run_b"})
        .sort_values(["task", "seed"], ignore_index=True)
    )
    lonely = merged[~complete]
    unpaired = pd.DataFrame(
        {
            "task": lonely["task"],
            "seed": lonely["seed"],
            "head": np.where(lonely["run_id_a"].notna(), head_a, head_b),
            "run_id": lonely["run_id_a"].fillna(lonely["run_id_b"]),
            "missing_head": np.where(lonely["run_id_a"].notna(), head_b, head_a),
        }
    ).sort_values(["task", "seed", "head"], ignore_index=True)
    return Selection(
        chosen=chosen,
        pairs=pairs,
        unpaired=unpaired,
        superseded=superseded,
        excluded=excluded.sort_values(["task", "run_id"], ignore_index=True),
        other_heads=other_heads,
    )


def _values(metrics: pd.DataFrame, run_ids: Sequence[str]) -> dict[tuple[str, str], float]:
    sub = metrics[metrics["run_id"].isin(run_ids)]
    return dict(zip(zip(sub["run_id"], sub["key"], strict=True), sub["value"], strict=True))


def label_order(metrics: pd.DataFrame, run_ids: Sequence[str], labels: Sequence[str]):
    """Labels sorted by training-set frequency, most frequent first (as the paper's Figs. 6–11).

    Args:
        metrics: tidy latest metric values.
        run_ids: runs of one task whose `data/train_positives/<Label>` counts are read (the
            median over runs is used; the counts are identical for runs of one task).
        labels: the labels to order.

    Returns:
        (ordered labels, positives: label -> count or NaN, True when counts were found). Labels
        without a count follow the counted ones alphabetically; with no counts at all the order
        is alphabetical.
    """
    sub = metrics[metrics["run_id"].isin(run_ids) & metrics["key"].str.startswith(POSITIVES_PREFIX)]
    counts = sub.assign(label=sub["key"].str.slice(len(POSITIVES_PREFIX))).groupby("label")["value"]
    positives = counts.median().to_dict()
    known = sorted((lbl for lbl in labels if lbl in positives), key=lambda x: (-positives[x], x))
    unknown = sorted(lbl for lbl in labels if lbl not in positives)
    return known + unknown, {lbl: positives.get(lbl, np.nan) for lbl in labels}, bool(known)


def auroc_comparisons(metrics: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """Macro and per-label AUROC of the two heads, compared over paired seeds.

    For every task and split (`test` = internal, `external`) with at least one value, and every
    label (`(macro)` for the `<split>/auroc_macro` key, else `<split>/auroc/<label>`), the
    values of both heads on the seeds where both have that metric are compared.

    Args:
        metrics: tidy latest metric values.
        selection: output of `select_runs`.

    Returns:
        One row per (task, split, label): task, split, label, order (0 for macro, then by
        training frequency), positives, n, seeds, mean_a, sd_a, mean_b, sd_b, pct_diff, p,
        stars, n_missing (pairs where one or both runs lack the metric), sorted_by_frequency.
    """
    rows = []
    for task, pairs in selection.pairs.groupby("task", sort=True):
        run_ids = [*pairs["run_a"], *pairs["run_b"]]
        values = _values(metrics, run_ids)
        keys = {k for _, k in values}
        for split in SPLITS:
            prefix = f"{split}/auroc/"
            labels = sorted(k[len(prefix) :] for k in keys if k.startswith(prefix))
            ordered, positives, by_freq = label_order(metrics, run_ids, labels)
            entries = [(MACRO, f"{split}/auroc_macro")] + [(lbl, prefix + lbl) for lbl in ordered]
            for order, (label, key) in enumerate(entries):
                if key not in keys:
                    continue
                by_a, by_b = {}, {}
                for seed, ra, rb in pairs[["seed", "run_a", "run_b"]].itertuples(index=False):
                    if (ra, key) in values:
                        by_a[int(seed)] = values[(ra, key)]
                    if (rb, key) in values:
                        by_b[int(seed)] = values[(rb, key)]
                cmp = compare(by_a, by_b)
                rows.append(
                    {
                        "task": task,
                        "split": split,
                        "label": label,
                        "order": order,
                        "positives": positives.get(label, np.nan),
                        **asdict(cmp),
                        "n_missing": len(pairs) - cmp.n,
                        "sorted_by_frequency": by_freq,
                    }
                )
    columns = [
        "task", "split", "label", "order", "positives", "n", "seeds", "mean_a", "sd_a",
        "mean_b", "sd_b", "pct_diff", "p", "stars", "n_missing", "sorted_by_frequency",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


MULTICLASS_SCORES = ("accuracy", "balanced_accuracy", "f1_macro")


def score_comparisons(
    metrics: pd.DataFrame, selection: Selection, scores: Sequence[str] = MULTICLASS_SCORES
) -> pd.DataFrame:
    """Multiclass scores of the two heads (accuracy, balanced accuracy, macro-F1), compared over
    paired seeds, for every task and split that logged them (`<split>/<score>`).

    Args:
        metrics: tidy latest metric values.
        selection: output of `select_runs`.
        scores: the metric names after `<split>/`.

    Returns:
        One row per (task, split, score): task, split, score, n, seeds, mean_a, sd_a, mean_b,
        sd_b, pct_diff, p, stars, n_missing. Empty for multilabel tasks (nothing logged).
    """
    rows = []
    for task, pairs in selection.pairs.groupby("task", sort=True):
        values = _values(metrics, [*pairs["run_a"], *pairs["run_b"]])
        keys = {k for _, k in values}
        for split in SPLITS:
            for score in scores:
                key = f"{split}/{score}"
                if key not in keys:
                    continue
                by_a, by_b = {}, {}
                for seed, ra, rb in pairs[["seed", "run_a", "run_b"]].itertuples(index=False):
                    if (ra, key) in values:
                        by_a[int(seed)] = values[(ra, key)]
                    if (rb, key) in values:
                        by_b[int(seed)] = values[(rb, key)]
                cmp = compare(by_a, by_b)
                rows.append(
                    {
                        "task": task,
                        "split": split,
                        "score": score,
                        **asdict(cmp),
                        "n_missing": len(pairs) - cmp.n,
                    }
                )
    columns = [
        "task", "split", "score", "n", "seeds", "mean_a", "sd_a", "mean_b", "sd_b", "pct_diff",
        "p", "stars", "n_missing",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def per_seed_values(metrics: pd.DataFrame, selection: Selection, key: str) -> pd.DataFrame:
    """One metric's latest value for every chosen run.

    Args:
        metrics: tidy latest metric values.
        selection: output of `select_runs`.
        key: metric key, e.g. "test/auroc/Effusion".

    Returns:
        task, head, seed, run_id, value (only runs that logged the key).
    """
    sub = metrics[metrics["key"] == key][["run_id", "value"]]
    return selection.chosen[["task", "head", "seed", "run_id"]].merge(sub, on="run_id")


def clean_histories(histories: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Histories with task, head and seed attached, one value per (run, key, step).

    A step logged twice (a resumed run) keeps its latest value.

    Args:
        histories: output of `load_histories`.
        runs: chosen runs (task, head, seed, run_id).

    Returns:
        run_id, key, step, value, task, head, seed.
    """
    ordered = histories.sort_values("timestamp", kind="stable")
    last = ordered.drop_duplicates(["run_id", "key", "step"], keep="last")
    return last.drop(columns="timestamp").merge(
        runs[["run_id", "task", "head", "seed"]], on="run_id"
    )


def curve_bands(histories: pd.DataFrame, keys: Sequence[str] = LOSS_KEYS) -> pd.DataFrame:
    """Per-epoch mean and min–max band over seeds of loss curves.

    Seeds that stopped early no longer contribute after their last epoch; `n` says how many do.

    Args:
        histories: output of `clean_histories`.
        keys: the curves, by metric key.

    Returns:
        task, head, key, step, mean, min, max, n.
    """
    sub = histories[histories["key"].isin(keys)]
    out = sub.groupby(["task", "head", "key", "step"])["value"].agg(["mean", "min", "max", "count"])
    return out.rename(columns={"count": "n"}).reset_index()


def early_stopping(metrics: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """Epochs run, best epoch and best val loss per chosen run (the paper's Figure 4 remarks).

    Args:
        metrics: tidy latest metric values.
        selection: output of `select_runs`.

    Returns:
        task, head, seed, run_id, epochs_run, best_epoch (NaN where not logged).
    """
    out = selection.chosen[["task", "head", "seed", "run_id"]].copy()
    for key, column in (("train/epochs_run", "epochs_run"), ("train/best_epoch", "best_epoch")):
        values = metrics[metrics["key"] == key].set_index("run_id")["value"]
        out[column] = out["run_id"].map(values)
    return out


def summarize(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean, sample sd, min, max and count over seeds of per-run columns, per task and head.

    Args:
        frame: per-run rows with task, head and the value columns.
        columns: value columns to summarize.

    Returns:
        task, head, n and, per column c, c_mean, c_sd, c_min, c_max (NaNs ignored).
    """
    rows = []
    for (task, head), group in frame.groupby(["task", "head"], sort=True):
        row = {"task": task, "head": head, "n": len(group)}
        for c in columns:
            vals = group[c].dropna().to_numpy(dtype=np.float64)
            row[f"{c}_mean"], row[f"{c}_sd"] = mean_sd(vals)
            row[f"{c}_min"] = float(vals.min()) if vals.size else np.nan
            row[f"{c}_max"] = float(vals.max()) if vals.size else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def per_run_training(histories: pd.DataFrame, stops: pd.DataFrame) -> pd.DataFrame:
    """Per-run training summary: early stopping, best val loss and timing.

    Step and epoch times are averaged over epochs 2 onward when a run has more than one epoch,
    because the first epoch includes JIT compilation; the first epoch's time is kept apart.

    Args:
        histories: output of `clean_histories`.
        stops: output of `early_stopping`.

    Returns:
        `stops` plus best_val_loss, step_s, epoch_s, first_epoch_s, total_s (sum of epoch times).
    """
    out = stops.copy()

    def per_run(key: str, fn) -> pd.Series:
        sub = histories[histories["key"] == key]
        return sub.groupby("run_id").apply(fn, include_groups=False) if len(sub) else pd.Series()

    def steady(g: pd.DataFrame) -> float:
        g = g.sort_values("step")
        return float(g["value"].iloc[1:].mean() if len(g) > 1 else g["value"].mean())

    out["best_val_loss"] = out["run_id"].map(per_run("val/loss", lambda g: g["value"].min()))
    out["step_s"] = out["run_id"].map(per_run("time/step_s", steady))
    out["epoch_s"] = out["run_id"].map(per_run("time/epoch_s", steady))
    first = per_run("time/epoch_s", lambda g: g.sort_values("step")["value"].iloc[0])
    out["first_epoch_s"] = out["run_id"].map(first)
    out["total_s"] = out["run_id"].map(per_run("time/epoch_s", lambda g: g["value"].sum()))
    return out
