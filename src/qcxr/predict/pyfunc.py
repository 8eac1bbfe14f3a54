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
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from PIL import Image

from qcxr.predict import IMAGE_COLUMN, predict_frame
from qcxr.predict.bundle import load_bundle

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

    def predict(self, context, model_input, params=None):
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


def model_to_log(folder: Path) -> dict:
    """The arguments of `Tracker.log_model` for a model folder.

    The folder is loaded once (as MLflow will load it) and predicts its input example, which
    gives the output schema of the signature.

    Args:
        folder: a model folder (`qcxr.predict.bundle.write_bundle`).

    Returns:
        {python_model, artifacts, input_example, signature, pip_requirements, name}.
    """
    model = load_bundle(folder)
    example_path = write_example(folder, model.preprocessing.image_size)
    example = pd.DataFrame({IMAGE_COLUMN: [str(example_path)]})
    output = predict_frame(model, list(example[IMAGE_COLUMN])).reset_index(drop=True)
    return {
        "python_model": QcxrModel(),
        "artifacts": {BUNDLE_ARTIFACT: str(folder)},
        "input_example": example,
        "signature": infer_signature(example, output, params={"batch_size": 32}),
        "pip_requirements": requirements(),
        "name": MODEL_NAME,
    }
