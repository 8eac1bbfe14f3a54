"""Summarise an Optuna study: best trial, importances, plots, files, and a summary run in MLflow.

The study was written by `hydra/sweeper: optuna_study` (src/hydra_plugins/qcxr_sweeper/), which
stores per trial: the sampled parameters, the study's fixed overrides as user attributes named by
their override keys, and `qcxr:output_dir` / `qcxr:mlflow_run_id`; and per study the user
attribute `optimized_metric`. MLflow is reached only through `qcxr.tracking` (writing) and
`qcxr.report.load` (reading), so this module never imports mlflow.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlunparse

import optuna
from optuna.trial import FrozenTrial, TrialState

from qcxr.report.load import find_repo_root

log = logging.getLogger(__name__)

SWEEPS_FOLDER = "sweeps"
STORAGE_ENV = "QCXR_STUDY_STORAGE"
ATTR_PREFIX = "qcxr:"  # the sweeper's own trial attributes (never an override key)
ATTR_RUN_ID = "qcxr:mlflow_run_id"
# Fixed overrides that select or tag the study itself: not part of the setting to retrain.
STUDY_KEYS = {"sweep", "study", "trial"}
SUMMARY_RUN_PREFIX = "study-summary/"


# ---- storage ------------------------------------------------------------------------------------
def default_storage(study_name: str, root: Path | None = None) -> str:
    """Where a study lives unless told otherwise: $QCXR_STUDY_STORAGE, else the repo's SQLite file.

    Args:
        study_name: the study (`hydra.sweeper.study_name`, the file name in sweeps/).
        root: the repository root; default: the nearest folder above the cwd with pyproject.toml.

    Returns:
        A storage URL, by default `sqlite:///<root>/sweeps/<study_name>.db` (what the sweeper uses).

    Raises:
        FileNotFoundError: neither the variable nor a repository root was found.
    """
    url = os.environ.get(STORAGE_ENV)
    if url:
        return url
    root = root or find_repo_root()
    if root is None:
        raise FileNotFoundError(
            "no pyproject.toml above the current folder, so the default "
            f"storage <repo>/sweeps/{study_name}.db is unknown; pass --storage"
        )
    return f"sqlite:///{(root / SWEEPS_FOLDER / f'{study_name}.db').resolve()}"


def _sqlite_file(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme != "sqlite" or not parsed.path:
        return None
    return Path(unquote(parsed.path))


def redact(url: str) -> str:
    """A storage URL without its password (safe to log as a tag)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return urlunparse(parsed._replace(netloc=netloc))


def load_study(study_name: str, storage: str) -> optuna.Study:
    """Load an existing study (never creates one).

    Raises:
        FileNotFoundError: a SQLite storage file that does not exist.
        KeyError: the storage has no such study (the message lists those it has).
    """
    db = _sqlite_file(storage)
    if db is not None and not db.is_file():
        raise FileNotFoundError(
            f"no study storage at {db}: run the study first "
            f"(python train.py -m sweep={study_name}) or pass --storage"
        )
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise KeyError(f"no study {study_name!r} in {redact(storage)}; it holds {names}") from None


# ---- the summary --------------------------------------------------------------------------------
@dataclass
class StudySummary:
    """What `summarize` computes; written as summary.json and logged to MLflow.

    Attributes:
        study: the study's name.
        direction: "maximize" or "minimize".
        optimized_metric: the objective's metric key (as the sweeper recorded it), or None.
        num_trials: trials per state, e.g. {"COMPLETE": 14, "FAIL": 2}.
        best_value: the best objective, None when no trial completed.
        best_trial: the best trial's number (= the MLflow tag `trial`).
        best_params: its sampled parameters.
        best_overrides: the overrides that retrain it (fixed ones included).
        best_run_id: its MLflow run id, when the sweeper recorded it.
        importances: parameter -> importance (Optuna's default evaluator), or None.
        importances_note: why importances are missing, if they are.
        trial_median_s: median duration of finished trials in seconds.
        trials_per_busy_hour: finished trials per hour of time in which at least one trial ran
            (idle gaps between invocations excluded; parallel workers count once).
    """

    study: str
    direction: str
    optimized_metric: str | None
    num_trials: dict[str, int]
    best_value: float | None = None
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_overrides: list[str] = field(default_factory=list)
    best_run_id: str | None = None
    importances: dict[str, float] | None = None
    importances_note: str | None = None
    trial_median_s: float | None = None
    trials_per_busy_hour: float | None = None


