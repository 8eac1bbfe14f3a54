"""MLflow side of `python -m qcxr.robustness`: find the trained runs, fetch their config and best
checkpoint, and log the re-evaluation as a child run of each trained run.

Where the numbers go (a decision, documented in docs/robustness.md): every re-evaluated run gets
one new MLflow run in the same experiment, tagged `mlflow.parentRunId=<trained run id>`, so the
MLflow UI nests it under the trained run, and `robustness_of=<trained run id>`; given an
experiment, one more run `robustness-summary` (tag `robustness=summary`) holds the mean +- sd over
the re-evaluated runs. Robustness runs carry no `head` tag, so the report's loader and this one
never take them for training runs.

The only module of `qcxr.robustness` that imports mlflow (lazily: it takes seconds to import).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

ROBUSTNESS_TAG = "robustness"  # "run" on a child run, "summary" on an experiment's summary run
SOURCE_TAG = "robustness_of"  # the trained run's id (child runs)
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests the child under its parent
# On a child run: "true" when its ideal point reproduced the trained run's logged test AUROC,
# "false" when it did not (the child is then FAILED and reports exclude it), "n/a" for a run
# trained under noise or shots (its logged metric came from a noisy evaluation).
REPRODUCED_TAG = "reproduced"
CONFIG_ARTIFACT = "config.yaml"
CHECKPOINT_ARTIFACT = "checkpoint_best"
QUANTUM_HEADS = ("dqc",)  # heads whose circuit can be re-evaluated under noise


class RobustnessError(ValueError):
    """A run or experiment that cannot be re-evaluated; the message names it and the fix."""


@dataclass
class TrainedRun:
    """A finished training run to re-evaluate.

    Attributes:
        run_id: its MLflow run id.
        run_name: its name.
        experiment: its experiment's name.
        experiment_id: its experiment's id.
        tags: its tags (head, seed, task, ...).
        metrics: its latest metric values (test/auroc_macro, train/best_epoch, ...).
        params: its params (the flattened config: head.method, head.trajectories, ...).
    """

    run_id: str
    run_name: str
    experiment: str
    experiment_id: str
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        """The run's seed tag as an int, or None."""
        try:
            return int(self.tags.get("seed", ""))
        except ValueError:
            return None


@dataclass
class Selection:
    """The runs a target names.

    Attributes:
        runs: DQC training runs to re-evaluate, ordered by seed.
        experiment: the experiment name when the target was one, else None (a single run).
        skipped: reason -> count of runs left out (not DQC, not FINISHED, no checkpoint).
    """

    runs: list[TrainedRun]
    experiment: str | None
    skipped: dict[str, int]


