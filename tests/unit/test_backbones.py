"""Backbones: shapes, the HF <-> Flax mapping's bookkeeping, and where weights may come from.

No torch here (tests/numerics/test_resnet_mapping.py compares against transformers); fake
checkpoints are written from the Flax side with `resnet_variables_to_hf`.
"""

import hashlib
import inspect
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.numpy import save_file

from qcxr.models import backbones
from qcxr.models.backbones import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    MobileNetV2,
    Preprocessing,
    ResNet,
    TinyCNN,
    hf_to_resnet_variables,
    hf_to_variables,
    resnet_variables_to_hf,
    variables_to_hf,
)

TRUSTED_TARGETS = ["qcxr.models.backbones.*"]
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "backbone"
SMALL_BASIC = ResNet(depths=(1, 1), hidden_sizes=(8, 16), layer_type="basic", embedding_size=8)
SMALL_BOTTLENECK = ResNet(depths=(1, 2), hidden_sizes=(16, 32), embedding_size=8)


def _random_variables(module: ResNet | MobileNetV2, seed: int = 0) -> dict:
    """Variables with every leaf random (BN statistics too), so a swapped leaf shows."""
    shapes = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)


def _assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, and a Hub that fails the test if it is contacted."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError(f"hf_hub_download called without permission: {args}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    return cache


@pytest.fixture(scope="session")
def resnet18_checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    """A random ResNet-18 checkpoint folder in the HF layout (model.safetensors + config.json)."""
    folder = tmp_path_factory.mktemp("resnet18")
    variables = _random_variables(ResNet(**backbones.RESNET18_ARCH))
    save_file(resnet_variables_to_hf(variables), str(folder / "model.safetensors"))
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in backbones.RESNET18_ARCH.items()}
    (folder / "config.json").write_text(json.dumps({"model_type": "resnet", **config}))
    return folder, variables


# ---------------------------------------------------------------------------------------------
# Modules


def test_tiny_backbone_gives_pooled_features_at_any_resolution():
    backbone = backbones.tiny(image_size=8)
    assert (backbone.name, backbone.feature_dim, backbone.image_size) == ("tiny", 64, 8)
    assert backbone.resize_size == 8
    assert backbone.weights_id == "random-init"
    assert not backbone.pretrained and not backbone.freeze
    # Random init compiles an RNG kernel per parameter shape (seconds on a busy 2-core CPU), so
    # initialise once and apply at two sizes: no variable depends on the image size.
    variables = backbone.init(jax.random.key(1))
    assert set(variables) == {"params"}
    for size in (8, 33):
        features = backbone.module.apply(variables, jnp.ones((2, size, size, 3)))
        assert features.shape == (2, 64)
        assert features.dtype == jnp.float32
    other = backbones.tiny(feature_dim=5)
    assert isinstance(other.module, TinyCNN) and other.feature_dim == 5
    out, _ = jax.eval_shape(
        other.module.init_with_output, jax.random.key(0), jnp.ones((2, 8, 8, 3))
    )
    assert out.shape == (2, 5)


def test_pretrained_false_is_offline_random_init(empty_hf_cache, caplog):
    with caplog.at_level(logging.WARNING, logger=backbones.__name__):
        backbone = backbones.resnet18(pretrained=False)
    assert "random weights" in caplog.text
    assert backbone.variables is None and backbone.weights_id == "random-init"
    assert (backbone.feature_dim, backbone.image_size, backbone.resize_size) == (512, 224, 256)
    variables = jax.eval_shape(backbone.init, jax.random.key(0))  # shapes only: no RNG compiles
    assert set(variables) == {"params", "batch_stats"}
    out = jax.eval_shape(backbone.module.apply, variables, jnp.zeros((2, 64, 64, 3)))
    assert out.shape == (2, 512)

    big = backbones.resnet50(pretrained=False, image_size=112)
    assert (big.feature_dim, big.image_size, big.resize_size) == (2048, 112, 128)
    variables = jax.eval_shape(big.init, jax.random.key(0))
    out = jax.eval_shape(big.module.apply, variables, jnp.zeros((2, 64, 64, 3)))
    assert out.shape == (2, 2048)


