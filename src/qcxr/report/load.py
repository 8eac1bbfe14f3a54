"""Read training runs back from MLflow into tidy pandas frames.

The conventions read here are the trainer's: one experiment per task, run tags `head`, `task`,
`seed` (an int as a string), `ansatz`, `backbone`, `git_commit`; metric keys split/name[/label]
(`test/auroc/<Label>`, `val/loss`, `time/epoch_s`, ...). Runs tagged `report=true` (earlier
reports) and runs without a `head` tag are not training runs and are ignored; every other run the
search returns either takes part or is listed with the reason it was excluded.

This is the report's only module that imports mlflow (lazily: mlflow takes seconds to import).
A failed search (a bad filter, an unreachable store) leaves `load_runs` as a ValueError, so
callers need not import mlflow to handle it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

log = logging.getLogger(__name__)

FINISHED = "FINISHED"
RUN_TAGS = ("head", "seed", "ansatz", "backbone", "git_commit", "study", "trial")
HISTORY_KEYS = ("train/epoch_loss", "val/loss", "time/step_s", "time/epoch_s")
POSITIVES_PARAM_PREFIX = "data/train_positives/"  # params read as values (report label order)
DEFAULT_DB = Path("mlruns") / "mlflow.db"
_PAGE = 1000


def find_repo_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above `start` that holds a `pyproject.toml`.

    Args:
        start: where to begin; the current working directory when None.

    Returns:
        That folder, or None when no parent has one.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def resolve_tracking_uri(explicit: str | None = None, start: Path | None = None) -> str:
    """The tracking URI to read: the argument, else $MLFLOW_TRACKING_URI, else the repo's store.

    Args:
        explicit: a URI given on the command line, or None.
        start: folder to search upward from for the repository root (default: cwd).

    Returns:
        A tracking URI; the default is `sqlite:///<repo root>/mlruns/mlflow.db`.

    Raises:
        FileNotFoundError: no URI was given and no repository root or default store was found.
    """
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = find_repo_root(start)
    if root is None:
        raise FileNotFoundError(
            "no pyproject.toml above the current folder, so the default store "
            "<repo root>/mlruns/mlflow.db is unknown; pass --tracking-uri"
        )
    db = root / DEFAULT_DB
    if not db.is_file():
        raise FileNotFoundError(
            f"no MLflow store at {db}; train first (python train.py) or pass --tracking-uri"
        )
    return f"sqlite:///{db}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for any other URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    return Path(unquote(parsed.path)) if parsed.path else None


@dataclass
class RunData:
    """What the report reads from MLflow.

    Attributes:
        runs: one row per training run that passed the filters, FINISHED or not. Columns:
            run_id, run_name, experiment, task, head, seed (Int64, NA when not an int), status,
            start_time (ms), end_time (ms) and the optional tags of RUN_TAGS.
        metrics: tidy latest metric values, one row per run × metric: run_id, key, value.
        ignored: count of runs skipped as non-training runs (tag report=true or no head tag).
        tracking_uri: the store that was read.
        experiments: names of the experiments that were searched.
    """

    runs: pd.DataFrame
    metrics: pd.DataFrame
    ignored: int
    tracking_uri: str
    experiments: list[str]


@functools.cache
def mlflow_client(tracking_uri: str):
    """One MlflowClient per tracking URI, shared by the loader and the report logger."""
    # Imported here: mlflow takes seconds to import and `qcxr.report.stats` must not pay for it.
    # Cached: opening a sqlite store checks its schema, which costs seconds per client.
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _select_experiments(client, names: Sequence[str] | None) -> dict[str, str]:
    from mlflow.entities import ViewType

    available = {e.name: e.experiment_id for e in client.search_experiments(ViewType.ACTIVE_ONLY)}
    if not names:
        return available
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(
            f"experiment(s) {missing} not found in the store; available: {sorted(available)}"
        )
    return {n: available[n] for n in names}


def _search_all(client, experiment_ids: list[str], filter_string: str) -> Iterable:
    from mlflow.entities import ViewType

    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=_PAGE,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def load_runs(
    tracking_uri: str,
    experiments: Sequence[str] | None = None,
    filter_string: str = "",
    tasks: Sequence[str] | None = None,
) -> RunData:
    """Read training runs and their latest metric values.

    Args:
        tracking_uri: the MLflow store.
        experiments: experiment names to read; None reads every active experiment (those
            without runs tagged `head` contribute nothing).
        filter_string: an MLflow search filter, e.g. "tags.study = 'lr'"; "" for none.
        tasks: keep only runs whose task (tag `task`, else the experiment name) is listed.

    Returns:
        The RunData; frames are empty (with their columns) when nothing matched.
    """
    from mlflow.exceptions import MlflowException

    try:
        return _load_runs(tracking_uri, experiments, filter_string, tasks)
    except MlflowException as err:
        raise ValueError(f"reading runs from {tracking_uri} failed: {err.message}") from err


def _load_runs(tracking_uri, experiments, filter_string, tasks) -> RunData:
    client = mlflow_client(tracking_uri)
    selected = _select_experiments(client, experiments)
    id_to_name = {v: k for k, v in selected.items()}
    rows, metric_rows, ignored = [], [], 0
    if selected:
        for run in _search_all(client, list(selected.values()), filter_string or ""):
            tags = run.data.tags
            if tags.get("report", "").lower() == "true" or not tags.get("head"):
                ignored += 1
                continue
            experiment = id_to_name.get(run.info.experiment_id, run.info.experiment_id)
            task = tags.get("task") or experiment
            if tasks and task not in tasks:
                continue
            row = {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "experiment": experiment,
                "task": task,
                "status": run.info.status,
                "start_time": run.info.start_time,
                "end_time": run.info.end_time,
            }
            row.update({t: tags.get(t) for t in RUN_TAGS})
            row["seed_tag"] = tags.get("seed")
            row["seed"] = _as_int(tags.get("seed"))
            rows.append(row)
            metric_rows.extend(
                (run.info.run_id, key, float(value)) for key, value in run.data.metrics.items()
            )
            # Training-set label counts are params since issue 11 (metrics before it).
            metric_rows.extend(
                (run.info.run_id, key, float(value))
                for key, value in run.data.params.items()
                if key.startswith(POSITIVES_PARAM_PREFIX) and key not in run.data.metrics
            )
    columns = ["run_id", "run_name", "experiment", "task", "status", "start_time", "end_time"]
    runs = pd.DataFrame(rows, columns=[*columns, *RUN_TAGS, "seed_tag"])
    runs["seed"] = runs["seed"].astype("Int64")
    metrics = pd.DataFrame(metric_rows, columns=["run_id", "key", "value"])
    # With no names given, list only the experiments that hold training runs.
    names = sorted(selected) if experiments else sorted(set(runs["experiment"]))
    log.info(
        "read %d training runs (%d metric values) from experiment(s) %s; ignored %d runs that "
        "are not training runs",
        len(runs),
        len(metrics),
        ", ".join(names) or "none",
        ignored,
    )
    return RunData(
        runs=runs, metrics=metrics, ignored=ignored, tracking_uri=tracking_uri, experiments=names
    )


def load_histories(
    tracking_uri: str,
    run_ids: Sequence[str],
    metrics: pd.DataFrame,
    keys: Sequence[str] = HISTORY_KEYS,
) -> pd.DataFrame:
    """Full histories of a few per-epoch metrics.

    Only (run, key) pairs whose latest value exists in `metrics` are requested, so absent
    metrics cost no round trip.

    Args:
        tracking_uri: the MLflow store.
        run_ids: runs to read.
        metrics: the tidy latest-value frame of `load_runs` (run_id, key, value).
        keys: metric keys whose histories are wanted.

    Returns:
        Tidy frame: run_id, key, step, value, timestamp (ms), sorted by run, key and step.
    """
    client = mlflow_client(tracking_uri)
    wanted = metrics[metrics["run_id"].isin(run_ids) & metrics["key"].isin(keys)]
    rows = []
    for run_id, key in wanted[["run_id", "key"]].itertuples(index=False):
        for m in client.get_metric_history(run_id, key):
            rows.append((run_id, key, int(m.step), float(m.value), int(m.timestamp)))
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    return frame.sort_values(["run_id", "key", "step", "timestamp"], ignore_index=True)


def log_report_run(
    tracking_uri: str, out_dir: Path, experiment: str, run_name: str, tags: dict[str, str]
) -> str:
    """Log a folder as the artifacts of a new FINISHED run.

    For a `sqlite:///` store, a newly created experiment keeps its artifacts beside the
    database file (`<db folder>/<experiment>`), not in the current working directory.

    Args:
        tracking_uri: the MLflow store.
        out_dir: the folder to log; its tree is kept under the run's artifact root.
        experiment: experiment name, created when missing.
        run_name: the run's name.
        tags: run tags.

    Returns:
        The run id.
    """
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        db = sqlite_path(tracking_uri)
        location = (db.parent / experiment).resolve().as_uri() if db else None
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    try:
        client.log_artifacts(run.info.run_id, str(out_dir))
    except Exception:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id)
    return run.info.run_id


# `python -m qcxr.robustness` logs one child run per re-evaluated training run (tag
# robustness=run, robustness_of=<training run id>) with metrics named by
# qcxr.robustness.evaluate.metric_key.
ROBUSTNESS_KEY = re.compile(
    r"^robust/(?P<channel>\w+)/(?P<level>[^/]+)/shots_(?P<shots>\w+)/(?P<split>\w+)/auroc_macro$"
)


def _latest_robustness_runs(client, experiments: Sequence[str]) -> dict[tuple[str, str], tuple]:
    """The latest robustness run per (training run, channel): FINISHED ones and those FAILED
    because their ideal point did not reproduce (tag reproduced=false), so a newer failed check
    is never hidden behind an older finished curve. Values are (experiment name, run)."""
    selected = _select_experiments(client, list(experiments)) if experiments else {}
    latest: dict[tuple[str, str], tuple] = {}
    for name, experiment_id in selected.items():
        for run in _search_all(client, [experiment_id], "tags.robustness = 'run'"):
            unreproduced = run.data.tags.get("reproduced") == "false"
            if run.info.status != FINISHED and not unreproduced:
                continue
            source = run.data.tags.get("robustness_of", "")
            key = (source, run.data.tags.get("channel", ""))
            if key not in latest or run.info.start_time > latest[key][1].info.start_time:
                latest[key] = (name, run)
    return latest


def load_unreproduced(tracking_uri: str, experiments: Sequence[str]) -> pd.DataFrame:
    """Training runs whose latest robustness run failed the reproduction check (its ideal point
    missed the run's logged test AUROC), which `load_robustness` leaves out.

    Returns:
        Frame: experiment, source_run_id, channel, robustness_run_id, logged, reevaluated.
    """
    rows = []
    for (source, channel), (name, run) in _latest_robustness_runs(
        mlflow_client(tracking_uri), experiments
    ).items():
        if run.data.tags.get("reproduced") != "false":
            continue
        m = run.data.metrics
        logged = next((v for k, v in m.items() if k.startswith("reproduce/logged_")), None)
        now = next((v for k, v in m.items() if k.startswith("reproduce/reevaluated_")), None)
        rows.append((name, source, channel, run.info.run_id, logged, now))
    columns = [
        "experiment",
        "source_run_id",
        "channel",
        "robustness_run_id",
        "logged",
        "reevaluated",
    ]
    return pd.DataFrame(rows, columns=columns)


def load_robustness(tracking_uri: str, experiments: Sequence[str]) -> pd.DataFrame:
    """Macro AUROC of the robustness runs (`python -m qcxr.robustness`) in some experiments.

    Only the latest robustness run per (training run, channel) counts, so re-running the CLI
    replaces rather than duplicates a run's curve; when that latest run failed the reproduction
    check, the training run has no rows here (`load_unreproduced` lists it).

    Args:
        tracking_uri: the MLflow store.
        experiments: experiment names to search.

    Returns:
        Tidy frame: experiment, source_run_id, seed (Int64), channel, level (float), shots
        ("exact" or a count as a string), split, auroc; empty (with these columns) when there
        are no robustness runs.
    """
    columns = [
        "experiment",
        "source_run_id",
        "seed",
        "channel",
        "level",
        "shots",
        "split",
        "auroc",
    ]
    latest = _latest_robustness_runs(mlflow_client(tracking_uri), experiments)
    rows = []
    for (source, _), (name, run) in latest.items():
        if run.info.status != FINISHED:
            continue
        for key, value in run.data.metrics.items():
            match = ROBUSTNESS_KEY.match(key)
            if match is None:
                continue
            rows.append(
                (
                    name,
                    source,
                    _as_int(run.data.tags.get("seed")),
                    match["channel"],
                    float(match["level"]),
                    match["shots"],
                    match["split"],
                    float(value),
                )
            )
    frame = pd.DataFrame(rows, columns=columns)
    frame["seed"] = frame["seed"].astype("Int64")
    return frame
