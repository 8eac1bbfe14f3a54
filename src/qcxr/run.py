"""The run: compose -> typed config -> build the pieces -> train -> evaluate -> log. The only
module that reads a DictConfig (STYLE.md); `train.py` calls `run(cfg)`.

Randomness: one root key from `seed`; the init stream is fold_in(root, INIT_STREAM). Data order
and augmentation are `qcxr.data`'s streams, derived from (seed, epoch, index) only, so CDL and
DQC runs with the same seed see identical batches.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from qcxr import schema
from qcxr.models.classifier import Classifier
from qcxr.quantum import MemoryBudgetError
from qcxr.train import artifacts, features, loop, optim, steps
from qcxr.train.checkpoint import Checkpoints

log = logging.getLogger(__name__)

INIT_STREAM = 0x1217  # fold_in constant of the parameter-init stream (data streams: qcxr.data)


class RunError(RuntimeError):
    """A run that cannot start or cannot finish, with the reason and the fix."""


def build(node: DictConfig) -> Any:
    """Instantiate a config node whose targets (recursively) live in qcxr."""
    return instantiate(node, _execution_whitelist_=["qcxr.*"])


# Memory a job asks its scheduler for (conf/hydra/launcher/submitit_*.yaml): the process, data
# and XLA take a few GB; a DQC adds, as an upper bound, the statevector working set of a batch
# (complex64 amplitudes x samples x the states backprop keeps; qcxr.quantum.memory has the exact
# model, which needs the built circuit, unknown when jobs are submitted).
JOB_BASE_MEM_GB = 4
_KEPT_STATES = 16


def job_mem_gb(num_qubits: int, batch_size: int) -> int:
    """Memory in GB to request for one training job.

    Args:
        num_qubits: the DQC's qubits (0 for a classical head).
        batch_size: training batch size.

    Returns:
        JOB_BASE_MEM_GB plus the statevector bound, rounded up to whole GB.
    """
    sim = 2 ** int(num_qubits) * 8 * int(batch_size) * _KEPT_STATES if num_qubits else 0
    return JOB_BASE_MEM_GB + math.ceil(sim / 2**30)


def register_configs() -> None:
    """Register the typed schemas in Hydra's ConfigStore (schema/run, schema/<group>/<option>),
    the submitit launchers' schemas under hydra/launcher/<name>_schema, and the `qcxr.job_mem_gb`
    resolver the launcher configs use."""
    cs = ConfigStore.instance()
    OmegaConf.register_resolver("qcxr.job_mem_gb", job_mem_gb, replace=True)
    try:  # the `cluster` extra
        from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    except ImportError:
        pass
    else:
        cs.store(group="hydra/launcher", name="submitit_slurm_schema", node=SlurmQueueConf,
                 provider="qcxr", replace=True)
        cs.store(group="hydra/launcher", name="submitit_local_schema", node=LocalQueueConf,
                 provider="qcxr", replace=True)
    cs.store(group="schema", name="run", node=schema.RunSchema, provider="qcxr", replace=True)
    for group, options in schema.GROUP_SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node, provider="qcxr",
                     replace=True)


# ---- small helpers ------------------------------------------------------------------------------
def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict/list flattened to {"a.b.0": value}."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            out.update(flatten(v, f"{prefix}{i}."))
        if not tree:
            out[prefix[:-1]] = "[]"
    else:
        out[prefix[:-1]] = tree
    return out


def git_commit(root: str | os.PathLike) -> str:
    """HEAD's commit in `root` (suffix `-dirty` with uncommitted changes), or "unknown"."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _choices() -> dict[str, str]:
    if HydraConfig.initialized():
        return dict(HydraConfig.get().runtime.choices)
    return {}


def run_names(cfg: DictConfig) -> dict[str, str]:
    """The run's identity for tags and names: head, ansatz, backbone, task, seed."""
    choices = _choices()
    head = choices.get("head") or str(cfg.head._target_).rsplit(".", 1)[-1].removesuffix("_head")
    backbone = choices.get("backbone") or str(cfg.backbone._target_).rsplit(".", 1)[-1]
    ansatz = str(cfg.head.ansatz.name) if "ansatz" in cfg.head else "none"
    return {"head": head, "ansatz": ansatz, "backbone": backbone, "task": str(cfg.task.name),
            "seed": str(int(cfg.seed))}


def slurm_job_id(environ: Mapping[str, str]) -> str | None:
    """The SLURM job id as squeue and submitit show it (`<array>_<task>` for an array task).

    Args:
        environ: the process environment.

    Returns:
        The id, or None outside a SLURM job.
    """
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return environ.get("SLURM_JOB_ID") or None


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


RUN_ID_FILE = "tracker_run_id.txt"  # in the run dir: a restarted run reopens its tracker run


