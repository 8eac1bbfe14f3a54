"""Use a trained run: its model folder, predictions on image files, the MLflow pyfunc model.

`python -m qcxr.predict <run id | models:/name/version | run folder> <images or folders...>`
writes a CSV of probabilities (docs/predict.md). `predict_frame` is what the CLI and the pyfunc
model (`qcxr.predict.pyfunc`) both call, so their numbers are the same.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from qcxr.predict.bundle import BundleError, LoadedModel, load_bundle, write_bundle
from qcxr.predict.images import ImageError, batches, expand, prepare_all

PATH_COLUMN = "path"  # the CLI's first column
IMAGE_COLUMN = "image"  # the pyfunc model's input column
PREDICTED_COLUMN = "predicted"  # multiclass: the arg-max class

__all__ = [
    "BundleError",
    "ImageError",
    "LoadedModel",
    "expand",
    "load_bundle",
    "predict_frame",
    "write_bundle",
]


def predict_frame(
    model: LoadedModel,
    sources: Sequence[str | os.PathLike | np.ndarray],
    batch_size: int = 32,
    on_bad: str = "error",
    progress: bool = False,
) -> pd.DataFrame:
    """Probabilities of images: one row per readable input, one column per label or class.

    Args:
        model: a loaded model folder.
        sources: image paths, or decoded images as arrays [H, W(, C)].
        batch_size: images per compiled batch (the last one padded); fewer inputs make one
            batch of their number.
        on_bad: "error" or "skip" (see `qcxr.predict.images.prepare_all`).
        progress: a tqdm bar over the batches.

    Returns:
        A DataFrame indexed by input position, columns the labels in the run's order (float32
        probabilities), and for a multiclass task `predicted` (the arg-max class's name).

    Raises:
        ImageError: an unreadable input (on_bad="error"), or none left.
    """
    prepared = prepare_all(sources, model.preprocessing, on_bad=on_bad)
    # Fewer inputs than a batch: one batch of just them (a single example costs one image's
    # forward pass, not batch_size of them); otherwise fixed-size batches, one compiled shape.
    batch_size = min(int(batch_size), len(prepared.crops))
    out = []
    total = math.ceil(len(prepared.crops) / batch_size)
    for images in tqdm(
        batches(prepared.crops, model.table, batch_size),
        total=total,
        desc="predict",
        disable=not progress,
    ):
        out.append(model.probabilities(images))
    probs = np.concatenate(out)[: len(prepared.crops)]
    frame = pd.DataFrame(probs, columns=model.label_names, index=prepared.kept)
    if model.kind == "multiclass":
        frame[PREDICTED_COLUMN] = [model.label_names[j] for j in probs.argmax(axis=1)]
    return frame
