"""Our Flax ResNet vs transformers' PyTorch ResNet: same checkpoint, same pooled features.

A randomly initialised transformers model (batch-norm statistics and affine parameters randomised
too, so a mapping error in any of them shows) is saved with `save_pretrained` and loaded through
our factory. Tolerance: 1e-4 absolute on float32 features of size ~1 (the observed differences
are ~1e-6; a wrong leaf gives differences of order 0.1 or more, checked below).
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from qcxr.models import backbones  # noqa: E402
from qcxr.models.backbones import ResNet, hf_to_resnet_variables  # noqa: E402

ATOL = 1e-4


def _hf_model(model_class, arch: dict, seed: int = 0):
    """A random transformers ResNet in eval mode, with random batch-norm statistics.

    Scales chosen so the features stay of order 1 (a 1e-4 absolute tolerance then means ~1e-4
    relative): scale U(0.5, 1), bias N(0, 0.1), running mean N(0, 0.1), running var U(1, 2).
    """
    torch.manual_seed(seed)
    config = transformers.ResNetConfig(
        **{k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}
    )
    model = model_class(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.0)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(1.0, 2.0)
    return model


def _images(size: int, seed: int = 0) -> np.ndarray:
    """Random ImageNet-normalised-like images f32[2, size, size, 3]."""
    return np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32)


def _reference(model, images: np.ndarray) -> np.ndarray:
    """transformers' pooler_output, flattened: f32[B, C]."""
    resnet = getattr(model, "resnet", model)
    with torch.no_grad():
        pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        return resnet(pixels).pooler_output.flatten(1).numpy()


def _compare_through_factory(factory, model, tmp_path, size: int = 64) -> None:
    model.save_pretrained(tmp_path)
    backbone = factory(weights=str(tmp_path))
    images = _images(size)
    reference = _reference(model, images)
    apply = jax.jit(backbone.module.apply)
    features = np.asarray(apply(backbone.variables, images))
    assert features.shape == reference.shape == (2, backbone.feature_dim)
    assert 0.1 < np.abs(reference).max() < 100, "features should be of order 1 for ATOL to bite"
    np.testing.assert_allclose(features, reference, rtol=0, atol=ATOL)

    # The comparison would catch a mapping error in the batch-norm statistics.
    stats = backbone.variables["batch_stats"]
    wrong = {**backbone.variables, "batch_stats": jax.tree.map(np.zeros_like, stats)}
    assert np.abs(np.asarray(apply(wrong, images)) - reference).max() > 100 * ATOL


@pytest.mark.slow
def test_resnet18_matches_transformers(tmp_path):
    """The Hub's layout: ResNetForImageClassification (`resnet.` prefix plus a classifier)."""
    model = _hf_model(transformers.ResNetForImageClassification, backbones.RESNET18_ARCH)
    _compare_through_factory(backbones.resnet18, model, tmp_path)


@pytest.mark.slow
def test_resnet50_matches_transformers(tmp_path):
    """The paper's backbone, full microsoft/resnet-50 config, as a bare ResNetModel."""
    model = _hf_model(transformers.ResNetModel, backbones.RESNET50_ARCH)
    _compare_through_factory(backbones.resnet50, model, tmp_path)


SMALL = {"depths": (1, 2), "hidden_sizes": (16, 32), "embedding_size": 8}


@pytest.mark.parametrize(
    "arch",
    [
        {**SMALL, "layer_type": "bottleneck"},
        {**SMALL, "layer_type": "bottleneck", "downsample_in_bottleneck": True},
        {**SMALL, "layer_type": "basic", "downsample_in_first_stage": True},
    ],
    ids=["bottleneck", "downsample_in_bottleneck", "basic-downsample_in_first_stage"],
)
def test_small_variants_match_transformers(arch):
    """The stride flags change no tensor shape, so only outputs show where the stride goes."""
    model = _hf_model(transformers.ResNetModel, arch)
    module = ResNet(**arch)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    variables = hf_to_resnet_variables(state, module)
    images = _images(32)
    features = np.asarray(module.apply(variables, images))
    np.testing.assert_allclose(features, _reference(model, images), rtol=0, atol=ATOL)
    # The same weights with the stride elsewhere give other features.
    if arch["layer_type"] == "bottleneck":
        moved = ResNet(**{**arch, "downsample_in_bottleneck": not module.downsample_in_bottleneck})
        assert np.abs(np.asarray(moved.apply(variables, images)) - features).max() > 100 * ATOL
