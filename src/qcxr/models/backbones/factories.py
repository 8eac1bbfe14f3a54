"""The backbone factories (Hydra targets): ResNet and MobileNetV2 in the HF layout, the tiny CNN.

transformers 5 has no Flax models, so `ResNet` and `MobileNetV2` are our Flax modules whose
variables map one-to-one to a Hugging Face state dict (`ResNetModel`: `microsoft/resnet-50`,
`microsoft/resnet-18`; `MobileNetV2Model`: `google/mobilenet_v2_1.0_224`): the HF module path
`encoder.stages.0.layers.1.layer.2` is the Flax submodule path `encoder/stages_0/layers_1/layer_2`,
a convolution's `weight` (OIHW) is its `kernel` (HWIO), and a batch norm's `weight`, `bias`,
`running_mean`, `running_var` are `params/scale`, `params/bias`, `batch_stats/mean`,
`batch_stats/var`.

`resnet` (with `resnet50` and `resnet18`, the same factory with the depth bound), `mobilenet_v2`
and `tiny` are the Hydra targets of `conf/backbone/*.yaml`; each returns a `Backbone`, which also
says how its images are prepared (`Preprocessing`). Weights come from a local folder or file, then
the Hugging Face cache, then (only with `allow_download=True`) the Hub; nothing else is ever tried,
and random weights only ever come from `pretrained=False`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from safetensors.numpy import load_file

from qcxr.models.backbones.base import RANDOM_INIT_ID, Backbone
from qcxr.models.backbones.layers import TORCH_CONV_INIT
from qcxr.models.backbones.mobilenet_v2_model import (
    _MOBILENET_V2_CONFIG,
    _MOBILENET_V2_CONFIG_DEFAULTS,
    MOBILENET_V2_CONV_INIT_FAN_IN,
    MOBILENET_V2_CONV_INIT_FAN_OUT,
    MOBILENET_V2_REPO,
    MOBILENET_V2_VARIANTS,
    MobileNetV2,
)
from qcxr.models.backbones.preprocessing import (
    BILINEAR,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    Preprocessing,
    default_resize,
)
from qcxr.models.backbones.resnet_model import (
    _HF_CONFIG_DEFAULTS,
    RESNET18_ARCH,
    RESNET_DEPTHS,
    ResNet,
)
from qcxr.models.backbones.tiny_model import TinyCNN
from qcxr.models.backbones.weights import (
    CONFIG_NAME,
    _check_hf_config,
    _sha256,
    hf_to_variables,
    locate_checkpoint,
)

logger = logging.getLogger(__name__)


def _hf_backbone(
    name: str,
    module: ResNet | MobileNetV2,
    preprocessing: Preprocessing,
    freeze: bool,
    pretrained: bool,
    weights: str | None,
    allow_download: bool,
    repo_id: str,
    check_config: Callable[[Path], None],
) -> Backbone:
    """A backbone in a Hugging Face layout: random init, or a checkpoint found and checked."""
    backbone = {
        "name": name,
        "module": module,
        "feature_dim": module.feature_dim,
        "preprocessing": preprocessing,
        "freeze": freeze,
    }
    if not pretrained:
        if weights is not None:
            raise ValueError(
                f"backbone.weights={weights} is set but backbone.pretrained=false; drop one of them"
            )
        logger.warning(
            "%s: pretrained=false, so the backbone starts from random weights "
            "(not ImageNet-pretrained weights)",
            name,
        )
        return Backbone(variables=None, weights_id=RANDOM_INIT_ID, **backbone)

    files = locate_checkpoint(repo_id, weights=weights, allow_download=allow_download)
    if files.config is not None:
        check_config(files.config)
    else:
        logger.warning(
            "%s: no %s beside %s; the tensor shapes are checked but what changes no shape "
            "(stride placement, padding rule, batch-norm epsilon) cannot be",
            name,
            CONFIG_NAME,
            files.weights,
        )
    variables = hf_to_variables(load_file(str(files.weights)), module)
    weights_id = f"sha256:{_sha256(files.weights)}"
    logger.info("%s: weights from %s (%s), %s", name, files.weights, files.source, weights_id)
    return Backbone(variables=variables, weights_id=weights_id, **backbone)


def resnet(
    depth: int = 50,
    pretrained: bool = True,
    weights: str | None = None,
    allow_download: bool = False,
    freeze: bool = True,
    repo_id: str | None = None,
    image_size: int = 224,
    resize_size: int | None = None,
    init_from: str | None = None,
) -> Backbone:
    """ResNet-`depth` in the `microsoft/resnet-<depth>` layout, ImageNet-pretrained unless told
    otherwise. `resnet50` and `resnet18` are this factory with the depth bound.

    Preprocessing is microsoft/resnet-50's processor: shortest side to `resize_size` (bicubic),
    centre crop `image_size`, ImageNet mean/std.

    Args:
        depth: 18 or 50 (`RESNET_DEPTHS`).
        pretrained: load a checkpoint; False gives random init (with a warning).
        weights: a folder with `model.safetensors` + `config.json`, or a `.safetensors` file;
            None looks in the Hugging Face cache for `repo_id`.
        allow_download: fetch `repo_id` from the Hub when it is not cached.
        freeze: keep the backbone's weights fixed in training (read by the optimizer).
        repo_id: Hub repository of the checkpoint; None gives microsoft/resnet-<depth>.
        image_size: input side (centre crop).
        resize_size: shortest side before the crop; None gives image_size * 8 // 7 (256 for 224).
        init_from: an earlier run whose backbone weights this run starts from
            (`Backbone.init_from`).

    Returns:
        The backbone: features f32[B, 2048] (ResNet-50) or f32[B, 512] (ResNet-18).

    Raises:
        ValueError: a depth other than 18 or 50.
        CheckpointNotFoundError: pretrained, but no checkpoint found and downloading is off.
        CheckpointMismatchError: the checkpoint is not a ResNet of this depth.
    """
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"backbone depth={depth!r} is not one of {sorted(RESNET_DEPTHS)}")
    arch, default_repo = RESNET_DEPTHS[depth]
    name = f"resnet{depth}"
    wanted = {**arch, "num_channels": 3, "hidden_act": "relu"}
    backbone = _hf_backbone(
        name,
        ResNet(**arch),
        Preprocessing(image_size, default_resize(image_size, resize_size)),
        freeze,
        pretrained,
        weights,
        allow_download,
        repo_id if repo_id is not None else default_repo,
        lambda path: _check_hf_config(path, "resnet", wanted, _HF_CONFIG_DEFAULTS, name),
    )
    return dataclasses.replace(backbone, init_from=init_from)


resnet50 = functools.partial(resnet, 50)
resnet18 = functools.partial(resnet, 18)


def resnet18_28(
    pretrained: bool = False,
    freeze: bool = False,
    image_size: int = 28,
    resize_size: int | None = None,
    num_channels: int = 1,
    init_from: str | None = None,
) -> Backbone:
    """MedMNIST v2's ResNet-18 (28) (Yang et al. 2023; their MedMNIST2D/models.py, adapted from
    kuangliu/pytorch-cifar), trained from scratch.

    A CIFAR-style ResNet-18: 3×3 stride-1 conv stem to 64 channels, no max-pool, BasicBlocks
    [2, 2, 2, 2] at 64/128/256/512 channels (strides 1, 2, 2, 2), global average pool, 512
    features; torch.nn.Conv2d's default init and BatchNorm2d's (eps 1e-5, momentum 0.1), as their
    code (which never re-initialises). Input: 1 channel (their default `as_rgb=False` for
    PneumoniaMNIST); the pipeline's grey-as-RGB images are averaged back to grey, which is exact.
    11,167,680 parameters with 1 input channel (11,168,832 with 3), the torch model's count less
    its Linear classifier. Preprocessing: their `Normalize(mean=[.5], std=[.5])` on [0, 1] images,
    no resize at 28 px (a square bilinear resize to `resize_size` otherwise), no crop.

    Args:
        pretrained: must be False: there are no published weights for it.
        freeze: keep its weights fixed in training (read by the optimizer); False trains it, batch
            norm in train mode.
        image_size: input side.
        resize_size: square resize target before the crop; None gives image_size (no crop).
        num_channels: 1 (grey, MedMNIST's default) or 3 (their `as_rgb=True`).
        init_from: an earlier run whose backbone weights this run starts from
            (`Backbone.init_from`).

    Returns:
        The backbone: features f32[B, 512], variables from `Backbone.init(key)`.

    Raises:
        ValueError: pretrained=True, or num_channels not 1 or 3.
    """
    if pretrained:
        raise ValueError(
            "backbone=resnet18_28 is trained from scratch (MedMNIST v2's protocol); there are no "
            "pretrained weights for it: set backbone.pretrained=false"
        )
    if num_channels not in (1, 3):
        raise ValueError(f"backbone.num_channels must be 1 or 3, got {num_channels}")
    module = ResNet(
        **RESNET18_ARCH, stem="cifar", num_channels=num_channels, kernel_init=TORCH_CONV_INIT
    )
    return Backbone(
        name="resnet18_28",
        module=module,
        variables=None,
        feature_dim=module.feature_dim,
        preprocessing=Preprocessing(
            image_size,
            image_size if resize_size is None else resize_size,
            mean=IMAGENET_STANDARD_MEAN,
            std=IMAGENET_STANDARD_STD,
            resample=BILINEAR,
            resize_mode="square",
        ),
        freeze=freeze,
        weights_id=RANDOM_INIT_ID,
        init_from=init_from,
    )


def mobilenet_v2(
    pretrained: bool = True,
    weights: str | None = None,
    allow_download: bool = False,
    freeze: bool = True,
    repo_id: str = MOBILENET_V2_REPO,
    variant: str = "hf",
    image_size: int | None = None,
    resize_size: int | None = None,
    init_from: str | None = None,
) -> Backbone:
    """MobileNetV2 (width 1.0, 1280 features): the Google checkpoint, or the paper's model.

    `variant="hf"`: the `google/mobilenet_v2_1.0_224` layout and preprocessing (TF "SAME"
    padding, BN eps 1e-3; its image processor: shortest side 256 bilinear, crop 224, mean and std
    0.5), ImageNet-pretrained unless told otherwise.
    `variant="paper"`: the torchvision-style MobileNetV2 of arXiv 2501.06225's code (PyTorch
    padding, BN eps 1e-5), trained from scratch at 128×128 (resized to a square, no crop, ImageNet
    mean/std); there are no weights for it, so it needs `pretrained=False`. Both variants have
    the same 2,223,872 parameters in the same tree.

    Args:
        pretrained: load a checkpoint; False gives random init (with a warning).
        weights: a folder with `model.safetensors` + `config.json`, or a `.safetensors` file;
            None looks in the Hugging Face cache for `repo_id`.
        allow_download: fetch `repo_id` from the Hub when it is not cached.
        freeze: keep the backbone's weights fixed in training (read by the optimizer).
        repo_id: Hub repository of the checkpoint.
        variant: "hf" or "paper" (`MOBILENET_V2_VARIANTS`).
        image_size: input side (the crop); None gives 224 ("hf") or 128 ("paper").
        resize_size: resize target before the crop; None gives image_size * 8 // 7 for "hf"
            (256 for 224) and image_size for "paper" (no crop).
        init_from: an earlier run whose backbone weights this run starts from
            (`Backbone.init_from`).

    Returns:
        The backbone: features f32[B, 1280].

    Raises:
        ValueError: an unknown variant, or variant "paper" with pretrained weights.
        CheckpointNotFoundError: pretrained, but no checkpoint found and downloading is off.
        CheckpointMismatchError: the checkpoint is not a google/mobilenet_v2_1.0_224-style model.
    """
    if variant not in MOBILENET_V2_VARIANTS:
        raise ValueError(
            f"backbone.variant={variant!r} is not one of {sorted(MOBILENET_V2_VARIANTS)}"
        )
    if variant == "paper":
        if pretrained:
            raise ValueError(
                "backbone.variant=paper is the paper's MobileNetV2, trained from scratch: there "
                "are no pretrained weights for it. Use backbone=mobilenet_v2_paper, or set "
                "backbone.pretrained=false (or variant=hf for the ImageNet-pretrained model)"
            )
        size = 128 if image_size is None else image_size
        # 128 px: the authors' upload (b43bd6f) sizes its MLP baseline for 3*128*128 inputs; the
        # square bilinear resize, no crop and ImageNet mean/std are code/preprocessing.py's
        # transforms.Resize((128, 128)) + Normalize, added to their repository later (977f8a9).
        preprocessing = Preprocessing(
            size,
            size if resize_size is None else resize_size,
            resample=BILINEAR,
            resize_mode="square",
        )
        name = "mobilenet_v2_paper"
    else:
        size = 224 if image_size is None else image_size
        # transformers' MobileNetV2ImageProcessor defaults (those of the Google checkpoint).
        preprocessing = Preprocessing(
            size,
            default_resize(size, resize_size),
            mean=IMAGENET_STANDARD_MEAN,
            std=IMAGENET_STANDARD_STD,
            resample=BILINEAR,
        )
        name = "mobilenet_v2"
    options = MOBILENET_V2_VARIANTS[variant]
    wanted = {**_MOBILENET_V2_CONFIG, **options}
    # The paper's code initialises as torchvision does (fan_out), which train-mode batch norm
    # makes work (mobilenet_v2_model.py).
    paper_init = variant == "paper"
    init = MOBILENET_V2_CONV_INIT_FAN_OUT if paper_init else MOBILENET_V2_CONV_INIT_FAN_IN
    module = MobileNetV2(**options, kernel_init=init)
    backbone = _hf_backbone(
        name,
        module,
        preprocessing,
        freeze,
        pretrained,
        weights,
        allow_download,
        repo_id,
        lambda path: _check_hf_config(
            path, "mobilenet_v2", wanted, _MOBILENET_V2_CONFIG_DEFAULTS, name
        ),
    )
    return dataclasses.replace(backbone, init_from=init_from)


def tiny(
    feature_dim: int = 64, image_size: int = 32, freeze: bool = False, init_from: str | None = None
) -> Backbone:
    """The tiny CNN backbone (CPU default and tests); always randomly initialised.

    Args:
        feature_dim: size of the features.
        image_size: input side; images are resized to it directly (resize_size == image_size),
            bicubic, with ImageNet mean/std (what the data pipeline has always given it).
        freeze: keep its weights fixed in training (read by the optimizer).
        init_from: an earlier run whose backbone weights this run starts from
            (`Backbone.init_from`).

    Returns:
        The backbone: features f32[B, feature_dim], variables from `Backbone.init(key)`.
    """
    return Backbone(
        name="tiny",
        module=TinyCNN(feature_dim=feature_dim),
        variables=None,
        feature_dim=feature_dim,
        preprocessing=Preprocessing(image_size, image_size),
        freeze=freeze,
        weights_id=RANDOM_INIT_ID,
        init_from=init_from,
    )
