"""`python -m qcxr.robustness <run id | experiment>`: re-evaluate trained DQC runs over noise
levels x shot counts and log test AUROC vs noise to MLflow (see qcxr.robustness)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from qcxr.models.heads import EVAL_NOISE_SEED, NOISE_CHANNELS
from qcxr.report.load import resolve_tracking_uri
from qcxr.report.plots import robustness_curve
from qcxr.robustness import load
from qcxr.robustness.evaluate import (
    EXACT,
    MACRO,
    evaluate_grid,
    metric_key,
    parse_levels,
    parse_shots,
    shots_name,
    summarize,
)
from qcxr.run import git_commit, project_root, rebuild_for_evaluation
from qcxr.train.checkpoint import Checkpoints

log = logging.getLogger("qcxr.robustness")

# For a run trained on the ideal circuit, the re-evaluated ideal point (level 0, exact) must give
# the run's own test AUROC: the same computation on the same parameters and data. A larger gap
# fails that run's robustness run (NotReproduced) and leaves it out of the summary and the report.
REPRODUCE_TOL = 1e-5


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: arguments without the program name; None reads sys.argv.

    Returns:
        The parsed namespace.
    """
    parser = argparse.ArgumentParser(
        prog="python -m qcxr.robustness",
        description="Re-evaluate trained DQC runs (their best checkpoints in MLflow) over a grid "
        "of noise levels and shot counts; log test AUROC vs noise (per label and macro) and a "
        "figure as a run nested under each trained run, and, for an experiment, a summary run "
        "with the mean +- sd over runs.",
    )
    parser.add_argument(
        "target",
        help="an MLflow run id (one DQC run) or an experiment name (every finished DQC run in it; "
        "the experiment is the task name, e.g. synthetic)",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<repo root>/mlruns/"
        "mlflow.db)",
    )
    parser.add_argument(
        "--channel", default="depolarizing", choices=NOISE_CHANNELS, help="the noise channel"
    )
    parser.add_argument(
        "--levels",
        default="0,1e-4,1e-3,1e-2",
        help="comma-separated channel levels (0: no channel) (default: %(default)s)",
    )
    parser.add_argument(
        "--shots",
        default="none,100,1000,10000",
        help="comma-separated shot counts; none: exact expectations (default: %(default)s)",
    )
    parser.add_argument(
        "--trajectories",
        type=int,
        default=None,
        help="trajectories per sample when the method is trajectories (default: the run's "
        "head.trajectories, 64)",
    )
    parser.add_argument(
        "--method",
        default=None,
        help="engine method under noise: auto, density_matrix, trajectories (default: the "
        "run's head.method; auto picks by cost)",
    )
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument(
        "--filter",
        default="",
        metavar="FILTER",
        help="MLflow search filter within an experiment, e.g. "
        "\"params.`head.noise.depolarizing` = '0.0'\"",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="cache root for images and features (default: each run's paths.cache_dir)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a trained run's numbers from its latest FINISHED robustness run with the same "
        "channel, levels, shots, method, trajectories and split instead of evaluating it again "
        "(to finish an interrupted experiment, or to redo only the summary)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _restore_params(rebuilt, checkpoints: Path):
    ckpt = Checkpoints(checkpoints)
    try:
        restored = ckpt.restore_best(rebuilt.state_template)
    finally:
        ckpt.close()
    if restored is None:
        raise load.RobustnessError(f"no checkpoint under {checkpoints / 'best'}")
    return restored[0]["params"], restored[0]["model_state"]


class NotReproduced(Exception):
    """The ideal re-evaluation missed the trained run's logged test AUROC by more than
    REPRODUCE_TOL: its data, code or checkpoint changed since training, so its noise curve would
    not describe the run it names."""

    def __init__(self, run_id: str, split: str, logged: float, reevaluated: float):
        self.run_id, self.logged, self.reevaluated = run_id, logged, reevaluated
        super().__init__(
            f"run {run_id}: the ideal re-evaluation gives {split} AUROC {reevaluated:.6f}, the "
            f"run logged {logged:.6f} (|diff| {abs(reevaluated - logged):.2g} > tolerance "
            f"{REPRODUCE_TOL:g}): its data, code or checkpoint changed since training; its "
            "robustness run is FAILED and left out of the summary and the report"
        )

    def metrics(self, split: str) -> dict[str, float]:
        """Both numbers, logged on the FAILED child run."""
        return {
            f"reproduce/logged_{split}_auroc_macro": self.logged,
            f"reproduce/reevaluated_{split}_auroc_macro": self.reevaluated,
        }


def _check_reproduced(run, head, ideal: pd.DataFrame, split: str) -> str | NotReproduced:
    """ "true" when the ideal point reproduces the run's logged macro AUROC, "n/a" when there is
    nothing to compare with, else the NotReproduced to fail the child run with.

    Only an ideal-trained run was evaluated ideally by its own run; a run trained under noise or
    shots logged its noisy evaluation, which level 0 does not repeat.
    """
    logged = run.metrics.get(f"{split}/auroc_macro")
    if head.sim.stochastic or ideal.empty or logged is None:
        return "n/a"
    reevaluated = float(ideal["auroc"].iloc[0])
    if abs(reevaluated - float(logged)) > REPRODUCE_TOL:
        return NotReproduced(run.run_id, split, float(logged), reevaluated)
    return "true"


def _macro(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["label"] == MACRO]


def evaluate_run(args, uri: str, run: load.TrainedRun, grid_bar, levels, shots) -> pd.DataFrame:
    """Re-evaluate one trained run and log its child run; returns its grid table."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.reuse:
            same = {
                "channel": args.channel,
                "levels": ",".join(f"{lv:g}" for lv in levels),
                "shots": ",".join(shots_name(s) for s in shots),
                "trajectories": args.trajectories or run.params.get("head.trajectories", 64),
                "method": args.method or run.params.get("head.method", "auto"),
                "split": args.split,
            }
            found = load.finished_child_table(uri, run, same, tmp / "reuse")
            if found is not None:
                grid_bar.update(len(levels) * len(shots))
                log.info("run %s: reusing its robustness run (--reuse)", run.run_id)
                return pd.read_csv(found, dtype={"shots": str})
        config, checkpoints = load.fetch_run_files(uri, run, tmp / "download")
        rebuilt = rebuild_for_evaluation(config, cache_dir=args.cache_dir)
        params, model_state = _restore_params(rebuilt, checkpoints)
        head = rebuilt.classifier.head
        params_logged = {
            "channel": args.channel,
            "levels": ",".join(f"{lv:g}" for lv in levels),
            "shots": ",".join(shots_name(s) for s in shots),
            "trajectories": args.trajectories or head.sim.trajectories,
            "method": args.method or head.sim.method,
            "split": args.split,
            "eval_noise_seed": EVAL_NOISE_SEED,
            "source_run_id": run.run_id,
            "trained_noise": ",".join(f"{c}={v:g}" for c, v in head.sim.noise.items) or "none",
        }
        tags = {
            load.PARENT_TAG: run.run_id,
            load.SOURCE_TAG: run.run_id,
            load.ROBUSTNESS_TAG: "run",
            "source_run_name": run.run_name,
            "seed": run.tags.get("seed", ""),
            "task": run.tags.get("task", run.experiment),
            "ansatz": run.tags.get("ansatz", ""),
            "channel": args.channel,
            "git_commit": git_commit(project_root()),
        }
        child = load.start_run(
            uri, run.experiment_id, f"robustness-{run.run_name}", tags, params_logged
        )
        try:
            result = evaluate_grid(
                rebuilt,
                params,
                args.channel,
                levels,
                shots,
                trajectories=args.trajectories,
                method=args.method,
                split=args.split,
                progress=not args.no_progress,
                bar=grid_bar,
                model_state=model_state,
            )
            table = result.table.assign(run_id=run.run_id, seed=run.seed)
            ideal = table[(table["level"] == 0) & (table["shots"] == EXACT)]
            ideal = ideal[ideal["label"] == MACRO]
            reproduced = _check_reproduced(run, head, ideal, args.split)
            csv = tmp / "robustness.csv"
            table.to_csv(csv, index=False)
            png = robustness_curve(
                summarize([table]).query("label == @MACRO"),
                f"{run.run_name}: {args.split} AUROC vs {args.channel} noise",
                tmp / "robustness.png",
            )
            if isinstance(reproduced, NotReproduced):
                load.end_run(
                    uri,
                    child,
                    reproduced.metrics(args.split),
                    [csv],
                    status="FAILED",
                    tags={load.REPRODUCED_TAG: "false", "failure": str(reproduced)},
                )
                raise reproduced
            load.end_run(
                uri, child, result.metrics(), [csv, png], tags={load.REPRODUCED_TAG: reproduced}
            )
        except NotReproduced:
            raise
        except BaseException:
            load.end_run(uri, child, {}, [], status="FAILED")
            raise
    log.info("run %s: logged robustness run %s", run.run_id, child)
    return table


def log_summary(args, uri: str, selection: load.Selection, tables, levels, shots) -> str:
    """Log the mean +- sd over the evaluated runs as the experiment's summary run; returns its id.

    Runs left out (no table: their ideal point did not reproduce) are named in `left_out`.
    """
    summary = summarize(tables)
    done = {str(t["run_id"].iloc[0]) for t in tables}
    runs = [r for r in selection.runs if r.run_id in done]
    left_out = [r.run_id for r in selection.runs if r.run_id not in done]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = tmp / "robustness_summary.csv"
        summary.to_csv(csv, index=False)
        per_run = tmp / "robustness_runs.csv"
        pd.concat(tables, ignore_index=True).to_csv(per_run, index=False)
        png = robustness_curve(
            summary[summary["label"] == MACRO],
            f"{selection.experiment}: {args.split} AUROC vs {args.channel} noise",
            tmp / "robustness.png",
        )
        metrics = {}
        for r in summary.itertuples(index=False):
            key = metric_key(
                r.channel, r.level, None if r.shots == EXACT else int(r.shots), args.split, r.label
            )
            metrics[f"{key}_mean"] = float(r.mean)
            if pd.notna(r.sd):
                metrics[f"{key}_sd"] = float(r.sd)
        run_id = load.start_run(
            uri,
            selection.runs[0].experiment_id,
            f"robustness-summary-{args.channel}",
            {
                load.ROBUSTNESS_TAG: "summary",
                "channel": args.channel,
                "source_runs": ",".join(r.run_id for r in runs),
                "seeds": ",".join(str(r.seed) for r in runs),
                "left_out": ",".join(left_out) or "none",
                "git_commit": git_commit(project_root()),
            },
            {
                "channel": args.channel,
                "levels": ",".join(f"{lv:g}" for lv in levels),
                "shots": ",".join(shots_name(s) for s in shots),
                "num_runs": len(runs),
                "split": args.split,
                "filter": args.filter or "none",
            },
        )
        load.end_run(uri, run_id, metrics, [csv, per_run, png])
    return run_id


def _format(summary: pd.DataFrame, shots) -> str:
    macro = summary[summary["label"] == MACRO]
    names = [shots_name(s) for s in shots]
    lines = ["level      " + "".join(f"{n:>18}" for n in names)]
    for level, rows in macro.groupby("level", sort=True):
        cells = []
        for n in names:
            r = rows[rows["shots"] == n]
            if r.empty:
                cells.append(f"{'-':>18}")
                continue
            mean, sd = float(r["mean"].iloc[0]), r["sd"].iloc[0]
            cells.append(f"{mean:>10.4f}" + (f" ± {sd:.4f}" if pd.notna(sd) else " " * 9))
        lines.append(f"{level:<11g}" + "".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: arguments without the program name; None reads sys.argv.

    Returns:
        The exit status: 0 on success; 1 when nothing could be re-evaluated or a run's ideal
        point did not reproduce its logged AUROC (the others are still evaluated and summarised).
    """
    args = parse_args(argv)
    # No force=True: a handler already on the root logger (pytest's caplog, an embedding app)
    # stays; qcxr's own INFO messages are shown either way.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("qcxr").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        levels, shots = parse_levels(args.levels), parse_shots(args.shots)
        if args.trajectories is not None and args.trajectories < 1:
            raise ValueError(f"--trajectories={args.trajectories} must be at least 1")
        uri = resolve_tracking_uri(args.tracking_uri)
        selection = load.select(uri, args.target, args.filter)
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 1
    skipped = sum(selection.skipped.values())
    log.info(
        "re-evaluating %d DQC run(s)%s over %d levels x %d shot counts",
        len(selection.runs),
        f" (skipped {skipped}: {selection.skipped})" if skipped else "",
        len(levels),
        len(shots),
    )
    tables, failed = [], []
    with tqdm(
        total=len(selection.runs) * len(levels) * len(shots),
        desc="robustness",
        disable=args.no_progress,
    ) as bar:
        for run in selection.runs:
            try:
                tables.append(evaluate_run(args, uri, run, bar, levels, shots))
            except NotReproduced as err:
                log.error("%s", err)
                failed.append(err)
            except ValueError as err:
                log.error("run %s: %s", run.run_id, err)
                return 1
    if failed:
        log.error(
            "%d of %d run(s) did not reproduce their logged %s AUROC and are left out: %s",
            len(failed),
            len(selection.runs),
            args.split,
            ", ".join(e.run_id for e in failed),
        )
    if not tables:
        return 1
    summary_id = None
    if selection.experiment is not None:
        summary_id = log_summary(args, uri, selection, tables, levels, shots)
    summary = summarize(tables)
    sys.stdout.write(
        f"{args.split} AUROC (macro) vs {args.channel} level x shots, mean ± sd over "
        f"{len(tables)} run(s):\n{_format(summary, shots)}\n"
        + (f"summary run {summary_id} in experiment {selection.experiment}\n" if summary_id else "")
        + (
            f"left out {len(failed)} run(s) whose ideal point did not reproduce the logged AUROC: "
            + ", ".join(
                f"{e.run_id} (logged {e.logged:.6f}, now {e.reevaluated:.6f})" for e in failed
            )
            + "\n"
            if failed
            else ""
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
