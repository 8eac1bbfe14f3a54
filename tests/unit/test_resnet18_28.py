"""backbone=resnet18_28: MedMNIST v2's ResNet-18 (28) against the same network in PyTorch.

The torch model is MedMNIST/experiments' MedMNIST2D/models.py ResNet18 written out in
`qcxr.bench.train_step_torch.torch_resnet18_28` (torch.nn only, no torchvision). Checked: the
parameter count (1 and 3 input channels), and with qcxr's initial weights copied in, the pooled
features in eval mode (running statistics) and in train mode (batch statistics, then the updated
running statistics), float32, to 1e-4 relative to the largest magnitude (measured ~1e-6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.bench.train_step_torch import (
    copy_to_torch,
    count_params,
    torch_resnet18_28,
    torch_running_stats,
)
from qcxr.models.backbones import IMAGENET_STANDARD_MEAN, resnet18_28
from qcxr.models.classifier import Classifier
from qcxr.models.heads import cdl_head

RTOL = 1e-4


def _close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert np.max(np.abs(a - b)) <= RTOL * max(np.max(np.abs(b)), 1e-12)


@pytest.mark.parametrize("channels, expected", [(1, 11_167_680), (3, 11_168_832)])
def test_parameter_count_equals_the_torch_model(channels, expected):
    backbone = resnet18_28(num_channels=channels)
    variables = jax.eval_shape(backbone.init, jax.random.key(0))
    net = torch_resnet18_28(channels, num_classes=2)
    torch_backbone = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("linear"))
    assert count_params(variables["params"]) == torch_backbone == expected


def test_config_values_and_preprocessing():
    backbone = resnet18_28()
    assert backbone.name == "resnet18_28" and backbone.feature_dim == 512
    assert (backbone.image_size, backbone.resize_size) == (28, 28)  # no resize, no crop
    assert backbone.preprocessing.mean == IMAGENET_STANDARD_MEAN  # MedMNIST's Normalize(.5, .5)
    assert not backbone.freeze and not backbone.pretrained
    with pytest.raises(ValueError, match="trained from scratch"):
        resnet18_28(pretrained=True)


def test_features_equal_torch_in_eval_and_train_mode():
    import torch

    model = Classifier(resnet18_28(), cdl_head(2))
    params, model_state = model.init(jax.random.key(0))
    net = torch_resnet18_28(1, 2)
    copy_to_torch(params, model_state, net)
    grey = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype(np.float32)
    x_t = torch.from_numpy(grey).permute(0, 3, 1, 2)
    # The pipeline hands grey images over as RGB (three equal channels): same features.
    rgb = jnp.asarray(np.repeat(grey, 3, axis=-1))

    net.eval()
    with torch.no_grad():
        ref = net.features(x_t).numpy()
    _close(model.features(params, model_state, rgb), ref)
    _close(model.features(params, model_state, jnp.asarray(grey)), ref)

    net.train()
    with torch.no_grad():
        ref_train = net.features(x_t).numpy()
    feats, new_state = model.features(params, model_state, rgb, train=True)
    _close(feats, ref_train)
    assert not np.allclose(ref_train, ref, atol=1e-3)
    stats = new_state["backbone"]["batch_stats"]
    for path, (mean, var) in torch_running_stats(net).items():
        node = stats
        for k in path:
            node = node[k]
        _close(node["normalization"]["mean"], mean)
        _close(node["normalization"]["var"], var)
