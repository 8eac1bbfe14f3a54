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
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 224 / 256  # microsoft/resnet-50 preprocessor_config.json
_PREPROCESS_VERSION = 1  # bump when the cached bytes for the same config would change


@dataclass(frozen=True)
class PreprocessConfig:
    """What the cached array depends on (part of every cache key).

    Attributes:
        image_size: crop fed to the backbone (224 for ResNet50).
        resize_size: shortest side after resizing (256 for 224); cached images are this square.
        resample: PIL resampling filter (3 = bicubic, as the ResNet50 processor).
    """

    image_size: int
    resize_size: int
    resample: int = 3

    def digest(self) -> str:
        """A short hash of the config and the preprocessing code version."""
        blob = json.dumps({**asdict(self), "version": _PREPROCESS_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_preprocess_config(image_size: int, resize_size: int | None = None) -> PreprocessConfig:
    """The ResNet50 processor's geometry for a crop size.

    Args:
        image_size: crop size (224 for ResNet50; any size for the tiny backbone).
        resize_size: shortest side after resize; default `int(image_size / crop_pct)`.

    Returns:
        The config.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    resize = int(image_size / CROP_PCT) if resize_size is None else int(resize_size)
    if resize < image_size:
        raise ValueError(f"resize_size {resize} is smaller than image_size {image_size}")
    return PreprocessConfig(image_size=int(image_size), resize_size=resize)


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


def preprocess_reference(image: np.ndarray, image_size: int = 224) -> np.ndarray:
    """The full processor pipeline (no augmentation): what val/test batches contain.

    Args:
        image: uint8 [H, W, C].
        image_size: crop size.

    Returns:
        float32 [image_size, image_size, 3], normalised.
    """
    config = make_preprocess_config(image_size)
    cached = preprocess_uint8(to_uint8(image), config)
    return normalise(center_crop(cached, config.image_size), normalisation_table())