def _override_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def best_overrides(
    study: optuna.Study | None = None, trial: FrozenTrial | None = None
) -> list[str]:
    """The Hydra overrides that reproduce the best trial (or `trial`) without the study.

    Args:
        study: the study (its best trial is used) when `trial` is None.
        trial: a finished trial.

    Returns:
        `key=value` strings: the study's fixed overrides (e.g. `head=dqc`, data sizes) followed
        by the sampled parameters; the study's own keys (sweep, study, trial) are left out.
    """
    if trial is None:
        trial = study.best_trial
    fixed = [
        f"{k}={_override_value(v)}"
        for k, v in trial.user_attrs.items()
        if not k.startswith(ATTR_PREFIX)
        and k.lstrip("+~") not in STUDY_KEYS
        and not k.startswith("hydra.")
    ]
    return fixed + [f"{k}={_override_value(v)}" for k, v in trial.params.items()]


def _busy_hours(trials: list[FrozenTrial]) -> float:
    spans = sorted(
        (t.datetime_start, t.datetime_complete)
        for t in trials
        if t.datetime_start is not None and t.datetime_complete is not None
    )
    busy, current_start, current_end = 0.0, None, None
    for start, end in spans:
        if current_end is None or start > current_end:
            if current_end is not None:
                busy += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        busy += (current_end - current_start).total_seconds()
    return busy / 3600


