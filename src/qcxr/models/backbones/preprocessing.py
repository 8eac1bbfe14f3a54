"""How a backbone's images are prepared (`Preprocessing`) and its checkpoints' image statistics."""

from __future__ import annotations

import dataclasses

# Image statistics (transformers.utils.constants): IMAGENET_DEFAULT_* for the ResNets and the
# paper's MobileNetV2, IMAGENET_STANDARD_* (i.e. [-1, 1]) for google/mobilenet_v2_1.0_224.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
# PIL.Image.Resampling codes, as transformers' preprocessor configs store them.
BILINEAR = 2
BICUBIC = 3
RESIZE_MODES = ("shortest_side", "square")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a backbone's images are prepared: resize, centre crop, rescale by 1/255, normalise.

    The backbone states it, because it is a property of its weights (the image processor its
    checkpoint was trained with); the data pipeline and the feature cache key take it from here.

    Attributes:
        image_size: side of the square crop fed to the backbone.
        resize_size: the resize target before the crop: the shortest side ("shortest_side") or
            both sides ("square"); >= image_size, and equal to it means no crop.
        mean: per-channel (RGB) mean subtracted after rescaling to [0, 1].
        std: per-channel (RGB) standard deviation divided by after that.
        resample: PIL resampling filter of the resize (2 bilinear, 3 bicubic), as transformers'
            preprocessor configs store it.
        resize_mode: "shortest_side" keeps the aspect ratio (transformers' processors);
            "square" resizes to resize_size × resize_size (torchvision `Resize((s, s))`).
    """

    image_size: int
    resize_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: int = BICUBIC
    resize_mode: str = "shortest_side"

    def __post_init__(self) -> None:
        problems = []
        if self.image_size < 1:
            problems.append(f"image_size must be positive, got {self.image_size}")
        if self.resize_size < self.image_size:
            problems.append(
                f"resize_size {self.resize_size} is smaller than image_size {self.image_size} "
                "(the crop would not fit): set backbone.resize_size >= backbone.image_size"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append(f"mean and std need 3 (RGB) values, got {self.mean} and {self.std}")
        elif min(self.std) <= 0:
            problems.append(f"std must be positive, got {self.std}")
        if self.resample not in (BILINEAR, BICUBIC):
            problems.append(f"resample must be {BILINEAR} (bilinear) or {BICUBIC} (bicubic)")
        if self.resize_mode not in RESIZE_MODES:
            problems.append(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if problems:
            raise ValueError("bad preprocessing: " + "; ".join(problems))


def default_resize(image_size: int, resize_size: int | None) -> int:
    # ImageNet evaluation resizes 256 and crops 224 (the ResNet processors' crop_pct 0.875, the
    # MobileNetV2 processor's shortest_edge 256): keep that ratio by default.
    return resize_size if resize_size is not None else image_size * 8 // 7
