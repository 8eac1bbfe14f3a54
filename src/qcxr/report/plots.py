"""The report's figures, one PNG each, drawn on an Agg canvas (no display, no pyplot state).

Every function takes the tidy frames of `qcxr.report.analysis`, writes one file and returns its
path. Colours: the first compared head (CDL's part) blue, the second orange.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from qcxr.report.stats import ALPHA

COLORS = ("tab:blue", "tab:orange")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DPI = 120
# ttest_rel gives p = 0 for a constant non-zero difference; -log10(0) is infinite, so volcano
# points are drawn no higher than -log10(P_FLOOR).
P_FLOOR = 1e-16
SPLIT_TITLES = {"test": "internal test set", "external": "external test set"}


def _figure(width: float, height: float, ncols: int = 1):
    # The Agg canvas is attached here, inside the plotting call, rather than selecting a backend
    # at import time: importing this module changes nothing about matplotlib's global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _name(head: str) -> str:
    return head.upper()


def auroc_bars(rows: pd.DataFrame, heads: Sequence[str], title: str, path: Path) -> Path:
    """Grouped bars of mean AUROC per label for both heads (the paper's Figures 5–11).

    Args:
        rows: comparison rows of `auroc_comparisons` to draw, in drawing order (columns label,
            mean_a, sd_a, mean_b, sd_b, stars, n).
        heads: the compared heads (a, b).
        title: figure title.
        path: PNG to write.

    Returns:
        path.
    """
    n = len(rows)
    fig, (ax,) = _figure(max(6.0, 0.6 * n + 2.5), 4.8)
    x = np.arange(n)
    width = 0.38
    for i, side in enumerate("ab"):
        ax.bar(
            x + (i - 0.5) * width,
            rows[f"mean_{side}"],
            width,
            yerr=rows[f"sd_{side}"].fillna(0.0),
            capsize=3,
            color=COLORS[i],
            label=_name(heads[i]),
        )
    tops = np.nanmax(
        np.stack(
            [
                (rows["mean_a"] + rows["sd_a"].fillna(0.0)).to_numpy(dtype=float),
                (rows["mean_b"] + rows["sd_b"].fillna(0.0)).to_numpy(dtype=float),
            ]
        ),
        axis=0,
    )
    for xi, top, marker in zip(x, tops, rows["stars"], strict=True):
        ax.text(xi, (top if np.isfinite(top) else 0.0) + 0.02, marker, ha="center", va="bottom")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    names = [str(v) for v in rows["label"]]
    longest = max((len(line) for name in names for line in name.split("\n")), default=0)
    if n * longest > 60:
        ax.set_xticks(x, names, rotation=40, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x, names)
    ax.set_ylim(0.0, 1.12)
    ax.set_ylabel("AUROC (mean ± sd over seeds)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def volcano(rows: pd.DataFrame, heads: Sequence[str], title: str, path: Path) -> Path:
    """Volcano plot: −log10(p) against the signed percent difference, per label and task.

    Labels are split into panels by how many tasks contain them, most shared first: with the
    paper's CXR-8/14/19 tasks the first panel holds the CXR-8 labels (its Figure 12), the
    second the labels CXR-14 adds (Figure 13), the third those only CXR-19 has. Colour is the
    label, marker the task. The paper puts log2(% difference) on the x axis, which is undefined
    for negative differences; here the x axis is the percent difference itself, on a linear
    scale shared by all panels, so labels where the second head is better sit left of zero.
    The dashed line is p = 0.05.

    Args:
        rows: per-label comparison rows with finite p (task, label, pct_diff, p).
        heads: the compared heads (a, b).
        title: figure title.
        path: PNG to write.

    Returns:
        path.
    """
    from matplotlib.lines import Line2D

    rows = rows.assign(
        y=-np.log10(np.maximum(rows["p"].to_numpy(dtype=float), P_FLOOR)),
        shared=rows.groupby("label")["task"].transform("nunique"),
    )
    tasks = sorted(set(rows["task"]))
    groups = sorted(set(rows["shared"]), reverse=True)
    fig, axes = _figure(5.2 * len(groups) + 1.2, 6.2, ncols=len(groups))
    xs = rows["pct_diff"].to_numpy(dtype=float)
    reach = 1.15 * max(float(np.nanmax(np.abs(xs))) if xs.size else 0.0, 1.0)
    top = 1.1 * max(float(rows["y"].max()) if len(rows) else 0.0, 2.0)
    for ax, shared in zip(axes, groups, strict=True):
        sub = rows[rows["shared"] == shared]
        labels = list(dict.fromkeys(sub["label"]))
        colors = _label_colors(len(labels))
        for r in sub.itertuples(index=False):
            ax.scatter(
                r.pct_diff,
                r.y,
                color=colors[labels.index(r.label)],
                marker=MARKERS[tasks.index(r.task) % len(MARKERS)],
                s=50,
                edgecolors="black",
                linewidths=0.4,
            )
        ax.axhline(-np.log10(ALPHA), color="black", ls="--", lw=1)
        ax.axvline(0.0, color="grey", lw=0.8)
        # Symmetric x range around 0 and y from 0, the same in every panel, so a point's side
        # and height read directly and panels compare.
        ax.set_xlim(-reach, reach)
        ax.set_ylim(0.0, top)
        ax.set_xlabel(f"% diff. AUROC (> 0: {_name(heads[0])} better)")
        ax.set_ylabel("−log10(p), paired t-test")
        where = "every task" if shared == len(tasks) else f"{shared} task(s)"
        ax.set_title(f"labels in {where}" if len(tasks) > 1 else "labels")
        ax.legend(
            handles=[
                Line2D(
                    [], [], ls="", marker="o", color=colors[i], markeredgecolor="black", label=lbl
                )
                for i, lbl in enumerate(labels)
            ],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncols=2,
            fontsize=8,
            frameon=False,
        )
    task_handles = [
        Line2D([], [], ls="", marker=MARKERS[i % len(MARKERS)], color="grey", label=t)
        for i, t in enumerate(tasks)
    ]
    fig.legend(
        handles=[*task_handles, Line2D([], [], color="black", ls="--", label="p = 0.05")],
        title="task",
        loc="outside right upper",
        fontsize=8,
    )
    fig.suptitle(title)
    return _save(fig, path)


def _label_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20"] if n > 10 else colormaps["tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def loss_curves(bands: pd.DataFrame, heads: Sequence[str], title: str, path: Path) -> Path:
    """Train and val loss per epoch, mean over seeds with a min–max band (the paper's Figure 4).

    Args:
        bands: `curve_bands` rows of one task (head, key, step, mean, min, max).
        heads: the compared heads (a, b).
        title: figure title.
        path: PNG to write.

    Returns:
        path.
    """
    fig, axes = _figure(10.0, 4.0, ncols=2)
    for ax, key, name in zip(
        axes, ("train/epoch_loss", "val/loss"), ("train loss", "val loss"), strict=True
    ):
        for i, head in enumerate(heads):
            sub = bands[(bands["head"] == head) & (bands["key"] == key)].sort_values("step")
            if sub.empty:
                continue
            ax.plot(sub["step"], sub["mean"], color=COLORS[i], marker=".", label=_name(head))
            ax.fill_between(sub["step"], sub["min"], sub["max"], color=COLORS[i], alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{name} (BCE)")
        ax.set_title(f"{name}: mean, band min–max over seeds")
        if ax.has_data():
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {key} logged", ha="center", transform=ax.transAxes)
    fig.suptitle(title)
    return _save(fig, path)


def early_stop(per_run: pd.DataFrame, heads: Sequence[str], path: Path) -> Path:
    """Epochs run (filled) and best epoch (hollow) per seed, with the mean as a bar, per task.

    Args:
        per_run: `per_run_training` rows (task, head, epochs_run, best_epoch).
        heads: the compared heads (a, b).
        path: PNG to write.

    Returns:
        path.
    """
    tasks = sorted(set(per_run["task"]))
    fig, (ax,) = _figure(max(5.0, 2.2 * len(tasks) + 2.0), 4.2)
    width = 0.34
    rng = np.random.default_rng(0)  # jitter only, so overlapping seeds stay visible
    for ti, task in enumerate(tasks):
        for i, head in enumerate(heads):
            sub = per_run[(per_run["task"] == task) & (per_run["head"] == head)]
            xc = ti + (i - 0.5) * width
            runs = sub["epochs_run"].dropna()
            ax.bar(
                xc,
                runs.mean() if len(runs) else 0.0,
                width,
                color=COLORS[i],
                alpha=0.35,
                label=_name(head) if ti == 0 else None,
            )
            jitter = rng.uniform(-0.08, 0.08, len(sub))
            ax.scatter(
                xc + jitter,
                sub["epochs_run"],
                color=COLORS[i],
                edgecolors="black",
                linewidths=0.4,
                s=30,
                zorder=3,
            )
            ax.scatter(
                xc + jitter,
                sub["best_epoch"],
                facecolors="none",
                edgecolors=COLORS[i],
                s=30,
                zorder=3,
            )
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylabel("epochs")
    ax.set_ylim(bottom=0)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set_title("Epochs to early stop\n● epochs run   ○ best epoch   bar: mean epochs run")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def robustness_curve(summary: pd.DataFrame, title: str, path: Path) -> Path:
    """Test AUROC against the noise level, one line per shot count (issue 16).

    The x axis is symmetric-log (linear below the smallest non-zero level) so that level 0, the
    ideal circuit, sits on the axis beside 1e-4 .. 1e-2; the band is mean +- sd over runs (no
    band for a single run).

    Args:
        summary: macro rows of `qcxr.robustness.evaluate.summarize` (columns level, shots, mean,
            sd, n; shots "exact" or a count as a string), one channel.
        title: figure title.
        path: PNG to write.

    Returns:
        path.
    """
    fig, (ax,) = _figure(6.4, 4.4)
    levels = sorted(set(summary["level"].astype(float)))
    nonzero = [lv for lv in levels if lv > 0]
    if nonzero:
        ax.set_xscale("symlog", linthresh=min(nonzero), linscale=0.5)
    shots = sorted(
        set(summary["shots"]), key=lambda s: (s != "exact", int(s) if s != "exact" else 0)
    )
    colors = _label_colors(len(shots))
    for i, s in enumerate(shots):
        rows = summary[summary["shots"] == s].sort_values("level")
        x = rows["level"].to_numpy(dtype=float)
        mean = rows["mean"].to_numpy(dtype=float)
        sd = rows["sd"].fillna(0.0).to_numpy(dtype=float)
        label = "exact ⟨Z⟩" if s == "exact" else f"{int(s):,} shots"
        style = {"color": colors[i]}
        if s == "exact":  # on top, dashed: the many-shot lines converge to it
            style = {"color": "black", "linestyle": "--", "zorder": 3}
        ax.plot(x, mean, marker=MARKERS[i % len(MARKERS)], label=label, **style)
        if (rows["n"] > 1).any():
            ax.fill_between(x, mean - sd, mean + sd, color=style["color"], alpha=0.12, linewidth=0)
    ax.set_xticks(levels)
    ax.set_xticklabels(["0" if lv == 0 else f"{lv:g}" for lv in levels])
    channel = str(summary["channel"].iloc[0]) if "channel" in summary and len(summary) else "noise"
    ax.set_xlabel(f"{channel} level (after every gate)")
    ax.set_ylabel("test AUROC (macro)")
    n = int(summary["n"].max()) if len(summary) else 0
    ax.set_title(title + (f"\nmean ± sd over {n} runs" if n > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)
