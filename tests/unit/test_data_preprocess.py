"""Decoding and preprocessing vs transformers' image processor (microsoft/resnet-50 config)."""

import numpy as np
import pytest
from PIL import Image

from qcxr.data.preprocess import (
    center_crop,
    decode_image,
    hf_processor_config,
    make_preprocess_config,
    normalisation_table,
    normalise,
    preprocess_reference,
    preprocess_uint8,
)


@pytest.fixture(scope="module")
def processor():
    transformers = pytest.importorskip("transformers")
    # Built offline from a config dict equivalent to microsoft/resnet-50's preprocessor_config.
    return transformers.ConvNextImageProcessor(**hf_processor_config(224))


def _hf(processor, image):
    out = processor(image, return_tensors="np")["pixel_values"][0]
    return np.moveaxis(out, 0, -1)


def _fixed_image(h, w, channels):
    """A fixed synthetic image: gradients, a disc and deterministic noise."""
    y, x = np.mgrid[0:h, 0:w]
    base = (
        120
        + 80 * np.sin(x / 9.0) * np.cos(y / 13.0)
        + 40 * ((x - w / 3) ** 2 + (y - h / 2) ** 2 < (h / 5) ** 2)
    )
    noise = np.random.default_rng(0).integers(-20, 21, (h, w, channels))
    return np.clip(base[..., None] + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(300, 420, 3), (517, 311, 3), (256, 256, 3), (333, 290, 1)])
def test_matches_transformers_processor(processor, shape):
    image = _fixed_image(*shape)
    rgb = np.repeat(image, 3, axis=2) if shape[2] == 1 else image
    ref = _hf(processor, rgb)
    ours = preprocess_reference(image[..., 0] if shape[2] == 1 else image, 224)
    assert ours.shape == ref.shape == (224, 224, 3)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_cached_form_then_center_crop_is_the_processor_crop(processor):
    image = _fixed_image(301, 389, 3)
    config = make_preprocess_config(224)
    assert config.resize_size == 256
    cached = preprocess_uint8(image, config)
    assert cached.shape == (256, 256, 3) and cached.dtype == np.uint8
    ours = normalise(center_crop(cached, 224), normalisation_table())
    np.testing.assert_allclose(ours, _hf(processor, image), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16", "JPEG", "LA", "P"])
def test_decode_formats(tmp_path, mode):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (10, 12)).astype(np.uint8)
    path = tmp_path / ("x.jpg" if mode == "JPEG" else "x.png")
    if mode == "I;16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    elif mode == "JPEG":
        Image.fromarray(np.full((10, 12), 77, np.uint8)).save(path, quality=100)
        gray = np.full((10, 12), 77, np.uint8)
    elif mode == "RGBA":
        Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 128)])).save(path)
    else:
        Image.fromarray(gray).convert(mode).save(path)
    out = decode_image(path)
    assert out.dtype == np.uint8 and out.shape[:2] == (10, 12)
    assert out.shape[2] == 1  # grayscale in any container collapses to one channel
    if mode == "P":
        return  # palette quantisation may change values
    np.testing.assert_array_equal(out[..., 0], gray)


def test_decode_keeps_colour_and_bytes(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    path = tmp_path / "c.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(decode_image(path), rgb)
    np.testing.assert_array_equal(decode_image(path.read_bytes()), rgb)


def test_decode_corrupt_raises(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(OSError):
        decode_image(path)
