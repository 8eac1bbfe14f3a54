"""Beyond one machine (issue 15): launchers as config choices, and the mission's commands on a real
local cluster.

The tests marked `cluster` start, once per session, `scripts/local-cluster up`: munge, a
single-node SLURM cluster, PostgreSQL and an MLflow tracking server (PostgreSQL backend, artifacts
served by it), all real; `scripts/local-cluster down` stops them in a finally, and the session
fails if any of their processes is left running. They need root (the SLURM daemons; apt-get
installs slurm-wlm, munge and postgresql when missing) and skip, saying so, without it. They are
also marked slow: `pytest -m "not slow"` (the inner loop) leaves them out, `make test` runs them.

On them: a grid `head=dqc,cdl seed=0-1` as 4 SLURM jobs, landing as 4 FINISHED runs on the MLflow
server (tags with the SLURM job id, metrics, artifacts downloaded through the server), read back by
`qcxr.report`; an Optuna study on PostgreSQL driven by two sweeper processes at once and resumed by
a third, trials as SLURM jobs, summarized from the server; a trial cancelled with scancel is
recorded as failed in Optuna and KILLED in MLflow, and the study goes on.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from qcxr.quantum import make_ansatz, method_bytes
from qcxr.report.build import REPORT_EXPERIMENT
from qcxr.run import JOB_BASE_MEM_GB, register_configs, slurm_job_id
from tests.train_helpers import CONF, TINY

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local-cluster"
SUBMITIT_ID = re.compile(r"^\d+(_\d+)?$")  # a job, or an array task: <array job id>_<task>
# Tiny runs, one epoch, JAX's compilation cache shared by the jobs; 1 CPU and 2 GB per job so the
# 2-CPU node runs two jobs at once.
JOB = [
    *TINY,
    "trainer.max_epochs=1",
    "trainer.compilation_cache=true",
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
]


def _compose(overrides: list[str]):
    register_configs()
    paths = ["paths.root_dir=/tmp", "paths.output_dir=/tmp/run"]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=[*paths, *overrides], return_hydra_config=True)


# ---- launchers as config choices (no cluster needed) --------------------------------------------
def test_launcher_is_a_config_choice():
    """config.yaml pins no launcher key: every launcher composes, joblib keeps two jobs."""
    joblib = _compose([]).hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == 2
    assert joblib.backend == "loky"  # the plugin's defaults come with the schema
    basic = _compose(["hydra/launcher=basic"]).hydra.launcher
    assert basic._target_.endswith("BasicLauncher") and "n_jobs" not in basic
    slurm = _compose(["hydra/launcher=submitit_slurm"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.max_num_timeout > 0 and slurm.submitit_folder.endswith("/.submitit/%j")
    local = _compose(["hydra/launcher=submitit_local"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher")
    with pytest.raises(ConfigCompositionException, match="n_jobs"):  # joblib's key, not here
        _compose(["hydra/launcher=submitit_slurm", "hydra.launcher.n_jobs=2"])


def test_job_memory_follows_the_heads_resolved_method():
    """The request is the base plus the engine's own estimate for the method the head resolves
    (one memory model, issue 20 item 1): it used to assume a statevector for every DQC (68 GB at
    24 qubits, 4,194,308 GB at 40, where the mps method needs well under a GB)."""

    def mem(*overrides: str) -> int:
        return _compose(["hydra/launcher=submitit_slurm", *overrides]).hydra.launcher.mem_gb

    def engine_gb(n, method="auto", **options) -> tuple[str, int]:
        chosen, need = method_bytes(
            make_ansatz("ry_cnot_ring", n, 3), 32, "float32", method=method, **options
        )
        return chosen, JOB_BASE_MEM_GB + math.ceil(need / 2**30)

    assert mem("head=cdl") == mem("head=cdl", "task=cxr19") == JOB_BASE_MEM_GB == 4
    assert mem("head=qcnn") == 4  # no simulated DQC circuit: the base
    assert engine_gb(8) == ("statevector", 5) and mem("head=dqc") == 5
    assert engine_gb(24)[0] in ("split", "mps")
    assert mem("head=dqc", "ansatz.num_qubits=24") == engine_gb(24)[1] <= 6
    assert mem("head=dqc", "task=synthetic40") == engine_gb(40)[1] <= 64
    assert engine_gb(40)[0] == "mps"
    # The method matters: the statevector forced at 24 qubits asks for more than auto's.
    forced = mem("head=dqc", "ansatz.num_qubits=24", "head.method=statevector")
    assert forced == engine_gb(24, "statevector")[1] > mem("head=dqc", "ansatz.num_qubits=24")
    # A 10-qubit density matrix: 4^10 entries per sample, counted by the density method's estimate.
    noisy = ["head=dqc", "ansatz.num_qubits=10", "head.method=density_matrix"]
    dm = mem(*noisy, "head.noise.depolarizing=0.001")
    assert dm == engine_gb(10, "density_matrix", noise={"depolarizing": 0.001})[1]
    assert dm > mem("head=dqc", "ansatz.num_qubits=10") and dm >= 4 + (4**10 * 8 * 32) / 2**30
    assert mem("head=dqc", "hydra.launcher.mem_gb=3") == 3  # a plain override wins


def test_slurm_job_id_tag():
    assert slurm_job_id({}) is None
    assert slurm_job_id({"SLURM_JOB_ID": "17"}) == "17"
    # an array task is named as squeue and submitit's folders name it, not by its own job id
    array = {"SLURM_JOB_ID": "19", "SLURM_ARRAY_JOB_ID": "17", "SLURM_ARRAY_TASK_ID": "2"}
    assert slurm_job_id(array) == "17_2"


# ---- the local cluster --------------------------------------------------------------------------
@dataclass
class Cluster:
    state: Path
    env: dict[str, str]  # os.environ plus the exports of `local-cluster up`

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def storage(self) -> str:
        return self.env["QCXR_STUDY_STORAGE"]


def _exports(text: str) -> dict[str, str]:
    found = dict(re.findall(r"^export (\w+)=(\S+)$", text, flags=re.MULTILINE))
    assert {"SLURM_CONF", "MLFLOW_TRACKING_URI", "QCXR_STUDY_STORAGE"} <= set(found), text
    return found


def _left_running(state: Path) -> str:
    return subprocess.run(
        ["pgrep", "-a", "-f", str(state)], capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="session")
def cluster():
    """`scripts/local-cluster up` in a fresh folder; `down` afterwards, leaving nothing running."""
    if os.geteuid() != 0:
        pytest.skip(
            "cluster tests need root: the SLURM daemons and munged run as root, and "
            "apt-get installs slurm-wlm, munge and postgresql when missing"
        )
    # Under /tmp, world-traversable: PostgreSQL runs as the postgres user inside this folder.
    state = Path(tempfile.mkdtemp(prefix="qcxr-cluster-", dir="/tmp"))
    state.chmod(0o755)
    env = {**os.environ, "QCXR_CLUSTER_DIR": str(state), "QCXR_PYTHON": sys.executable}
    env.pop("QCXR_STUDY_STORAGE", None)
    try:
        start = time.perf_counter()
        up = subprocess.run(
            [str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=900
        )
        assert up.returncode == 0, f"local-cluster up failed:\n{up.stderr[-4000:]}"
        # idempotent: a second `up` finds everything running and prints the same exports
        again = subprocess.run(
            [str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0 and _exports(again.stdout) == _exports(up.stdout)
        print(f"local-cluster up: {time.perf_counter() - start:.1f} s")  # noqa: T201
        job_env = {**env, **_exports(up.stdout), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        yield Cluster(state, job_env)
    finally:
        down = subprocess.run(
            [str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=300
        )
        left = _left_running(state)
        if down.returncode == 0 and not left:
            shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, f"local-cluster down failed:\n{down.stderr[-4000:]}"
        assert not left, f"left running after local-cluster down:\n{left}"


def _train(cluster: Cluster, cwd: Path, *overrides: str, wait: bool = True):
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *JOB,
        f"paths.cache_dir={cwd.parent / 'cache'}",
        *overrides,
    ]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(
        cmd, cwd=cwd, env=cluster.env, capture_output=True, text=True, timeout=900
    )


def _results(sweep: Path) -> dict[str, object]:
    """submitit's result of every job under the sweep folder: {job id: JobReturn}."""
    results = {}
    for folder in sorted((sweep / ".submitit").iterdir()):
        if (
            not SUBMITIT_ID.match(folder.name)
            or not (folder / f"{folder.name}_submitted.pkl").is_file()
        ):
            continue  # an array's own folder holds only its submission script
        with open(folder / f"{folder.name}_0_result.pkl", "rb") as handle:
            outcome, value = pickle.load(handle)
        assert outcome == "success", f"job {folder.name}: {value}"
        results[folder.name] = value
    return results


