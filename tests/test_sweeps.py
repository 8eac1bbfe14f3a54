"""Optuna studies (issue 5): the sweeps/ configs, the study sweeper and `python -m qcxr.study`.

The sweeper's mechanics (resume, trial tags, failures, parallel workers on one SQLite study) are
tested on a toy Hydra app (tests/sweep_app/: no training, seconds per study); one slow test runs a
real study through train.py end to end: trials in the study, runs in MLflow with their tags,
resume, a forced failure, and the summary run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.qcxr_sweeper._study_impl import default_storage
from qcxr.run import register_configs
from qcxr.study import best_overrides, summarize, write_summary
from tests.train_helpers import CONF, TINY

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"
APP = ROOT / "tests" / "sweep_app" / "app.py"
TUNING = ("dqc_tuning", "cdl_tuning")
OPTIMIZERS = {"adam", "adamw", "lion", "lamb", "adafactor"}
QUANTUM_KEYS = {"ansatz", "ansatz.num_layers", "ansatz.init", "ansatz.encoding"}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "QCXR_STUDY_STORAGE"}
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    return env


def _compose(tmp_path: Path, overrides: list[str]):
    register_configs()
    paths = [
        f"paths.root_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / 'run'}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=[*paths, *overrides], return_hydra_config=True)


def _space(cfg) -> dict:
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    distributions, fixed, _ = create_params_from_overrides(params)
    return {**distributions, **fixed}


# ---- the study configs --------------------------------------------------------------------------
def test_studies_present_and_storage_ignored():
    assert {*TUNING, "fair_comparison"} <= {p.stem for p in SWEEPS.glob("*.yaml")}
    for name in ("sweeps/dqc_tuning.db", "sweeps/dqc_tuning.db.lock"):
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT)
        assert ignored.returncode == 0, f"{name} must be git-ignored"


@pytest.mark.parametrize("study", TUNING)
def test_tuning_study_config(tmp_path, study):
    cfg = _compose(tmp_path, [f"sweep={study}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaStudySweeper")
    assert sweeper.study_name == study and sweeper.direction == "maximize"
    assert sweeper.max_failure_rate == 1.0 and isinstance(sweeper.sampler.seed, int)
    assert cfg.optimized_metric == "val/auroc_macro" and cfg.backbone.freeze is True
    space = _space(cfg)
    lr = space["optimizer.learning_rate"]
    assert isinstance(lr, FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-5, 1e-1)
    assert set(space["optimizer"].choices) == OPTIMIZERS
    assert set(space["trainer.batch_size"].choices) == {16, 32, 64}
    assert space["head"] == study.removesuffix("_tuning")
    if study == "dqc_tuning":
        layers = space["ansatz.num_layers"]
        assert isinstance(layers, IntDistribution) and (layers.low, layers.high) == (1, 8)
        assert set(space["ansatz"].choices) == {
            "ry_cnot_ring",
            "strongly_entangling",
            "basic_entangler",
        }
        assert set(space["ansatz.init"].choices) == {"normal_2pi", "uniform_2pi", "small"}
    else:
        assert not QUANTUM_KEYS & set(space)


@pytest.mark.parametrize("study", TUNING)
def test_every_search_space_value_composes(tmp_path, study):
    """Each choice (and each end of each range) is a valid override that builds its ansatz."""
    space = _space(_compose(tmp_path, [f"sweep={study}"]))
    head = [f"head={space['head']}"]
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values = dist.choices
        elif isinstance(dist, IntDistribution | FloatDistribution):
            values = (dist.low, dist.high)
        else:
            continue
        for value in values:
            cfg = _compose(tmp_path, [f"sweep={study}", *head, f"{key}={value}"])
            if key.startswith("ansatz"):
                instantiate(cfg.head.ansatz, _execution_whitelist_=["qcxr.*"])


def test_default_storage_is_beside_the_study(tmp_path):
    cfg = _compose(tmp_path, ["sweep=dqc_tuning"])
    assert default_storage(cfg, "dqc_tuning") == f"sqlite:///{SWEEPS / 'dqc_tuning.db'}"


def test_fair_comparison_recipe(tmp_path):
    text = (SWEEPS / "fair_comparison.yaml").read_text()
    for needle in ("sweep=$s", "python -m qcxr.study best", "seed=0-4", "n_trials="):
        assert needle in text, needle
    cfg = _compose(tmp_path, ["sweep=fair_comparison", "head=cdl"])
    assert cfg.hydra.sweeper._target_.endswith("RangeSweeper")
    assert cfg.study == "fair_comparison" and cfg.backbone.freeze is True


# ---- the sweeper's mechanics on the toy app -----------------------------------------------------
def _toy(tmp_path: Path, storage: str, *overrides: str, name: str = "mr", wait: bool = True):
    cmd = [
        sys.executable,
        str(APP),
        "-m",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={tmp_path / name}",
        *overrides,
    ]
    kwargs = {"cwd": tmp_path, "env": _env(tmp_path), "capture_output": True, "text": True}
    if not wait:
        return subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=_env(tmp_path),
        )
    return subprocess.run(cmd, timeout=300, **kwargs)


def _job_trials(folder: Path) -> list[tuple[str, int]]:
    """(study, trial) of every job under a sweep folder, from the overrides Hydra saved."""
    found = []
    for path in folder.rglob(".hydra/overrides.yaml"):
        lines = dict(line[2:].split("=", 1) for line in path.read_text().splitlines())
        found.append((lines["study"], int(lines["trial"])))
    return found


@pytest.mark.slow
def test_toy_study_resume_and_trial_tags(tmp_path):
    storage = f"sqlite:///{tmp_path / 'toy.db'}"
    first = _toy(tmp_path, storage, "hydra.sweeper.n_trials=3", name="a")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _toy(tmp_path, storage, "hydra.sweeper.n_trials=2", name="b")
    assert second.returncode == 0, second.stderr[-3000:]
    trials = optuna.load_study(study_name="toy", storage=storage).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # every job carried study/trial = its Optuna trial; the output dir is recorded on the trial
    assert sorted(_job_trials(tmp_path / "a") + _job_trials(tmp_path / "b")) == [
        ("toy", n) for n in range(5)
    ]
    assert all(Path(t.user_attrs["qcxr:output_dir"]).name == f"trial_{t.number}" for t in trials)
    # the resumed invocation sampled new points (sampler seeded with seed + trials so far)
    assert len({t.params["x"] for t in trials}) == 5


@pytest.mark.parametrize("mode", ["raise", pytest.param("return_nan", marks=pytest.mark.slow)])
def test_toy_failed_trials_recorded_and_study_finishes(tmp_path, mode):
    storage = f"sqlite:///{tmp_path / 'toy.db'}"
    done = _toy(
        tmp_path, storage, "hydra.sweeper.n_trials=4", "fail_above=0.2", f"fail_mode={mode}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name="toy", storage=storage).get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 4 and TrialState.FAIL in states and TrialState.COMPLETE in states
    assert all((t.state == TrialState.FAIL) == (t.params["x"] > 0.2) for t in trials)
    # a trial after the first failure still ran: the study went on
    first_fail = states.index(TrialState.FAIL)
    assert first_fail < len(trials) - 1


def test_toy_study_without_a_completed_trial_fails_clearly(tmp_path):
    storage = f"sqlite:///{tmp_path / 'toy.db'}"
    done = _toy(tmp_path, storage, "hydra.sweeper.n_trials=2", "fail_above=-5")
    assert done.returncode != 0
    assert "no trial of study toy completed" in done.stderr
    trials = optuna.load_study(study_name="toy", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]


@pytest.mark.slow
def test_toy_parallel_workers_on_one_sqlite_study_lose_no_trial(tmp_path):
    """Two processes at once on one new SQLite file, one of them with two joblib workers."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [
        _toy(tmp_path, storage, "hydra.sweeper.n_trials=8", "sleep_s=0.05", name="w0", wait=False),
        _toy(
            tmp_path,
            storage,
            "hydra.sweeper.n_trials=8",
            "sleep_s=0.05",
            "hydra.sweeper.sampler.seed=1",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_jobs=2",
            name="w1",
            wait=False,
        ),
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="toy", storage=storage).get_trials()
    assert sorted(t.number for t in trials) == list(range(16))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    jobs = _job_trials(tmp_path / "w0") + _job_trials(tmp_path / "w1")
    assert sorted(n for _, n in jobs) == list(range(16))


