"""`hydra/sweeper: optuna_study`: Hydra's Optuna sweeper (1.4.0rc3) with what qcxr's studies need.

Selected by every `sweeps/<study>.yaml`. On top of the upstream sweeper it
- tags each job with the study and the Optuna trial number (overrides `study=<name>
  trial=<number>`, which run.py turns into MLflow tags), so trial N in Optuna is the run tagged
  trial=N in MLflow, across resumed and parallel invocations;
- defaults the storage to `sqlite:///<repo>/sweeps/<study_name>.db` (beside the study file), makes
  the SQLite folder, and waits on a locked SQLite file instead of failing;
- seeds the sampler with `seed + trials already in the study`, so resuming a study samples new
  points rather than repeating the first invocation's;
- keeps going when trials fail (`max_failure_rate: 1.0`): a job that raises (non-finite loss,
  out of memory, any error) is told to Optuna as FAIL; a launcher that dies (a worker killed by
  the OOM killer) fails its batch instead of the study; Ctrl-C marks the running batch FAIL;
- ends with a clear error when no trial of the study has ever completed.

The implementation (which imports optuna) lives in `_study_impl.py`; Hydra's plugin scan skips
modules starting with `_`, so runs that use no study do not pay for importing optuna.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig


class OptunaStudySweeper(Sweeper):
    """Hydra's Optuna sweeper with trial tags, a default SQLite storage and failure tolerance."""

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
        from hydra_plugins.qcxr_sweeper._study_impl import OptunaStudySweeperImpl

        self.sweeper = OptunaStudySweeperImpl(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            custom_search_space,
            params,
        )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)


@dataclass
class OptunaStudySweeperConf(OptunaSweeperConf):
    """Config of `hydra/sweeper: optuna_study` (the upstream keys; see sweeps/*.yaml)."""

    _target_: str = "hydra_plugins.qcxr_sweeper.optuna_study.OptunaStudySweeper"
    max_failure_rate: float = 1.0  # a failed trial never stops the study


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna_study", node=OptunaStudySweeperConf, provider="qcxr"
)
