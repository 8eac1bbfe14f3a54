"""The DQC head's noise keys (issue 16): validation, the ideal default, that a noisy head runs the
engine's noisy simulation, and the "noise" PRNG stream of the train step (per step, per seed,
fixed in evaluation). Tiny shapes: 3 qubits, 1 layer, batch 2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qcxr.models.backbones import tiny
from qcxr.models.classifier import Classifier
from qcxr.models.heads import (
    NOISE_CHANNELS,
    cdl_head,
    dqc_head,
    eval_noise_key,
    noise_items,
    noisy_variant,
)
from qcxr.quantum import expvals, make_ansatz
from qcxr.train import steps

ANSATZ = make_ansatz("ry_cnot_ring", 3, 1)
FEATURES = jax.random.normal(jax.random.key(0), (2, 5))


def _params(head):
    return head.init(jax.random.key(1), FEATURES)["params"]


def test_noise_items_keep_nonzero_levels_in_channel_order_and_refuse_bad_input():
    assert noise_items(None) == () and noise_items({c: 0.0 for c in NOISE_CHANNELS}) == ()
    assert noise_items({"readout": 0.02, "depolarizing": 1e-3, "bit_flip": 0}) == (
        ("depolarizing", 1e-3),
        ("readout", 0.02),
    )
    with pytest.raises(ValueError, match="unknown noise channel.*depolarising"):
        noise_items({"depolarising": 0.1})
    with pytest.raises(ValueError, match=r"head.noise.bit_flip=1.5 must be in \[0, 1\]"):
        noise_items({"bit_flip": 1.5})
    with pytest.raises(ValueError, match="shots=0 must be at least 1"):
        dqc_head(3, ANSATZ, shots=0)
    with pytest.raises(ValueError, match="trajectories=0"):
        dqc_head(3, ANSATZ, noise={"depolarizing": 0.1}, trajectories=0)
    with pytest.raises(ValueError, match="need simulator=native"):
        dqc_head(3, ANSATZ, simulator="pennylane", noise={"depolarizing": 0.1})
    with pytest.raises(ValueError, match="only a DQC head"):
        noisy_variant(cdl_head(3), {"depolarizing": 0.1})


def test_zero_noise_is_the_ideal_head_bit_for_bit():
    ideal = dqc_head(3, ANSATZ)
    zero = dqc_head(3, ANSATZ, noise={c: 0.0 for c in NOISE_CHANNELS}, trajectories=7)
    assert zero.sim.noise == ideal.sim.noise and not zero.sim.stochastic
    params = _params(ideal)
    np.testing.assert_array_equal(
        ideal.apply({"params": params}, FEATURES), zero.apply({"params": params}, FEATURES)
    )


def _angles(head, params, features):
    """The DQC's circuit inputs: tanh(Dense) * pi/2."""
    return jnp.tanh(features @ params["pre"]["kernel"] + params["pre"]["bias"]) * jnp.pi / 2


def _engine_logits(head, params, **engine_kw):
    """The head's logits computed by hand from the engine (the DQC's Dense -> tanh -> circuit ->
    Dense wiring with the noise options passed straight to qcxr.quantum.expvals)."""
    pre = FEATURES @ params["pre"]["kernel"] + params["pre"]["bias"]
    q = expvals(head.ansatz, params["circuit"], jnp.tanh(pre) * jnp.pi / 2, **engine_kw)
    return q @ params["post"]["kernel"] + params["post"]["bias"]


def test_noisy_head_runs_the_engines_noisy_circuit():
    """head.noise reaches the engine: the head equals the engine's density-matrix result for the
    same noise (float32, atol 1e-5) and differs from the ideal head."""
    noise = {"depolarizing": 0.05, "amplitude_damping": 0.02}
    head = dqc_head(3, ANSATZ, method="density_matrix", noise=noise)
    params = _params(head)
    got = head.apply({"params": params}, FEATURES)
    want = _engine_logits(head, params, method="density_matrix", noise=noise)
    np.testing.assert_allclose(got, want, atol=1e-5)
    ideal = dqc_head(3, ANSATZ).apply({"params": params}, FEATURES)
    assert np.max(np.abs(np.asarray(got) - np.asarray(ideal))) > 1e-3
    # noisy_encoding=False changes the circuit too (the encoding RY gates stay ideal)
    clean_encoding = noisy_variant(head, noise, noisy_encoding=False)
    other = clean_encoding.apply({"params": params}, FEATURES)
    assert np.max(np.abs(np.asarray(got) - np.asarray(other))) > 1e-5


