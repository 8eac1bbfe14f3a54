"""The model folder of a run (qcxr.predict.bundle, issue 23 item 1): a frozen pretrained backbone
is referenced by its fingerprint, not copied, and refused when the file found has another one; a
trained backbone is copied; loading restores exactly the checkpoint's variables and predicts what
the classifier computes on the same preprocessed images. A random ResNet-18 checkpoint in the HF
layout stands in for microsoft/resnet-18 (no network)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from safetensors.numpy import load_file, save_file

from qcxr.models import backbones
from qcxr.models.backbones import ResNet, resnet_variables_to_hf
from qcxr.predict import BundleError, load_bundle, predict_frame, write_bundle
from qcxr.predict.images import ImageError, expand
from qcxr.run import rebuild_model
from tests.train_helpers import compose_run

SIZE = 32


def _random_checkpoint(folder, seed: int) -> None:
    shapes = jax.eval_shape(
        ResNet(**backbones.RESNET18_ARCH).init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), np.float32),
    )
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)
    folder.mkdir(exist_ok=True)
    save_file(resnet_variables_to_hf(variables), str(folder / "model.safetensors"))
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in backbones.RESNET18_ARCH.items()}
    (folder / "config.json").write_text(json.dumps({"model_type": "resnet", **arch}))


def _config(tmp_path, freeze: bool) -> dict:
    weights = tmp_path / "resnet18"
    _random_checkpoint(weights, seed=0)
    cfg = compose_run(
        tmp_path,
        [
            "backbone=resnet18",
            f"backbone.weights={weights}",
            f"backbone.image_size={SIZE}",
            f"backbone.resize_size={SIZE + 4}",
            f"backbone.freeze={str(freeze).lower()}",
            "head=cdl",
            "task=cxr8",
            "tracker=none",
        ],
        tiny=False,
    )
    return OmegaConf.to_container(cfg, resolve=True)


def _trained_state(config: dict, seed: int = 1) -> tuple[dict, object]:
    """The rebuilt state with every parameter moved, as training would move it."""
    model = rebuild_model(config)
    rng = np.random.default_rng(seed)
    state = dict(model.state_template)
    state["params"] = jax.tree.map(
        lambda x: np.asarray(x) + rng.normal(0, 0.1, np.shape(x)).astype(np.float32),
        state["params"],
    )
    return state, model


def _images(tmp_path, n: int = 3) -> list[str]:
    rng = np.random.default_rng(2)
    paths = []
    for i in range(n):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40 + i, 44), np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_frozen_pretrained_backbone_is_referenced_and_checked(tmp_path):
    config = _config(tmp_path, freeze=True)
    state, model = _trained_state(config)
    backbone = model.classifier.backbone
    # Frozen leaves are what the checkpoint file holds (the freeze mask keeps them bit-identical).
    state["params"]["backbone"] = model.state_template["params"]["backbone"]
    folder = write_bundle(
        tmp_path / "model",
        config,
        state,
        backbone,
        model.label_names,
        "multilabel",
        constants=model.constants,
    )
    stored = load_file(str(folder / "variables.safetensors"))
    assert stored and not any(k.startswith("params/backbone/") for k in stored)
    size = (folder / "variables.safetensors").stat().st_size
    assert size < 20_000 < (tmp_path / "resnet18" / "model.safetensors").stat().st_size / 100
    meta = json.loads((folder / "model.json").read_text())
    assert meta["backbone"] == {
        "name": "resnet18",
        "weights_id": backbone.weights_id,
        "referenced": True,
    }

    loaded = load_bundle(folder)
    head = jax.tree.map(np.asarray, loaded.variables["params"]["head"])
    for key, value in stored.items():
        path = key.split("/")[2:]
        leaf = head
        for part in path:
            leaf = leaf[part]
        np.testing.assert_array_equal(leaf, value)
    paths = _images(tmp_path)
    got = predict_frame(loaded, paths, batch_size=2)
    # Independently: the data pipeline's reference preprocessing, then the run's classifier.
    from qcxr.data.preprocess import decode_image, preprocess_reference

    images = np.stack(
        [preprocess_reference(decode_image(p), config=loaded.preprocessing) for p in paths]
    )
    logits = model.classifier.logits(state["params"], model.constants, images)
    np.testing.assert_allclose(got.to_numpy(), jax.nn.sigmoid(logits), atol=1e-6)

    _random_checkpoint(tmp_path / "resnet18", seed=5)  # the referenced file changed
    with pytest.raises(BundleError, match="trained on backbone weights sha256:") as err:
        load_bundle(folder)
    assert backbone.weights_id in str(err.value)


def test_trained_backbone_is_copied_with_its_constants(tmp_path):
    config = _config(tmp_path, freeze=False)
    state, model = _trained_state(config)
    # Statistics other than the checkpoint file's (as a backbone.init_from source gives them).
    constants = jax.tree.map(lambda x: np.asarray(x) * 2.0 + 0.5, model.constants)
    state["model_state"] = constants  # trained statistics: what the run evaluated with
    folder = write_bundle(
        tmp_path / "model",
        config,
        state,
        model.classifier.backbone,
        model.label_names,
        "multilabel",
        constants=constants,
    )
    stored = load_file(str(folder / "variables.safetensors"))
    assert any(k.startswith("params/backbone/") for k in stored)
    assert any(k.startswith("model_state/backbone/batch_stats/") for k in stored)
    assert json.loads((folder / "model.json").read_text())["backbone"]["referenced"] is False
    _random_checkpoint(tmp_path / "resnet18", seed=5)  # not read for the weights: still loads
    loaded = load_bundle(folder)
    moved = jax.tree.leaves(state["params"]["backbone"])
    for a, b in zip(moved, jax.tree.leaves(loaded.variables["params"]["backbone"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(loaded.constants) == jax.tree.structure(constants)
    for a, b in zip(jax.tree.leaves(constants), jax.tree.leaves(loaded.constants), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_folder_of_images_and_missing_files(tmp_path):
    paths = _images(tmp_path)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    assert expand([tmp_path / "imgs"]) == sorted(paths)
    assert expand([paths[1], str(tmp_path / "gone.png")]) == [paths[1], str(tmp_path / "gone.png")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no image file"):
        expand([tmp_path / "empty"])


def test_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(BundleError, match="model.json is missing|config.yaml is missing"):
        load_bundle(tmp_path)
