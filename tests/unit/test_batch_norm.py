"""Train-mode batch norm (issue 22 item 1): batch statistics in train steps, running statistics in
the train state, used by evaluation, kept by checkpoints; frozen backbones stay in eval mode.

References: torch.nn.BatchNorm2d (torch CPU, float32) and a NumPy hand computation: mean and
biased variance over (N, H, W) for the normalisation, the unbiased variance (n / (n - 1)) for the
running variance, running = 0.9 * running + 0.1 * batch (PyTorch's momentum 0.1), eps 1e-5.
Tolerances: 1e-5 absolute on O(1) float32 values (measured below 1e-6).
On the fixed-statistics code (batch norm always on `batch_stats`, never updated, no
`model_state` in the train state) every test here fails: outputs equal the eval-mode ones,
running statistics stay at their init, and the train state has no model state to save.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from qcxr.models.backbones import RANDOM_INIT_ID, Backbone, BatchNorm, Preprocessing, ResNet
from qcxr.models.backbones.layers import TORCH_CONV_INIT
from qcxr.models.classifier import Classifier
from qcxr.models.heads import cdl_head
from qcxr.train import optim, steps
from qcxr.train.checkpoint import Checkpoints

ATOL = 1e-5
EPS = 1e-5


def _x(shape=(4, 5, 5, 3), seed=0):
    return np.random.default_rng(seed).normal(1.5, 2.0, size=shape).astype(np.float32)


def _bn_variables(c=3, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "scale": rng.uniform(0.5, 2, c).astype(np.float32),
            "bias": rng.normal(size=c).astype(np.float32),
        },
        "batch_stats": {
            "mean": rng.normal(size=c).astype(np.float32),
            "var": rng.uniform(0.5, 2, c).astype(np.float32),
        },
    }


def _numpy_train(x, v):
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased
    n = x.size // x.shape[-1]
    y = (x - mean) / np.sqrt(var + EPS) * v["params"]["scale"] + v["params"]["bias"]
    stats = v["batch_stats"]
    return y, {
        "mean": 0.9 * stats["mean"] + 0.1 * mean,
        "var": 0.9 * stats["var"] + 0.1 * var * n / (n - 1),
    }


def test_train_mode_matches_numpy_and_torch_batchnorm2d():
    import torch

    x, v = _x(), _bn_variables()
    y, updated = BatchNorm().apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    y_np, stats_np = _numpy_train(x, v)
    np.testing.assert_allclose(np.asarray(y), y_np, atol=ATOL)
    for k in ("mean", "var"):
        np.testing.assert_allclose(np.asarray(updated["batch_stats"][k]), stats_np[k], atol=ATOL)

    bn = torch.nn.BatchNorm2d(3)  # momentum 0.1, eps 1e-5: the defaults layers.py cites
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(v["params"]["scale"]))
        bn.bias.copy_(torch.from_numpy(v["params"]["bias"]))
        bn.running_mean.copy_(torch.from_numpy(v["batch_stats"]["mean"]))
        bn.running_var.copy_(torch.from_numpy(v["batch_stats"]["var"]))
    bn.train()
    y_t = bn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
    np.testing.assert_allclose(np.asarray(y), y_t, atol=ATOL)
    np.testing.assert_allclose(
        np.asarray(updated["batch_stats"]["mean"]), bn.running_mean, atol=ATOL
    )
    np.testing.assert_allclose(np.asarray(updated["batch_stats"]["var"]), bn.running_var, atol=ATOL)


def test_eval_mode_normalises_by_the_running_statistics():
    x, v = _x(), _bn_variables()
    y = np.asarray(BatchNorm().apply(v, jnp.asarray(x)))
    s, p = v["batch_stats"], v["params"]
    expected = (x - s["mean"]) / np.sqrt(s["var"] + EPS) * p["scale"] + p["bias"]
    np.testing.assert_allclose(y, expected, atol=ATOL)
    assert not np.allclose(y, _numpy_train(x, v)[0], atol=1e-2)  # not the batch's statistics


# ---- through the classifier and the train step --------------------------------------------------
def _small_resnet(freeze: bool) -> Backbone:
    """A two-stage CIFAR-stem ResNet (resnet18_28's module at tiny widths), 1 input channel."""
    module = ResNet(
        depths=(1, 1),
        hidden_sizes=(4, 8),
        layer_type="basic",
        embedding_size=4,
        stem="cifar",
        num_channels=1,
        kernel_init=TORCH_CONV_INIT,
    )
    return Backbone("small_resnet", module, None, 8, Preprocessing(8, 8), freeze, RANDOM_INIT_ID)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(4, 8, 8, 1)).astype(np.float32),
        "labels": np.eye(2, dtype=bool)[rng.integers(0, 2, 4)],
        "mask": np.ones(4, bool),
    }