def test_pretrained_false_with_weights_is_a_conflict(tmp_path):
    with pytest.raises(ValueError, match="pretrained=false"):
        backbones.resnet18(pretrained=False, weights=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Mapping


def test_mapping_round_trip_and_names():
    variables = _random_variables(SMALL_BOTTLENECK)
    state = resnet_variables_to_hf(variables)
    assert state["embedder.embedder.convolution.weight"].shape == (8, 3, 7, 7)  # OIHW
    assert "encoder.stages.0.layers.0.shortcut.normalization.running_var" in state
    assert "encoder.stages.1.layers.1.layer.2.normalization.running_mean" in state
    assert "encoder.stages.1.layers.1.shortcut.convolution.weight" not in state
    _assert_trees_equal(hf_to_resnet_variables(state, SMALL_BOTTLENECK), variables)


def test_mapping_accepts_image_classification_checkpoints():
    """The Hub holds ResNetForImageClassification: `resnet.` prefix plus a classifier."""
    variables = _random_variables(SMALL_BASIC)
    state = {f"resnet.{k}": v for k, v in resnet_variables_to_hf(variables).items()}
    state["classifier.1.weight"] = np.zeros((10, 16), np.float32)
    state["classifier.1.bias"] = np.zeros((10,), np.float32)
    state["resnet.embedder.embedder.normalization.num_batches_tracked"] = np.array(7)
    _assert_trees_equal(hf_to_resnet_variables(state, SMALL_BASIC), variables)


def test_mapping_lists_missing_unexpected_and_misshapen_keys():
    state = resnet_variables_to_hf(_random_variables(SMALL_BASIC))
    del state["encoder.stages.1.layers.0.shortcut.normalization.running_mean"]
    state["encoder.stages.7.layers.0.layer.0.convolution.weight"] = np.zeros((1, 1, 1, 1))
    state["embedder.embedder.normalization.weight"] = np.zeros((9,), np.float32)
    with pytest.raises(CheckpointMismatchError) as error:
        hf_to_resnet_variables(state, SMALL_BASIC)
    message = str(error.value)
    assert "missing keys (1)" in message
    assert "encoder.stages.1.layers.0.shortcut.normalization.running_mean" in message
    assert "unexpected keys (1)" in message
    assert "encoder.stages.7.layers.0.layer.0.convolution.weight" in message
    assert "shape mismatches (1)" in message
    assert "embedder.embedder.normalization.weight: checkpoint (9,)" in message


def test_factory_rejects_a_checkpoint_of_another_architecture(tmp_path, empty_hf_cache):
    path = tmp_path / "other.safetensors"
    save_file(resnet_variables_to_hf(_random_variables(SMALL_BOTTLENECK)), str(path))
    with pytest.raises(CheckpointMismatchError) as error:
        backbones.resnet18(weights=str(path))
    assert "missing keys" in str(error.value)
    assert "unexpected keys" in str(error.value)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"depths": [2, 2, 2, 2], "layer_type": "basic"}, "depths"),
        ({"downsample_in_bottleneck": True}, "downsample_in_bottleneck"),
    ],
)
def test_factory_rejects_a_config_of_another_architecture(tmp_path, override, field):
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "resnet", **override}))
    with pytest.raises(CheckpointMismatchError, match=field):
        backbones.resnet50(weights=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# MobileNetV2 and parameter counts


def _param_count(backbone) -> int:
    variables = jax.eval_shape(backbone.init, jax.random.key(0))  # shapes only
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize(
    ("factory", "kwargs", "count"),
    [
        # google/mobilenet_v2_1.0_224 without its classifier; torchvision's mobilenet_v2:
        # 3,504,872 - the 1280 -> 1000 classifier (1,281,000).
        (backbones.mobilenet_v2, {}, 2_223_872),
        (backbones.mobilenet_v2, {"variant": "paper"}, 2_223_872),
        # torchvision's 11,689,512 / 25,557,032 minus the fc layer (513,000 / 2,049,000).
        (backbones.resnet18, {}, 11_176_512),
        (backbones.resnet50, {}, 23_508_032),
    ],
    ids=["mobilenet_v2", "mobilenet_v2_paper", "resnet18", "resnet50"],
)
def test_parameter_counts(factory, kwargs, count):
    assert _param_count(factory(pretrained=False, **kwargs)) == count


def test_mobilenet_v2_shapes_and_names():
    module = MobileNetV2()
    variables = _random_variables(module)
    state = variables_to_hf(variables)
    assert len(state) == 260  # 52 convs + 52 batch norms x 4 tensors
    assert state["conv_stem.first_conv.convolution.weight"].shape == (32, 3, 3, 3)
    assert state["conv_stem.conv_3x3.convolution.weight"].shape == (32, 1, 3, 3)  # depthwise
    assert "conv_stem.expand_1x1.convolution.weight" not in state  # first_layer_is_expansion
    assert state["layer.15.expand_1x1.convolution.weight"].shape == (960, 160, 1, 1)
    assert state["layer.15.reduce_1x1.normalization.running_var"].shape == (320,)
    assert state["conv_1x1.convolution.weight"].shape == (1280, 320, 1, 1)
    _assert_trees_equal(hf_to_variables(state, module), variables)
    # The paper's variant has the same tree; only padding and epsilon differ.
    paper = MobileNetV2(tf_padding=False, layer_norm_eps=1e-5)
    _assert_trees_equal(hf_to_variables(state, paper), variables)
    for size in (8, 33):
        out = jax.eval_shape(module.apply, variables, jnp.zeros((2, size, size, 3)))
        assert out.shape == (2, 1280)


def test_mobilenet_v2_mapping_takes_the_hub_layout_and_lists_mismatches():
    """The Hub holds MobileNetV2ForImageClassification: `mobilenet_v2.` prefix + classifier."""
    module = MobileNetV2()
    variables = _random_variables(module)
    state = {f"mobilenet_v2.{k}": v for k, v in variables_to_hf(variables).items()}
    state["classifier.weight"] = np.zeros((1001, 1280), np.float32)
    state["classifier.bias"] = np.zeros((1001,), np.float32)
    state["mobilenet_v2.conv_1x1.normalization.num_batches_tracked"] = np.array(3)
    _assert_trees_equal(hf_to_variables(state, module), variables)

    del state["mobilenet_v2.layer.3.conv_3x3.normalization.running_mean"]
    state["mobilenet_v2.layer.16.conv_3x3.convolution.weight"] = np.zeros((1, 1, 3, 3))
    state["mobilenet_v2.conv_1x1.convolution.weight"] = np.zeros((1000, 320, 1, 1), np.float32)
    with pytest.raises(CheckpointMismatchError) as error:
        hf_to_variables(state, module)
    message = str(error.value)
    assert "MobileNetV2(tf_padding=True" in message
    assert "missing keys (1)" in message
    assert "layer.3.conv_3x3.normalization.running_mean" in message
    assert "unexpected keys (1)" in message and "layer.16.conv_3x3" in message
    assert "conv_1x1.convolution.weight: checkpoint (1000, 320, 1, 1)" in message
    # A ResNet checkpoint is not a MobileNetV2 one, whatever the prefix.
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        hf_to_variables(resnet_variables_to_hf(_random_variables(SMALL_BASIC)), module)


@pytest.fixture(scope="session")
def mobilenet_v2_checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    """A random MobileNetV2 checkpoint folder in the HF layout, with the Google config.json."""
    folder = tmp_path_factory.mktemp("mobilenet_v2")
    variables = _random_variables(MobileNetV2())
    save_file(variables_to_hf(variables), str(folder / "model.safetensors"))
    config = {"model_type": "mobilenet_v2", "depth_multiplier": 1.0, "tf_padding": True}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, variables


def test_mobilenet_v2_loads_a_local_folder(mobilenet_v2_checkpoint, empty_hf_cache):
    folder, variables = mobilenet_v2_checkpoint
    backbone = backbones.mobilenet_v2(weights=str(folder))
    _assert_trees_equal(backbone.variables, variables)
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert backbone.weights_id == f"sha256:{digest}" and backbone.freeze
    assert (backbone.name, backbone.feature_dim) == ("mobilenet_v2", 1280)


def test_mobilenet_v2_cache_and_download_rules(mobilenet_v2_checkpoint, empty_hf_cache):
    with pytest.raises(CheckpointNotFoundError) as error:
        backbones.mobilenet_v2()
    assert "google/mobilenet_v2_1.0_224" in str(error.value)
    assert "backbone.allow_download=true" in str(error.value)
    folder, variables = mobilenet_v2_checkpoint
    repo = empty_hf_cache / "models--google--mobilenet_v2_1.0_224"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for name in ("model.safetensors", "config.json"):
        (snapshot / name).symlink_to(folder / name)
    _assert_trees_equal(backbones.mobilenet_v2().variables, variables)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"tf_padding": False}, "tf_padding"),  # the same tensors, other padding
        ({"layer_norm_eps": 1e-5}, "layer_norm_eps"),
        ({"depth_multiplier": 0.75}, "depth_multiplier"),
        ({"output_stride": 16}, "output_stride"),
        ({"model_type": "mobilenet_v1"}, "model_type"),
    ],
)
def test_mobilenet_v2_rejects_a_config_of_another_architecture(tmp_path, override, field):
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mobilenet_v2", **override}))
    with pytest.raises(CheckpointMismatchError, match=field):
        backbones.mobilenet_v2(weights=str(tmp_path))


