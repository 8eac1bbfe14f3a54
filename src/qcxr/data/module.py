"""`DataModule`: cached, keyed, fixed-size masked batches for every split of a task."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from joblib import Parallel, delayed
from PIL import Image

from qcxr.data.augment import augment_device, augment_host, augment_params, epoch_order
from qcxr.data.cache import ImageCache, cache_key
from qcxr.data.index import DataError, SplitIndex, _listing, check_one_class, check_split
from qcxr.data.preprocess import (
    PreprocessConfig,
    center_crop,
    decode_image,
    make_preprocess_config,
    normalisation_table,
    normalise,
    preprocess_from_mapping,
    preprocess_uint8,
    to_uint8,
)

log = logging.getLogger(__name__)

SPLIT_ORDER = ("train", "val", "test", "external")


def _closing(generator):
    """Yield from a joblib generator; when the consumer stops early, cancel the prefetched
    batches quietly (joblib warns about cancelled tasks, which is expected here)."""
    try:
        for item in generator:  # noqa: UP028 - `yield from` would close it before we can guard
            yield item
    except GeneratorExit:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tasks which were still being processed")
            generator.close()
        raise


class ImageStore:
    """Where a split's images come from: an identity for the cache key and a decoder."""

    def __len__(self) -> int:
        raise NotImplementedError

    def identity(self, i: int) -> str:
        """A string that changes whenever image i's content may change."""
        raise NotImplementedError

    def read(self, i: int) -> np.ndarray:
        """Image i decoded to uint8 [H, W, C], C in {1, 3}; raises OSError/ValueError if bad."""
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """Image i for messages (its path)."""
        return self.identity(i)


