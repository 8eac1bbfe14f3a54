"""A backbone's `Preprocessing` maps to its checkpoint's Hugging Face image processor, and the
data pipeline handed that `Preprocessing` (as run.py hands it over) produces exactly that output.

For each pretrained backbone, transformers' image processor (the PIL backend, configured as the
checkpoint's preprocessor_config.json) runs on a fixed synthetic non-square image, and so does a
reference pipeline written here from the backbone's `Preprocessing` fields alone (PIL resize,
centre crop, rescale, normalise). Tolerance 1e-5 absolute on normalised pixels of order 1: the
same PIL resize gives the same uint8 pixels, and the rest is float32 arithmetic (observed: 0).
A wrong size, filter, crop or statistic changes pixels by 1e-2 or more.
"""

import dataclasses

import numpy as np
import pytest
from PIL import Image

transformers = pytest.importorskip("transformers")

from transformers.utils import constants  # noqa: E402

from qcxr.data.index import SplitIndex  # noqa: E402
from qcxr.data.module import DataModule, FileImages  # noqa: E402
from qcxr.models import backbones  # noqa: E402
from qcxr.models.backbones import Preprocessing  # noqa: E402

ATOL = 1e-5
# microsoft/resnet-50's preprocessor_config.json on the Hub (ConvNextImageProcessor): resize the
# shortest side to int(224 / crop_pct) = 256, bicubic, centre crop 224, ImageNet statistics.
RESNET50_PROCESSOR = {
    "crop_pct": 0.875,
    "size": {"shortest_edge": 224},
    "resample": 3,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


def _image(height: int = 300, width: int = 451) -> Image.Image:
    """A fixed RGB image: smooth gradients plus noise, not square, odd width."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    pixels = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _reference(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The pipeline the fields describe: f32[image_size, image_size, 3]."""
    width, height = image.size
    if prep.resize_mode == "square":
        size = (prep.resize_size, prep.resize_size)
    else:
        scale = prep.resize_size / min(width, height)
        size = (
            (prep.resize_size, int(height * scale))
            if width <= height
            else (int(width * scale), prep.resize_size)
        )
    resized = np.asarray(image.resize(size, resample=prep.resample))
    top = (resized.shape[0] - prep.image_size) // 2
    left = (resized.shape[1] - prep.image_size) // 2
    crop = resized[top : top + prep.image_size, left : left + prep.image_size]
    return (crop.astype(np.float32) / 255 - np.float32(prep.mean)) / np.float32(prep.std)


def _processed(processor, image: Image.Image) -> np.ndarray:
    return processor(image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)


def test_resnet_preprocessing_is_the_resnet50_processor():
    prep = backbones.resnet50(pretrained=False).preprocessing
    assert (prep.image_size, prep.resize_size, prep.resize_mode) == (224, 256, "shortest_side")
    assert prep.mean == tuple(constants.IMAGENET_DEFAULT_MEAN)
    assert prep.std == tuple(constants.IMAGENET_DEFAULT_STD)
    assert backbones.resnet18(pretrained=False).preprocessing == prep
    processor = transformers.ConvNextImageProcessorPil(**RESNET50_PROCESSOR)
    image = _image()
    expected = _processed(processor, image)
    assert expected.shape == (224, 224, 3)
    np.testing.assert_allclose(_reference(image, prep), expected, rtol=0, atol=ATOL)


def test_mobilenet_v2_preprocessing_is_its_image_processor_defaults():
    """transformers' MobileNetV2ImageProcessor defaults are google/mobilenet_v2_1.0_224's."""
    processor = transformers.MobileNetV2ImageProcessorPil()
    prep = backbones.mobilenet_v2(pretrained=False).preprocessing
    assert prep.image_size == processor.crop_size.height == processor.crop_size.width == 224
    assert prep.resize_size == processor.size.shortest_edge == 256
    assert prep.mean == tuple(processor.image_mean) == tuple(constants.IMAGENET_STANDARD_MEAN)
    assert prep.std == tuple(processor.image_std) == tuple(constants.IMAGENET_STANDARD_STD)
    assert prep.resample == int(processor.resample) and prep.resize_mode == "shortest_side"
    for image in (_image(), _image(451, 300)):  # landscape and portrait
        np.testing.assert_allclose(
            _reference(image, prep), _processed(processor, image), rtol=0, atol=ATOL
        )


def test_reference_pipeline_sees_a_wrong_statistic_or_filter():
    """The comparison above would catch a backbone stating the other family's values."""
    processor = transformers.MobileNetV2ImageProcessorPil()
    image = _image()
    expected = _processed(processor, image)
    right = backbones.mobilenet_v2(pretrained=False).preprocessing
    for wrong in (
        Preprocessing(224, 256, resample=right.resample),  # ImageNet statistics
        Preprocessing(224, 256, right.mean, right.std, resample=backbones.BICUBIC),
        Preprocessing(224, 224, right.mean, right.std, resample=right.resample),
    ):
        assert np.abs(_reference(image, wrong) - expected).max() > 1000 * ATOL


def test_paper_variant_preprocessing_is_the_paper_codes():
    """transforms.Resize((128, 128)) (bilinear) + Normalize(ImageNet): a square, no crop."""
    prep = backbones.mobilenet_v2(pretrained=False, variant="paper").preprocessing
    assert (prep.image_size, prep.resize_size, prep.resize_mode) == (128, 128, "square")
    assert prep.resample == int(transformers.image_utils.PILImageResampling.BILINEAR)
    assert prep.mean == tuple(constants.IMAGENET_DEFAULT_MEAN)
    assert prep.std == tuple(constants.IMAGENET_DEFAULT_STD)
    out = _reference(_image(), prep)
    assert out.shape == (128, 128, 3)


# ---- the data pipeline, given each backbone's Preprocessing, equals its image processor -------
def _processors() -> dict:
    """backbone -> (its Preprocessing, an independent transformers processor for it)."""
    bilinear = int(transformers.image_utils.PILImageResampling.BILINEAR)
    return {
        "resnet50": (
            backbones.resnet50(pretrained=False).preprocessing,
            transformers.ConvNextImageProcessorPil(**RESNET50_PROCESSOR),
        ),
        "mobilenet_v2": (
            backbones.mobilenet_v2(pretrained=False).preprocessing,
            transformers.MobileNetV2ImageProcessorPil(),
        ),
        # The paper's code: transforms.Resize((128, 128)) + Normalize(ImageNet), no crop.
        "mobilenet_v2_paper": (
            backbones.mobilenet_v2(pretrained=False, variant="paper").preprocessing,
            transformers.MobileNetV2ImageProcessorPil(
                size={"height": 128, "width": 128},
                do_center_crop=False,
                resample=bilinear,
                image_mean=list(constants.IMAGENET_DEFAULT_MEAN),
                image_std=list(constants.IMAGENET_DEFAULT_STD),
            ),
        ),
        # tiny: shortest side to 32 (bicubic), crop 32, ImageNet statistics.
        "tiny": (
            backbones.tiny(image_size=32).preprocessing,
            transformers.MobileNetV2ImageProcessorPil(
                size={"shortest_edge": 32},
                crop_size={"height": 32, "width": 32},
                resample=3,
                image_mean=list(constants.IMAGENET_DEFAULT_MEAN),
                image_std=list(constants.IMAGENET_DEFAULT_STD),
            ),
        ),
    }


def _module(folder, prep, cache_dir):
    """A DataModule over the fixed images (one per split) prepared as `prep` states."""
    folder.mkdir(exist_ok=True)
    shapes = {"train": (300, 451), "val": (300, 451), "test": (451, 300)}
    splits = {}
    for split, (h, w) in shapes.items():
        path = folder / f"{split}.png"
        if not path.exists():
            _image(h, w).save(path)
        index = SplitIndex([split], [str(path)], np.ones((1, 1), bool), [split], source="test")
        splits[split] = (index, FileImages([str(path)]))
    return DataModule(
        splits,
        ["x"],
        batch_size=1,
        seed=0,
        augment=False,
        min_positives=0,
        num_threads=1,
        cache_dir=cache_dir,
        preprocessing=dataclasses.asdict(prep),
    )


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "mobilenet_v2_paper", "tiny"])
def test_data_pipeline_with_the_backbones_preprocessing_is_its_processor(tmp_path, name):
    """Val (landscape) and test (portrait) batches equal transformers' output for that backbone."""
    prep, processor = _processors()[name]
    data = _module(tmp_path / "images", prep, tmp_path / "cache")
    for split, (h, w) in {"val": (300, 451), "test": (451, 300)}.items():
        batch = next(iter(data.batches(split)))["image"][0]
        expected = _processed(processor, _image(h, w))
        assert batch.shape == expected.shape == (prep.image_size, prep.image_size, 3)
        np.testing.assert_allclose(batch, expected, rtol=0, atol=ATOL, err_msg=f"{name} {split}")


def test_backbones_with_other_preprocessing_never_share_an_image_cache_entry(tmp_path):
    """resnet50 and mobilenet_v2 both crop 224 from 256; mean/std and filter differ. In one
    cache folder they get other keys and other entries, and each reads back its own pixels."""
    procs = _processors()
    modules = {
        n: _module(tmp_path / "images", procs[n][0], tmp_path / "cache")
        for n in ("resnet50", "mobilenet_v2", "mobilenet_v2_paper", "tiny")
    }
    keys = {n: set(m.image_keys("val")) | set(m.image_keys("test")) for n, m in modules.items()}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not keys[a] & keys[b], (a, b)
    for m in modules.values():
        m.prepare()
    assert len(modules["tiny"].cache) == 3 * len(modules)  # 3 images per backbone, no sharing
    for name, m in modules.items():  # read back after all four filled the folder
        expected = _processed(procs[name][1], _image())
        got = next(iter(m.batches("val")))["image"][0]
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL, err_msg=name)
