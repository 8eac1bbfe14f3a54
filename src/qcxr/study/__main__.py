"""`python -m qcxr.study summarize|best|list`: read Optuna studies back (docs/sweeps.md).

python -m qcxr.study summarize dqc_tuning     # summary files + a summary run in MLflow
python -m qcxr.study summarize dqc_tuning --register dqc  # + the best trial's model registered
python -m qcxr.study best dqc_tuning          # the best trial's overrides, for train.py
python -m qcxr.study list                     # studies in a storage, with trial counts
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna

from qcxr.report.load import find_repo_root, resolve_tracking_uri
from qcxr.study.summary import (
    STORAGE_ENV,
    best_overrides,
    default_storage,
    load_study,
    log_summary,
    redact,
    summarize,
    write_summary,
)

log = logging.getLogger("qcxr.study")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m qcxr.study",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    storage_help = (
        "Optuna storage URL (default: $QCXR_STUDY_STORAGE, else sqlite:///<repo>/sweeps/<study>.db)"
    )

    s = sub.add_parser(
        "summarize",
        help="best value and parameters, importances, plots; "
        "logged as an MLflow run study-summary/<study>",
    )
    s.add_argument("study")
    s.add_argument("--storage", help=storage_help)
    s.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlruns/mlflow.db)",
    )
    s.add_argument(
        "--experiment",
        help="experiment of the summary run (default: that of the study's trial runs)",
    )
    s.add_argument(
        "--out", type=Path, help="folder for the files (default: <repo>/reports/studies/<study>)"
    )
    s.add_argument("--no-mlflow", action="store_true", help="write the files only")
    s.add_argument(
        "--register",
        metavar="NAME",
        help="register the best trial's model as a new version of NAME (models:/NAME/<version>)",
    )

    b = sub.add_parser("best", help="print the best trial's overrides (one line, shell-quoted)")
    b.add_argument("study")
    b.add_argument("--storage", help=storage_help)

    ls = sub.add_parser("list", help="studies in a storage")
    ls.add_argument("--storage", help="Optuna storage URL (default: $QCXR_STUDY_STORAGE)")
    return parser.parse_args(argv)


def register_best(summary, name: str, tracking_uri: str) -> str:
    """Register the best trial's model (its run's `model`) as a new version of `name`.

    Returns:
        The version.

    Raises:
        ValueError: the best trial has no recorded MLflow run, or that run has no model.
    """
    from qcxr.tracking.mlflow import register_run_model

    if not summary.best_run_id:
        raise ValueError(
            f"the best trial ({summary.best_trial}) has no recorded MLflow run id, so it has "
            "no model to register; its run was not tracked (tracker=none?)"
        )
    version = register_run_model(tracking_uri, summary.best_run_id, name)
    sys.stdout.write(f"registered models:/{name}/{version} (run {summary.best_run_id})\n")
    return version


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = parse_args(argv)
    try:
        if args.command == "list":
            storage = args.storage or os.environ.get(STORAGE_ENV)
            if not storage:
                raise ValueError(f"list needs --storage (or ${STORAGE_ENV})")
            for s in optuna.get_all_study_summaries(storage):
                sys.stdout.write(
                    f"{s.study_name}\t{s.n_trials} trials\t"
                    f"best {s.best_trial.value if s.best_trial else None}\n"
                )
            return 0
        storage = args.storage or default_storage(args.study)
        study = load_study(args.study, storage)
        if args.command == "best":
            sys.stdout.write(" ".join(shlex.quote(o) for o in best_overrides(study)) + "\n")
            return 0
        summary = summarize(study)
        out = args.out
        if out is None:
            root = find_repo_root() or Path.cwd()
            out = root / "reports" / "studies" / args.study
        files = write_summary(study, summary, out)
        log.info(
            "study %s (%s): %s; best %s; files in %s",
            args.study,
            redact(storage),
            summary.num_trials,
            summary.best_value,
            out,
        )
        if not args.no_mlflow:
            uri = resolve_tracking_uri(args.tracking_uri)
            run_id = log_summary(study, summary, files, uri, storage, args.experiment)
            log.info("summary run %s in %s", run_id, uri)
        sys.stdout.write((out / "summary.md").read_text())
        if args.register:
            register_best(summary, args.register, resolve_tracking_uri(args.tracking_uri))
        return 0
    except (FileNotFoundError, KeyError, ValueError) as err:
        log.error("%s", err.args[0] if err.args else err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