def end_abandoned_run(cfg: DictConfig, out_dir: str | os.PathLike, status: str,
                      reason: str) -> str | None:
    """End the tracker run of a job killed from outside (scancel, time limit, OOM kill, a lost
    node), which could not end it itself; called by the launcher that saw the job end.

    Args:
        cfg: the job's composed config (its tracker group is used).
        out_dir: the job's run dir, where `run` wrote the tracker's run id.
        status: KILLED or FAILED.
        reason: why, e.g. SLURM's notice; the run's tag `end_reason` (trackers with tags).

    Returns:
        The run id that was ended, or None when the job had not opened a run.
    """
    id_file = Path(out_dir) / RUN_ID_FILE
    if not id_file.is_file():
        return None
    run_id = id_file.read_text().strip()
    tracker = build(cfg.tracker)
    tracker.start("", {}, run_id=run_id)
    if hasattr(tracker, "set_tags"):
        tracker.set_tags({"end_reason": reason})
    tracker.end(status)
    return run_id


# ---- the run ------------------------------------------------------------------------------------
def run(cfg: DictConfig) -> float:
    """Train and evaluate one configuration, logging everything to the tracker.

    Args:
        cfg: the composed config (config.yaml and its groups).

    Returns:
        The value of `cfg.optimized_metric` (val/auroc_macro of the best checkpoint by default).

    Raises:
        RunError: the configuration cannot run (e.g. the DQC simulation does not fit memory);
            the tracker's run is marked FAILED.
        loop.NonFiniteLossError: the loss became NaN/inf; the run is marked FAILED.
    """
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every manager at INFO
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    trainer = cfg.trainer
    seed = int(cfg.seed)
    cache_dir = Path(cfg.paths.cache_dir)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if trainer.compilation_cache:
        # Repeated runs (seeds, sweeps) reuse compiled XLA programs instead of recompiling.
        jax.config.update("jax_compilation_cache_dir", str(cache_dir / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

    names = run_names(cfg)
    backbone = build(cfg.backbone)
    head = build(cfg.head)
    use_features = bool(backbone.freeze and trainer.cache_features)
    data_kwargs: dict[str, Any] = {
        "task": str(cfg.task.labels),
        "batch_size": int(trainer.batch_size),
        "seed": seed,
        "image_size": backbone.image_size,
        "resize_size": backbone.resize_size,
    }
    if cfg.data.get("cache_dir") is None:
        data_kwargs["cache_dir"] = str(cache_dir / "images")
    if use_features:
        data_kwargs["augment"] = False
        log.warning("backbone.freeze=true: features are computed once and cached, so the head "
                    "trains on un-augmented images (augmentation off)")
    data = build(cfg.data)(**data_kwargs)

    tracker = build(cfg.tracker)
    tags = {**names, "git_commit": git_commit(cfg.paths.root_dir),
            "features": "cached" if use_features else "images",
            **{str(k): str(v) for k, v in (cfg.tags or {}).items()}}
    for key in ("study", "trial"):
        if cfg.get(key) is not None:
            tags[key] = str(cfg[key])
    slurm_id = slurm_job_id(os.environ)
    if slurm_id is not None:
        tags["slurm_job_id"] = slurm_id
    run_name = f"{names['head']}-{names['ansatz']}-{names['backbone']}-s{seed}"
    if names["ansatz"] == "none":
        run_name = f"{names['head']}-{names['backbone']}-s{seed}"
    # The tracker's run id is kept in the run dir, so a restarted run reopens the same run.
    id_file = out_dir / RUN_ID_FILE
    previous = id_file.read_text().strip() if trainer.resume and id_file.is_file() else None
    run_id = tracker.start(run_name, tags, run_id=previous)
    id_file.write_text(run_id)
    checkpoints = Checkpoints(out_dir / "checkpoints")
    try:
        objective = _train_and_evaluate(cfg, resolved, tracker, run_id, data, backbone, head,
                                        checkpoints, use_features, names, out_dir, cache_dir,
                                        resumed=previous is not None)
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except MemoryBudgetError as err:
        tracker.end("FAILED")
        raise RunError(f"the {names['head']} head does not fit in memory: {err}") from err
    except BaseException:
        log.exception("run %s failed", run_name)
        tracker.end("FAILED")
        raise
    finally:
        checkpoints.close()
    tracker.end("FINISHED")
    return objective


def _train_and_evaluate(cfg, resolved, tracker, run_id, data, backbone, head, checkpoints,
                        use_features, names, out_dir, cache_dir, resumed):
    trainer = cfg.trainer
    label_names = list(data.label_names)
    classifier = Classifier(backbone, head, str(trainer.compute_dtype))
    root_key = jax.random.key(int(cfg.seed))
    params, constants = classifier.init(jax.random.fold_in(root_key, INIT_STREAM))
    trainable = optim.freeze_labels(params, {"backbone": backbone.freeze})
    tx = build(cfg.optimizer)(
        total_steps=int(trainer.max_epochs) * data.num_batches("train"), trainable=trainable
    )
    state = steps.init_state(params, tx)
    resume_meta = None
    if trainer.resume:
        restored = checkpoints.restore_latest(state)
        if restored is not None:
            state, resume_meta = restored
            log.info("resuming from %s (epoch %d)", checkpoints.directory, resume_meta["epoch"])
    if not resumed:
        tracker.log_params(flatten(resolved))
        tracker.log_metrics({f"data/train_positives/{k}": v
                             for k, v in data.train_label_counts().items()}, step=0)

    start = time.perf_counter()
    if use_features:
        frozen = state["params"]
        featurize = jax.jit(lambda images: classifier.features(frozen, constants, images))
        bb = classifier.backbone
        identity = {"backbone": bb.name, "weights": bb.weights_id if bb.pretrained
                    else f"random:{features.tree_fingerprint(frozen['backbone'])}",
                    "image_size": bb.image_size, "resize_size": bb.resize_size,
                    "data": data.name, "compute_dtype": classifier.compute_dtype}
        feats = features.cached_features(data, featurize, identity, cache_dir,
                                         progress=bool(trainer.progress))
        source = features.FeatureBatches(data, feats)

        def apply(params, batch):
            return classifier.head_logits(params, batch["features"])
    else:
        source = data

        def apply(params, batch):
            return classifier.logits(params, constants, batch["image"])
    features_s = time.perf_counter() - start

    train_step = steps.make_train_step(apply, tx)
    eval_step = steps.make_eval_step(apply)
    first = next(iter(source.batches("val", 0)))
    compiled, compile_s = loop.compile_step(train_step, state, first)
    log.info("train step compiled in %.1f s; %d steps per epoch", compile_s,
             source.num_batches("train"))
    tracker.log_metrics({"time/compile_s": compile_s, "time/features_s": features_s}, step=0)

    result = loop.fit(
        state=state, train_step=compiled, eval_step=eval_step, source=source,
        label_names=label_names, tracker=tracker, checkpoints=checkpoints,
        max_epochs=int(trainer.max_epochs), patience=int(trainer.patience),
        resume_meta=resume_meta, meta_extra={"run_id": run_id},
        progress=bool(trainer.progress),
    )
    best = checkpoints.restore_best(result.state)
    if best is None:
        raise RunError("no best checkpoint was saved (no epoch finished)")
    best_params = best[0]["params"]

    final: dict[str, float] = {k: v for k, v in result.best.items() if k.startswith("val/")}
    evaluations = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for split in ("val", "test", "external"):
            if split not in data.splits:
                continue
            ev = loop.evaluate(eval_step, best_params, source, split, label_names)
            evaluations[split] = ev
            if split != "val":
                final.update(ev.as_metrics(split))
                artifacts.write_predictions(tmp / f"predictions_{split}.csv",
                                            data.image_ids(split), label_names, ev.labels,
                                            ev.probabilities)
        undefined = {s: ev.undefined for s, ev in evaluations.items() if ev.undefined}
        tracker.log_params({"undefined_auroc_labels": str(undefined) if undefined else "none"})
        final.update({"train/epochs_run": result.epochs_run, "train/best_epoch": result.best_epoch,
                      "memory/peak_rss_mb": peak_rss_mb()})
        tracker.log_metrics({k: v for k, v in final.items() if not k.startswith("val/")},
                            step=result.epochs_run)
        artifacts.write_auroc_table(tmp / "auroc_per_label.csv", label_names,
                                    {s: (ev.auroc, ev.labels) for s, ev in evaluations.items()})
        title = f"{names['head']} / {names['ansatz']} / {names['backbone']} / seed {names['seed']}"
        artifacts.plot_curves(tmp / "learning_curves.png", result.history, result.best_epoch,
                              title)
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        for path in sorted(tmp.iterdir()):
            tracker.log_artifact(path)
        if checkpoints.best_path is not None:
            tracker.log_artifact(checkpoints.best_path, "checkpoint_best")

    log.info("best epoch %d of %d; %s", result.best_epoch, result.epochs_run,
             ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k.endswith("auroc_macro")))
    key = str(cfg.optimized_metric)
    if key not in final:
        raise RunError(f"optimized_metric={key!r} was not produced by this run; available: "
                       f"{sorted(k for k in final if '/auroc/' not in k)}")
    value = float(final[key])
    if not np.isfinite(value):
        raise RunError(f"optimized_metric {key} is {value}")
    return value
