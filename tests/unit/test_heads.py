"""Heads: the paper's parameter counts (Table I), wiring, and the simulator option."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.models import cdl_head, dqc_head, dqc_nn_head
from qcxr.quantum import make_ansatz


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