# ---- summary ------------------------------------------------------------------------------------
def _fake_study(storage: str) -> optuna.Study:
    """Four trials as the sweeper leaves them (fixed overrides and run ids as user attributes)."""
    study = optuna.create_study(study_name="fake", storage=storage, direction="maximize")
    study.set_user_attr("optimized_metric", "val/auroc_macro")
    dists = {
        "optimizer": CategoricalDistribution(["adam", "lion"]),
        "optimizer.learning_rate": FloatDistribution(1e-5, 1e-1, log=True),
    }
    for i, (opt, lr, value) in enumerate(
        [("adam", 1e-3, 0.61), ("lion", 1e-4, 0.66), ("adam", 1e-2, None), ("lion", 3e-4, 0.64)]
    ):
        attrs = {
            "head": "dqc",
            "sweep": "dqc_tuning",
            "data.num_train": 64,
            "qcxr:mlflow_run_id": f"run{i}",
        }
        state = TrialState.FAIL if value is None else TrialState.COMPLETE
        study.add_trial(
            optuna.trial.create_trial(
                params={"optimizer": opt, "optimizer.learning_rate": lr},
                distributions=dists,
                value=value,
                state=state,
                user_attrs=attrs,
            )
        )
    return study


def test_summary_files_and_best_overrides(tmp_path):
    study = _fake_study(f"sqlite:///{tmp_path / 'fake.db'}")
    summary = summarize(study)
    assert summary.num_trials == {"COMPLETE": 3, "FAIL": 1}
    assert (summary.best_value, summary.best_trial, summary.best_run_id) == (0.66, 1, "run1")
    assert best_overrides(study) == [
        "data.num_train=64",
        "head=dqc",
        "optimizer=lion",
        "optimizer.learning_rate=0.0001",
    ]
    assert summary.importances is not None
    assert set(summary.importances) == {"optimizer", "optimizer.learning_rate"}
    files = {p.name for p in write_summary(study, summary, tmp_path / "out")}
    assert {
        "summary.json",
        "summary.md",
        "trials.csv",
        "optimization_history.png",
        "param_importances.png",
        "parallel_coordinate.png",
    } <= files
    assert "seed=0-4" in (tmp_path / "out" / "summary.md").read_text()


