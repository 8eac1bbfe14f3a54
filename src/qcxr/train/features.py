"""Frozen backbone => features computed once per image, cached on disk, and head-only batches.

A frozen backbone maps each (un-augmented) image to the same features every epoch, so they are
computed once and stored as one safetensors file per split under the cache folder. The file's
key (`feature_keys`, the one place it is built) covers everything the features depend on:

- each input image's image-cache key, in order (`DataModule.image_keys`: the source's identity,
  i.e. file path, size and modification time, the npz file and row, or the synthetic
  generator's version and data_seed, together with the preprocessing digest);
- what is fed to the backbone: the data's whole preprocessing (crop and resize sizes, resize
  mode, resampling filter, normalisation mean/std), which must be the backbone's own;
- the backbone: its name, its module's hyperparameters, its checkpoint id and a fingerprint of
  the weights actually used (which covers the init seed of a random backbone), the compute dtype;
- `FEATURES_VERSION` of this code.

Two datasets that share image ids or a source name therefore never share features. A cache file
that cannot be read back is recomputed with a warning. `FeatureBatches` then serves batches of
features in exactly the order the data module would serve images (the same seed/epoch
permutation), so head-only training matches the image path with augmentation off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors.numpy import load_file, save_file

log = logging.getLogger(__name__)

FEATURES_VERSION = 2  # bump when the same inputs would give other features (e.g. batching)


def tree_fingerprint(tree: Any) -> str:
    """sha256 over the shapes, dtypes and bytes of every leaf of a pytree.

    Args:
        tree: arrays (e.g. backbone variables).

    Returns:
        Hex digest.
    """
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}:{arr.shape}:{arr.dtype}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def feature_keys(data: Any, model: Any, params: dict, constants: dict) -> dict[str, str]:
    """The cache key of each split's features: everything the features depend on.

    Args:
        data: a data module (splits, image_keys(split), preprocess: its PreprocessConfig).
        model: the classifier (backbone with name, module, weights_id, feature_dim; and
            compute_dtype).
        params: its parameters; only params["backbone"] is read.
        constants: its constants (the backbone's batch statistics).

    Returns:
        split -> hex digest naming the split's cache file.

    Raises:
        ValueError: the data was prepared differently from what the backbone states (features
            of wrongly prepared images must never be computed, let alone cached).
    """
    bb = model.backbone
    prepared = _preprocessing_dict(data.preprocess)
    stated = _preprocessing_dict(bb.preprocessing)
    if prepared != stated:
        raise ValueError(
            f"the data prepares images as {prepared}, but backbone {bb.name!r} expects "
            f"{stated}. Fix: build the data with preprocessing=dataclasses.asdict("
            "backbone.preprocessing) (run.py does)."
        )
    weights = {"params": params["backbone"], "constants": constants.get("backbone", {})}
    identity = {
        "version": FEATURES_VERSION,
        "backbone": bb.name,
        "module": repr(bb.module),
        "weights_id": bb.weights_id,
        "weights": tree_fingerprint(weights),
        "feature_dim": int(bb.feature_dim),
        "compute_dtype": str(model.compute_dtype),
        "preprocessing": prepared,
    }
    head = json.dumps(identity, sort_keys=True).encode()
    keys = {}
    for split in data.splits:
        h = hashlib.sha256(head)
        h.update(split.encode() + b"\0")
        for image_key in data.image_keys(split):
            h.update(image_key.encode() + b"\0")
        keys[split] = h.hexdigest()[:32]
    return keys


def _preprocessing_dict(prep: Any) -> dict[str, Any]:
    """The six preprocessing fields as plain JSON values (data's and backbone's compare equal)."""
    return {
        "image_size": int(prep.image_size),
        "resize_size": int(prep.resize_size),
        "mean": [float(x) for x in prep.mean],
        "std": [float(x) for x in prep.std],
        "resample": int(prep.resample),
        "resize_mode": str(prep.resize_mode),
    }


def _load(path: Path, num_images: int) -> np.ndarray | None:
    """A split's cached features f32[N, D], or None (with a warning) if the file is unusable."""
    try:
        feats = load_file(str(path))["features"]
        if feats.ndim != 2 or len(feats) != num_images or feats.dtype != np.float32:
            raise ValueError(
                f"features of shape {feats.shape} and dtype {feats.dtype}, expected "
                f"({num_images}, D) float32"
            )
    except Exception as err:  # safetensors, OS and key errors all mean "do not trust it"
        log.warning(
            "feature cache file %s is unreadable (%s: %s): recomputing it",
            path,
            type(err).__name__,
            err,
        )
        return None
    return feats


def cached_features(
    data: Any,
    model: Any,
    params: dict,
    constants: dict,
    cache_dir: str | os.PathLike | None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Features f32[N, D] of every split in index order, from the cache or computed and stored.

    Args:
        data: a data module (splits, batches(split, epoch), image_ids(split), num_batches,
            and what `feature_keys` reads) whose train split is not augmented.
        model: the classifier; `model.features(params, constants, images f32[B, S, S, 3])`
            gives f32[B, D].
        params: its parameters (the frozen backbone's are read).
        constants: its constants.
        cache_dir: folder for the feature files; None keeps them in memory only.
        progress: show a progress bar while computing.

    Returns:
        split -> f32[N, D].

    Raises:
        ValueError: the data module augments its train split (features of one random view
            would be cached as if they were the image's).
    """
    from tqdm.auto import tqdm

    if getattr(data, "augment", False):
        raise ValueError(
            "cached features need un-augmented images, but the data module augments its train "
            "split; build it with augment=False"
        )
    featurize = jax.jit(lambda images: model.features(params, constants, images))
    keys = feature_keys(data, model, params, constants)
    out: dict[str, np.ndarray] = {}
    folder = Path(cache_dir) / "features" if cache_dir is not None else None
    for split in data.splits:
        ids = data.image_ids(split)
        path = folder / f"{keys[split]}.safetensors" if folder is not None else None
        if path is not None and path.is_file():
            cached = _load(path, len(ids))
            if cached is not None:
                out[split] = cached
                log.info("features of %s: %d from cache %s", split, len(ids), path)
                continue
        start = time.perf_counter()
        feats: np.ndarray | None = None
        # Eval order (identity) for every split; train is not augmented here (checked above).
        batches = data.batches(split, 0) if split != "train" else _identity_batches(data, split)
        for batch in tqdm(
            batches,
            total=data.num_batches(split),
            disable=not progress,
            desc=f"features {split}",
            leave=False,
        ):
            f = np.asarray(featurize(batch["image"]), np.float32)
            if feats is None:
                feats = np.zeros((len(ids), f.shape[1]), np.float32)
            rows = np.asarray(batch["index"])
            keep = rows >= 0
            feats[rows[keep]] = f[keep]
        out[split] = feats
        log.info(
            "features of %s: computed %d in %.1f s", split, len(ids), time.perf_counter() - start
        )
        if path is not None:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file({"features": feats}, str(tmp))
            os.replace(tmp, path)  # atomic: parallel runs never read a partial file
    return out


def _identity_batches(data, split) -> Iterator[dict]:
    # The train split's batches of epoch 0 come in a permuted order; rows carry their index, so
    # any order fills the table.
    yield from data.batches(split, 0)


class FeatureBatches:
    """Batches of cached features with the data module's order, padding and mask.

    Args:
        data: the data module the features came from (order(split, epoch), labels(split),
            batch_size, splits, label_names, num_batches, image_ids).
        features: split -> f32[N, D] in index order.
    """

    def __init__(self, data: Any, features: dict[str, np.ndarray]):
        self.data = data
        self.features = features
        self.splits = data.splits
        self.label_names = data.label_names
        self.batch_size = data.batch_size
        self._labels = {s: data.labels(s) for s in data.splits}

    def num_batches(self, split: str) -> int:
        """Batches per pass over a split."""
        return self.data.num_batches(split)

    def image_ids(self, split: str) -> list[str]:
        """Image identifiers of a split, in index order."""
        return self.data.image_ids(split)

    def batches(self, split: str, epoch: int = 0) -> Iterator[dict]:
        """Fixed-size batches {"features" f32[B, D], "labels", "mask", "index"} of one pass."""
        order = self.data.order(split, epoch)
        b = self.batch_size
        padded = np.full(self.num_batches(split) * b, -1, np.int64)
        padded[: len(order)] = order
        feats, labels = self.features[split], self._labels[split]
        for rows in padded.reshape(-1, b):
            mask = rows >= 0
            safe = np.where(mask, rows, 0)
            x = feats[safe]
            x[~mask] = 0.0
            y = labels[safe] & mask[:, None]
            yield {"features": x, "labels": y, "mask": mask, "index": rows}