def _setup(freeze=False, accumulation_steps=1, dropout=False):
    model = Classifier(_small_resnet(freeze), cdl_head(2))
    params, model_state = model.init(jax.random.key(0))
    labels = optim.freeze_labels(params, {"backbone": freeze})
    tx = optim.adam(1e-2, total_steps=10, trainable=labels, accumulation_steps=accumulation_steps)

    def apply(p, batch, key=None, *, model_state, train=False):
        return model.logits(p, model_state, batch["image"], key, train=train)

    key = jax.random.key(3) if dropout else None
    train = steps.make_train_step(apply, tx, "multiclass", dropout_key=key, stateful=True)
    evaluate = steps.make_eval_step(apply, "multiclass", stateful=True)
    return model, steps.init_state(params, tx, model_state), train, evaluate


def _stats(state):
    return jax.tree.map(np.asarray, state["model_state"]["backbone"]["batch_stats"])


def _conv_outputs(model, params, model_state, images):
    """Each ConvLayer's convolution output (its batch norm's input) in a train-mode forward."""
    variables = {"params": params["backbone"], **model_state["backbone"]}
    _, out = model.backbone.module.apply(
        variables,
        images,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: mdl.name == "convolution",
    )
    flat = {}

    def walk(tree, path):
        for k, v in tree.items():
            if k == "convolution":
                flat[path] = np.asarray(v["__call__"][0])
            elif isinstance(v, dict):
                walk(v, (*path, k))

    walk(out["intermediates"], ())
    return flat


def test_one_train_step_updates_every_running_statistic_as_a_hand_computation():
    model, state, train, _ = _setup()
    before = _stats(state)
    inputs = _conv_outputs(model, state["params"], state["model_state"], _batch()["image"])
    new, loss = train(state, _batch())
    after = _stats(new)
    assert len(inputs) == 6 and np.isfinite(float(loss))  # stem, 2 x (2 convs), 1 shortcut
    for path, h in inputs.items():
        node_b, node_a = before, after
        for k in path:
            node_b, node_a = node_b[k], node_a[k]
        old, got = node_b["normalization"], node_a["normalization"]
        n = h.size // h.shape[-1]
        mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2)) * n / (n - 1)
        np.testing.assert_allclose(got["mean"], 0.9 * old["mean"] + 0.1 * mean, atol=ATOL)
        np.testing.assert_allclose(got["var"], 0.9 * old["var"] + 0.1 * var, atol=ATOL)
        assert not np.allclose(got["var"], old["var"])


def test_eval_reads_the_state_running_statistics_and_changes_nothing():
    model, state, train, evaluate = _setup()
    batch = _batch(1)
    init_stats = jax.tree.map(np.asarray, state["model_state"])  # the step donates its input
    trained, _ = train(state, _batch())
    probs = np.asarray(evaluate(trained["params"], batch, trained["model_state"])[0])
    initial = np.asarray(evaluate(trained["params"], batch, init_stats)[0])
    assert not np.allclose(probs, initial, atol=1e-4)  # the running statistics matter
    expected = jax.nn.softmax(
        model.logits(trained["params"], trained["model_state"], jnp.asarray(batch["image"]))
    )
    np.testing.assert_allclose(probs, np.asarray(expected), atol=1e-6)
    # Evaluation is deterministic and per-example: one example alone gives the same output
    # (batch statistics would make it depend on the rest of the batch).
    single = {k: v[:1] for k, v in batch.items()}
    one = np.asarray(evaluate(trained["params"], single, trained["model_state"])[0])
    np.testing.assert_allclose(one, probs[:1], atol=1e-5)


