"""`python -m qcxr.evaluate <run id | models:/name/version | run folder> data=<source> [task=...]`:
a trained run's model evaluated on another dataset, logged as a child run of the trained run.

Overrides are the training command line's for the `data` and `task` groups (`data=mimic_cxr_lt
data.image_dir=... data.label_dir=...`); the model, its preprocessing and its labels are the run's.
A label set other than the run's is an error naming the labels. Prints the split's metrics and the
child run's id.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from qcxr.evaluate import EvaluationError, evaluate_and_log
from qcxr.predict import BundleError

log = logging.getLogger("qcxr.evaluate")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The CLI's arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m qcxr.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("model", help="run id, models:/<name>/<version>, or a run folder")
    parser.add_argument("overrides", nargs="+", help="data=<source> [data.key=...] [task=...]")
    parser.add_argument("--split", default="test", help="split of the data to evaluate")
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default as qcxr.predict)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="image/feature cache (default: the run's)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Returns:
        The exit status: 0 when the evaluation was logged, 1 otherwise (the error is logged).
    """
    from qcxr.predict.__main__ import load_target
    from qcxr.report.load import resolve_tracking_uri
    from qcxr.run import ConfigError

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("qcxr").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        uri = resolve_tracking_uri(args.tracking_uri)
        model = load_target(args.model, uri)
        result = evaluate_and_log(
            model,
            args.overrides,
            uri,
            split=args.split,
            cache_dir=args.cache_dir,
            progress=sys.stderr.isatty(),
        )
    except (BundleError, EvaluationError, ConfigError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 1
    shown = {k: v for k, v in result.metrics.items() if "/auroc/" not in k}
    sys.stdout.write(
        f"{result.data_name}/{result.split}: "
        + ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items()))
        + f"\nevaluation run {result.child_run_id}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
