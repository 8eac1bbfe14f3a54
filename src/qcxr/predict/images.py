"""Images for prediction: the inputs named, decoded and preprocessed exactly as an evaluation batch.

An image goes through what a val/test batch of `qcxr.data.DataModule` applies: decode
(`decode_image`: 8/16-bit PNG, JPEG, grayscale or RGB), resize and centre-crop to the resize size
(`preprocess_uint8`, the cached form), centre crop to the backbone's input size, and rescale and
normalise through the processor's lookup table (`normalise`). So a prediction on a test image
equals the run's own test prediction for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from qcxr.data.preprocess import (
    PreprocessConfig,
    center_crop,
    decode_image,
    normalise,
    preprocess_uint8,
    to_uint8,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ON_BAD = ("error", "skip")


class ImageError(ValueError):
    """Images that cannot be read; the message names each one and the fix."""


def expand(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """The image files named: files as given, folders searched recursively (sorted).

    Args:
        inputs: image paths and folders; a folder contributes every file under it whose suffix
            is an image's (IMAGE_SUFFIXES, any case).

    Returns:
        The paths, in the order given (a folder's files sorted); a path that does not exist is
        kept, so that loading names it.

    Raises:
        ImageError: a folder without any image file.
    """
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise ImageError(
                    f"folder {path} holds no image file ({', '.join(IMAGE_SUFFIXES)}); "
                    "name the images or another folder"
                )
            out.extend(found)
        else:
            out.append(os.fspath(item))
    return out


def prepare(source: str | os.PathLike | np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One image as an evaluation batch holds it before normalisation.

    Args:
        source: a path, or a decoded image [H, W(, C)] of any integer or float dtype.
        config: the backbone's preprocessing.

    Returns:
        uint8 [S, S, C], S = config.image_size, C in {1, 3}.

    Raises:
        OSError, ValueError: an unreadable, missing or malformed image.
    """
    if isinstance(source, np.ndarray):
        image = to_uint8(source)
    else:
        image = decode_image(os.fspath(source))
    return np.ascontiguousarray(center_crop(preprocess_uint8(image, config), config.image_size))


def describe(source: object, i: int) -> str:
    """An input for messages: its path, or `array <i>`."""
    return f"array {i}" if isinstance(source, np.ndarray) else os.fspath(source)


@dataclass
class Prepared:
    """The inputs that could be read, preprocessed, and those that could not.

    Attributes:
        crops: uint8 [S, S, C] per readable input, in input order.
        kept: the input positions of `crops`.
        bad: (input, reason) of each unreadable input.
    """

    crops: list[np.ndarray] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)


def _try(source, i: int, config: PreprocessConfig) -> np.ndarray | tuple[str, str]:
    try:
        return prepare(source, config)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return describe(source, i), f"{type(err).__name__}: {err}"


def prepare_all(
    sources: Sequence[str | os.PathLike | np.ndarray],
    config: PreprocessConfig,
    on_bad: str = "error",
    num_threads: int = 2,
) -> Prepared:
    """Read and preprocess every input before anything is computed.

    Args:
        sources: paths or decoded arrays.
        config: the backbone's preprocessing.
        on_bad: "error" (raise naming every unreadable input) or "skip" (leave them out, with a
            warning that counts them).
        num_threads: decoding threads.

    Returns:
        The Prepared inputs.

    Raises:
        ImageError: with on_bad="error", any unreadable or missing input (all named at once);
            with either, when no input is left.
        ValueError: an unknown on_bad.
    """
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")
    with ThreadPoolExecutor(max(1, int(num_threads))) as pool:
        results = list(pool.map(lambda a: _try(a[1], a[0], config), enumerate(sources)))
    out = Prepared()
    for i, result in enumerate(results):
        if isinstance(result, tuple):
            out.bad.append(result)
        else:
            out.crops.append(result)
            out.kept.append(i)
    if out.bad:
        listing = "".join(f"\n  {name}: {why}" for name, why in out.bad[:20])
        more = f"\n  ... and {len(out.bad) - 20} more" if len(out.bad) > 20 else ""
        if on_bad == "error":
            raise ImageError(
                f"{len(out.bad)} of {len(sources)} images could not be read:{listing}{more}\n"
                "Fix: replace or leave out these files, or pass --on-bad skip to predict the rest"
            )
        log.warning(
            "skipped %d of %d images that could not be read:%s%s",
            len(out.bad),
            len(sources),
            listing,
            more,
        )
    if not out.crops:
        raise ImageError(f"none of the {len(sources)} inputs is a readable image")
    return out


def batches(
    crops: Sequence[np.ndarray], table: np.ndarray, batch_size: int
) -> Iterator[np.ndarray]:
    """Normalised fixed-size batches, the last one padded with zeros (as DataModule pads).

    Args:
        crops: uint8 [S, S, C] images.
        table: the normalisation table (`normalisation_table(mean, std)`).
        batch_size: images per batch B.

    Yields:
        f32[B, S, S, 3]; rows past the inputs are zeros.
    """
    size = crops[0].shape[0]
    for start in range(0, len(crops), batch_size):
        chunk = crops[start : start + batch_size]
        channels = max(c.shape[2] for c in chunk)
        raw = np.zeros((batch_size, size, size, channels), np.uint8)
        for j, crop in enumerate(chunk):
            raw[j] = crop  # one channel broadcasts to three, as in DataModule's batches
        images = normalise(raw, table)
        images[len(chunk) :] = 0.0
        yield images
