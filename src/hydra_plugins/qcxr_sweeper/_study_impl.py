"""Implementation of `hydra/sweeper: optuna_study` (see optuna_study.py); imports optuna."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import optuna
import sqlalchemy
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import Trial, TrialState

from hydra_plugins.qcxr_sweeper.sweeps_source import SCHEME

log = logging.getLogger(__name__)

TAG_KEYS = ("study", "trial")  # top-level run keys the sweeper sets for every job (MLflow tags)
# Trial user attributes the sweeper adds. The upstream sweeper stores a study's fixed overrides as
# user attributes named by their keys; a ':' never occurs in an override key, so these cannot
# collide with them.
ATTR_OUTPUT_DIR = "qcxr:output_dir"
ATTR_RUN_ID = "qcxr:mlflow_run_id"
RUN_ID_FILE = "tracker_run_id.txt"  # written by qcxr.run into the job's output dir
SQLITE_TIMEOUT_S = 120  # several workers on one SQLite file: wait for the lock, do not fail
RDB_CREATE_ATTEMPTS = 5  # several workers opening one new server database (make_storage)


class StudyFailedError(RuntimeError):
    """No trial of the study has completed, so it has no best value."""


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:///` URL, else None."""
    parsed = urlparse(url)
    if parsed.scheme != "sqlite" or not parsed.path or parsed.path == "/:memory:":
        return None
    return Path(unquote(parsed.path))


def default_storage(config: DictConfig, study_name: str) -> str:
    """`sqlite:///<sweeps folder>/<study_name>.db`: the folder the study's config came from.

    Args:
        config: the primary config (its `hydra.runtime.config_sources` lists the sweeps folder).
        study_name: the study's name.

    Returns:
        An absolute SQLite URL.

    Raises:
        ValueError: no sweeps folder is on the search path (set `hydra.sweeper.storage`).
    """
    for source in config.hydra.runtime.config_sources:
        if source.schema == SCHEME:
            return f"sqlite:///{Path(source.path).resolve() / f'{study_name}.db'}"
    raise ValueError(
        "hydra.sweeper.storage is not set and no sweeps/ folder is on the search "
        "path; set hydra.sweeper.storage to a database URL"
    )


@contextlib.contextmanager
def _file_lock(db: Path | None):
    if db is None:
        yield
        return
    with open(db.with_suffix(db.suffix + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage on `url`; SQLite files get their folder and a long busy timeout.

    Two processes that open a new database at once would both create its tables. For a SQLite
    file that happens under a file lock beside it. A server database (PostgreSQL, MySQL) has no
    file to lock: the loser of the race gets an integrity error from its CREATE (PostgreSQL:
    "duplicate key value violates unique constraint pg_type_typname_nsp_index") and opens the
    storage again, which then finds the tables.
    """
    db = sqlite_file(url)
    kwargs: dict[str, Any] = {}
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        with _file_lock(db):
            return optuna.storages.RDBStorage(url, **kwargs)
    for attempt in range(RDB_CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except sqlalchemy.exc.IntegrityError as err:
            if attempt == RDB_CREATE_ATTEMPTS - 1:
                raise
            log.warning(
                "another process is creating the study tables (%s); retrying",
                str(err).splitlines()[0],
            )
            time.sleep(0.2 * (attempt + 1) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def trials_in_storage(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """How many trials (any state) the study already has; 0 when it does not exist yet."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


class _FailSafeLauncher:
    """Wraps the launcher: a launch that raises fails its batch of trials, not the study."""

    def __init__(self, launcher: Any, sweeper: OptunaStudySweeperImpl) -> None:
        self.launcher = launcher
        self.sweeper = sweeper

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        try:
            returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        except Exception as err:  # noqa: BLE001 - e.g. loky's TerminatedWorkerError (OOM kill)
            log.error(
                "launching %d trial(s) failed (%s: %s); they are recorded as failed",
                len(job_overrides),
                type(err).__name__,
                err,
            )
            return [
                JobReturn(overrides=list(o), status=JobStatus.FAILED, _return_value=err)
                for o in job_overrides
            ]
        except BaseException:
            self.sweeper.fail_pending("interrupted")
            raise
        self.sweeper.link_outputs(returns)
        return returns

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)


class OptunaStudySweeperImpl(OptunaSweeperImpl):
    """The upstream implementation plus trial tags, storage, reseeding and failure handling."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        super().__init__(
            None,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            custom_search_space,
            params,
        )
        self.sampler_config = sampler
        self._pending: list[Trial] = []

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if not self.study_name:
            raise ValueError("an Optuna study needs hydra.sweeper.study_name")
        url = self.storage or default_storage(config, self.study_name)
        self.storage_url = str(url)
        self.storage = make_storage(self.storage_url)
        self.launcher = _FailSafeLauncher(self.launcher, self)

    def _make_sampler(self, offset: int) -> Any:
        conf = OmegaConf.create(OmegaConf.to_container(self.sampler_config, resolve=True))
        if conf.get("seed") is not None:
            with open_dict(conf):
                conf.seed = int(conf.seed) + offset
        return instantiate(
            conf,
            _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"),
        )

    def _configure_trials(
        self,
        trials: list[Trial],
        search_space_distributions: dict,
        fixed_params: dict[str, Any],
        fixed_overrides: list[str],
    ):
        fixed = {k: v for k, v in fixed_params.items() if k not in TAG_KEYS}
        overrides = super()._configure_trials(
            trials, search_space_distributions, fixed, fixed_overrides
        )
        self._pending = list(trials)
        metric = self.config.get("optimized_metric")
        if trials and metric is not None:
            trials[0].study.set_user_attr("optimized_metric", str(metric))
        return [
            (*o, f"study={t.study.study_name}", f"trial={t.number}")
            for t, o in zip(trials, overrides, strict=True)
        ]

    def link_outputs(self, returns: Sequence[JobReturn]) -> None:
        """Record each trial's output dir and MLflow run id as trial user attributes."""
        for trial, ret in zip(self._pending, returns, strict=False):
            with contextlib.suppress(Exception):  # bookkeeping only: never fail the study
                output_dir = ret.hydra_cfg.hydra.runtime.output_dir
                trial.set_user_attr(ATTR_OUTPUT_DIR, str(output_dir))
                run_id = Path(output_dir, RUN_ID_FILE)
                if run_id.is_file():
                    trial.set_user_attr(ATTR_RUN_ID, run_id.read_text().strip())

    def fail_pending(self, reason: str) -> None:
        """Tell Optuna that the trials of the batch being run failed (e.g. on Ctrl-C)."""
        for trial in self._pending:
            with contextlib.suppress(Exception):
                trial.study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d marked failed: %s", trial.number, reason)
        self._pending = []

    def sweep(self, arguments: list[str]) -> None:
        existing = trials_in_storage(self.storage, self.study_name)
        self.sampler = self._make_sampler(existing)
        log.info(
            "study %s in %s: %d trial(s) so far, %d to add",
            self.study_name,
            self.storage_url,
            existing,
            self.n_trials,
        )
        try:
            super().sweep(arguments)
        except ValueError as err:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            states = [t.state for t in study.get_trials(deepcopy=False)]
            if TrialState.COMPLETE in states or TrialState.FAIL not in states:
                raise  # not the "no completed trial" error of study.best_trial
            raise StudyFailedError(
                f"no trial of study {self.study_name} completed ({states.count(TrialState.FAIL)}"
                f" failed); see the FAILED runs tagged study={self.study_name} in MLflow and "
                f"the job logs under {self.config.hydra.sweep.dir}"
            ) from err
        finally:
            self._pending = []
