"""`python -m qcxr.report`: write the CDL-vs-DQC report from the runs in an MLflow store."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from qcxr.report.build import build_report
from qcxr.report.load import find_repo_root, resolve_tracking_uri

log = logging.getLogger("qcxr.report")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: arguments without the program name; None reads sys.argv.

    Returns:
        The parsed namespace.
    """
    parser = argparse.ArgumentParser(
        prog="python -m qcxr.report",
        description="Compare two heads (default: the two the runs hold) over seeds from finished "
        "MLflow runs "
        "and write report.md, figures/ and tables/ to a folder.",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<repo root>/mlruns/mlflow.db; the repo root is the nearest folder above the "
        "current one with a pyproject.toml)",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        metavar="NAME",
        help="experiment to read (one per task: synthetic, cxr8, cxr14, cxr19); repeatable; "
        "default: every experiment with runs tagged `head`",
    )
    parser.add_argument(
        "--task",
        action="append",
        metavar="TASK",
        help="keep only runs of this task (tag `task`, else the experiment name); repeatable",
    )
    parser.add_argument(
        "--filter",
        default="",
        metavar="FILTER",
        help="MLflow search filter on the runs, e.g. \"tags.study = 'lr'\"",
    )
    parser.add_argument(
        "--heads",
        nargs=2,
        default=None,
        metavar=("A", "B"),
        help="the two heads compared; A takes CDL's part in the %% difference (default: the two "
        "heads the runs hold, CDL first; cdl dqc when there are more)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default: <repo root>/reports/<UTC timestamp>, git-ignored)",
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not log the report as an MLflow run"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: arguments without the program name; None reads sys.argv.

    Returns:
        The exit status: 0 on success, 1 when no report could be built.
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        uri = resolve_tracking_uri(args.tracking_uri)
        out = args.out
        if out is None:
            root = find_repo_root() or Path.cwd()
            out = root / "reports" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        report = build_report(
            uri,
            out,
            experiments=args.experiment,
            filter_string=args.filter,
            tasks=args.task,
            heads=args.heads,
            log_to_mlflow=not args.no_log,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        log.error("%s", err)
        return 1
    sel = report.selection
    sys.stdout.write(
        f"report: {report.markdown}\n"
        f"  {len(sel.pairs)} paired seeds, {len(sel.unpaired)} unpaired runs, "
        f"{len(sel.excluded)} excluded runs, {len(report.figures)} figures, "
        f"{report.seconds:.1f} s"
        + (
            f"\n  logged as MLflow run {report.run_id} (experiment 'reports')"
            if report.run_id
            else ""
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