def _client(cluster: Cluster):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=cluster.tracking_uri)


@pytest.mark.cluster
@pytest.mark.slow  # minutes, and apt-get where packages are missing: not the inner loop
def test_grid_as_slurm_jobs_lands_on_the_mlflow_server(cluster, tmp_path):
    import mlflow

    work = tmp_path / "work"
    work.mkdir()
    done = _train(cluster, work, "head=dqc,cdl", "seed=0-1", f"hydra.sweep.dir={tmp_path / 'g'}")
    assert done.returncode == 0, done.stderr[-4000:]

    results = _results(tmp_path / "g")
    assert len(results) == 4, sorted(results)  # one SLURM array task per (head, seed)
    assert all(r.status.name == "COMPLETED" for r in results.values())

    client = _client(cluster)
    experiment = client.get_experiment_by_name("synthetic")
    runs = client.search_runs([experiment.experiment_id], "tags.slurm_job_id != ''")
    grid = [r for r in runs if r.data.tags["slurm_job_id"] in results]
    assert len(grid) == 4
    assert {(r.data.tags["head"], r.data.tags["seed"]) for r in grid} == {
        (h, s) for h in ("dqc", "cdl") for s in ("0", "1")
    }
    for run in grid:
        assert run.info.status == "FINISHED"
        # the objective the SLURM job returned is the metric the server holds for its run
        job = results[run.data.tags["slurm_job_id"]]
        assert run.data.metrics["val/auroc_macro"] == pytest.approx(job.return_value)
        assert {"train/loss", "test/auroc_macro"} <= set(run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 1
        # artifacts live behind the server (mlflow-artifacts:), downloaded over HTTP
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "learning_curves.png", "checkpoint_best"} <= names
        config = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            artifact_path="config.yaml",
            dst_path=str(tmp_path / "dl"),
            tracking_uri=cluster.tracking_uri,
        )
        assert f"seed: {run.data.tags['seed']}" in Path(config).read_text()
    assert not (work / "mlruns").exists()  # nothing went to a local store
    assert any((cluster.state / "mlflow" / "artifacts").rglob("learning_curves.png"))

    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "qcxr.report",
            "--tracking-uri",
            cluster.tracking_uri,
            "--experiment",
            "synthetic",
            "--filter",
            "tags.slurm_job_id != ''",
            "--out",
            str(tmp_path / "report"),
        ],
        cwd=work,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-4000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "dqc" in text.lower() and "cdl" in text.lower()
    # the report run went to the server too, its files behind it
    reports = client.get_experiment_by_name(REPORT_EXPERIMENT)
    (report_run,) = client.search_runs([reports.experiment_id], "tags.report = 'true'")
    assert "report.md" in {a.path for a in client.list_artifacts(report_run.info.run_id)}


