"""The native engine against PennyLane (default.qubit, float64) for every ansatz of the library.

Tolerances: 1e-5 (absolute) for our float32 run, 1e-10 for our float64 run, both against PennyLane in
float64, on fresh random weights and inputs (never zeros), values and gradients w.r.t. weights and
inputs.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.quantum import ANSATZE, ENCODINGS, expvals, make_ansatz
from qcxr.quantum import reference

TOL = {jnp.float32: 1e-5, jnp.float64: 1e-10}


def _loss(fn, a):
    # A random linear read-out makes every output's gradient count.
    def loss(w, x, c):
        return jnp.sum(fn(a, w, x) * c)

    return loss


def _draw(a, batch, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 2.0, size=a.weight_shape)
    x = rng.uniform(-np.pi / 2, np.pi / 2, size=(batch, a.num_qubits))
    c = rng.normal(size=(batch, a.num_qubits))
    return w, x, c


def _reference(a, w, x, c):
    with jax.enable_x64(True):
        args = (jnp.asarray(w, jnp.float64), jnp.asarray(x, jnp.float64), jnp.asarray(c))
        val = reference.expvals(a, args[0], args[1])
        grads = jax.grad(_loss(reference.expvals, a), argnums=(0, 1))(*args)
        return np.asarray(val), [np.asarray(g) for g in grads]


CASES = [
    (name, n, layers)
    for name in ANSATZE
    for n, layers in itertools.product(range(1, 11), range(1, 5))
    # All sizes for the paper's ansatz; a spread for the others to bound the suite's time.
    if name == "ry_cnot_ring" or (n + layers) % 3 == 0 or n in (1, 2)
]


@pytest.mark.parametrize("name,n,layers", CASES)
def test_values_and_gradients_match_pennylane(name, n, layers):
    a = make_ansatz(name, n, layers)
    w, x, c = _draw(a, batch=3, seed=1000 * n + 10 * layers + len(name))
    ref_val, ref_grads = _reference(a, w, x, c)
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            args = (jnp.asarray(w, dtype), jnp.asarray(x, dtype), jnp.asarray(c, dtype))
            f = jax.jit(lambda w, x: expvals(a, w, x, block_size=3))
            val = f(args[0], args[1])
            grads = jax.grad(_loss(lambda a, w, x: expvals(a, w, x, block_size=3), a),
                             argnums=(0, 1))(*args)
            assert val.dtype == dtype
            np.testing.assert_allclose(val, ref_val, atol=TOL[dtype], rtol=0)
            for g, rg in zip(grads, ref_grads, strict=True):
                np.testing.assert_allclose(g, rg, atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encodings_match_pennylane(encoding):
    a = make_ansatz("ry_cnot_ring", 4, 2, encoding=encoding)
    w, x, c = _draw(a, batch=2, seed=7)
    ref_val, _ = _reference(a, w, x, c)
    with jax.enable_x64(True):
        val = expvals(a, jnp.asarray(w), jnp.asarray(x))
    np.testing.assert_allclose(val, ref_val, atol=1e-10, rtol=0)


@pytest.mark.parametrize("block_size", [1, 2, 4, 7])
def test_block_size_remat_and_chunking_do_not_change_results(block_size):
    a = make_ansatz("strongly_entangling", 7, 3)
    w, x, c = _draw(a, batch=5, seed=3)
    with jax.enable_x64(True):
        w, x, c = jnp.asarray(w), jnp.asarray(x), jnp.asarray(c)
        base = jax.value_and_grad(_loss(expvals, a), argnums=(0, 1))(w, x, c)
        for opts in ({"remat": True}, {"chunk_size": 2}, {"chunk_size": 2, "remat": True}):
            def fn(a, w, x, opts=opts):
                return expvals(a, w, x, block_size=block_size, **opts)

            got = jax.value_and_grad(_loss(fn, a), argnums=(0, 1))(w, x, c)
            for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(base), strict=True):
                np.testing.assert_allclose(u, v, atol=1e-10, rtol=0)


def test_named_ansatz_entry_point_takes_layers_from_weights():
    a = make_ansatz("ry_cnot_ring", 5, 2)
    w, x, c = _draw(a, batch=4, seed=11)
    ref_val, _ = _reference(a, w, x, c)
    with jax.enable_x64(True):
        val = expvals("ry_cnot_ring", jnp.asarray(w), jnp.asarray(x))
    np.testing.assert_allclose(val, ref_val, atol=1e-10, rtol=0)


def test_leading_batch_axes_are_kept():
    a = make_ansatz("ry_cnot_ring", 3, 2)
    w, x, _ = _draw(a, batch=6, seed=5)
    flat = expvals(a, jnp.asarray(w, jnp.float32), jnp.asarray(x, jnp.float32))
    shaped = expvals(a, jnp.asarray(w, jnp.float32), jnp.asarray(x, jnp.float32).reshape(2, 3, 3))
    assert shaped.shape == (2, 3, 3)
    np.testing.assert_array_equal(shaped.reshape(6, 3), flat)
