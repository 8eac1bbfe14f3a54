"""Decode and preprocess once: the backbone's Hugging Face image processor, reproduced in NumPy.

The paper preprocesses with the ResNet50 checkpoint's `AutoImageProcessor` (section III-B): a
ConvNeXt-style processor that resizes the shortest side to `int(crop / crop_pct)` (256 for 224)
with PIL bicubic, centre-crops to `crop`, rescales by 1/255 and normalises with ImageNet mean/std.

We split it at the crop. What is cached is the resized image centre-cropped to a square of the
resize size (uint8, 256x256 for ResNet50), because the training augmentation takes a random
224 crop of it; val/test take the centre 224 crop, which equals the processor's own crop
((W-256)//2 + 16 == (W-224)//2 for every W). Rescale and normalise run at load time through a
per-channel lookup table computed exactly as the processor computes it, so the result matches the
processor bit for bit and the cache holds uint8 (4x smaller and about 2x faster to fetch than
float32; see docs/data.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

# The legacy default when a caller gives only image_size/resize_size (tests, the loader
# benchmark). A run never relies on it: run.py hands over the backbone's own `Preprocessing`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 224 / 256  # microsoft/resnet-50 preprocessor_config.json
RESIZE_MODES = ("shortest_side", "square")
_PREPROCESS_VERSION = 2  # bump when the cached bytes for the same config would change


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are prepared for a backbone; all of it is part of every cache key.

    The same fields as `qcxr.models.backbones.Preprocessing` (data/ does not import models/:
    run.py hands the backbone's values over as a mapping).

    Attributes:
        image_size: crop fed to the backbone (224 for ResNet50).
        resize_size: resize target before the crop; cached images are this square.
        mean: per-channel (RGB) mean subtracted after rescaling to [0, 1].
        std: per-channel (RGB) standard deviation divided by after that.
        resample: PIL resampling filter (2 bilinear, 3 bicubic).
        resize_mode: "shortest_side" (keep the aspect ratio, then centre-crop to a square) or
            "square" (resize to resize_size x resize_size, torchvision `Resize((s, s))`).
    """

    image_size: int
    resize_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: int = 3
    resize_mode: str = "shortest_side"

    def digest(self) -> str:
        """A short hash of the config and the preprocessing code version."""
        blob = json.dumps({**asdict(self), "version": _PREPROCESS_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_preprocess_config(
    image_size: int,
    resize_size: int | None = None,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resample: int = 3,
    resize_mode: str = "shortest_side",
) -> PreprocessConfig:
    """A checked preprocessing config (defaults: the ResNet50 processor's).

    Args:
        image_size: crop size (224 for ResNet50; any size for the tiny backbone).
        resize_size: resize target; default `int(image_size / crop_pct)`.
        mean: 3 per-channel means.
        std: 3 per-channel standard deviations (positive).
        resample: PIL filter, 2 (bilinear) or 3 (bicubic).
        resize_mode: "shortest_side" or "square".

    Returns:
        The config.

    Raises:
        ValueError: a field out of range, naming it.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    resize = int(image_size / CROP_PCT) if resize_size is None else int(resize_size)
    if resize < image_size:
        raise ValueError(f"resize_size {resize} is smaller than image_size {image_size}")
    mean = tuple(float(x) for x in mean)
    std = tuple(float(x) for x in std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values (std positive), got {mean} and {std}")
    if int(resample) not in (2, 3):
        raise ValueError(f"resample must be 2 (bilinear) or 3 (bicubic), got {resample}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    return PreprocessConfig(int(image_size), resize, mean, std, int(resample), resize_mode)


PREPROCESSING_KEYS = ("image_size", "resize_size", "mean", "std", "resample", "resize_mode")


def preprocess_from_mapping(values: Mapping[str, Any]) -> PreprocessConfig:
    """A config from a backbone's preprocessing handed over as a mapping.

    Args:
        values: image_size, resize_size, mean, std, resample and resize_mode (e.g.
            `dataclasses.asdict(backbone.preprocessing)`); every key is required, so a
            half-specified preprocessing never falls back to another model's constants.

    Returns:
        The config.

    Raises:
        ValueError: a missing or unknown key, or a value out of range.
    """
    missing = [k for k in PREPROCESSING_KEYS if k not in values]
    unknown = sorted(set(values) - set(PREPROCESSING_KEYS))
    if missing or unknown:
        raise ValueError(
            f"preprocessing needs exactly the keys {list(PREPROCESSING_KEYS)}; missing "
            f"{missing}, unknown {unknown}. Fix: pass dataclasses.asdict(backbone.preprocessing)."
        )
    return make_preprocess_config(
        int(values["image_size"]),
        int(values["resize_size"]),
        mean=values["mean"],
        std=values["std"],
        resample=int(values["resample"]),
        resize_mode=str(values["resize_mode"]),
    )


def hf_processor_config(image_size: int = 224) -> dict:
    """A preprocessor_config equivalent to microsoft/resnet-50's, for the crop size.

    Args:
        image_size: crop size.

    Returns:
        The dict for `transformers.ConvNextImageProcessor(**config)` (built offline).
    """
    return {
        "crop_pct": CROP_PCT,
        "do_normalize": True,
        "do_resize": True,
        "do_rescale": True,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": image_size},
    }


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Bring a decoded image to uint8 [H, W, C] with C in {1, 3}.

    Grayscale stays one channel (broadcast to RGB at load time: 3x less to cache and augment);
    RGB(A) images whose channels are identical (grayscale stored as RGB, as in
    `nih-cxr14-64px`) become one channel too; alpha is dropped. 16-bit images are scaled to the
    full 8-bit range (x / 257, rounded), floats in [0, 1] by 255.

    Args:
        array: [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] of any integer or float dtype.

    Returns:
        uint8 [H, W, 1] or [H, W, 3].
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image of shape [H, W(, C)], got {a.shape}")
    if a.shape[2] in (2, 4):  # drop alpha (LA, RGBA)
        a = a[:, :, :-1]
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16 or (np.issubdtype(a.dtype, np.integer) and a.max(initial=0) > 255):
        a = np.clip(np.rint(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        scale = 255.0 if a.max(initial=0.0) <= 1.0 else 1.0
        a = np.clip(np.rint(a.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    else:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if (
        a.shape[2] == 3
        and np.array_equal(a[:, :, 0], a[:, :, 1])
        and np.array_equal(a[:, :, 0], a[:, :, 2])
    ):
        a = a[:, :, :1]
    return np.ascontiguousarray(a)


def decode_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Decode an image file (PNG 8/16-bit, JPEG; grayscale, RGB, RGBA) to uint8 [H, W, C].

    Args:
        source: a path or the file's bytes.

    Returns:
        uint8 [H, W, 1] (grayscale) or [H, W, 3].

    Raises:
        OSError: unreadable or truncated image.
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(fp) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
            im = im.convert("RGB" if im.mode != "1" else "L")
        if im.mode.startswith("I;16") or im.mode == "I":
            arr = np.asarray(im).astype(np.int64)
            return to_uint8(arr.astype(np.uint16) if arr.max(initial=0) <= 65535 else arr)
        if im.mode == "F":
            return to_uint8(np.asarray(im, dtype=np.float32))
        return to_uint8(np.asarray(im))


def resize_shortest(image: np.ndarray, size: int, resample: int = 3) -> np.ndarray:
    """Resize so the shortest side is `size`, as transformers does (long side truncated).

    Args:
        image: uint8 [H, W, C].
        size: target shortest side.
        resample: PIL filter.

    Returns:
        uint8 [h, w, C] with min(h, w) == size.
    """
    h, w = image.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_h, new_w = (new_long, size) if w <= h else (size, new_long)
    if (new_h, new_w) == (h, w):
        return image
    channels = [
        np.asarray(Image.fromarray(image[:, :, c]).resize((new_w, new_h), resample=resample))
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1)


def resize_square(image: np.ndarray, size: int, resample: int = 2) -> np.ndarray:
    """Resize to size x size, ignoring the aspect ratio (torchvision `Resize((s, s))` on PIL).

    Args:
        image: uint8 [H, W, C].
        size: target side.
        resample: PIL filter.

    Returns:
        uint8 [size, size, C].
    """
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image)
    channels = [
        np.asarray(Image.fromarray(image[:, :, c]).resize((size, size), resample=resample))
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop with transformers' offsets (`(H - size) // 2`).

    Args:
        image: [H, W, C] with H, W >= size.
        size: crop side.

    Returns:
        [size, size, C].
    """
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def preprocess_uint8(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The cached form of an image: resized and centre-cropped to the resize size, uint8.

    Args:
        image: uint8 [H, W, C], C in {1, 3}.
        config: the preprocessing geometry.

    Returns:
        uint8 [R, R, C] with R = config.resize_size.
    """
    if config.resize_mode == "square":
        return resize_square(image, config.resize_size, config.resample)
    resized = resize_shortest(image, config.resize_size, config.resample)
    return np.ascontiguousarray(center_crop(resized, config.resize_size))


def normalisation_table(
    mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> np.ndarray:
    """Lookup table uint8 value -> normalised float32 per channel, computed as transformers does.

    transformers rescales in float64 then casts to float32, and normalises in float32; the table
    repeats exactly those steps, so `table[c][x]` equals the processor's output bit for bit.

    Args:
        mean: per-channel mean (3 values).
        std: per-channel std (3 values).

    Returns:
        float32 [3, 256].
    """
    values = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    m = np.asarray(mean, dtype=np.float32)[:, None]
    s = np.asarray(std, dtype=np.float32)[:, None]
    return ((values[None, :] - m) / s).astype(np.float32)


def normalise(image: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rescale and normalise uint8 images to float32 RGB through the lookup table.

    Args:
        image: uint8 [..., H, W, C], C in {1, 3} (one channel is broadcast to RGB).
        table: `normalisation_table()`, float32 [3, 256].
        out: optional float32 [..., H, W, 3] to write into.

    Returns:
        float32 [..., H, W, 3].
    """
    channels = image.shape[-1]
    if out is None:
        out = np.empty(image.shape[:-1] + (3,), np.float32)
    if channels == 1:  # one gather of table rows: the fastest exact path
        np.take(np.ascontiguousarray(table.T), image[..., 0], axis=0, out=out)
    else:
        for ch in range(3):
            np.take(table[ch], image[..., ch], out=out[..., ch])
    return out


def preprocess_reference(
    image: np.ndarray, image_size: int = 224, config: PreprocessConfig | None = None
) -> np.ndarray:
    """The full processor pipeline (no augmentation): what val/test batches contain.

    Args:
        image: uint8 [H, W, C].
        image_size: crop size (when no config is given: the ResNet50 processor's geometry).
        config: the preprocessing; default `make_preprocess_config(image_size)`.

    Returns:
        float32 [image_size, image_size, 3], normalised.
    """
    config = config or make_preprocess_config(image_size)
    cached = preprocess_uint8(to_uint8(image), config)
    table = normalisation_table(config.mean, config.std)
    return normalise(center_crop(cached, config.image_size), table)
