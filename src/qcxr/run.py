"""The run: compose -> typed config -> build the pieces -> train -> evaluate -> log. The only
module that reads a DictConfig (docs/style.md); `train.py` calls `run(cfg)`.

Randomness: one root key from `seed`; the init stream is fold_in(root, INIT_STREAM), the dropout
stream fold_in(root, DROPOUT_STREAM) (train step s uses fold_in(dropout stream, s)), the noise
stream fold_in(root, NOISE_STREAM) likewise (a noisy DQC's trajectories and shots). Data order
and augmentation are `qcxr.data`'s streams, derived from (seed, epoch, index) only, so CDL and
DQC runs with the same seed see identical batches.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from qcxr import schema
from qcxr.data.labels import resolve_labels
from qcxr.metrics import EXTRA_METRICS
from qcxr.models.classifier import Classifier
from qcxr.models.heads import DQCHead
from qcxr.predict.export import log_run_model
from qcxr.quantum import MemoryBudgetError
from qcxr.tracking import TrackerUnavailable
from qcxr.train import artifacts, features, loop, optim, steps
from qcxr.train.checkpoint import UNSAFE_PATH_CHARS, Checkpoints

log = logging.getLogger(__name__)

INIT_STREAM = 0x1217  # fold_in constant of the parameter-init stream (data streams: qcxr.data)
DROPOUT_STREAM = 0xD209  # fold_in constant of the dropout stream (heads with dropout: QCNN)
# fold_in constant of the noise stream: a noisy or finite-shot DQC's trajectories and shots (train
# step s: fold_in(noise stream, s); evaluation: the head's per-batch key, heads.eval_noise_key).
NOISE_STREAM = 0x9015


class RunError(RuntimeError):
    """A run that cannot start or cannot finish, with the reason and the fix."""


class RunInterrupted(BaseException):
    """SIGTERM arrived (SLURM's pre-emption, `kill`); a BaseException, like KeyboardInterrupt,
    so no `except Exception` on the way up swallows it.

    Args:
        signum: the signal's number.
    """

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


STATE_FILE = "run_state.json"  # in the run dir: run id, config, status; decides what a re-run does
RUN_ID_FILE = "tracker_run_id.txt"  # in the run dir: a restarted run reopens its tracker run
# Keys a resumed run may change: they do not change what the epochs already trained mean.
RESUMABLE_CHANGES = (
    "trainer.max_epochs",
    "trainer.progress",
    "trainer.compilation_cache",
    "tracker.flush_every",
    "tracker.retry_s",
    "paths.cache_dir",
)


def build(node: DictConfig) -> Any:
    """Instantiate a config node whose targets (recursively) live in qcxr."""
    return instantiate(node, _execution_whitelist_=["qcxr.*"])


class ConfigError(ValueError):
    """A composed config whose values cannot make a run; the message names the key and the fix."""


SEED_MAX = 2**32 - 1  # NumPy seeds (data order, synthetic images) are unsigned 32-bit


# Memory a job asks its scheduler for (conf/hydra/launcher/submitit_*.yaml): the process, data
# and XLA take a few GB; a DQC adds the engine's own estimate for the method it resolves
# (qcxr.quantum.method_bytes: statevector, split, mps, density matrix or trajectories), the same
# model the memory guard checks at run time. Nothing else estimates memory.
JOB_BASE_MEM_GB = 4


def job_mem_gb(head: Any, batch_size: int) -> int:
    """Memory in GB to request for one training job.

    Args:
        head: the job's head config node (a DQC's `ansatz` and simulator keys are read; any
            other head gets the base), or None.
        batch_size: training batch size.

    Returns:
        JOB_BASE_MEM_GB plus the simulation's estimate for the resolved method, rounded up to
        whole GB.
    """
    if head is None or head.get("ansatz") is None:
        return JOB_BASE_MEM_GB
    from qcxr.quantum import method_bytes

    native = str(head.get("simulator", "native")) == "native"
    noise = {k: float(v) for k, v in (head.get("noise") or {}).items()}
    shots = head.get("shots")
    _, need = method_bytes(
        build(head.ansatz),
        int(batch_size),
        "float32",
        method=str(head.get("method", "auto")) if native else "statevector",
        block_size=int(head.get("block_size", 5)),
        remat=bool(head.get("remat", False)),
        max_bond=head.get("max_bond"),
        noise=noise or None,
        noisy_encoding=bool(head.get("noisy_encoding", True)),
        trajectories=head.get("trajectories"),
        shots=None if shots is None else int(shots),
    )
    return JOB_BASE_MEM_GB + math.ceil(need / 2**30)


def register_configs() -> None:
    """Register the typed schemas in Hydra's ConfigStore (schema/run, schema/<group>/<option>),
    the submitit launchers' schemas (hydra/launcher/<name>_schema), the `qcxr.job_mem_gb`
    resolver the launcher configs use and `qcxr.milestones` (optim.epoch_milestones: MedMNIST's
    fractions of trainer.max_epochs as epochs, conf/experiment/medmnist_pneumonia.yaml).

    `tags` is registered open (struct off on that node only): Hydra closes every mapping of the
    composed config, so without this `tags.note=baseline` fails with "Key 'note' is not in
    struct"; a flag set on the node survives Hydra closing the root.
    """
    cs = ConfigStore.instance()
    OmegaConf.register_resolver("qcxr.job_mem_gb", job_mem_gb, replace=True)
    OmegaConf.register_resolver("qcxr.milestones", optim.epoch_milestones, replace=True)
    try:  # the `cluster` extra
        from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    except ImportError:
        pass
    else:
        cs.store(
            group="hydra/launcher",
            name="submitit_slurm_schema",
            node=SlurmQueueConf,
            provider="qcxr",
            replace=True,
        )
        cs.store(
            group="hydra/launcher",
            name="submitit_local_schema",
            node=LocalQueueConf,
            provider="qcxr",
            replace=True,
        )
    run_node = OmegaConf.structured(schema.RunSchema)
    OmegaConf.set_struct(run_node.tags, False)
    cs.store(group="schema", name="run", node=run_node, provider="qcxr", replace=True)
    for group, options in schema.GROUP_SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node, provider="qcxr", replace=True)


def validate_config(cfg: DictConfig) -> None:
    """Check the values the typed schemas cannot, before anything is built or compiled.

    Called first by `run` and, for every job of a multirun, by the range sweeper before it
    launches any job.

    Args:
        cfg: the composed config (config.yaml and its groups).

    Raises:
        ConfigError: a seed outside [0, 2**32 - 1], trainer.max_epochs, trainer.patience (unless
            null) or trainer.batch_size below 1, a trainer.monitor / monitor_mode the loop cannot
            use, an unknown task.extra_metrics, optimizer.schedule=multistep without increasing
            milestones, an unknown task.labels, or a task.num_labels (or head.num_labels) that
            does not match the task's label list in qcxr.data.labels.
    """
    problems = []
    seed = int(cfg.seed)
    if not 0 <= seed <= SEED_MAX:
        problems.append(f"seed={seed} is out of range: use an integer from 0 to {SEED_MAX}")
    for key in ("max_epochs", "patience", "batch_size"):
        if key == "patience" and cfg.trainer.get(key) is None:
            continue  # no early stopping
        value = int(cfg.trainer[key])
        if value < 1:
            problems.append(f"trainer.{key}={value} must be at least 1")
    problems += _monitor_problems(cfg) + _schedule_problems(cfg)
    labels, num_labels = str(cfg.task.labels), int(cfg.task.num_labels)
    try:
        names = resolve_labels(labels)
    except ValueError as err:
        problems.append(f"task.labels: {err}")
    else:
        if num_labels != len(names):
            problems.append(
                f"task.num_labels={num_labels} does not match task.labels={labels!r},"
                f" which has {len(names)} labels: set task.num_labels={len(names)} "
                "or choose another label set"
            )
    try:
        loop.show_progress(cfg.trainer.progress)
    except ValueError as err:
        problems.append(str(err))
    head_labels = cfg.head.get("num_labels") if "head" in cfg else None
    if head_labels is not None and int(head_labels) != num_labels:
        problems.append(
            f"head.num_labels={int(head_labels)} differs from task.num_labels="
            f"{num_labels}: leave head.num_labels at ${{task.num_labels}}"
        )
    # Resolvable inside a job only (Hydra sets the output dir when the job starts).
    out_dir = OmegaConf.select(
        cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False
    )
    unsafe = sorted(set(UNSAFE_PATH_CHARS) & set(str(out_dir or "")))
    if unsafe:
        problems.append(
            f"the run folder {out_dir} contains {''.join(unsafe)!r}, where Orbax "
            "cannot write checkpoints: set hydra.run.dir (or hydra.sweep.subdir) to a "
            "folder without them"
        )
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def _monitor_problems(cfg: DictConfig) -> list[str]:
    """What is wrong with trainer.monitor / monitor_mode and task.extra_metrics (an older config
    without them monitors val/loss, mode min)."""
    problems = []
    monitor = str(cfg.trainer.get("monitor", "val/loss"))
    mode = str(cfg.trainer.get("monitor_mode", "min"))
    if not monitor.startswith("val/"):
        problems.append(
            f"trainer.monitor={monitor!r} must be a val metric (val/loss, val/auroc_macro, ...)"
        )
    if mode not in loop.MONITOR_MODES:
        problems.append(f"trainer.monitor_mode={mode!r}: use one of {loop.MONITOR_MODES}")
    extra = [str(m) for m in (cfg.task.get("extra_metrics") or [])]
    unknown = sorted(set(extra) - set(EXTRA_METRICS))
    if unknown:
        problems.append(f"task.extra_metrics {unknown} unknown: use some of {EXTRA_METRICS}")
    return problems


def _schedule_problems(cfg: DictConfig) -> list[str]:
    """multistep's milestones: increasing epochs from 1 (train/optim.py converts them)."""
    if str(cfg.optimizer.get("schedule", "constant")) != "multistep":
        return []
    milestones = [int(m) for m in (cfg.optimizer.get("milestones") or [])]
    if not milestones:
        return []  # a constant rate, as MultiStepLR with no milestones
    if milestones[0] < 1 or any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
        return [f"optimizer.milestones={milestones} must be increasing epochs of at least 1"]
    return []


