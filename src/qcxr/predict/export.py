"""The end of a finished run: write its model folder and log it as the run's MLflow model."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qcxr.predict.bundle import write_bundle

log = logging.getLogger(__name__)

MODEL_FOLDER = "model"  # in the run folder


def log_run_model(
    tracker: Any,
    *,
    out_dir: Path,
    config: Mapping[str, Any],
    state: Mapping[str, Any],
    constants: Mapping[str, Any],
    backbone: Any,
    label_names: Sequence[str],
    kind: str,
    run_id: str,
    best_epoch: int,
    metrics_step: int,
) -> Path:
    """Write `<run folder>/model/` and log it through the tracker as the pyfunc model `model`.

    Args:
        tracker: the run's Tracker (its `log_model`).
        out_dir: the run folder.
        config: the run's resolved config (what config.yaml holds).
        state: the best checkpoint's train state.
        constants: the backbone's non-trainable collections the run evaluated with.
        backbone: the run's Backbone.
        label_names: the task's labels.
        kind: the task's kind.
        run_id: the tracker's run id (recorded in model.json).
        best_epoch: the best checkpoint's epoch (recorded in model.json).
        metrics_step: the step of the run's final metrics (test AUROC, ...), linked to the model.

    Returns:
        The model folder.
    """
    from qcxr.predict.pyfunc import model_to_log  # mlflow: imported at the end of a run only

    start = time.perf_counter()
    folder = write_bundle(
        out_dir / MODEL_FOLDER,
        config,
        state,
        backbone,
        label_names,
        kind,
        run={"run_id": run_id, "best_epoch": int(best_epoch)},
        constants=constants,
    )
    image_size = int(backbone.preprocessing.image_size)
    arguments = model_to_log(folder, list(label_names), kind, image_size)
    uri = tracker.log_model(**arguments, step=metrics_step)
    seconds = time.perf_counter() - start
    tracker.log_metrics({"time/model_log_s": seconds}, step=0)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    log.info(
        "model %s (%s, %.1f kB) logged in %.1f s",
        uri or folder,
        folder,
        size / 1e3,
        seconds,
    )
    return folder