def test_frozen_backbone_stays_in_eval_mode_and_its_statistics_never_change():
    _, state, train, _ = _setup(freeze=True)
    before = jax.tree.map(lambda x: np.asarray(x).tobytes(), state["model_state"])
    for seed in range(3):
        state, _ = train(state, _batch(seed))
    after = jax.tree.map(lambda x: np.asarray(x).tobytes(), state["model_state"])
    assert before == after


def test_accumulation_and_dropout_keys_still_work_with_batch_norm():
    # Every micro-step updates the running statistics (PyTorch: every train-mode forward), the
    # parameters only every k-th step.
    _, state, train, _ = _setup(accumulation_steps=2, dropout=True)
    p0, s0 = jax.tree.map(np.asarray, state["params"]), _stats(state)
    state, _ = train(state, _batch(0))
    s1 = _stats(state)
    assert jax.tree.all(jax.tree.map(np.array_equal, p0, jax.tree.map(np.asarray, state["params"])))
    assert not jax.tree.all(jax.tree.map(np.array_equal, s0, s1))
    state, _ = train(state, _batch(1))
    assert not jax.tree.all(
        jax.tree.map(np.array_equal, p0, jax.tree.map(np.asarray, state["params"]))
    )
    assert not jax.tree.all(jax.tree.map(np.array_equal, s1, _stats(state)))


def _same(a, b) -> bool:
    return jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b))


def test_checkpoint_round_trips_the_statistics_and_a_resumed_run_continues_from_them(tmp_path):
    _, state, train, _ = _setup()
    state, _ = train(state, _batch(0))
    kept = jax.tree.map(np.asarray, state)
    ckpt = Checkpoints(tmp_path / "ckpt")
    ckpt.save_latest(1, state, {"epoch": 1})
    ckpt.close()
    # A fresh process rebuilds the initial state as the template, then restores into it.
    _, template, train2, _ = _setup()
    ckpt = Checkpoints(tmp_path / "ckpt")
    restored, meta = ckpt.restore_latest(template)
    ckpt.close()
    assert meta["epoch"] == 1 and _same(restored["model_state"], kept["model_state"])
    assert not _same(restored["model_state"], jax.tree.map(np.asarray, template["model_state"]))
    # The next step from the restored state equals the next step of the uninterrupted run.
    cont, _ = train(jax.tree.map(jnp.asarray, kept), _batch(1))
    resumed, _ = train2(restored, _batch(1))
    assert _same(jax.tree.map(np.asarray, cont), jax.tree.map(np.asarray, resumed))


def test_checkpoint_from_before_model_state_loads_with_the_initial_statistics(tmp_path, caplog):
    _, state, _, _ = _setup()
    old = {k: v for k, v in state.items() if k != "model_state"}  # the pre-change layout
    manager = ocp.CheckpointManager(
        tmp_path / "ckpt" / "best",
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        item_names=("state", "meta"),
    )
    manager.save(
        3,
        args=ocp.args.Composite(state=ocp.args.StandardSave(old), meta=ocp.args.JsonSave({})),
    )
    manager.wait_until_finished()
    manager.close()
    ckpt = Checkpoints(tmp_path / "ckpt")
    with caplog.at_level(logging.WARNING, logger="qcxr.train.checkpoint"):
        restored, _ = ckpt.restore_best(state)
    ckpt.close()
    assert "written before train-mode batch norm" in caplog.text
    assert _same(
        jax.tree.map(np.asarray, restored["model_state"]),
        jax.tree.map(np.asarray, state["model_state"]),
    )
    assert _same(
        jax.tree.map(np.asarray, restored["params"]), jax.tree.map(np.asarray, old["params"])
    )


@pytest.mark.parametrize("freeze", [False, True])
def test_classifier_train_call_keeps_dtypes_and_frozen_state_identity(freeze):
    model = Classifier(_small_resnet(freeze), cdl_head(2), compute_dtype="bfloat16")
    params, model_state = model.init(jax.random.key(0))
    _, new = model.logits(params, model_state, jnp.ones((2, 8, 8, 1)), train=True)
    assert jax.tree.map(lambda x: x.dtype, new) == jax.tree.map(lambda x: x.dtype, model_state)
    assert (new is model_state) is freeze