def _trial_numbers(folder: Path) -> list[int]:
    """The Optuna trial of every job under a sweep folder, from the overrides Hydra saved."""
    found = []
    for path in folder.rglob(".hydra/overrides.yaml"):
        lines = dict(line[2:].split("=", 1) for line in path.read_text().splitlines())
        found.append(int(lines["trial"]))
    return found


@pytest.mark.cluster
@pytest.mark.slow  # minutes, and apt-get where packages are missing: not the inner loop
def test_study_on_postgres_two_sweepers_then_resume(cluster, tmp_path):
    import optuna
    from optuna.trial import TrialState

    work = tmp_path / "work"
    work.mkdir()
    study = [
        "sweep=dqc_tuning",
        f"hydra.sweeper.storage={cluster.storage}",
        "hydra.sweeper.n_jobs=1",
    ]
    workers = [
        _train(
            cluster,
            work,
            *study,
            "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.sampler.seed={k}",
            f"hydra.sweep.dir={tmp_path / f'w{k}'}",
            wait=False,
        )
        for k in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err[-4000:]
    trials = optuna.load_study(study_name="dqc_tuning", storage=cluster.storage).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # n_trials=2 each, none lost
    jobs = _trial_numbers(tmp_path / "w0") + _trial_numbers(tmp_path / "w1")
    assert sorted(jobs) == [0, 1, 2, 3]  # every trial ran once, in one of the two processes
    assert len(_results(tmp_path / "w0")) == len(_results(tmp_path / "w1")) == 2

    third = _train(
        cluster, work, *study, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path / 'w2'}"
    )
    assert third.returncode == 0, third.stderr[-4000:]
    loaded = optuna.load_study(study_name="dqc_tuning", storage=cluster.storage)
    trials = loaded.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert _trial_numbers(tmp_path / "w2") == [4]
    assert all(t.state == TrialState.COMPLETE for t in trials)

    client = _client(cluster)
    experiment = client.get_experiment_by_name("synthetic")
    runs = {
        r.data.tags["trial"]: r
        for r in client.search_runs([experiment.experiment_id], "tags.study = 'dqc_tuning'")
        if "summary" not in r.data.tags  # the summary run comes later; none yet
    }
    assert sorted(runs) == ["0", "1", "2", "3", "4"]
    for t in trials:
        run = runs[str(t.number)]
        assert run.info.run_id == t.user_attrs["qcxr:mlflow_run_id"]
        assert run.info.status == "FINISHED" and run.data.tags["slurm_job_id"]
        assert run.data.metrics["val/auroc_macro"] == pytest.approx(t.value)

    summary = subprocess.run(
        [
            sys.executable,
            "-m",
            "qcxr.study",
            "summarize",
            "dqc_tuning",
            "--storage",
            cluster.storage,
            "--tracking-uri",
            cluster.tracking_uri,
            "--out",
            str(tmp_path / "summary"),
        ],
        cwd=work,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert summary.returncode == 0, summary.stderr[-4000:]
    (summary_run,) = client.search_runs([experiment.experiment_id], "tags.summary = 'true'")
    assert summary_run.data.metrics["study/best_value"] == pytest.approx(loaded.best_value)
    assert "summary.md" in {a.path for a in client.list_artifacts(summary_run.info.run_id)}
    # the storage URL is logged without its password
    password = cluster.storage.split(":")[2].split("@")[0]
    assert password not in summary_run.data.tags["storage"]
    assert "127.0.0.1" in summary_run.data.tags["storage"]


@pytest.mark.cluster
@pytest.mark.slow  # minutes, and apt-get where packages are missing: not the inner loop
def test_scancelled_trial_fails_alone_and_its_run_is_not_left_running(cluster, tmp_path):
    """scancel of a running trial: Optuna records FAIL, MLflow KILLED with SLURM's reason, and
    the study goes on to its next trial."""
    import optuna
    from optuna.trial import TrialState

    work = tmp_path / "work"
    work.mkdir()
    sweep = tmp_path / "s"
    # Long enough to be cancelled mid-run (no early stop), one trial at a time.
    worker = _train(
        cluster,
        work,
        "sweep=dqc_tuning",
        "hydra.sweeper.study_name=cancelled",
        f"hydra.sweeper.storage={cluster.storage}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "trainer.max_epochs=30",
        "trainer.patience=30",
        f"hydra.sweep.dir={sweep}",
        wait=False,
    )
    run_id_file = sweep / "trial_0" / "tracker_run_id.txt"
    deadline = time.monotonic() + 600
    while not run_id_file.is_file():  # the trial's MLflow run is open: cancel its job now
        assert worker.poll() is None, worker.communicate()[1][-4000:]
        assert time.monotonic() < deadline, "trial 0 never opened its MLflow run"
        time.sleep(0.5)
    queue = subprocess.run(
        ["squeue", "-h", "-t", "R", "-o", "%i"],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(queue) == 1, queue
    subprocess.run(["scancel", queue[0]], env=cluster.env, check=True)
    _, err = worker.communicate(timeout=900)
    assert worker.returncode == 0, err[-4000:]

    trials = optuna.load_study(study_name="cancelled", storage=cluster.storage).get_trials()
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.FAIL), (1, TrialState.COMPLETE)]
    client = _client(cluster)
    killed = client.get_run(run_id_file.read_text().strip())
    assert killed.info.status == "KILLED"
    assert killed.data.tags["trial"] == "0" and killed.data.tags["slurm_job_id"] == queue[0]
    assert "CANCELLED" in killed.data.tags["end_reason"]
    (done,) = client.search_runs(
        [killed.info.experiment_id], "tags.study = 'cancelled' and tags.trial = '1'"
    )
    assert done.info.status == "FINISHED"


