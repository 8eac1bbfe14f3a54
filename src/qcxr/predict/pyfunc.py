"""The MLflow pyfunc model of a run: `mlflow.pyfunc.load_model("runs:/<id>/model")`.

A `mlflow.pyfunc.PythonModel` whose one artifact, `bundle`, is the run's model folder
(`qcxr.predict.bundle`); `load_context` rebuilds it with `load_bundle`, `predict` calls
`qcxr.predict.predict_frame`, the function `python -m qcxr.predict` calls, so both give the same
numbers. Loading needs qcxr installed (the pyfunc model pickles this class by reference), no Hydra
config and no network.

Input: a DataFrame with an `image` column of image paths (strings); called from Python, a cell
may also hold a decoded image array. Output: one float column per label (multilabel) or class
(multiclass, plus `predicted`, the arg-max class), one row per input, in input order.

The only module of `qcxr.predict` that imports mlflow.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from PIL import Image

from qcxr.predict import IMAGE_COLUMN, PREDICTED_COLUMN, predict_frame
from qcxr.predict.bundle import BundleError, LoadedModel, load_bundle

log = logging.getLogger(__name__)

BUNDLE_ARTIFACT = "bundle"
MODEL_NAME = "model"  # runs:/<id>/model
EXAMPLE_FILE = "input_example.png"
# What loading the model imports, pinned to the versions it was logged with (MLflow then does not
# infer them, which would load the model once more in a subprocess). qcxr itself is not on PyPI:
# the model loads where qcxr is installed (`mlflow models ... --env-manager local`).
REQUIREMENTS = (
    "mlflow",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "numpy",
    "pandas",
    "pillow",
    "safetensors",
    "hydra-core",
    "omegaconf",
)


class QcxrModel(mlflow.pyfunc.PythonModel):
    """A trained qcxr run as an MLflow pyfunc model (see the module docstring)."""

    def load_context(self, context) -> None:
        """Rebuild the model folder of the `bundle` artifact."""
        self.model = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Probabilities of the images in `model_input[IMAGE_COLUMN]`.

        Args:
            context: MLflow's context (unused; the model was loaded in load_context).
            model_input: a DataFrame (or a dict of columns) with an `image` column.
            params: {"batch_size": int} optionally (default 32).

        Returns:
            A DataFrame: one row per input, one column per label or class (+ `predicted`).

        Raises:
            ValueError: no `image` column.
            qcxr.predict.ImageError: an image that cannot be read, named.
        """
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if IMAGE_COLUMN not in frame.columns:
            raise ValueError(
                f"the input needs an {IMAGE_COLUMN!r} column of image paths; got columns "
                f"{list(frame.columns)}"
            )
        batch_size = int((params or {}).get("batch_size", 32))
        out = predict_frame(self.model, list(frame[IMAGE_COLUMN]), batch_size=batch_size)
        return out.reset_index(drop=True)


def requirements() -> list[str]:
    """`name==version` of each of REQUIREMENTS installed here."""
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def write_example(folder: Path, size: int) -> Path:
    """A mid-grey PNG of the backbone's input size in the model folder: the input example.

    Args:
        folder: the model folder.
        size: side in pixels.

    Returns:
        Its path.
    """
    path = folder / EXAMPLE_FILE
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(path)
    return path


def output_schema_example(label_names: list[str], kind: str) -> pd.DataFrame:
    """A one-row output of the model's columns and dtypes (float32 probabilities, and for a
    multiclass task the `predicted` class name), for the signature."""
    frame = pd.DataFrame(
        {name: np.full(1, 1 / len(label_names), np.float32) for name in label_names}
    )
    if kind == "multiclass":
        frame[PREDICTED_COLUMN] = [label_names[0]]
    return frame


def model_to_log(folder: Path, label_names: list[str], kind: str, image_size: int) -> dict:
    """The arguments of `Tracker.log_model` for a model folder.

    MLflow checks the logged model by loading it as `mlflow.pyfunc.load_model` does and
    predicting its input example (a mid-grey image, `write_example`); it warns when that fails.

    Args:
        folder: a model folder (`qcxr.predict.bundle.write_bundle`).
        label_names: the task's labels (the output columns).
        kind: the task's kind.
        image_size: the backbone's input size (the example's side).

    Returns:
        {python_model, artifacts, input_example, signature, pip_requirements, name}.
    """
    example_path = write_example(folder, image_size)
    example = pd.DataFrame({IMAGE_COLUMN: [str(example_path)]})
    output = output_schema_example(list(label_names), kind)
    return {
        "python_model": QcxrModel(),
        "artifacts": {BUNDLE_ARTIFACT: str(folder)},
        "input_example": example,
        "signature": infer_signature(example, output, params={"batch_size": 32}),
        "pip_requirements": requirements(),
        "name": MODEL_NAME,
    }


def load_uri(model_uri: str, tracking_uri: str) -> LoadedModel:
    """The model an MLflow URI names, loaded as `mlflow.pyfunc.load_model` loads it.

    Args:
        model_uri: `runs:/<run id>/model`, `models:/<name>/<version>` or `models:/<model id>`.
        tracking_uri: the MLflow store (and registry).

    Returns:
        The pyfunc model's LoadedModel (the object its `predict` uses).

    Raises:
        BundleError: the URI names nothing in the store, or not a qcxr model.
    """
    from mlflow.exceptions import MlflowException

    from qcxr.tracking.mlflow import artifact_bars, global_tracking_uri

    try:
        with global_tracking_uri(tracking_uri), artifact_bars(sys.stderr.isatty()):
            loaded = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as err:
        raise BundleError(
            f"no model at {model_uri} in {tracking_uri}: {err}. Fix: pass a finished run's id "
            "(its model is runs:/<id>/model), models:/<name>/<version> of a registered model, "
            "or a run folder; --tracking-uri names the store"
        ) from err
    model = loaded.unwrap_python_model()
    if not isinstance(model, QcxrModel):
        raise BundleError(f"{model_uri} is a {type(model).__name__}, not a qcxr model")
    return model.model