def test_mobilenet_v2_variant_errors():
    with pytest.raises(ValueError, match="variant='v3' is not one of"):
        backbones.mobilenet_v2(pretrained=False, variant="v3")
    with pytest.raises(ValueError, match="no pretrained weights") as error:
        backbones.mobilenet_v2(variant="paper")
    assert "backbone.pretrained=false" in str(error.value)
    with pytest.raises(ValueError, match="depth=34 is not one of"):
        backbones.resnet(34, pretrained=False)


def test_every_backbone_states_its_preprocessing():
    assert backbones.tiny(image_size=8).preprocessing == Preprocessing(8, 8)
    resnet = backbones.resnet(18, pretrained=False, image_size=112)
    assert resnet.preprocessing == Preprocessing(112, 128, resample=backbones.BICUBIC)
    assert (resnet.image_size, resnet.resize_size) == (112, 128)  # the old attributes
    google = backbones.mobilenet_v2(pretrained=False, image_size=160)
    assert google.preprocessing.resize_size == 182 and google.preprocessing.mean == (0.5,) * 3
    paper = backbones.mobilenet_v2(pretrained=False, variant="paper", image_size=96)
    assert (paper.image_size, paper.resize_size) == (96, 96)
    with pytest.raises(ValueError, match="resize_size 200 is smaller"):
        backbones.mobilenet_v2(pretrained=False, image_size=224, resize_size=200)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0, "resize_size": 8}, "image_size must be positive"),
        ({"image_size": 224, "resize_size": 200}, "backbone.resize_size >= backbone.image_size"),
        ({"image_size": 8, "resize_size": 8, "mean": (0.5, 0.5)}, "3 \\(RGB\\) values"),
        ({"image_size": 8, "resize_size": 8, "std": (0.5, 0.0, 0.5)}, "std must be positive"),
        ({"image_size": 8, "resize_size": 8, "resample": 0}, "resample must be"),
        ({"image_size": 8, "resize_size": 8, "resize_mode": "crop"}, "resize_mode must be"),
    ],
)
def test_bad_preprocessing_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Preprocessing(**kwargs)


