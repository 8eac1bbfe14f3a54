"""Evaluate a trained run's model on another dataset (`python -m qcxr.evaluate`, issue 23 item 3).

The model is the run's (its model folder, `qcxr.predict.bundle`: the best checkpoint's variables);
only the data, and optionally the task, change: `evaluation_config` in qcxr.run composes the
overrides (`data=mimic_cxr_lt data.image_dir=...`) as on the training command line and puts them
into the run's config, and `rebuild_for_evaluation` builds that data with the run's backbone
preprocessing (and, for a frozen backbone, its feature cache). The evaluation is the one training
ran (`qcxr.train.loop.evaluate`), so evaluating a run on its own data reproduces its test metrics.

Where the numbers go: one MLflow run per evaluation, in the trained run's experiment, nested
under it (`mlflow.parentRunId`) and tagged `evaluation_of=<run id>` and `evaluation=<data>`; it
carries no `head` tag, so the report and `qcxr.robustness` never take it for a training run.
Metrics are the training run's keys for the split (`test/auroc_macro`, `test/auroc/<label>`,
`test/loss`; multiclass: accuracy, balanced accuracy, macro-F1), artifacts the predictions, the
per-label AUROC table, ROC curves (and a confusion matrix for multiclass tasks).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qcxr.predict.bundle import LoadedModel

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
SOURCE_TAG = "evaluation_of"  # the trained run's id
DATA_TAG = "evaluation"  # the evaluated data source's name


class EvaluationError(ValueError):
    """An evaluation that cannot run; the message names what does not fit and the fix."""


@dataclass
class Result:
    """One evaluation.

    Attributes:
        metrics: {split/name: value}, the training run's keys.
        child_run_id: the MLflow run it was logged to (None when not logged).
        data_name: the evaluated data source's name.
        split: the evaluated split.
    """

    metrics: dict[str, float]
    child_run_id: str | None
    data_name: str
    split: str


def check_labels(trained: Sequence[str], given: Sequence[str]) -> None:
    """The data's labels must be the run's, in the run's order.

    Raises:
        EvaluationError: naming the labels the data lacks and those the model does not predict.
    """
    trained, given = list(trained), list(given)
    if trained == given:
        return
    missing = [n for n in trained if n not in given]
    extra = [n for n in given if n not in trained]
    detail = (
        f"missing {missing}, not predicted by the model {extra}"
        if missing or extra
        else ("the same labels in another order")
    )
    raise EvaluationError(
        f"the run was trained on the labels {trained}; the data and task give {given} ({detail}). "
        "Fix: choose the run's task (task=... with the same label set) or data that has its labels"
    )


def evaluate_model(
    model: LoadedModel,
    overrides: Sequence[str],
    split: str = "test",
    cache_dir: str | None = None,
    progress: bool = False,
) -> tuple[Any, Any, list[str]]:
    """Evaluate a loaded run model on the data the overrides give.

    Args:
        model: the trained run's model (`qcxr.predict.load_bundle` or the pyfunc model's).
        overrides: data and task overrides (see `qcxr.run.evaluation_config`).
        split: the split of the new data to evaluate.
        cache_dir: image and feature cache root (default: the run's paths.cache_dir).
        progress: progress bars.

    Returns:
        (the Evaluation, the data module, the label names).

    Raises:
        EvaluationError: labels that do not match the run's, or a split the data lacks.
        qcxr.run.ConfigError: overrides of other groups, or that do not compose.
    """
    from qcxr.data.labels import resolve_labels
    from qcxr.run import evaluation_config, rebuild_for_evaluation
    from qcxr.train import loop, steps

    config = evaluation_config(model.config, overrides)
    check_labels(model.label_names, resolve_labels(config["task"]["labels"]))
    rebuilt = rebuild_for_evaluation(config, cache_dir=cache_dir)
    data = rebuilt.data
    if split not in data.splits:
        raise EvaluationError(
            f"the data {data.name} has the splits {list(data.splits)}, not {split!r}: "
            "pass --split with one of them"
        )
    check_labels(model.label_names, data.label_names)
    params = model.variables["params"]
    classifier, constants = rebuilt.classifier, model.constants
    source = rebuilt.batch_source(params, progress=progress)
    if rebuilt.use_features:

        def apply(params, batch):
            return classifier.head_logits(params, batch["features"])
    else:

        def apply(params, batch):
            return classifier.logits(params, constants, batch["image"])

    weights = (config.get("task") or {}).get("class_weights")
    eval_step = steps.make_eval_step(apply, model.kind, weights)
    ev = loop.evaluate(
        eval_step, params, source, split, model.label_names, progress=progress, kind=model.kind
    )
    return ev, data, list(model.label_names)


def write_artifacts(folder: Path, ev: Any, data: Any, split: str, labels: list[str], title: str):
    """The evaluation's artifact files: predictions, per-label AUROC, ROC curves, confusion.

    Returns:
        The files written.
    """
    from qcxr.train import artifacts

    files = [
        artifacts.write_predictions(
            folder / f"predictions_{split}.csv",
            data.image_ids(split),
            labels,
            ev.labels,
            ev.probabilities,
        ),
        artifacts.write_auroc_table(
            folder / "auroc_per_label.csv", labels, {split: (ev.auroc, ev.labels)}
        ),
        artifacts.plot_roc_curves(
            folder / f"roc_{split}.png", labels, ev.labels, ev.probabilities, title
        ),
    ]
    if ev.confusion is not None:
        files.extend(
            artifacts.write_confusion(
                folder / f"confusion_{split}.png", labels, ev.confusion, title
            )
        )
    return files


def evaluate_and_log(
    model: LoadedModel,
    overrides: Sequence[str],
    tracking_uri: str | None,
    split: str = "test",
    cache_dir: str | None = None,
    progress: bool = False,
) -> Result:
    """Evaluate a run's model on other data and log it as a child run of the trained run.

    Args:
        model: the trained run's model (model.json names its run).
        overrides: data and task overrides.
        tracking_uri: the MLflow store of the trained run (None: evaluate, log nothing).
        split: the split to evaluate.
        cache_dir: image and feature cache root.
        progress: progress bars.

    Returns:
        The Result.
    """
    from qcxr.robustness import load

    ev, data, labels = evaluate_model(model, overrides, split, cache_dir, progress)
    metrics = ev.as_metrics(split)
    run_id = model.meta.get("run_id")
    if tracking_uri is None or not run_id:
        return Result(metrics, None, data.name, split)
    client = load.client_for(tracking_uri)
    trained = client.get_run(run_id)
    tags = trained.data.tags
    child_tags = {
        PARENT_TAG: run_id,
        SOURCE_TAG: run_id,
        DATA_TAG: data.name,
        "task": str(model.config.get("task", {}).get("name", "")),
        "source_head": tags.get("head", ""),
        "seed": tags.get("seed", ""),
        "source_run_name": trained.info.run_name or run_id,
    }
    params = {
        "source_run_id": run_id,
        "split": split,
        "data": data.name,
        "overrides": " ".join(overrides),
        "num_examples": data.num_examples(split),
    }
    name = f"evaluate-{trained.info.run_name or run_id}-{data.name}"
    child = load.start_run(tracking_uri, trained.info.experiment_id, name, child_tags, params)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = write_artifacts(Path(tmp), ev, data, split, labels, f"{name}: {split}")
            load.end_run(tracking_uri, child, metrics, files)
    except BaseException:
        load.end_run(tracking_uri, child, {}, [], status="FAILED")
        raise
    log.info("run %s on %s/%s: logged evaluation run %s", run_id, data.name, split, child)
    return Result(metrics, child, data.name, split)
