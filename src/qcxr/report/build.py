"""Build the report folder (report.md, figures/, tables/) and log it as an MLflow run.

All MLflow access goes through `qcxr.report.load`."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from qcxr.report import analysis, plots
from qcxr.report.load import (
    RunData,
    load_histories,
    load_robustness,
    load_runs,
    load_unreproduced,
    log_report_run,
)
from qcxr.report.stats import ALPHA

log = logging.getLogger(__name__)

REPORT_EXPERIMENT = "reports"
REPORT_RUN_NAME = "report"
DEFAULT_HEADS = ("cdl", "dqc")


@dataclass
class Report:
    """What `build_report` produced.

    Attributes:
        out_dir: the report folder.
        markdown: path of report.md.
        figures: every PNG written.
        comparisons: the AUROC comparison frame (see `analysis.auroc_comparisons`).
        selection: the run selection and pairing.
        training: per-run training and timing frame (see `analysis.per_run_training`).
        run_id: the MLflow run the report was logged to, None when not logged.
        seconds: wall time to build (and log) the report.
    """

    out_dir: Path
    markdown: Path
    figures: list[Path]
    comparisons: pd.DataFrame
    selection: analysis.Selection
    training: pd.DataFrame
    run_id: str | None = None
    seconds: float = 0.0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _ms(mean: float, sd: float, digits: int = 3) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {_f(sd, digits)}"


def _p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return f"{p:.2e}" if p < 0.001 else f"{p:.4f}"


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.2f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _seeds(values) -> str:
    return ", ".join(str(int(s)) for s in sorted(values)) or "none"


def _run_section(data: RunData, sel: analysis.Selection, heads: Sequence[str]) -> list[str]:
    a, b = heads
    out = ["## Runs", ""]
    rows = []
    for task in sorted(set(sel.chosen["task"])):
        for head in heads:
            sub = sel.chosen[(sel.chosen["task"] == task) & (sel.chosen["head"] == head)]
            paired = sel.pairs[sel.pairs["task"] == task]["seed"]
            rows.append([task, head, len(sub), _seeds(sub["seed"]), _seeds(paired)])
    out += [_table(["task", "head", "runs used", "seeds", "paired seeds"], rows), ""]

    out += ["### Missing partners", ""]
    if sel.unpaired.empty:
        out += [f"None: every seed has a finished `{a}` and a finished `{b}` run.", ""]
    else:
        out += [
            "Runs whose (task, seed) has no finished run of the other head. They appear in the "
            "training and timing tables but not in any t-test.",
            "",
            _table(
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
            _table(
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
            _table(["task", "reason", "count"], counts.values.tolist()),
            "",
            _table(
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


def _auroc_table(rows: pd.DataFrame, heads: Sequence[str], with_label: bool) -> str:
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
            + [n, _ms(r.mean_a, r.sd_a), _ms(r.mean_b, r.sd_b), _pct(r.pct_diff), _p(r.p), r.stars]
        )
    return _table(header, body)


def _score_table(rows: pd.DataFrame, heads: Sequence[str]) -> str:
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
                _ms(r.mean_a, r.sd_a),
                _ms(r.mean_b, r.sd_b),
                _pct(r.pct_diff),
                _p(r.p),
                r.stars,
            ]
        )
    return _table(header, body)


def _method_section(heads: Sequence[str]) -> list[str]:
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


def _training_table(summary: pd.DataFrame) -> str:
    def rng(r, c: str) -> str:
        lo, hi = getattr(r, f"{c}_min"), getattr(r, f"{c}_max")
        return "" if not np.isfinite(lo) else f" ({lo:.0f}–{hi:.0f})"

    rows = [
        [
            r.head,
            r.n,
            _ms(r.epochs_run_mean, r.epochs_run_sd, 1) + rng(r, "epochs_run"),
            _ms(r.best_epoch_mean, r.best_epoch_sd, 1) + rng(r, "best_epoch"),
            _ms(r.best_val_loss_mean, r.best_val_loss_sd, 4),
        ]
        for r in summary.itertuples(index=False)
    ]
    return _table(
        ["head", "runs", "epochs run (min–max)", "best epoch (min–max)", "best val loss"], rows
    )


def _timing_table(summary: pd.DataFrame) -> str:
    rows = [
        [
            r.head,
            r.n,
            _ms(r.step_s_mean, r.step_s_sd, 4),
            _ms(r.epoch_s_mean, r.epoch_s_sd, 2),
            _ms(r.first_epoch_s_mean, r.first_epoch_s_sd, 2),
            _ms(r.total_s_mean, r.total_s_sd, 1),
        ]
        for r in summary.itertuples(index=False)
    ]
    return _table(
        ["head", "runs", "step s", "epoch s", "first epoch s", "total train s (sum of epochs)"],
        rows,
    )


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def infer_heads(run_heads: Sequence[str]) -> tuple[str, str]:
    """The two heads to compare when none were named.

    Args:
        run_heads: the `head` tag of every training run read.

    Returns:
        (a, b): the two heads present, CDL first when it is one of them (the classical baseline
        takes CDL's part in the percent difference); cdl and dqc when more heads are present.

    Raises:
        ValueError: fewer than two heads, or more than two without both cdl and dqc.
    """
    found = sorted({str(h) for h in run_heads if h})
    if len(found) == 2:
        return tuple(sorted(found, key=lambda h: (h != "cdl", h)))  # type: ignore[return-value]
    if set(DEFAULT_HEADS) <= set(found):
        return DEFAULT_HEADS
    raise ValueError(
        f"the runs hold the heads {found}: name the two to compare with --heads A B"
        if found
        else "the runs carry no head tag"
    )


def _shots_order(shots: str) -> int:
    return -1 if shots == "exact" else int(shots)


def _unreproduced_lines(excluded: pd.DataFrame) -> list[str]:
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


def _robustness_section(
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
        *_unreproduced_lines(excluded),
    ]
    figures = []
    for (experiment, channel, split), rows in summary.groupby(["experiment", "channel", "split"]):
        path = plots.robustness_curve(
            rows,
            f"{experiment}: {split} AUROC vs {channel} noise",
            fig_dir / f"robustness_{_slug(experiment)}_{_slug(channel)}_{split}.png",
        )
        figures.append(path)
        shots = sorted(set(rows["shots"]), key=_shots_order)
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
                    cells.append(f"{_ms(r['mean'], r['sd'], 4)} (n={int(r['n'])})")
            table.append([f"{level:g}", *cells])
        md += [
            f"### `{experiment}`, {channel}, {plots.SPLIT_TITLES.get(split, split)}",
            "",
            f"![robustness {experiment} {channel}]({_rel(path, out_dir)})",
            "",
            _table(header, table),
            "",
        ]
    return md, figures


_SUMMARY_COLUMNS = [
    "epochs_run",
    "best_epoch",
    "best_val_loss",
    "step_s",
    "epoch_s",
    "first_epoch_s",
    "total_s",
]


@dataclass
class _Analysis:
    """Everything the report's sections read: the runs, their pairing and the comparisons."""

    data: RunData
    heads: tuple[str, str]
    sel: analysis.Selection
    comparisons: pd.DataFrame
    scores: pd.DataFrame
    bands: pd.DataFrame
    training: pd.DataFrame
    summary: pd.DataFrame


@dataclass
class _Sections:
    """The report being written: its markdown lines and the figures drawn for them."""

    out_dir: Path
    md: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    @property
    def fig_dir(self) -> Path:
        return self.out_dir / "figures"

    def figure(self, path: Path, alt: str) -> None:
        """Records a written figure and links it from the markdown."""
        self.figures.append(path)
        self.md += [f"![{alt}]({_rel(path, self.out_dir)})", ""]


def _check_arguments(heads: Sequence[str] | None, out_dir: Path) -> tuple[str, str] | None:
    if heads is not None:
        heads = tuple(heads)
        if len(heads) != 2 or heads[0] == heads[1]:
            raise ValueError(f"--heads needs two different heads, got {list(heads)}")
    if (out_dir / "report.md").exists():
        raise FileExistsError(f"{out_dir / 'report.md'} exists; choose another --out")
    return heads


def _load(
    tracking_uri: str,
    experiments: Sequence[str] | None,
    filter_string: str,
    tasks: Sequence[str] | None,
) -> RunData:
    data = load_runs(tracking_uri, experiments, filter_string, tasks)
    if data.runs.empty:
        raise ValueError(
            f"no training runs (tagged `head`) in {tracking_uri} for experiments "
            f"{data.experiments or 'none'} with filter {filter_string!r}"
        )
    return data


def _analyse(tracking_uri: str, data: RunData, heads: tuple[str, str] | None) -> _Analysis:
    if heads is None:
        heads = infer_heads(data.runs["head"])
    sel = analysis.select_runs(data.runs, heads)
    histories = analysis.clean_histories(
        load_histories(tracking_uri, list(sel.chosen["run_id"]), data.metrics), sel.chosen
    )
    training = analysis.per_run_training(histories, analysis.early_stopping(data.metrics, sel))
    return _Analysis(
        data=data,
        heads=heads,
        sel=sel,
        comparisons=analysis.auroc_comparisons(data.metrics, sel),
        scores=analysis.score_comparisons(data.metrics, sel),
        bands=analysis.curve_bands(histories),
        training=training,
        summary=analysis.summarize(training, _SUMMARY_COLUMNS),
    )


def _write_header(
    out: _Sections,
    an: _Analysis,
    tracking_uri: str,
    filter_string: str,
    tasks: Sequence[str] | None,
) -> None:
    heads = an.heads
    a, b = (h.upper() for h in heads)
    out.md += [
        f"# qcxr report: {a} vs {b}",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from `{tracking_uri}`; experiments: "
        + ", ".join(f"`{e}`" for e in an.data.experiments)
        + f"; filter: `{filter_string or 'none'}`"
        + (f"; tasks: {', '.join(tasks)}" if tasks else "")
        + f"; heads: `{heads[0]}` vs `{heads[1]}`.",
        "",
    ]
    out.md += _method_section(heads)
    out.md += _run_section(an.data, an.sel, heads)


def _plot_macro(out: _Sections, an: _Analysis) -> None:
    macro = an.comparisons[an.comparisons["label"] == analysis.MACRO]
    if macro.empty:
        return
    a, b = (h.upper() for h in an.heads)
    shown = macro.assign(label=macro["task"] + "\n" + macro["split"].map(plots.SPLIT_TITLES))
    path = plots.auroc_bars(
        shown.reset_index(drop=True),
        an.heads,
        f"Mean (macro) AUROC: {a} vs {b}",
        out.fig_dir / "macro_auroc.png",
    )
    out.md += ["## Mean AUROC, all tasks", ""]
    out.figure(path, "mean AUROC")


def _plot_task_aurocs(out: _Sections, an: _Analysis, task: str) -> None:
    heads = an.heads
    rows = an.comparisons[an.comparisons["task"] == task]
    if rows.empty:
        a, b = (h.upper() for h in heads)
        out.md += [f"No complete ({a}, {b}) pair in this task: no AUROC comparison.", ""]
        return
    out.md += [
        "### Mean AUROC",
        "",
        _auroc_table(rows[rows["label"] == analysis.MACRO], heads, with_label=False),
        "",
    ]
    task_scores = an.scores[an.scores["task"] == task]
    if not task_scores.empty:  # multiclass tasks (accuracy etc. are logged for them)
        table = _score_table(task_scores, heads)
        out.md += ["### Multiclass scores (arg-max class)", "", table, ""]
    for split in analysis.SPLITS:
        per_label = rows[(rows["split"] == split) & (rows["label"] != analysis.MACRO)]
        out.md += [f"### Per-label AUROC, {plots.SPLIT_TITLES[split]}", ""]
        if per_label.empty:
            out.md += [f"No `{split}/auroc/<label>` metrics logged.", ""]
            continue
        by_frequency = per_label["sorted_by_frequency"].iloc[0]
        path = plots.auroc_bars(
            per_label.sort_values("order").reset_index(drop=True),
            heads,
            f"{task}, {plots.SPLIT_TITLES[split]}: per-label AUROC\n"
            + (
                "labels by training frequency, most frequent first"
                if by_frequency
                else "labels in alphabetical order (no training counts logged)"
            ),
            out.fig_dir / f"auroc_{_slug(task)}_{split}.png",
        )
        if not by_frequency:
            out.md += [
                "No `data/train_positives/<label>` params were logged: labels are in "
                "alphabetical order, not by training frequency.",
                "",
            ]
        out.figure(path, f"per-label AUROC {task} {split}")
        out.md += [_auroc_table(per_label.sort_values("order"), heads, with_label=True), ""]


def _plot_task_training(out: _Sections, an: _Analysis, task: str) -> None:
    out.md += ["### Training", ""]
    path = plots.loss_curves(
        an.bands[an.bands["task"] == task],
        an.heads,
        f"{task}: loss per epoch",
        out.fig_dir / f"loss_{_slug(task)}.png",
    )
    out.md += [
        "Mean over seeds per epoch; the band spans the minimum to the maximum over seeds. "
        "A seed that stopped early no longer contributes after its last epoch.",
        "",
    ]
    out.figure(path, f"loss curves {task}")
    summary = an.summary[an.summary["task"] == task]
    out.md += [
        _training_table(summary),
        "",
        "### Timing",
        "",
        "Per run, step and epoch times are averaged over epochs 2 onward (epoch 1 includes "
        "JIT compilation and is shown apart); the table gives mean ± sd over runs.",
        "",
        _timing_table(summary),
        "",
    ]


def _plot_tasks(out: _Sections, an: _Analysis) -> None:
    for task in sorted(set(an.sel.chosen["task"])):
        out.md += [f"## Task `{task}`", ""]
        _plot_task_aurocs(out, an, task)
        _plot_task_training(out, an, task)


def _plot_early_stop(out: _Sections, an: _Analysis) -> None:
    if an.training.empty:
        return
    path = plots.early_stop(an.training, an.heads, out.fig_dir / "early_stop.png")
    out.md += ["## Epochs to early stop", ""]
    out.figure(path, "epochs to early stop")


def _plot_volcanoes(out: _Sections, an: _Analysis) -> None:
    a, b = (h.upper() for h in an.heads)
    out.md += ["## Volcano plots", ""]
    out.md += [
        "One point per (task, label): −log10(p) of the paired t-test against the % difference; "
        "colour is the label, marker the task. Panels group labels by how many tasks contain "
        "them (with CXR-8/14/19: the CXR-8 labels, the labels CXR-14 adds, the CXR-19-only "
        "labels; the paper's Figures 12 and 13 are the first two). The paper plots log2 of the "
        f"% difference, which is undefined where {b} is better; here the x axis is the signed "
        "% difference on a linear scale, symmetric about zero, so those labels sit left of "
        f"zero. The dashed line is p = {ALPHA}. p = 0 (a constant non-zero difference) is drawn "
        f"at −log10({plots.P_FLOOR:g}).",
        "",
    ]
    per_label_all = an.comparisons[an.comparisons["label"] != analysis.MACRO]
    for split in analysis.SPLITS:
        rows = per_label_all[per_label_all["split"] == split]
        if rows.empty:
            continue
        finite = rows[np.isfinite(rows["p"].astype(float))]
        if not finite.empty:
            path = plots.volcano(
                finite.reset_index(drop=True),
                an.heads,
                f"Volcano: {a} vs {b}, {plots.SPLIT_TITLES[split]}",
                out.fig_dir / f"volcano_{split}.png",
            )
            out.figure(path, f"volcano {split}")
        left_out = rows[~np.isfinite(rows["p"].astype(float))]
        if not left_out.empty:
            out.md += [
                f"Not drawn ({plots.SPLIT_TITLES[split]}, no p-value): "
                + ", ".join(
                    f"{t}/{lbl} (n={n})"
                    for t, lbl, n in left_out[["task", "label", "n"]].itertuples(index=False)
                )
                + ".",
                "",
            ]


def _write_tables(out: _Sections, an: _Analysis, tracking_uri: str) -> None:
    """The robustness section, the CSV tables and the Files section that lists them."""
    table_dir = out.out_dir / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)
    robust_md, robust_figures = _robustness_section(
        tracking_uri, an.data, out.fig_dir, table_dir, out.out_dir
    )
    out.md += robust_md
    out.figures += robust_figures
    comparisons, scores = an.comparisons, an.scores
    comparisons.assign(seeds=comparisons["seeds"].map(_seeds)).to_csv(
        table_dir / "auroc_comparisons.csv", index=False
    )
    if not scores.empty:
        scores.assign(seeds=scores["seeds"].map(_seeds)).to_csv(
            table_dir / "score_comparisons.csv", index=False
        )
    an.training.to_csv(table_dir / "training_per_run.csv", index=False)
    an.sel.chosen.to_csv(table_dir / "runs_used.csv", index=False)
    an.sel.unpaired.to_csv(table_dir / "unpaired.csv", index=False)
    an.sel.excluded.to_csv(table_dir / "excluded.csv", index=False)
    out.md += [
        "## Files",
        "",
        "`tables/auroc_comparisons.csv` (every comparison above), `tables/training_per_run.csv`, "
        "`tables/runs_used.csv`, `tables/unpaired.csv`, `tables/excluded.csv`"
        + (", `tables/robustness.csv`" if robust_figures else "")
        + "; figures in `figures/`.",
        "",
    ]