# ---------------------------------------------------------------------------------------------
# Where weights come from


def test_missing_checkpoint_without_download_is_a_clear_error(empty_hf_cache):
    with pytest.raises(CheckpointNotFoundError) as error:
        backbones.resnet50()
    assert isinstance(error.value, FileNotFoundError)
    message = str(error.value)
    for expected in (
        "microsoft/resnet-50",
        str(empty_hf_cache),
        "backbone.weights=/path/to/folder",
        "backbone.allow_download=true",
        "backbone.pretrained=false",
    ):
        assert expected in message


def test_bad_weights_paths_are_clear_errors(tmp_path, empty_hf_cache):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        backbones.resnet18(weights=str(tmp_path / "absent"))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match="without model.safetensors"):
        backbones.resnet18(weights=str(tmp_path))
    with pytest.raises(CheckpointNotFoundError, match="not a .safetensors file"):
        backbones.resnet18(weights=str(tmp_path / "pytorch_model.bin"))


def test_loads_a_local_folder(resnet18_checkpoint, empty_hf_cache):
    folder, variables = resnet18_checkpoint
    backbone = backbones.resnet18(weights=str(folder))
    _assert_trees_equal(backbone.variables, variables)
    assert backbone.init(jax.random.key(0)) is backbone.variables
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert backbone.weights_id == f"sha256:{digest}"
    assert backbone.freeze


def test_loads_from_the_hf_cache(resnet18_checkpoint, empty_hf_cache):
    folder, variables = resnet18_checkpoint
    repo = empty_hf_cache / "models--microsoft--resnet-18"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for name in ("model.safetensors", "config.json"):
        (snapshot / name).symlink_to(folder / name)
    backbone = backbones.resnet18()
    _assert_trees_equal(backbone.variables, variables)


