"""The report's markdown: number formatting, tables and the text sections (runs, method,
training, timing, robustness). build.py assembles them with the figures into report.md."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from qcxr.report import analysis, plots
from qcxr.report.load import RunData, load_robustness, load_unreproduced


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def fmt_ms(mean: float, sd: float, digits: int = 3) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {fmt(sd, digits)}"


def fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return f"{p:.2e}" if p < 0.001 else f"{p:.4f}"


def fmt_pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.2f}%"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def seeds_text(values) -> str:
    return ", ".join(str(int(s)) for s in sorted(values)) or "none"


def run_section(data: RunData, sel: analysis.Selection, heads: Sequence[str]) -> list[str]:
    a, b = heads
    out = ["## Runs", ""]
    rows = []
    for task in sorted(set(sel.chosen["task"])):
        for head in heads:
            sub = sel.chosen[(sel.chosen["task"] == task) & (sel.chosen["head"] == head)]
            paired = sel.pairs[sel.pairs["task"] == task]["seed"]
            rows.append([task, head, len(sub), seeds_text(sub["seed"]), seeds_text(paired)])
    out += [md_table(["task", "head", "runs used", "seeds", "paired seeds"], rows), ""]

    out += ["### Missing partners", ""]
    if sel.unpaired.empty:
        out += [f"None: every seed has a finished `{a}` and a finished `{b}` run.", ""]
    else:
        out += [
            "Runs whose (task, seed) has no finished run of the other head. They appear in the "
            "training and timing tables but not in any t-test.",
            "",
            md_table(
                ["task", "seed", "has", "missing", "run id"],
                sel.unpaired[["task", "seed", "head", "missing_head", "run_id"]].values.tolist(),
            ),
            "",
        ]

    out += ["### Re-runs", ""]
    if sel.superseded.empty:
        out += ["None: no (task, head, seed) has more than one finished run.", ""]
    else:
        out += [
            "Several finished runs of one (task, head, seed): the most recent is used and these "
            "older ones are not.",
            "",
            md_table(
                ["task", "head", "seed", "older run (not used)", "run used"],
                sel.superseded[["task", "head", "seed", "run_id", "kept_run_id"]].values.tolist(),
            ),
            "",
        ]

    out += ["### Excluded runs", ""]
    if sel.excluded.empty:
        out += ["None: every matching run finished with an integer seed.", ""]
    else:
        counts = sel.excluded.groupby(["task", "reason"]).size().reset_index(name="count")
        out += [
            md_table(["task", "reason", "count"], counts.values.tolist()),
            "",
            md_table(
                ["task", "head", "seed tag", "status", "run id"],
                sel.excluded[["task", "head", "seed_tag", "status", "run_id"]]
                .fillna("")
                .values.tolist(),
            ),
            "",
        ]
    if not sel.other_heads.empty:
        out += [
            f"Finished runs of heads not compared (`--heads {a} {b}`): "
            + ", ".join(f"{t}/{h}: {c}" for t, h, c in sel.other_heads.itertuples(index=False))
            + ".",
            "",
        ]
    out += [
        f"Ignored {data.ignored} run(s) that are not training runs (tagged `report=true` or "
        "without a `head` tag).",
        "",
    ]
    return out


def auroc_table(rows: pd.DataFrame, heads: Sequence[str], with_label: bool) -> str:
    a, b = (h.upper() for h in heads)
    header = (["label", "train positives"] if with_label else ["test set"]) + [
        "n pairs",
        f"{a} AUROC",
        f"{b} AUROC",
        f"% diff ({a} vs {b})",
        "p (paired t)",
        "sig",
    ]
    body = []
    for r in rows.itertuples(index=False):
        first = (
            [r.label, "n/a" if not np.isfinite(r.positives) else f"{r.positives:.0f}"]
            if with_label
            else [plots.SPLIT_TITLES[r.split]]
        )
        n = f"{r.n}" + (f" ({r.n_missing} missing)" if r.n_missing else "")
        body.append(
            first
            + [
                n,
                fmt_ms(r.mean_a, r.sd_a),
                fmt_ms(r.mean_b, r.sd_b),
                fmt_pct(r.pct_diff),
                fmt_p(r.p),
                r.stars,
            ]
        )
    return md_table(header, body)


def score_table(rows: pd.DataFrame, heads: Sequence[str]) -> str:
    a, b = (h.upper() for h in heads)
    header = ["test set", "score", "n pairs", a, b, f"% diff ({a} vs {b})", "p (paired t)", "sig"]
    body = []
    for r in rows.itertuples(index=False):
        n = f"{r.n}" + (f" ({r.n_missing} missing)" if r.n_missing else "")
        body.append(
            [
                plots.SPLIT_TITLES[r.split],
                r.score.replace("_", " "),
                n,
                fmt_ms(r.mean_a, r.sd_a),
                fmt_ms(r.mean_b, r.sd_b),
                fmt_pct(r.pct_diff),
                fmt_p(r.p),
                r.stars,
            ]
        )
    return md_table(header, body)


def method_section(heads: Sequence[str]) -> list[str]:
    a, b = (h.upper() for h in heads)
    return [
        "## How to read this report",
        "",
        f"- {a} is head `{heads[0]}`, {b} is head `{heads[1]}`. Runs are paired by (task, seed); "
        "for each (task, head, seed) the most recent FINISHED run is used.",
        "- AUROC columns: mean ± sample sd (ddof = 1) over the paired seeds that logged the "
        "metric; `n pairs` counts them, and `missing` counts pairs where a run lacks it (a label "
        "with no positives in a test split has no per-label AUROC).",
        "- p: two-sided paired t-test over those seeds (`scipy.stats.ttest_rel`); n/a with fewer "
        "than 2 pairs or when all differences are zero. sig: ns p ≥ 0.05, * p < 0.05, "
        "** p < 0.01, *** p < 0.001 (the paper's figure captions).",
        f"- % diff: the paper's equation (4) on the means, 100 · 2 · ({a} − {b}) / ({a} + {b}); "
        f"positive means {a} is better.",
        "- internal test set: metrics `test/*`; external test set (MIMIC-CXR-LT for the real "
        "tasks): metrics `external/*`.",
        "- Labels are sorted by training-set frequency (`data/train_positives/<label>`), most "
        "frequent first, as in the paper's Figures 6–11.",
        "- Training and timing tables use every run used for a head, paired or not.",
        "",
    ]


def training_table(summary: pd.DataFrame) -> str:
    def rng(r, c: str) -> str:
        lo, hi = getattr(r, f"{c}_min"), getattr(r, f"{c}_max")
        return "" if not np.isfinite(lo) else f" ({lo:.0f}–{hi:.0f})"

    rows = [
        [
            r.head,
            r.n,
            fmt_ms(r.epochs_run_mean, r.epochs_run_sd, 1) + rng(r, "epochs_run"),
            fmt_ms(r.best_epoch_mean, r.best_epoch_sd, 1) + rng(r, "best_epoch"),
            fmt_ms(r.best_val_loss_mean, r.best_val_loss_sd, 4),
        ]
        for r in summary.itertuples(index=False)
    ]
    return md_table(
        ["head", "runs", "epochs run (min–max)", "best epoch (min–max)", "best val loss"], rows
    )


def timing_table(summary: pd.DataFrame) -> str:
    rows = [
        [
            r.head,
            r.n,
            fmt_ms(r.step_s_mean, r.step_s_sd, 4),
            fmt_ms(r.epoch_s_mean, r.epoch_s_sd, 2),
            fmt_ms(r.first_epoch_s_mean, r.first_epoch_s_sd, 2),
            fmt_ms(r.total_s_mean, r.total_s_sd, 1),
        ]
        for r in summary.itertuples(index=False)
    ]
    return md_table(
        ["head", "runs", "step s", "epoch s", "first epoch s", "total train s (sum of epochs)"],
        rows,
    )


def rel_path(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def shots_order(shots: str) -> int:
    return -1 if shots == "exact" else int(shots)


def unreproduced_lines(excluded: pd.DataFrame) -> list[str]:
    """Markdown naming the runs left out: their ideal re-evaluation missed the logged AUROC."""
    if excluded.empty:
        return []
    lines = [
        f"Left out: {len(excluded)} run(s) whose ideal re-evaluation (level 0, exact ⟨Z⟩) did not "
        "reproduce the run's logged test AUROC, so their curves would not describe those runs "
        "(their robustness runs are FAILED; re-train or find what changed):",
        "",
    ]
    for r in excluded.itertuples(index=False):
        lines.append(
            f"- `{r.source_run_id}` ({r.channel}): logged {r.logged:.6f}, re-evaluated "
            f"{r.reevaluated:.6f} (robustness run `{r.robustness_run_id}`)"
        )
    return [*lines, ""]


def robustness_section(
    tracking_uri: str, data: RunData, fig_dir: Path, table_dir: Path, out_dir: Path
) -> tuple[list[str], list[Path]]:
    """The robustness section (issue 16): test AUROC of trained DQC runs re-evaluated under noise
    by `python -m qcxr.robustness`; nothing when the experiments hold no such runs.

    Only robustness runs of training runs that the report selected (its experiments, filter and
    tasks) count.

    Returns:
        (markdown lines, figures written); the table goes to tables/robustness.csv.
    """
    selected = set(data.runs["run_id"])
    frame = load_robustness(tracking_uri, data.experiments)
    frame = frame[frame["source_run_id"].isin(selected)]
    excluded = load_unreproduced(tracking_uri, data.experiments)
    excluded = excluded[excluded["source_run_id"].isin(selected)]
    if frame.empty and excluded.empty:
        return [], []
    summary = (
        frame.groupby(["experiment", "channel", "split", "level", "shots"])["auroc"]
        .agg(mean="mean", sd="std", n="count")
        .reset_index()
    )
    table_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(table_dir / "robustness.csv", index=False)
    md = [
        "## Robustness to noise and finite shots",
        "",
        "Trained DQC runs (best checkpoints) re-evaluated by `python -m qcxr.robustness` with the "
        "channel after every gate and each ⟨Z⟩ exact or estimated from N sampled bitstrings; "
        "level 0 with exact ⟨Z⟩ is the ideal circuit the runs were evaluated with. Mean ± sd "
        "of the macro AUROC over the re-evaluated runs (n per cell).",
        "",
        *unreproduced_lines(excluded),
    ]
    figures = []
    for (experiment, channel, split), rows in summary.groupby(["experiment", "channel", "split"]):
        path = plots.robustness_curve(
            rows,
            f"{experiment}: {split} AUROC vs {channel} noise",
            fig_dir / f"robustness_{slug(experiment)}_{slug(channel)}_{split}.png",
        )
        figures.append(path)
        shots = sorted(set(rows["shots"]), key=shots_order)
        header = [
            f"{channel} level",
            *("exact ⟨Z⟩" if s == "exact" else f"{s} shots" for s in shots),
        ]
        table = []
        for level, by_level in rows.groupby("level", sort=True):
            cells = []
            for s in shots:
                cell = by_level[by_level["shots"] == s]
                if cell.empty:
                    cells.append("")
                else:
                    r = cell.iloc[0]
                    cells.append(f"{fmt_ms(r['mean'], r['sd'], 4)} (n={int(r['n'])})")
            table.append([f"{level:g}", *cells])
        md += [
            f"### `{experiment}`, {channel}, {plots.SPLIT_TITLES.get(split, split)}",
            "",
            f"![robustness {experiment} {channel}]({rel_path(path, out_dir)})",
            "",
            md_table(header, table),
            "",
        ]
    return md, figures
