"""Image backbones: ResNet and MobileNetV2 in the Hugging Face layout, a tiny CNN, weight loading.

One module per concern: `resnet_model`, `mobilenet_v2_model` and `tiny_model` (the Flax modules),
`layers` (what the first two share), `weights` (the Hugging Face state dict <-> Flax variables
mapping, finding and downloading checkpoints), `preprocessing` (how images are prepared), `base`
(the `Backbone` value) and `factories` (`resnet`, `resnet50`, `resnet18`, `resnet18_28`,
`mobilenet_v2`, `tiny`: the Hydra targets of `conf/backbone/*.yaml`). The public names are
re-exported here.
"""

from qcxr.models.backbones.base import INIT_IMAGE_SIZE, RANDOM_INIT_ID, Backbone
from qcxr.models.backbones.factories import (
    mobilenet_v2,
    resnet,
    resnet18,
    resnet18_28,
    resnet50,
    tiny,
)
from qcxr.models.backbones.layers import BN_EPSILON, BN_MOMENTUM, BatchNorm
from qcxr.models.backbones.mobilenet_v2_model import (
    MOBILENET_V2_REPO,
    MOBILENET_V2_VARIANTS,
    MobileNetV2,
)
from qcxr.models.backbones.preprocessing import (
    BICUBIC,
    BILINEAR,
    IMAGENET_MEAN,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    IMAGENET_STD,
    RESIZE_MODES,
    Preprocessing,
)
from qcxr.models.backbones.resnet_model import (
    RESNET18_ARCH,
    RESNET18_REPO,
    RESNET50_ARCH,
    RESNET50_REPO,
    RESNET_DEPTHS,
    ResNet,
)
from qcxr.models.backbones.tiny_model import TinyCNN
from qcxr.models.backbones.weights import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointFiles,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    hf_to_resnet_variables,
    hf_to_variables,
    locate_checkpoint,
    resnet_variables_to_hf,
    variables_to_hf,
)

__all__ = [
    "BICUBIC",
    "BN_EPSILON",
    "BN_MOMENTUM",
    "BILINEAR",
    "CONFIG_NAME",
    "IMAGENET_MEAN",
    "IMAGENET_STANDARD_MEAN",
    "IMAGENET_STANDARD_STD",
    "IMAGENET_STD",
    "INIT_IMAGE_SIZE",
    "MOBILENET_V2_REPO",
    "MOBILENET_V2_VARIANTS",
    "RANDOM_INIT_ID",
    "RESIZE_MODES",
    "RESNET18_ARCH",
    "RESNET18_REPO",
    "RESNET50_ARCH",
    "RESNET50_REPO",
    "RESNET_DEPTHS",
    "WEIGHTS_NAME",
    "Backbone",
    "BatchNorm",
    "CheckpointFiles",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "MobileNetV2",
    "Preprocessing",
    "ResNet",
    "TinyCNN",
    "hf_to_resnet_variables",
    "hf_to_variables",
    "locate_checkpoint",
    "mobilenet_v2",
    "resnet",
    "resnet18",
    "resnet18_28",
    "resnet50",
    "resnet_variables_to_hf",
    "tiny",
    "variables_to_hf",
]