class FileImages(ImageStore):
    """Image files; identity = absolute path, size and modification time.

    Args:
        paths: one path per image.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [os.fspath(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def identity(self, i: int) -> str:
        path = os.path.abspath(self.paths[i])
        try:
            st = os.stat(path)
        except OSError:
            return f"file:{path}:missing"
        return f"file:{path}:{st.st_size}:{st.st_mtime_ns}"

    def read(self, i: int) -> np.ndarray:
        return decode_image(self.paths[i])

    def describe(self, i: int) -> str:
        return self.paths[i]


class ArrayImages(ImageStore):
    """Images held in an array (MedMNIST npz); identity = a prefix naming the array + index.

    Args:
        images: [N, H, W(, C)] array (memory-mapped or loaded).
        identity_prefix: names the array's source, e.g. "npz:/path:size:mtime:train_images".
    """

    def __init__(self, images: np.ndarray, identity_prefix: str):
        self.images = images
        self.prefix = identity_prefix

    def __len__(self) -> int:
        return len(self.images)

    def identity(self, i: int) -> str:
        return f"{self.prefix}:{i}"

    def read(self, i: int) -> np.ndarray:
        return to_uint8(np.asarray(self.images[i]))


class DataModule:
    """Every split of a task as fixed-size, masked, cached and (for train) augmented batches.

    Images are preprocessed once (the backbone's image processor up to the crop), cached as
    zstd-compressed safetensors in diskcache, fetched by joblib threads and augmented at run time
    from keys derived only from (seed, epoch, sample index), so two runs with the same seed and
    different heads see identical batches. Built by the factories in `qcxr.data`.

    Args:
        splits: split name -> (index, image store); names from train, val, test, external.
        label_names: the task's labels, in order (columns of every index's labels).
        batch_size: examples per batch B; the last batch is padded to B and masked.
        seed: run seed; data order and augmentation derive from it only.
        preprocessing: the backbone's preprocessing (image_size, resize_size, mean, std,
            resample, resize_mode: `dataclasses.asdict(backbone.preprocessing)`, or a
            PreprocessConfig); run.py always passes it. Give it or image_size, not both.
        image_size: crop size, for callers without a backbone (tests, benchmarks): then the
            ResNet50 processor's resize (bicubic, shortest side), crop and ImageNet mean/std.
        resize_size: with image_size only: shortest side before cropping (256 for 224).
        cache_dir: preprocessed-image cache folder (None: a temporary folder).
        num_threads: joblib threads that fetch, decode and augment.
        augment: augment the train split (flip, rotation, random crop); val/test never are.
        augment_on: "host" (Pillow in the loader threads), "device" (dm-pix, batched, jitted on
            the accelerator) or "auto" (device when JAX's default backend is not the CPU).
        min_positives: positives each label needs in every split (0 disables the check).
        name: source name for logs.
        kind: the task's kind: "multilabel", or "multiclass" (labels stay one-hot bool[N, C],
            and every row must hold exactly one class: checked here, before any image is read).
    """

    def __init__(
        self,
        splits: Mapping[str, tuple[SplitIndex, ImageStore]],
        label_names: Sequence[str],
        *,
        batch_size: int,
        seed: int,
        preprocessing: Mapping | PreprocessConfig | None = None,
        image_size: int | None = None,
        resize_size: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        num_threads: int = 2,
        augment: bool = True,
        augment_on: str = "auto",
        min_positives: int = 1,
        name: str = "data",
        kind: str = "multilabel",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if augment_on not in ("auto", "host", "device"):
            raise ValueError(f"augment_on must be auto, host or device, got {augment_on!r}")
        unknown = set(splits) - set(SPLIT_ORDER)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; use {SPLIT_ORDER}")
        self.label_names = tuple(label_names)
        self.num_labels = len(self.label_names)
        self.splits = tuple(s for s in SPLIT_ORDER if s in splits)
        self._index = {s: splits[s][0] for s in self.splits}
        self._images = {s: splits[s][1] for s in self.splits}
        for s in self.splits:
            index = self._index[s]
            if index.labels.shape != (len(index), self.num_labels):
                raise ValueError(
                    f"split {s}: labels have shape {index.labels.shape}, expected "
                    f"({len(index)}, {self.num_labels})"
                )
            if len(self._images[s]) != len(index):
                raise ValueError(f"split {s}: {len(self._images[s])} images for {len(index)} rows")
            check_split(s, index, self.label_names, min_positives, kind=kind)
            if kind == "multiclass":
                check_one_class(s, index, self.label_names)
        if kind not in ("multilabel", "multiclass"):
            raise ValueError(f"kind must be multilabel or multiclass, got {kind!r}")
        self.kind = kind
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        if preprocessing is not None:
            if image_size is not None or resize_size is not None:
                raise ValueError(
                    "give the data either preprocessing (the backbone's) or image_size/"
                    f"resize_size, not both (got preprocessing={preprocessing!r}, image_size="
                    f"{image_size}, resize_size={resize_size}). Fix: drop data.image_size / "
                    "data.resize_size; set backbone.image_size / backbone.resize_size instead."
                )
            self.preprocess = (
                preprocessing
                if isinstance(preprocessing, PreprocessConfig)
                else preprocess_from_mapping(preprocessing)
            )
        elif image_size is None:
            raise ValueError("DataModule needs preprocessing (the backbone's) or image_size")
        else:
            self.preprocess = make_preprocess_config(image_size, resize_size)
        self.image_size = self.preprocess.image_size
        self.num_threads = max(1, int(num_threads))
        self.augment = bool(augment)
        if augment_on == "auto":
            augment_on = "device" if jax.default_backend() != "cpu" else "host"
        self.augment_on = augment_on
        self.name = name
        self.cache = ImageCache(cache_dir)
        self.mean, self.std = self.preprocess.mean, self.preprocess.std
        self._table = normalisation_table(self.mean, self.std)
        self._keys: dict[str, list[str]] = {}
        self._prepared: set[str] = set()
        log.info(
            "%s: %s; %d labels; batch %d; %d px (from %d, %s, mean %s, std %s); augment %s on "
            "%s; cache %s",
            name,
            ", ".join(f"{s} {len(self._index[s])}" for s in self.splits),
            self.num_labels,
            self.batch_size,
            self.image_size,
            self.preprocess.resize_size,
            self.preprocess.resize_mode,
            self.mean,
            self.std,
            self.augment,
            self.augment_on,
            self.cache.directory,
        )

    # ---- sizes and metadata -------------------------------------------------------------------
    def _check(self, split: str) -> None:
        if split not in self._index:
            raise KeyError(f"no split {split!r}; this data has {self.splits}")

    def num_examples(self, split: str) -> int:
        """Examples in a split."""
        self._check(split)
        return len(self._index[split])

    def num_batches(self, split: str) -> int:
        """Batches per pass over a split (the last one padded)."""
        return -(-self.num_examples(split) // self.batch_size)

    def image_ids(self, split: str) -> list[str]:
        """Image identifiers of a split, in index order (for prediction CSVs)."""
        self._check(split)
        return list(self._index[split].ids)

    def labels(self, split: str) -> np.ndarray:
        """bool[N, L] labels of a split, in index order."""
        self._check(split)
        return self._index[split].labels.copy()

    def patients(self, split: str) -> list[str]:
        """Patient identifier per image of a split, in index order."""
        self._check(split)
        return list(self._index[split].patients)

    def train_label_counts(self) -> dict[str, int]:
        """Positives per label in the train split."""
        counts = self._index["train"].labels.sum(axis=0) if "train" in self._index else None
        if counts is None:
            raise KeyError(f"no train split; this data has {self.splits}")
        return {n: int(c) for n, c in zip(self.label_names, counts, strict=True)}

    def split_digest(self, split: str) -> str:
        """Hex SHA-256 of what a split is: source name, label names, ids, labels and each image's
        identity (file path, size and mtime; array source and index), not its preprocessing.

        Args:
            split: the split.

        Returns:
            64 hex characters; equal for two splits only when all of the above are equal.
        """
        self._check(split)
        index, images = self._index[split], self._images[split]
        h = hashlib.sha256()
        for part in (self.name, *self.label_names, *index.ids):
            h.update(part.encode() + b"\0")
        h.update(np.ascontiguousarray(index.labels, dtype=np.bool_).tobytes())
        for i in range(len(images)):
            h.update(images.identity(i).encode() + b"\0")
        return h.hexdigest()

    # ---- cache --------------------------------------------------------------------------------
    def _split_keys(self, split: str) -> list[str]:
        if split not in self._keys:
            store, digest = self._images[split], self.preprocess.digest()
            self._keys[split] = [cache_key(store.identity(i), digest) for i in range(len(store))]
        return self._keys[split]

    def image_keys(self, split: str) -> list[str]:
        """The image-cache key of every image of a split, in index order.

        A key hashes the source's identity (file path, size and modification time; the npz
        file and row; the synthetic generator's version, data_seed, resolution, split and size)
        with the preprocessing digest, so it changes whenever the cached image may. Anything
        derived from the images (e.g. cached features) keys on these.

        Args:
            split: the split.

        Returns:
            One hex digest per image.
        """
        self._check(split)
        return list(self._split_keys(split))

    def _build(self, split: str, i: int) -> np.ndarray:
        return preprocess_uint8(self._images[split].read(i), self.preprocess)

    def _fetch(self, split: str, i: int) -> np.ndarray:
        return self.cache.get_or_build(self._split_keys(split)[i], lambda: self._build(split, i))

    def _try_build(self, split: str, i: int, key: str) -> tuple[str, bool] | None:
        # (message, too large) for an image that cannot be used, else None.
        try:
            self.cache.put(key, self._build(split, i))
        except Image.DecompressionBombError as err:
            return f"{self._images[split].describe(i)}: {err}", True
        except (OSError, ValueError, SyntaxError) as err:
            return f"{self._images[split].describe(i)}: {type(err).__name__}: {err}", False
        return None

    def prepare(self, splits: Sequence[str] | None = None) -> None:
        """Preprocess and cache every image of the splits not cached yet (the cold pass).

        Call it before training: it reads every image of every split once, so an unreadable
        test image fails at start rather than after the last epoch.

        Args:
            splits: which splits; default all.

        Raises:
            DataError: unreadable images of any of the splits, all named at once (per split,
                with counts and the fix); the readable ones stay cached, the bad ones are not.
        """
        problems, too_large = [], False
        for split in splits or self.splits:
            self._check(split)
            if split in self._prepared:
                continue
            keys = self._split_keys(split)
            todo = [i for i, k in enumerate(keys) if k not in self.cache]
            if todo:
                start = time.perf_counter()
                log.info(
                    "%s/%s: preprocessing %d images into the cache", self.name, split, len(todo)
                )
                with Parallel(n_jobs=self.num_threads, prefer="threads") as parallel:
                    errors = parallel(delayed(self._try_build)(split, i, keys[i]) for i in todo)
                errors = [e for e in errors if e]
                if errors:
                    too_large = too_large or any(big for _, big in errors)
                    problems.append(
                        f"{len(errors)} of {len(keys)} images of split {split!r} could not be "
                        f"read:{_listing([m for m, _ in errors])}"
                    )
                    continue
                log.info(
                    "%s/%s: cached %d images in %.1f s",
                    self.name,
                    split,
                    len(todo),
                    time.perf_counter() - start,
                )
            self._prepared.add(split)
        if problems:
            fix = (
                "Fix: re-download or replace these files, or remove their rows from the label file."
            )
            if too_large:
                fix += (
                    " An image over Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS = "
                    f"{Image.MAX_IMAGE_PIXELS} pixels; refused above twice that) is refused "
                    "unread: downsample it beforehand (it is resized to "
                    f"{self.preprocess.resize_size} px here anyway) or, if you trust the file, "
                    "raise PIL.Image.MAX_IMAGE_PIXELS before building the data."
                )
            raise DataError("\n".join(problems) + "\n" + fix)

    # ---- batches ------------------------------------------------------------------------------
    def order(self, split: str, epoch: int) -> np.ndarray:
        """The sample order of a pass: a (seed, epoch) permutation for train, else identity."""
        n = self.num_examples(split)
        if split == "train":
            return epoch_order(self.seed, epoch, n)
        return np.arange(n, dtype=np.int64)

    def _host_batch(self, split, rows, params) -> dict:
        size, index = self.image_size, self._index[split]
        crops = [None] * len(rows)
        for j, i in enumerate(rows):
            if i < 0:
                continue
            cached = self._fetch(split, int(i))
            if params is None:
                crops[j] = center_crop(cached, size)
            else:
                crops[j] = augment_host(
                    cached, params.flip[j], params.angle[j], params.top[j], params.left[j], size
                )
        channels = max(c.shape[2] for c in crops if c is not None)
        batch = np.zeros((self.batch_size, size, size, channels), np.uint8)
        for j, crop in enumerate(crops):
            if crop is not None:
                batch[j] = crop
        images = normalise(batch, self._table)
        images[rows < 0] = 0.0
        return self._finish(index, rows, images)

    def _raw_batch(self, split, rows) -> np.ndarray:
        arrays = [self._fetch(split, int(i)) if i >= 0 else None for i in rows]
        channels = max(a.shape[2] for a in arrays if a is not None)
        r = self.preprocess.resize_size
        out = np.zeros((self.batch_size, r, r, channels), np.uint8)
        for j, a in enumerate(arrays):
            if a is not None:
                out[j] = a
        return out

    def _finish(self, index: SplitIndex, rows: np.ndarray, images) -> dict:
        mask = rows >= 0
        labels = np.zeros((self.batch_size, self.num_labels), bool)
        labels[mask] = index.labels[rows[mask]]
        return {"image": images, "labels": labels, "mask": mask, "index": rows.astype(np.int64)}

    def batches(self, split: str, epoch: int = 0) -> Iterator[dict]:
        """Fixed-size batches of one pass over a split.

        Train is shuffled and (if `augment`) augmented from keys derived only from
        (seed, epoch, sample index); val/test/external are neither. The first call per split
        preprocesses whatever is not cached yet.

        Args:
            split: train, val, test or external.
            epoch: epoch number (selects the order and augmentation of train).

        Yields:
            {"image": float32[B, S, S, 3] normalised (a jax.Array on the device path),
             "labels": bool[B, L], "mask": bool[B], "index": int64[B] (-1 for padding)}.
        """
        self.prepare([split])
        order = self.order(split, epoch)
        n, b = len(order), self.batch_size
        padded = np.full(self.num_batches(split) * b, -1, np.int64)
        padded[:n] = order
        chunks = padded.reshape(-1, b)
        params = None
        if split == "train" and self.augment:
            params = augment_params(
                self.seed, epoch, np.arange(n), self.image_size, self.preprocess.resize_size
            )
        if params is not None and self.augment_on == "device":
            yield from self._device_batches(split, chunks, params)
            return

        def task(rows):
            p = params.take(np.where(rows >= 0, rows, 0)) if params is not None else None
            return self._host_batch(split, rows, p)

        with Parallel(n_jobs=self.num_threads, prefer="threads", return_as="generator") as par:
            yield from _closing(par(delayed(task)(rows) for rows in chunks))

    def _device_batches(self, split, chunks, params) -> Iterator[dict]:
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        index = self._index[split]
        with Parallel(n_jobs=self.num_threads, prefer="threads", return_as="generator") as par:
            raws = _closing(par(delayed(self._raw_batch)(split, rows) for rows in chunks))
            for rows, raw in zip(chunks, raws, strict=False):
                p = params.take(np.where(rows >= 0, rows, 0))
                images = augment_device(
                    jnp.asarray(raw),
                    p.flip,
                    p.angle,
                    p.top,
                    p.left,
                    mean,
                    std,
                    size=self.image_size,
                )
                yield self._finish(index, rows, images)
