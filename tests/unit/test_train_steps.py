"""Freezing through the optimizer mask; optimizers, schedules and accumulation; determinism;
the dropout stream of the train step (heads with dropout: QCNN)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.models.backbones import tiny
from qcxr.models.classifier import Classifier
from qcxr.models.heads import cdl_head, dqc_head, qcnn_head
from qcxr.quantum import make_ansatz
from qcxr.train import optim, steps


def _batch(seed=0, labels=3):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(2, 8, 8, 3)).astype(np.float32),
        "labels": rng.random((2, labels)) < 0.5,
        "mask": np.array([True, True]),
    }


def _setup(freeze, head=None, opt=optim.adam, **kw):
    model = Classifier(tiny(feature_dim=4, image_size=8, freeze=freeze), head or cdl_head(3))
    params, consts = model.init(jax.random.key(0))
    labels = optim.freeze_labels(params, {"backbone": model.backbone.freeze})
    tx = opt(learning_rate=1e-2, total_steps=10, trainable=labels, **kw)
    state = steps.init_state(params, tx)
    step = steps.make_train_step(lambda p, b: model.logits(p, consts, b["image"]), tx)
    return params, state, step


@pytest.mark.parametrize("head", ["cdl", pytest.param("dqc", marks=pytest.mark.slow)])
def test_frozen_backbone_bit_identical_head_changes(head):
    h = cdl_head(3) if head == "cdl" else dqc_head(3, make_ansatz("ry_cnot_ring", 3, 1))
    params, state, step = _setup(True, h)
    before = jax.tree.map(np.array, params)
    state, loss = step(state, _batch())
    after = state["params"]
    for a, b in zip(
        jax.tree.leaves(before["backbone"]), jax.tree.leaves(after["backbone"]), strict=True
    ):
        assert np.array_equal(a, np.asarray(b)) and a.tobytes() == np.asarray(b).tobytes()
    for a, b in zip(jax.tree.leaves(before["head"]), jax.tree.leaves(after["head"]), strict=True):
        assert not np.array_equal(a, np.asarray(b))
    assert np.isfinite(float(loss))


@pytest.mark.slow
def test_trainable_backbone_changes():
    params, state, step = _setup(False)
    before = jax.tree.map(np.array, params)
    state, _ = step(state, _batch())
    changed = [
        not np.array_equal(a, np.asarray(b))
        for a, b in zip(
            jax.tree.leaves(before["backbone"]),
            jax.tree.leaves(state["params"]["backbone"]),
            strict=True,
        )
    ]
    assert all(changed)


@pytest.mark.slow
def test_accumulation_updates_every_k_steps():
    params, state, step = _setup(False, accumulation_steps=2)
    before = jax.tree.map(np.array, params)
    state, _ = step(state, _batch(0))
    assert all(
        np.array_equal(a, np.asarray(b))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"]), strict=True)
    )
    state, _ = step(state, _batch(1))
    assert not all(
        np.array_equal(a, np.asarray(b))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"]), strict=True)
    )


@pytest.mark.parametrize("name", ["constant", "cosine", "warmup_cosine"])
def test_schedules(name):
    s = optim.make_schedule(1.0, name, warmup_steps=2, total_steps=10)
    values = [float(s(i)) for i in range(11)]
    assert max(values) == pytest.approx(1.0)
    if name != "constant":
        assert values[-1] == pytest.approx(0.0, abs=1e-6)
    if name == "warmup_cosine":
        assert values[0] == 0.0


@pytest.mark.slow
def test_same_seed_same_first_loss():
    losses = []
    for _ in range(2):
        _, state, step = _setup(False)
        _, loss = step(state, _batch())
        losses.append(float(loss))
    assert losses[0] == losses[1]


@pytest.mark.slow
def test_bf16_compute_runs():
    model = Classifier(tiny(feature_dim=4, image_size=8), cdl_head(3), compute_dtype="bfloat16")
    params, consts = model.init(jax.random.key(0))
    out = model.logits(params, consts, jnp.ones((2, 8, 8, 3)))
    assert out.dtype == jnp.float32 and out.shape == (2, 3)


DROPOUT_KEY = jax.random.key(7)


def _dropout_setup(head, path="image", dropout_key=DROPOUT_KEY, freeze=True):
    """A fresh state and jitted train/eval steps wired as run.py does (image or features path)."""
    model = Classifier(tiny(feature_dim=4, image_size=8, freeze=freeze), head)
    params, consts = model.init(jax.random.key(0))
    tx = optim.adam(
        learning_rate=1e-2,
        total_steps=10,
        trainable=optim.freeze_labels(params, {"backbone": model.backbone.freeze}),
    )
    if path == "image":

        def apply(p, b, key=None):
            return model.logits(p, consts, b["image"], key)
    else:

        def apply(p, b, key=None):
            return model.head_logits(p, b["features"], key)

    batch = _batch()
    batch["features"] = np.asarray(model.features(params, consts, jnp.asarray(batch["image"])))
    step = steps.make_train_step(apply, tx, dropout_key=dropout_key)
    return params, steps.init_state(params, tx), step, steps.make_eval_step(apply), batch


def _loss_at(setup, step_index=0):
    """The train loss of one step from the fresh state of a `_dropout_setup`, at a step counter."""
    _, state, step, _, batch = setup
    state = jax.tree.map(jnp.copy, state)  # the step donates its state; keep the setup's intact
    state["step"] = jnp.asarray(step_index, jnp.int32)
    return float(step(state, batch)[1])


def _first_loss(head, path="image", step_index=0, **kw):
    return _loss_at(_dropout_setup(head, path, **kw), step_index)


@pytest.mark.parametrize("path", ["image", "features"])
def test_qcnn_train_step_applies_dropout(path):
    """Dropout 0.5 changes the train loss (it was silently off, issue: the trainer passed no
    dropout stream); two steps draw different masks; the same key twice is deterministic."""
    no_dropout = _first_loss(qcnn_head(3, dropout=0.0), path)
    dropped_setup = _dropout_setup(qcnn_head(3, dropout=0.5), path)
    dropped = _loss_at(dropped_setup)
    assert dropped != no_dropout
    assert _first_loss(qcnn_head(3, dropout=0.5), path) == dropped  # same seed, same loss
    # Same params and batch (the same compiled step), step counter 1: another key, another mask.
    assert _loss_at(dropped_setup, step_index=1) != dropped
    # Without a dropout stream the head is deterministic, as before.
    assert _first_loss(qcnn_head(3, dropout=0.5), path, dropout_key=None) == no_dropout


def test_qcnn_eval_is_deterministic_and_dropout_free():
    params, _, _, eval_step, batch = _dropout_setup(qcnn_head(3, dropout=0.5))
    ref_params, _, _, ref_eval, _ = _dropout_setup(qcnn_head(3, dropout=0.0))
    same = jax.tree.map(np.array_equal, params, ref_params)
    assert all(jax.tree.leaves(same))  # dropout has no parameters
    first, second = eval_step(params, batch)[0], eval_step(params, batch)[0]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, ref_eval(ref_params, batch)[0])


@pytest.mark.parametrize(
    "head,before",
    [
        # First-step losses computed with the code before the dropout stream existed.
        ("cdl", 0.7324810028076172),
        pytest.param("dqc", 0.7515786290168762, marks=pytest.mark.slow),
    ],
)
def test_dropout_stream_leaves_heads_without_dropout_unchanged(head, before):
    def build():
        return cdl_head(3) if head == "cdl" else dqc_head(3, make_ansatz("ry_cnot_ring", 3, 1))

    with_key = _first_loss(build())
    assert with_key == _first_loss(build(), dropout_key=None)
    assert with_key == pytest.approx(before, rel=1e-5)


def test_mps_head_step_returns_discarded_weight():
    # 5 qubits: the 3-layer ring's exact bond is 4; max_bond 2 truncates, so the step reports a
    # positive discarded weight (the value loop.fit logs as train/mps_discarded_weight).
    head = dqc_head(5, make_ansatz("ry_cnot_ring", 5, 3), method="mps", max_bond=2)
    model = Classifier(tiny(feature_dim=4, image_size=8), head)
    assert model.sows and not Classifier(model.backbone, cdl_head(5)).sows
    params, consts = model.init(jax.random.key(0))
    tx = optim.adam(learning_rate=1e-2, total_steps=10)
    step = steps.make_train_step(
        lambda p, b, aux=False: model.logits(p, consts, b["image"], aux=aux), tx, aux=True
    )
    state, loss, sown = step(steps.init_state(params, tx), _batch(labels=5))
    assert set(sown) == {"mps_discarded_weight"}
    lost = float(sown["mps_discarded_weight"])
    assert np.isfinite(float(loss)) and 0 < lost < 1
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
