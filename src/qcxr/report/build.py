"""Build the report folder (report.md, figures/, tables/) and log it as an MLflow run.

All MLflow access goes through `qcxr.report.load`."""

from __future__ import annotations

import logging
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
    load_runs,
    log_report_run,
)
from qcxr.report.markdown import (
    auroc_table,
    method_section,
    rel_path,
    robustness_section,
    run_section,
    score_table,
    seeds_text,
    slug,
    timing_table,
    training_table,
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
        self.md += [f"![{alt}]({rel_path(path, self.out_dir)})", ""]


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
    out.md += method_section(heads)
    out.md += run_section(an.data, an.sel, heads)


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
        auroc_table(rows[rows["label"] == analysis.MACRO], heads, with_label=False),
        "",
    ]
    task_scores = an.scores[an.scores["task"] == task]
    if not task_scores.empty:  # multiclass tasks (accuracy etc. are logged for them)
        table = score_table(task_scores, heads)
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
            out.fig_dir / f"auroc_{slug(task)}_{split}.png",
        )
        if not by_frequency:
            out.md += [
                "No `data/train_positives/<label>` params were logged: labels are in "
                "alphabetical order, not by training frequency.",
                "",
            ]
        out.figure(path, f"per-label AUROC {task} {split}")
        out.md += [auroc_table(per_label.sort_values("order"), heads, with_label=True), ""]


def _plot_task_training(out: _Sections, an: _Analysis, task: str) -> None:
    out.md += ["### Training", ""]
    path = plots.loss_curves(
        an.bands[an.bands["task"] == task],
        an.heads,
        f"{task}: loss per epoch",
        out.fig_dir / f"loss_{slug(task)}.png",
    )
    out.md += [
        "Mean over seeds per epoch; the band spans the minimum to the maximum over seeds. "
        "A seed that stopped early no longer contributes after its last epoch.",
        "",
    ]
    out.figure(path, f"loss curves {task}")
    summary = an.summary[an.summary["task"] == task]
    out.md += [
        training_table(summary),
        "",
        "### Timing",
        "",
        "Per run, step and epoch times are averaged over epochs 2 onward (epoch 1 includes "
        "JIT compilation and is shown apart); the table gives mean ± sd over runs.",
        "",
        timing_table(summary),
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
    robust_md, robust_figures = robustness_section(
        tracking_uri, an.data, out.fig_dir, table_dir, out.out_dir
    )
    out.md += robust_md
    out.figures += robust_figures
    comparisons, scores = an.comparisons, an.scores
    comparisons.assign(seeds=comparisons["seeds"].map(seeds_text)).to_csv(
        table_dir / "auroc_comparisons.csv", index=False
    )
    if not scores.empty:
        scores.assign(seeds=scores["seeds"].map(seeds_text)).to_csv(
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