def _write_markdown(out: _Sections, an: _Analysis) -> Report:
    markdown = out.out_dir / "report.md"
    markdown.write_text("\n".join(out.md), encoding="utf-8")
    return Report(
        out_dir=out.out_dir,
        markdown=markdown,
        figures=out.figures,
        comparisons=an.comparisons,
        selection=an.sel,
        training=an.training,
    )


def build_report(
    tracking_uri: str,
    out_dir: Path,
    experiments: Sequence[str] | None = None,
    filter_string: str = "",
    tasks: Sequence[str] | None = None,
    heads: Sequence[str] | None = None,
    log_to_mlflow: bool = True,
) -> Report:
    """Read finished runs, compare two heads, and write the report folder.

    Args:
        tracking_uri: the MLflow store to read (and to log the report run to).
        out_dir: folder to write; created, and must not already hold a report.md.
        experiments: experiment names; None for every experiment with runs tagged `head`.
        filter_string: MLflow search filter on the runs, e.g. "tags.study = 'lr'".
        tasks: keep only these tasks (tag `task`, else the experiment name).
        heads: the two heads compared, (a, b); a takes CDL's part in the percent difference.
            None: the two heads the runs hold (CDL first when present: the classical
            baseline), or cdl and dqc when they hold more than two heads including both.
        log_to_mlflow: log the folder as artifacts of a run `report` in experiment `reports`.

    Returns:
        The Report.

    Raises:
        ValueError: fewer or more than two heads, equal heads, or no training runs matched.
        FileExistsError: out_dir already holds a report.md.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    heads = _check_arguments(heads, out_dir)
    data = _load(tracking_uri, experiments, filter_string, tasks)
    an = _analyse(tracking_uri, data, heads)

    out = _Sections(out_dir)
    _write_header(out, an, tracking_uri, filter_string, tasks)
    _plot_macro(out, an)
    _plot_tasks(out, an)
    _plot_early_stop(out, an)
    _plot_volcanoes(out, an)
    _write_tables(out, an, tracking_uri)
    report = _write_markdown(out, an)

    if log_to_mlflow:
        report.run_id = log_report_run(
            tracking_uri,
            out_dir,
            experiment=REPORT_EXPERIMENT,
            run_name=REPORT_RUN_NAME,
            tags={
                "report": "true",
                "heads": ",".join(an.heads),
                "experiments": ",".join(data.experiments),
                "filter": filter_string or "",
            },
        )
    report.seconds = time.perf_counter() - started
    log.info("report written to %s in %.1f s", report.markdown, report.seconds)
    return report