def client_for(tracking_uri: str):
    """An MlflowClient on the store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _trained(client, run, experiment_name: str) -> TrainedRun:
    return TrainedRun(
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id,
        experiment=experiment_name,
        experiment_id=run.info.experiment_id,
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
    )


def _has_artifact(client, run_id: str, path: str) -> bool:
    return any(a.path == path for a in client.list_artifacts(run_id))


def _why_not(client, run) -> str | None:
    """Why a run cannot be re-evaluated, or None when it can."""
    tags = run.data.tags
    if tags.get(ROBUSTNESS_TAG) or tags.get("report", "").lower() == "true":
        return "not a training run"
    if not tags.get("head"):
        return "not a training run"
    if tags["head"] not in QUANTUM_HEADS:
        return f"head {tags['head']} is not a DQC"
    if run.info.status != "FINISHED":
        return f"status {run.info.status}"
    if not _has_artifact(client, run.info.run_id, CHECKPOINT_ARTIFACT):
        return "no checkpoint_best artifact"
    if not _has_artifact(client, run.info.run_id, CONFIG_ARTIFACT):
        return "no config.yaml artifact"
    return None


def select(tracking_uri: str, target: str, filter_string: str = "") -> Selection:
    """The DQC runs that `target` names: an experiment (every finished DQC run in it) or a run id.

    Args:
        tracking_uri: the MLflow store.
        target: an experiment name (tried first) or a run id.
        filter_string: an MLflow search filter applied within an experiment, e.g.
            "params.`head.noise.depolarizing` = '0.0'".

    Returns:
        The Selection.

    Raises:
        RobustnessError: no experiment or run of that name or id; a run that is not a finished
            DQC run with a best checkpoint; an experiment without any such run.
    """
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(target)
    if experiment is not None:
        skipped: dict[str, int] = {}
        runs = []
        token = None
        while True:
            page = client.search_runs(
                [experiment.experiment_id],
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                page_token=token,
            )
            for run in page:
                reason = _why_not(client, run)
                if reason is None:
                    runs.append(_trained(client, run, experiment.name))
                elif reason != "not a training run":
                    skipped[reason] = skipped.get(reason, 0) + 1
            token = page.token
            if not token:
                break
        for reason, count in sorted(skipped.items()):
            log.info("skipped %d run(s) of experiment %s: %s", count, target, reason)
        if not runs:
            raise RobustnessError(
                f"experiment {target!r} in {tracking_uri} holds no finished DQC run with a best "
                f"checkpoint (skipped: {skipped or 'none'}); train one first, e.g. "
                "`python train.py -m head=dqc seed=0-4`"
            )
        runs.sort(key=lambda r: (r.seed is None, r.seed, r.run_id))
        return Selection(runs, experiment.name, skipped)
    try:
        run = client.get_run(target)
    except MlflowException as err:
        names = sorted(e.name for e in client.search_experiments())
        raise RobustnessError(
            f"{target!r} is neither an experiment nor a run id in {tracking_uri} "
            f"(experiments: {names}); pass a run id from the MLflow UI or an experiment name"
        ) from err
    reason = _why_not(client, run)
    if reason is not None:
        raise RobustnessError(
            f"run {target} cannot be re-evaluated under noise: {reason}. Only finished DQC "
            "training runs (tag head=dqc) with a logged checkpoint_best can"
        )
    name = client.get_experiment(run.info.experiment_id).name
    return Selection([_trained(client, run, name)], None, {})


def trained_run(tracking_uri: str, run_id: str) -> TrainedRun:
    """One run of the store by id, whatever its head (backbone.init_from reads its checkpoint).

    Args:
        tracking_uri: the MLflow store.
        run_id: the run's id.

    Returns:
        The TrainedRun.

    Raises:
        RobustnessError: the store has no run of that id.
    """
    from mlflow.exceptions import MlflowException

    client = client_for(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise RobustnessError(f"{run_id!r} is not a run id in {tracking_uri}") from err
    return _trained(client, run, client.get_experiment(run.info.experiment_id).name)


def has_artifact(tracking_uri: str, run_id: str, path: str) -> bool:
    """Whether a run logged an artifact at `path` (e.g. checkpoint_best)."""
    return _has_artifact(client_for(tracking_uri), run_id, path)


def fetch_run_files(tracking_uri: str, run: TrainedRun, dest: Path) -> tuple[dict[str, Any], Path]:
    """Download a run's config and best checkpoint.

    The checkpoint lands in `dest/checkpoints/best/<best epoch>/`, the layout
    `qcxr.train.checkpoint.Checkpoints(dest / "checkpoints")` restores from.

    Args:
        tracking_uri: the MLflow store.
        run: the trained run.
        dest: an empty folder.

    Returns:
        (the run's resolved config as a nested dict, the checkpoints folder).
    """
    client = client_for(tracking_uri)
    config_path = client.download_artifacts(run.run_id, CONFIG_ARTIFACT, str(dest))
    config = yaml.safe_load(Path(config_path).read_text())
    raw = Path(client.download_artifacts(run.run_id, CHECKPOINT_ARTIFACT, str(dest)))
    epoch = int(run.metrics.get("train/best_epoch", 1))
    folder = dest / "checkpoints" / "best" / str(epoch)
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(raw), str(folder))
    return config, dest / "checkpoints"


def start_run(
    tracking_uri: str,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, object],
) -> str:
    """Open a robustness run.

    Args:
        tracking_uri: the MLflow store.
        experiment_id: the trained runs' experiment.
        run_name: the new run's name.
        tags: its tags (PARENT_TAG nests it under a trained run).
        params: its params (channel, levels, shots, ...).

    Returns:
        The new run's id (status RUNNING until `end_run`).
    """
    from mlflow.entities import Param

    client = client_for(tracking_uri)
    run = client.create_run(
        experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()}
    )
    items = [Param(str(k), str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def end_run(
    tracking_uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    artifacts: list[Path],
    status: str = "FINISHED",
    tags: Mapping[str, str] | None = None,
) -> None:
    """Log metrics (step 0), tags and artifact files, then close the run with `status`."""
    import time

    from mlflow.entities import Metric

    client = client_for(tracking_uri)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=status)


def finished_child_table(
    tracking_uri: str, run: TrainedRun, params: Mapping[str, object], dest: Path
):
    """The grid table of an earlier FINISHED robustness run of `run` with the same settings.

    Args:
        tracking_uri: the MLflow store.
        run: the trained run.
        params: the settings that must match (the child run's params: channel, levels, shots,
            method, trajectories, split).
        dest: a folder to download the table to.

    Returns:
        The path of its robustness.csv, or None when no such run exists.
    """
    client = client_for(tracking_uri)
    found = client.search_runs(
        [run.experiment_id],
        filter_string=f"tags.{SOURCE_TAG} = '{run.run_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    for child in found:
        if all(child.data.params.get(k) == str(v) for k, v in params.items()):
            return Path(client.download_artifacts(child.info.run_id, "robustness.csv", str(dest)))
    return None
