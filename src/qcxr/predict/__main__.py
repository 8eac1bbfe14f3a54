"""`python -m qcxr.predict <model> <images or folders...> [--out preds.csv]`: classify images.

<model> is a run id (its MLflow model runs:/<id>/model), an MLflow model URI
(`models:/<name>/<version>`, `runs:/<id>/model`), or a run folder (Hydra's run dir, which holds
`model/`) or a model folder itself. The CSV has one row per image: `path`, then one probability
column per label (multilabel) or class (multiclass, then `predicted`). Every image is read before
anything is computed: an unreadable one is an error naming it, or with `--on-bad skip` left out
with a logged count. A progress bar is shown when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from qcxr.predict import PATH_COLUMN, BundleError, ImageError, expand, load_bundle, predict_frame
from qcxr.predict.bundle import META_FILE
from qcxr.predict.export import MODEL_FOLDER
from qcxr.predict.images import ON_BAD

log = logging.getLogger("qcxr.predict")

RUN_ID = re.compile(r"^[0-9a-f]{32}$")  # MLflow's run ids


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The CLI's arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m qcxr.predict", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "model", help="run id, models:/<name>/<version>, runs:/<id>/model, or a run folder"
    )
    parser.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="CSV to write (default: stdout)")
    parser.add_argument("--on-bad", choices=ON_BAD, default="error", help="unreadable images")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store for run ids and models:/ URIs (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<repo>/mlruns/mlflow.db)",
    )
    return parser.parse_args(argv)


def model_folder(path: Path) -> Path | None:
    """The model folder a local path names: itself, or a run folder's `model/`; else None."""
    for folder in (path, path / MODEL_FOLDER):
        if (folder / META_FILE).is_file():
            return folder
    return None


def load_target(target: str, tracking_uri: str | None):
    """Load the model a CLI target names (a folder, an MLflow URI or a run id).

    Raises:
        BundleError: nothing loadable is named (the message says what was tried).
        FileNotFoundError: an MLflow target without a known store.
    """
    path = Path(target)
    if path.exists():
        folder = model_folder(path)
        if folder is None:
            raise BundleError(
                f"{path} holds no model ({META_FILE} in it or in {MODEL_FOLDER}/): the run did "
                "not finish, or predates model logging. Fix: pass a finished run's folder or id"
            )
        return load_bundle(folder)
    if RUN_ID.match(target):
        target = f"runs:/{target}/model"
    if not target.startswith(("runs:/", "models:/")):
        raise BundleError(
            f"{target!r} is neither a folder, a run id (32 hex digits) nor an MLflow model URI "
            "(models:/<name>/<version>, runs:/<id>/model)"
        )
    from qcxr.predict.pyfunc import load_uri
    from qcxr.report.load import resolve_tracking_uri

    return load_uri(target, resolve_tracking_uri(tracking_uri))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: arguments without the program name; None reads sys.argv.

    Returns:
        The exit status: 0 when the CSV was written, 1 otherwise (the error is logged).
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("qcxr").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
    if args.batch_size < 1:
        log.error("--batch-size=%d must be at least 1", args.batch_size)
        return 1
    try:
        sources = expand(args.images)
        model = load_target(args.model, args.tracking_uri)
        frame = predict_frame(
            model,
            sources,
            batch_size=args.batch_size,
            on_bad=args.on_bad,
            progress=sys.stderr.isatty(),
        )
    except (BundleError, ImageError, FileNotFoundError) as err:
        log.error("%s", err)
        return 1
    frame.insert(0, PATH_COLUMN, [sources[i] for i in frame.index])
    if args.out is None:
        frame.to_csv(sys.stdout, index=False)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        log.info("wrote %d predictions to %s", len(frame), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
