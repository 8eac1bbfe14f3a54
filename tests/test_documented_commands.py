"""Every command shown in README.md and docs/*.md runs here, in a quick form (docs/style.md, tests;
issue 20). `pytest --collect-only -q tests/test_documented_commands.py` lists them, one test each.

What a documented command is (`documented_commands`):
- it stands in a fenced code block of README.md or docs/*.md whose info string is bash, sh, shell
  or console. python blocks are API snippets; untagged blocks hold trees and output, and one that
  holds a line starting with a command word (`COMMAND_WORDS`) fails
  `test_commands_stand_in_bash_blocks`: tag it bash;
- a line ending in `\\` continues on the next; a comment (`#` at the start or after a space, outside
  quotes) is dropped; runs of whitespace become one space; blank lines are dropped;
- a line starting with `export`, `.`, `source` or `cd` sets up the shell and is not a command; every
  other line is one command, exactly as written (`&&`, `;` and `for` loops included).

The table `ROWS` has one row per command, compared after that normalisation:
- `quick`: the shell line run instead (bash, cwd = the checkout root, offline): the command with
  tiny overrides. `{tiny}` stands for the tiny synthetic run of tests/train_helpers.py (one epoch,
  tiny backbone, a few dozen images), `{small}` for the same with the command's own backbone,
  `{run}` for the part that fits any data source (run and sweep folders under the row's folder,
  one epoch, batch 4, no progress bars), `{tmp}` for the
  row's folder and `{port}` for a free TCP port. Every row has its own MLflow store
  (`MLFLOW_TRACKING_URI`), Optuna storage (`QCXR_STUDY_STORAGE`), cache (`QCXR_CACHE_DIR`) and
  `SLURM_CONF` (a file that does not exist, so no row can submit a job) under its folder, and no
  data location from the caller's environment;
- `code` and `expect`: its exit status and a regex (re.MULTILINE) found in its stdout + stderr
  (`{root}` in it stands for the checkout root, escaped).
  A command that needs what this machine has not (a dataset under /data, a weights folder, a SLURM
  cluster) runs as documented and must stop at start with the error that names the missing thing:
  its options compose and its keys exist, in seconds. `serve=True`: a server, stopped once
  `expect` appears;
- `skip`: why it does not run here at all (installs, root, network, the whole suite); listed by
  pytest's summary (-ra), never dropped;
- `makes` / `store`: a row that `makes` a store runs once per session (all workers share it, under
  a file lock) and rows naming it as their `store` start from a copy of its MLflow store and study
  storage (the report, robustness and study commands need trained runs);
- `slow`: over ~10 s, kept out of `make test-fast`; `realdata`: reads ../shared/data.

Adding a documented command: `test_every_documented_command_has_a_row` names it and its files;
add `Row("<the command>", quick=..., expect=...)` to `ROWS` (start from a neighbour's quick form).
A row whose command left the docs fails `test_every_row_is_documented`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, free_port
from tests.train_helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = ["README.md", "docs/*.md"]
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
SETUP_WORDS = {"export", ".", "source", "cd"}
# First words of a command: one of these in an untagged block means the block wants a bash tag.
COMMAND_WORDS = (
    "python",
    ".venv/bin/",
    "make",
    "mlflow",
    "optuna",
    "pip",
    "bash",
    "sbatch",
    "srun",
)

_RUN = (
    "hydra.run.dir={tmp}/run hydra.sweep.dir={tmp}/multirun trainer.max_epochs=1 "
    "trainer.batch_size=4 trainer.progress=false"
)
_TINY = " ".join([*TINY, _RUN])
_SMALL = " ".join([*(o for o in TINY if not o.startswith("backbone")), _RUN])  # any backbone
DONE = r"best epoch 1 of 1; val/auroc_macro \d"  # a run's last line (qcxr.run)
JOBS = r"(?:{done}[\s\S]*?){{{n}}}"  # a multirun: `n` runs ended


def jobs(n: int) -> str:
    """The regex of a multirun whose `n` jobs each trained and evaluated."""
    return JOBS.format(done=DONE, n=n)


@dataclasses.dataclass(frozen=True)
class Row:
    """One documented command and how it runs here (the module docstring says what each field
    means)."""

    command: str
    quick: str = ""
    expect: str = ""
    code: int = 0
    skip: str = ""
    slow: bool = False
    realdata: bool = False
    serve: bool = False
    makes: str = ""
    store: str = ""
    timeout: int = 600


_NO_SLURM = r'Could not detect "srun"|slurm\.conf|sbatch: error'  # no cluster here
_NO_CXR_LT_2024 = r"'cxr_lt_2024' needs image_dir: .*MIMIC_CXR_LT_IMAGES"
_NO_RESNET50 = r"no pretrained weights for microsoft/resnet-50: backbone\.weights is not set"
_NO_EXPERIMENT = r"experiment\(s\) \['{}'\] not found in the store"
_BENCH_HEADS = "--qubits 4 --batch 4 --repeats 1 --warmup 0 --min-time 0 --pennylane-max-qubits 4"
_BENCH_NOISE = (
    "--trajectory-qubits 4 --trajectories 4 --density-qubits 4 --pennylane-qubits 4 --batch 2 "
    "--layers 1 --repeats 1"
)
_TRAIN_STEP = "--backbone tiny --image-size 16 --batch 2 --labels 8 --warmup 1 --steps 1"
_PEERS = "--qubits 4 --batch 4 --repeats 1 --min-time 0 --peer-list default.qubit"

ROWS = [
    # ---- make: a dry run shows the target exists and what it runs (it would install .venv) ----
    Row("make demo", quick="make --dry-run demo", expect=r"python train\.py$"),
    Row("make test", quick="make --dry-run test", expect=r"pytest -q .*-n 2 --dist loadgroup"),
    Row("make setup", quick="make --dry-run setup", expect=r"pip install -q -e|Nothing to be done"),
    Row(
        "python -m venv .venv && .venv/bin/pip install -e '.[cluster]'",
        skip="installs packages from PyPI (make setup does the same; its dry run is a row)",
    ),
    Row(
        ".venv/bin/python -m pytest -q --durations=25 -n 2 --dist loadgroup --timeout=1800",
        skip="the whole test suite, which make test runs",
    ),
    Row(
        ".venv/bin/python -m pytest -q tests/numerics/test_noise_vs_pennylane.py "
        "tests/unit/test_noise.py",
        quick="python -m pytest -q -p no:cacheprovider --collect-only "
        "tests/numerics/test_noise_vs_pennylane.py tests/unit/test_noise.py",
        expect=r"^\d+ tests collected",
        slow=True,  # 12 s: PennyLane and torch imports
    ),
    # ---- train.py on the synthetic default ----------------------------------------------------
    Row("python train.py", quick="{cmd} {tiny}", expect=DONE, slow=True),
    Row("python train.py head=cdl seed=3", quick="{cmd} {tiny}", expect=DONE, slow=True),
    Row(
        "python train.py head.method=statevector",
        quick="{cmd} {tiny}",
        expect=DONE,
        slow=True,
    ),
    Row(
        "python train.py task=synthetic40 head=dqc",
        quick="{cmd} {tiny}",
        expect=DONE,  # 40 qubits: only the mps method fits (the statevector is refused at start)
        slow=True,
    ),
    Row("python train.py task=synthetic_mc head=cdl", quick="{cmd} {tiny}", expect=DONE, slow=True),
    Row(
        "python train.py backbone=mobilenet_v2_paper",
        quick="{cmd} backbone.image_size=32 backbone.resize_size=32 {small}",
        expect=DONE,
        slow=True,
    ),
    Row(
        "python train.py -m head=dqc,cdl seed=0-4",
        quick="python train.py -m head=dqc,cdl seed=0-1 {tiny}",
        expect=jobs(4),
        slow=True,
        makes="runs",
    ),
    Row(
        "python train.py -m head=dqc,cdl seed=0-4 hydra.launcher.n_jobs=1",
        quick="python train.py -m head=dqc,cdl seed=0 hydra.launcher.n_jobs=1 {tiny}",
        expect=r"n_jobs=1(?s:.*)" + jobs(2),
        slow=True,
    ),
    Row(
        "python train.py -m head.noise.depolarizing=0,0.001,0.01 seed=0-4",
        quick="python train.py -m head.noise.depolarizing=0,0.01 seed=0 {tiny}",
        expect=jobs(2),
        slow=True,
    ),
    Row(
        "python train.py -m head=dqc head.noise.depolarizing=0,0.001,0.01 seed=0-4",
        quick="python train.py -m head=dqc head.noise.depolarizing=0.01 seed=0 {tiny}",
        expect=jobs(1),
        slow=True,
    ),
    Row(
        "python train.py -m head=dqc ansatz=ry_cnot_ring,strongly_entangling "
        "ansatz.num_layers=1,3,5",
        quick="python train.py -m head=dqc ansatz=ry_cnot_ring,strongly_entangling "
        "ansatz.num_layers=1 {tiny}",
        expect=jobs(2),
        slow=True,
    ),
    # ---- sweeps and studies ---------------------------------------------------------------------
    Row(
        "python train.py -m sweep=dqc_tuning hydra.sweeper.n_trials=8",
        quick="python train.py -m sweep=dqc_tuning hydra.sweeper.n_trials=2 {tiny}",
        expect=jobs(2),
        slow=True,
    ),
    Row(
        "python train.py -m sweep=cdl_tuning",
        quick="{cmd} hydra.sweeper.n_trials=1 {tiny}",
        expect=jobs(1),
        slow=True,
    ),
    Row(
        "for s in dqc_tuning cdl_tuning; do python train.py -m sweep=$s "
        "hydra.sweeper.n_trials=50; done",
        quick="for s in dqc_tuning cdl_tuning; do python train.py -m sweep=$s "
        "hydra.sweeper.n_trials=1 {tiny} hydra.sweep.dir={tmp}/multirun/$s; done",
        expect=jobs(2),
        slow=True,
        makes="studies",
    ),
    Row(
        "python -m qcxr.study summarize dqc_tuning",
        quick="{cmd} --out {tmp}/summary",
        expect=r"study dqc_tuning \(sqlite:.*\): \{'COMPLETE': 1\}; best \d",
        slow=True,
        store="studies",
    ),
    Row(
        "python -m qcxr.study best dqc_tuning",
        quick="{cmd}",
        expect=r"^backbone=tiny .*\bhead=dqc .*\boptimizer\.learning_rate=\d",
        slow=True,
        store="studies",
    ),
    Row(
        "python -m qcxr.study summarize dqc_tuning && python -m qcxr.report --experiment synthetic",
        quick="python -m qcxr.study summarize dqc_tuning --out {tmp}/summary && "
        "python -m qcxr.report --experiment synthetic --out {tmp}/report",
        expect=r"^report: .*report\.md",
        slow=True,
        store="studies",
    ),
    Row(
        "for s in dqc_tuning cdl_tuning; do python train.py -m sweep=fair_comparison "
        "$(python -m qcxr.study best $s) seed=0-4; done",
        quick="for s in dqc_tuning cdl_tuning; do python train.py -m sweep=fair_comparison "
        "$(python -m qcxr.study best $s) seed=0 {tiny} hydra.sweep.dir={tmp}/multirun/$s; done",
        expect=jobs(2),
        slow=True,
        store="studies",
        makes="fair",
    ),
    Row(
        "python -m qcxr.report --filter \"tags.study = 'fair_comparison'\"",
        quick="{cmd} --out {tmp}/report",
        expect=r"^report: .*report\.md",
        slow=True,
        store="fair",
    ),
    Row(
        "optuna-dashboard sqlite:///sweeps/dqc_tuning.db",
        skip="optuna-dashboard is optional and not installed (pip install optuna-dashboard)",
    ),
    # ---- report and robustness on trained runs -------------------------------------------------
    Row(
        "python -m qcxr.report",
        quick="{cmd} --out {tmp}/report",
        expect=r"^  2 paired seeds",
        slow=True,
        store="runs",
    ),
    Row(
        "python -m qcxr.report --experiment synthetic --out reports/robustness",
        quick="python -m qcxr.report --experiment synthetic --out {tmp}/reports/robustness",
        expect=r"^  2 paired seeds",
        slow=True,
        store="runs",
    ),
    Row(
        "python -m qcxr.robustness synthetic",
        quick="{cmd} --levels 0,0.01 --shots none --no-progress",
        expect=r"^test AUROC \(macro\) vs depolarizing(?s:.*)"
        r"^summary run \w+ in experiment synthetic",
        slow=True,
        store="runs",
    ),
    Row(
        "python -m qcxr.report --experiment cxr19",
        quick="{cmd} --out {tmp}/report",
        code=1,
        expect=_NO_EXPERIMENT.format("cxr19"),
    ),
    Row(
        "python -m qcxr.report --experiment cxr8 --out reports/cxr8",
        quick="python -m qcxr.report --experiment cxr8 --out {tmp}/reports/cxr8",
        code=1,
        expect=_NO_EXPERIMENT.format("cxr8"),
    ),
    Row(
        "mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db",
        quick="MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri "
        "sqlite:///{tmp}/mlruns/mlflow.db --port {port}",
        expect=r"Uvicorn running on|Listening at",
        serve=True,
        slow=True,
    ),
    # ---- real data: runs on ../shared/data where docs name it; stops at a missing location -----
    Row(
        "python train.py -m experiment=qcnn_ham10000 data.root=../shared/data/ham10000-sample "
        "head=qcnn,cdl seed=0-2",
        quick="python train.py -m experiment=qcnn_ham10000 "
        "data.root=../shared/data/ham10000-sample head=qcnn,cdl seed=0 backbone=tiny "
        "backbone.image_size=16 backbone.feature_dim=8 {run}",
        expect=jobs(2),
        slow=True,
        realdata=True,
    ),
    Row(
        "python train.py task=cxr19 data=nih_cxr_lt backbone=resnet50 "
        "backbone.weights=/models/resnet-50",
        quick="{cmd} {run}",
        code=1,
        expect=r"backbone\.weights=/models/resnet-50 does not exist",
    ),
    Row(
        "python train.py backbone=mobilenet_v2 backbone.weights=/models/mobilenet_v2_1.0_224",
        quick="{cmd} {run}",
        code=1,
        expect=r"backbone\.weights=/models/mobilenet_v2_1\.0_224 does not exist",
    ),
    Row(
        "python train.py backbone=mobilenet_v2 backbone.allow_download=true",
        skip="downloads google/mobilenet_v2_1.0_224 from the Hugging Face Hub",
    ),
    Row(
        "python train.py task=cxr19 data=nih_cxr_lt data.image_dir=/data/nih/images "
        "data.label_dir=/data/nih-cxr-lt",
        quick="{cmd} {run}",
        code=1,
        expect=r"/data/nih",
    ),
    Row(
        "python train.py task=cxr8 data=folder_csv data.image_dir=my/images "
        "data.label_dir=my/labels.csv",
        quick="{cmd} {run}",
        code=1,
        expect=r"label file {root}/my/labels\.csv does not exist",  # relative to the launch
    ),
    Row(
        "python train.py task=cxr14 data=medmnist data.npz=/data/medmnist/chestmnist.npz",
        quick="{cmd} {run}",
        code=1,
        expect=r"/data/medmnist/chestmnist\.npz",
    ),
    Row(
        "python train.py data=medmnist data.npz=/data/medmnist/dermamnist.npz "
        "task=dermamnist head=cdl",
        quick="{cmd} {run}",
        code=1,
        expect=r"/data/medmnist/dermamnist\.npz",
    ),
    Row(
        "python train.py task=cxr40 data=cxr_lt_2024 head=cdl",
        quick="{cmd} {run}",
        code=1,
        expect=_NO_CXR_LT_2024,
    ),
    Row(
        "python train.py task=cxr26 data=cxr_lt_2024 head=cdl "
        "data.val_file=development_labeled_task2.csv data.test_file=test_labeled_task2.csv",
        quick="{cmd} {run}",
        code=1,
        expect=_NO_CXR_LT_2024,
    ),
    Row(
        "python train.py -m experiment=cxr_lt_2024_task1 head=cdl,dqc seed=0-4",
        quick="python train.py -m experiment=cxr_lt_2024_task1 head=cdl,dqc seed=0 {run}",
        code=1,
        expect=_NO_RESNET50,  # the preset's backbone is built before its data
    ),
    Row(
        "python train.py data=ham10000 data.root=/data/HAM10000 task=ham10000 head=cdl",
        quick="{cmd} {run}",
        code=1,
        expect=r"/data/HAM10000",
    ),
    Row(
        "python train.py data=isic2017 data.root=/data/ISIC2017 task=isic2017 head=cdl",
        quick="{cmd} {run}",
        code=1,
        expect=r"/data/ISIC2017",
    ),
    Row(
        "python train.py -m experiment=paper_cxr8 head=cdl,dqc seed=0-4",
        quick="python train.py -m experiment=paper_cxr8 head=cdl,dqc seed=0 {run}",
        code=1,
        expect=_NO_RESNET50,
    ),
    # ---- SLURM: composes and reaches submitit, which finds no cluster --------------------------
    Row(
        "python train.py -m hydra/launcher=submitit_slurm head=cdl,dqc seed=0-4 "
        "hydra.launcher.partition=gpu",
        quick="{cmd} {run}",
        code=1,
        expect=_NO_SLURM,
    ),
    Row(
        "python train.py -m hydra/launcher=submitit_slurm experiment=paper_cxr19 head=cdl,dqc "
        "seed=0-4 hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 "
        "hydra.launcher.timeout_min=1440",
        quick="{cmd} {run}",
        code=1,
        expect=_NO_SLURM,
    ),
    Row(
        "python train.py -m sweep=dqc_tuning hydra/launcher=submitit_slurm hydra.sweeper.n_jobs=8 "
        "hydra.sweeper.n_trials=100",
        quick="python train.py -m sweep=dqc_tuning hydra/launcher=submitit_slurm "
        "hydra.sweeper.n_jobs=8 hydra.sweeper.n_trials=8 {run}",
        code=1,
        expect=_NO_SLURM,
    ),
    Row(
        "python train.py -m hydra/launcher=submitit_slurm head=dqc,cdl seed=0-1 backbone=tiny "
        "trainer.max_epochs=2",
        quick="{cmd} {run}",
        code=1,
        expect=_NO_SLURM,
    ),
    Row(
        "python train.py -m sweep=dqc_tuning hydra/launcher=submitit_slurm "
        "hydra.sweeper.n_trials=4 hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2",
        quick="python train.py -m sweep=dqc_tuning hydra/launcher=submitit_slurm "
        "hydra.sweeper.n_trials=2 hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2 {run}",
        code=1,
        expect=_NO_SLURM,
    ),
    Row(
        "scripts/local-cluster up",
        skip="starts munge, SLURM, PostgreSQL and MLflow as root and may apt-get install them; "
        "tests/test_cluster.py runs it",
    ),
    Row(
        "scripts/local-cluster status",
        quick="QCXR_CLUSTER_DIR={tmp}/cluster {cmd}",
        code=1,
        expect=r"^not set up \(",
    ),
    Row(
        "scripts/local-cluster down",
        quick="QCXR_CLUSTER_DIR={tmp}/cluster {cmd}",
        expect=r"nothing to stop",
    ),
    # ---- benchmarks: the same protocol at 2-4 qubits, one timed step ---------------------------
    Row(
        "python -m qcxr.bench heads",
        quick="{cmd} " + _BENCH_HEADS + " --methods auto",
        expect=r"\| 4 \|",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench heads --qubits 8 14 19 24 --time-limit 100 --repeats 10 "
        "--pennylane-max-qubits 19 --max-qubits --max-qubits-from 26",
        quick="python -m qcxr.bench heads --time-limit 5 " + _BENCH_HEADS + " --methods auto "
        "--no-cdl --simulators native --max-qubits --max-qubits-from 5 --max-qubits-to 6",
        expect=r"\| 4 \|",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench heads --qubits 8 14 19 --simulators native --no-cdl",
        quick="python -m qcxr.bench heads --simulators native --no-cdl " + _BENCH_HEADS,
        expect=r"\| 4 \|",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench heads --scale",
        quick="{cmd} --scale-qubits 4 --scale-max-qubits 5 --scale-bisect 0 --batch 4 "
        "--repeats 1 --warmup 0 --min-time 0",
        expect=r"\| 4 \|",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench heads --peers --methods auto statevector",
        quick="{cmd} " + _PEERS + " --json {tmp}/peers.json",
        expect=r"\| 4 \| \*\*qcxr, auto\*\*",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench heads --peers --methods auto statevector --json "
        "bench_results/peers.json",
        quick="python -m qcxr.bench heads --peers --methods auto statevector " + _PEERS + " "
        "--json {tmp}/bench_results/peers.json",
        expect=r"wrote .*bench_results/peers\.json",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench noise",
        quick="{cmd} " + _BENCH_NOISE,
        expect=r"\| 4 \|",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench noise --time-limit 240 --repeats 3",
        quick="python -m qcxr.bench noise --time-limit 60 " + _BENCH_NOISE,
        expect=r"\| 4 \|",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench noise --agreement",
        quick="{cmd} --agreement-qubits 2",
        expect=r"^\| depolarizing \| \d\.\de-\d+ / \d\.\de-\d+ \|",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench qcnn --repeats 20 --pennylane-repeats 2 --time-limit 30",
        quick="python -m qcxr.bench qcnn --repeats 1 --pennylane-repeats 1 --time-limit 5 "
        "--batch 2 --warmup 0",
        expect=r"fragments",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench qcnn --no-steps --shot-noise 100 1000 10000 100000",
        quick="python -m qcxr.bench qcnn --no-steps --shot-noise 100 --shot-repeats 1 --batch 2",
        expect=r"100",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench loader",
        quick="{cmd} --num-images 16 --source-size 64 --threads 1 --batch-size 4 "
        "--device-images 4 --workdir {tmp}",
        # issue 20: it crashed (duplicate images); its table gives images/s, cold and warm
        expect=r"^\| 1 \| host \(Pillow\) \| [\d,.]+ \| [\d,.]+ \|$",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench train-step",
        quick="{cmd} " + _TRAIN_STEP,
        expect=r"DQC/CDL",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench train-step --warmup 2 --steps 3",
        quick="python -m qcxr.bench train-step " + _TRAIN_STEP + " --simulators native",
        expect=r"DQC/CDL",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench train-step --warmup 2 --steps 5 --labels 19",
        quick="python -m qcxr.bench train-step "
        + _TRAIN_STEP.replace("--labels 8", "--labels 19")
        + " --simulators native",
        expect=r"DQC/CDL",
        slow=True,
    ),
    Row(
        "python -m qcxr.bench train-step --backbone tiny --image-size 32",
        quick="{cmd} --batch 2 --labels 8 --warmup 1 --steps 1 --simulators native",
        expect=r"DQC/CDL",
        slow=True,
    ),
    # ---- run in a quick form by the named test (they need a trained run, a server or the
    # real npz for minutes; that test runs the same code path on a tiny run) ----
    Row(
        "python -m qcxr.predict <run id> scans/ --out preds.csv",
        skip=(
            "quick form in tests/test_predict.py::test_cli_pyfunc_and_logged_test_predictions_agree"
        ),
    ),
    Row(
        "python -m qcxr.predict outputs/synthetic/2026-12-07_14-14-22 a.png b.png",
        skip=(
            "quick form in tests/test_predict.py::test_run_folder_and_model_id_load_the_same_model"
        ),
    ),
    Row(
        "python -m qcxr.predict models:/<name>/<version> scans/ --on-bad skip --batch-size 64",
        skip="quick form in tests/test_predict.py::test_unreadable_images_are_named_or_skipped",
    ),
    Row(
        "python -m qcxr.predict models:/cxr8-cdl/1 scans/ --out preds.csv",
        skip=(
            "quick form in "
            "tests/test_predict.py::test_registered_best_trial_loads_as_models_name_version"
        ),
    ),
    Row(
        "python -m qcxr.study summarize cdl_tuning --register cxr8-cdl",
        skip=(
            "quick form in "
            "tests/test_predict.py::test_registered_best_trial_loads_as_models_name_version"
        ),
    ),
    Row(
        "mlflow models predict -m runs:/<run id>/model -i in.csv -t csv --env-manager local",
        skip="quick form in tests/test_predict.py::test_mlflow_models_predict_offline",
    ),
    Row(
        "mlflow models serve -m runs:/<run id>/model --env-manager local -h 127.0.0.1 -p 5001",
        skip="quick form in tests/test_predict.py::test_mlflow_models_serve_answers_a_rest_request",
    ),
    Row(
        (
            "curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d "
            '\'{"dataframe_split": {"columns": ["image"], "data": [["a.png"]]}}\''
        ),
        skip="quick form in tests/test_predict.py::test_mlflow_models_serve_answers_a_rest_request",
    ),
    Row(
        "python -m qcxr.evaluate <run id> data=mimic_cxr_lt",
        skip="quick form in tests/test_evaluate.py::test_other_labels_are_an_error_naming_them",
    ),
    Row(
        (
            "python -m qcxr.evaluate <run id> data=mimic_cxr_lt "
            "data.image_dir=$MIMIC_CXR_LT_IMAGES data.label_dir=$MIMIC_CXR_LT_LABELS"
        ),
        skip="quick form in tests/test_evaluate.py::test_own_data_reproduces_the_run_test_metrics",
    ),
    Row(
        (
            "python -m qcxr.evaluate <run id> data=folder_csv "
            "data.image_dir=../shared/data/nih-cxr14-64px/images "
            "data.label_dir=../shared/data/nih-cxr14-64px/labels.csv --split test"
        ),
        skip=(
            "quick form in "
            "tests/test_evaluate.py::test_real_xrays_give_a_child_run_with_auroc_predictions_and_curves"
        ),
    ),
    Row(
        (
            "python -m qcxr.bench batch-norm --npz "
            "../shared/data/medmnist/pneumoniamnist.npz --epochs 3 --batch 32 --limit 768"
        ),
        skip=(
            "quick form in "
            "tests/unit/test_bench_train_step_torch.py::test_batch_norm_ab_trains_both_arms"
        ),
    ),
    Row(
        "python -m qcxr.bench train-step-torch --batch 128 --rounds 5 --steps 2 --warmup 2",
        skip=(
            "quick form in "
            "tests/unit/test_bench_train_step_torch.py::test_train_step_torch_checks_agreement_then_times_both"
        ),
    ),
    Row(
        (
            "python train.py experiment=medmnist_pneumonia "
            "data.npz=../shared/data/medmnist/pneumoniamnist.npz"
        ),
        skip=(
            "quick form in "
            "tests/unit/test_train_run.py::test_medmnist_preset_end_to_end_on_the_real_npz"
        ),
    ),
    Row(
        "python train.py head=cdl backbone.init_from=<run id or run folder> backbone.freeze=true",
        skip=(
            "quick form in "
            "tests/unit/test_train_run.py::test_init_from_a_run_id_or_its_folder_starts_from_its_best_backbone"
        ),
    ),
]


# ---- the commands in the docs ------------------------------------------------------------------
def _strip_comment(line: str) -> str:
    """The line without its shell comment: from a `#` at the start or after whitespace, outside
    quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def normalise(command: str) -> str:
    """One space between words, none at the ends: how commands are compared."""
    return " ".join(command.split())


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """The fenced code blocks of a markdown text: (info string's first word, lines)."""
    blocks, lines, info = [], None, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if lines is None:
                info, lines = line.lstrip()[3:].strip().split(" ")[0], []
            else:
                blocks.append((info, lines))
                lines = None
        elif lines is not None:
            lines.append(line)
    return blocks