def test_downloads_only_when_allowed(resnet18_checkpoint, empty_hf_cache, monkeypatch):
    folder, variables = resnet18_checkpoint
    calls = []

    def fake_download(repo_id, filename):
        calls.append((repo_id, filename))
        return str(folder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(CheckpointNotFoundError):
        backbones.resnet18()
    assert calls == []
    backbone = backbones.resnet18(allow_download=True)
    assert ("microsoft/resnet-18", "model.safetensors") in calls
    _assert_trees_equal(backbone.variables, variables)


def test_failed_download_is_a_clear_error(empty_hf_cache, monkeypatch):
    def offline(repo_id, filename):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(CheckpointNotFoundError, match="could not download.*network unreachable"):
        backbones.resnet50(allow_download=True)


# ---------------------------------------------------------------------------------------------
# Configs and boundaries


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("resnet50", "resnet50"),
        ("resnet18", "resnet18"),
        ("mobilenet_v2", "mobilenet_v2"),
        ("mobilenet_v2_paper", "mobilenet_v2"),
        ("tiny", "tiny"),
    ],
)
def test_config_keys_match_the_factory(name, target):
    config = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    assert config._target_ == f"qcxr.models.backbones.{target}"
    factory = getattr(backbones, target)
    keys = set(config) - {"_target_", "defaults"}  # defaults: the typed schema (conf/config.yaml)
    assert keys == set(inspect.signature(factory).parameters)
    assert "freeze" in keys
    for key, value in OmegaConf.to_container(config).items():
        if key == "defaults":
            continue
        assert not (isinstance(value, str) and value.startswith("/")), "no absolute paths"


def test_configs_instantiate(empty_hf_cache):
    def build(name, **overrides):
        config = OmegaConf.load(CONF_DIR / f"{name}.yaml")
        config.pop("defaults", None)  # the schema entry, resolved only when Hydra composes
        return instantiate(config, _execution_whitelist_=TRUSTED_TARGETS, **overrides)

    tiny = build("tiny", image_size=8)
    assert tiny.feature_dim == 64 and tiny.image_size == 8
    resnet = build("resnet18", pretrained=False)
    assert resnet.feature_dim == 512 and resnet.freeze and resnet.resize_size == 256
    # Hydra wraps the factory's error; its message must still carry the fixes.
    with pytest.raises(Exception, match="backbone.allow_download=true"):
        build("resnet50")
    with pytest.raises(Exception, match="backbone.allow_download=true"):
        build("mobilenet_v2")
    google = build("mobilenet_v2", pretrained=False)
    assert (google.name, google.feature_dim, google.image_size, google.resize_size) == (
        "mobilenet_v2",
        1280,
        224,
        256,
    )
    paper = build("mobilenet_v2_paper")
    assert (paper.name, paper.image_size, paper.preprocessing.resize_mode) == (
        "mobilenet_v2_paper",
        128,
        "square",
    )
    assert not paper.pretrained and not paper.freeze
    assert not paper.module.tf_padding and paper.module.layer_norm_eps == 1e-5
    # backbone.variant=paper on the pretrained config: a clear error naming the fixes.
    with pytest.raises(Exception, match="backbone=mobilenet_v2_paper"):
        build("mobilenet_v2", variant="paper")


def test_backbones_import_no_config_torch_or_other_layers():
    code = (
        "import sys, qcxr.models.backbones\n"
        "banned = ('hydra', 'omegaconf', 'torch', 'transformers', 'qcxr.data', 'qcxr.train',"
        " 'qcxr.tracking')\n"
        "found = sorted(m for m in sys.modules if m.startswith(banned))\n"
        "assert not found, found\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_child_env())


def _child_env() -> dict:
    src = str(Path(backbones.__file__).resolve().parents[3])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def test_tiny_code_defaults_match_its_yaml():
    """`tiny()` and conf/backbone/tiny.yaml agree (issue 20 item 6: code 64 px, YAML 32)."""

    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf" / "backbone" / "tiny.yaml"
    options = yaml.safe_load(conf.read_text())
    defaults = {name: p.default for name, p in inspect.signature(backbones.tiny).parameters.items()}
    for key in ("feature_dim", "image_size", "freeze"):
        assert defaults[key] == options[key], (key, defaults[key], options[key])
    assert backbones.tiny().image_size == options["image_size"]