def summarize(study: optuna.Study) -> StudySummary:
    """Best trial, importances and throughput of a (single-objective) study."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    summary = StudySummary(
        study=study.study_name,
        direction=study.direction.name.lower(),
        optimized_metric=study.user_attrs.get("optimized_metric"),
        num_trials=counts,
    )
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    durations = sorted(t.duration.total_seconds() for t in finished if t.duration is not None)
    if durations:
        summary.trial_median_s = durations[len(durations) // 2]
        hours = _busy_hours(finished)
        summary.trials_per_busy_hour = len(finished) / hours if hours > 0 else None
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        summary.importances_note = "no completed trial"
        return summary
    best = study.best_trial
    summary.best_value = float(best.value)
    summary.best_trial = best.number
    summary.best_params = dict(best.params)
    summary.best_overrides = best_overrides(trial=best)
    summary.best_run_id = best.user_attrs.get(ATTR_RUN_ID)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
        summary.importances = {k: float(v) for k, v in importances.items()}
        if not summary.importances:
            summary.importances_note = "no parameter varied across the completed trials"
    except (RuntimeError, ValueError) as err:
        summary.importances_note = f"not computed: {err}"
    return summary


# ---- files --------------------------------------------------------------------------------------
def _save_plot(make, path: Path, size: tuple[float, float] | None = None) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)  # categorical axes

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
            axes = make()
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            if size is not None:
                figure.set_size_inches(*size)
            figure.savefig(path, dpi=120, bbox_inches="tight")
        return None
    except (RuntimeError, ValueError, ZeroDivisionError, IndexError) as err:
        return f"{path.name}: not drawn ({err})"
    finally:
        plt.close("all")


def write_summary(study: optuna.Study, summary: StudySummary, out_dir: Path) -> list[Path]:
    """Write summary.json, summary.md, trials.csv and the plots (PNG) into `out_dir`.

    Returns:
        The files written.
    """
    from optuna.visualization import matplotlib as vis

    out_dir.mkdir(parents=True, exist_ok=True)
    target = summary.optimized_metric or "objective"
    notes: list[str] = []
    completed = summary.num_trials.get("COMPLETE", 0)
    plots = {
        "optimization_history.png": lambda: vis.plot_optimization_history(
            study, target_name=target
        ),
        "timeline.png": lambda: vis.plot_timeline(study),
    }
    if completed >= 1:
        plots["parallel_coordinate.png"] = lambda: vis.plot_parallel_coordinate(
            study, target_name=target
        )
        plots["slice.png"] = lambda: vis.plot_slice(study, target_name=target)
    if summary.importances:
        plots["param_importances.png"] = lambda: vis.plot_param_importances(
            study, target_name=target
        )
    # one column per parameter: widen the multi-parameter plots so their labels do not overlap
    wide = (max(8.0, 2.2 * (len(summary.best_params) + 1)), 6.0)
    sizes = {"parallel_coordinate.png": wide, "slice.png": (wide[0], 4.0)}
    files = []
    for name, make in plots.items():
        note = _save_plot(make, out_dir / name, sizes.get(name))
        if note is None:
            files.append(out_dir / name)
        else:
            notes.append(note)
            log.warning(note)

    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    frame = study.trials_dataframe(
        attrs=(
            "number",
            "state",
            "value",
            "datetime_start",
            "datetime_complete",
            "duration",
            "params",
            "user_attrs",
        )
    )
    frame.to_csv(out_dir / "trials.csv", index=False)
    (out_dir / "summary.md").write_text(_markdown(summary, notes))
    return [out_dir / "summary.json", out_dir / "summary.md", out_dir / "trials.csv", *files]


def _markdown(s: StudySummary, notes: list[str]) -> str:
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(s.num_trials.items()))
    lines = [
        f"# Study {s.study}",
        "",
        f"- objective: {s.optimized_metric or 'objective'} ({s.direction})",
        f"- trials: {counts or 'none'}",
    ]
    if s.trial_median_s is not None:
        rate = (
            f", {s.trials_per_busy_hour:.0f} trials per busy hour" if s.trials_per_busy_hour else ""
        )
        lines.append(f"- median trial {s.trial_median_s:.1f} s{rate}")
    if s.best_value is None:
        lines += ["", "No trial completed."]
    else:
        lines += [
            f"- best value {s.best_value:.4f} (trial {s.best_trial}"
            + (f", MLflow run {s.best_run_id})" if s.best_run_id else ")"),
            "",
            "| parameter | best | importance |",
            "|---|---|---|",
        ]
        for key, value in s.best_params.items():
            imp = (s.importances or {}).get(key)
            lines.append(
                f"| {key} | {_override_value(value)} | {'' if imp is None else f'{imp:.3f}'} |"
            )
        lines += [
            "",
            "Retrain the best setting over seeds:",
            "",
            f"    python train.py -m {' '.join(shlex.quote(o) for o in s.best_overrides)} seed=0-4",
        ]
    if s.importances_note:
        lines += ["", f"Importances: {s.importances_note}."]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ---- MLflow -------------------------------------------------------------------------------------
def _trial_runs(study_name: str, tracking_uri: str):
    from qcxr.report.load import load_runs

    return load_runs(tracking_uri, filter_string=f"tags.study = '{study_name}'").runs


def log_summary(
    study: optuna.Study,
    summary: StudySummary,
    files: list[Path],
    tracking_uri: str,
    storage: str,
    experiment: str | None = None,
) -> str:
    """Log the summary as an MLflow run `study-summary/<study>` beside the study's trial runs.

    The run is tagged `study=<name>`, `summary=true` and has no `head` tag, so the report
    (qcxr.report) does not take it for a training run. Trial runs left RUNNING by a worker that
    died while Optuna recorded the trial as FAIL are marked FAILED.

    Args:
        study: the study.
        summary: its summary.
        files: files to log as artifacts.
        tracking_uri: the MLflow store.
        storage: the study's storage URL (logged as a tag, password removed).
        experiment: the experiment for the summary run; default that of the trial runs.

    Returns:
        The summary run's id.
    """
    from qcxr.tracking import mlflow_tracker

    runs = _trial_runs(study.study_name, tracking_uri)
    if experiment is None:
        if runs.empty:
            raise ValueError(
                f"no MLflow run is tagged study={study.study_name} in {tracking_uri}"
                "; pass --experiment (or --tracking-uri of the store the trials used)"
            )
        experiment = str(runs["experiment"].mode().iloc[0])
    failed = {
        t.user_attrs.get(ATTR_RUN_ID)
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.FAIL
    } - {None}
    for run_id in runs.loc[runs["status"] == "RUNNING", "run_id"]:
        if run_id in failed:
            stale = mlflow_tracker(tracking_uri, experiment)
            stale.start("", {}, run_id=run_id)
            stale.end("FAILED")
            log.warning("run %s was left RUNNING by a dead worker; marked FAILED", run_id)

    tracker = mlflow_tracker(tracking_uri, experiment)
    tags = {
        "study": study.study_name,
        "summary": "true",
        "storage": redact(storage),
        "direction": summary.direction,
    }
    run_id = tracker.start(f"{SUMMARY_RUN_PREFIX}{study.study_name}", tags)
    try:
        tracker.log_params(
            {f"best.{k}": v for k, v in summary.best_params.items()}
            | {
                "best.trial": summary.best_trial,
                "best.run_id": summary.best_run_id,
                "optimized_metric": summary.optimized_metric,
            }
        )
        metrics = {f"study/num_{k.lower()}": float(v) for k, v in summary.num_trials.items()}
        if summary.best_value is not None:
            metrics["study/best_value"] = summary.best_value
        if summary.trials_per_busy_hour is not None:
            metrics["study/trials_per_busy_hour"] = summary.trials_per_busy_hour
        if summary.trial_median_s is not None:
            metrics["study/trial_median_s"] = summary.trial_median_s
        for key, value in (summary.importances or {}).items():
            metrics[f"importance/{key}"] = value
        tracker.log_metrics(
            {k: v for k, v in metrics.items() if math.isfinite(v)},
            step=sum(summary.num_trials.values()),
        )
        for path in files:
            tracker.log_artifact(path)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return run_id
