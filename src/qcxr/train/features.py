"""Frozen backbone => features computed once per image, cached on disk, and head-only batches.

A frozen backbone maps each (un-augmented) image to the same features every epoch, so they are
computed once and stored as one safetensors file per split under the cache folder, keyed by the
backbone's identity (its name and a fingerprint of its weights: the checkpoint hash, or a hash of
the randomly initialised values, which covers the init seed), the preprocessing and the split's
image list. `FeatureBatches` then serves batches of features in exactly the order the data module
would serve images (the same seed/epoch permutation), so head-only training matches the image
path with augmentation off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors.numpy import load_file, save_file

log = logging.getLogger(__name__)


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


def split_key(identity: dict, split: str, image_ids: Sequence[str]) -> str:
    """Cache key of one split's features.

    Args:
        identity: what determines the features besides the images (backbone name, weights
            fingerprint, preprocessing, data source).
        split: the split name.
        image_ids: the split's images in index order.

    Returns:
        Hex digest naming the cache file.
    """
    h = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    h.update(split.encode())
    for i in image_ids:
        h.update(str(i).encode() + b"\0")
    return h.hexdigest()[:32]


def cached_features(
    data: Any,
    featurize: Callable[[np.ndarray], jax.Array],
    identity: dict,
    cache_dir: str | os.PathLike | None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Features f32[N, D] of every split in index order, from the cache or computed and stored.

    Args:
        data: a data module (splits, batches(split, epoch), image_ids(split)) whose train split
            is not augmented.
        featurize: images f32[B, S, S, 3] -> features f32[B, D] (jitted by the caller).
        identity: see `split_key`.
        cache_dir: folder for the feature files; None keeps them in memory only.
        progress: show a progress bar while computing.

    Returns:
        split -> f32[N, D].
    """
    from tqdm.auto import tqdm

    out: dict[str, np.ndarray] = {}
    folder = Path(cache_dir) / "features" if cache_dir is not None else None
    for split in data.splits:
        ids = data.image_ids(split)
        key = split_key(identity, split, ids)
        path = folder / f"{key}.safetensors" if folder is not None else None
        if path is not None and path.is_file():
            out[split] = load_file(str(path))["features"]
            log.info("features of %s: %d from cache %s", split, len(ids), path)
            continue
        start = time.perf_counter()
        feats: np.ndarray | None = None
        # Eval order (identity) for every split; train is not augmented here (see the caller).
        batches = data.batches(split, 0) if split != "train" else _identity_batches(data, split)
        for batch in tqdm(batches, total=data.num_batches(split), disable=not progress,
                          desc=f"features {split}", leave=False):
            f = np.asarray(featurize(batch["image"]), np.float32)
            if feats is None:
                feats = np.zeros((len(ids), f.shape[1]), np.float32)
            rows = np.asarray(batch["index"])
            keep = rows >= 0
            feats[rows[keep]] = f[keep]
        out[split] = feats
        log.info("features of %s: computed %d in %.1f s", split, len(ids),
                 time.perf_counter() - start)
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