def test_finite_shots_use_the_batch_evaluation_key_without_a_noise_stream():
    head = dqc_head(3, ANSATZ, shots=50)
    params = _params(head)
    first = head.apply({"params": params}, FEATURES)
    np.testing.assert_array_equal(first, head.apply({"params": params}, FEATURES))
    angles = _angles(head, params, FEATURES)
    want = _engine_logits(head, params, shots=50, key=eval_noise_key(angles))
    np.testing.assert_allclose(first, want, atol=1e-5)
    # another batch with the same first sample draws anew for it (one key for every batch gave
    # row j of each batch the same draws: the same sample at the same row, the same estimate)
    other_batch = FEATURES.at[1].set(jax.random.normal(jax.random.key(9), (5,)))
    again = head.apply({"params": params}, other_batch)
    assert not np.array_equal(np.asarray(again)[0], np.asarray(first)[0])
    keys = [jax.random.key_data(eval_noise_key(a)) for a in (angles, angles[::-1])]
    assert not np.array_equal(np.asarray(keys[0]), np.asarray(keys[1]))
    other = head.apply({"params": params}, FEATURES, rngs={"noise": jax.random.key(5)})
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def _first_losses(head, noise_key, step_indices=(0,)):
    """First-step losses of the train step on cached features, wired as run.py wires it (dropout
    and noise streams), from one initial state with the step counter at each of `step_indices`;
    one compile."""
    model = Classifier(tiny(feature_dim=5, image_size=8, freeze=True), head)
    params = {"head": head.init(jax.random.key(1), FEATURES)["params"]}  # the head path only
    tx = optax.adam(1e-2)

    def apply(p, b, dropout_key=None, noise_key=None):
        return model.head_logits(p, b["features"], dropout_key, noise_key)

    step = steps.make_train_step(apply, tx, dropout_key=jax.random.key(7), noise_key=noise_key)
    state = steps.init_state(params, tx)
    batch = {
        "features": FEATURES,
        "labels": np.array([[True, False, True], [False, True, False]]),
        "mask": np.array([True, True]),
    }
    losses = []
    for index in step_indices:
        fresh = jax.tree.map(jnp.array, state)  # the step donates its state
        fresh["step"] = jnp.asarray(index, jnp.int32)
        losses.append(float(step(fresh, batch)[1]))
    return losses


@pytest.mark.slow
def test_noise_stream_is_deterministic_per_key_and_new_every_step():
    head = dqc_head(3, ANSATZ, method="trajectories", noise={"depolarizing": 0.2}, trajectories=4)
    key = jax.random.key(3)
    first, again, second = _first_losses(head, key, (0, 0, 1))
    assert again == first  # same seed's stream: same trajectories
    assert second != first  # fold_in(stream, step): new draws every step
    assert _first_losses(head, jax.random.key(4)) != [first]  # another seed: another stream
    # Heads without noise ignore the stream: the loss is the one without it.
    assert _first_losses(cdl_head(3), key) == _first_losses(cdl_head(3), None)


def test_noise_grid_on_the_command_line_is_a_sweep_of_floats(tmp_path):
    """`python train.py -m head=dqc head.noise.depolarizing=0,0.001,0.01 seed=0-4` is 15 jobs
    whose composed noise levels are floats (the range sweeper leaves float keys alone), built into
    heads with that noise; a misspelt channel fails at compose time."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException
    from hydra.utils import instantiate

    from hydra_plugins.qcxr_sweeper.range_sweeper import rewrite_int_range
    from tests.train_helpers import compose_run

    lines = ["head=dqc", "head.noise.depolarizing=0,0.001,0.01", "seed=0-4"]
    parsed = OverridesParser.create().parse_overrides([rewrite_int_range(x) for x in lines])
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    assert len(jobs) == 15
    levels = set()
    for job in jobs[::5]:
        cfg = compose_run(tmp_path, list(job))
        assert isinstance(cfg.head.noise.depolarizing, float)
        levels.add(instantiate(cfg.head, _execution_whitelist_=["qcxr.*"]).sim.noise.items)
    assert levels == {(), (("depolarizing", 0.001),), (("depolarizing", 0.01),)}
    with pytest.raises(ConfigCompositionException):
        compose_run(tmp_path, ["head=dqc", "head.noise.depolarising=0.1"])


def test_noiseless_trajectories_are_refused_and_an_ideal_variant_is_exact():
    # method=trajectories on an ideal circuit ran the default 64 identical pure states whatever
    # head.trajectories said (issue 20 item 6): now a clear error naming the fix.
    with pytest.raises(ValueError, match="every head.noise level is 0.*head.method=auto"):
        dqc_head(3, ANSATZ, method="trajectories", trajectories=16)
    trained = dqc_head(3, ANSATZ, method="trajectories", noise={"depolarizing": 0.1})
    ideal = noisy_variant(trained, {"depolarizing": 0.0})  # a robustness grid's level 0
    assert ideal.sim.method == "auto" and ideal.sim.noise.is_ideal
    assert noisy_variant(trained, {"depolarizing": 0.2}).sim.method == "trajectories"
