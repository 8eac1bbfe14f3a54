"""Our Flax MobileNetV2 vs transformers' PyTorch MobileNetV2: same checkpoint, same pooled features.

A randomly initialised transformers model (batch-norm statistics and affine parameters randomised
too, so a mapping error in any of them shows) is saved with `save_pretrained` and loaded through
our factory, or converted with `hf_to_variables` where the factory has no checkpoint to load (the
paper's variant is trained from scratch). Tolerance: 1e-4 absolute on float32 features of order
1 (the observed differences are ~1e-6). Odd image sizes are included: there TF "SAME" padding and
PyTorch padding put the pixels differently at every stride-2 layer, so a wrong padding rule fails.

The paper's variant is checked against transformers' MobileNetV2 with `tf_padding=False` and
`layer_norm_eps=1e-5`: that is torchvision's MobileNetV2 (symmetric (k - 1) // 2 padding,
BatchNorm2d's eps), the network of the paper's code, with transformers' parameter names.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from qcxr.models import backbones  # noqa: E402
from qcxr.models.backbones import MobileNetV2, hf_to_variables  # noqa: E402

ATOL = 1e-4
PAPER = {"tf_padding": False, "layer_norm_eps": 1e-5}


def _hf_model(model_class, seed: int = 0, **config):
    """A random transformers MobileNetV2 in eval mode, with random batch-norm statistics.

    Scales chosen so the features stay of order 1 and depend on the image (a 1e-4 absolute
    tolerance then means ~1e-4 relative): conv weights He-normal (fan_in; fan_out would shrink the
    signal ~sqrt(C) per depthwise conv and leave features that ignore the image), BN scale
    U(0.7, 1), bias N(0, 0.1), running mean N(0, 0.1), running var U(0.8, 1.2). The BN gain sits
    just under 1: the ResNet test's U(0.5, 1) / U(1, 2) leaves image-independent features over
    MobileNetV2's 52 batch norms, and a gain above 1 grows float32 rounding to ~1e-4 (measured
    against float64: both ours and torch's float32 then differ from it by ~1e-4; here ~3e-6).
    """
    torch.manual_seed(seed)
    model = model_class(transformers.MobileNetV2Config(**config)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_in")
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.7, 1.0)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.8, 1.2)
    return model


def _images(size: int, seed: int = 0) -> np.ndarray:
    """Random normalised-like images f32[2, size, size, 3]."""
    return np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32)


def _reference(model, images: np.ndarray) -> np.ndarray:
    """transformers' pooler_output: f32[B, 1280]."""
    base = getattr(model, "mobilenet_v2", model)
    with torch.no_grad():
        pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        return base(pixels).pooler_output.numpy()


def _assert_close(features: np.ndarray, reference: np.ndarray) -> None:
    assert features.shape == reference.shape == (2, 1280)
    assert 0.1 < np.abs(reference).max() < 100, "features should be of order 1 for ATOL to bite"
    # The two images must give different features, or the comparison says nothing about the input.
    assert np.abs(reference[0] - reference[1]).max() > 1000 * ATOL
    np.testing.assert_allclose(features, reference, rtol=0, atol=ATOL)


def test_google_layout_matches_transformers_through_the_factory(tmp_path):
    """The Hub's layout: MobileNetV2ForImageClassification (`mobilenet_v2.` prefix, classifier)."""
    model = _hf_model(transformers.MobileNetV2ForImageClassification, num_labels=5)
    model.save_pretrained(tmp_path)
    backbone = backbones.mobilenet_v2(weights=str(tmp_path))
    assert backbone.name == "mobilenet_v2" and backbone.feature_dim == 1280
    apply = jax.jit(backbone.module.apply)
    for size in (64, 57):  # 57: odd at every stride-2 layer, where TF padding is asymmetric
        images = _images(size)
        reference = _reference(model, images)
        _assert_close(np.asarray(apply(backbone.variables, images)), reference)

    # The comparison would catch a mapping error in the batch-norm statistics.
    stats = backbone.variables["batch_stats"]
    wrong = {**backbone.variables, "batch_stats": jax.tree.map(np.zeros_like, stats)}
    assert np.abs(np.asarray(apply(wrong, images)) - reference).max() > 100 * ATOL


def test_paper_variant_matches_torchvision_style_transformers():
    """PyTorch padding and BN eps 1e-5; the Google variant on the same weights differs."""
    model = _hf_model(transformers.MobileNetV2Model, seed=1, **PAPER)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    paper = backbones.mobilenet_v2(pretrained=False, variant="paper").module
    assert (paper.tf_padding, paper.layer_norm_eps) == (False, 1e-5)
    variables = hf_to_variables(state, paper)
    images = _images(64)
    reference = _reference(model, images)
    _assert_close(np.asarray(jax.jit(paper.apply)(variables, images)), reference)

    google = MobileNetV2()
    other = np.asarray(jax.jit(google.apply)(variables, images))
    assert np.abs(other - reference).max() > 100 * ATOL


@pytest.mark.slow
def test_full_size_matches_transformers(tmp_path):
    """google/mobilenet_v2_1.0_224's config at its 224 px input, as a bare MobileNetV2Model."""
    model = _hf_model(transformers.MobileNetV2Model, seed=2)
    model.save_pretrained(tmp_path)
    backbone = backbones.mobilenet_v2(weights=str(tmp_path))
    images = _images(224)
    features = np.asarray(jax.jit(backbone.module.apply)(backbone.variables, images))
    _assert_close(features, _reference(model, images))


def test_random_init_gives_image_dependent_features():
    """Training from scratch (the paper's variant) starts from torchvision's fan_out init, whose
    features in train mode (batch statistics, what a trained backbone's steps run) are of order 1
    and depend on the image; on the initial statistics (eval mode) they would be ~1e-9.
    """
    backbone = backbones.mobilenet_v2(pretrained=False, variant="paper")
    variables = backbone.init(jax.random.key(0))
    kernel = np.asarray(variables["params"]["conv_1x1"]["convolution"]["kernel"])  # 1x1, 320->1280
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / 1280), rtol=0.05)  # He fan_out
    images = _images(64)

    def train_mode(v, x):
        return backbone.module.apply(v, x, train=True, mutable=["batch_stats"])[0]

    features = np.asarray(jax.jit(train_mode)(variables, images))
    assert 0.1 < np.abs(features).mean() < 6
    assert np.abs(features[0] - features[1]).mean() > 0.01 * np.abs(features).mean()
    frozen = np.asarray(jax.jit(backbone.module.apply)(variables, images))
    assert np.abs(frozen).mean() < 1e-6
