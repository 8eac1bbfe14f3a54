"""Optuna studies (issue 5): read a study back from its storage, summarise it, log the summary.

Studies are defined in `sweeps/<study>.yaml` and run by Hydra's Optuna sweeper
(`python train.py -m sweep=dqc_tuning`); every trial is an MLflow run tagged `study` and `trial`.
This package reads the study's storage afterwards: `python -m qcxr.study summarize <study>` logs
best value and parameters, parameter importances and plots as a summary run in MLflow;
`python -m qcxr.study best <study>` prints the best trial's overrides for retraining over seeds.
"""

from qcxr.study.summary import (
    StudySummary,
    best_overrides,
    default_storage,
    load_study,
    log_summary,
    summarize,
    write_summary,
)

__all__ = [
    "StudySummary",
    "best_overrides",
    "default_storage",
    "load_study",
    "log_summary",
    "summarize",
    "write_summary",
]
