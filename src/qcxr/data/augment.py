"""Keyed augmentation: horizontal flip (p = 0.5), rotation (+-15 deg), random crop (224 of 256).

The paper augments training batches with a random horizontal flip and a random rotation of up to
15 degrees (section III-D), and takes the 224 crop of a 256 image; its code draws them with dm-pix
from keys that depend only on the seed, so CDL and DQC runs with the same seed see the same
batches. Here the parameters of every sample are drawn from keys derived only from
(seed, epoch, sample index), and two interchangeable executors apply them:

- host: Pillow on the cached uint8 image (bilinear rotation, black fill), in the loader threads.
  dm-pix's gather-based resampling runs at 10-30 img/s under CPU XLA, Pillow at ~660 img/s per
  thread, so this is the CPU path.
- device: dm-pix, batched and jitted, on the accelerator (`augment_device`), for when one is
  present; the same parameters give the same transform up to interpolation rounding.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

# Named random streams: (seed, stream, epoch[, index]) seed NumPy generators. Fixed constants (CRC32
# of the stream name), so data order and augmentation never depend on the head, the ansatz or any
# other stream, and never share another stream's randomness. NumPy rather than jax.random: no
# compilation at start, and identical on every backend.
DATA_ORDER_STREAM = zlib.crc32(b"qcxr/data_order") & 0x7FFFFFFF
AUGMENT_STREAM = zlib.crc32(b"qcxr/augment") & 0x7FFFFFFF

MAX_ROTATION_DEG = 15.0  # paper, section III-D
FLIP_PROBABILITY = 0.5


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample augmentation parameters, row-aligned with the samples they were drawn for.

    Attributes:
        flip: bool[N], mirror left-right.
        angle: float32[N], counter-clockwise rotation in degrees.
        top: int32[N], crop offset (rows).
        left: int32[N], crop offset (columns).
    """

    flip: np.ndarray
    angle: np.ndarray
    top: np.ndarray
    left: np.ndarray

    def take(self, rows: np.ndarray) -> AugmentParams:
        """The parameters of the given rows."""
        return AugmentParams(self.flip[rows], self.angle[rows], self.top[rows], self.left[rows])


def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The training order of an epoch, from (seed, epoch) only.

    Args:
        seed: the run seed.
        epoch: the epoch number.
        num_examples: split size N.

    Returns:
        int64[N], a permutation of the sample indices.
    """
    rng = np.random.default_rng([int(seed), DATA_ORDER_STREAM, int(epoch)])
    return rng.permutation(num_examples).astype(np.int64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised over uint64 (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keyed_uniform(seed: int, stream: int, epoch: int, indices: np.ndarray, draw: int) -> np.ndarray:
    """Uniform [0, 1) numbers that are pure functions of (seed, stream, epoch, index, draw).

    A counter-based generator (SplitMix64 hashing): no state, vectorised, the same on every
    platform, and one sample's number never depends on which other samples are drawn with it.

    Args:
        seed: the run seed.
        stream: a stream constant.
        epoch: the epoch number.
        indices: int[N] sample indices.
        draw: which number of the sample (0, 1, ...).

    Returns:
        float64[N].
    """
    head = np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], np.uint64)
    key = _splitmix64(_splitmix64(_splitmix64(head) ^ np.uint64(stream)) ^ np.uint64(epoch))
    counter = np.asarray(indices, np.int64).astype(np.uint64) * np.uint64(64) + np.uint64(draw)
    z = _splitmix64(key ^ _splitmix64(counter))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def augment_params(
    seed: int, epoch: int, indices: np.ndarray, image_size: int, resize_size: int
) -> AugmentParams:
    """Augmentation parameters of samples, each from (seed, epoch, its sample index) only.

    A sample's augmentation does not depend on the batch it lands in, the thread that loads it,
    the head, or the executor (host or device).

    Args:
        seed: the run seed.
        epoch: the epoch number.
        indices: int[N] sample indices (positions in the split).
        image_size: crop size.
        resize_size: side of the cached square image.

    Returns:
        The parameters, row-aligned with `indices`.
    """
    indices = np.asarray(indices, np.int64)
    span = resize_size - image_size + 1

    def draw(k):
        return keyed_uniform(seed, AUGMENT_STREAM, epoch, indices, k)

    return AugmentParams(
        flip=draw(0) < FLIP_PROBABILITY,
        angle=((2.0 * draw(1) - 1.0) * MAX_ROTATION_DEG).astype(np.float32),
        top=np.minimum((draw(2) * span).astype(np.int32), span - 1),
        left=np.minimum((draw(3) * span).astype(np.int32), span - 1),
    )


def augment_host(
    image: np.ndarray, flip: bool, angle: float, top: int, left: int, size: int
) -> np.ndarray:
    """Flip, rotate about the centre (bilinear, black fill), crop: one Pillow affine on uint8.

    Equivalent (bit for bit) to `transpose(FLIP_LEFT_RIGHT)`, then `rotate(angle, BILINEAR)`,
    then `crop`, but resamples only the crop's pixels in one pass.

    Args:
        image: uint8 [R, R, C], C in {1, 3}.
        flip: mirror left-right first.
        angle: counter-clockwise rotation in degrees.
        top: crop row offset.
        left: crop column offset.
        size: crop side.

    Returns:
        uint8 [size, size, C].
    """
    h, w, channels = image.shape
    im = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    # Output pixel (x, y) of the crop reads the source at M (x + left - cx, y + top - cy) + c,
    # M the inverse rotation as Pillow's rotate builds it; a flip first mirrors x -> w - x.
    theta = -math.radians(float(angle))
    cos, sin = math.cos(theta), math.sin(theta)
    cx, cy = w / 2.0, h / 2.0
    a, b, d, e = cos, sin, -sin, cos
    c = cos * (left - cx) + sin * (top - cy) + cx
    f = -sin * (left - cx) + cos * (top - cy) + cy
    if flip:
        a, b, c = -a, -b, w - c
    out = im.transform(
        (size, size),
        Image.Transform.AFFINE,
        (a, b, c, d, e, f),
        resample=Image.Resampling.BILINEAR,
        fillcolor=0,
    )
    out = np.asarray(out)
    return out[:, :, None] if channels == 1 else out


@functools.partial(jax.jit, static_argnames=("size",))
def augment_device(images, flip, angle, top, left, mean, std, *, size: int):
    """Flip, rotate, crop and normalise a batch with dm-pix: the accelerator path.

    Jittable and batched; call it inside the train step, or let `DataModule` call it. Same
    parameters as `augment_host`, same transform up to interpolation rounding.

    Args:
        images: uint8 [B, R, R, C], C in {1, 3} (cached, un-normalised).
        flip: bool[B].
        angle: float32[B], degrees counter-clockwise.
        top: int32[B].
        left: int32[B].
        mean: float32[3].
        std: float32[3].
        size: crop side (static).

    Returns:
        float32 [B, size, size, 3], normalised.
    """
    x = images.astype(jnp.float32)

    def one(img, f, a, t, left_):
        img = jnp.where(f, img[:, ::-1, :], img)
        img = pix.rotate(img, jnp.deg2rad(a), order=1, mode="constant", cval=0.0)
        # One index dtype for all three starts (a Python 0 would be int64 under jax_enable_x64).
        return jax.lax.dynamic_slice(
            img, (t, left_, jnp.zeros_like(t)), (size, size, img.shape[-1])
        )

    x = jax.vmap(one)(x, flip, angle, top, left)
    x = jnp.broadcast_to(x, x.shape[:3] + (3,))
    return ((x * (1.0 / 255.0)) - mean) / std
