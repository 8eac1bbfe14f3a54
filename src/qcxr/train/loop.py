"""The epoch loop: early stopping on a monitored val metric, checkpoints, resume, evaluation,
NaN guard.

Paper, section III-D: mean BCE, early stopping when the val loss has not improved for `patience`
epochs, at most `max_epochs`, the best model = the checkpoint with the lowest val loss (the
defaults: monitor val/loss, mode min, patience 5). MedMNIST v2 keeps the epoch of the highest val
AUC and never stops early (monitor val/medmnist_auc, mode max, patience None). Everything is
logged through a Tracker; metric keys follow docs/style.md (split/name[/label]).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from qcxr import metrics as M
from qcxr.tracking.base import Tracker
from qcxr.train.checkpoint import Checkpoints

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass
class Evaluation:
    """One pass over a split with the given parameters.

    Attributes:
        loss: mean BCE over the split's examples.
        auroc: label -> AUROC for labels with positives and negatives.
        undefined: labels whose AUROC is undefined (no positives or no negatives).
        probabilities: f32[N, L] in index order.
        labels: bool[N, L] in index order.
        scores: multiclass tasks: accuracy, balanced_accuracy, f1_macro; with the extra metric
            set "medmnist" (any kind) also medmnist_auc, medmnist_acc (metrics.medmnist_scores).
        confusion: multiclass tasks: int64[C, C] (rows true, columns arg-max), else None.
    """

    loss: float
    auroc: dict[str, float]
    undefined: list[str]
    probabilities: np.ndarray
    labels: np.ndarray
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    confusion: np.ndarray | None = None

    @property
    def auroc_macro(self) -> float:
        """Mean AUROC over the defined labels."""
        return M.macro_auroc(self.auroc)

    def as_metrics(self, split: str) -> dict[str, float]:
        """{split/loss, split/auroc_macro, split/auroc/<label>} (undefined labels absent), and
        split/<score> for each of `scores` (multiclass: split/accuracy, split/balanced_accuracy,
        split/f1_macro; MedMNIST's split/medmnist_auc, split/medmnist_acc)."""
        out = {f"{split}/loss": self.loss}
        out.update({f"{split}/{k}": v for k, v in self.scores.items()})
        if self.auroc:
            out[f"{split}/auroc_macro"] = self.auroc_macro
        out.update({f"{split}/auroc/{k}": v for k, v in self.auroc.items()})
        return out


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        state: the final (latest) train state.
        best_epoch: 1-based epoch of the best monitored val metric.
        epochs_run: epochs trained (including those of an earlier, interrupted attempt).
        history: per-epoch dicts (epoch, train/epoch_loss, val/loss, val/auroc_macro, ...).
        best: the history entry of the best epoch.
    """

    state: Any
    best_epoch: int
    epochs_run: int
    history: list[dict]
    best: dict


def evaluate(
    eval_step,
    params,
    source,
    split: str,
    label_names: Sequence[str],
    progress: bool = False,
    kind: str = "multilabel",
    extra_metrics: Sequence[str] = (),
    model_state: Any = None,
) -> Evaluation:
    """Evaluate params on a split.

    For a multiclass task the AUROC per class is one-vs-rest (each one-hot column against the
    class's softmax probability), and accuracy, balanced accuracy, macro-F1 and the confusion
    matrix come from the arg-max class. `extra_metrics=("medmnist",)` adds MedMNIST v2's AUC and
    ACC, computed as its evaluator does (`metrics.medmnist_scores`).

    Args:
        eval_step: (params, batch, model_state) -> (probabilities f32[B, L], per-example loss
            f32[B]) (steps.make_eval_step).
        params: the parameter tree.
        source: batches(split, epoch) and num_batches(split) (data module or cached features).
        split: the split.
        label_names: the task's labels.
        progress: show a step bar.
        kind: the task's kind, "multilabel" or "multiclass".
        extra_metrics: metric sets beside the usual ones (metrics.EXTRA_METRICS).
        model_state: the train state's model state (batch-norm running statistics), or None.

    Returns:
        The Evaluation; a warning names each label whose AUROC is undefined.
    """
    probs, labels, losses, index = [], [], [], []
    for batch in tqdm(
        source.batches(split, 0),
        total=source.num_batches(split),
        leave=False,
        desc=split,
        disable=not progress,
    ):
        p, loss = eval_step(params, _device_batch(batch), model_state)
        mask = np.asarray(batch["mask"])
        probs.append(np.asarray(p)[mask])
        losses.append(np.asarray(loss)[mask])
        labels.append(np.asarray(batch["labels"])[mask])
        index.append(np.asarray(batch["index"])[mask])
    order = np.argsort(np.concatenate(index))
    probabilities = np.concatenate(probs)[order]
    y = np.concatenate(labels)[order]
    auroc, undefined = M.auroc_per_label(y, probabilities, label_names)
    if undefined:
        log.warning(
            "%s: AUROC undefined (no positives or no negatives) for %s; left out of the mean",
            split,
            ", ".join(undefined),
        )
    ev = Evaluation(float(np.concatenate(losses).mean()), auroc, undefined, probabilities, y)
    if kind == "multiclass":
        ev.confusion = M.confusion_matrix(y, probabilities)
        ev.scores = M.multiclass_scores(ev.confusion)
    if "medmnist" in extra_metrics:
        ev.scores.update(M.medmnist_scores(y, probabilities, kind))
    return ev


PROGRESS_SETTINGS = ("auto", "true", "false")


def show_progress(setting: bool | str, stream: Any = None) -> bool:
    """Whether `trainer.progress` draws progress bars.

    `auto` draws them when the bars' stream (stderr) is a terminal; elsewhere (a file, a SLURM
    log, CI) a bar is a wall of carriage-return updates, and `fit` logs one line per epoch instead.

    Args:
        setting: "auto", or true/false (a bool, or its name in any case) to force it.
        stream: the stream the bars would go to; default sys.stderr.

    Returns:
        True to draw bars.

    Raises:
        ValueError: any other setting.
    """
    text = str(setting).lower()
    if text not in PROGRESS_SETTINGS:
        raise ValueError(
            f"trainer.progress={setting!r}: use auto (bars on a terminal only), true or false"
        )
    if text == "auto":
        stream = sys.stderr if stream is None else stream
        return bool(getattr(stream, "isatty", lambda: False)())
    return text == "true"


MONITOR_MODES = ("min", "max")


def monitorable(kind: str, label_names: Sequence[str], extra_metrics: Sequence[str] = ()) -> list:
    """The val metrics a run of this task logs every epoch, i.e. what `fit` can monitor.

    Args:
        kind: the task's kind.
        label_names: the task's labels (val/auroc/<label> for each).
        extra_metrics: the task's extra metric sets.

    Returns:
        Keys such as "val/loss", "val/auroc_macro", "val/accuracy", "val/medmnist_auc".
    """
    names = ["loss", "auroc_macro", *(f"auroc/{n}" for n in label_names)]
    if kind == "multiclass":
        names += ["accuracy", "balanced_accuracy", "f1_macro"]
    if "medmnist" in extra_metrics:
        names += ["medmnist_auc", "medmnist_acc"]
    return [f"val/{n}" for n in names]


def _improves(value: float, best: float, mode: str) -> bool:
    """Whether a monitored value beats the best so far (a NaN never does)."""
    return value < best if mode == "min" else value > best


def _device_batch(batch: dict) -> dict:
    # Only what the steps read crosses to the device; "index" stays on the host.
    return {k: v for k, v in batch.items() if k != "index"}


def fit(
    *,
    state: Any,
    train_step: Callable,
    eval_step: Callable,
    source: Any,
    label_names: Sequence[str],
    tracker: Tracker,
    checkpoints: Checkpoints,
    max_epochs: int = 50,
    patience: int | None = 5,
    resume_meta: dict | None = None,
    meta_extra: dict | None = None,
    progress: bool = True,
    kind: str = "multilabel",
    lr_at: Callable[[int], float] | None = None,
    monitor: str = "val/loss",
    monitor_mode: str = "min",
    extra_metrics: Sequence[str] = (),
) -> FitResult:
    """Train with early stopping on a monitored val metric, saving the latest and best
    checkpoints.

    Args:
        state: the train state to start from (restored by the caller when resuming).
        train_step: (state, batch) -> (state, loss) or (state, loss, {name: f32[]}) (logged as
            train/<name> per step), jitted and compiled once.
        eval_step: (params, batch, model_state) -> (probabilities, per-example loss); it gets
            the state's model state (the running statistics the train steps updated).
        source: batches(split, epoch), num_batches(split); splits "train" and "val".
        label_names: the task's labels.
        tracker: where metrics go.
        checkpoints: the run's checkpoints.
        max_epochs: epochs at most.
        patience: stop after this many epochs without a better monitored value; None never
            stops early (all max_epochs are trained).
        resume_meta: the latest checkpoint's meta when resuming, else None.
        meta_extra: stored in every checkpoint's meta (e.g. the tracker's run id).
        progress: epoch and step progress bars (`show_progress(trainer.progress)`); either way
            each epoch logs one line (epoch, train loss, val loss, val AUROC, seconds).
        kind: the task's kind (multiclass adds accuracy, balanced accuracy and macro-F1 to the
            val metrics).
        lr_at: 0-based train step -> the learning rate it applied (optim.step_learning_rates),
            logged as train/lr per step; None logs none.
        monitor: the val metric that picks the best checkpoint and drives early stopping (one
            of `monitorable(...)`).
        monitor_mode: "min" (a lower value is better: val/loss) or "max" (AUC, accuracy).
        extra_metrics: metric sets added to every evaluation (see `evaluate`).

    Returns:
        The FitResult.

    Raises:
        NonFiniteLossError: a train step returned a NaN or infinite loss.
        ValueError: an unknown monitor_mode, or a monitor the val evaluation does not log.
    """
    if monitor_mode not in MONITOR_MODES:
        raise ValueError(f"monitor_mode must be one of {MONITOR_MODES}, got {monitor_mode!r}")
    meta = {
        "epoch": 0,
        "best_epoch": 0,
        "monitor": monitor,
        "best_value": math.inf if monitor_mode == "min" else -math.inf,
        "bad_epochs": 0,
        "history": [],
        **(meta_extra or {}),
    }
    if resume_meta is not None:
        meta.update({k: resume_meta[k] for k in ("epoch", "best_epoch", "bad_epochs", "history")})
        # Checkpoints written before trainer.monitor existed monitored val/loss as best_val_loss.
        meta["best_value"] = resume_meta.get("best_value", resume_meta.get("best_val_loss"))
        log.info(
            "resuming after epoch %d (best epoch %d, %s %.5f)",
            meta["epoch"],
            meta["best_epoch"],
            monitor,
            meta["best_value"],
        )
    steps_per_epoch = source.num_batches("train")
    stopped = patience is not None and meta["bad_epochs"] >= patience
    epochs = tqdm(
        range(meta["epoch"] + 1, max_epochs + 1),
        desc="epochs",
        disable=not progress,
        initial=meta["epoch"],
        total=max_epochs,
    )
    for epoch in epochs:
        if stopped:
            break
        start = time.perf_counter()
        losses, step_times = [], []
        bar = tqdm(
            source.batches("train", epoch - 1),
            total=steps_per_epoch,
            leave=False,
            desc=f"epoch {epoch}",
            disable=not progress,
        )
        for batch in bar:
            t0 = time.perf_counter()
            state, loss, *sown = train_step(state, _device_batch(batch))
            loss = float(loss)  # waits for the step: the timing and the NaN check need it
            step_times.append(time.perf_counter() - t0)
            global_step = int(state["step"])
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite train loss {loss} at epoch {epoch}, global step {global_step}. "
                    "Fixes: lower optimizer.learning_rate, add optimizer.grad_clip, or check the "
                    "inputs for NaNs."
                )
            losses.append(loss)
            # Model diagnostics of the step (make_train_step(aux=True)), e.g.
            # train/mps_discarded_weight: the MPS head's truncation error.
            extra = {f"train/{k}": float(v) for k, v in (sown[0] if sown else {}).items()}
            if lr_at is not None:  # the rate this step applied (Lightning's LearningRateMonitor)
                extra["train/lr"] = lr_at(global_step - 1)
            tracker.log_metrics({"train/loss": loss, **extra}, step=global_step)
            bar.set_postfix(loss=f"{loss:.4f}")
        val = evaluate(
            eval_step,
            state["params"],
            source,
            "val",
            label_names,
            kind=kind,
            extra_metrics=extra_metrics,
            model_state=state.get("model_state"),
        )
        epoch_s = time.perf_counter() - start
        entry = {
            "epoch": epoch,
            "train/epoch_loss": float(np.mean(losses)),
            **val.as_metrics("val"),
            "time/epoch_s": epoch_s,
            # The first epoch's first step includes nothing to compile (done before fit),
            # so the mean is a fair step time.
            "time/step_s": float(np.mean(step_times)),
        }
        tracker.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=epoch)
        meta["history"].append(entry)
        meta["epoch"] = epoch
        if monitor not in entry:
            raise ValueError(
                f"trainer.monitor={monitor!r} is not among the val metrics of this run: "
                f"{sorted(k for k in entry if k.startswith('val/'))}"
            )
        value = float(entry[monitor])
        improved = _improves(value, meta["best_value"], monitor_mode)
        if improved:
            meta.update(best_epoch=epoch, best_value=value, bad_epochs=0)
        else:
            meta["bad_epochs"] += 1
        # Everything a checkpoint covers must be in the tracker's store before the checkpoint
        # exists: a run killed after it resumes from it and never logs those epochs again.
        tracker.flush()
        if improved:
            checkpoints.save_best(epoch, state, meta)
        checkpoints.save_latest(epoch, state, meta)
        epochs.set_postfix(val_loss=f"{val.loss:.4f}", auroc=f"{val.auroc_macro:.3f}")
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f, val AUROC %.4f, %.1f s%s",
            epoch,
            entry["train/epoch_loss"],
            val.loss,
            val.auroc_macro,
            epoch_s,
            " (best)" if improved else "",
        )
        if patience is not None and meta["bad_epochs"] >= patience:
            log.info("early stopping: %s has not improved for %d epochs", monitor, patience)
            stopped = True
    epochs.close()
    best = next((h for h in meta["history"] if h["epoch"] == meta["best_epoch"]), {})
    return FitResult(state, meta["best_epoch"], meta["epoch"], meta["history"], best)


def compile_step(train_step, state, batch: dict):
    """Trace and compile the train step for the fixed batch shape before training starts.

    A DQC head whose simulation cannot fit at the run's batch size raises
    qcxr.quantum.MemoryBudgetError here, before the first epoch. By then `run.py` has read and
    cached every image and, with a frozen backbone, computed (or loaded) the features, because
    the batch whose shapes are compiled comes from them.

    Args:
        train_step: the jitted step.
        state: a train state (only shapes and dtypes are read).
        batch: a batch with the fixed shapes.

    Returns:
        (the compiled step, seconds spent compiling).
    """
    start = time.perf_counter()
    shapes = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
        (state, _device_batch(batch)),
    )
    compiled = train_step.lower(*shapes).compile()
    return compiled, time.perf_counter() - start
