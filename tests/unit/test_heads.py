"""Heads: the paper's parameter counts (Table I), wiring, and the simulator option."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.models import cdl_head, dqc_head, dqc_nn_head, qcnn_head
from qcxr.quantum import make_ansatz, qcnn_probs


def _counts(params):
    return {k: sum(int(np.prod(v.shape)) for v in jax.tree.leaves(s)) for k, s in params.items()}


@pytest.mark.parametrize(
    "n,pre,quantum,post",
    [(8, 16_392, 24, 72), (14, 28_686, 42, 210), (19, 38_931, 57, 380)],
)
def test_table_one_parameter_counts(n, pre, quantum, post):
    head = dqc_head(n, make_ansatz("ry_cnot_ring", n, 3))
    shapes = jax.eval_shape(head.init, jax.random.key(0), jnp.zeros((1, 2048)))
    assert _counts(shapes["params"]) == {"pre": pre, "circuit": quantum, "post": post}
    cdl = jax.eval_shape(cdl_head(n).init, jax.random.key(0), jnp.zeros((1, 2048)))
    assert _counts(cdl["params"]) == {"fc": pre}  # CDL = the preprocess layer alone


def test_dqc_head_is_dense_tanh_circuit_dense():
    a = make_ansatz("ry_cnot_ring", 3, 2)
    head = dqc_head(3, a)
    f = jax.random.normal(jax.random.key(0), (4, 5))
    params = head.init(jax.random.key(1), f)["params"]
    pre = f @ params["pre"]["kernel"] + params["pre"]["bias"]
    from qcxr.quantum import expvals

    q = expvals(a, params["circuit"], jnp.tanh(pre) * jnp.pi / 2)
    want = q @ params["post"]["kernel"] + params["post"]["bias"]
    np.testing.assert_allclose(head.apply({"params": params}, f), want, atol=1e-5)


def test_pennylane_simulator_gives_the_same_head():
    a = make_ansatz("ry_cnot_ring", 3, 2)
    f = jax.random.normal(jax.random.key(0), (2, 5))
    native = dqc_head(3, a)
    params = native.init(jax.random.key(1), f)
    y_native = native.apply(params, f)
    y_pl = jax.jit(dqc_head(3, a, simulator="pennylane").apply)(params, f)
    np.testing.assert_allclose(y_pl, y_native, atol=1e-5)


def test_dqc_nn_ablation_shapes():
    head = dqc_nn_head(4)
    params = head.init(jax.random.key(0), jnp.zeros((2, 7)))["params"]
    assert set(params) == {"pre", "mix", "post"} and params["mix"]["kernel"].shape == (4, 4)


def test_qubits_must_equal_labels():
    with pytest.raises(ValueError, match="one qubit per label"):
        dqc_head(5, make_ansatz("ry_cnot_ring", 4))
    with pytest.raises(ValueError, match="unknown simulator"):
        dqc_head(4, make_ansatz("ry_cnot_ring", 4), simulator="qiskit")


@pytest.mark.parametrize("num_labels", [7, 3, 14])
@pytest.mark.parametrize("cut,angles", [("fragments", 35), ("exact", 35), ("none", 45)])
def test_qcnn_parameter_counts_for_mobilenet_features(num_labels, cut, angles):
    # arXiv 2501.06225's head on MobileNetV2's 1280 features: Dense 1280*8 + 8 = 10,248, one
    # parameter per circuit angle (35 cut, 45 uncut), Dense 32*C + C.
    head = qcnn_head(num_labels, cut=cut)
    shapes = jax.eval_shape(head.init, jax.random.key(0), jnp.zeros((1, 1280)))
    counts = _counts(shapes["params"])
    assert counts == {"pre": 10_248, "circuit": angles, "post": 32 * num_labels + num_labels}


def test_qcnn_head_is_dense_circuit_dense_and_cut_modes_agree():
    f = jax.random.normal(jax.random.key(0), (4, 6))
    head = qcnn_head(3, cut="fragments")
    params = head.init(jax.random.key(1), f)["params"]
    w = params["circuit"]
    assert float(w.min()) >= 0.0 and float(w.max()) < 1.0  # U[0, 1), the paper's torch.rand
    pre = f @ params["pre"]["kernel"] + params["pre"]["bias"]
    p = qcnn_probs(params["circuit"], pre, "exact")
    want = p @ params["post"]["kernel"] + params["post"]["bias"]
    got = head.apply({"params": params}, f)
    np.testing.assert_allclose(got, want, atol=1e-5)
    exact = qcnn_head(3, cut="exact").apply({"params": params}, f)
    np.testing.assert_allclose(exact, got, atol=1e-6)
    scaled = qcnn_head(3, angle_scale="tanh_pi2").apply({"params": params}, f)
    p = qcnn_probs(params["circuit"], jnp.tanh(pre) * jnp.pi / 2, "exact")
    np.testing.assert_allclose(
        scaled, p @ params["post"]["kernel"] + params["post"]["bias"], atol=1e-5
    )


def test_qcnn_dropout_only_in_training_mode():
    f = jax.random.normal(jax.random.key(0), (4, 6))
    head = qcnn_head(2, dropout=0.5)
    variables = head.init(jax.random.key(1), f)
    evals = [head.apply(variables, f) for _ in range(2)]
    np.testing.assert_array_equal(evals[0], evals[1])
    trained = head.apply(variables, f, train=True, rngs={"dropout": jax.random.key(2)})
    assert np.abs(np.asarray(trained) - np.asarray(evals[0])).max() > 1e-4
    with pytest.raises(Exception, match="dropout"):
        head.apply(variables, f, train=True)


def test_heads_without_dropout_ignore_train():
    """The classifier passes train=True and a dropout stream to every head in the train step."""
    f = jax.random.normal(jax.random.key(0), (2, 3))
    rngs = {"dropout": jax.random.key(2)}
    for head in (cdl_head(3), dqc_nn_head(3), dqc_head(3, make_ansatz("ry_cnot_ring", 3, 1))):
        variables = head.init(jax.random.key(1), f)
        np.testing.assert_array_equal(
            head.apply(variables, f, train=True, rngs=rngs), head.apply(variables, f)
        )


def test_qcnn_head_bad_options_name_the_key():
    with pytest.raises(ValueError, match=r"head.cut.*'fragments', 'exact', 'none'"):
        qcnn_head(3, cut="partial")
    with pytest.raises(ValueError, match="head.angle_scale"):
        qcnn_head(3, angle_scale="sigmoid")
    with pytest.raises(ValueError, match="head.init"):
        qcnn_head(3, init="zeros")
    with pytest.raises(ValueError, match=r"head.dropout must be in \[0, 1\)"):
        qcnn_head(3, dropout=1.0)
