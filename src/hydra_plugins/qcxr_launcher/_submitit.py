"""`hydra/launcher: submitit_slurm | submitit_local`: Hydra's submitit launchers (1.4.0rc3) that
account for every job, including the ones killed from outside.

Upstream collects the jobs' results in order and raises at the first job that produced none, so
one `scancel`led job (or one killed at its time limit, by the OOM killer, or with its node) ends
the whole batch: the results of the other jobs are lost to the sweeper, and the killed job's
MLflow run stays RUNNING forever, because the process that would have closed it is gone. Here
`launch` waits for every job; a job without a result becomes a FAILED JobReturn (the sweeper
records it: the Optuna study marks the trial FAIL and goes on, a grid fails with the reason), and
its tracker run, if it had opened one, is ended KILLED (cancelled) or FAILED (anything else) with
the reason from SLURM's own message in the job log as the tag `end_reason`. The SLURM launcher
learns that a job ended from squeue, not only from sacct as submitit does, so it also works on
clusters without accounting (sacct unavailable), where submitit waits forever for a killed job.

Hydra finds these classes through `submitit_launchers.py`, which imports them only when the
submitit plugin (the `cluster` extra) is installed; the launcher configs name them as targets.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    LocalLauncher as _UpstreamLocal,
)
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as _UpstreamSlurm,
)
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

# slurmstepd's notice in the job log: "*** JOB 12 ON node CANCELLED AT 2026-... ***",
# "... DUE TO TIME LIMIT ***", "... DUE TO NODE FAILURE ***"
_SLURM_NOTICE = re.compile(r"\*\*\* ((?:JOB|STEP) .*?) \*\*\*")


class JobEndedError(RuntimeError):
    """A job that ended without a result (killed from outside), with the reason."""


# squeue states of a job that may still write its result (a preempted job may be requeued).
_ACTIVE_STATES = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "STOPPED",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "PREEMPTED",
    "UNREACHABLE",
}
RESULT_GRACE_S = 10  # a result written as the job ends may show late on a shared file system
_MAX_POLL_S = 15


def slurm_state(job_id: str) -> str:
    """The job's state as squeue reports it; "" once the controller has forgotten the job (ended
    more than MinJobAge ago), "UNREACHABLE" when squeue fails otherwise."""
    done = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        return "" if "Invalid job id" in done.stderr else "UNREACHABLE"
    lines = done.stdout.split()
    return lines[0] if lines else ""


def _end_reason(job: Any, err: Exception | None, state: str | None = None) -> str:
    """SLURM's notice from the job's log if there is one, else the state or submitit's error."""
    for path in (job.paths.stderr, job.paths.stdout):
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        notices = _SLURM_NOTICE.findall(text)
        if notices:
            return f"SLURM job {job.job_id}: {notices[-1]}"
    if err is None:
        return f"SLURM job {job.job_id} ended {state or 'and left the queue'} without a result"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"job {job.job_id} ended without a result: {first}"


class _AccountedMixin:
    """`launch` of the upstream launcher, except that every job's outcome is collected."""

    _EXECUTOR: str

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        # From here to map_array: upstream's launch (hydra-submitit-launcher 1.4.0rc3) unchanged.
        params = self.params
        init_params = {"folder": self.params["submitit_folder"]}
        specific_init_keys = {"max_num_timeout", "python"}
        init_params.update(
            **{f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x in specific_init_keys}
        )
        init_keys = specific_init_keys | {"submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        params = {
            x if x in baseparams else f"{self._EXECUTOR}_{x}": y
            for x, y in params.items()
            if x not in init_keys
        }
        executor.update_parameters(**params)
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, self.config.hydra.sweep.dir)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append(
                (
                    list(overrides),
                    "hydra.sweep.dir",
                    idx,
                    f"job_id_for_{idx}",
                    Singleton.get_state(),
                )
            )
        jobs = executor.map_array(self, *zip(*job_params, strict=True))
        return [self._outcome(job, p[0], p[2]) for job, p in zip(jobs, job_params, strict=True)]

    def _wait(self, job: Any) -> str | None:
        """Wait for the job to end: None when it left a result, else its last state."""
        return None

    def _outcome(self, job: Any, overrides: list[str], idx: int) -> JobReturn:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        state = self._wait(job)
        if state is None:
            try:
                return job.results()[0]
            except (UncompletedJobError, FailedJobError) as err:
                reason = _end_reason(job, err)
        else:
            reason = _end_reason(job, None, state)
        log.error("%s", reason)
        status = "KILLED" if "CANCELLED" in reason else "FAILED"
        try:
            self._end_run(overrides, idx, status, reason)
        except Exception:  # noqa: BLE001 - bookkeeping; the job's failure is reported below
            log.exception("could not close the tracker run of job %s", job.job_id)
        return JobReturn(
            overrides=overrides, status=JobStatus.FAILED, _return_value=JobEndedError(reason)
        )

    def _end_run(self, overrides: list[str], idx: int, status: str, reason: str) -> None:
        from qcxr.run import end_abandoned_run

        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.num = idx
        # The job's folder as run_job computed it in the job: the subdir may use hydra resolvers
        # (override_dirname), which read the HydraConfig singleton, so it is set for the lookup.
        hydra_config = HydraConfig.instance()
        previous = hydra_config.cfg
        hydra_config.set_config(config)
        try:
            out_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
            run_id = end_abandoned_run(config, out_dir, status, reason)
        finally:
            hydra_config.cfg = previous
        if run_id is not None:
            log.warning("tracker run %s of %s marked %s", run_id, out_dir, status)


class SlurmLauncher(_AccountedMixin, _UpstreamSlurm):
    """Hydra's submitit SLURM launcher; every job accounted for (see the module docstring)."""

    def _wait(self, job: Any) -> str | None:
        # submitit learns that a job ended from sacct; without SLURM accounting (a small cluster,
        # the local test cluster) a job that died without a result looks RUNNING forever, and
        # submitit would wait forever. squeue knows without accounting.
        delay = 1.0
        while True:
            if job.paths.result_pickle.exists():
                return None
            state = slurm_state(job.job_id)
            if state not in _ACTIVE_STATES:
                deadline = time.monotonic() + RESULT_GRACE_S
                while time.monotonic() < deadline:
                    if job.paths.result_pickle.exists():
                        return None
                    time.sleep(1.0)
                return state
            time.sleep(delay)
            delay = min(delay * 1.5, _MAX_POLL_S)


class LocalLauncher(_AccountedMixin, _UpstreamLocal):
    """Hydra's submitit local launcher; every job accounted for (see the module docstring)."""