# ---- the real thing -----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_study_runs_resumes_fails_and_summarizes(tmp_path):
    """train.py from another folder: 3 trials, then a resume whose 2 trials are forced to fail."""
    from qcxr.study.__main__ import main as study_main
    from tests.train_helpers import mlflow_client

    storage = f"sqlite:///{tmp_path / 'studies' / 'cdl_tuning.db'}"
    base = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "sweep=cdl_tuning",
        f"hydra.sweeper.storage={storage}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *TINY,
        "trainer.max_epochs=1",
        "trainer.compilation_cache=true",
        # one trial at a time in this process (parallel workers: the toy tests above)
        "hydra.launcher.n_jobs=1",
        "hydra.sweeper.n_jobs=1",
    ]
    run = {
        "cwd": tmp_path,
        "env": _env(tmp_path),
        "capture_output": True,
        "text": True,
        "timeout": 600,
    }
    first = subprocess.run(
        [*base, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={tmp_path / 'a'}"], **run
    )
    assert first.returncode == 0, first.stderr[-4000:]
    # resume; the metric does not exist, so both trials fail (one after the other) after training
    second = subprocess.run(
        [
            *base,
            "hydra.sweeper.n_trials=2",
            "optimized_metric=val/no_such_metric",
            f"hydra.sweep.dir={tmp_path / 'b'}",
        ],
        **run,
    )
    assert second.returncode == 0, second.stderr[-4000:]

    study = optuna.load_study(study_name="cdl_tuning", storage=storage)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL] * 2

    client = mlflow_client(tmp_path)
    experiment = client.get_experiment_by_name("synthetic")
    runs = {
        r.data.tags["trial"]: r
        for r in client.search_runs([experiment.experiment_id], "tags.study = 'cdl_tuning'")
    }
    assert sorted(runs) == ["0", "1", "2", "3", "4"]
    for t in trials:
        r = runs[str(t.number)]
        assert r.info.run_id == t.user_attrs["qcxr:mlflow_run_id"]
        assert r.data.tags["head"] == "cdl"
        assert r.info.status == ("FINISHED" if t.state == TrialState.COMPLETE else "FAILED")
        if t.state == TrialState.COMPLETE:
            assert r.data.metrics["val/auroc_macro"] == pytest.approx(t.value)

    uri = _env(tmp_path)["MLFLOW_TRACKING_URI"]
    assert (
        study_main(
            [
                "summarize",
                "cdl_tuning",
                "--storage",
                storage,
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path / "summary"),
            ]
        )
        == 0
    )
    (summary_run,) = client.search_runs([experiment.experiment_id], "tags.summary = 'true'")
    assert summary_run.info.run_name == "study-summary/cdl_tuning"
    assert summary_run.data.tags["study"] == "cdl_tuning" and "head" not in summary_run.data.tags
    assert summary_run.data.metrics["study/best_value"] == pytest.approx(study.best_value)
    artifacts = {a.path for a in client.list_artifacts(summary_run.info.run_id)}
    assert {"summary.md", "summary.json", "optimization_history.png"} <= artifacts