def block_commands(lines: list[str]) -> list[str]:
    """The commands of one shell block, by the module docstring's rule."""
    commands, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = normalise(_strip_comment(pending + line))
        pending = ""
        if command and command.split()[0] not in SETUP_WORDS:
            commands.append(command)
    return commands


def doc_files() -> list[Path]:
    """README.md and docs/*.md of the checkout."""
    return sorted(p for pattern in DOC_FILES for p in ROOT.glob(pattern))


def documented_commands() -> dict[str, list[str]]:
    """Every command of the docs -> the files (relative to the root) that show it."""
    found: dict[str, list[str]] = {}
    for path in doc_files():
        for info, lines in fenced_blocks(path.read_text()):
            if info in SHELL_BLOCKS:
                for command in block_commands(lines):
                    found.setdefault(command, []).append(path.relative_to(ROOT).as_posix())
    return found


# ---- running a row -----------------------------------------------------------------------------
def _data_variables() -> set[str]:
    """The environment variables the configs read (`${oc.env:NAME...}`)."""
    names = set()
    for path in (ROOT / "conf").rglob("*.yaml"):
        names.update(re.findall(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    return names


def row_env(tmp: Path) -> dict[str, str]:
    """The environment a row runs in: the caller's, without any data location, MLflow or qcxr
    setting, plus the row's own store, storage and cache, offline, the test's python first."""
    dropped = _data_variables()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and not k.startswith(("MLFLOW_", "QCXR_", "SLURM_"))
    }
    python_path = [str(ROOT / "src"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(python_path),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
        QCXR_STUDY_STORAGE=f"sqlite:///{tmp / 'study.db'}",
        QCXR_CACHE_DIR=str(tmp / "cache"),
        SLURM_CONF=str(tmp / "no-slurm.conf"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MPLBACKEND="Agg",
    )
    return env


def quick_line(row: Row, tmp: Path) -> str:
    """The row's quick form with its placeholders filled in."""
    fields = {"cmd": row.command, "tmp": tmp, "port": free_port()}
    fields["run"] = _RUN.format(**fields)
    fields["tiny"] = _TINY.format(**fields)
    fields["small"] = _SMALL.format(**fields)
    return row.quick.format(**fields)


def run_row(row: Row, tmp: Path, template: Path) -> tuple[int | None, str]:
    """Run the row's quick form in tmp's environment; (exit status, stdout + stderr). A server
    (`serve`) is stopped once its `expect` appears, and its status is None."""
    (tmp / "mlruns").mkdir(parents=True, exist_ok=True)
    db = tmp / "mlruns" / "mlflow.db"
    if not db.exists():
        shutil.copyfile(template, db)
    line = quick_line(row, tmp)
    env = row_env(tmp)
    if not row.serve:
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=row.timeout,
        )
        output = f"$ {line}\n{done.stdout}{done.stderr}"
        (tmp / "output.log").write_text(output)  # kept in pytest's tmp folders for a look
        return done.returncode, output
    return _serve(row, line, env, tmp)


def _serve(row: Row, line: str, env: dict[str, str], tmp: Path) -> tuple[None, str]:
    """Start a server, wait for `expect` in its output (or its exit, or the timeout), stop it."""
    log_path = tmp / "serve.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            ["bash", "-c", line],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + row.timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if re.search(row.expect, log_path.read_text(), re.MULTILINE):
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    return None, f"$ {line}\n{log_path.read_text()}"


def check(row: Row, code: int | None, output: str) -> None:
    """The row's exit status and its regex, with the output's end on failure."""
    where = f"{row.command!r}: {output[-6000:]}"
    expect = row.expect.replace("{root}", re.escape(str(ROOT)))
    if not row.serve:
        assert code == row.code, f"exit status {code}, expected {row.code}, for {where}"
    assert re.search(expect, output, re.MULTILINE), f"no /{expect}/ in the output of {where}"


# ---- the stores that rows share ----------------------------------------------------------------
MAKERS = {row.makes: row for row in ROWS if row.makes}


def _copy_store(source: Path, tmp: Path) -> None:
    """A row starts from a copy of a shared store: MLflow's database and artifacts, the study
    storage. Runs in it still point at the shared folder's checkpoints and cache."""
    shutil.copytree(source / "mlruns", tmp / "mlruns")
    if (source / "study.db").exists():
        shutil.copyfile(source / "study.db", tmp / "study.db")


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory, mlflow_db_template):
    """`get(name)`: the folder of the store that the row `MAKERS[name]` made, made once per
    session, by whichever worker asks first (the others wait on its lock), with that row's
    (exit status, output) in result.json."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # basetemp/.. is the session's, shared by workers
        base = base.parent

    def get(name: str) -> tuple[Path, dict]:
        folder = base / f"documented-store-{name}"
        with FileLock(f"{folder}.lock"):
            if not (folder / "result.json").exists():
                maker = MAKERS[name]
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                if maker.store:
                    _copy_store(get(maker.store)[0], folder)
                code, output = run_row(maker, folder, mlflow_db_template)
                (folder / "result.json").write_text(json.dumps({"code": code, "output": output}))
        return folder, json.loads((folder / "result.json").read_text())

    return get


# ---- the tests ---------------------------------------------------------------------------------
def _param(row: Row):
    marks = [pytest.mark.slow] if row.slow else []
    if row.realdata:
        marks.append(pytest.mark.realdata)
    return pytest.param(row, id=row.command, marks=marks)


@pytest.mark.parametrize("row", [_param(row) for row in ROWS])
def test_documented_command_runs(row, tmp_path, mlflow_db_template, shared_store):
    """The row's quick form exits with its status and prints its line."""
    if row.skip:
        pytest.skip(f"documented command not run here: {row.skip}")
    if row.realdata and not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    if row.makes:  # its run is the shared store's
        _, result = shared_store(row.makes)
        check(row, result["code"], result["output"])
        return
    if row.store:
        folder, result = shared_store(row.store)
        maker = MAKERS[row.store]
        assert result["code"] == maker.code, f"{row.store!r} ({maker.command!r}) failed first"
        _copy_store(folder, tmp_path)
    code, output = run_row(row, tmp_path, mlflow_db_template)
    check(row, code, output)


def test_every_documented_command_has_a_row():
    documented = documented_commands()
    missing = {c: files for c, files in documented.items() if c not in {r.command for r in ROWS}}
    assert not missing, (
        "documented commands without a row in tests/test_documented_commands.py ROWS "
        "(add Row(<command>, quick=..., expect=...)):\n"
        + "\n".join(f"  {c!r}  ({', '.join(files)})" for c, files in missing.items())
    )


def test_every_row_is_documented():
    documented = documented_commands()
    stale = [r.command for r in ROWS if r.command not in documented]
    assert not stale, f"rows whose command no doc shows any more (remove or update): {stale}"


def test_rows_are_unique_normalised_and_complete():
    commands = [r.command for r in ROWS]
    assert len(commands) == len(set(commands)), "a command has two rows"
    for r in ROWS:
        assert r.command == normalise(r.command), f"{r.command!r} is not normalised"
        assert bool(r.skip) != bool(r.quick), f"{r.command!r}: either a quick form or a skip reason"
        assert r.skip or r.expect, f"{r.command!r}: no expected output"
        assert not r.store or r.store in MAKERS, f"{r.command!r}: no row makes {r.store!r}"
        # a row waits for its store: as costly as the row that makes it
        assert not r.store or r.slow or not MAKERS[r.store].slow, f"{r.command!r}: mark it slow"


def test_commands_stand_in_bash_blocks():
    """A command in an untagged block would escape the table: such a block must be tagged bash."""
    untagged = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in doc_files()
        for info, lines in fenced_blocks(path.read_text())
        if not info
        for line in lines
        if line.strip().startswith(COMMAND_WORDS)
    ]
    assert not untagged, f"commands in fenced blocks without a bash tag: {untagged}"


def test_block_commands_join_continuations_and_drop_comments_and_setup():
    lines = [
        "export A=1   # setup, not a command",
        ". .venv/bin/activate",
        "",
        "# a comment line",
        "python train.py -m a=1 \\",
        "    b=2   # the rest of a continued command",
        "python -m qcxr.report --filter \"tags.x = '#1'\"   # a quoted # stays",
        "for s in a b; do echo $s; done",
    ]
    assert block_commands(lines) == [
        "python train.py -m a=1 b=2",
        "python -m qcxr.report --filter \"tags.x = '#1'\"",
        "for s in a b; do echo $s; done",
    ]
    text = "x\n```bash\nmake demo  # d\n```\n```python\nprint(1)\n```\n```\ntree\n```\n"
    assert fenced_blocks(text) == [
        ("bash", ["make demo  # d"]),
        ("python", ["print(1)"]),
        ("", ["tree"]),
    ]