def monitor_of(trainer: Any) -> tuple[str, str]:
    """(trainer.monitor, trainer.monitor_mode), val/loss and min where a config has neither."""
    return str(trainer.get("monitor", "val/loss")), str(trainer.get("monitor_mode", "min"))


def extra_metrics_of(task: Any) -> tuple[str, ...]:
    """task.extra_metrics as a tuple (none where a config predates it)."""
    return tuple(str(m) for m in (task.get("extra_metrics") or []))


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


def project_root() -> Path:
    """The repository this qcxr is imported from (src/qcxr/ -> the repo), whatever the cwd: a
    CLI started from another folder must tag qcxr's commit, not that folder's."""
    return Path(__file__).resolve().parents[2]


def git_commit(root: str | os.PathLike) -> str:
    """HEAD's commit in `root` (suffix `-dirty` with uncommitted changes), or "unknown"."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
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
    return {
        "head": head,
        "ansatz": ansatz,
        "backbone": backbone,
        "task": str(cfg.task.name),
        "seed": str(int(cfg.seed)),
    }


def noise_label(cfg: DictConfig) -> str:
    """The head's noise and shots as a short label ("depolarizing=0.001,shots=1000"), or ""
    for an ideal circuit (all levels 0, exact expectations) and for heads without noise keys."""
    head = cfg.get("head") or {}
    parts = [f"{k}={float(v):g}" for k, v in (head.get("noise") or {}).items() if float(v) > 0]
    if head.get("shots") is not None:
        parts.append(f"shots={int(head.shots)}")
    return ",".join(parts)


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


def _read_state(out_dir: Path) -> dict | None:
    path = out_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise RunError(
            f"{path} is not valid JSON ({err}); the run folder {out_dir} is damaged: "
            "start a new run with another hydra.run.dir"
        ) from err


def _write_state(out_dir: Path, **fields: Any) -> None:
    state = {**(_read_state(out_dir) or {}), **fields}
    tmp = out_dir / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1, default=str))
    tmp.replace(out_dir / STATE_FILE)  # atomic: a kill never leaves half a file


def resume_plan(out_dir: Path, config: dict[str, Any], resume: bool) -> tuple[dict | None, dict]:
    """Decide, before anything is built, whether a run folder is resumed, and refuse what would
    damage the run already in it.

    Args:
        out_dir: the run folder (Hydra's run dir).
        config: this run's resolved config, flattened ({"trainer.max_epochs": 50, ...}).
        resume: trainer.resume.

    Returns:
        (the folder's saved state to resume, or None for a fresh run;
        {key: (old, new)} for the RESUMABLE_CHANGES keys that differ).

    Raises:
        RunError: the folder holds a run that must not be reopened: one with another config, a
            FINISHED one with nothing left to train, or any run when resume is off.
    """
    state = _read_state(out_dir)
    if state is None:
        if (out_dir / RUN_ID_FILE).is_file() or (out_dir / "checkpoints").exists():
            raise RunError(
                f"{out_dir} already holds checkpoints of a run whose config was not "
                f"recorded (no {STATE_FILE}), so it cannot be resumed safely. Fix: "
                "start this run in another folder (a new hydra.run.dir)"
            )
        return None, {}
    run = f"the {state.get('status', 'unknown')} run {state.get('run_id')}"
    if not resume:
        raise RunError(
            f"{out_dir} already holds {run} and trainer.resume=false would overwrite "
            "its checkpoints. Fix: use a new hydra.run.dir, or trainer.resume=true to "
            "continue it"
        )
    old = state.get("config", {})
    new = json.loads(json.dumps(config, default=str))  # compare as stored
    differ = sorted(
        k for k in set(old) | set(new) if old.get(k, "<absent>") != new.get(k, "<absent>")
    )
    blocking = [k for k in differ if k not in RESUMABLE_CHANGES]
    if blocking:
        shown = "; ".join(
            f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in blocking[:6]
        )
        more = f" (and {len(blocking) - 6} more)" if len(blocking) > 6 else ""
        raise RunError(
            f"{out_dir} holds {run} with another config ({shown}{more}); resuming "
            "it would mix two configs in one run. Fix: start the changed config in a "
            "new folder (another hydra.run.dir), or restore the folder's config "
            f"(saved in {out_dir / STATE_FILE}) to resume it"
        )
    max_epochs = int(new["trainer.max_epochs"])
    schedule = str(new.get("optimizer.schedule", "constant"))
    if "trainer.max_epochs" in differ and schedule != "constant":
        # total_steps = max_epochs x batches shapes the decaying schedules (train/optim.py): the
        # resumed epochs would follow another learning-rate curve than the ones already trained.
        raise RunError(
            f"{out_dir} holds {run}, trained under optimizer.schedule={schedule}, whose "
            "learning-rate curve is set by trainer.max_epochs "
            f"({old.get('trainer.max_epochs')} -> {max_epochs} would change it mid-run). Fix: "
            "start the longer run in a new folder (another hydra.run.dir), or use "
            "optimizer.schedule=constant for runs you mean to extend"
        )
    if state.get("status") == "FINISHED":
        epochs = int(state.get("epochs_run", 0))
        if state.get("stopped_early"):
            raise RunError(
                f"{out_dir} holds {run}, stopped early after {epochs} epochs "
                "(patience): nothing is left to train. Fix: start a new run in "
                "another hydra.run.dir"
            )
        if epochs >= max_epochs:
            raise RunError(
                f"{out_dir} holds {run}, which trained {epochs} epochs: nothing is "
                f"left to train with trainer.max_epochs={max_epochs}. Fix: "
                + (
                    "raise trainer.max_epochs to train it longer, or start a new run in "
                    "another hydra.run.dir"
                    if schedule == "constant"
                    else f"start a new run in another hydra.run.dir (under "
                    f"optimizer.schedule={schedule} a larger trainer.max_epochs would change "
                    "the learning-rate curve of the epochs already trained)"
                )
            )
    return state, {k: (old.get(k), new.get(k)) for k in differ}


def _raise_on_sigterm() -> Any:
    """Make SIGTERM raise RunInterrupted in the main thread; return the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers can only be set from the main thread

    def handler(signum, frame):
        # One shot: a second SIGTERM must not interrupt marking the run KILLED.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise RunInterrupted(signum)

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def end_abandoned_run(
    cfg: DictConfig, out_dir: str | os.PathLike, status: str, reason: str
) -> str | None:
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
    if (Path(out_dir) / STATE_FILE).is_file():
        _write_state(Path(out_dir), status=status)
    return run_id


# The data factories' location arguments. Hydra runs a job inside its output folder
# (hydra.job.chdir), so a relative location given on the command line or in the environment
# (`data.root=../shared/data/ham10000-sample`) is taken relative to the folder train.py was
# started from (paths.root_dir, Hydra's original working directory), not to the run folder.
DATA_LOCATIONS = (
    "image_dir",
    "label_dir",
    "root",
    "npz",
    "metadata_file",
    "external_image_dir",
    "external_label_dir",
)


def _launch_relative_locations(cfg: DictConfig) -> dict[str, str]:
    """The data locations given as relative paths, made absolute against `paths.root_dir`."""
    found = {}
    for key in DATA_LOCATIONS:
        value = cfg.data.get(key)
        if value is not None and not Path(str(value)).is_absolute():
            found[key] = str(Path(cfg.paths.root_dir) / str(value))
    return found


# ---- backbone.init_from: an earlier run's backbone as this run's --------------------------------
INIT_FROM_TAG = "qcxr.init_from"  # tag: the source run's id (its folder when it has none)
INIT_FROM_CONTEXT = "backbone"  # the lineage entry's context (an MLflow dataset input)
CHECKPOINT_ARTIFACT = "checkpoint_best"  # the artifact a run logs its best checkpoint as
# The train state's key of the model's non-trainable variables (batch-norm running statistics,
# issue 22 item 1); a checkpoint written before it existed has none.
MODEL_STATE_KEY = "model_state"


@dataclasses.dataclass(frozen=True)
class InitSource:
    """The backbone weights of an earlier run's best checkpoint (`backbone.init_from`).

    Attributes:
        spec: backbone.init_from as given.
        run_id: the source run's tracker id (its checkpoint's meta), or None if it recorded none.
        uri: where the weights came from: `runs:/<id>/checkpoint_best`, or the checkpoint folder.
        backbone: the source run's backbone (the last part of its backbone._target_), or
            "unknown" where its config is not at hand.
        epoch: the checkpoint's epoch (the source's best).
        params: the backbone's parameters, params["backbone"] of the checkpoint.
        model_state: the backbone's other collections (batch_stats) from the checkpoint's model
            state, or None where the checkpoint has none (written before train-mode batch norm:
            its backbone ran on its initial statistics, and this run keeps its own initial ones).
    """

    spec: str
    run_id: str | None
    uri: str
    backbone: str
    epoch: int
    params: Any
    model_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        """{"params": ..., **model_state}: what the backbone's module is applied with."""
        return {"params": self.params, **(self.model_state or {})}

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights (features.tree_fingerprint, as the feature cache keys them)."""
        return features.tree_fingerprint(self.variables)


def _target_name(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "unknown"


def _checkpoints_in(folder: Path, scratch: Path) -> tuple[Path, str]:
    """The `checkpoints` folder (holding best/<epoch>/) for a run folder, a checkpoints folder
    or one checkpoint (state/ + meta/, e.g. best/<epoch> or a downloaded checkpoint_best), and
    the source's backbone as its run folder's run_state.json names it."""
    if (folder / "checkpoints" / "best").is_dir():
        checkpoints, run_dir = folder / "checkpoints", folder
    elif (folder / "best").is_dir():
        checkpoints, run_dir = folder, folder.parent
    elif (folder / "state").is_dir():
        # One checkpoint: laid out as a checkpoints folder of one best step (Checkpoints reads it).
        checkpoints = scratch / "checkpoints"
        step = folder.name if folder.name.isdigit() else "0"
        shutil.copytree(folder, checkpoints / "best" / step)
        run_dir = folder.parent.parent
    else:
        raise RunError(
            f"backbone.init_from={folder}: no best checkpoint there. Fix: give a run folder "
            "(holding checkpoints/best/), its checkpoints folder, one checkpoint folder "
            "(state/ and meta/), or an MLflow run id"
        )
    state = _read_state(run_dir) if run_dir.is_dir() else None
    config = (state or {}).get("config", {})
    return checkpoints, _target_name(config.get("backbone._target_"))


def _download_run_checkpoint(run_id: str, tracking_uri: str | None, scratch: Path):
    """An MLflow run's best checkpoint, downloaded (qcxr.robustness.load.fetch_run_files), and
    its backbone as its tags name it."""
    from qcxr.robustness import load

    if not tracking_uri:
        raise RunError(
            f"backbone.init_from={run_id} is not a folder, and no MLflow store is configured to "
            "look it up as a run id. Fix: give a run or checkpoint folder, or set "
            "tracker.tracking_uri (MLFLOW_TRACKING_URI) to the store holding that run"
        )
    try:
        run = load.trained_run(tracking_uri, run_id)
    except load.RobustnessError as err:
        raise RunError(
            f"backbone.init_from={run_id} is neither a folder nor a run id in {tracking_uri}. "
            "Fix: give an existing run or checkpoint folder, or a run id from that store"
        ) from err
    if not load.has_artifact(tracking_uri, run_id, CHECKPOINT_ARTIFACT):
        raise RunError(
            f"run {run_id} has no {CHECKPOINT_ARTIFACT} artifact, so it has no backbone to start "
            "from. Fix: use a run that finished training"
        )
    config, checkpoints = load.fetch_run_files(tracking_uri, run, scratch)
    target = (config.get("backbone") or {}).get("_target_")
    return checkpoints, run.tags.get("backbone") or _target_name(target)


def load_init_source(
    spec: str, tracking_uri: str | None, root_dir: str | os.PathLike
) -> InitSource:
    """Read the backbone of an earlier run's best checkpoint.

    Args:
        spec: backbone.init_from: a folder (a run folder, its checkpoints folder or one
            checkpoint; relative to `root_dir`, the directory train.py was started from) or, when
            no such folder exists, an MLflow run id.
        tracking_uri: the MLflow store to look a run id up in (this run's tracker's).
        root_dir: the directory relative folders are taken from.

    Returns:
        The InitSource (its arrays are in memory; nothing downloaded is kept).

    Raises:
        RunError: neither a folder with a checkpoint nor a run id of the store, or a run without
            a best checkpoint.
    """
    folder = Path(spec) if Path(spec).is_absolute() else Path(root_dir) / spec
    with tempfile.TemporaryDirectory() as scratch:
        if folder.exists():
            checkpoints_dir, name = _checkpoints_in(folder.resolve(), Path(scratch))
            uri = str(checkpoints_dir if checkpoints_dir.is_relative_to(folder) else folder)
        else:
            checkpoints_dir, name = _download_run_checkpoint(spec, tracking_uri, Path(scratch))
            uri = f"runs:/{spec}/{CHECKPOINT_ARTIFACT}"
        checkpoints = Checkpoints(checkpoints_dir)
        try:
            restored = checkpoints.restore_best(None)  # the tree as saved: no template needed
        finally:
            checkpoints.close()
        if restored is None:
            raise RunError(f"backbone.init_from={spec}: {checkpoints_dir} holds no checkpoint")
        state, meta = restored
        model_state = state.get(MODEL_STATE_KEY)
        return InitSource(
            spec=str(spec),
            run_id=meta.get("run_id"),
            uri=uri,
            backbone=name,
            epoch=int(meta.get("epoch", 0)),
            params=jax.tree.map(np.asarray, state["params"]["backbone"]),
            model_state=None
            if model_state is None
            else jax.tree.map(np.asarray, dict(model_state.get("backbone", {}))),
        )


def _shapes(tree: Any) -> dict[str, tuple]:
    return {
        jax.tree_util.keystr(path): (tuple(np.shape(leaf)), str(np.asarray(leaf).dtype))
        if not isinstance(leaf, jax.ShapeDtypeStruct)
        else (tuple(leaf.shape), str(leaf.dtype))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def check_init_source(source: InitSource, backbone: Any, name: str) -> None:
    """Refuse weights whose tree is not this backbone's (another architecture or size).

    Args:
        source: the loaded weights.
        backbone: this run's built backbone.
        name: this run's backbone option (its tag).

    Raises:
        RunError: naming both backbones and the first differing arrays.
    """
    expected = jax.eval_shape(backbone.init, jax.random.key(0))
    if source.model_state is None:
        expected = {"params": expected["params"]}
    want, got = _shapes(expected), _shapes(source.variables)
    differ = [
        f"{k}: {got.get(k, 'absent')} in the source, {want.get(k, 'absent')} here"
        for k in sorted(set(want) | set(got))
        if want.get(k) != got.get(k)
    ]
    if differ:
        shown = "; ".join(differ[:3]) + (
            f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        )
        raise RunError(
            f"backbone.init_from={source.spec}: the source's backbone ({source.backbone}, run "
            f"{source.run_id}) does not match this run's backbone={name} ({shown}). Fix: "
            f"choose the source's backbone (backbone={source.backbone} with its settings) or "
            "a source run trained with this one"
        )


def init_source_for(cfg: DictConfig, backbone: Any, name: str) -> InitSource | None:
    """The run's backbone.init_from, loaded and checked against its backbone, or None."""
    spec = getattr(backbone, "init_from", None)
    if spec is None:
        return None
    tracker = cfg.get("tracker") or {}
    uri = tracker.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    source = load_init_source(str(spec), uri, cfg.paths.root_dir)
    check_init_source(source, backbone, name)
    log.info(
        "backbone from %s (run %s, epoch %d, %s, weights %s)%s",
        source.uri,
        source.run_id,
        source.epoch,
        source.backbone,
        source.fingerprint[:12],
        ", frozen" if backbone.freeze else ", fine-tuned (backbone.freeze=false)",
    )
    return source


def apply_init_source(params: dict, model_state: dict, source: InitSource | None):
    """Params and model state with the backbone's taken from `source` (unchanged for None).

    Args:
        params: {"backbone", "head"} from Classifier.init.
        model_state: {"backbone": collections} from Classifier.init.
        source: the loaded weights, or None.

    Returns:
        (params, model_state); the head keeps its own init.
    """
    if source is None:
        return params, model_state
    params = {**params, "backbone": jax.tree.map(jnp.asarray, source.params)}
    if source.model_state is not None:
        model_state = {**model_state, "backbone": jax.tree.map(jnp.asarray, source.model_state)}
    return params, model_state


def log_init_lineage(tracker: Any, source: InitSource | None) -> None:
    """The source weights as a dataset input (context "backbone"): name backbone-<run id>, digest
    the weights' fingerprint, source the checkpoint's URI (the run's tag qcxr.init_from names
    the run)."""
    if source is None:
        return
    tracker.log_dataset(
        f"backbone-{source.run_id or Path(source.uri).name}",
        source.fingerprint,
        source=source.uri,
        context=INIT_FROM_CONTEXT,
        profile={"run_id": source.run_id, "epoch": source.epoch, "backbone": source.backbone},
    )


def _data_kwargs(cfg: DictConfig, backbone, use_features: bool, cache_dir: Path) -> dict[str, Any]:
    """The data factory's run-time arguments (`conf/data/*.yaml` is `_partial_`), with relative
    data locations made absolute (`DATA_LOCATIONS`)."""
    kwargs: dict[str, Any] = {
        "task": str(cfg.task.labels),
        "batch_size": int(cfg.trainer.batch_size),
        "seed": int(cfg.seed),
        # The backbone says how its images are prepared (size, resize, crop, mean/std); data/
        # gets the values, never the model.
        "preprocessing": dataclasses.asdict(backbone.preprocessing),
        # A multiclass task's rows must each hold one class: checked when the data is built.
        "kind": str(cfg.task.kind),
    }
    if cfg.data.get("cache_dir") is None:
        kwargs["cache_dir"] = str(cache_dir / "images")
    if use_features:
        kwargs["augment"] = False
    kwargs.update(_launch_relative_locations(cfg))
    return kwargs


def build_optimizer(cfg: DictConfig, steps_per_epoch: int, trainable: Any) -> tuple[Any, Any]:
    """The run's optax transformation and the rate each train step applies.

    Args:
        cfg: the composed config (optimizer and trainer.max_epochs are read).
        steps_per_epoch: train batches per epoch (schedules: total_steps = max_epochs x this;
            multistep's milestones in epochs become steps with it).
        trainable: the freeze labels (optim.freeze_labels).

    Returns:
        (the transformation, 0-based train step -> learning rate, logged as train/lr).
    """
    total_steps = int(cfg.trainer.max_epochs) * int(steps_per_epoch)
    schedule = {"total_steps": total_steps, "steps_per_epoch": int(steps_per_epoch)}
    tx = build(cfg.optimizer)(**schedule, trainable=trainable)
    opt = cfg.optimizer  # every optimizer option has these keys (conf/optimizer/*.yaml)
    lr_at = optim.step_learning_rates(
        learning_rate=float(opt.learning_rate),
        schedule=str(opt.schedule),
        warmup_steps=int(opt.warmup_steps),
        total_steps=total_steps,
        accumulation_steps=int(opt.accumulation_steps),
        milestones=[int(m) for m in (opt.get("milestones") or [])],
        gamma=float(opt.get("gamma", 0.1)),
        steps_per_epoch=int(steps_per_epoch),
    )
    return tx, lr_at


# ---- the run ------------------------------------------------------------------------------------
def run(cfg: DictConfig) -> float:
    """Train and evaluate one configuration, logging everything to the tracker.

    Args:
        cfg: the composed config (config.yaml and its groups).

    Returns:
        The value of `cfg.optimized_metric` (val/auroc_macro of the best checkpoint by default).

    Raises:
        RunError: the configuration cannot run (e.g. the DQC simulation does not fit memory);
            the tracker's run is marked FAILED. Also, before anything is built, when the run
            folder holds a run this one must not reopen (see `resume_plan`).
        KeyboardInterrupt: Ctrl-C; the run is marked KILLED. SIGTERM marks it KILLED too and
            then ends the process with that signal (exit status 143).
        loop.NonFiniteLossError: the loss became NaN/inf; the run is marked FAILED.
        ConfigError: a value no run can use (see `validate_config`); nothing was built.
    """
    validate_config(cfg)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every manager at INFO
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    trainer = cfg.trainer
    seed = int(cfg.seed)
    cache_dir = Path(cfg.paths.cache_dir)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat_config = flatten(resolved)
    saved_state, changed = resume_plan(out_dir, flat_config, bool(trainer.resume))
    if trainer.compilation_cache:
        # Repeated runs (seeds, sweeps) reuse compiled XLA programs instead of recompiling.
        jax.config.update("jax_compilation_cache_dir", str(cache_dir / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

    names = run_names(cfg)
    try:  # an unknown task kind or misplaced class weights fail before anything is read
        steps.task_loss(str(cfg.task.kind), cfg.task.get("class_weights"))
    except ValueError as err:
        raise RunError(f"task {cfg.task.name}: {err}") from err
    class_weights = cfg.task.get("class_weights")
    if class_weights is not None and len(class_weights) != int(cfg.task.num_labels):
        raise RunError(
            f"task.class_weights has {len(class_weights)} values for "
            f"{cfg.task.num_labels} classes; give one weight per class, in the order "
            f"of qcxr.data.labels.LABEL_SETS[{str(cfg.task.labels)!r}]"
        )
    backbone = build(cfg.backbone)
    head = build(cfg.head)
    try:  # a simulation that cannot fit is refused now, before a tracker run exists
        check_head_fits(head, backbone.feature_dim, int(trainer.batch_size))
    except MemoryBudgetError as err:
        raise RunError(f"the {names['head']} head does not fit in memory: {err}") from err
    init_source = init_source_for(cfg, backbone, names["backbone"])  # checked before any run
    use_features = bool(backbone.freeze and trainer.cache_features)
    if use_features:
        log.warning(
            "backbone.freeze=true: features are computed once and cached, so the head "
            "trains on un-augmented images (augmentation off)"
        )
        if (resolved.get("data") or {}).get("augment"):
            # Params and config.yaml record what ran, not what was asked (resume_plan compared
            # the config as given, above, so a re-run still matches its folder).
            resolved["data"]["augment"] = False
    data = build(cfg.data)(**_data_kwargs(cfg, backbone, use_features, cache_dir))
    data.prepare()  # reads every image of every split now: a bad test image fails before training
    check_monitor(
        monitor_of(trainer)[0], str(cfg.task.kind), data.label_names, extra_metrics_of(cfg.task)
    )

    tracker = build(cfg.tracker)
    entry = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("train.py")
    tags = {
        **names,
        "git_commit": git_commit(cfg.paths.root_dir),
        "source": str(entry if entry.is_absolute() else Path(cfg.paths.root_dir) / entry),
        "features": "cached" if use_features else "images",
        **{str(k): str(v) for k, v in (cfg.tags or {}).items()},
    }
    if init_source is not None:
        tags[INIT_FROM_TAG] = init_source.run_id or init_source.uri
    for key in ("study", "trial"):
        if cfg.get(key) is not None:
            tags[key] = str(cfg[key])
    slurm_id = slurm_job_id(os.environ)
    if slurm_id is not None:
        tags["slurm_job_id"] = slurm_id
    run_name = f"{names['head']}-{names['ansatz']}-{names['backbone']}-s{seed}"
    if names["ansatz"] == "none":
        run_name = f"{names['head']}-{names['backbone']}-s{seed}"
    noise = noise_label(cfg)
    if noise:  # noise-aware training: a tag to filter on and a name that says it
        tags["noise"] = noise
        run_name = f"{run_name}-{noise}"
    # The tracker's run id is kept in the run dir, so a restarted run reopens the same run
    # (resume_plan has checked that it may); the sweeper reads tracker_run_id.txt too.
    id_file = out_dir / RUN_ID_FILE
    previous = saved_state["run_id"] if saved_state is not None else None
    previous_sigterm = _raise_on_sigterm()
    run_id = tracker.start(run_name, tags, run_id=previous)
    id_file.write_text(run_id)
    resumes = int((saved_state or {}).get("resumes", -1)) + 1
    _write_state(out_dir, run_id=run_id, config=flat_config, status="RUNNING", resumes=resumes)
    checkpoints = Checkpoints(out_dir / "checkpoints")
    try:
        if previous is not None and changed:
            # MLflow params are immutable: a value changed on resume is logged under its own key.
            tracker.log_params({f"resume.{resumes}.{k}": new for k, (_, new) in changed.items()})
            log.info(
                "resuming %s with %s",
                run_id,
                ", ".join(f"{k}={new} (was {old})" for k, (old, new) in changed.items()),
            )
        objective = _train_and_evaluate(
            cfg,
            resolved,
            tracker,
            run_id,
            data,
            backbone,
            head,
            checkpoints,
            use_features,
            names,
            out_dir,
            cache_dir,
            resumed=previous is not None,
            init_source=init_source,
        )
    except (KeyboardInterrupt, RunInterrupted) as err:
        log.warning(
            "run %s interrupted (%s): marked KILLED; start it again with the same "
            "hydra.run.dir to resume from its latest checkpoint",
            run_name,
            err,
        )
        tracker.end("KILLED")
        _write_state(out_dir, status="KILLED")
        if isinstance(err, RunInterrupted):
            # Die of the signal itself, so SLURM and shells see the conventional status (143).
            checkpoints.close()
            signal.signal(err.signum, signal.SIG_DFL)
            os.kill(os.getpid(), err.signum)
        raise
    except MemoryBudgetError as err:
        tracker.end("FAILED")
        _write_state(out_dir, status="FAILED")
        raise RunError(f"the {names['head']} head does not fit in memory: {err}") from err
    except TrackerUnavailable as err:
        tracker.end("FAILED")  # logs that the server could not be told
        _write_state(out_dir, status="FAILED")
        raise RunError(
            f"{err}. The run {run_id} stays RUNNING on the server with every metric up to its "
            f"latest checkpoint ({out_dir / 'checkpoints' / 'latest'}). Once the server is back, "
            f"start the same command with hydra.run.dir={out_dir} to resume: it reopens the "
            "run and logs the rest, each step once"
        ) from err
    except BaseException:
        log.exception("run %s failed", run_name)
        tracker.end("FAILED")
        _write_state(out_dir, status="FAILED")
        raise
    finally:
        checkpoints.close()
        _restore_sigterm(previous_sigterm)
    tracker.end("FINISHED")
    _write_state(out_dir, status="FINISHED")
    return objective


def check_monitor(monitor: str, kind: str, label_names, extra_metrics) -> None:
    """Refuse, before the first epoch, a trainer.monitor that no epoch's val evaluation logs.

    Raises:
        RunError: the key and the ones this task logs.
    """
    available = loop.monitorable(kind, label_names, extra_metrics)
    if monitor not in available:
        shown = [k for k in available if "/auroc/" not in k] + ["val/auroc/<label>"]
        raise RunError(
            f"trainer.monitor={monitor!r} is not logged by this {kind} task; use one of {shown}"
            + (
                " (val/medmnist_* need task.extra_metrics=[medmnist])"
                if "medmnist" in monitor
                else ""
            )
        )


def check_head_fits(head: Any, feature_dim: int, batch_size: int) -> None:
    """Trace a DQC head's apply on a training-sized batch without computing anything, so the
    simulator's memory guard speaks at start (its shapes are static) rather than at the first step.

    Args:
        head: the built head module (heads without a simulated circuit are skipped).
        feature_dim: the backbone's feature size (the head's input).
        batch_size: the training batch size.

    Raises:
        MemoryBudgetError: the resolved method does not fit the memory budget.
    """
    if not isinstance(head, DQCHead):
        return
    features = jax.ShapeDtypeStruct((int(batch_size), int(feature_dim)), np.float32)
    key = jax.random.key(0)
    variables = jax.eval_shape(head.init, key, features)
    rngs = {"noise": key, "dropout": key}  # the train step's streams (noisy heads draw noise)
    jax.eval_shape(lambda v, f: head.apply(v, f, train=True, rngs=rngs), variables, features)


def resolved_head_method(head: Any, batch_size: int) -> str | None:
    """The simulation method a native DQC head runs for a batch (DQCHead.resolved), else None.

    Args:
        head: the built head module.
        batch_size: the training batch size.

    Returns:
        "statevector", "split" or "mps" (with noise or shots: "density_matrix", "trajectories"
        or "statevector"), or None for heads without a native circuit.
    """
    resolved = head.resolved(batch_size) if isinstance(head, DQCHead) else None
    return None if resolved is None else resolved.method


def _train_and_evaluate(
    cfg,
    resolved,
    tracker,
    run_id,
    data,
    backbone,
    head,
    checkpoints,
    use_features,
    names,
    out_dir,
    cache_dir,
    resumed,
    init_source=None,
):
    trainer = cfg.trainer
    label_names = list(data.label_names)
    classifier = Classifier(backbone, head, str(trainer.compute_dtype))
    root_key = jax.random.key(int(cfg.seed))
    params, model_state = classifier.init(jax.random.fold_in(root_key, INIT_STREAM))
    # backbone.init_from: the source's backbone params and model state (batch-norm statistics)
    params, model_state = apply_init_source(params, model_state, init_source)
    trainable = optim.freeze_labels(params, {"backbone": backbone.freeze})
    tx, lr_at = build_optimizer(cfg, data.num_batches("train"), trainable)
    state = steps.init_state(params, tx, model_state)
    resume_meta = None
    if trainer.resume:
        restored = checkpoints.restore_latest(state)
        if restored is not None:
            state, resume_meta = restored
            log.info("resuming from %s (epoch %d)", checkpoints.directory, resume_meta["epoch"])
    if not resumed:
        method = resolved_head_method(head, int(trainer.batch_size))
        params = flatten(resolved)
        if method is not None and method != "trajectories" and "head.trajectories" in params:
            # Only the trajectories method draws them: the params say what ran (config.yaml keeps
            # the value, which a rebuild of this run passes back to the factory).
            params["head.trajectories"] = "unused"
        tracker.log_params(params)
        if method is not None:  # what `method=auto` runs (statevector, split or mps)
            tracker.log_params({"head.method_resolved": method})
        # Dataset facts are params and dataset inputs, not metrics: as metrics they were charts,
        # identical for every run, that the MLflow UI showed before any AUROC or loss.
        tracker.log_params(
            {f"data/train_positives/{k}": v for k, v in data.train_label_counts().items()}
        )
        for split in data.splits:
            positives = data.labels(split).sum(axis=0)
            tracker.log_dataset(
                f"{data.name}-{split}",
                data.split_digest(split),
                source=data.name,
                context=split,
                profile={
                    "num_examples": data.num_examples(split),
                    "positives": dict(zip(label_names, map(int, positives), strict=True)),
                },
            )
        log_init_lineage(tracker, init_source)

    progress = loop.show_progress(trainer.progress)  # auto: bars on a terminal only
    start = time.perf_counter()
    if use_features:
        # The cache key (inputs, backbone, weights, preprocessing) is built in train/features.py.
        # A frozen backbone: eval-mode batch norm on the state's (initial) running statistics.
        feats = features.cached_features(
            data, classifier, state["params"], state["model_state"], cache_dir, progress=progress
        )
        source = features.FeatureBatches(data, feats)

        def apply(params, batch, dropout_key=None, noise_key=None, aux=False):
            return classifier.head_logits(params, batch["features"], dropout_key, noise_key, aux)
    else:
        source = data

        # Stateful: train steps run the batch norm of a backbone that trains on batch statistics
        # and update the running ones in the train state; evaluation reads them.
        def apply(
            params, batch, dropout_key=None, noise_key=None, aux=False, *, model_state, train=False
        ):
            images = batch["image"]
            return classifier.logits(
                params, model_state, images, dropout_key, noise_key, aux, train=train
            )

    features_s = time.perf_counter() - start

    kind = str(cfg.task.kind)
    weights = cfg.task.get("class_weights")
    weights = None if weights is None else [float(w) for w in weights]  # checked in run()
    # Only the train step gets the dropout stream; eval_step's apply runs deterministically.
    dropout_key = jax.random.fold_in(root_key, DROPOUT_STREAM)
    noise_key = jax.random.fold_in(root_key, NOISE_STREAM)  # used by noisy/finite-shot DQCs only
    # A head that sows diagnostics (MPS truncation) has them logged per step (loop.fit).
    stateful = not use_features
    train_step = steps.make_train_step(
        apply, tx, kind, weights, dropout_key, noise_key, aux=classifier.sows, stateful=stateful
    )
    eval_step = steps.make_eval_step(apply, kind, weights, stateful=stateful)
    monitor, monitor_mode = monitor_of(trainer)
    extra_metrics = extra_metrics_of(cfg.task)
    first = next(iter(source.batches("val", 0)))
    compiled, compile_s = loop.compile_step(train_step, state, first)
    log.info(
        "train step compiled in %.1f s; %d steps per epoch", compile_s, source.num_batches("train")
    )
    tracker.log_metrics({"time/compile_s": compile_s, "time/features_s": features_s}, step=0)

    result = loop.fit(
        state=state,
        train_step=compiled,
        eval_step=eval_step,
        source=source,
        label_names=label_names,
        tracker=tracker,
        checkpoints=checkpoints,
        max_epochs=int(trainer.max_epochs),
        patience=None if trainer.get("patience") is None else int(trainer.patience),
        resume_meta=resume_meta,
        meta_extra={"run_id": run_id},
        progress=progress,
        kind=kind,
        lr_at=lr_at,
        monitor=monitor,
        monitor_mode=monitor_mode,
        extra_metrics=extra_metrics,
    )
    _write_state(
        out_dir,
        epochs_run=result.epochs_run,
        stopped_early=result.epochs_run < int(trainer.max_epochs),
    )
    best = checkpoints.restore_best(result.state)
    if best is None:
        raise RunError(
            f"no best checkpoint was saved: no epoch finished, or {monitor} was never a number"
        )
    best_params, best_model_state = best[0]["params"], best[0]["model_state"]

    final: dict[str, float] = {k: v for k, v in result.best.items() if k.startswith("val/")}
    evaluations = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for split in ("val", "test", "external"):
            if split not in data.splits:
                continue
            ev = loop.evaluate(
                eval_step,
                best_params,
                source,
                split,
                label_names,
                kind=kind,
                extra_metrics=extra_metrics,
                model_state=best_model_state,
            )
            evaluations[split] = ev
            if split != "val":
                final.update(ev.as_metrics(split))
                artifacts.write_predictions(
                    tmp / f"predictions_{split}.csv",
                    data.image_ids(split),
                    label_names,
                    ev.labels,
                    ev.probabilities,
                )
        undefined = {s: ev.undefined for s, ev in evaluations.items() if ev.undefined}
        tracker.log_params({"undefined_auroc_labels": str(undefined) if undefined else "none"})
        final.update(
            {
                "train/epochs_run": result.epochs_run,
                "train/best_epoch": result.best_epoch,
                "memory/peak_rss_mb": peak_rss_mb(),
            }
        )
        tracker.log_metrics(
            {k: v for k, v in final.items() if not k.startswith("val/")}, step=result.epochs_run
        )
        artifacts.write_auroc_table(
            tmp / "auroc_per_label.csv",
            label_names,
            {s: (ev.auroc, ev.labels) for s, ev in evaluations.items()},
        )
        title = f"{names['head']} / {names['ansatz']} / {names['backbone']} / seed {names['seed']}"
        for split, ev in evaluations.items():
            if ev.confusion is not None:
                artifacts.write_confusion(
                    tmp / f"confusion_{split}.png", label_names, ev.confusion, f"{split}: {title}"
                )
        artifacts.plot_curves(tmp / "learning_curves.png", result.history, result.best_epoch, title)
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        for path in sorted(tmp.iterdir()):
            tracker.log_artifact(path)
        if checkpoints.best_path is not None:
            tracker.log_artifact(checkpoints.best_path, "checkpoint_best")
    # The MLflow model `model` (runs:/<id>/model) and the run folder's model/ (qcxr.predict).
    log_run_model(
        tracker,
        out_dir=out_dir,
        config=resolved,
        state=best[0],
        constants=best_model_state,
        backbone=backbone,
        label_names=label_names,
        kind=kind,
        run_id=run_id,
        best_epoch=result.best_epoch,
        metrics_step=result.epochs_run,
    )

    log.info(
        "best epoch %d of %d; %s",
        result.best_epoch,
        result.epochs_run,
        ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k.endswith("auroc_macro")),
    )
    key = str(cfg.optimized_metric)
    if key not in final:
        raise RunError(
            f"optimized_metric={key!r} was not produced by this {kind} run; available: "
            f"{sorted(k for k in final if '/auroc/' not in k)}"
        )
    value = float(final[key])
    if not np.isfinite(value):
        raise RunError(f"optimized_metric {key} is {value}")
    return value


# ---- re-evaluating a trained run (python -m qcxr.robustness) ------------------------------------
@dataclasses.dataclass
class Rebuilt:
    """A finished run's pieces, rebuilt from its logged config for evaluation.

    Attributes:
        classifier: backbone + head as the run built them.
        model_state: the backbone's non-trainable collections from the run's init stream (the
            initial batch-norm statistics); evaluate with the checkpoint's own `model_state`.
        state_template: a train state of the run's tree structure, to restore a checkpoint into.
        data: the run's data module, prepared (same seed, splits and batch size).
        use_features: whether the run trained the head on cached backbone features.
        label_names: the task's labels, in logit order.
        kind: the task's kind (multilabel or multiclass).
        cache_dir: the feature and image cache root.
    """

    classifier: Classifier
    model_state: Any
    state_template: Any
    data: Any
    use_features: bool
    label_names: list[str]
    kind: str
    cache_dir: Path

    def batch_source(self, params: Any, progress: bool = False, model_state: Any = None) -> Any:
        """Batches for evaluation: the data, or its cached features (computed once, then read
        from the feature cache) when the run trained on features.

        Args:
            params: the restored parameter tree (the backbone's part computes the features).
            progress: show a progress bar while features are computed.
            model_state: the restored model state; None gives the init's (`model_state`), which
                is what a frozen backbone's features were computed with.

        Returns:
            An object with batches(split, epoch) and num_batches(split).
        """
        if not self.use_features:
            return self.data
        feats = features.cached_features(
            self.data,
            self.classifier,
            params,
            self.model_state if model_state is None else model_state,
            self.cache_dir,
            progress=progress,
        )
        return features.FeatureBatches(self.data, feats)


@dataclasses.dataclass
class RebuiltModel:
    """A finished run's model, rebuilt from its logged config without its data.

    Attributes:
        classifier: backbone + head as the run built them.
        constants: the backbone's non-trainable collections (from the run's init stream).
        state_template: a train state of the run's tree structure, to restore a checkpoint into.
        label_names: the task's labels, in logit order (qcxr.data.labels, from task.labels).
        kind: the task's kind (multilabel or multiclass).
    """

    classifier: Classifier
    constants: Any
    state_template: Any
    label_names: list[str]
    kind: str


def rebuild_model(config: Mapping[str, Any]) -> RebuiltModel:
    """Rebuild a finished run's classifier from its logged, resolved config; no data is read.

    The backbone is built by its factory as in the run: pretrained weights are looked up where
    the config says (backbone.weights, else the Hugging Face cache; the Hub only when the config
    allows downloads). The optimizer state's tree in `state_template` does not depend on the
    number of steps (a schedule is a function of the step count), so one step per epoch is given.

    Args:
        config: the resolved config as a nested mapping (the run's config.yaml).

    Returns:
        The RebuiltModel; parameters come from the run's checkpoint, not from here.

    Raises:
        ConfigError: the config cannot make a run (see `validate_config`).
    """
    cfg = OmegaConf.create(dict(config))
    cfg.pop("hydra", None)
    validate_config(cfg)
    backbone = build(cfg.backbone)
    head = build(cfg.head)
    classifier = Classifier(backbone, head, str(cfg.trainer.compute_dtype))
    root_key = jax.random.key(int(cfg.seed))
    params, constants = classifier.init(jax.random.fold_in(root_key, INIT_STREAM))
    trainable = optim.freeze_labels(params, {"backbone": backbone.freeze})
    tx, _ = build_optimizer(cfg, 1, trainable)
    return RebuiltModel(
        classifier=classifier,
        constants=constants,
        state_template=steps.init_state(params, tx, constants),
        label_names=list(resolve_labels(str(cfg.task.labels))),
        kind=str(cfg.task.kind),
    )


EVALUATION_GROUPS = ("data", "task")  # what `qcxr.evaluate` may change in a trained run's config


def evaluation_config(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A trained run's config with its data (and task) replaced by what `overrides` compose.

    The overrides are composed with the project's config (conf/) as on the training command
    line (`data=mimic_cxr_lt`, `data.image_dir=...`, `task=cxr19`); the data and task nodes of
    that compose, resolved, replace the run's. Everything else (backbone, head, trainer, seed)
    stays the run's.

    Args:
        config: the run's resolved config (nested).
        overrides: Hydra overrides of the `data` and `task` groups and their keys only.

    Returns:
        The new resolved config (nested).

    Raises:
        ConfigError: an override of another group or key, or one Hydra cannot compose.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    others = [o for o in overrides if o.split("=", 1)[0].split(".", 1)[0] not in EVALUATION_GROUPS]
    if others:
        raise ConfigError(
            f"only data and task can change for an evaluation, got {others}: the model is the "
            "run's (give e.g. data=mimic_cxr_lt data.image_dir=... task=cxr19)"
        )
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(project_root() / "conf"), version_base=None):
            cfg = compose("config", overrides=list(overrides))
    except HydraException as err:
        raise ConfigError(f"cannot compose {list(overrides)}: {err}") from err
    out = {k: v for k, v in dict(config).items() if k != "hydra"}
    changed = {o.split("=", 1)[0].split(".", 1)[0] for o in overrides}
    for group in EVALUATION_GROUPS:
        if group in changed:
            out[group] = OmegaConf.to_container(cfg[group], resolve=True)
    return out


def rebuild_for_evaluation(config: Mapping[str, Any], cache_dir: str | None = None) -> Rebuilt:
    """Rebuild a finished run's classifier (`rebuild_model`) and data from its logged config.

    The run's `config.yaml` artifact is the config `run` logged. A key a later version added
    (for instance head.noise) is absent from an older run's config: the schemas give no default
    (their fields are MISSING), so the factory's argument default builds it, which is what the
    older code ran. Batches for evaluation come from `Rebuilt.batch_source`.

    Args:
        config: the resolved config as a nested mapping (the run's config.yaml).
        cache_dir: the cache root to use instead of the run's paths.cache_dir (the feature cache
            makes a rebuild cheap when it is the same).

    Returns:
        The Rebuilt pieces; parameters come from the run's checkpoint, not from here.

    Raises:
        ConfigError: the config cannot make a run (see `validate_config`).
    """
    model = rebuild_model(config)
    cfg = OmegaConf.create(dict(config))
    cfg.pop("hydra", None)
    cache = Path(cache_dir if cache_dir is not None else cfg.paths.cache_dir)
    backbone = model.classifier.backbone
    use_features = bool(backbone.freeze and cfg.trainer.cache_features)
    data = build(cfg.data)(**_data_kwargs(cfg, backbone, use_features, cache))
    data.prepare()
    return Rebuilt(
        classifier=model.classifier,
        model_state=model.constants,
        state_template=model.state_template,
        data=data,
        use_features=use_features,
        label_names=list(data.label_names),
        kind=model.kind,
        cache_dir=cache,
    )