@pytest.mark.cluster
@pytest.mark.slow  # minutes, and apt-get where packages are missing: not the inner loop
def test_requeued_job_resumes_from_its_checkpoint(cluster, tmp_path):
    """`scontrol requeue` of a running job (what preemption does): it restarts in its run folder,
    resumes from its latest Orbax checkpoint into the same MLflow run, and ends with the metrics
    of its uninterrupted twin."""
    work = tmp_path / "work"
    work.mkdir()
    sweep = tmp_path / "r"
    worker = _train(
        cluster,
        work,
        "head=cdl",
        "seed=0",
        "+tags.copy=requeued,twin",
        "trainer.max_epochs=20",
        "trainer.patience=20",
        f"hydra.sweep.dir={sweep}",
        wait=False,
    )
    deadline = time.monotonic() + 600
    latest: list[Path] = []
    while not latest:  # the requeued copy (job 0) has saved its first epoch
        assert worker.poll() is None, worker.communicate()[1][-4000:]
        assert time.monotonic() < deadline, "job 0 saved no checkpoint"
        latest = [p for p in sweep.glob("0_*/checkpoints/latest/*") if p.name.isdigit()]
        time.sleep(0.2)
    (task,) = [p.name for p in (sweep / ".submitit").glob("*_0")]
    assert slurm_state_of(cluster, task) == "RUNNING"
    subprocess.run(["scontrol", "requeue", task], env=cluster.env, check=True)
    _start_requeued_now(cluster, task)
    _, err = worker.communicate(timeout=900)
    assert worker.returncode == 0, err[-4000:]

    client = _client(cluster)
    experiment = client.get_experiment_by_name("synthetic")
    runs = {
        r.data.tags["copy"]: r
        for r in client.search_runs([experiment.experiment_id], "tags.copy != ''")
    }
    assert sorted(runs) == ["requeued", "twin"]  # the requeued job made no second run
    requeued, twin = runs["requeued"], runs["twin"]
    (out_dir,) = sweep.glob("0_*")
    assert requeued.info.run_id == (out_dir / "tracker_run_id.txt").read_text().strip()
    assert requeued.info.status == twin.info.status == "FINISHED"
    logs = "".join(
        p.read_text(errors="replace")
        for p in [*out_dir.glob("*.log"), *(sweep / ".submitit").rglob("*.out")]
    )
    assert "resuming from" in logs
    for key in ("train/epochs_run", "val/auroc_macro", "test/auroc_macro", "val/loss"):
        assert requeued.data.metrics[key] == pytest.approx(twin.data.metrics[key], abs=1e-6), key


def _start_requeued_now(cluster: Cluster, job_id: str) -> None:
    """Let a requeued job start again at once. SLURM holds a requeued job back (squeue reason
    BeginTime) for AuthInfo's cred_expire, 120 s by default (slurm.conf(5)); what the test checks
    is the resume, not that wait, which was two thirds of its time."""
    deadline = time.monotonic() + 300
    left_running = False
    while True:
        state, _, reason = (
            subprocess.run(
                ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T %r"],
                env=cluster.env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .partition(" ")
        )
        if state == "PENDING" and reason == "BeginTime":
            subprocess.run(
                ["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                env=cluster.env,
                check=True,
            )
            return
        left_running = left_running or state != "RUNNING"
        if left_running and state == "RUNNING":
            return  # started again without being held back
        assert time.monotonic() < deadline, f"requeued job {job_id} stuck: {state} {reason}"
        time.sleep(0.2)


def slurm_state_of(cluster: Cluster, job_id: str) -> str:
    done = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()
